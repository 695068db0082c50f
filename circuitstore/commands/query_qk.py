"""`circuitstore query qk | qk-drivers`: the QK traces a store holds, and the features that
drive one head's scores across them."""

from __future__ import annotations

import re
from typing import Any

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, top_option
from circuitstore.commands.query_io import emit, emit_readable, open_store, store_options
from circuitstore.query.qk.read import SIDES, SIGNS
from circuitstore.query.qk.records import TERM_COLUMNS, TRACE_COLUMNS
from circuitstore.query.qk.stored import DRIVER_COLUMNS
from circuitstore.query.tables import node_text
from circuitstore.schema.connection import Neo4jSettings

TRACE_KEY = ("head", "query_pos", "key_pos", "mode")
_POS = re.compile(r"@(\d+)$")


@click.command("qk", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option("--head", help="Only this head's traces: attn<layer>[<head>].")
@click.option(
    "--terms",
    is_flag=True,
    help="One row per kept term (pairs, then query- and key-side marginals) instead of one "
    "per trace.",
)
@store_options
def qk_cmd(
    prompt: str, head: str | None, terms: bool, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """The QK traces stored for a prompt (`circuitstore qk --store`, `ingest --qk-top`): each
    head's attention score at a (query, key) pair of positions, the model's score beside the
    sum of its contributors' terms, and the attention probability there.

    Example: circuitstore query qk --prompt my-prompt --head attn1[0] --terms
    """
    with open_store(settings, tset) as store:
        found = store.qk_traces(prompt, head)
        tokens = store.prompt(prompt).tokens if terms and fmt == "table" else ()
    if not terms:
        emit(found.rows(), fmt, TRACE_COLUMNS)
        return
    rows = [
        {**{k: v for k, v in t.as_row().items() if k in TRACE_KEY}, **term}
        for t in found
        for term in t.rows()
    ]
    shown = [
        {**r, "query": _named(r["query"], tokens), "key": _named(r["key"], tokens)} for r in rows
    ]
    emit_readable(rows, fmt, (*TRACE_KEY, *TERM_COLUMNS), shown)


@click.command("qk-drivers", cls=CircuitStoreCommand, context_settings=HELP)
@click.argument("head")
@click.option(
    "--side",
    type=click.Choice(SIDES),
    default="key",
    show_default=True,
    help="Features on the key side (what makes a position attended to) or the query side "
    "(what makes a position look).",
)
@top_option(10)
@click.option(
    "--sign",
    type=click.Choice(SIGNS),
    default="positive",
    show_default=True,
    help="Those that raise the scores most, lower them most, or move them most either way.",
)
@store_options
def qk_drivers_cmd(
    head: str, side: str, top: int, sign: str, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """Which features most raise (or lower) HEAD's attention scores, summed over the QK traces
    stored for it across the corpus: a feature's occurrences' kept marginals on one side, with
    n the traces that keep it (of all the head's stored traces), total, mean = total / n.

    Example: circuitstore query qk-drivers attn1[0] --side key --top 5
    """
    with open_store(settings, tset) as store:
        found = store.qk_drivers(head, side, top, sign)
    rows = [{"rank": i + 1, **r} for i, r in enumerate(found.rows())]
    emit_readable(rows, fmt, ("rank", *DRIVER_COLUMNS))


def _named(local_id: Any, tokens: tuple[str, ...]) -> Any:
    """A contributor with its position's token where it names one (`embed0@3 ' Mary'`)."""
    match = _POS.search(local_id) if isinstance(local_id, str) else None
    if match is None or int(match[1]) >= len(tokens):
        return local_id
    return node_text(local_id, tokens[int(match[1])])
