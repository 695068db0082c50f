"""`circuitstore query ...`: thin commands over `circuitstore.query.CircuitStore`: the group,
the prompts question's commands and `cypher`."""

from __future__ import annotations

import click

from circuitstore.clitools import (
    HELP,
    MAX_ROWS,
    MAX_SKIP,
    CircuitStoreGroup,
    connection_options,
    format_option,
    render_rows,
    top_option,
)
from circuitstore.commands.query_exports import export_graph_cmd
from circuitstore.commands.query_features import drivers, examples_cmd, feature_cmd, targets
from circuitstore.commands.query_heads import heads_cmd
from circuitstore.commands.query_io import emit, open_store, store_options
from circuitstore.commands.query_labels import search_cmd
from circuitstore.commands.query_paths import circuit_cmd, paths_cmd
from circuitstore.commands.query_qk import qk_cmd, qk_drivers_cmd
from circuitstore.query.readonly import parse_params, run_read
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.model import PromptScore
from circuitstore.schema.names import parse_feature


@click.group(cls=CircuitStoreGroup, context_settings=HELP)
def query() -> None:
    """Ask the store: which features drive X, where X fires, how a prompt reaches its answer.

    Features are named as in the original work: mlp8tc[355] (layer 8, index 355),
    mlp8tc[355]@9 (at token position 9 of a prompt) or 8:355; a cross-layer transcoder's
    feature read at layer 8 is clt8[355] (either spelling names it). Prompts are named by their
    key. A store holding several transcoder sets needs --transcoder-set.
    """


# Each question's commands live in a module of their own (query_features, query_heads,
# query_paths, query_labels, query_exports, query_qk); the prompts' commands and `cypher` live here.
for _command in (drivers, targets, heads_cmd, examples_cmd, feature_cmd, paths_cmd, circuit_cmd):
    query.add_command(_command)
for _command in (export_graph_cmd, search_cmd, qk_cmd, qk_drivers_cmd):
    query.add_command(_command)


@query.command("prompts-with")
@click.argument("features", nargs=-1, required=True)
@top_option(20)
@store_options
def prompts_with_cmd(
    features: tuple[str, ...], top: int, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """Prompts whose stored graphs hold all of FEATURES.

    Example: circuitstore query prompts-with mlp0tc[3] mlp1tc[12]
    """
    for name in features:
        parse_feature(name)
    with open_store(settings, tset) as store:
        found = store.prompts_with(features, top)
    emit([m.as_row() for m in found], fmt, ("prompt", "score", "positions", "text"))


SCORES = {s.option: s for s in PromptScore}


@query.command("prompts")
@top_option(100)
@click.option(
    "--skip", default=0, show_default=True, type=click.IntRange(0, MAX_SKIP), help="Skip rows."
)
@click.option(
    "--order",
    type=click.Choice(["key", *SCORES]),
    default="key",
    show_default=True,
    help="By key, or by a score, best first (see README: scores).",
)
@click.option("--ascending", is_flag=True, help="With a score order: worst first.")
@click.option("--min", "minimum", type=click.FloatRange(0, 1), help="Only scores >= this.")
@click.option("--max", "maximum", type=click.FloatRange(0, 1), help="Only scores <= this.")
@store_options
def prompts_cmd(
    top: int,
    skip: int,
    order: str,
    ascending: bool,
    minimum: float | None,
    maximum: float | None,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """The stored prompts with their scores and corpus fields (a demo prompt's task and
    answer), by key or by score; --min and --max keep those whose score lies in the range.

    Example: circuitstore query prompts --order replacement --ascending --max 0.5 --top 10
    """
    if order == "key" and (minimum is not None or maximum is not None):
        raise click.UsageError("--min and --max filter by a score: choose one with --order")
    with open_store(settings, tset) as store:
        found = store.prompts(top, skip, SCORES.get(order), minimum, maximum, ascending)
    rows = found.rows()
    extra = tuple(dict.fromkeys(k for r in rows for k in r if k not in found.columns))
    scores = tuple(s.field for s in PromptScore)
    emit(rows, fmt, ("prompt", "transcoder_set", "n_tokens", *scores, *extra, "text"))


@query.command("prompt")
@click.argument("key")
@store_options
def prompt_cmd(key: str, settings: Neo4jSettings, fmt: str, tset: str | None) -> None:
    """One stored prompt: its scores, what its stored graph keeps, its corpus fields, text.

    Example: circuitstore query prompt eval-ioi-000010
    """
    with open_store(settings, tset) as store:
        card = store.prompt_summary(key).card()
    if fmt == "table":
        emit([{"field": k, "value": v} for k, v in card.items()], fmt, ("field", "value"))
    else:
        emit([card], fmt, tuple(card))


@query.command("cypher")
@click.argument("statement")
@click.option("-p", "--param", "params", multiple=True, help="name=value (JSON or text).")
@click.option(
    "--limit",
    default=1000,
    show_default=True,
    type=click.IntRange(1, MAX_ROWS),
    help="At most this many rows.",
)
@connection_options
@format_option()
def cypher_cmd(
    statement: str, params: tuple[str, ...], limit: int, settings: Neo4jSettings, fmt: str
) -> None:
    """Run a read-only Cypher STATEMENT with parameters (writes are refused).

    Example: circuitstore query cypher 'MATCH (f:Feature {layer: $l}) RETURN count(f)' -p l=8
    """
    with open_driver(settings) as driver, translate_errors(settings):
        rows = run_read(driver, settings.database, statement, parse_params(params), limit)
    click.echo(render_rows(rows, fmt))
