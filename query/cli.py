"""`circuitstore query ...`: thin commands over `circuitstore.query`."""

from __future__ import annotations

import click

from circuitstore.clitools import connection_options, format_option, render_rows
from circuitstore.query.readonly import parse_params, run_read
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors


@click.group()
def query() -> None:
    """Ask the store: which features drive X, where X fires, how a prompt reaches its answer."""


@query.command("cypher")
@click.argument("statement")
@click.option("-p", "--param", "params", multiple=True, help="name=value (JSON or text).")
@click.option("--limit", default=1000, show_default=True, help="At most this many rows.")
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
