"""Replacement and completeness scores: on a hand-built graph against the formulas written out
with dense matrices, and on the tiny model, the streamed full-graph scores against the same
formulas over the whole graph held in memory."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from circuitstore.ingest.attribution import AttributionConfig, PruneConfig
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.scores import edge_scores

from .conftest import PROMPT, Tiny

E, F, ERR, B, LOGIT = Code.EMBEDDING, Code.FEATURE, Code.ERROR, Code.BIAS, Code.LOGIT


def brute_force(kinds, edges, seeds, abs_input=None):  # type: ignore[no-untyped-def]
    """The definitions, with dense matrices: Â rows = |A| / each target's |input|,
    I = w + wÂ + wÂ² + ..., the scores from I and Â."""
    n = len(kinds)
    a = np.zeros((n, n))
    for s, t, w in edges:
        a[t, s] += abs(w)
    full = a.sum(axis=1) if abs_input is None else np.asarray(abs_input, dtype=float)
    norm = np.divide(a, full[:, None], out=np.zeros_like(a), where=full[:, None] > 0)
    w = np.asarray(seeds, dtype=float)
    influence, term = w.copy(), w.copy()
    for _ in range(n):
        term = term @ norm
        influence += term
    kinds = np.asarray(kinds)
    error = (kinds == ERR) | (kinds == Code.REMAINDER)
    left_out = np.where(full > 0, 1 - norm.sum(axis=1), 0.0)
    tokens = influence[kinds == E].sum()
    errors = influence[error].sum() + (influence * left_out).sum()
    error_share = norm[:, error].sum(axis=1) + left_out
    completeness = ((1 - error_share) * influence).sum() / influence.sum()
    return tokens / (tokens + errors), completeness


GRAPH = {
    # 0, 1 embeddings; 2, 3 features; 4 an error; 5 a bias; 6 a logit
    "kinds": [E, E, F, F, ERR, B, LOGIT],
    "edges": [
        (0, 2, 1.0),
        (1, 2, -0.5),
        (5, 2, 0.25),
        (0, 3, 0.3),
        (2, 3, 2.0),
        (4, 3, -0.7),
        (3, 6, 1.5),
        (2, 6, -0.4),
        (4, 6, 0.2),
        (1, 6, 0.1),
    ],
    "seeds": [0, 0, 0, 0, 0, 0, 1.0],
}


def _scores(graph, abs_input=None):  # type: ignore[no-untyped-def]
    s, t, w = zip(*graph["edges"], strict=True)
    src, tgt, w = torch.tensor(s), torch.tensor(t), torch.tensor(w, dtype=torch.float64)
    kinds = torch.tensor(graph["kinds"])
    n = len(graph["kinds"])
    if abs_input is None:
        abs_input = torch.zeros(n, dtype=torch.float64).index_add_(0, tgt, w.abs().double())
    seeds = torch.tensor(graph["seeds"], dtype=torch.float64)
    return edge_scores(kinds, src, tgt, w.double(), torch.as_tensor(abs_input), seeds)


def test_a_hand_built_graph_scores_as_the_definitions_say() -> None:
    got = _scores(GRAPH)
    want = brute_force(GRAPH["kinds"], GRAPH["edges"], GRAPH["seeds"])
    assert got.replacement == pytest.approx(want[0], rel=1e-12)
    assert got.completeness == pytest.approx(want[1], rel=1e-12)
    assert 0 < got.replacement < 1
    assert 0 < got.completeness < 1


def test_what_a_subgraph_leaves_out_counts_as_error() -> None:
    """The logit's edge from feature 2 is dropped: its share of the logit's input becomes
    error there, and both scores fall."""
    full = _scores(GRAPH)
    n = len(GRAPH["kinds"])
    abs_input = np.zeros(n)
    for _, t, w in GRAPH["edges"]:
        abs_input[t] += abs(w)
    sub = {**GRAPH, "edges": [e for e in GRAPH["edges"] if (e[0], e[1]) != (2, 6)]}
    got = _scores(sub, torch.tensor(abs_input))
    want = brute_force(sub["kinds"], sub["edges"], sub["seeds"], abs_input)
    assert got.replacement == pytest.approx(want[0], rel=1e-12)
    assert got.completeness == pytest.approx(want[1], rel=1e-12)
    assert got.completeness < full.completeness
    assert got.replacement < full.replacement


@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_streamed_full_scores_equal_the_whole_graphs(tiny: Tiny, mode: str) -> None:
    """The pruned pass computes the full graph's scores while streaming (no target skipped
    here); they equal the formulas over every edge held in memory, in float64."""
    whole = tiny.engine.attribute(PROMPT, AttributionConfig(mode=mode, prune=None))  # type: ignore[arg-type]
    prune = PruneConfig(skip_fraction=0.0)
    pruned = tiny.engine.attribute(PROMPT, AttributionConfig(mode=mode, prune=prune))  # type: ignore[arg-type]
    for key in ("replacement_score", "completeness_score"):
        assert pruned.metadata[key] == pytest.approx(whole.metadata[key], rel=1e-9)
        assert 0 < float(whole.metadata[key]) <= 1  # type: ignore[arg-type]
    # The stored graph keeps less, so it explains less of the output.
    stored = pruned.metadata["stored_completeness_score"]
    assert stored < pruned.metadata["completeness_score"]  # type: ignore[operator]


def test_a_graph_that_keeps_everything_scores_as_the_whole(tiny: Tiny) -> None:
    keep_all = PruneConfig(
        node_threshold=1.0,
        edge_threshold=1.0,
        max_edges_per_target=10**6,
        skip_fraction=0.0,
        max_feature_nodes=None,
        max_edges=None,
    )
    config = AttributionConfig(mode="lumped", prune=keep_all)
    graph = tiny.engine.attribute(PROMPT, config)
    whole = tiny.engine.attribute(PROMPT, replace(config, prune=None))
    for key in ("replacement_score", "completeness_score"):
        assert graph.metadata[f"stored_{key}"] == pytest.approx(whole.metadata[key], rel=1e-6)
