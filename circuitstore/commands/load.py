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
@click.option(
    "--import-files",
    type=click.Path(file_okay=False, path_type=Path),
    help="Only write the importer's CSV files and its argument file (neo4j-admin.args) here, "
    "for a server this command does not run (a container); touch no server.",
)
@click.option(
    "--mount",
    default="/import",
    show_default=True,
    help="With --import-files: where the importer will see that folder.",
)
@start_options(DEFAULT_HEAP, DEFAULT_PAGECACHE, when="Where the server is not running yet")
@click.option("--progress/--no-progress", default=None, help="[default: on a terminal only]")
def load(
    parts: str,
    overwrite: bool,
    import_files: Path | None,
    mount: str,
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
    applies the schema. A database that holds data is replaced only with --overwrite. The
    password comes from NEO4J_PASSWORD. For a server in a container, --import-files writes
    the files and the importer's arguments instead (docs/parts.md).

    \b
    Example:
      circuitstore ingest --model gpt2 --transcoders pchlenski/gpt2-transcoders \\
        --prompts corpus.txt --parts parts/
      NEO4J_PASSWORD=... circuitstore load parts/
      circuitstore load parts/ --import-files import/
    """
    from circuitstore.server.bulk import BulkLoad

    bars = _Bars(progress)
    if import_files is not None:
        server = ServerSettings(_home(home), bolt_port, http_port, heap, pagecache)
        summary = BulkLoad(parts, server, "", progress=bars).files_only(import_files, mount)
        first, second, _ = summary.lines()
        click.echo(first.replace("loaded", "wrote the import files of", 1))
        click.echo(second)
        click.echo(f"then: neo4j-admin @{mount.rstrip('/')}/neo4j-admin.args (server stopped)")
        return
    password = validate_password(os.environ.get(PASSWORD_ENV))
    server = ServerSettings(_home(home), bolt_port, http_port, heap, pagecache)
    job = BulkLoad(parts, server, password, overwrite, progress=bars)
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
