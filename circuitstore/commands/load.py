"""`circuitstore load DIR`: a thin command over `circuitstore.server.bulk.BulkLoad`."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from circuitstore.clitools import HELP, CircuitStoreCommand
from circuitstore.commands.server import _home, start_options
from circuitstore.server.config import (
    DEFAULT_HEAP,
    DEFAULT_PAGECACHE,
    PASSWORD_ENV,
    ServerSettings,
    validate_password,
)


@click.command("load", cls=CircuitStoreCommand, context_settings=HELP)
@click.argument("parts")
@click.option(
    "--overwrite",
    is_flag=True,
    help="Replace a database that holds data (without it, load refuses one).",
)
@start_options(DEFAULT_HEAP, DEFAULT_PAGECACHE, when="Where the server is not running yet")
@click.option("--progress/--no-progress", default=None, help="[default: on a terminal only]")
def load(
    parts: str,
    overwrite: bool,
    home: Path | None,
    bolt_port: int,
    http_port: int,
    heap: str,
    pagecache: str,
    progress: bool | None,
) -> None:
    """Build the local server's store from the Parquet parts of `ingest --parts PARTS`.

    Checks every part first, computes the corpus aggregates (DRIVES, feature statistics, top
    examples) columnar, then stops the server, runs Neo4j's bulk importer, starts it again and
    applies the schema. A database that holds data is replaced only with --overwrite. For the
    Docker image, see the docs' bulk-load page. The password comes from NEO4J_PASSWORD.

    \b
    Example:
      circuitstore ingest --model gpt2 --transcoders pchlenski/gpt2-transcoders \\
        --prompts corpus.txt --parts parts/
      NEO4J_PASSWORD=... circuitstore load parts/
    """
    from circuitstore.server.bulk import BulkLoad

    password = validate_password(os.environ.get(PASSWORD_ENV))
    server = ServerSettings(_home(home), bolt_port, http_port, heap, pagecache)
    job = BulkLoad(parts, server, password, overwrite, progress=_Bars(progress))
    for line in job.run().lines():
        click.echo(line)


class _Bars:
    """A tqdm bar per phase of the load."""

    def __init__(self, show: bool | None) -> None:
        self.disable = None if show is None else not show
        self.bar: Any = None

    def phase(self, name: str, total: int | None) -> Callable[[int], None]:
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=f"{name:>6}", unit="step", disable=self.disable)
        return self.bar.update  # type: ignore[no-any-return]

    def done(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
