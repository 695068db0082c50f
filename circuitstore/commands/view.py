"""`circuitstore view`: a thin command over `circuitstore.view.serve`."""

from __future__ import annotations

import os
import sys
import webbrowser
from typing import TYPE_CHECKING

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, connection_options
from circuitstore.schema.connection import Neo4jSettings, open_driver
from circuitstore.schema.errors import CircuitStoreError
from circuitstore.view.serve import DEFAULT_PORT, bind, run

if TYPE_CHECKING:
    from circuitstore.query import CircuitStore


@click.command("view", cls=CircuitStoreCommand, context_settings=HELP)
@click.option(
    "--port",
    type=int,
    default=DEFAULT_PORT,
    show_default=True,
    help="Port on 127.0.0.1 (0 picks a free one).",
)
@click.option(
    "--open/--no-open",
    "open_browser",
    default=None,
    help="Open the URL in a browser [default: where a display is].",
)
@click.option(
    "--transcoder-set",
    "tset",
    envvar="CIRCUITSTORE_TRANSCODER_SET",
    help="Which transcoder set (needed when the store holds several).",
)
@connection_options
def view(port: int, open_browser: bool | None, tset: str | None, settings: Neo4jSettings) -> None:
    """Explore the store in a browser: its prompts, each prompt's graph laid out by token and
    layer, each node's card and each feature's page. Read-only, on 127.0.0.1 only; every URL
    needs the random token in the one line this prints. Ctrl-C stops it.

    \b
    Example:
      circuitstore view --port 8765
      http://127.0.0.1:8765/?token=...
    """
    from circuitstore.query import CircuitStore

    viewer = bind(port)
    # Not verified: the viewer starts while the store is down, and its pages say so. A read
    # retried for the driver's default 30 s would leave a page blank that long; 2 s is enough
    # for a transient error.
    with open_driver(settings, verify=False, retry_seconds=2.0) as driver:
        store = CircuitStore(driver, settings.database, tset, settings.uri)
        _check(store)
        shown = open_browser if open_browser is not None else _has_display()

        def ready() -> None:
            click.echo(viewer.url)
            if shown:
                webbrowser.open(viewer.url)

        run(viewer, store, ready)


def _check(store: CircuitStore) -> None:
    """Say on stderr, once, when the store cannot be read now; the pages say it too."""
    try:
        store.transcoder_sets()
    except CircuitStoreError as exc:
        click.echo(f"circuitstore view: {exc} (serving anyway; pages say so)", err=True)


def _has_display() -> bool:
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
