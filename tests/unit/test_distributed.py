"""The Ray plan's checks and the one line without Ray; the Ray runs themselves are in
tests/integration/test_ray.py."""

from __future__ import annotations

import sys

import pytest

from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.distributed import RayPlan, _combine, run_on_ray
from circuitstore.schema.errors import ConfigError


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": 0}, "--workers 0: allowed an integer >= 1"),
        ({"cpus_per_worker": -1.0}, "--cpus-per-worker -1.0: allowed a number >= 0"),
        ({"gpus_per_worker": -0.5}, "--gpus-per-worker -0.5: allowed a number >= 0"),
    ],
)
def test_bad_plans(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RayPlan(**kwargs)  # type: ignore[arg-type]


def test_without_ray_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails
    cfg = IngestConfig(model="m", transcoders="t", prompts="p")
    with pytest.raises(ConfigError, match=r"--ray needs Ray.*pip install 'circuitstore\[ray\]'"):
        run_on_ray(cfg, RayPlan())


def test_shard_summaries_add_up() -> None:
    part = {
        "run": "r",
        "resumed": False,
        "prompts": 3,
        "written": 2,
        "already_stored": 1,
        "failed": 0,
        "truncated": 0,
        "tokens": 30,
        "edges": 100,
        "drives_rows": 7,
        "blank_lines": 2,
        "repeated_lines": 1,
        "engine_seconds": 1.0,
        "write_seconds": 0.5,
        "seconds": 4.0,
        "skipped": {"empty": 1},
        "views_seconds": None,
        "setup_seconds": 2.0,
    }
    other = {**part, "seconds": 6.0, "views_seconds": 9.0, "setup_seconds": None}
    total = _combine([part, other])
    assert (total.prompts, total.written, total.tokens, total.edges) == (6, 4, 60, 200)
    assert total.seconds == 6.0  # the shards ran side by side
    assert total.skipped == {"empty": 2}
    assert (total.blank_lines, total.repeated_lines) == (2, 1)  # each shard saw the whole file
    assert (total.views_seconds, total.setup_seconds) == (9.0, 2.0)
