"""Interventions on the tiny models: in the frozen replacement model, removing or scaling a
feature changes each later feature's pre-activation and each logit by exactly the engine's edge
(times scale - 1), in exact mode and, with the longer paths cut, in lumped mode; on GPT-2 and
the other families, with transcoders of every published convention."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch

from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine, AttributionGraph
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.intervene.effects import Intervener, Readout, Site
from circuitstore.ingest.model import LoadedModel

from .conftest import PROMPT, Tiny
from .families import FAMILIES, KINDS, published_style
from .families import PROMPT as FAMILY_PROMPT

FULL = AttributionConfig(prune=None, logit_top_k=3)


def edges_from(graph: AttributionGraph, source: int) -> dict[int, float]:
    e = graph.edges
    out: dict[int, float] = {}
    for s, t, w in zip(e.source.tolist(), e.target.tolist(), e.weight.tolist(), strict=True):
        if s == source:
            out[t] = out.get(t, 0.0) + w
    return out


def site(graph: AttributionGraph, row: int) -> Site:
    n = graph.nodes
    return Site(int(n.layer[row]), int(n.pos[row]), int(n.index[row]))


def readout(graph: AttributionGraph, rows: list[int]) -> Readout:
    n = graph.nodes
    feats = tuple(site(graph, r) for r in rows if n.kind[r] == Code.FEATURE)
    logits = tuple((int(n.pos[r]), int(n.index[r])) for r in rows if n.kind[r] == Code.LOGIT)
    return Readout(feats, logits)


@pytest.mark.parametrize("mode", ["exact", "lumped"])
@pytest.mark.parametrize("scale", [0.0, 2.5])
def test_frozen_change_equals_the_edges(tiny: Tiny, mode: str, scale: float) -> None:
    graph = tiny.engine.attribute(PROMPT, dataclasses.replace(FULL, mode=mode))
    nodes = graph.nodes
    tokens = torch.tensor(graph.token_ids)
    model = Intervener(tiny.model, tiny.transcoders, tokens)
    sources = ((nodes.kind == Code.FEATURE) & (nodes.layer < 2)).nonzero().flatten().tolist()
    checked = 0
    for row in sources[::7][:8]:
        assert model.activation(site(graph, row)) == pytest.approx(float(nodes.activation[row]))
        out = edges_from(graph, row)
        kinds = nodes.kind[list(out)] if out else torch.zeros(0)
        targets = [
            t for t, k in zip(out, kinds.tolist(), strict=True) if k in (Code.FEATURE, Code.LOGIT)
        ]
        ordered = [t for t in targets if nodes.kind[t] == Code.FEATURE] + [
            t for t in targets if nodes.kind[t] == Code.LOGIT
        ]
        change = model.frozen([site(graph, row)], scale, readout(graph, ordered), mode == "lumped")
        got = torch.cat([change.features, change.logits]).tolist()
        want = [(scale - 1.0) * out[t] for t in ordered]
        assert got == pytest.approx(want, abs=1e-9, rel=1e-7)
        checked += len(ordered)
    assert checked > 20


def test_the_real_model_responds_beyond_the_edges(tiny: Tiny) -> None:
    """Nothing frozen: removing a feature moves the logits, and not by the frozen amount alone
    (LayerNorm and attention respond), while removing nothing changes nothing."""
    graph = tiny.engine.attribute(PROMPT, FULL)
    nodes = graph.nodes
    model = Intervener(tiny.model, tiny.transcoders, torch.tensor(graph.token_ids))
    logits = (nodes.kind == Code.LOGIT).nonzero().flatten().tolist()
    out = readout(graph, logits)
    first = ((nodes.kind == Code.FEATURE) & (nodes.layer == 0)).nonzero().flatten().tolist()
    sites = [site(graph, r) for r in first[:10]]
    real = model.real(sites, 0.0, out)
    frozen = model.frozen(sites, 0.0, out)
    assert real.logits.abs().max() > 1e-6
    assert not torch.allclose(real.logits, frozen.logits, atol=1e-9)
    unchanged = model.real(sites, 1.0, out)
    assert unchanged.logits.abs().max() == pytest.approx(0.0, abs=1e-9)
    assert unchanged.top_token == int(model.clean_logits[-1].argmax())


def _check_frozen(
    model: Intervener, graph: AttributionGraph, mode: str, scale: float, sources: list[int]
) -> int:
    """Scale each source alone in the frozen model: every feature and logit target of its
    edges moves by (scale - 1) x the edge, relative to the target's |input|. Returns how many
    targets were checked."""
    nodes = graph.nodes
    size = torch.zeros(len(nodes), dtype=torch.float64).index_add_(
        0, graph.edges.target, graph.edges.weight.abs().double()
    )
    checked = 0
    for row in sources:
        assert model.activation(site(graph, row)) == pytest.approx(float(nodes.activation[row]))
        out = edges_from(graph, row)
        targets = [t for t in out if int(nodes.kind[t]) in (Code.FEATURE, Code.LOGIT)]
        ordered = sorted(targets, key=lambda t: int(nodes.kind[t]) != Code.FEATURE)
        change = model.frozen([site(graph, row)], scale, readout(graph, ordered), mode == "lumped")
        got = torch.cat([change.features, change.logits])
        want = torch.tensor([(scale - 1.0) * out[t] for t in ordered], dtype=got.dtype)
        worst = ((got - want).abs() / size[ordered]).max() if ordered else 0.0
        assert worst < 1e-9, f"source {nodes.node_id(row)}: {float(worst):.1e} of |input|"
        checked += len(ordered)
    return checked


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["exact", "lumped"])
@pytest.mark.parametrize("family", ["gpt2", *FAMILIES])
def test_frozen_change_equals_the_edges_in_every_family_and_kind(
    family_model: Callable[[str], LoadedModel], family: str, kind: str, mode: str
) -> None:
    """The published sets' conventions (input hooks, JumpReLU/TopK, skip connections,
    cross-layer decoders) on every family: a source's removal moves each target by minus its
    edge, the skip connections responding and a cross-layer feature leaving every layer."""
    model = family_model(family)
    tcs = published_style(kind, model.n_layers, model.d_model)
    engine = AttributionEngine(model, tcs)
    graph = engine.attribute(FAMILY_PROMPT, dataclasses.replace(FULL, mode=mode))
    nodes = graph.nodes
    run = Intervener(model, tcs, torch.tensor(graph.token_ids))
    sources = []
    for layer in range(model.n_layers - 1):
        rows = ((nodes.kind == Code.FEATURE) & (nodes.layer == layer)).nonzero().flatten()
        sources += rows[:: max(1, len(rows) // 3)][:3].tolist()
    assert _check_frozen(run, graph, mode, 0.0, sources) > 30


@pytest.mark.parametrize("family", FAMILIES)
def test_the_real_model_of_every_family_responds(
    family_model: Callable[[str], LoadedModel], family: str
) -> None:
    """Nothing frozen: removing features moves the (pre-soft-cap) logits beyond the frozen
    change; scaling by 1 changes nothing."""
    model = family_model(family)
    tcs = published_style("clt", model.n_layers, model.d_model)
    graph = AttributionEngine(model, tcs).attribute(FAMILY_PROMPT, FULL)
    nodes = graph.nodes
    run = Intervener(model, tcs, torch.tensor(graph.token_ids))
    out = readout(graph, (nodes.kind == Code.LOGIT).nonzero().flatten().tolist())
    first = ((nodes.kind == Code.FEATURE) & (nodes.layer == 0)).nonzero().flatten().tolist()
    sites = [site(graph, r) for r in first[:10]]
    real, frozen = run.real(sites, 0.0, out), run.frozen(sites, 0.0, out)
    assert real.logits.abs().max() > 1e-6
    assert not torch.allclose(real.logits, frozen.logits, atol=1e-9)
    assert run.real(sites, 1.0, out).logits.abs().max() == pytest.approx(0.0, abs=1e-12)
    # The logit nodes hold the logits before Gemma-2's soft-cap, as the changes are measured.
    rows = (nodes.kind == Code.LOGIT).nonzero().flatten()
    clean = run.clean_logits[nodes.pos[rows], nodes.index[rows]]
    assert torch.allclose(clean, nodes.value[rows], rtol=1e-12, atol=0.0)
