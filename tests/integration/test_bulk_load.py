"""The bulk path: `ingest --parts` then `circuitstore load` builds the same store as a
transactional `ingest`, appends like it, resumes after kill -9, and the parts answer "what
drives X" without a server (the DuckDB recipe of docs/parts.md).

The transactional side runs against the testcontainers Neo4j; `load` needs a server it can stop
and import into, so it targets a local server home (Java + Maven Central jars, as
test_server.py), kept in the git-ignored .cache/ so that lib/ is assembled once.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from .helpers import ingest_cmd, make_corpus, snapshot, snapshot_close
from .test_server import free_port

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / "circuitstore" / "demo"


class LocalServer:
    """A `circuitstore server` home that `load` stops, fills and starts."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.password = secrets.token_urlsafe(12)
        self.bolt, self.http = free_port(), free_port()

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NEO4J_PASSWORD": self.password, "NEO4J_URI": self.uri}

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt}"

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "circuitstore.cli", *args]
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=900)
        if check:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def load(
        self, parts: Path, *extra: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        ports = ("--bolt-port", str(self.bolt), "--http-port", str(self.http))
        sizes = ("--heap", "1g", "--pagecache", "512m")
        home = ("--home", str(self.home))
        return self.cli("load", str(parts), *home, *ports, *sizes, *extra, check=check)

    def driver(self):  # type: ignore[no-untyped-def]
        from neo4j import GraphDatabase

        return GraphDatabase.driver(self.uri, auth=("neo4j", self.password))


@pytest.fixture(scope="module")
def local_server() -> Iterator[LocalServer]:
    if not shutil.which("java") or not shutil.which("mvn"):
        if os.environ.get("CI"):
            pytest.fail("load needs Java 17+ and Maven on PATH", pytrace=False)
        pytest.skip("needs Java 17+ and Maven on PATH")
    server = LocalServer(REPO / ".cache" / "test-bulk-server")
    server.cli("server", "stop", "--home", str(server.home), check=False)  # an old run's
    for name in ("data", "logs", "run", "conf"):  # keep lib/: the slow part
        shutil.rmtree(server.home / name, ignore_errors=True)
    yield server
    server.cli("server", "stop", "--home", str(server.home), check=False)


def ingest_parts(weights: tuple[Path, Path], corpus: Path, parts: Path, catalog: Path) -> None:
    catalog.mkdir(exist_ok=True)
    cmd = ingest_cmd(weights, corpus, str(catalog), "--parts", str(parts))
    done = subprocess.run(cmd, capture_output=True, text=True, env=_no_store_env())
    assert done.returncode == 0, done.stderr


def ingest_store(weights: tuple[Path, Path], corpus: Path, catalog: Path) -> None:
    catalog.mkdir(exist_ok=True)
    done = subprocess.run(ingest_cmd(weights, corpus, str(catalog)), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def _no_store_env() -> dict[str, str]:
    """The parts path never talks to Neo4j: no address or password to do so with."""
    return {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


@pytest.fixture(scope="module")
def demo_weights() -> tuple[Path, Path]:
    return DEMO / "weights" / "model", DEMO / "weights" / "transcoders"


@pytest.fixture(params=["demo", "tiny"])
def corpus_case(request, tmp_path, tiny_weights, demo_weights):  # type: ignore[no-untyped-def]
    """The demo corpus's first 100 prompts with the demo model, and the tiny model's corpus."""
    if request.param == "demo":
        lines = (DEMO / "corpus.jsonl").read_text().splitlines()[:100]
        return demo_weights, write_lines(tmp_path / "demo100.jsonl", lines)
    return tiny_weights, write_lines(tmp_path / "tiny.txt", make_corpus(24))


def test_load_equals_transactional_ingest(
    corpus_case, fresh_store, neo4j_env, local_server, tmp_path
):
    weights, corpus = corpus_case
    ingest_store(weights, corpus, tmp_path / "tx")
    parts = tmp_path / "parts"
    ingest_parts(weights, corpus, parts, tmp_path / "bulk")
    done = local_server.load(parts, "--overwrite")
    assert re.search(r"loaded \d+ prompts' parts", done.stdout), done.stdout
    with local_server.driver() as loaded:
        assert snapshot_close(snapshot(loaded), snapshot(fresh_store))


def test_load_then_ingest_equals_one_ingest(
    fresh_store, neo4j_env, local_server, tiny_weights, tmp_path
):
    texts = make_corpus(24)
    first = write_lines(tmp_path / "a.txt", texts[:12])
    # Blank lines first: each prompt keeps the corpus line it has in all.txt (a property).
    second = write_lines(tmp_path / "b.txt", [""] * 12 + texts[12:])
    ingest_store(tiny_weights, write_lines(tmp_path / "all.txt", texts), tmp_path / "tx")
    parts = tmp_path / "parts"
    ingest_parts(tiny_weights, first, parts, tmp_path / "bulk")
    local_server.load(parts, "--overwrite")
    cmd = ingest_cmd(tiny_weights, second, str(tmp_path), "--uri", local_server.uri)
    done = subprocess.run(cmd, capture_output=True, text=True, env=local_server.env)
    assert done.returncode == 0, done.stderr
    with local_server.driver() as loaded:
        assert snapshot_close(snapshot(loaded), snapshot(fresh_store))


def test_load_refuses_a_store_with_data(local_server, tiny_weights, tmp_path):
    parts = tmp_path / "parts"
    ingest_parts(tiny_weights, write_lines(tmp_path / "c.txt", make_corpus(3)), parts, tmp_path)
    local_server.load(parts, "--overwrite")
    with local_server.driver() as drv:
        before = snapshot(drv)
    again = local_server.load(parts, check=False)
    assert again.returncode != 0
    assert again.stderr.count("\n") == 1, again.stderr
    assert "--overwrite" in again.stderr
    assert "Traceback" not in again.stderr
    with local_server.driver() as drv:
        assert snapshot(drv) == before


def committed_files(parts: Path) -> dict[str, bytes]:
    """Every committed part file and its bytes (temporary leftovers are not parts). Bytes, not
    rows: the same rows make the same file, and NaN (a node with no input) equals itself."""
    found = {
        str(p.relative_to(parts)): p.read_bytes()
        for p in sorted(parts.rglob("*.parquet"))
        if not p.name.startswith(".")
    }
    assert all(pq.read_metadata(parts / name).num_rows >= 0 for name in found)  # all readable
    return found


def test_kill_9_then_resume_leaves_the_parts_of_a_clean_run(tiny_weights, tmp_path):
    corpus = write_lines(tmp_path / "corpus.txt", make_corpus(24))
    clean = tmp_path / "clean"
    ingest_parts(tiny_weights, corpus, clean, tmp_path / "clean-catalog")
    parts, catalog = tmp_path / "parts", tmp_path / "catalog"
    catalog.mkdir()
    kills = 0
    for threshold in (3, 9, 15):  # three moments of the run, each mid-flight
        proc = subprocess.Popen(
            ingest_cmd(tiny_weights, corpus, str(catalog), "--parts", str(parts)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_no_store_env(),
        )
        while proc.poll() is None and _count(parts / "prompts") < threshold:
            time.sleep(0.02)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the run finished before it could be killed"
    ingest_parts(tiny_weights, corpus, parts, catalog)
    assert committed_files(parts) == committed_files(clean)


def _count(folder: Path) -> int:
    return len(list(folder.glob("*.parquet"))) if folder.is_dir() else 0


def recipe() -> str:
    """The DuckDB recipe of docs/parts.md."""
    text = (REPO / "docs" / "parts.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, flags=re.S)
    assert blocks, "docs/parts.md has no sql block"
    return blocks[0]


def test_the_docs_recipe_answers_as_query_drivers(
    fresh_store, neo4j_settings, neo4j_env, tiny_weights, tmp_path
):
    import duckdb

    from circuitstore.query import CircuitStore
    from circuitstore.schema.names import feature_name

    corpus = write_lines(tmp_path / "corpus.txt", make_corpus(24))
    ingest_store(tiny_weights, corpus, tmp_path / "tx")
    parts = tmp_path / "parts"
    ingest_parts(tiny_weights, corpus, parts, tmp_path / "bulk")
    target = _busiest_target(fresh_store)
    _, layer, index = target.rsplit("/", 2)
    store = CircuitStore(fresh_store, neo4j_settings.database)
    expected = store.drivers(feature_name(int(layer), int(index)), top=10).links
    assert expected, "the busiest target has no positive drivers"
    sql = recipe().replace("'parts/", f"'{parts}/").replace("$feature", f"'{target}'")
    rows = duckdb.sql(sql).fetchall()
    names = [feature_name(*map(int, r[0].rsplit("/", 2)[1:])) for r in rows]
    assert names == [link.name for link in expected]
    for row, link in zip(rows, expected, strict=True):
        assert row[1] == link.n
        assert row[2] == pytest.approx(link.total, rel=1e-9)


def _busiest_target(driver) -> str:  # type: ignore[no-untyped-def]
    with driver.session() as s:
        return str(
            s.run(
                "MATCH ()-[d:DRIVES]->(t) RETURN t.id AS id, count(d) AS c "
                "ORDER BY c DESC, id LIMIT 1"
            ).single()["id"]
        )


def test_two_concurrent_shards_write_the_parts_of_one_run(tiny_weights, tmp_path):
    corpus = write_lines(tmp_path / "corpus.txt", make_corpus(24))
    single = tmp_path / "single"
    ingest_parts(tiny_weights, corpus, single, tmp_path / "single-catalog")
    shared, catalog = tmp_path / "shared", tmp_path / "catalog"
    catalog.mkdir()
    procs = [
        subprocess.Popen(
            ingest_cmd(tiny_weights, corpus, str(catalog), "--parts", str(shared), "--shard", s),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=_no_store_env(),
        )
        for s in ("0/2", "1/2")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert committed_files(shared) == committed_files(single)


def test_the_import_files_read_right_across_the_importers_buffers(
    local_server, demo_weights, tmp_path
):
    """Past its read buffer (4 MiB; here 64 KiB, so that the demo's files span many) the
    importer finds where a row with newlines in its text starts by the row's quotes."""
    from circuitstore.server import assemble

    lines = (DEMO / "corpus.jsonl").read_text().splitlines()[:100]
    parts = tmp_path / "parts"
    ingest_parts(demo_weights, write_lines(tmp_path / "c.jsonl", lines), parts, tmp_path)
    files = tmp_path / "import"
    wrote = local_server.cli(
        "load", str(parts), "--import-files", str(files), "--mount", str(files)
    ).stdout
    assert (files / "GraphNode.csv").stat().st_size > 20 * 2**16
    pom = assemble.pom_path()
    assemble.ensure_lib(local_server.home, pom, assemble.read_versions(pom))
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "neo4j.conf").write_text(f"server.directories.data={tmp_path / 'data'}\n")
    java = [assemble.find_java(), "-cp", f"{local_server.home / 'lib'}/*"]
    done = subprocess.run(
        [*java, "org.neo4j.cli.AdminTool", f"@{files / 'neo4j-admin.args'}",
         "--read-buffer-size=64k"],
        env={**os.environ, "NEO4J_HOME": str(local_server.home), "NEO4J_CONF": str(conf)},
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:]
    for what in ("nodes", "relationships"):  # every row the files hold, imported
        written = re.search(rf"([\d,]+) {what} \(", wrote).group(1)  # type: ignore[union-attr]
        imported = re.search(rf"(\d+) {what}\n", done.stdout).group(1)  # type: ignore[union-attr]
        assert int(written.replace(",", "")) == int(imported) > 0
