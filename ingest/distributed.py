"""Ingest on many workers with Ray: one task per shard, each the normal ingest of its shard.

Every task runs `IngestRunner` for `--shard I/N` (the same code path and resume rules as a single
process); the store decides what is done, so a task that Ray retries after its worker died
resumes its shard and writes nothing twice. The tasks report each finished prompt to an actor,
from which the driver draws one progress bar, and return their summaries, which add up to one.

Workers read the store's settings (NEO4J_*) and CIRCUITSTORE_* from their environment: on a local
cluster that is the driver's; on a running cluster, set them where its workers start. Several
machines share one catalog through `--catalog postgresql://...`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.corpus import read_corpus
from circuitstore.schema.errors import ConfigError

if TYPE_CHECKING:  # the runner imports torch; the command line imports this module without it
    from circuitstore.ingest.runner import IngestSummary

EXTRA = "pip install 'circuitstore[ray]'"


@dataclass(frozen=True)
class RayPlan:
    """How the shards are spread: `workers` tasks, each with these resources."""

    workers: int = 2
    address: str | None = None  # a running cluster's address; None starts a local one
    cpus_per_worker: float = 1.0
    gpus_per_worker: float = 0.0
    retries: int = 3  # Ray retries a task whose worker died this many times

    def __post_init__(self) -> None:
        if not isinstance(self.workers, int) or self.workers < 1:
            raise ConfigError(f"--workers {self.workers!r}: allowed an integer >= 1")
        for name in ("cpus_per_worker", "gpus_per_worker"):
            if getattr(self, name) < 0:
                option = "--" + name.replace("_", "-")
                raise ConfigError(f"{option} {getattr(self, name)!r}: allowed a number >= 0")


def run_on_ray(
    cfg: IngestConfig, plan: RayPlan, progress: Callable[[int, int], None] | None = None
) -> IngestSummary:
    """The corpus of `cfg` as `plan.workers` shard tasks; `progress(prompts done, tokens)` is
    called as they report. Returns the summed summary. Raises ConfigError without Ray."""
    ray = _ray()
    read_corpus(cfg.prompts)  # a bad corpus fails here, once, before any worker starts
    if not ray.is_initialized():
        if plan.address:
            _connect(ray, plan.address)
        else:
            cpus = max(1, int(plan.workers * max(plan.cpus_per_worker, 1)))
            ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False)
    tally = ray.remote(_Tally).remote()
    task = ray.remote(_shard).options(
        num_cpus=plan.cpus_per_worker, num_gpus=plan.gpus_per_worker, max_retries=plan.retries
    )
    fields = dataclasses.asdict(cfg)
    pending = [task.remote(fields, i, plan.workers, tally) for i in range(plan.workers)]
    done: list[dict[str, Any]] = []
    while pending:
        ready, pending = ray.wait(pending, timeout=1.0)
        done += ray.get(ready)
        if progress is not None:
            progress(*ray.get(tally.read.remote()))
    return _combine(done)


def _connect(ray: Any, address: str) -> None:
    """Join the cluster at `address`; Ray's refusals of the address become one line."""
    try:
        ray.init(address=address, log_to_driver=False)
    except ValueError as exc:  # a malformed address, or ray:// without the client extra
        reason = (str(exc).strip().splitlines() or ["not usable"])[0]
        if "ray[client]" in reason:
            reason = "ray:// addresses need Ray's client: pip install 'ray[client]'"
        raise ConfigError(
            f"--ray {address[:100]!r}: {reason} (expected auto, HOST:PORT or ray://HOST:PORT)"
        ) from None
    except ConnectionError as exc:
        raise ConfigError(
            f"--ray {address[:100]!r}: no Ray cluster answers there ({exc})"
        ) from None


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(f"--ray needs Ray, which is not installed: {EXTRA}") from None
    return ray


class _Tally:
    """The actor the shard tasks report finished prompts to."""

    def __init__(self) -> None:
        self.prompts = 0
        self.tokens = 0

    def add(self, tokens: int) -> None:
        self.prompts += 1
        self.tokens += tokens

    def read(self) -> tuple[int, int]:
        return self.prompts, self.tokens


def _shard(fields: dict[str, Any], index: int, count: int, tally: Any) -> dict[str, Any]:
    """One shard's ingest, in a Ray worker: the command's own path, with its own driver."""
    from circuitstore.ingest.runner import IngestRunner
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    fields = {**fields, "shard_index": index, "shard_count": count, "progress": False}
    fields["attribution"] = _attribution(fields["attribution"])
    cfg = IngestConfig(**fields)
    report = lambda tokens: tally.add.remote(tokens)  # noqa: E731
    with contextlib.ExitStack() as stack:
        if cfg.parts is None:
            settings = Neo4jSettings.load(env_file=_env_file())
            driver = stack.enter_context(open_driver(settings, retry_seconds=120))
            runner = IngestRunner(cfg, driver, settings.database, settings.uri, on_prompt=report)
        else:  # parts: the workers never talk to Neo4j
            runner = IngestRunner(cfg, None, on_prompt=report)
        runner.views = index == 0  # one shard computes the set's views, after its prompts
        summary = runner.run()
    return {**dataclasses.asdict(summary), "pid": os.getpid(), "finished": time.time()}


def _attribution(data: dict[str, Any]) -> Any:
    from circuitstore.ingest.config import AttributionConfig, ChunkPlan, PruneConfig

    prune = data["prune"] and PruneConfig(**data["prune"])
    return AttributionConfig(**{**data, "prune": prune, "chunk": ChunkPlan(**data["chunk"])})


def _env_file() -> Any:
    from pathlib import Path

    name = os.environ.get("CIRCUITSTORE_ENV_FILE")
    return Path(name) if name else None


def _combine(parts: list[dict[str, Any]]) -> IngestSummary:
    """The shards' summaries as one: counts add up, the run is the shards' (one name)."""
    from circuitstore.ingest.runner import IngestSummary

    total = IngestSummary(parts[0]["run"] if parts else "", any(p["resumed"] for p in parts))
    for part in parts:
        for name in ("prompts", "written", "already_stored", "failed", "truncated", "tokens"):
            setattr(total, name, getattr(total, name) + part[name])
        for name in ("edges", "drives_rows", "blank_lines", "repeated_lines"):
            setattr(total, name, getattr(total, name) + part[name])
        for name in ("engine_seconds", "write_seconds"):
            setattr(total, name, getattr(total, name) + part[name])
        total.seconds = max(total.seconds, part["seconds"])
        for why, n in part["skipped"].items():
            total.skipped[why] = total.skipped.get(why, 0) + n
    total.blank_lines //= max(1, len(parts))  # every shard counts the whole file's
    total.repeated_lines //= max(1, len(parts))
    views = [p["views_seconds"] for p in parts if p["views_seconds"] is not None]
    total.views_seconds = max(views) if views else None
    setups = [p["setup_seconds"] for p in parts if p["setup_seconds"] is not None]
    total.setup_seconds = max(setups) if setups else None
    return total
