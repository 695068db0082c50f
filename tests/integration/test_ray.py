"""`circuitstore ingest --ray --workers 2`: shard tasks on a local Ray cluster into the test
Neo4j, one of whose workers is killed mid-shard (kill -9): Ray retries its task, which resumes
the shard, and the final store equals a single-process run's."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .helpers import count, ingest_cmd, make_corpus, snapshot_close

pytestmark = pytest.mark.slow
if not os.environ.get("CI"):  # in CI a missing Ray fails the run (the dev extra installs it)
    pytest.importorskip("ray")

N = 30  # prompts: enough that a shard is still running when one of its workers is killed


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(make_corpus(N, seed=7)) + "\n")
    return path


def _single(fresh_store, tiny_weights, corpus, tmp_path, store_snapshot, wipe):  # type: ignore[no-untyped-def]
    folder = tmp_path / "single"
    folder.mkdir()
    # One thread, as Ray gives a task of one CPU: the same order of float additions in the
    # products, so the two stores agree to the last bit (but for DRIVES sums' prompt order).
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ingest_cmd(tiny_weights, corpus, str(folder))
    subprocess.run(cmd, check=True, capture_output=True, env=env)
    expected = store_snapshot(fresh_store)
    wipe(fresh_store)
    return expected


def _on_ray(tiny_weights, corpus: Path, folder: Path) -> list[str]:  # type: ignore[no-untyped-def]
    folder.mkdir()
    return ingest_cmd(tiny_weights, corpus, str(folder), "--ray", "--workers", "2")


def _shard_workers() -> list[int]:
    """Pids of Ray worker processes running a shard task (Ray titles them `ray::_shard`)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "cmdline").read_bytes().startswith(b"ray::_shard"):
                    pids.append(int(proc.name))
            except OSError:
                continue
    return pids


def test_two_workers_one_killed_mid_shard_equal_one_run(
    fresh_store, tiny_weights, corpus, tmp_path, neo4j_env, store_snapshot, wipe
):
    single = _single(fresh_store, tiny_weights, corpus, tmp_path, store_snapshot, wipe)
    proc = subprocess.Popen(
        _on_ray(tiny_weights, corpus, tmp_path / "ray"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    killed = None
    deadline = time.monotonic() + 300
    while killed is None and proc.poll() is None and time.monotonic() < deadline:
        workers = _shard_workers()
        if workers and count(fresh_store, "Prompt") >= 4:
            killed = workers[0]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.05)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, "the run ended before a worker could be killed"
    assert proc.returncode == 0, err[-3000:]
    assert f"{N} prompts in this shard" in out
    assert snapshot_close(store_snapshot(fresh_store), single)


def test_ray_workers_write_parts_without_a_store(tiny_weights, corpus, tmp_path):
    from .test_bulk_load import committed_files

    no_store = {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}
    single = tmp_path / "single-parts"
    (tmp_path / "single").mkdir()
    cmd = ingest_cmd(tiny_weights, corpus, str(tmp_path / "single"), "--parts", str(single))
    subprocess.run(cmd, check=True, capture_output=True, env={**no_store, "OMP_NUM_THREADS": "1"})
    parts = tmp_path / "ray-parts"
    cmd = [*_on_ray(tiny_weights, corpus, tmp_path / "ray"), "--parts", str(parts)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=no_store, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{N} prompts in this shard" in done.stdout
    assert committed_files(parts) == committed_files(single)
