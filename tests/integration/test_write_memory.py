"""Writes whose transaction memory is bounded, or refused before they start, whatever the prompt:
a GPT-2-scale prompt and a GPT-2 layer of views go into a server sized as `circuitstore demo`
sizes its own (the shared test server), and a write that would not fit a server's transaction
memory is refused in one line with nothing written."""

from __future__ import annotations

import random
from pathlib import Path

import neo4j
import pytest

from circuitstore.ingest import cypher as ingest_cypher
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.payload import PromptPayload
from circuitstore.ingest.runner import IngestRunner
from circuitstore.ingest.writer import VIEW_CHUNK, StoreWriter, TranscoderSetNode
from circuitstore.schema.apply import apply_schema
from circuitstore.schema.connection import open_driver
from circuitstore.schema.errors import TransactionMemoryError
from circuitstore.schema.names import FeatureKey, NodeId
from circuitstore.server.config import DEMO_HEAP

pytestmark = pytest.mark.slow

LAYERS, D_MODEL, D_TC = 12, 768, 24576  # GPT-2 small and its published transcoders
PROMPT = (
    "When Mary and John went to the store, John gave a drink to Mary. The quick brown fox "
    "jumps over the lazy dog near the river bank, and 42 birds flew over 7 green hills."
)


@pytest.fixture(scope="module")
def gpt2_scale(tmp_path_factory) -> tuple[Path, Path]:
    """A random 12-layer, d_model 768 GPT-2 and 12 transcoders of 24,576 features (about 64
    firing per token and layer), in the published file layout."""
    from circuitstore.ingest.synthetic import (
        ModelSpec,
        random_transcoders,
        save_model,
        save_transcoders,
    )

    root = tmp_path_factory.mktemp("gpt2-scale")
    save_model(root / "model", ModelSpec(n_layers=LAYERS, d_model=D_MODEL, n_heads=12))
    tcs = random_transcoders(LAYERS, D_MODEL, D_TC, active_fraction=64 / D_TC)
    save_transcoders(tcs, root / "transcoders")
    return root / "model", root / "transcoders"


@pytest.fixture(scope="module")
def gpt2_store(gpt2_scale, driver, neo4j_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    """One 32-token prompt of the GPT-2-scale stand-in, ingested into the demo-sized server."""
    with driver.session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    apply_schema(driver, neo4j_settings.database)
    folder = tmp_path_factory.mktemp("gpt2-corpus")
    (folder / "corpus.txt").write_text(PROMPT + "\n")
    model, transcoders = gpt2_scale
    cfg = IngestConfig(
        model=str(model),
        transcoders=str(transcoders),
        prompts=str(folder / "corpus.txt"),
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        max_tokens=32,
        truncate=True,
        progress=False,
    )
    runner = IngestRunner(cfg, driver, neo4j_settings.database)
    runner.views = False  # 12 layers of views are ~15 minutes of arithmetic on 2 cores
    return runner.run()


def test_the_test_server_has_the_demo_servers_transaction_memory(driver):
    limit, setting = StoreWriter(driver, "neo4j", 20).transaction_limit() or (0, "")
    heap_bytes = int(DEMO_HEAP.rstrip("g")) * 2**30
    assert setting == "dbms.memory.transaction.total.max"
    assert limit == pytest.approx(0.7 * heap_bytes, rel=0.01)


def test_a_gpt2_scale_prompt_goes_into_a_demo_sized_server(gpt2_store, driver):
    assert gpt2_store.written == 1
    assert gpt2_store.failed == 0
    with driver.session() as s:
        prompts = s.run("MATCH (p:Prompt) RETURN count(p) AS n").single()["n"]
        attr = s.run("MATCH ()-[a:ATTR]->() RETURN count(a) AS n").single()["n"]
        features = s.run("MATCH (f:Feature) RETURN count(f) AS n").single()["n"]
        active = s.run("MATCH (f:Feature) WHERE f.nActive > 0 RETURN count(f) AS n").single()["n"]
    assert prompts == 1
    assert attr == gpt2_store.edges > 10_000
    assert features == LAYERS * D_TC
    assert active > 5_000  # thousands of features' statistics in the prompt's one transaction


def _layer_views(set_id: str, layer: int) -> tuple[list[dict], list[dict]]:
    """Rows of one GPT-2 layer's views, shaped as `layer_views` makes them: every feature's ten
    logit-lens tokens, and ten virtual-weight sources into each (245,760 relationships)."""
    rng = random.Random(layer)
    words = [f" tok{i}" for i in range(5000)]
    tokens, virtual = [], []
    for index in range(D_TC):
        target = FeatureKey(set_id, layer, index).id
        tokens.append({"id": target, "props": {"logitLensTokens": rng.sample(words, 10)}})
        sources = [
            [FeatureKey(set_id, layer - 1, rng.randrange(D_TC)).id, rng.gauss(0, 1)]
            for _ in range(10)
        ]
        virtual.append({"target": target, "sources": sources})
    return tokens, virtual


def test_a_gpt2_layer_of_views_goes_in_chunks_exactly_once(gpt2_store, driver, monkeypatch):
    """Its single transaction took more than a 1 GiB server's 716.8 MiB. Now chunks: a write
    killed after three of them resumes with the rest, and nothing is written twice."""
    writer = StoreWriter(driver, "neo4j", 20)
    with driver.session() as s:
        set_id = s.run("MATCH (t:TranscoderSet) RETURN t.id AS id").single()["id"]
    tokens, virtual = _layer_views(set_id, 1)

    class KilledError(Exception):
        pass

    # The fourth chunk dies where a kill -9 would land: after its first statement, before its
    # commit (the driver rolls back a transaction whose function raises).
    real_run = neo4j.ManagedTransaction.run
    chunks = 0

    def run(self, query, parameters=None, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal chunks
        result = real_run(self, query, parameters, **kwargs)
        if query is ingest_cypher.SET_FEATURE_VIEWS:
            chunks += 1
            if chunks == 4:
                raise KilledError
        return result

    monkeypatch.setattr(neo4j.ManagedTransaction, "run", run)
    with pytest.raises(KilledError):
        writer.write_views(set_id, 1, tokens, virtual)
    monkeypatch.undo()
    with driver.session() as s:
        state = s.run(
            "MATCH (t:TranscoderSet) RETURN t.viewChunks AS chunks, t.viewLayers AS layers"
        ).single()
    assert state["chunks"] == ["1:0", "1:1", "1:2"]
    assert 1 not in (state["layers"] or [])

    assert writer.write_views(set_id, 1, tokens, virtual) is True
    assert writer.write_views(set_id, 1, tokens, virtual) is False  # done: nothing again
    with driver.session() as s:
        n = s.run(
            "MATCH (:Feature)-[v:VIRTUAL_WEIGHT]->(t:Feature {layer: 1}) RETURN count(v) AS n"
        ).single()["n"]
        lens = s.run(
            "MATCH (f:Feature {layer: 1}) WHERE f.logitLensTokens IS NOT NULL RETURN count(f) AS n"
        ).single()["n"]
        state = s.run(
            "MATCH (t:TranscoderSet) RETURN t.viewChunks AS chunks, t.viewLayers AS layers"
        ).single()
    assert n == 10 * D_TC
    assert lens == D_TC
    assert 1 in state["layers"]
    assert state["chunks"] is None  # no markers left, no property
    assert D_TC // VIEW_CHUNK > 3  # the interruption above really fell mid-layer


def _synthetic_payload(set_id: str, n_edges: int) -> PromptPayload:
    prompt_id = NodeId.prompt(set_id, "big")
    nodes = []
    for j in range(n_edges // 10):
        local = NodeId.feature(0, j % 64, j)
        props = {
            "id": f"{prompt_id}/{local}",
            "localId": local,
            "prompt": prompt_id,
            "kind": "feature",
            "pos": j % 64,
            "layer": 0,
            "transcoderSet": set_id,
            "feature": j,
            "activation": 1.0,
            "preactivation": 1.0,
        }
        nodes.append(["Occurrence", props])
    edges = [[i % len(nodes), (i + 1) % len(nodes), 0.5, "residual"] for i in range(n_edges)]
    prompt = {"id": prompt_id, "key": "big", "transcoderSet": set_id, "run": "test"}
    return PromptPayload(prompt_id, prompt, nodes, edges, [], [], [])


def test_a_write_over_the_servers_transaction_memory_is_refused_in_one_line(
    start_neo4j, monkeypatch
):
    """A server that lets a transaction hold 4 MiB: a prompt estimated past that is refused
    before it is sent, with the fix; one the estimate misjudges is refused by the server, at
    once rather than retried for the driver's whole window. Neither writes anything."""
    settings = start_neo4j(NEO4J_db_memory_transaction_max="4m")
    with open_driver(settings) as small:
        apply_schema(small, "neo4j")
        writer = StoreWriter(small, "neo4j", 20, where=settings.uri)
        writer.ensure_transcoder_set(TranscoderSetNode("s", {}, "h"), [])
        assert writer.transaction_limit() == (4 * 2**20, "db.memory.transaction.max")
        payload = _synthetic_payload("s", 20_000)
        assert payload.write_bytes() > 4 * 2**20

        with pytest.raises(TransactionMemoryError) as estimated:
            writer.write_prompt(payload)
        assert "allows 4 MiB (db.memory.transaction.max)" in str(estimated.value)
        assert "circuitstore server start --heap 2g" in str(estimated.value)

        monkeypatch.setattr(StoreWriter, "check_fits", lambda self, p: None)
        with pytest.raises(TransactionMemoryError) as refused:
            writer.write_prompt(payload)
        assert "refused a write that needs more transaction memory" in str(refused.value)
        assert "\n" not in str(refused.value)
        with small.session() as s:
            assert s.run("MATCH (n:GraphNode) RETURN count(n) AS n").single()["n"] == 0
            assert s.run("MATCH (p:Prompt) RETURN count(p) AS n").single()["n"] == 0
