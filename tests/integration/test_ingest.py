"""The ingest job against a real Neo4j: idempotence, kill -9 and resume, a Neo4j restart,
concurrent shards, and corpus aggregates checked against networkx."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import networkx as nx
import pytest

from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.corpus import read_corpus
from circuitstore.ingest.model import load_model
from circuitstore.ingest.runner import IngestRunner
from circuitstore.ingest.transcoder import load_transcoders
from circuitstore.schema.errors import ConfigError, InputError

from .helpers import count, ingest_cmd, snapshot_close

pytestmark = pytest.mark.slow


def _config(tiny_weights, corpus: Path, tmp_path: Path, **kw) -> IngestConfig:  # type: ignore[no-untyped-def]
    model, tcs = tiny_weights
    defaults = {"catalog": f"sqlite:///{tmp_path / 'catalog.sqlite'}", "progress": False}
    return IngestConfig.from_flat(
        model=str(model), transcoders=str(tcs), prompts=str(corpus), **{**defaults, **kw}
    )


def test_reingest_adds_nothing(fresh_store, tiny_weights, corpus_file, tmp_path, store_snapshot):
    cfg = _config(tiny_weights, corpus_file, tmp_path)
    first = IngestRunner(cfg, fresh_store).run()
    assert first.written == 24
    before = store_snapshot(fresh_store)
    second = IngestRunner(cfg, fresh_store).run()
    assert second.written == 0
    assert second.already_stored == 24
    assert store_snapshot(fresh_store) == before
    # A new run name over the same corpus and settings still adds nothing twice.
    third = IngestRunner(
        _config(tiny_weights, corpus_file, tmp_path, run="other"), fresh_store
    ).run()
    assert third.written == 0
    assert store_snapshot(fresh_store) == before


def test_the_store_not_the_catalog_decides_what_is_done(
    fresh_store, tiny_weights, corpus_file, tmp_path, store_snapshot, wipe
):
    cfg = _config(tiny_weights, corpus_file, tmp_path)
    IngestRunner(cfg, fresh_store).run()
    before = store_snapshot(fresh_store)
    wipe(fresh_store)  # the database is wiped; the catalog still says "done"
    again = IngestRunner(cfg, fresh_store).run()
    assert again.written == 24
    assert store_snapshot(fresh_store) == before


def test_changed_graph_settings_are_refused(fresh_store, tiny_weights, corpus_file, tmp_path):
    IngestRunner(_config(tiny_weights, corpus_file, tmp_path), fresh_store).run()
    changed = _config(tiny_weights, corpus_file, tmp_path, node_threshold=0.5)
    with pytest.raises(ConfigError, match="other graph settings"):
        IngestRunner(changed, fresh_store).run()


def test_aggregates_equal_networkx_sum_of_engine_edges(
    fresh_store, tiny_weights, corpus_file, tmp_path
):
    cfg = _config(tiny_weights, corpus_file, tmp_path)
    IngestRunner(cfg, fresh_store).run()

    # The expected aggregate, computed independently: every unpruned feature->feature edge of
    # every prompt, summed per pair of global features in a networkx graph.
    model = load_model(cfg.model)
    engine = AttributionEngine(model, load_transcoders(cfg.transcoders))
    expected = nx.DiGraph()
    for record in read_corpus(cfg.prompts).prompts:
        graph = engine.attribute(record.text, AttributionConfig(prune=None))
        nodes = graph.nodes
        edges = list(
            zip(
                graph.edges.source.tolist(),
                graph.edges.target.tolist(),
                graph.edges.weight.tolist(),
                strict=True,
            )
        )
        abs_input: dict[int, float] = {}
        for _, t, w in edges:  # every incoming edge: features, embeddings, errors, biases
            abs_input[t] = abs_input.get(t, 0.0) + abs(w)
        for s, t, w in edges:
            if int(nodes.kind[s]) != 0 or int(nodes.kind[t]) != 0 or w == 0:
                continue
            if abs(w) < cfg.aggregate_min_fraction * abs_input[t]:
                continue
            key_s = (int(nodes.layer[s]), int(nodes.index[s]))
            key_t = (int(nodes.layer[t]), int(nodes.index[t]))
            data = expected.get_edge_data(
                key_s, key_t, default={"n": 0, "sum": 0.0, "sumAbs": 0.0, "maxAbs": 0.0}
            )
            expected.add_edge(
                key_s,
                key_t,
                n=data["n"] + 1,
                sum=data["sum"] + w,
                sumAbs=data["sumAbs"] + abs(w),
                maxAbs=max(data["maxAbs"], abs(w)),
            )

    with fresh_store.session() as s:
        stored = {
            ((r["sl"], r["si"]), (r["tl"], r["ti"])): r
            for r in s.run(
                "MATCH (a:Feature)-[d:DRIVES]->(b:Feature) RETURN a.layer AS sl, a.index AS si, "
                "b.layer AS tl, b.index AS ti, d.n AS n, d.sum AS sum, d.sumAbs AS sumAbs, d.maxAbs AS maxAbs"
            )
        }
    assert len(stored) == expected.number_of_edges() > 0
    for u, v, data in expected.edges(data=True):
        got = stored[(u, v)]
        assert got["n"] == data["n"]
        for key in ("sum", "sumAbs", "maxAbs"):
            assert got[key] == pytest.approx(data[key], rel=1e-4, abs=1e-6)


def test_kill_9_then_resume_equals_a_clean_run(
    fresh_store, tiny_weights, corpus_file, tmp_path, neo4j_env, store_snapshot, wipe
):
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    subprocess.run(
        ingest_cmd(tiny_weights, corpus_file, str(clean_dir)), check=True, capture_output=True
    )
    clean = store_snapshot(fresh_store)
    wipe(fresh_store)

    kills = 0
    for threshold in (3, 9, 15):  # kill at three moments of the run, each time mid-flight
        proc = subprocess.Popen(
            ingest_cmd(tiny_weights, corpus_file, str(tmp_path)),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        while proc.poll() is None and count(fresh_store, "Prompt") < threshold:
            time.sleep(0.05)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            kills += 1
        proc.wait()
    assert kills >= 2, "the run finished before it could be killed"
    done = subprocess.run(
        ingest_cmd(tiny_weights, corpus_file, str(tmp_path)), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert store_snapshot(fresh_store) == clean


def test_two_concurrent_shards_equal_one_run(
    fresh_store, tiny_weights, corpus_file, tmp_path, neo4j_env, store_snapshot, wipe
):
    # Both sides run as subprocesses: torch's thread settings, which fix the order of float
    # additions, are then the same, and only the DRIVES sums see another prompt order.
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    subprocess.run(
        ingest_cmd(tiny_weights, corpus_file, str(single_dir)), check=True, capture_output=True
    )
    single = store_snapshot(fresh_store)
    wipe(fresh_store)

    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    procs = [
        subprocess.Popen(
            ingest_cmd(tiny_weights, corpus_file, str(shard_dir), "--shard", f"{i}/2"),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert snapshot_close(store_snapshot(fresh_store), single)


def test_bad_corpus_writes_nothing(fresh_store, tiny_weights, tmp_path, neo4j_env):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "fine"}\n{"id": "b", "text": \n')
    result = subprocess.run(
        ingest_cmd(tiny_weights, bad, str(tmp_path)), capture_output=True, text=True
    )
    assert result.returncode == 2
    assert result.stderr.strip() == f"Error: {bad}:2: malformed JSON (Expecting value at column 21)"
    assert count(fresh_store, "Prompt") == 0
    assert count(fresh_store, "Feature") == 0


def test_long_prompts_are_skipped_or_truncated_and_counted(
    fresh_store, tiny_weights, tmp_path, wipe
):
    corpus = tmp_path / "mixed.txt"
    long_text = " ".join(["Mary and John went to the store"] * 30)  # over the 64-token context
    corpus.write_text(f"short one\n\n{long_text}\nanother short one\n")
    skipped = IngestRunner(_config(tiny_weights, corpus, tmp_path, run="skip"), fresh_store).run()
    assert skipped.written == 2
    assert skipped.skipped == {"over the length limit": 1}
    assert skipped.blank_lines == 1

    capped = _config(tiny_weights, corpus, tmp_path / "t", run="cut", max_tokens=8, truncate=True)
    wipe(fresh_store)
    cut = IngestRunner(capped, fresh_store).run()
    assert cut.written == 3
    with fresh_store.session() as s:
        lengths = [r["n"] for r in s.run("MATCH (p:Prompt) RETURN p.nTokens AS n")]
    assert max(lengths) == 8
    with fresh_store.session() as s:
        rows = s.run(
            "MATCH (p:Prompt) RETURN p.nTokens AS n, p.truncated AS cut, "
            "p.nTokensBeforeTruncation AS before"
        ).data()
    # A cut prompt says so, with its length before the cut; the others carry no flag.
    for row in rows:
        assert (row["cut"], row["before"] is None) in ((True, False), (None, True)), row
        assert row["n"] == 8 if row["cut"] else row["n"] <= 8
        assert row["before"] is None or row["before"] > 8
    assert cut.truncated == sum(bool(row["cut"]) for row in rows) >= 1


def _scaled_copy(model_dir: Path, dest: Path, factor: float) -> Path:
    """The same model folder under the same name elsewhere, every MLP weight times `factor`."""
    from safetensors.torch import load_file, save_file

    dest.mkdir(parents=True)
    for path in model_dir.iterdir():
        (dest / path.name).write_bytes(path.read_bytes())
    weights = load_file(dest / "model.safetensors")
    scaled = {k: (v * factor if ".mlp." in k else v) for k, v in weights.items()}
    save_file(scaled, dest / "model.safetensors", metadata={"format": "pt"})
    return dest


def _by_set(snapshot: dict, set_id: str) -> dict:
    """The part of a snapshot that belongs to one transcoder set (every id starts with it)."""
    nodes = [n for n in snapshot["nodes"] if dict(n[1]).get("id", "").startswith(set_id)]
    rels = [r for r in snapshot["rels"] if str(r[0]).startswith(set_id)]
    return {"nodes": nodes, "rels": rels}


def test_a_changed_model_under_the_same_name_is_a_new_set(
    fresh_store, tiny_weights, corpus_file, tmp_path, store_snapshot
):
    first_cfg = _config(tiny_weights, corpus_file, tmp_path, run="original")
    IngestRunner(first_cfg, fresh_store).run()
    with fresh_store.session() as s:
        (original,) = [r["id"] for r in s.run("MATCH (t:TranscoderSet) RETURN t.id AS id")]
    before = _by_set(store_snapshot(fresh_store), original)

    model_dir, tcs = tiny_weights
    changed = _scaled_copy(model_dir, tmp_path / "elsewhere" / model_dir.name, 1.7)
    changed_cfg = _config((changed, tcs), corpus_file, tmp_path, run="original")
    with pytest.raises(InputError, match="exists with a different configuration"):
        IngestRunner(changed_cfg, fresh_store).run()  # the same run name does not resume
    summary = IngestRunner(replace(changed_cfg, run=None), fresh_store).run()

    assert summary.written == 24  # none of its prompts counted as already stored
    with fresh_store.session() as s:
        sets = sorted(r["id"] for r in s.run("MATCH (t:TranscoderSet) RETURN t.id AS id"))
    assert len(sets) == 2
    assert all(x.startswith(model_dir.name + "-") for x in sets)
    assert _by_set(store_snapshot(fresh_store), original) == before


def test_two_runs_of_the_same_command_cooperate(
    fresh_store, tiny_weights, corpus_file, tmp_path, neo4j_env, store_snapshot, wipe
):
    single_dir = tmp_path / "single"
    single_dir.mkdir()
    subprocess.run(
        ingest_cmd(tiny_weights, corpus_file, str(single_dir)), check=True, capture_output=True
    )
    single = store_snapshot(fresh_store)
    wipe(fresh_store)

    both = tmp_path / "both"
    both.mkdir()
    procs = [
        subprocess.Popen(
            ingest_cmd(tiny_weights, corpus_file, str(both)),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [proc.communicate(timeout=600) for proc in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    written = [int(out.split(" written")[0].rsplit(" ", 1)[1]) for out, _ in outputs]
    assert sum(written) == 24  # each prompt written once, by one of them
    assert snapshot_close(store_snapshot(fresh_store), single)


def test_a_prompt_the_store_refuses_is_recorded_and_the_run_goes_on(
    fresh_store, tiny_weights, tmp_path
):
    from circuitstore.ingest.catalog import Catalog

    corpus = tmp_path / "c.jsonl"
    rows = [
        {"id": f"p{i}", "text": f"Mary and John went to the store ({i})", "ticket": i}
        for i in range(4)
    ]
    rows[2]["ticket"] = 1  # the user's own constraint below makes the store refuse p2
    corpus.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with fresh_store.session() as s:
        s.run("CREATE CONSTRAINT user_ticket FOR (p:Prompt) REQUIRE p.ticket IS UNIQUE").consume()
    try:
        cfg = _config(tiny_weights, corpus, tmp_path, run="refused")
        summary = IngestRunner(cfg, fresh_store).run()
    finally:
        with fresh_store.session() as s:
            s.run("DROP CONSTRAINT user_ticket").consume()
    assert (summary.written, summary.failed) == (3, 1)
    assert any("failed: 1 prompts" in line for line in summary.lines())
    catalog = Catalog.open(cfg.catalog_url())
    assert catalog.counts("refused") == {"done": 3, "failed": 1}
    with fresh_store.session() as s:
        keys = sorted(r["k"] for r in s.run("MATCH (p:Prompt) RETURN p.key AS k"))
    assert keys == ["p0", "p1", "p3"]
    # Only owner-readable catalog files.
    assert all(path.stat().st_mode & 0o077 == 0 for path in tmp_path.glob("catalog.sqlite*"))


def test_a_store_from_an_older_version_names_the_settings_it_lacks(
    fresh_store, tiny_weights, corpus_file, tmp_path
):
    """A store written before a graph setting existed (here --heads-per-edge) lacks it in its
    recorded settings: the refusal names it rather than a generic "other settings"."""
    cfg = _config(tiny_weights, corpus_file, tmp_path)
    IngestRunner(cfg, fresh_store).run()
    with fresh_store.session() as s:
        row = s.run("MATCH (t:TranscoderSet) RETURN t.id AS id, t.graphConfig AS c").single()
        older = json.loads(row["c"])
        del older["heads_per_edge"]
        s.run(
            "MATCH (t:TranscoderSet {id: $id}) SET t.graphConfig = $c, t.graphConfigHash = 'x'",
            id=row["id"],
            c=json.dumps(older),
        ).consume()
    with pytest.raises(ConfigError) as refused:
        IngestRunner(cfg, fresh_store).run()
    assert "(--heads-per-edge not recorded there (an older version), 3 here)" in str(refused.value)


def test_a_refused_run_is_not_left_running(fresh_store, tiny_weights, corpus_file, tmp_path):
    from circuitstore.ingest.catalog import Catalog

    IngestRunner(_config(tiny_weights, corpus_file, tmp_path, run="a"), fresh_store).run()
    clash = _config(tiny_weights, corpus_file, tmp_path, run="b", node_threshold=0.5)
    with pytest.raises(ConfigError, match=r"--node-threshold 0\.8 there, 0\.5 here"):
        IngestRunner(clash, fresh_store).run()
    catalog = Catalog.open(clash.catalog_url())
    with catalog.engine.connect() as conn:
        statuses = dict(conn.exec_driver_sql("SELECT name, status FROM runs").fetchall())
    assert statuses == {"a": "complete"}
