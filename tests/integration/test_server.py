"""`circuitstore server` against a real Neo4j Community 5.26 started from Maven Central jars.

Runs the CLI in subprocesses, as a user would. Needs Java 17+ and Maven (jars cached in ~/.m2);
the server home lives in the repository's git-ignored .cache/ so that lib/ is assembled once and
reused by later runs, while the data is wiped at the start of every run.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from neo4j import GraphDatabase

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# Quotes, a backslash and a space: the argument file that carries it must escape them all.
PASSWORD = 'integration pw "1\\ #$'


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cli(home: Path, *args: str, password: str | None = PASSWORD) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "NEO4J_PASSWORD"}
    if password is not None:
        env["NEO4J_PASSWORD"] = password
    cmd = [
        sys.executable,
        "-m",
        "circuitstore.cli",
        "server",
        args[0],
        "--home",
        str(home),
        *args[1:],
    ]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    if not shutil.which("java") or not shutil.which("mvn"):
        if os.environ.get("CI"):
            pytest.fail("the server lifecycle needs Java 17+ and Maven on PATH", pytrace=False)
        pytest.skip("needs Java 17+ and Maven on PATH")
    home = REPO / ".cache" / "test-neo4j-server"
    cli(home, "stop")  # a server left over from an interrupted run
    for name in ("data", "logs", "run", "conf"):  # keep lib/: the slow part
        shutil.rmtree(home / name, ignore_errors=True)
    yield home
    cli(home, "stop")


@pytest.fixture(scope="module")
def ports() -> tuple[int, int]:
    return free_port(), free_port()


def start(home: Path, ports: tuple[int, int], password: str = PASSWORD):
    bolt, http = ports
    sizes = ("--heap", "1g", "--pagecache", "512m", "--timeout", "180")
    port_args = ("--bolt-port", str(bolt), "--http-port", str(http))
    return cli(home, "start", *port_args, *sizes, password=password)


def query(bolt_port: int, cypher: str, password: str = PASSWORD) -> list[dict]:
    uri = f"bolt://127.0.0.1:{bolt_port}"
    with GraphDatabase.driver(uri, auth=("neo4j", password)) as driver:
        records, _, _ = driver.execute_query(cypher)
        return [record.data() for record in records]


def command_lines_holding(secret: str) -> tuple[int, list[str]]:
    """How many processes' command lines were read, and those that hold `secret`."""
    seen, holding = 0, []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            args = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        seen += 1
        if secret.encode() in args:
            holding.append(args.replace(b"\0", b" ").decode(errors="replace")[:200])
    return seen, holding


def start_watching_command_lines(home: Path, ports: tuple[int, int]):
    """`start`, while every process's command line is read every few milliseconds."""
    result: dict[str, subprocess.CompletedProcess] = {}
    thread = threading.Thread(target=lambda: result.update(done=start(home, ports)))
    thread.start()
    scans, holding = 0, []
    while thread.is_alive():
        seen, found = command_lines_holding(PASSWORD)
        scans += seen > 0
        holding += found
        time.sleep(0.005)
    thread.join()
    return result["done"], scans, holding


def test_lifecycle_persists_data_across_restarts(home, ports):
    bolt, http = ports
    first, scans, holding = start_watching_command_lines(home, ports)
    assert first.returncode == 0, first.stderr
    assert "started" in first.stdout
    # The first start sets the initial password; no command line held it meanwhile.
    assert scans > 50
    assert holding == []
    pid = int((home / "run" / "circuitstore-neo4j.pid").read_text())
    assert b"NEO4J_PASSWORD" not in Path(f"/proc/{pid}/environ").read_bytes()
    # Everything under the home is its owner's only: store files, auth data, logs, jars.
    loose = [
        str(path)
        for path in [home, *home.rglob("*")]
        if not path.is_symlink() and path.stat().st_mode & 0o077
    ]
    assert loose == []

    status = cli(home, "status")
    assert status.stdout.startswith("running (pid ")
    assert f"bolt://127.0.0.1:{bolt}" in status.stdout

    assert query(bolt, "RETURN 1 AS one") == [{"one": 1}]
    with urllib.request.urlopen(f"http://127.0.0.1:{http}/browser/", timeout=10) as response:
        assert response.status == 200
        assert "Neo4j Browser" in response.read().decode()

    query(bolt, "CREATE (:Probe {name: 'kept'})")

    again = start(home, ports)
    assert again.returncode == 0
    assert "already running" in again.stdout

    stopped = cli(home, "stop")
    assert stopped.returncode == 0
    assert stopped.stdout.startswith("stopped")
    assert cli(home, "status").stdout.startswith("stopped")

    restarted = start(home, ports)
    assert restarted.returncode == 0, restarted.stderr
    assert query(bolt, "MATCH (p:Probe) RETURN p.name AS name") == [{"name": "kept"}]

    logs = cli(home, "logs", "-n", "5")
    assert logs.returncode == 0
    assert "Started." in logs.stdout
    assert PASSWORD not in (home / "logs" / "console.log").read_text()
    assert cli(home, "stop").returncode == 0


def test_wrong_password_against_existing_store(home, ports):
    # Runs after the lifecycle test, which leaves a store with the right password behind; if
    # that test failed, this one must fail too rather than pass unchecked.
    assert (home / "data" / "databases" / "system").is_dir(), "the lifecycle test left no store"
    result = start(home, ports, password="not-the-right-one")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert "does not match the store" in lines[-1]
    assert "Traceback" not in result.stderr
    assert "not-the-right-one" not in result.stderr + result.stdout
    assert cli(home, "status").stdout.startswith("stopped")


def test_port_in_use_is_named_before_anything_starts(home, ports):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        busy = listener.getsockname()[1]
        result = start(home, (busy, ports[1]))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: port {busy} on 127.0.0.1 is already in use; stop what listens there or "
        "choose another with --bolt-port"
    )
    assert cli(home, "status").stdout.startswith("stopped")
