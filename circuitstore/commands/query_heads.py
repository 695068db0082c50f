"""`circuitstore query heads`: the attention heads that carry a prompt's stored weight, and the
by-head columns that `drivers` and `targets --by-head` show."""

from __future__ import annotations

from typing import Any

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, top_option
from circuitstore.commands.query_io import emit, open_store, store_options
from circuitstore.schema.connection import Neo4jSettings

HEAD_COLUMNS = (
    *("rank", "name", "kind", "pos", "total"),
    *("residual", "heads", "other_heads", "multi_layer"),
)


def heads_text(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row's heads as one cell: `attn2[3] +0.412  attn1[0] -0.120`."""
    return [
        {**r, "heads": "  ".join(f"{h} {w:+.4g}" for h, w in r["heads"].items())}
        if isinstance(r.get("heads"), dict)
        else r
        for r in rows
    ]


@click.command("heads", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@top_option(10)
@store_options
def heads_cmd(prompt: str, top: int, settings: Neo4jSettings, fmt: str, tset: str | None) -> None:
    """The attention heads that carry the most stored weight in one prompt's graph.

    Each stored ATTR edge names its strongest heads (ingest --heads-per-edge); a head's
    sum_abs adds its absolute weight over those edges, and share divides that by all the
    head-carried weight stored for the prompt (named heads and the rest).

    Example: circuitstore query heads --prompt my-prompt --top 5
    """
    with open_store(settings, tset) as store:
        found = store.heads(prompt, top)
    rows = [{"rank": i + 1, **r} for i, r in enumerate(found.rows())]
    emit(rows, fmt, ("rank", "head", "edges", "total", "sum_abs", "share"))
