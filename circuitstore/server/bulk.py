"""`circuitstore load DIR`: a parts folder into the local server's database, in bulk.

Phases: check every part (nothing is touched if one is bad); make sure the server runs and see
whether its database holds data (refused without `overwrite`); the corpus reductions and the
import files (DuckDB); stop the server; `neo4j-admin database import full`; start it; apply the
schema. The import files live in a temporary folder of the home, removed after.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import neo4j
from pydantic import SecretStr

from circuitstore.ingest.parts.build import ImportFiles, build
from circuitstore.ingest.parts.scan import Parts, count_files, scan
from circuitstore.schema.apply import apply_schema
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.errors import CircuitStoreError, ConfigError
from circuitstore.server import admin, cypher, process
from circuitstore.server.config import ServerSettings

SPACE_FACTOR = 9  # disk a load needs, per byte of parts (see `BulkLoad._check_space`)


@dataclass
class LoadSummary:
    """What a load did: row counts and each phase's seconds."""

    parts: int = 0
    nodes: int = 0
    relationships: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def import_rate(self) -> float:
        """Relationships per second of the import itself."""
        return self.relationships / max(self.seconds.get("import", 0.0), 1e-9)

    def lines(self) -> list[str]:
        rels = ", ".join(f"{n:,} {k}" for k, n in self.counts.items() if k.isupper())
        nodes = ", ".join(f"{n:,} {k}" for k, n in self.counts.items() if not k.isupper())
        phases = ", ".join(f"{k} {v:.1f} s" for k, v in self.seconds.items())
        return [
            f"loaded {self.parts} prompts' parts: {self.nodes:,} nodes ({nodes})",
            f"{self.relationships:,} relationships ({rels})",
            f"{phases}; the import took {self.import_rate:,.0f} relationships/s",
        ]


class Progress(Protocol):
    """How a caller shows the phases: `phase(name, total)` opens one (total None when unknown)
    and returns the function that advances it; `done()` closes it."""

    def phase(self, name: str, total: int | None) -> Callable[[int], None]: ...

    def done(self) -> None: ...


class Quiet:
    """Shows nothing."""

    def phase(self, name: str, total: int | None) -> Callable[[int], None]:
        del name, total
        return lambda _: None

    def done(self) -> None:
        """Nothing to close."""


@dataclass
class BulkLoad:
    """`BulkLoad(url, server, password).run()`: the parts at `url` into the server of
    `server.home`, started with `server`'s ports and memory where it does not run."""

    url: str
    server: ServerSettings
    password: str
    overwrite: bool = False
    database: str = "neo4j"
    progress: Progress = field(default_factory=Quiet)

    def run(self) -> LoadSummary:
        """Check, reduce, import, start: the store holds the parts' corpus."""
        summary = LoadSummary()
        parts = self._scan(summary)
        self._check_space(parts)
        with self._phase(summary, "server", None):
            uri = self._running()
            self._refuse_data(uri)
        home = self.server.home
        work = Path(tempfile.mkdtemp(prefix="bulk-", dir=home))
        try:
            files = self._files(parts, work, summary)
            with self._phase(summary, "stop", None):
                process.stop(home, timeout=120)
            with self._phase(summary, "import", None) as tick:
                admin.import_full(home, files, self.database, on_line=lambda _: tick(1))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with self._phase(summary, "start", None):
            uri = self._running()
        with self._phase(summary, "schema", None), self._driver(uri) as driver:
            apply_schema(driver, self.database, await_seconds=3600)
        return summary

    def files_only(self, folder: Path, root: str) -> LoadSummary:
        """The import files and the importer's argument file in `folder`, for a server this
        command does not run (a container that mounts `folder` at `root`); no server touched."""
        summary = LoadSummary()
        parts = self._scan(summary)
        folder.mkdir(parents=True, exist_ok=True)
        admin.write_args_file(self._files(parts, folder, summary), root, self.database)
        return summary

    def _scan(self, summary: LoadSummary) -> Parts:
        with self._phase(summary, "check", count_files(self.url)) as tick:
            parts = scan(self.url, progress=tick)
        summary.parts = parts.n_prompts
        return parts

    def _check_space(self, parts: Parts) -> None:
        """Refuse, before anything starts, a load the home's disk cannot hold: the import
        files and the new store beside the old one took about 9x the parts' size (1,000
        GPT-2-scale prompts: 2.6 GiB of parts, 23.4 GiB at the peak; bench_load.py)."""
        home = self.server.home if self.server.home.exists() else self.server.home.parent
        need, free = SPACE_FACTOR * parts.folder.size(), shutil.disk_usage(home).free
        if free < need:
            raise ConfigError(
                f"loading {parts.folder.shown} needs about {need / 2**30:,.1f} GiB free where "
                f"the server home {self.server.home} is (import files and the new store), but "
                f"{free / 2**30:,.1f} GiB are: free some, or use a --home on a larger disk"
            )

    def _files(self, parts: Parts, work: Path, summary: LoadSummary) -> ImportFiles:
        with self._phase(summary, "reduce", 8) as tick:
            files = build(parts, work, step=lambda _: tick(1))
        summary.counts = dict(files.counts)
        summary.nodes, summary.relationships = files.n_nodes, files.n_relationships
        return files

    def _running(self) -> str:
        """The server's Bolt URI, started if it does not run."""
        current = process.status(self.server.home)
        if not current.running:
            current = process.start(self.server, self.password, timeout=600).status
        assert current.bolt_uri is not None
        return current.bolt_uri

    def _refuse_data(self, uri: str) -> None:
        """Refuse a database with data unless `overwrite`; one that does not come online (a
        store that cannot start) is replaced with `overwrite` too."""
        try:
            with (
                self._driver(uri) as driver,
                translate_errors(where=uri),
                driver.session(database=self.database) as session,
            ):
                query = neo4j.Query(cypher.HOLDS_DATA, timeout=60)
                held = bool(session.run(query).single(strict=True)["held"])
        except CircuitStoreError as exc:
            if self.overwrite:
                return
            raise ConfigError(
                f"database {self.database!r} of the server in {self.server.home} did not answer "
                f"({exc}): add --overwrite to replace it"
            ) from None
        if held and not self.overwrite:
            raise ConfigError(
                f"database {self.database!r} of the server in {self.server.home} holds data, "
                "which a load replaces: add --overwrite to replace it, or load into another "
                "--home"
            )

    @contextmanager
    def _driver(self, uri: str) -> Iterator[neo4j.Driver]:
        secret = SecretStr(self.password)
        settings = Neo4jSettings(uri=uri, password=secret, database=self.database)
        with open_driver(settings) as driver:
            yield driver

    @contextmanager
    def _phase(
        self, summary: LoadSummary, name: str, total: int | None
    ) -> Iterator[Callable[[int], None]]:
        began = time.perf_counter()
        tick = self.progress.phase(name, total)
        try:
            yield tick
        finally:
            self.progress.done()
            summary.seconds[name] = time.perf_counter() - began
