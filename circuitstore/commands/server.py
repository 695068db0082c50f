"""`circuitstore server start | stop | status | logs`: a local Neo4j Community server, no Docker.

Library code raises CircuitStoreError subclasses; the root command's error boundary
(`circuitstore.clitools`) turns them into one "Error: ..." line and the error's exit status.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from circuitstore.clitools import HELP, CircuitStoreGroup, options
from circuitstore.schema.errors import CircuitStoreError
from circuitstore.schema.home import HOME_ENV
from circuitstore.server import process
from circuitstore.server.config import (
    DEFAULT_BOLT_PORT,
    DEFAULT_HEAP,
    DEFAULT_HTTP_PORT,
    DEFAULT_PAGECACHE,
    PASSWORD_ENV,
    ServerSettings,
    default_home,
    validate_password,
)

F = TypeVar("F", bound=Callable[..., Any])


home_option = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=f"Server home (lib, conf, data, logs). Default: neo4j in the data folder (${HOME_ENV}, "
    "else $XDG_DATA_HOME/circuitstore, else ~/.local/share/circuitstore).",
)


def _home(home: Path | None) -> Path:
    return (home or default_home()).expanduser().resolve()


@click.group(name="server", cls=CircuitStoreGroup, context_settings=HELP)
def server() -> None:
    """Run a local Neo4j Community 5.26 server (Java + Maven Central, no Docker)."""


def start_options(heap: str, pagecache: str, when: str = "") -> Callable[[F], F]:
    """`--home/--bolt-port/--http-port/--heap/--pagecache`, for `server start` and for the
    commands that start a server when none runs (`when` says so in the help)."""
    ports = click.IntRange(1, 65535)
    return lambda func: options(
        func,
        home_option,
        click.option("--bolt-port", type=ports, default=DEFAULT_BOLT_PORT, show_default=True,
                     help=f"{when}." if when else None),
        click.option("--http-port", type=ports, default=DEFAULT_HTTP_PORT, show_default=True,
                     help=f"{when} (the Browser)." if when else "The Browser's."),
        click.option("--heap", default=heap, show_default=True, help="JVM heap, e.g. 1g."),
        click.option("--pagecache", default=pagecache, show_default=True, help="e.g. 512m."),
    )  # fmt: skip


@server.command()
@start_options(DEFAULT_HEAP, DEFAULT_PAGECACHE)
@click.option(
    "--timeout",
    type=click.FloatRange(1, 3600),
    default=120.0,
    show_default=True,
    help="Seconds to wait for Bolt.",
)
def start(
    home: Path | None, bolt_port: int, http_port: int, heap: str, pagecache: str, timeout: float
) -> None:
    """Start the server in the background (the password comes from NEO4J_PASSWORD).

    The first start downloads the jars from Maven Central and sets the initial password;
    later starts reuse both. Starting a running server changes nothing.

    Example: NEO4J_PASSWORD=choose-a-password circuitstore server start --heap 4g
    """
    root = _home(home)
    current = process.status(root)
    if current.running:
        # Checked before the password so that a second start never needs one.
        click.echo(f"already running (pid {current.pid}) at {current.bolt_uri}; nothing changed")
        return
    password = validate_password(os.environ.get(PASSWORD_ENV))
    settings = ServerSettings(root, bolt_port, http_port, heap, pagecache)
    result = process.start(settings, password, timeout, notify=lambda m: click.echo(m, err=True))
    if result.already_running:
        click.echo(f"already running (pid {result.status.pid}); nothing changed")
        return
    click.echo(f"started (pid {result.status.pid}) in {result.seconds:.1f} s")
    _echo_addresses(result.status)


@server.command()
@home_option
@click.option(
    "--timeout",
    type=click.FloatRange(0, 3600),
    default=60.0,
    show_default=True,
    help="Before SIGKILL.",
)
def stop(home: Path | None, timeout: float) -> None:
    """Stop the server: SIGTERM, then SIGKILL after --timeout seconds.

    Example: circuitstore server stop
    """
    stopped = process.stop(_home(home), timeout)
    click.echo(f"stopped (pid {stopped.pid})" if stopped else "not running")


@server.command()
@home_option
def status(home: Path | None) -> None:
    """Say whether the server runs, its pid and addresses.

    Example: circuitstore server status
    """
    current = process.status(_home(home))
    if not current.running:
        click.echo(f"stopped (home {current.home})")
        return
    click.echo(f"running (pid {current.pid})")
    _echo_addresses(current)


@server.command()
@home_option
@click.option("-n", "--lines", type=click.IntRange(0, 100_000), default=50, show_default=True)
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines (Ctrl-C ends).")
def logs(home: Path | None, lines: int, follow: bool) -> None:
    """Print the end of the server's console log.

    Example: circuitstore server logs -n 50
    """
    path = process.log_path(_home(home))
    if not path.exists():
        raise CircuitStoreError(f"no log at {path}; start the server first")
    for line in process.tail(path, lines):
        click.echo(line, nl=False)
    if follow:
        try:
            for line in process.follow(path):
                click.echo(line, nl=False)
        except KeyboardInterrupt:
            pass


def _echo_addresses(current: process.ServerStatus) -> None:
    click.echo(f"  bolt:    {current.bolt_uri}")
    click.echo(f"  browser: {current.browser_url}")
    click.echo(f"  home:    {current.home}")
    click.echo(f"  log:     {process.log_path(current.home)}")
