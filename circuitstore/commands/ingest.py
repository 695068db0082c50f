"""`circuitstore ingest`: a thin command over `IngestRunner`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from circuitstore.clitools import (
    HELP,
    CircuitStoreCommand,
    attribution_options,
    connection_options,
    pruning_options,
)
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.distributed import RayPlan
from circuitstore.schema.connection import Neo4jSettings, open_driver

# The defaults every option below shows are the config's own.
DEFAULTS = IngestConfig(model="", transcoders="", prompts="")


@click.command("ingest", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--model", required=True, help="HF model name (gpt2) or a saved model folder.")
@click.option("--transcoders", required=True, help="HF repo id or a folder of transcoder files.")
@click.option(
    "--prompts", required=True, help="Corpus: .txt (a prompt a line), .jsonl, or hf:NAME."
)
@click.option("--run", "run_name", help="Run name [default: corpus name + settings hash].")
@click.option("--max-tokens", type=click.IntRange(min=2), help="Skip longer prompts (BOS counted).")
@click.option("--truncate", is_flag=True, help="Cut over-long prompts instead of skipping them.")
@click.option(
    "--batch-size",
    default=DEFAULTS.batch_size,
    show_default=True,
    type=click.IntRange(min=1),
    help="Prompts between catalog updates.",
)
@click.option("--shard", default="0/1", show_default=True, help="I/N: this worker's share.")
@attribution_options(DEFAULTS.attribution)
@pruning_options
@click.option(
    "--aggregate-min-fraction",
    default=DEFAULTS.aggregate_min_fraction,
    show_default=True,
    type=click.FloatRange(0, 1, max_open=True),
    help="Corpus aggregates (DRIVES) keep a feature edge carrying at least this share of its "
    "target's absolute input; 0 keeps every edge.",
)
@click.option(
    "--top-examples",
    default=DEFAULTS.top_examples,
    show_default=True,
    type=click.IntRange(min=1),
    help="Top activating prompts kept per feature.",
)
@click.option(
    "--heads-per-edge",
    default=DEFAULTS.heads_per_edge,
    show_default=True,
    type=click.IntRange(min=0),
    help="Attention heads stored on each ATTR edge (strongest first, the rest summed); "
    "0 stores none.",
)
@click.option(
    "--qk-top",
    default=DEFAULTS.qk_top,
    show_default=True,
    type=click.IntRange(min=0),
    help="QK traces stored per prompt: its K strongest stored attention edges, each traced at "
    "the head that carries the most of it (why that head attends there; `query qk`, `query "
    "qk-drivers`); 0 stores none. Not with --parts.",
)
@click.option(
    "--catalog",
    envvar="CIRCUITSTORE_CATALOG",
    help="SQLAlchemy URL of the run catalog [env CIRCUITSTORE_CATALOG, which keeps a password "
    "off the command line (or use PGPASSWORD); default: SQLite in the data folder].",
)
@click.option(
    "--ray",
    "ray_address",
    is_flag=False,
    flag_value="local",
    default=None,
    metavar="[ADDRESS]",
    help="Run the shards as Ray tasks: on a local cluster it starts (--ray alone) or on the "
    "running cluster at ADDRESS. Needs circuitstore[ray].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=2,
    show_default=True,
    help="With --ray: shard tasks (one per GPU or core group).",
)
@click.option(
    "--cpus-per-worker",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="With --ray: CPUs each task reserves.",
)
@click.option(
    "--gpus-per-worker",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="With --ray: GPUs each task reserves (then --device auto uses them).",
)
@click.option(
    "--parts",
    metavar="DIR",
    help="Write Parquet parts to DIR (a folder, or any URL pyarrow opens: s3://...) instead of "
    "to Neo4j; `circuitstore load DIR` then builds the store in bulk.",
)
@click.option("--progress/--no-progress", default=None, help="[default: on a terminal only]")
@connection_options
def ingest(
    settings: Neo4jSettings,
    shard: str,
    run_name: str | None,
    ray_address: str | None,
    workers: int,
    cpus_per_worker: float,
    gpus_per_worker: float,
    **options: Any,
) -> None:
    """Run the model and transcoders over a corpus and write graphs and aggregates to Neo4j.

    Safe to kill at any moment: the same command resumes, and nothing is counted twice.
    With --parts DIR nothing talks to Neo4j: each prompt becomes Parquet parts in DIR, which
    `circuitstore load DIR` imports in bulk.

    \b
    Example:
      circuitstore ingest --model gpt2 --transcoders pchlenski/gpt2-transcoders \\
        --prompts corpus.txt
      circuitstore ingest --model gpt2 --transcoders pchlenski/gpt2-transcoders \\
        --prompts corpus.txt --parts parts/ --shard 0/4
    """
    from circuitstore.ingest.corpus import parse_shard
    from circuitstore.ingest.runner import IngestRunner

    index, count = parse_shard(shard)
    if options["parts"] and "://" not in options["parts"]:  # Ray workers start elsewhere
        options["parts"] = str(Path(options["parts"]).expanduser().absolute())
    cfg = IngestConfig.from_flat(run=run_name, shard_index=index, shard_count=count, **options)
    if ray_address is not None:
        address = None if ray_address == "local" else ray_address
        plan = RayPlan(workers, address, cpus_per_worker, gpus_per_worker)
        summary = _on_ray(cfg, plan, settings)
    elif cfg.parts is not None:
        summary = IngestRunner(cfg, None).run()
    else:
        with open_driver(settings, retry_seconds=120) as driver:
            summary = IngestRunner(cfg, driver, settings.database, settings.uri).run()
    for line in summary.lines():
        click.echo(line)
    if summary.failed:
        raise SystemExit(1)


def _on_ray(cfg: IngestConfig, plan: Any, settings: Neo4jSettings) -> Any:
    """The shards as Ray tasks, with one progress bar for all of them."""
    from tqdm import tqdm

    from circuitstore.ingest.distributed import run_on_ray

    if cfg.parts is None:
        with open_driver(settings):  # the store answers before any worker starts
            pass
    bar = tqdm(unit="prompt", disable=None if cfg.progress is None else not cfg.progress)
    with bar:

        def progress(prompts: int, tokens: int) -> None:
            bar.update(prompts - bar.n)
            bar.set_postfix(tokens=tokens)

        return run_on_ray(cfg, plan, progress)
