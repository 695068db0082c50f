"""A real PostgreSQL server for catalog tests, started by the test session itself.

`initdb` and `pg_ctl` from Debian's `postgresql` package (scripts/bootstrap.sh --containers
installs it) run a throwaway cluster in a private temporary folder, as a non-root user (the
server refuses to run as root), listening on 127.0.0.1 only, on a free port, with password
authentication. Like the Neo4j container: in CI (`CI` set) missing binaries or driver fail the
run; elsewhere the tests that need the server are skipped.

Import the fixtures into a test module: `from .postgres import postgres_server, postgres_url`.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

DRIVER = "postgresql+psycopg2"  # psycopg2-binary: what the dev extra installs
SUPERUSER = "circuitstore"


@dataclass
class PostgresServer:
    """A running cluster; `url(db)` is a SQLAlchemy URL for one of its databases."""

    port: int
    password: str
    log: Path
    _databases: int = 0

    def url(self, database: str) -> str:
        return f"{DRIVER}://{SUPERUSER}:{self.password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """Create an empty database and return its URL."""
        import sqlalchemy as sa

        self._databases += 1
        name = f"catalog_{self._databases}"
        engine = sa.create_engine(self.url("postgres"), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        finally:
            engine.dispose()
        return self.url(name)

    def log_size(self) -> int:
        return self.log.stat().st_size

    def errors_since(self, offset: int) -> list[str]:
        """The server's ERROR lines written after `offset` (from `log_size`): statements that
        failed, even when the client retried them."""
        with self.log.open("rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
        return [line for line in text.splitlines() if "ERROR:" in line]


def _bin_dir() -> Path | None:
    """The folder holding initdb and pg_ctl: from PATH, or Debian's /usr/lib/postgresql/<ver>/bin
    (not on PATH there), newest version first."""
    found = shutil.which("initdb")
    candidates = [Path(found).resolve().parent] if found else []
    debian = glob.glob("/usr/lib/postgresql/*/bin")
    candidates += sorted((Path(d) for d in debian), key=_version, reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _version(folder: Path) -> tuple[int, ...]:
    name = folder.parent.name
    return tuple(int(p) for p in name.split(".") if p.isdigit())


def _problem() -> str | None:
    if _bin_dir() is None:
        return "no PostgreSQL server binaries (initdb, pg_ctl); run `bash scripts/bootstrap.sh --containers`"
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        return "no PostgreSQL driver; pip install -e '.[dev]' (psycopg2-binary)"
    return None


def _server_user() -> pwd.struct_passwd | None:
    """PostgreSQL refuses to run as root: as root, run it as its own user (or nobody)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return pwd.getpwnam("nobody")


def _as(user: pwd.struct_passwd | None) -> list[str]:
    return ["runuser", "-u", user.pw_name, "--"] if user else []


def _owner(user: pwd.struct_passwd | None) -> tuple[int, int]:
    return (user.pw_uid, user.pw_gid) if user else (os.geteuid(), os.getegid())


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _call(cmd: list[str], root: Path, what: str) -> None:
    # cwd: the server's user may not be allowed into the test's working directory.
    done = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        log = root / "server.log"
        tail = log.read_text()[-2000:] if log.exists() else ""
        raise RuntimeError(f"{what} failed ({done.returncode}): {done.stderr.strip()}\n{tail}")


def _initdb(bin_dir: Path, user: pwd.struct_passwd | None, root: Path, password: str) -> None:
    pwfile = root / "pw"
    pwfile.write_text(password + "\n")
    os.chown(pwfile, *_owner(user))
    pwfile.chmod(0o600)
    cmd = [
        *_as(user),
        str(bin_dir / "initdb"),
        f"--pgdata={root / 'data'}",
        f"--username={SUPERUSER}",
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",  # a password even over the private socket
        "--encoding=UTF8",
        "--no-locale",
        "--no-sync",  # a throwaway cluster: no need to flush initdb's files
    ]
    try:
        _call(cmd, root, "initdb")
    finally:
        pwfile.unlink()


def _server_options(root: Path, port: int) -> str:
    return " ".join(
        [
            "-c listen_addresses=127.0.0.1",  # loopback only
            f"-c port={port}",
            f"-c unix_socket_directories={root}",  # not the system's /var/run/postgresql
            # Durability is not under test; skipping disk flushes spares the shared machine.
            "-c fsync=off",
            "-c full_page_writes=off",
        ]
    )


def _pg_ctl(bin_dir: Path, user: pwd.struct_passwd | None, root: Path, *args: str) -> list[str]:
    return [*_as(user), str(bin_dir / "pg_ctl"), f"--pgdata={root / 'data'}", *args]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    problem = _problem()
    if problem:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests cannot run: {problem}", pytrace=False)
        pytest.skip(problem)
    bin_dir = _bin_dir()
    assert bin_dir is not None
    user = _server_user()
    root = Path(tempfile.mkdtemp(prefix="circuitstore-pg-"))  # 0700
    os.chown(root, *_owner(user))
    password = secrets.token_urlsafe(16)
    port = _free_port()
    start = ["-l", str(root / "server.log"), "-w", "-t", "60", "-o", _server_options(root, port)]
    try:
        _initdb(bin_dir, user, root, password)
        _call(_pg_ctl(bin_dir, user, root, *start, "start"), root, "pg_ctl start")
    except BaseException:
        # A server that started late (pg_ctl gave up waiting) must not outlive its folder.
        stop = _pg_ctl(bin_dir, user, root, "-m", "immediate", "stop")
        subprocess.run(stop, cwd=root, capture_output=True, timeout=60, check=False)
        shutil.rmtree(root, ignore_errors=True)
        raise
    try:
        yield PostgresServer(port, password, root / "server.log")
    finally:
        _call(_pg_ctl(bin_dir, user, root, "-m", "fast", "-w", "stop"), root, "pg_ctl stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """A new, empty database on the session's server, as a SQLAlchemy URL."""
    return postgres_server.new_database()
