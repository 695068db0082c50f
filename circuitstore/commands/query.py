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
    MAX_SKIP,
    CircuitStoreGroup,
    connection_options,
    format_option,
    output_path,
    render_rows,
    top_option,
)
from circuitstore.query.export import (
    EXPORT_FORMATS,
    write_json,
    write_subgraph,
    write_viewer_graph,
)
from circuitstore.query.readonly import parse_params, run_read
from circuitstore.query.results import CIRCUIT_COLUMNS, Subgraph, token_text
from circuitstore.query.store import MAX_BEAM, ORDERS, SIGNS, CircuitStore
from circuitstore.render import (
    EXAMPLE_COLUMNS,
    EXAMPLE_RIGHT,
    card_rows,
    card_table,
    example_rows,
    with_label_column,
)
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.model import PromptScore
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


def emit_readable(
    rows: list[dict[str, Any]],
    fmt: str,
    columns: tuple[str, ...],
    table: list[dict[str, Any]] | None = None,
    table_columns: tuple[str, ...] | None = None,
    right: tuple[str, ...] = (),
) -> None:
    """`rows` as JSON or CSV (every field, `columns` first in CSV); as a table, `table` (the
    same rows as a person reads them: names with their tokens) in `table_columns`, with a label
    column where some row has a label."""
    if fmt != "table":
        extra = tuple(k for k in (rows[0] if rows else {}) if k not in columns)
        click.echo(render_rows(rows, fmt, columns + extra))
        return
    shown = rows if table is None else table
    cols = with_label_column(table_columns or columns, shown)
    click.echo(render_rows(shown, fmt, cols, right))


def maybe_export(sub: Subgraph | None, export: tuple[str, Path] | None) -> None:
    if export is None:
        return
    if sub is None:
        raise click.UsageError("--export needs a subgraph answer (use --prompt)")
    write_subgraph(sub.to_networkx(), export[0], export[1])
    click.echo(f"wrote {export[1]} ({len(sub.nodes)} nodes, {len(sub.edges)} edges)", err=True)


LINK_COLUMNS = ("rank", "name", "kind", "pos", "n", "total", "mean", "sum_abs", "max_abs")
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


def link_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Names with their tokens (`mlp0tc[70]@14 ' to'`) for people."""
    return [{**r, "name": _shown(r["name"], r.get("token"))} for r in rows]


def _shown(name: str, token: str | None) -> str:
    return name if token is None else f"{name} {token_text(token)}"


def link_command(direction: str, example: str) -> Callable[..., None]:
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
            answer = getattr(store, direction)(feature, prompt, top, order, sign, by_head)
        maybe_export(answer.subgraph, export)
        rows = answer.rows()
        if by_head:
            rows = heads_text(rows) if fmt != "json" else rows
            emit_readable(rows, fmt, HEAD_COLUMNS, link_table(rows))
            return
        emit_readable(rows, fmt, LINK_COLUMNS, link_table(rows))

    command.__doc__ = example
    return command


query.command("drivers")(
    link_command(
        "drivers",
        """Which features drive FEATURE: across the corpus (DRIVES) or in one prompt (ATTR).

        Ranked by total or mean weight; --sign picks excitatory, inhibitory or both; n counts
        the edges behind each row.

        Example: circuitstore query drivers mlp1tc[12] --top 5 --order mean

        In one prompt, by attention head:
        circuitstore query drivers 'mlp2tc[5]@9' --prompt my-prompt --by-head
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


@query.command("heads")
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
    emit_readable(
        found.rows(),
        fmt,
        ("prompt", "pos", "activation", "context"),
        example_rows(found),
        EXAMPLE_COLUMNS,
        EXAMPLE_RIGHT,
    )


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
        emit(card_rows(card), fmt, ("section", "name", "value", "label"))
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
    rows = found.rows()
    table = [{**r, "id": _shown(r["id"], r["token"])} for r in rows]
    emit_readable(
        rows, fmt, CIRCUIT_COLUMNS, table, tuple(c for c in CIRCUIT_COLUMNS if c != "token")
    )


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
    type=click.Path(path_type=Path),
    callback=output_path,
    help="The JSON file to write; or an existing folder, to write <slug>.json there and list it "
    "in the folder's graph-metadata.json (circuit-tracer's local viewer serves such a folder).",
)
@click.option(
    "--scan",
    metavar="MODEL",
    help="Neuronpedia's id of the model (default: gpt2-small for the GPT-2 small transcoders, "
    "else the transcoder set's id).",
)
@click.option(
    "--source-set",
    metavar="NAME",
    help="Neuronpedia's source set of the transcoders, whose dashboards the graph opens "
    "(default: tres-dc for the GPT-2 small transcoders, else none).",
)
@click.option("--slug", help="The graph's slug (default: from the prompt's key).")
@click.option(
    "--node-threshold",
    default=0.8,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="The viewers' default pruning threshold.",
)
@store_options
def export_graph_cmd(
    prompt: str,
    out: Path,
    scan: str | None,
    source_set: str | None,
    slug: str | None,
    node_threshold: float,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """Write one prompt's stored graph as attribution-graph JSON for Neuronpedia's graph page
    (its published schema; feature ids Cantor-encoded, so that it opens the features'
    dashboards) and circuit-tracer's local viewer. Bias and remainder mass, which the viewers
    have no node for, is folded into error nodes.

    Example: circuitstore query export-graph --prompt my-prompt --out my-prompt.json
    """
    with open_store(settings, tset) as store:
        data = store.export_graph(prompt, scan, source_set, node_threshold, slug)
    if out.is_dir():
        out = write_viewer_graph(data, out)
    else:
        write_json(data, out)
    meta = data["metadata"]
    summary = {
        "file": str(out),
        "nodes": len(data["nodes"]),
        "links": len(data["links"]),
        "scan": meta["scan"],
        "source_set": meta.get("feature_details", {}).get("neuronpedia_source_set"),
        "folded": ", ".join(f"{k} {v}" for k, v in meta["info"]["folded"].items()),
    }
    emit([summary], fmt)


@query.command("search")
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
