"""`circuitstore query ...`: thin commands over `circuitstore.query.CircuitStore`."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from circuitstore.clitools import (
    HELP,
    MAX_ROWS,
    CircuitStoreGroup,
    connection_options,
    format_option,
    output_path,
    render_rows,
    top_option,
)
from circuitstore.query.export import (
    EXPORT_FORMATS,
    neuronpedia_graph,
    write_json,
    write_subgraph,
)
from circuitstore.query.readonly import parse_params, run_read
from circuitstore.query.results import Subgraph
from circuitstore.query.store import ORDERS, SIGNS, CircuitStore
from circuitstore.render import card_rows, card_table
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.names import parse_feature, parse_node

F = TypeVar("F", bound=Callable[..., Any])


@click.group(cls=CircuitStoreGroup, context_settings=HELP)
def query() -> None:
    """Ask the store: which features drive X, where X fires, how a prompt reaches its answer.

    Features are named as in the original work: mlp8tc[355] (layer 8, index 355),
    mlp8tc[355]@9 (at token position 9 of a prompt) or 8:355. Prompts are named by their key.
    """


def store_options(func: F) -> F:
    """Connection, output format and transcoder set: every command but `cypher` takes these."""
    func = click.option(
        "--transcoder-set",
        "tset",
        envvar="CIRCUITSTORE_TRANSCODER_SET",
        help="Which transcoder set (needed when the store holds several).",
    )(func)
    return connection_options(format_option()(func))


def export_option(func: F) -> F:
    return click.option(
        "--export",
        "export",
        type=(click.Choice(EXPORT_FORMATS), click.Path(dir_okay=False, path_type=Path)),
        default=None,
        callback=output_path,
        help="Also write the answer's subgraph: --export graphml FILE or --export json FILE.",
    )(func)


@contextmanager
def open_store(settings: Neo4jSettings, tset: str | None) -> Iterator[CircuitStore]:
    with open_driver(settings) as driver, translate_errors(settings):
        yield CircuitStore(driver, settings.database, tset, settings.uri)


def emit(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] = ()) -> None:
    click.echo(render_rows(rows, fmt, columns))


def maybe_export(sub: Subgraph | None, export: tuple[str, Path] | None) -> None:
    if export is None:
        return
    if sub is None:
        raise click.UsageError("--export needs a subgraph answer (use --prompt)")
    write_subgraph(sub.to_networkx(), export[0], export[1])
    click.echo(f"wrote {export[1]} ({len(sub.nodes)} nodes, {len(sub.edges)} edges)", err=True)


LINK_COLUMNS = ("rank", "name", "kind", "pos", "n", "total", "mean", "sum_abs", "max_abs")


def link_command(direction: str, example: str) -> Callable[..., None]:
    @click.argument("feature")
    @click.option("--prompt", help="Answer inside this prompt's graph (ATTR edges).")
    @top_option(10)
    @click.option("--order", type=click.Choice(ORDERS), default="total", show_default=True)
    @click.option("--sign", type=click.Choice(SIGNS), default="positive", show_default=True)
    @export_option
    @store_options
    def command(
        feature: str,
        prompt: str | None,
        top: int,
        order: str,
        sign: str,
        export: tuple[str, Path] | None,
        settings: Neo4jSettings,
        fmt: str,
        tset: str | None,
    ) -> None:
        parse_feature(feature)  # a malformed name fails before any connection
        with open_store(settings, tset) as store:
            answer = getattr(store, direction)(feature, prompt, top, order, sign)
        maybe_export(answer.subgraph, export)
        emit(answer.rows(), fmt, LINK_COLUMNS)

    command.__doc__ = example
    return command


query.command("drivers")(
    link_command(
        "drivers",
        """Which features drive FEATURE: across the corpus (DRIVES) or in one prompt (ATTR).

        Ranked by total or mean weight; --sign picks excitatory, inhibitory or both; n counts
        the edges behind each row.

        Example: circuitstore query drivers mlp1tc[12] --top 5 --order mean
        """,
    )
)
query.command("targets")(
    link_command(
        "targets",
        """What FEATURE drives: across the corpus (DRIVES) or in one prompt (ATTR).

        Example: circuitstore query targets mlp0tc[7]@3 --prompt my-prompt --sign abs
        """,
    )
)


@query.command("examples")
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
    emit([e.as_row() for e in found], fmt, ("prompt", "pos", "activation", "context"))


@query.command("feature")
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
        emit(card_rows(card), fmt, ("section", "name", "value"))
    else:
        click.echo(card_table(card))


@query.command("paths")
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option(
    "--to",
    "to",
    default="logit",
    show_default=True,
    help="logit (the top one), logit[<token id>]@<pos>, or a feature at a position.",
)
@click.option("--source", help="Only paths from this node (a feature, embed0@<pos>, ...).")
@top_option(10)
@export_option
@store_options
def paths_cmd(
    prompt: str,
    to: str,
    source: str | None,
    top: int,
    export: tuple[str, Path] | None,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """The strongest paths into a logit or feature in one prompt (by |product of weights|).

    Example: circuitstore query paths --prompt my-prompt --to 'logit[250]@31' --top 5
    """
    for name in (to, source):
        if name is not None:
            parse_node(name)
    with open_store(settings, tset) as store:
        found = store.paths(prompt, to, source, top)
    maybe_export(found.subgraph, export)
    emit(found.rows(), fmt, ("rank", "product", "length", "path"))


@query.command("circuit")
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
    emit(found.rows(), fmt)


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


@query.command("export-graph")
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    callback=output_path,
    help="The JSON file to write.",
)
@store_options
def export_graph_cmd(
    prompt: str, out: Path, settings: Neo4jSettings, fmt: str, tset: str | None
) -> None:
    """Write one prompt's stored graph as circuit-tracer / Neuronpedia graph JSON.

    Example: circuitstore query export-graph --prompt my-prompt --out my-prompt.json
    """
    with open_store(settings, tset) as store:
        info, graph = store.prompt_graph(prompt)
        data = neuronpedia_graph(info, graph, store.tset(info.transcoder_set))
    write_json(data, out)
    summary = {"file": str(out), "nodes": len(data["nodes"]), "links": len(data["links"])}
    emit([summary], fmt)


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
