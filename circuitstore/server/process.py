"""Start, watch and stop the Neo4j server process of one server home.

The server runs in its own session (so a Ctrl-C in the terminal that started it does not reach
it), with its pid and ports in home/run/ and its console output in home/logs/console.log.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from circuitstore.schema import ddl
from circuitstore.schema.errors import ServerError
from circuitstore.server import assemble
from circuitstore.server.config import (
    PASSWORD_ENV,
    ServerSettings,
    check_ports_free,
    jvm_command,
    render_conf,
)

PID_FILE = "run/circuitstore-neo4j.pid"
STATE_FILE = "run/circuitstore-neo4j.json"
LOG_FILE = "logs/console.log"
MAIN_CLASS = "org.neo4j.server.CommunityEntryPoint"
POLL_SECONDS = 0.5


@dataclass(frozen=True)
class ServerStatus:
    home: Path
    running: bool
    pid: int | None = None
    bolt_port: int | None = None
    http_port: int | None = None

    @property
    def bolt_uri(self) -> str | None:
        return f"bolt://127.0.0.1:{self.bolt_port}" if self.bolt_port else None

    @property
    def browser_url(self) -> str | None:
        return f"http://127.0.0.1:{self.http_port}/browser/" if self.http_port else None


@dataclass(frozen=True)
class StartResult:
    status: ServerStatus
    already_running: bool
    seconds: float = 0.0
    downloaded: bool = False


def log_path(home: Path) -> Path:
    return home / LOG_FILE


def _proc_state(pid: int) -> str | None:
    """The one-letter state from /proc (None when the process is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


def _is_our_server(pid: int, home: Path) -> bool:
    """Guards against pid reuse: the process must be the server of this very home."""
    if _proc_state(pid) in (None, "Z", "X"):
        return False
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return MAIN_CLASS.encode() in args and f"--home-dir={home}".encode() in args


def running_pid(home: Path) -> int | None:
    try:
        pid = int((home / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_our_server(pid, home) else None


def status(home: Path) -> ServerStatus:
    pid = running_pid(home)
    if pid is None:
        return ServerStatus(home=home, running=False)
    try:
        state = json.loads((home / STATE_FILE).read_text())
    except (OSError, ValueError):
        state = {}
    return ServerStatus(home, True, pid, state.get("bolt_port"), state.get("http_port"))


def _clear_run_files(home: Path) -> None:
    for name in (PID_FILE, STATE_FILE):
        (home / name).unlink(missing_ok=True)


def prepare(
    settings: ServerSettings, password: str, notify: Callable[[str], None]
) -> tuple[str, bool]:
    """Everything before the launch; returns the java binary and whether Maven ran.

    The cheap checks (folder, Java, ports) come first, so that they fail before a download.
    """
    home = settings.home
    assemble.ensure_writable(home)
    _chmod(home, 0o700)
    java = assemble.find_java()
    check_ports_free(settings)
    pom = assemble.pom_path()
    versions = assemble.read_versions(pom)
    if not assemble.lib_ready(home, versions):
        notify(f"assembling Neo4j {versions.neo4j} from Maven Central into {home / 'lib'}")
    downloaded = assemble.ensure_lib(home, pom, versions)
    assemble.ensure_folders(home)
    (home / "conf" / "neo4j.conf").write_text(render_conf(settings))
    if not assemble.store_exists(home):
        assemble.set_initial_password(home, java, password)
    make_private(home)  # Maven copies the jars with the repository's modes
    return java, downloaded


def start(
    settings: ServerSettings,
    password: str,
    timeout: float,
    notify: Callable[[str], None] = lambda _: None,
) -> StartResult:
    home = settings.home
    current = status(home)
    if current.running:
        return StartResult(status=current, already_running=True)
    _clear_run_files(home)  # stale files of a server that died
    with private_umask():  # Maven, the admin tool and the server inherit it
        java, downloaded = prepare(settings, password, notify)
        began = time.monotonic()
        proc = _launch(settings, java)
    try:
        wait_until_ready(proc, settings, password, timeout)
    except BaseException:
        _terminate(proc.pid, grace=30.0)
        _clear_run_files(home)
        raise
    seconds = time.monotonic() - began
    return StartResult(status(home), already_running=False, seconds=seconds, downloaded=downloaded)


def _launch(settings: ServerSettings, java: str) -> subprocess.Popen[bytes]:
    home = settings.home
    with open(log_path(home), "ab") as log:
        proc = subprocess.Popen(
            jvm_command(settings, java),
            cwd=home,
            env=server_environment(),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    (home / PID_FILE).write_text(f"{proc.pid}\n")
    ports = {"bolt_port": settings.bolt_port, "http_port": settings.http_port}
    (home / STATE_FILE).write_text(json.dumps(ports) + "\n")
    return proc


def server_environment() -> dict[str, str]:
    """The server's environment: ours without NEO4J_PASSWORD, which it never needs (it reads
    the password from its own store) and which /proc/<pid>/environ would otherwise keep."""
    return {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files created meanwhile, by us or by children started meanwhile, are the owner's only."""
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def make_private(home: Path) -> None:
    """Owner-only modes on the home and everything under it (the store files, auth.ini's
    password hash, the logs), including files an older version left readable by others."""
    for root, dirs, files in os.walk(home):  # os.walk does not descend into linked folders
        for name in dirs:
            if not Path(root, name).is_symlink():  # chmod would follow it out of the home
                _chmod(Path(root, name), 0o700)
        for name in files:
            path = Path(root, name)
            if not path.is_symlink():
                _chmod(path, path.stat().st_mode & 0o700)
    _chmod(home, 0o700)


def _chmod(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as exc:
        raise ServerError(f"cannot make {path} private ({exc.strerror}); fix its owner") from exc


def wait_until_ready(
    proc: subprocess.Popen[bytes], settings: ServerSettings, password: str, timeout: float
) -> None:
    """Until Bolt runs RETURN 1 with the password and HTTP serves /browser/."""
    deadline = time.monotonic() + timeout
    while not _bolt_answers(settings, password):
        _check_alive(proc, settings.home)
        if time.monotonic() > deadline:
            raise ServerError(
                f"the server did not answer on {settings.bolt_uri} within {timeout:.0f} s; "
                f"see {log_path(settings.home)} or raise --timeout"
            )
        time.sleep(POLL_SECONDS)
    while not _browser_answers(settings):
        _check_alive(proc, settings.home)
        if time.monotonic() > deadline:
            raise ServerError(
                f"Bolt answers but {settings.browser_url} did not within {timeout:.0f} s; "
                f"see {log_path(settings.home)}"
            )
        time.sleep(POLL_SECONDS)


def _check_alive(proc: subprocess.Popen[bytes], home: Path) -> None:
    code = proc.poll()
    if code is not None:
        raise ServerError(
            f"the server exited with status {code} while starting ({last_error(home)}); "
            f"see {log_path(home)}"
        )


def last_error(home: Path) -> str:
    """The last ERROR line (or last line) of the console log, for a one-line message."""
    lines = [line for line in tail(log_path(home), 200) if not line.strip().startswith("at ")]
    errors = [line for line in lines if " ERROR " in line or "Exception" in line]
    text = (errors or lines or ["no output"])[-1].strip()
    return text if len(text) <= 200 else text[:197] + "..."


def _bolt_answers(settings: ServerSettings, password: str) -> bool:
    # Imported here: the driver is only needed by start, and importing it costs time.
    from neo4j import GraphDatabase
    from neo4j.exceptions import AuthError, DriverError, Neo4jError

    try:
        with GraphDatabase.driver(
            settings.bolt_uri, auth=("neo4j", password), connection_timeout=2.0
        ) as driver:
            # A plain session: execute_query would retry (and log) for up to 30 s per call.
            with driver.session() as session:
                session.run(ddl.PING).consume()
            return True
    except AuthError as exc:
        raise ServerError(
            f"NEO4J_PASSWORD does not match the store in {settings.home / 'data'}; export the "
            "password that store was created with, or delete that folder to start afresh"
        ) from exc
    except (DriverError, Neo4jError, OSError):
        return False


def _browser_answers(settings: ServerSettings) -> bool:
    try:
        with urllib.request.urlopen(settings.browser_url, timeout=2.0) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def stop(home: Path, timeout: float) -> ServerStatus | None:
    """SIGTERM, wait up to timeout, then SIGKILL. Returns the stopped status, None if none ran."""
    current = status(home)
    if not current.running or current.pid is None:
        _clear_run_files(home)
        return None
    _terminate(current.pid, grace=timeout)
    _clear_run_files(home)
    return current


def _terminate(pid: int, grace: float) -> None:
    _signal_group(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while _is_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _is_alive(pid):
        _signal_group(pid, signal.SIGKILL)
        while _is_alive(pid):
            time.sleep(0.1)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    # The server leads its own session, so its group id is its pid; the group holds only it.
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError as exc:
        raise ServerError(f"not allowed to signal server pid {pid}; stop it as its owner") from exc


def _is_alive(pid: int) -> bool:
    # Reap it when this process started it (tests, `start` failures): no zombie is left.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    return _proc_state(pid) not in (None, "Z", "X")


def tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return list(deque(handle, maxlen=lines)) if lines > 0 else []
    except FileNotFoundError:
        return []


def follow(path: Path) -> Iterator[str]:
    """Yield lines appended to path from now on, until interrupted."""
    with open(path, encoding="utf-8", errors="replace") as handle:
        handle.seek(0, os.SEEK_END)
        while True:
            line = handle.readline()
            if line:
                yield line
            else:
                time.sleep(POLL_SECONDS)
