"""Interventions on the tiny model: in the frozen replacement model, removing or scaling a
feature changes each later feature's pre-activation and each logit by exactly the engine's edge
(times scale - 1), in exact mode and, with the longer attention paths cut, in lumped mode."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from circuitstore.ingest.attribution import AttributionConfig, AttributionGraph
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.intervene.effects import Intervener, Readout, Site

from .conftest import PROMPT, Tiny

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
