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
    # The bias has no viewer type: its mass went into a (new) error node at its layer and pos.
    assert set(ids) == {"E_5_0", "0_3_0", "0_error_mlp_0", "1_error_mlp_0", "3_9_0", "3_8_0"}
    assert ids["0_3_0"]["feature_type"] == "cross layer transcoder"
    assert ids["0_3_0"]["layer"] == "0"
    assert ids["0_3_0"]["ctx_idx"] == 0
    assert ids["0_3_0"]["feature"] == (0 + 3) * (0 + 3 + 1) // 2 + 3  # Cantor(0, 3)
    assert ids["1_error_mlp_0"]["feature_type"] == "mlp reconstruction error"
    assert ids["E_5_0"]["feature_type"] == "embedding"
    assert ids["E_5_0"]["layer"] == "E"
    assert ids["3_9_0"]["is_target_logit"]
    assert not ids["3_8_0"]["is_target_logit"]
    assert ids["3_9_0"]["token_prob"] == pytest.approx(math.exp(3) / (math.exp(3) + math.exp(1)))
    assert "(p=" in ids["3_9_0"]["clerp"]
    assert {(x["source"], x["target"], x["weight"]) for x in data["links"]} == {
        ("E_5_0", "0_3_0", 1.0),
        ("0_error_mlp_0", "0_3_0", 0.5),
        ("0_3_0", "3_9_0", 2.0),
        ("1_error_mlp_0", "3_9_0", -1.0),
    }
    assert data["metadata"]["prompt_tokens"] == ["Hi"]
    assert data["metadata"]["schema_version"] == 1
    assert data["metadata"]["info"]["folded"] == {
        "bias": 1,
        "remainder": 0,
        "created_error_nodes": 1,
    }


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


# -- the original work's greedy beam search -----------------------------------------------------


def with_activations(sub: Subgraph, seed: int) -> Subgraph:
    rng = random.Random(seed)
    nodes = tuple(
        Node(**{**n.as_row(), "activation": rng.uniform(0.5, 3.0)}) if n.kind == "feature" else n
        for n in sub.nodes
    )
    return Subgraph(sub.prompt, nodes, sub.edges)


def test_beam_paths_by_hand():
    # T <- A (1.0), T <- B (3.0); A's input: E1 (2.0); B's input: E1 (3.0), E2 (1.0).
    nodes = (
        Node("T", "logit", pos=0, token_id=1, value=4.0),
        Node("A", "feature", layer=0, pos=0, feature=0, activation=2.0),
        Node("B", "feature", layer=0, pos=0, feature=1, activation=4.0),
        Node("E1", "embedding", pos=0),
        Node("E2", "embedding", pos=0),
    )
    edges = (
        Edge("A", "T", 1.0), Edge("B", "T", 3.0),
        Edge("E1", "A", 2.0), Edge("E1", "B", 3.0), Edge("E2", "B", 1.0),
    )  # fmt: skip
    sub = Subgraph("p", nodes, edges)
    got = graphs.beam_paths(sub, "T", width=2, depth=2)
    # Depth 1 keeps B (3) and A (1); depth 2: E1 via B 3 x 3/4 = 2.25, E1 via A 1 x 2/2 = 1,
    # E2 via B 3 x 1/4 = 0.75 is the third and falls off the beam of 2.
    assert [(p.nodes, p.contribution) for p in got] == [
        (("B", "T"), 3.0),
        (("E1", "B", "T"), 2.25),
        (("A", "T"), 1.0),
        (("E1", "A", "T"), 1.0),
    ]
    assert [p.nodes for p in graphs.beam_paths(sub, "T", width=1, depth=2)] == [
        ("B", "T"),
        ("E1", "B", "T"),
    ]


@pytest.mark.parametrize("seed", range(5))
def test_beam_paths_unbounded_equal_every_path(seed):
    """With a beam wider than the graph, the search keeps every path of up to `depth` edges,
    each with its contribution computed here from the edges and activations alone."""
    sub = with_activations(random_dag(seed), seed)
    act = {n.id: n.activation for n in sub.nodes}
    g = to_nx(sub)
    every = {}
    for s in set(g) - {"logit"}:
        for path in nx.all_simple_paths(g, s, "logit", cutoff=3):
            w = [g[a][b]["weight"] for a, b in itertools.pairwise(path)]
            inner = zip(w[:-1], path[1:-1], strict=True)  # each edge into a node passed
            every[tuple(path)] = w[-1] * math.prod(x / act[n] for x, n in inner)
    got = graphs.beam_paths(sub, "logit", width=10_000, depth=3)
    assert {p.nodes for p in got} == set(every)
    for p in got:
        assert p.contribution == pytest.approx(every[p.nodes], rel=1e-12)
    sizes = [abs(p.contribution) for p in got]
    assert sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("seed", range(5))
def test_beam_keeps_the_best_extensions_at_each_depth(seed):
    """Each step's beam is the `width` largest |contribution| among one-edge extensions of the
    previous step's beam (each path offering its `width` largest), as the original search."""
    sub = with_activations(random_dag(seed), seed)
    width, depth = 3, 3
    got = graphs.beam_paths(sub, "logit", width=width, depth=depth)
    every = {p.nodes: p.contribution for p in graphs.beam_paths(sub, "logit", 10_000, depth)}
    beam = [("logit",)]
    for step in range(1, depth + 1):
        offers = []
        for path in beam:
            ext = [q for q in every if len(q) == step + 1 and q[1:] == path]
            offers += sorted(ext, key=lambda q: -abs(every[q]))[:width]
        beam = sorted(offers, key=lambda q: -abs(every[q]))[:width]
        kept = {p.nodes for p in got if len(p.nodes) == step + 1}
        assert {abs(every[q]) for q in kept} == {abs(every[q]) for q in beam}


@pytest.mark.parametrize("seed", range(5))
def test_propagated_equals_the_sum_over_paths(seed):
    """A change of a node's activation reaches every later node along all stored paths, each
    path carrying the product of its edges' shares w / activation(source)."""
    sub = with_activations(random_dag(seed), seed)
    act = {n.id: n.activation for n in sub.nodes}
    g = to_nx(sub)
    source = "n1_0" if "n1_0" in g and g.out_degree("n1_0") else "n1_1"
    got = graphs.propagated(sub, {source: -act[source]})
    for node in g:
        want = -act[source] if node == source else 0.0
        if node != source:
            for path in nx.all_simple_paths(g, source, node):
                shares = (g[a][b]["weight"] / act[a] for a, b in itertools.pairwise(path))
                want += -act[source] * math.prod(shares)
        assert got[node] == pytest.approx(want, rel=1e-12, abs=1e-12), node


@pytest.mark.parametrize("seed", range(5))
def test_sensitivity_predicts_what_propagated_computes(seed):
    """One backward pass gives, for every node, the change `propagated` predicts at the targets
    when that node alone changes."""
    sub = with_activations(random_dag(seed), seed)
    targets = {"logit": 1.0}
    sens = graphs.sensitivity(sub, targets)
    for node in sub.nodes:
        if node.kind != "feature":
            continue
        forward = graphs.propagated(sub, {node.id: 0.5})
        assert 0.5 * sens[node.id] == pytest.approx(forward["logit"], rel=1e-12, abs=1e-15)
