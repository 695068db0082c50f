"""The scores of a pinned subgraph (`query.scores`) without a database: hand-built graphs whose
scores are worked out in the comments, and random graphs against the ingest engine's own
`edge_scores` (what the stored scores are computed with)."""

from __future__ import annotations

import math
import random

import pytest
import torch

from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.scores import edge_scores
from circuitstore.query.paths.read import pinned_nodes
from circuitstore.query.results import Edge, Node, PromptInfo, Subgraph
from circuitstore.query.scores import full_inputs, logit_seeds, subgraph_scores
from circuitstore.schema.errors import QueryError

NAN = math.nan
KINDS = {"e": "embedding", "f": "feature", "g": "feature", "r": "error", "b": "bias"}


def graph(edges: list[tuple[str, str, float]], logits: dict[str, float]) -> Subgraph:
    """Nodes named by kind: e* embeddings, f*/g* features, r* errors, b* biases; `logits` by
    value."""
    ids = {n for s, t, _ in edges for n in (s, t)} | set(logits)
    nodes = tuple(
        Node(n, "logit", value=logits[n]) if n in logits else Node(n, KINDS[n[0]])
        for n in sorted(ids)
    )
    return Subgraph("k", nodes, tuple(Edge(s, t, w) for s, t, w in edges))


# (name, edges, logits by value, inputExplained by node, pinned, replacement, completeness)
CASES = [
    # L's input: e 2, f 1, r 1 (all stored: shares 1/2, 1/4, 1/4); f's: e 3 (all stored).
    # I_L = 1, I_f = 1/4, I_r = 1/4, I_e = 1/2 + 1/4 = 3/4: replacement 3/4 / (3/4 + 1/4).
    # Explained: L 3/4 (r's quarter is error), f 1/4, e 3/4, r 1/4 = 2 of I = 9/4: 8/9.
    (
        "everything stored, f pinned",
        [("e", "L", 2.0), ("f", "L", 1.0), ("r", "L", 1.0), ("e", "f", 3.0)],
        {"L": 0.0},
        {"L": 1.0, "f": 1.0},
        ["f"],
        0.75,
        8 / 9,
    ),
    # The same graph without f: L keeps e 1/2 and r 1/4; f's 1/4 is left out (error at L).
    # I_e = 1/2, I_r = 1/4: replacement 1/2 / (1/2 + 1/4 + 1 x 1/4) = 1/2.
    # Explained: L 1 - 1/4 - 1/4 = 1/2, e 1/2, r 1/4 = 5/4 of I = 7/4: 5/7.
    (
        "everything stored, nothing pinned",
        [("e", "L", 2.0), ("f", "L", 1.0), ("r", "L", 1.0), ("e", "f", 3.0)],
        {"L": 0.0},
        {"L": 1.0, "f": 1.0},
        [],
        0.5,
        5 / 7,
    ),
    # Half of each target's input stored: L's full |input| 2 / 0.5 = 4 (e 1/4, f 1/4, 1/2
    # left out), f's 1 / 0.5 = 2 (e 1/2, 1/2 left out). I_f = 1/4, I_e = 1/4 + 1/8 = 3/8.
    # Errors: 1 x 1/2 + 1/4 x 1/2 = 5/8: replacement 3/8. Explained: L 1/2, f 1/8, e 3/8 = 1
    # of I = 13/8: 8/13.
    (
        "half the input stored",
        [("e", "L", 1.0), ("f", "L", -1.0), ("e", "f", 1.0)],
        {"L": 0.0},
        {"L": 0.5, "f": 0.5},
        ["f"],
        0.375,
        8 / 13,
    ),
    # Two logits of values 0 and ln 3: seeds 1/4 and 3/4. L1's input e 1, b 1 (full 2); L2's
    # e -1 (full 1). I_e = 1/4 x 1/2 + 3/4 = 7/8, I_b = 1/8: no error anywhere, and the bias
    # is neither token nor error: replacement 1. Explained: everything: completeness 1.
    (
        "a bias and two logits",
        [("e", "L1", 1.0), ("b", "L1", 1.0), ("e", "L2", -1.0)],
        {"L1": 0.0, "L2": math.log(3.0)},
        {"L1": 1.0, "L2": 1.0},
        [],
        1.0,
        1.0,
    ),
    # A chain e -> f -> g -> L with f unpinned: g's whole input is left out. I_g = 1, I_e = 0:
    # replacement 0; explained: L 1, g 0 of I = 2: 1/2.
    (
        "a chain cut in the middle",
        [("e", "f", 1.0), ("f", "g", 1.0), ("g", "L", 1.0)],
        {"L": 0.0},
        {"L": 1.0, "f": 1.0, "g": 1.0},
        ["g"],
        0.0,
        0.5,
    ),
    # The chain whole: I_e = 1, nothing left out: both 1.
    (
        "a chain whole",
        [("e", "f", 1.0), ("f", "g", 1.0), ("g", "L", 1.0)],
        {"L": 0.0},
        {"L": 1.0, "f": 1.0, "g": 1.0},
        ["f", "g"],
        1.0,
        1.0,
    ),
    # f is a target none of whose input was stored (inputExplained 0): all of it is left out.
    # L: e 1/2, f 1/2. I_f = 1/2 (all error), I_e = 1/2: replacement 1/2. Explained: L 1,
    # f 0, e 1/2 of I = 2: 3/4.
    (
        "a target with none of its input stored",
        [("e", "L", 1.0), ("f", "L", 1.0)],
        {"L": 0.0},
        {"L": 1.0, "f": 0.0, "e": NAN},
        ["f"],
        0.5,
        0.75,
    ),
    # Unpruned (no inputExplained): the stored sums are the full inputs. As the first case.
    (
        "unpruned",
        [("e", "L", 2.0), ("f", "L", 1.0), ("r", "L", 1.0), ("e", "f", 3.0)],
        {"L": 0.0},
        {},
        ["f"],
        0.75,
        8 / 9,
    ),
]


@pytest.mark.parametrize(
    ("edges", "logits", "explained", "pinned", "replacement", "completeness"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_hand_worked_scores(edges, logits, explained, pinned, replacement, completeness):
    g = graph(edges, logits)
    got = subgraph_scores(g, pinned, full_inputs(g, explained))
    assert got.replacement == pytest.approx(replacement, rel=1e-12, abs=1e-15)
    assert got.completeness == pytest.approx(completeness, rel=1e-12, abs=1e-15)
    assert got.prompt == "k"
    assert got.pinned == tuple(pinned)


def test_seeds_are_the_softmax_over_the_logits():
    nodes = [Node("a", "logit", value=0.0), Node("b", "logit", value=math.log(3.0))]
    assert logit_seeds(nodes) == pytest.approx({"a": 0.25, "b": 0.75})
    assert logit_seeds([Node("e", "embedding")]) == {}


def test_full_inputs_from_the_stored_share():
    g = graph([("e", "f", 1.0), ("r", "f", -1.0), ("f", "L", 3.0)], {"L": 0.0})
    full = full_inputs(g, {"f": 0.25, "L": NAN, "e": None})
    assert full == {"f": 8.0, "L": 3.0}  # e has no input
    assert full_inputs(g, {"f": 0.0})["f"] == math.inf


# -- against the engine ---------------------------------------------------------------------

CODES = {"embedding": Code.EMBEDDING, "feature": Code.FEATURE, "error": Code.ERROR}
CODES |= {"bias": Code.BIAS, "logit": Code.LOGIT}


def random_graph(rng: random.Random) -> tuple[Subgraph, dict[str, float]]:
    """A layered graph (embeddings, errors and biases feed three layers of features, which feed
    three logits) with each target's full |input| 1-3 times its stored one."""
    layers = [[f"f{i}_{j}" for j in range(rng.randint(1, 4))] for i in range(3)]
    sources = ["e0", "e1", "r0", "b0"]
    edges = []
    for layer in [*layers, ["L0", "L1", "L2"]]:
        for t in layer:
            for s in rng.sample(sources, rng.randint(1, len(sources))):
                edges.append((s, t, rng.uniform(-2, 2)))
        sources = sources + layer
    g = graph(edges, {"L0": rng.gauss(0, 2), "L1": rng.gauss(0, 2), "L2": rng.gauss(0, 2)})
    explained = {n.id: rng.uniform(0.3, 1.0) for n in g.nodes if n.kind in ("feature", "logit")}
    return g, explained


def engine_scores(g: Subgraph, kept: set[str], full: dict[str, float]) -> tuple[float, float]:
    """`edge_scores` over the edges among the kept nodes, every node of `g` in its table."""
    index = {n.id: i for i, n in enumerate(g.nodes)}
    edges = [e for e in g.edges if e.source in kept and e.target in kept]
    seeds = logit_seeds(g.nodes)
    got = edge_scores(
        torch.tensor([CODES[n.kind.value] for n in g.nodes]),
        torch.tensor([index[e.source] for e in edges], dtype=torch.long),
        torch.tensor([index[e.target] for e in edges], dtype=torch.long),
        torch.tensor([e.weight for e in edges], dtype=torch.float64),
        torch.tensor([full.get(n.id, 0.0) for n in g.nodes], dtype=torch.float64),
        torch.tensor([seeds.get(n.id, 0.0) for n in g.nodes], dtype=torch.float64),
    )
    return got.replacement, got.completeness


def test_random_graphs_score_as_the_engine_scores_them():
    """Pinned subgraphs score exactly as the engine scores the same edges with the same full
    inputs: every feature pinned (the stored graph), none, and random halves."""
    rng = random.Random(7)
    for _ in range(40):
        g, explained = random_graph(rng)
        full = full_inputs(g, explained)
        features = [n.id for n in g.nodes if n.kind == "feature"]
        for pinned in (features, [], rng.sample(features, len(features) // 2)):
            kept = {n.id for n in g.nodes if n.kind != "feature"} | set(pinned)
            got = subgraph_scores(g, pinned, full)
            want = engine_scores(g, kept, full)
            assert (got.replacement, got.completeness) == pytest.approx(want, rel=1e-12)
        every = subgraph_scores(g, features, full).replacement
        assert subgraph_scores(g, [], full).replacement <= every + 1e-12


def test_pinned_ids_must_be_in_the_graph():
    g = graph([("e", "L", 1.0)], {"L": 0.0})
    g = Subgraph("k", (*g.nodes, Node("mlp0tc[3]@1", "feature")), g.edges)
    info = PromptInfo("s/k", "k", "s", "", ())
    assert pinned_nodes(g, ["mlp0tc[3]@1", " mlp0tc[3]@1"], info) == ("mlp0tc[3]@1",)
    with pytest.raises(QueryError, match=r"^node 'mlp0tc\[4\]@1' is not in the stored graph "):
        pinned_nodes(g, ["mlp0tc[4]@1"], info)
    with pytest.raises(QueryError, match=r"node 'nonsense'.*\(pinned in prompt k\)$"):
        pinned_nodes(g, ["nonsense"], info)
