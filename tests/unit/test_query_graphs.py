"""Paths, influence and circuits over hand-made graphs, checked against brute force (networkx,
numpy) rather than against the implementation's own reasoning."""

from __future__ import annotations

import itertools
import json
import math
import random

import networkx as nx
import numpy as np
import pytest

from circuitstore.query import graphs
from circuitstore.query.export import neuronpedia_graph, write_subgraph
from circuitstore.query.results import Edge, Node, PromptInfo, Subgraph, TranscoderSetInfo
from circuitstore.query.store import CircuitStore
from circuitstore.schema.errors import QueryError


def random_dag(seed: int, layers: int = 4, width: int = 4, p: float = 0.6) -> Subgraph:
    rng = random.Random(seed)
    nodes, edges = [], []
    grid = [[f"n{layer}_{i}" for i in range(width)] for layer in range(layers)]
    for layer, row in enumerate(grid):
        kind = "embedding" if layer == 0 else "feature"
        nodes += [Node(n, kind, layer=layer, pos=0, feature=i) for i, n in enumerate(row)]
        for lower in grid[:layer]:
            for a, b in itertools.product(lower, row):
                if rng.random() < p:
                    edges.append(Edge(a, b, rng.uniform(-2, 2), "residual"))
    nodes.append(Node("logit", "logit", pos=0, token_id=7, value=1.0))
    edges += [Edge(n, "logit", rng.uniform(-2, 2)) for n in grid[-1] + grid[-2][:2]]
    return Subgraph("p", tuple(nodes), tuple(edges))


def to_nx(sub: Subgraph) -> nx.DiGraph:
    g = nx.DiGraph()
    g.add_nodes_from(n.id for n in sub.nodes)
    g.add_weighted_edges_from((e.source, e.target, e.weight) for e in sub.edges)
    return g


@pytest.mark.parametrize("seed", range(5))
def test_strongest_paths_equal_brute_force(seed):
    sub = random_dag(seed)
    g = to_nx(sub)
    starts = [n for n in g if g.in_degree(n) == 0]
    every = []
    for s in starts:
        for path in nx.all_simple_paths(g, s, "logit"):
            w = [g[a][b]["weight"] for a, b in itertools.pairwise(path)]
            every.append((abs(math.prod(w)), tuple(path)))
    every.sort(reverse=True)
    got = graphs.strongest_paths(sub, "logit", 7)
    assert [p.nodes for p in got] == [p for _, p in every[:7]]
    for p in got:
        assert p.product == pytest.approx(
            math.prod(g[a][b]["weight"] for a, b in itertools.pairwise(p.nodes))
        )


def test_paths_from_a_chosen_source():
    sub = random_dag(1)
    got = graphs.strongest_paths(sub, "logit", 3, sources=["n0_1"])
    assert got
    assert all(p.nodes[0] == "n0_1" for p in got)


def influence_by_linear_algebra(sub: Subgraph, target: str) -> dict[str, float]:
    g = to_nx(sub)
    order = list(g)
    a = np.abs(nx.to_numpy_array(g, nodelist=order, weight="weight")).T  # a[t, s] = |w(s->t)|
    rows = a.sum(axis=1, keepdims=True)
    a = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
    e = np.zeros(len(order))
    e[order.index(target)] = 1.0
    total = e @ np.linalg.inv(np.eye(len(order)) - a)  # e + eA + eA^2 + ...
    return dict(zip(order, total, strict=True))


@pytest.mark.parametrize("seed", range(3))
def test_influence_equals_neumann_series(seed):
    sub = random_dag(seed)
    expected = influence_by_linear_algebra(sub, "logit")
    got = graphs.influence(sub, {"logit": 1.0})
    for node, value in expected.items():
        assert got[node] == pytest.approx(value, abs=1e-9)


@pytest.mark.parametrize("threshold", [0.3, 0.6, 0.9, 1.0])
def test_circuit_keeps_the_smallest_top_share(threshold):
    sub = random_dag(2)
    scores = influence_by_linear_algebra(sub, "logit")
    ranked = sorted(((s, n) for n, s in scores.items() if n != "logit" and s > 0), reverse=True)
    total = sum(s for s, _ in ranked)
    need = next(
        i
        for i in range(1, len(ranked) + 1)
        if sum(s for s, _ in ranked[:i]) >= threshold * total - 1e-12
    )
    circuit, got_total = graphs.circuit(sub, {"logit": 1.0}, threshold)
    assert got_total == pytest.approx(total)
    assert {n.id for n in circuit.nodes} == {"logit"} | {n for _, n in ranked[:need]}
    kept = {n.id for n in circuit.nodes}
    assert {(e.source, e.target) for e in circuit.edges} == {
        (e.source, e.target) for e in sub.edges if e.source in kept and e.target in kept
    }


def test_bad_threshold():
    with pytest.raises(QueryError, match="threshold"):
        graphs.circuit(random_dag(0), {"logit": 1.0}, 1.5)


def test_cycle_is_refused():
    sub = Subgraph(
        "p",
        (Node("a", "feature"), Node("b", "feature")),
        (Edge("a", "b", 1.0), Edge("b", "a", 1.0)),
    )
    with pytest.raises(QueryError, match="cycle"):
        graphs.topological(["a", "b"], sub.edges)


def test_exports_round_trip_through_networkx(tmp_path):
    sub = random_dag(3)
    write_subgraph(sub.to_networkx(), "graphml", tmp_path / "g.graphml")
    back = nx.read_graphml(tmp_path / "g.graphml")
    assert back.number_of_edges() == len(sub.edges)
    write_subgraph(sub.to_networkx(), "json", tmp_path / "g.json")
    data = json.loads((tmp_path / "g.json").read_text())
    assert len(data["links"]) == len(sub.edges)
    assert nx.node_link_graph(data, edges="links").number_of_nodes() == len(sub.nodes)


def test_neuronpedia_layout():
    nodes = (
        Node("embed0@0", "embedding", pos=0, token="Hi", token_id=5),
        Node("mlp0tc[3]@0", "feature", layer=0, pos=0, feature=3, activation=2.0),
        Node("mlp1err@0", "error", layer=1, pos=0),
        Node("bias[attn0]@0", "bias", layer=0, pos=0),
        Node("logit[9]@0", "logit", pos=0, token_id=9, value=3.0),
        Node("logit[8]@0", "logit", pos=0, token_id=8, value=1.0),
    )
    edges = (
        Edge("embed0@0", "mlp0tc[3]@0", 1.0),
        Edge("bias[attn0]@0", "mlp0tc[3]@0", 0.5),
        Edge("mlp0tc[3]@0", "logit[9]@0", 2.0),
        Edge("mlp1err@0", "logit[9]@0", -1.0),
    )
    info = PromptInfo("s/k", "k", "s", "Hi", ("Hi",))
    data = neuronpedia_graph(info, Subgraph("k", nodes, edges), TranscoderSetInfo("s", 2, 64))
    assert set(data) == {"metadata", "qParams", "nodes", "links"}
    ids = {n["node_id"]: n for n in data["nodes"]}
    assert set(ids) == {"E_5_0", "0_3_0", "1_-1_0", "3_9_0", "3_8_0"}
    assert ids["0_3_0"]["feature_type"] == "cross layer transcoder"
    assert ids["0_3_0"]["layer"] == "0"
    assert ids["0_3_0"]["ctx_idx"] == 0
    assert ids["1_-1_0"]["feature_type"] == "mlp reconstruction error"
    assert ids["E_5_0"]["feature_type"] == "embedding"
    assert ids["E_5_0"]["layer"] == "E"
    assert ids["3_9_0"]["is_target_logit"]
    assert not ids["3_8_0"]["is_target_logit"]
    assert ids["3_9_0"]["token_prob"] == pytest.approx(math.exp(3) / (math.exp(3) + math.exp(1)))
    assert {(x["source"], x["target"]) for x in data["links"]} == {
        ("E_5_0", "0_3_0"),
        ("0_3_0", "3_9_0"),
        ("1_-1_0", "3_9_0"),
    }
    assert data["metadata"]["prompt_tokens"] == ["Hi"]
    assert data["metadata"]["info"]["omitted_nodes"] == 1


def test_several_transcoder_sets_need_a_choice():
    store = CircuitStore(driver=None)  # type: ignore[arg-type]
    store._sets = {k: TranscoderSetInfo(k, 2, 64) for k in ("a", "b")}
    with pytest.raises(
        QueryError, match=r"several transcoder sets \(a, b\): choose one with --transcoder-set"
    ):
        store.tset()
    assert store.tset("b").id == "b"
    with pytest.raises(QueryError, match="unknown transcoder set 'c'"):
        store.tset("c")
    store._sets = {}
    with pytest.raises(QueryError, match="holds no transcoder set"):
        store.tset()
