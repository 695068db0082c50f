"""Edges split by attention head, against the engine run on attention with one head removed, on
GPT-2 and the other families, with transcoders of every published convention (skip connections
and cross-layer decoders included)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine, AttributionGraph
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.heads import edges_by_head, head_parts, strongest_heads
from circuitstore.ingest.attribution.state import PromptState
from circuitstore.ingest.model import LoadedModel

from .conftest import PROMPT, Tiny
from .families import FAMILIES, KINDS, published_style
from .families import PROMPT as FAMILY_PROMPT

LUMPED = AttributionConfig(mode="lumped", prune=None, logit_top_k=3)


def _edges(graph: AttributionGraph) -> dict[tuple[int, int], float]:
    e = graph.edges
    return dict(
        zip(zip(e.source.tolist(), e.target.tolist(), strict=True), e.weight.tolist(), strict=True)
    )


def _without_head(state: PromptState, layer: int, head: int) -> PromptState:
    """The same frozen prompt with one head's output weights zeroed in one attention layer."""
    op = state.attention[layer]
    dh = op.W_O_t.shape[1] // state.model.n_heads
    w_o = op.W_O_t.clone()
    w_o[:, head * dh : (head + 1) * dh] = 0
    attention = list(state.attention)
    attention[layer] = dataclasses.replace(op, W_O_t=w_o)
    return dataclasses.replace(state, attention=tuple(attention))


@pytest.mark.parametrize(("layer", "head"), [(0, 1), (1, 3), (2, 0)])
def test_a_heads_part_is_what_removing_the_head_removes(tiny: Tiny, layer: int, head: int) -> None:
    """Lumped edges are linear in each head's output: the engine run without head (layer, head)
    loses from every edge exactly the part `head_parts` gives that head."""
    state = tiny.engine.prepare(PROMPT, LUMPED)
    graph = tiny.engine.graph(state, LUMPED)
    without = _edges(tiny.engine.graph(_without_head(state, layer, head), LUMPED))
    parts = head_parts(state, graph.edges.source, graph.edges.target)
    checked = 0
    for i, (key, weight) in enumerate(_edges(graph).items()):
        if not bool(parts.valid[i]):
            continue
        want = weight - without.get(key, 0.0)
        assert float(parts.heads[i, layer, head]) == pytest.approx(want, abs=1e-10)
        checked += int(want != 0.0)
    assert checked > 50


def test_heads_outside_an_edges_layers_are_zero(tiny: Tiny) -> None:
    state = tiny.engine.prepare(PROMPT, LUMPED)
    graph = tiny.engine.graph(state, LUMPED)
    parts = head_parts(state, graph.edges.source, graph.edges.target)
    layers = torch.arange(state.model.n_layers)
    outside = (layers[None, :] < parts.first[:, None]) | (layers[None, :] > parts.last[:, None])
    assert bool((parts.heads[outside] == 0).all())
    kinds = state.nodes.kind
    no_split = (kinds[graph.edges.target] == Code.REMAINDER) | (
        kinds[graph.edges.source] == Code.BIAS
    ) & (state.nodes.index[graph.edges.source] == 2)  # a target's own encoder constant
    assert not bool(parts.valid[no_split].any())


def test_strongest_heads_of_a_pruned_graph_add_up_to_each_edge(tiny: Tiny) -> None:
    """The stored split: k heads strongest first, the rest summed, the residual part; in lumped
    mode they add up to the edge. The pruned graph's rows point back into the full table."""
    config = dataclasses.replace(LUMPED, prune=AttributionConfig().prune)
    state = tiny.engine.prepare(PROMPT, config)
    graph = tiny.engine.graph(state, config)
    assert graph.rows is not None
    for column in ("kind", "layer", "pos", "index"):
        full, kept = getattr(state.nodes, column), getattr(graph.nodes, column)
        same = full[graph.rows] == kept
        if column == "index":  # a remainder's index is its target's row, renumbered
            same |= graph.nodes.kind == Code.REMAINDER
        assert bool(same.all())
    top = strongest_heads(state, graph, 3)
    rows = top.rows()
    checked = 0
    for weight, split in zip(graph.edges.weight.tolist(), rows, strict=True):
        if split is None:
            continue
        numbers, weights, other, residual = split
        assert len(numbers) == len(weights) <= 3
        assert [abs(w) for w in weights] == sorted((abs(w) for w in weights), reverse=True)
        assert sum(weights) + other + residual == pytest.approx(weight, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked > 0.5 * len(rows)
    numbers = {n for split in rows if split for n in split[0]}
    assert numbers <= set(range(3 * 4))  # layer * n_heads + head
    assert len(numbers) > 4


def test_the_other_heads_are_weaker_than_the_kept_ones(tiny: Tiny) -> None:
    config = dataclasses.replace(LUMPED, prune=AttributionConfig().prune)
    state = tiny.engine.prepare(PROMPT, config)
    graph = tiny.engine.graph(state, config)
    assert graph.rows is not None
    parts = head_parts(state, graph.rows[graph.edges.source], graph.rows[graph.edges.target])
    top = strongest_heads(state, graph, 2)
    flat = parts.heads.flatten(1)
    for i in parts.valid.nonzero(as_tuple=True)[0].tolist()[:200]:
        kept = [int(j) for j in top.index[i].tolist() if j >= 0]
        rest = [abs(float(flat[i, j])) for j in range(flat.shape[1]) if j not in kept]
        if kept and rest:
            assert min(abs(float(flat[i, j])) for j in kept) >= max(rest)


def _sizes(graph: AttributionGraph) -> torch.Tensor:
    """Each edge's target's |input|: the scale its rounding is relative to."""
    e = graph.edges
    size = torch.zeros(len(graph.nodes), dtype=torch.float64)
    size.index_add_(0, e.target, e.weight.abs().double())
    return size[e.target]


def _aligned(graph: AttributionGraph, other: AttributionGraph) -> torch.Tensor:
    """`other`'s weight of each edge of `graph` (same node table), 0 where it has none."""
    n = len(graph.nodes)
    key = graph.edges.source * n + graph.edges.target
    theirs = other.edges.source * n + other.edges.target
    order = torch.argsort(theirs)
    at = torch.searchsorted(theirs[order], key).clamp_max(theirs.shape[0] - 1)
    hit = theirs[order][at] == key
    return torch.where(hit, other.edges.weight[order][at].double(), 0.0)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("family", ["gpt2", *FAMILIES])
def test_parts_add_up_in_every_family_and_kind(
    family_model: Callable[[str], LoadedModel], family: str, kind: str
) -> None:
    """Residual (straight and through one skip connection) plus the single heads is the lumped
    edge, a cross-layer feature's writes summed; a head's part is what removing it removes;
    and an exact edge's multi-layer rest is the exact edge less the lumped one."""
    model = family_model(family)
    engine = AttributionEngine(model, published_style(kind, model.n_layers, model.d_model))
    state = engine.prepare(FAMILY_PROMPT, LUMPED)
    graph = engine.graph(state, LUMPED)
    # Every 7th edge: the tiny graphs have 10^5 edges, and each is split on its own.
    sample = torch.arange(0, len(graph.edges.weight), 7)
    e, size = graph.edges, _sizes(graph)
    parts = head_parts(state, e.source[sample], e.target[sample])
    valid = parts.valid
    assert int(valid.sum()) > 200
    gap = (parts.residual + parts.heads.sum((1, 2)) - e.weight[sample]).abs() / size[sample]
    assert float(gap[valid].max()) < 1e-10
    layer, head = 1, 2
    lost = e.weight - _aligned(graph, engine.graph(_without_head(state, layer, head), LUMPED))
    gap = (parts.heads[:, layer, head] - lost[sample]).abs() / size[sample]
    assert float(gap[valid].max()) < 1e-10
    assert int((lost[sample][valid] != 0).sum()) > 20
    exact_config = dataclasses.replace(LUMPED, mode="exact")
    exact = _aligned(graph, engine.graph(engine.prepare(FAMILY_PROMPT, exact_config), exact_config))
    last = ((graph.nodes.kind == Code.FEATURE) & (graph.nodes.layer == 2)).nonzero().flatten()
    checked = 0
    for target in last[:: max(1, len(last) // 4)].tolist():
        into = (e.target == target).nonzero().flatten()
        split = edges_by_head(state, target, e.source[into].tolist())
        for i in into.tolist():
            got = split.get(int(e.source[i]))
            if got is None:  # the target's own constant, its remainder: no split
                assert int(graph.nodes.kind[e.source[i]]) in (Code.BIAS, Code.REMAINDER)
                continue
            # Exact edges can be far larger than their target's input (they cancel): rounding
            # is relative to the larger of the two.
            scale = max(float(size[i]), abs(float(exact[i])))
            assert got.total == pytest.approx(float(exact[i]), abs=1e-10 * scale)
            rest = float(exact[i] - e.weight[i])
            assert got.multi_layer == pytest.approx(rest, abs=1e-10 * scale)
            checked += 1
    assert checked > 50
