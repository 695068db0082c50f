"""The run catalog: every run's configuration and provenance, and the state of every prompt.

SQLite by default, any SQLAlchemy URL by option (PostgreSQL for workers on several machines).
The catalog is bookkeeping, not the source of truth for what the store holds: a prompt is in the
store when its Prompt node is (written in the same transaction as its aggregates), and a resume
reconciles the two (see `runner`). So a crash between the Neo4j commit and the catalog update
loses nothing and doubles nothing.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from filelock import FileLock
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
from tenacity import retry, retry_if_exception_type, stop_after_delay, wait_exponential

from circuitstore.schema.errors import CatalogError, InputError
from circuitstore.schema.inputs import url_port_problem

PENDING, DONE, SKIPPED, FAILED = "pending", "done", "skipped", "failed"

# Names and keys are Text: a run is named after its corpus file (up to 255 bytes) unless --run
# names it, and a JSONL id may hold 1,000 characters.
metadata = sa.MetaData()
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("config_hash", sa.String(64), nullable=False),
    sa.Column("config", sa.Text, nullable=False),
    sa.Column("provenance", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
# Every prompt of every run, indexed by a digest of its key: PostgreSQL's b-tree entries stop
# near 2.7 KB, and 1,000 characters of UTF-8 take up to 4 KB. (An older catalog's `run_prompts`
# table is left alone: the store decides what is done, so a resume re-registers its prompts and
# the reconcile marks the stored ones done.)
prompt_states = sa.Table(
    "prompt_states",
    metadata,
    sa.Column("run", sa.Text, sa.ForeignKey("runs.name"), primary_key=True),
    sa.Column("key_hash", sa.String(64), primary_key=True),
    sa.Column("key", sa.Text, nullable=False),
    sa.Column("line", sa.Integer, nullable=False),
    sa.Column("state", sa.String(20), nullable=False, index=True),
    sa.Column("n_tokens", sa.Integer),
    sa.Column("n_edges", sa.Integer),
    sa.Column("reason", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# A restarting database server or a locked SQLite file is waited out, not fatal; so is a
# deadlock, and, on servers without INSERT ... ON CONFLICT, losing a race with another shard
# worker inserting the same row (IntegrityError): on the next try the row is there. Each catalog
# method is one transaction that is safe to run again, so the whole method is retried.
_retry = retry(
    retry=retry_if_exception_type((OperationalError, IntegrityError)),
    wait=wait_exponential(multiplier=0.2, max=5),
    stop=stop_after_delay(120),
    reraise=True,
)

F = TypeVar("F", bound=Callable[..., Any])


def _retried(func: F) -> F:
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return _retry(func)(*args, **kwargs)
        except SQLAlchemyError as exc:
            raise CatalogError(f"catalog: {func.__name__} failed ({_reason(exc)})") from exc

    return wrapper  # type: ignore[return-value]


@dataclass(frozen=True)
class RunRecord:
    """One ingest run as the catalog records it."""

    name: str
    config_hash: str
    config: dict[str, Any]
    provenance: dict[str, Any]
    status: str
    resumed: bool


def default_url(path: Path) -> str:
    """The SQLite URL of a catalog file."""
    return f"sqlite:///{path}"


class Catalog:
    """A handle on the catalog database; create with `Catalog.open(url)`."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    @classmethod
    def open(cls, url: str) -> Catalog:
        # No retries here: a catalog that can't be opened at the start is a setup problem to
        # report at once; retries are for a database that goes away in the middle of a run.
        """The catalog at `url`, its tables created if missing."""
        try:
            engine = sa.create_engine(url, connect_args=_connect_args(url))
            if engine.dialect.name == "sqlite":
                _make_private_file(engine)
                sa.event.listen(engine, "connect", _sqlite_pragmas)
            with _creation_lock(engine):
                _create_tables(engine)
        except (sa.exc.ArgumentError, ValueError):  # not shown: it may hold a password
            problem = url_port_problem(url)
            raise CatalogError(
                f"--catalog is not a database URL{f' ({problem})' if problem else ''}; expected "
                "e.g. sqlite:///path/catalog.sqlite or postgresql://user@host/db"
            ) from None
        except ImportError as exc:
            name = exc.name or "?"
            raise CatalogError(
                f"catalog {_safe(url)}: its database driver {name} is not installed "
                f"(pip install {_DRIVERS.get(name, name)})"
            ) from None
        except (SQLAlchemyError, OSError) as exc:
            raise CatalogError(f"catalog {_safe(url)}: cannot open ({_reason(exc)})") from None
        return cls(engine)

    @_retried
    def open_run(
        self, name: str, config: dict[str, Any], config_hash: str, provenance: dict[str, Any]
    ) -> RunRecord:
        """Create run `name`, or resume it if its configuration is the same. A changed
        configuration under the same name is refused, never mixed into the old run."""
        now = _now()
        with self._begin() as conn:
            row = _run_row(conn, name)
            if row is None:
                insert = _insert_new(conn, runs).values(
                    name=name,
                    config_hash=config_hash,
                    config=json.dumps(config),
                    provenance=json.dumps(provenance),
                    status="running",
                    created_at=now,
                    updated_at=now,
                )
                if conn.execute(insert).rowcount == 1:
                    return RunRecord(name, config_hash, config, provenance, "running", False)
                # Another worker inserted it since we looked (ours was skipped): resume it.
                row = _run_row(conn, name)
            if row["config_hash"] != config_hash:
                changed = _changed_keys(json.loads(row["config"]), config)
                raise InputError(
                    f"run {name!r} exists with a different configuration ({changed}): "
                    "choose a new --run name or restore the old settings"
                )
            conn.execute(
                runs.update().where(runs.c.name == name).values(status="running", updated_at=now)
            )
        return RunRecord(name, config_hash, config, json.loads(row["provenance"]), "running", True)

    @_retried
    def register(self, run: str, prompts: Iterable[tuple[str, int]]) -> None:
        """Add (key, line) pairs not yet known to the run, as pending."""
        with self._begin() as conn:
            query = sa.select(prompt_states.c.key_hash).where(prompt_states.c.run == run)
            known = set(conn.execute(query).scalars())
            new: dict[str, tuple[str, int]] = {}
            for key, line in prompts:
                new.setdefault(_key_hash(key), (key, line))
            pending = {"run": run, "state": PENDING, "updated_at": _now()}
            # In key_hash order: workers registering overlapping keys then lock them in the same
            # order and wait for each other instead of deadlocking.
            rows = [
                {**pending, "key_hash": h, "key": k, "line": n}
                for h, (k, n) in sorted(new.items())
                if h not in known
            ]
            if rows:
                conn.execute(_insert_new(conn, prompt_states), rows)

    @_retried
    def keys_in_state(self, run: str, state: str) -> set[str]:
        """The keys of a run's prompts in `state`."""
        with self._begin() as conn:
            query = sa.select(prompt_states.c.key).where(
                prompt_states.c.run == run, prompt_states.c.state == state
            )
            return set(conn.execute(query).scalars())

    @_retried
    def mark(self, run: str, updates: Sequence[dict[str, Any]]) -> None:
        """`updates`: dicts with key, state and optionally n_tokens, n_edges, reason."""
        if not updates:
            return
        now = _now()
        stmt = (
            prompt_states.update()
            .where(
                prompt_states.c.run == sa.bindparam("b_run"),
                prompt_states.c.key_hash == sa.bindparam("b_hash"),
            )
            .values(
                state=sa.bindparam("state"),
                n_tokens=sa.bindparam("n_tokens"),
                n_edges=sa.bindparam("n_edges"),
                reason=sa.bindparam("reason"),
                updated_at=sa.bindparam("updated_at"),
            )
        )
        rows = [
            {
                "b_run": run,
                "b_hash": _key_hash(u["key"]),
                "state": u["state"],
                "n_tokens": u.get("n_tokens"),
                "n_edges": u.get("n_edges"),
                "reason": u.get("reason"),
                "updated_at": now,
            }
            for u in updates
        ]
        rows.sort(key=lambda r: r["b_hash"])  # the order `register` locks them in
        with self._begin() as conn:
            conn.execute(stmt, rows)

    @_retried
    def finish(self, run: str, status: str) -> None:
        """Record a run's final status."""
        with self._begin() as conn:
            conn.execute(
                runs.update().where(runs.c.name == run).values(status=status, updated_at=_now())
            )

    @_retried
    def counts(self, run: str) -> dict[str, int]:
        """How many of a run's prompts are in each state."""
        with self._begin() as conn:
            query = (
                sa.select(prompt_states.c.state, sa.func.count())
                .where(prompt_states.c.run == run)
                .group_by(prompt_states.c.state)
            )
            return {state: int(n) for state, n in conn.execute(query)}

    def _begin(self) -> Any:
        return self.engine.begin()


def _creation_lock(engine: sa.Engine) -> AbstractContextManager[object]:
    """Shard workers starting together on a new SQLite file would race to create its tables and
    to switch it to WAL; a lock file beside it lets one create while the others wait."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return nullcontext()
    return FileLock(f"{database}.lock", timeout=120, mode=0o600)


def _create_tables(engine: sa.Engine) -> None:
    """Create the tables if missing."""
    try:
        with engine.begin() as conn:
            _take_turns(conn)
            metadata.create_all(conn)
    except SQLAlchemyError:
        # Other servers have no lock here: a worker that loses the race between the check and
        # the CREATE finds the tables there and goes on.
        if not set(metadata.tables) <= set(sa.inspect(engine).get_table_names()):
            raise


# Any fixed number will do: every circuitstore process takes the same advisory lock.
_TABLES_LOCK = 0x63697263_75697473


def _take_turns(conn: sa.Connection) -> None:
    """PostgreSQL has no lock file: workers opening a new catalog together would race to create
    its tables (the losers fail on pg_type's unique index). A transaction-scoped advisory lock
    makes them take turns; commit releases it."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _TABLES_LOCK})


def _insert_new(conn: sa.Connection, table: sa.Table) -> Any:
    """An INSERT that skips rows whose primary key another worker has just written, where the
    server can say so; elsewhere the clash raises IntegrityError and the method is retried."""
    if conn.dialect.name == "postgresql":
        # RETURNING only so that SQLAlchemy sends many rows a statement, which it does not for
        # ON CONFLICT without it: 20,000 new keys took 2.0 s instead of 5.7 s.
        insert = postgresql.insert(table).on_conflict_do_nothing()
        return insert.returning(*table.primary_key.columns)
    if conn.dialect.name == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    return table.insert()


def _run_row(conn: sa.Connection, name: str) -> Any:
    return conn.execute(sa.select(runs).where(runs.c.name == name)).mappings().first()


def _key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


# pip packages of the drivers SQLAlchemy names when one is missing (SQLAlchemy 2.1 reads a plain
# postgresql:// URL with psycopg 3, 2.0 with psycopg2).
_DRIVERS = {"psycopg": "psycopg[binary]", "psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient"}


def _make_private_file(engine: sa.Engine) -> None:
    """Create the SQLite file (and its folder) readable by its owner only; SQLite gives its
    -wal and -shm files the database file's mode. An existing file is never opened here: closing
    any descriptor of it would drop the POSIX locks this process's own connections hold."""
    database = engine.url.database
    if not database or database == ":memory:":
        return
    path = Path(database)
    if not path.parent.is_dir():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        if path.stat().st_mode & 0o077:  # made by an older version
            os.chmod(path, 0o600)


def _connect_args(url: str) -> dict[str, Any]:
    # Several shard workers may share one SQLite file: wait for its lock instead of failing.
    return {"timeout": 60} if url.startswith("sqlite") else {}


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


def _changed_keys(old: dict[str, Any], new: dict[str, Any]) -> str:
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    return "changed: " + ", ".join(keys) if keys else "changed provenance"


def _reason(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    lines = str(orig or exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def _safe(url: str) -> str:
    """The URL without its password."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL has no password we could show anyway
        return "<invalid URL>"


def _now() -> datetime:
    return datetime.now(UTC)
