"""`circuitstore query search`: features by the words of their labels."""

from __future__ import annotations

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, top_option
from circuitstore.commands.query_io import emit, open_store, store_options
from circuitstore.schema.connection import Neo4jSettings


@click.command("search", cls=CircuitStoreCommand, context_settings=HELP)
@click.argument("text")
@top_option(20)
@click.option(
    "--lucene",
    is_flag=True,
    help='Read TEXT as a Lucene query (name*, "a phrase", a AND b) instead of plain words.',
)
@store_options
def search_cmd(
    text: str, top: int, lucene: bool, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """Features whose label matches TEXT, best first (labels come from
    `circuitstore labels import`).

    Example: circuitstore query search "names of people" --top 5
    """
    with open_store(settings, tset) as store:
        found = store.search(text, top, lucene)
    rows = [{"rank": i + 1, **m.as_row()} for i, m in enumerate(found)]
    emit(rows, fmt, ("rank", "name", "score", "label", "source", "explainer"))
