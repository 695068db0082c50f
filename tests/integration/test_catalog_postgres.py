"""The run catalog on a real PostgreSQL server (started by the test session, see postgres.py):
workers racing to create its tables and register one run, a 2-shard ingest that records every
prompt, and prompt keys as long as the corpus reader allows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import sqlalchemy as sa

from circuitstore.ingest.catalog import DONE, FAILED, PENDING, SKIPPED, Catalog

from .helpers import ingest_cmd, snapshot_close
from .postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)

# One catalog worker: it announces itself, then for each URL read from stdin (one fresh database
# a round, sent to every worker at once) opens the catalog, opens the shared run, registers its
# keys and marks some of them, as a shard worker does. The URL travels on stdin, not argv: it
# holds the password.
_WORKER = r"""
import json, sys
from circuitstore.ingest.catalog import Catalog
plan = json.loads(sys.argv[1])
print("ready", flush=True)
for line in sys.stdin:
    catalog = Catalog.open(line.strip())
    record = catalog.open_run("shared", {"corpus": "c"}, "h", {"code": "test"})
    catalog.register("shared", [tuple(p) for p in plan["register"]])
    catalog.mark("shared", plan["mark"])
    catalog.finish("shared", "complete")
    catalog.engine.dispose()
    print(json.dumps({"resumed": record.resumed}), flush=True)
"""

N_KEYS, N_WORKERS = 60, 4


def _plan(worker: int) -> dict:
    """Overlapping windows of 30 keys, registered in a different order by each worker; each
    marks the keys of its window that are its own (index mod 4), as done, skipped or failed."""
    window = list(range(10 * worker, 10 * worker + 30))
    turn = 7 * worker % len(window)
    order = window[turn:] + window[:turn]
    order = order[::-1] if worker % 2 else order
    marks = [_outcome(i) for i in window if i % N_WORKERS == worker]
    return {"register": [(f"p{i:02d}", i + 1) for i in order], "mark": marks}


def _outcome(i: int) -> dict:
    if i % 7 == 0:
        return {"key": f"p{i:02d}", "state": SKIPPED, "reason": "over the length limit"}
    if i % 11 == 0:
        return {"key": f"p{i:02d}", "state": FAILED, "reason": "refused by the store"}
    return {"key": f"p{i:02d}", "state": DONE, "n_tokens": i, "n_edges": 10 * i}


def _expected() -> dict[str, tuple]:
    rows = {f"p{i:02d}": (i + 1, PENDING, None, None, None) for i in range(N_KEYS)}
    for worker in range(N_WORKERS):
        for mark in _plan(worker)["mark"]:
            key = mark["key"]
            rows[key] = (
                rows[key][0],
                mark["state"],
                mark.get("n_tokens"),
                mark.get("n_edges"),
                mark.get("reason"),
            )
    return rows


def _rows(url: str, run: str) -> dict[str, tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            result = conn.execute(
                sa.text(
                    "SELECT key, line, state, n_tokens, n_edges, reason FROM prompt_states "
                    "WHERE run = :run"
                ),
                {"run": run},
            )
            rows = [tuple(r) for r in result]
    finally:
        engine.dispose()
    keys = [r[0] for r in rows]
    assert len(keys) == len(set(keys)), "a key registered twice"
    return {r[0]: r[1:] for r in rows}


def _runs(url: str) -> list[tuple]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text("SELECT name, status FROM runs"))]
    finally:
        engine.dispose()


def test_workers_racing_on_a_new_catalog_register_one_run(postgres_server):  # noqa: F811
    assert set().union(*(range(10 * w, 10 * w + 30) for w in range(N_WORKERS))) == set(
        range(N_KEYS)
    )
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, json.dumps(_plan(w))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(N_WORKERS)
    ]
    try:
        for proc in workers:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "ready\n"
        for _round in range(3):  # each round on a fresh database: the tables do not exist yet
            url = postgres_server.new_database()
            log_offset = postgres_server.log_size()
            for proc in workers:  # released together: all are waiting on stdin
                assert proc.stdin is not None
                proc.stdin.write(url + "\n")
                proc.stdin.flush()
            results = []
            for proc in workers:
                assert proc.stdout is not None
                line = proc.stdout.readline()
                assert line, proc.stderr.read() if proc.stderr else ""
                results.append(json.loads(line))
            # Not one statement failed and was retried: no clash creating the tables, inserting
            # the run or a key, and no deadlock.
            assert postgres_server.errors_since(log_offset) == []
            assert sorted(r["resumed"] for r in results) == [False, True, True, True]
            assert _runs(url) == [("shared", "complete")]
            assert _rows(url, "shared") == _expected()
            counts = Catalog.open(url).counts("shared")
            assert sum(counts.values()) == N_KEYS
            assert min(counts[s] for s in (DONE, SKIPPED, FAILED, PENDING)) > 0
    finally:
        _stop(workers)
    for proc in workers:
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""


def _stop(workers: list[subprocess.Popen]) -> None:
    """End of input ends each worker's loop; one that hangs is killed."""
    for proc in workers:
        if proc.stdin:
            proc.stdin.close()
    for proc in workers:
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_keys_as_long_as_the_corpus_allows(postgres_url):  # noqa: F811
    from circuitstore.ingest.corpus import MAX_KEY

    # The longest ids the corpus reader accepts, in 1- to 4-byte UTF-8 characters, and a run
    # named after a corpus file whose name is as long as a file name can be.
    keys = [c * MAX_KEY for c in ("k", "é", "鍵", "🔑")]
    run = "c" * 255 + "-0123abcd"
    catalog = Catalog.open(postgres_url)
    catalog.open_run(run, {}, "h", {})
    catalog.register(run, [(k, i) for i, k in enumerate(keys, 1)])
    catalog.register(run, [(k, i) for i, k in enumerate(keys, 1)])  # idempotent
    catalog.mark(run, [{"key": keys[1], "state": DONE, "n_tokens": 3, "n_edges": 4}])
    assert catalog.keys_in_state(run, PENDING) == {keys[0], keys[2], keys[3]}
    assert catalog.keys_in_state(run, DONE) == {keys[1]}
    assert _rows(postgres_url, run)[keys[1]] == (2, DONE, 3, 4, None)


def _ingest(tiny_weights, corpus: Path, catalog: str, *extra: str) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    """The ingest command, its catalog password in PGPASSWORD (read by libpq), as a user would
    keep it off the command line."""
    url = sa.make_url(catalog)
    env = {**os.environ, "PGPASSWORD": url.password or ""}
    catalog = url.set(password=None).render_as_string(hide_password=False)
    cmd = ingest_cmd(tiny_weights, corpus, catalog, *extra)
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_shards_share_a_postgres_catalog(
    fresh_store,
    postgres_server,  # noqa: F811
    tiny_weights,
    corpus_file,
    neo4j_env,
    store_snapshot,
    wipe,
):
    single_url = postgres_server.new_database()
    single_run = _ingest(tiny_weights, corpus_file, single_url)
    _, err = single_run.communicate(timeout=600)
    assert single_run.returncode == 0, err
    single = store_snapshot(fresh_store)
    single_rows = _rows(single_url, "r")
    wipe(fresh_store)

    shards_url = postgres_server.new_database()
    log_offset = postgres_server.log_size()
    procs = [_ingest(tiny_weights, corpus_file, shards_url, "--shard", f"{i}/2") for i in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert snapshot_close(store_snapshot(fresh_store), single)
    assert postgres_server.errors_since(log_offset) == []  # nothing failed and was retried

    rows = _rows(shards_url, "r")
    n_prompts = len(corpus_file.read_text().splitlines())
    assert len(rows) == n_prompts == 24
    assert {state for _, state, *_ in rows.values()} == {DONE}
    assert all(
        n_tokens and n_tokens > 1 and n_edges for _, _, n_tokens, n_edges, _ in rows.values()
    )
    assert rows == single_rows  # the same lines, token and edge counts as one process
    assert _runs(shards_url) == [("r", "complete")]
    with fresh_store.session() as s:
        stored = {r["k"] for r in s.run("MATCH (p:Prompt) RETURN p.key AS k")}
    assert stored == set(rows)
