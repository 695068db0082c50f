"""The root command, `circuitstore`. Subcommands load lazily: `query` never pulls in torch."""

from __future__ import annotations

import click

from circuitstore import __version__
from circuitstore.clitools import HELP, CircuitStoreGroup

COMMANDS = {
    "server": (
        "circuitstore.commands.server:server",
        "Run a local Neo4j server (no Docker needed).",
    ),
    "schema": (
        "circuitstore.commands.schema:schema",
        "Create and inspect constraints and indexes.",
    ),
    "attribute": (
        "circuitstore.commands.attribute:attribute",
        "Print one prompt's attribution graph.",
    ),
    "ingest": ("circuitstore.commands.ingest:ingest", "Ingest a prompt corpus (resumable)."),
    "load": ("circuitstore.commands.load:load", "Build a store from ingest --parts, in bulk."),
    "demo": ("circuitstore.commands.demo:demo", "Fill a local store with the demo; ask it."),
    "query": ("circuitstore.commands.query:query", "Ask the store: drivers, targets, examples..."),
    "labels": ("circuitstore.commands.labels:labels", "Import feature labels (Neuronpedia)."),
    "view": ("circuitstore.commands.view:view", "Explore the store in a browser (read-only)."),
    "verify": (
        "circuitstore.commands.verify:verify",
        "Check a prompt's stored graph by intervention.",
    ),
    "qk": ("circuitstore.commands.qk:qk", "Why a head attends where it does (QK tracing)."),
}


@click.group(
    cls=CircuitStoreGroup,
    lazy=COMMANDS,
    context_settings=HELP,
)
@click.version_option(__version__, "--version", prog_name="circuitstore")
def cli() -> None:
    """circuitstore: transcoder attribution graphs in Neo4j.

    \b
    Bring up a local store and apply the schema:
      export NEO4J_PASSWORD=choose-a-password
      circuitstore server start && circuitstore schema apply
    """


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
