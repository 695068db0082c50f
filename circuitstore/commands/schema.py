"""`circuitstore schema apply | show`."""

from __future__ import annotations

import click

from circuitstore.clitools import (
    HELP,
    CircuitStoreGroup,
    connection_options,
    format_option,
    render_rows,
)
from circuitstore.schema.apply import apply_schema, read_schema
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors


@click.group(cls=CircuitStoreGroup, context_settings=HELP)
def schema() -> None:
    """Create and inspect the store's constraints and indexes."""


@schema.command("apply")
@connection_options
def apply_cmd(settings: Neo4jSettings) -> None:
    """Create every constraint and index (safe to run again) and record the schema version.

    Example: NEO4J_PASSWORD=... circuitstore schema apply
    """
    with open_driver(settings) as driver, translate_errors(settings):
        state = apply_schema(driver, settings.database)
    ours = sum(row.ours for row in state.rows)
    click.echo(f"schema version {state.version}: {ours} constraints and indexes in place")


@schema.command("show")
@connection_options
@format_option()
def show_cmd(settings: Neo4jSettings, fmt: str) -> None:
    """Print the constraints and indexes, and the recorded schema version.

    Example: circuitstore schema show --format json
    """
    with open_driver(settings) as driver, translate_errors(settings):
        state = read_schema(driver, settings.database)
    rows = [
        {
            "name": r.name,
            "kind": r.kind,
            "type": r.type,
            "on": ":".join(r.labels_or_types),
            "properties": list(r.properties),
            "ours": r.ours,
        }
        for r in state.rows
    ]
    click.echo(render_rows(rows, fmt))
    if fmt == "table":
        click.echo(f"\nschema version: {state.version if state.version is not None else 'none'}")
        if state.missing:
            click.echo(f"missing: {', '.join(state.missing)} (run `circuitstore schema apply`)")
