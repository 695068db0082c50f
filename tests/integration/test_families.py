"""Llama, Qwen3 and Gemma-2 with each transcoder layout, ingested side by side into one real
Neo4j: each set's DRIVES aggregate equals the engine's edges summed independently, and
`query drivers` answers on each set by name."""

from __future__ import annotations

import json
from pathlib import Path

import networkx as nx
import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.corpus import read_corpus
from circuitstore.ingest.model import load_model
from circuitstore.ingest.runner import IngestRunner
from circuitstore.ingest.synthetic import (
    ModelSpec,
    random_transcoders,
    save_model,
    save_transcoders,
)
from circuitstore.ingest.transcoder import load_transcoders

from .helpers import make_corpus

pytestmark = pytest.mark.slow

# (family, layout, transcoder options): each published convention once.
CASES = {
    "llama-plt": ("llama", "circuit-tracer", {"activation": "jumprelu", "skip": True}),
    "qwen3-plt": (
        "qwen3",
        "circuit-tracer",
        {"activation": "jumprelu", "skip": True, "input_hook": "mlp.hook_in"},
    ),
    "gemma2-scope": ("gemma2", "gemma-scope", {"activation": "jumprelu"}),
    "llama-clt": ("llama", "clt", {"activation": "jumprelu", "cross_layer": True}),
}
AGGREGATE_MIN_FRACTION = 0.01


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    root = tmp_path_factory.mktemp("families")
    out = {}
    for name, (family, layout, options) in CASES.items():
        spec = ModelSpec(n_layers=2, d_model=32, n_heads=4, family=family, seed=11)
        model = root / family / "model"
        if not model.exists():
            save_model(model, spec)
        tcs = random_transcoders(2, 32, 64, active_fraction=0.15, seed=5, **options)
        save_transcoders(tcs, root / name, layout=layout)
        out[name] = (model, root / name)
    return out


@pytest.fixture(scope="module")
def store(driver, neo4j_settings, weights, tmp_path_factory):  # type: ignore[no-untyped-def]
    """Every case's set ingested into one store, side by side."""
    from circuitstore.schema.apply import apply_schema

    with driver.session(database=neo4j_settings.database) as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    apply_schema(driver, neo4j_settings.database)
    folder = tmp_path_factory.mktemp("families-run")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(4)) + "\n")
    configs = {}
    for name, (model, tcs) in weights.items():
        cfg = IngestConfig.from_flat(
            model=str(model),
            transcoders=str(tcs),
            prompts=str(corpus),
            catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
            aggregate_min_fraction=AGGREGATE_MIN_FRACTION,
            progress=False,
        )
        assert IngestRunner(cfg, driver, neo4j_settings.database).run().written == 4
        configs[name] = cfg
    return configs


def _set_id(driver, transcoders: Path) -> str:  # type: ignore[no-untyped-def]
    with driver.session() as s:
        ids = [
            r["id"]
            for r in s.run(
                "MATCH (t:TranscoderSet {transcoders: $source}) RETURN t.id AS id",
                source=str(transcoders),
            )
        ]
    assert len(ids) == 1
    return ids[0]


def _expected_drives(cfg: IngestConfig) -> nx.DiGraph:
    """Every prompt's unpruned feature -> feature edges that carry at least the aggregate's
    share of their target's |input|, summed per pair of features."""
    engine = AttributionEngine(load_model(cfg.model), load_transcoders(cfg.transcoders))
    mode = cfg.attribution.mode  # the aggregate's share is of the input as ingest itemises it
    expected = nx.DiGraph()
    for record in read_corpus(cfg.prompts).prompts:
        graph = engine.attribute(record.text, AttributionConfig(prune=None, mode=mode))
        nodes, e = graph.nodes, graph.edges
        edges = list(zip(e.source.tolist(), e.target.tolist(), e.weight.tolist(), strict=True))
        abs_input: dict[int, float] = {}
        for _, t, w in edges:
            abs_input[t] = abs_input.get(t, 0.0) + abs(w)
        for s, t, w in edges:
            if int(nodes.kind[s]) != 0 or int(nodes.kind[t]) != 0 or w == 0:
                continue
            if abs(w) < AGGREGATE_MIN_FRACTION * abs_input[t]:
                continue
            key_s = (int(nodes.layer[s]), int(nodes.index[s]))
            key_t = (int(nodes.layer[t]), int(nodes.index[t]))
            total = expected.get_edge_data(key_s, key_t, default={"n": 0, "sum": 0.0})
            expected.add_edge(key_s, key_t, n=total["n"] + 1, sum=total["sum"] + w)
    return expected


@pytest.mark.parametrize("case", CASES)
def test_drives_equal_the_engines_edges(store, driver, case: str) -> None:  # type: ignore[no-untyped-def]
    cfg = store[case]
    set_id = _set_id(driver, Path(cfg.transcoders))
    expected = _expected_drives(cfg)
    with driver.session() as s:
        stored = {
            ((r["sl"], r["si"]), (r["tl"], r["ti"])): r
            for r in s.run(
                "MATCH (a:Feature {transcoderSet: $set})-[d:DRIVES]->(b:Feature) "
                "RETURN a.layer AS sl, a.index AS si, b.layer AS tl, b.index AS ti, "
                "d.n AS n, d.sum AS sum",
                set=set_id,
            )
        }
    assert len(stored) == expected.number_of_edges() > 0
    for u, v, data in expected.edges(data=True):
        assert stored[(u, v)]["n"] == data["n"]
        assert stored[(u, v)]["sum"] == pytest.approx(data["sum"], rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("case", CASES)
def test_query_drivers_names_the_set(store, driver, neo4j_env, case: str) -> None:  # type: ignore[no-untyped-def]
    set_id = _set_id(driver, Path(store[case].transcoders))
    with driver.session() as s:
        top = s.run(
            "MATCH (a:Feature)-[d:DRIVES]->(b:Feature {transcoderSet: $set}) "
            "RETURN b.layer AS layer, b.index AS index, count(a) AS k ORDER BY k DESC LIMIT 1",
            set=set_id,
        ).single()
    feature = f"{top['layer']}:{top['index']}"
    args = ["query", "drivers", feature, "--transcoder-set", set_id, "--sign", "abs"]
    args += ["--top", "100", "--format", "json"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert len(rows) == top["k"] > 0
    # Without the set named, a store holding several sets asks for one.
    result = CliRunner().invoke(cli, ["query", "drivers", feature])
    assert result.exit_code != 0
    assert "--transcoder-set" in result.output
