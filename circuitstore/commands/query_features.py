"""`circuitstore query drivers | targets | examples | feature`: the features question."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, top_option
from circuitstore.commands.query_heads import HEAD_COLUMNS, heads_text
from circuitstore.commands.query_io import (
    emit,
    emit_readable,
    export_option,
    maybe_export,
    open_store,
    store_options,
    with_tokens,
)
from circuitstore.query.features.links import ORDERS, SIGNS
from circuitstore.render import (
    EXAMPLE_COLUMNS,
    EXAMPLE_RIGHT,
    card_rows,
    card_table,
    example_rows,
)
from circuitstore.schema.connection import Neo4jSettings
from circuitstore.schema.names import parse_feature

LINK_COLUMNS = ("rank", "name", "kind", "pos", "n", "total", "mean", "sum_abs", "max_abs")


def link_command(direction: str, example: str) -> click.Command:
    """The `drivers` or `targets` command (`direction`), with `example` as its help."""

    @click.command(direction, cls=CircuitStoreCommand, context_settings=HELP, help=example)
    @click.argument("feature")
    @click.option("--prompt", help="Answer inside this prompt's graph (ATTR edges).")
    @top_option(10)
    @click.option("--order", type=click.Choice(ORDERS), default="total", show_default=True)
    @click.option("--sign", type=click.Choice(SIGNS), default="positive", show_default=True)
    @click.option(
        "--by-head",
        is_flag=True,
        help="With --prompt: split each link by path: same position (residual), its strongest "
        "attention heads, the other heads, and paths through two or more attention layers.",
    )
    @export_option
    @store_options
    def command(
        feature: str,
        prompt: str | None,
        top: int,
        order: str,
        sign: str,
        by_head: bool,
        export: tuple[str, Path] | None,
        settings: Neo4jSettings,
        fmt: str,
        tset: str | None,
    ) -> None:
        parse_feature(feature)  # a malformed name fails before any connection
        if by_head and prompt is None:
            raise click.UsageError("--by-head needs --prompt: heads are stored per prompt")
        with open_store(settings, tset) as store:
            ask: Callable[..., Any] = getattr(store, direction)
            answer = ask(feature, prompt, top, order, sign, by_head)
        maybe_export(answer.subgraph, export)
        rows = answer.rows()
        if by_head:
            rows = heads_text(rows) if fmt != "json" else rows
            emit_readable(rows, fmt, HEAD_COLUMNS, with_tokens(rows))
            return
        emit_readable(rows, fmt, LINK_COLUMNS, with_tokens(rows))

    return command


drivers = link_command(
    "drivers",
    """Which features drive FEATURE: across the corpus (DRIVES) or in one prompt (ATTR).

    Ranked by total or mean weight; --sign picks excitatory, inhibitory or both; n counts
    the edges behind each row.

    Example: circuitstore query drivers mlp1tc[12] --top 5 --order mean

    In one prompt, by attention head:
    circuitstore query drivers 'mlp2tc[5]@9' --prompt my-prompt --by-head
    """,
)
targets = link_command(
    "targets",
    """What FEATURE drives: across the corpus (DRIVES) or in one prompt (ATTR).

    Example: circuitstore query targets mlp0tc[7]@3 --prompt my-prompt --sign abs
    """,
)


@click.command("examples", cls=CircuitStoreCommand, context_settings=HELP)
@click.argument("feature")
@top_option(10)
@click.option(
    "--window",
    default=8,
    show_default=True,
    type=click.IntRange(0, 1000),
    help="Tokens of context each side.",
)
@store_options
def examples_cmd(
    feature: str, top: int, window: int, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """Where FEATURE fires most: prompts, the token [[in context]], the activation.

    Example: circuitstore query examples mlp1tc[12] --top 5
    """
    parse_feature(feature)
    with open_store(settings, tset) as store:
        found = store.examples(feature, top, window)
    emit_readable(
        found.rows(),
        fmt,
        ("prompt", "pos", "activation", "context"),
        example_rows(found),
        EXAMPLE_COLUMNS,
        EXAMPLE_RIGHT,
    )


@click.command("feature", cls=CircuitStoreCommand, context_settings=HELP)
@click.argument("feature")
@top_option(5, "Rows per section.")
@store_options
def feature_cmd(
    feature: str, top: int, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """What FEATURE is: statistics, de-embedding and logit-lens tokens, virtual-weight
    neighbours, top drivers, targets and examples.

    Example: circuitstore query feature 1:12
    """
    parse_feature(feature)
    with open_store(settings, tset) as store:
        card = store.feature(feature, top)
    if fmt == "json":
        click.echo(json.dumps(card.as_dict(), indent=2))
    elif fmt == "csv":
        emit(card_rows(card), fmt, ("section", "name", "value", "label"))
    else:
        click.echo(card_table(card))
