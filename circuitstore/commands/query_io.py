"""What every `circuitstore query ...` command shares: the store and output options, opening
the store, printing rows (for people, with tokens beside names) and writing a subgraph."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from circuitstore.clitools import connection_options, format_option, output_path, render_rows
from circuitstore.query.export import EXPORT_FORMATS, write_subgraph
from circuitstore.query.store import CircuitStore
from circuitstore.query.subgraph import Subgraph
from circuitstore.query.tables import node_text
from circuitstore.render import with_label_column
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors

F = TypeVar("F", bound=Callable[..., Any])


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
    """`--export FORMAT FILE`: also write the answer's subgraph."""
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
    """A store on its own driver, closed on leaving; errors as one line."""
    with open_driver(settings) as driver, translate_errors(settings):
        yield CircuitStore(driver, settings.database, tset, settings.uri)


def emit(rows: list[dict[str, Any]], fmt: str, columns: tuple[str, ...] = ()) -> None:
    """Print `rows` in `fmt`."""
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


def with_tokens(rows: list[dict[str, Any]], key: str = "name") -> list[dict[str, Any]]:
    """Rows whose `key` names a node, each name with its token (`mlp0tc[70]@14 ' to'`)."""
    return [{**r, key: node_text(r[key], r.get("token"))} for r in rows]


def maybe_export(sub: Subgraph | None, export: tuple[str, Path] | None) -> None:
    """Write the answer's subgraph where `--export` asks."""
    if export is None:
        return
    if sub is None:
        raise click.UsageError("--export needs a subgraph answer (use --prompt)")
    write_subgraph(sub.to_networkx(), export[0], export[1])
    click.echo(f"wrote {export[1]} ({len(sub.nodes)} nodes, {len(sub.edges)} edges)", err=True)
