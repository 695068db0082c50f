"""`circuitstore query paths | circuit`: the paths question, in one prompt's stored graph."""

from __future__ import annotations

from pathlib import Path

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, top_option
from circuitstore.commands.query_io import (
    emit_readable,
    export_option,
    maybe_export,
    open_store,
    store_options,
    with_tokens,
)
from circuitstore.query.paths.read import MAX_BEAM
from circuitstore.query.paths.records import CIRCUIT_COLUMNS
from circuitstore.schema.connection import Neo4jSettings
from circuitstore.schema.names import parse_node


@click.command("paths", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option(
    "--to",
    "to",
    default="logit",
    show_default=True,
    help="logit (the top one), logit[<token id>]@<pos>, or a feature at a position.",
)
@click.option(
    "--source",
    help="Only paths from this node (a feature, embed0@<pos>, ...); with --method beam, the "
    "beam's paths that start there.",
)
@top_option(10)
@click.option(
    "--method",
    type=click.Choice(["exact", "beam"]),
    default="exact",
    show_default=True,
    help="exact: the top paths by |product of weights|; beam: the original transcoder work's "
    "greedy search, by each path's contribution to the target.",
)
@click.option(
    "--beam-width",
    default=5,
    show_default=True,
    type=click.IntRange(1, MAX_BEAM),
    help="With --method beam: paths kept (and branches tried) per step.",
)
@click.option(
    "--depth",
    default=3,
    show_default=True,
    type=click.IntRange(1, MAX_BEAM),
    help="With --method beam: steps back from the target.",
)
@export_option
@store_options
def paths_cmd(
    prompt: str,
    to: str,
    source: str | None,
    top: int,
    method: str,
    beam_width: int,
    depth: int,
    export: tuple[str, Path] | None,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """The strongest paths into a logit or feature in one prompt: exactly by |product of
    weights|, or by the greedy beam search of the original transcoder work.

    Example: circuitstore query paths --prompt my-prompt --to 'logit[250]@31' --top 5
    """
    for name in (to, source):
        if name is not None:
            parse_node(name)
    with open_store(settings, tset) as store:
        found = store.paths(prompt, to, source, top, method, beam_width, depth)  # type: ignore[arg-type]
    maybe_export(found.subgraph, export)
    rows = found.rows()
    table = [{**r, "path": r["path_tokens"], "label": r["labels"]} for r in rows]
    score = ("contribution",) if method == "beam" else ()
    emit_readable(rows, fmt, ("rank", *score, "product", "length", "path"), table)


@click.command("circuit", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option(
    "--threshold",
    default=0.8,
    show_default=True,
    type=click.FloatRange(0, 1, min_open=True),
    help="Share of influence to keep.",
)
@click.option("--to", "to", default="logit", show_default=True, help="The target (see paths).")
@export_option
@store_options
def circuit_cmd(
    prompt: str,
    threshold: float,
    to: str,
    export: tuple[str, Path] | None,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """The nodes carrying THRESHOLD of the influence on the prompt's answer logit.

    Example: circuitstore query circuit --prompt my-prompt --threshold 0.6 --export json c.json
    """
    parse_node(to)
    with open_store(settings, tset) as store:
        found = store.circuit(prompt, threshold, to)
    maybe_export(found.subgraph, export)
    rows = found.rows()
    table = with_tokens(rows, "id")
    emit_readable(
        rows, fmt, CIRCUIT_COLUMNS, table, tuple(c for c in CIRCUIT_COLUMNS if c != "token")
    )
