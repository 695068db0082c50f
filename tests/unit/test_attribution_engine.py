"""The engine against independent computations on the tiny model (float64)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from circuitstore.ingest.attribution import AttributionConfig, AttributionGraph, edge_by_head
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.state import centre
from circuitstore.schema.errors import InputError

from .conftest import PROMPT, Tiny

FULL = AttributionConfig(prune=None, logit_top_k=3)


def _incoming(graph: AttributionGraph) -> torch.Tensor:
    n = len(graph.nodes)
    return torch.zeros(n, dtype=torch.float64).index_add_(
        0, graph.edges.target, graph.edges.weight.double()
    )


def _edge_map(graph: AttributionGraph) -> dict[tuple[int, int], float]:
    e = graph.edges
    return {
        (s, t): w
        for s, t, w in zip(e.source.tolist(), e.target.tolist(), e.weight.tolist(), strict=True)
    }


@pytest.fixture(scope="module")
def exact(tiny: Tiny) -> AttributionGraph:
    return tiny.engine.attribute(PROMPT, FULL)


@pytest.fixture(scope="module")
def lumped(tiny: Tiny) -> AttributionGraph:
    return tiny.engine.attribute(PROMPT, dataclasses.replace(FULL, mode="lumped"))


def test_activations_match_real_hooks(tiny: Tiny, exact: AttributionGraph) -> None:
    tokens = torch.tensor(exact.token_ids)
    _, cache = tiny.model.bridge.run_with_cache(tokens[None])
    nodes = exact.nodes
    feats = nodes.kind == Code.FEATURE
    assert int(feats.sum()) > 50
    for layer in range(tiny.model.n_layers):
        x = cache[f"blocks.{layer}.ln2.hook_normalized"][0]
        z = torch.relu(
            (x - tiny.transcoders[layer].b_dec) @ tiny.transcoders[layer].W_enc
            + tiny.transcoders[layer].b_enc
        )
        mine = torch.zeros_like(z)
        sel = feats & (nodes.layer == layer)
        mine[nodes.pos[sel], nodes.index[sel]] = nodes.activation[sel]
        assert torch.allclose(mine, z, atol=1e-12)


@pytest.mark.parametrize("which", ["exact", "lumped"])
def test_conservation_on_every_target(which: str, request: pytest.FixtureRequest) -> None:
    graph: AttributionGraph = request.getfixturevalue(which)
    nodes = graph.nodes
    targets = (nodes.kind == Code.FEATURE) | (nodes.kind == Code.LOGIT)
    assert int((nodes.kind == Code.LOGIT).sum()) == 3
    got = _incoming(graph)[targets]
    want = nodes.value[targets]
    assert torch.allclose(got, want, rtol=1e-9, atol=1e-9)
    assert graph.metadata["mode"] == which


def test_lumped_remainder_is_the_multi_attention_part(
    exact: AttributionGraph, lumped: AttributionGraph
) -> None:
    ex, lu = _edge_map(exact), _edge_map(lumped)
    n = len(exact.nodes)  # lumped appends remainder rows after the shared rows
    diff = torch.zeros(n, dtype=torch.float64)
    for (s, t), w in ex.items():
        diff[t] += w - lu.get((s, t), 0.0)
    rem = {t: w for (s, t), w in lu.items() if s >= n}
    nodes = exact.nodes
    targets = (
        ((nodes.kind == Code.FEATURE) | (nodes.kind == Code.LOGIT)).nonzero().flatten().tolist()
    )
    assert any(abs(rem[t]) > 1e-6 for t in targets)
    for t in targets:
        assert rem[t] == pytest.approx(float(diff[t]), abs=1e-9)


def test_exact_edges_match_autograd_on_frozen_model(tiny: Tiny, exact: AttributionGraph) -> None:
    """Independent: the real bridge with patterns and LN scales frozen by hooks and every MLP output
    replaced by leaf feature activations @ W_dec + bias + detached error; edge = grad x activation."""
    bridge, tcs = tiny.model.bridge, tiny.transcoders
    tokens = torch.tensor(exact.token_ids)[None]
    _, cache = bridge.run_with_cache(tokens)
    L = tiny.model.n_layers
    z = [
        torch.relu(tcs[la].preactivation(cache[f"blocks.{la}.ln2.hook_normalized"][0]))
        .detach()
        .requires_grad_(True)
        for la in range(L)
    ]
    errors = [
        (cache[f"blocks.{la}.hook_mlp_out"][0] - tcs[la].decode(z[la])).detach() for la in range(L)
    ]
    normalized: dict[int, torch.Tensor] = {}

    def frozen(name):
        return lambda act, hook: cache[name].detach()

    def capture(layer):
        def fn(act, hook):
            normalized[layer] = act
            return act

        return fn

    def replace_mlp(layer):
        return lambda act, hook: (
            z[layer] @ tcs[layer].W_dec + tcs[layer].b_dec_out + errors[layer]
        )[None]

    hooks = [("ln_final.hook_scale", frozen("ln_final.hook_scale"))]
    for la in range(L):
        for name in (
            f"blocks.{la}.ln1.hook_scale",
            f"blocks.{la}.ln2.hook_scale",
            f"blocks.{la}.attn.hook_pattern",
        ):
            hooks.append((name, frozen(name)))
        hooks.append((f"blocks.{la}.ln2.hook_normalized", capture(la)))
        hooks.append((f"blocks.{la}.hook_mlp_out", replace_mlp(la)))
    with torch.enable_grad():
        logits = bridge.run_with_hooks(tokens, fwd_hooks=hooks)
        assert torch.allclose(
            logits[0], cache["unembed.hook_out"][0] if "unembed.hook_out" in cache else logits[0]
        )
        nodes = exact.nodes
        edges = _edge_map(exact)
        feats = (nodes.kind == Code.FEATURE) & (nodes.layer == L - 1)
        checked = 0
        for row in feats.nonzero().flatten()[:6].tolist():
            layer, pos, idx = int(nodes.layer[row]), int(nodes.pos[row]), int(nodes.index[row])
            pre = (normalized[layer][0, pos] - tcs[layer].b_dec) @ tcs[layer].W_enc[:, idx] + tcs[
                layer
            ].b_enc[idx]
            assert float(pre.detach()) == pytest.approx(float(nodes.value[row]), abs=1e-10)
            grads = torch.autograd.grad(pre, z[:layer], retain_graph=True)
            src = (nodes.kind == Code.FEATURE) & (nodes.layer < layer)
            for s in src.nonzero().flatten().tolist():
                sl, sp, si = int(nodes.layer[s]), int(nodes.pos[s]), int(nodes.index[s])
                want = float(grads[sl][sp, si] * z[sl][sp, si])
                assert edges.get((s, row), 0.0) == pytest.approx(want, abs=1e-10)
                checked += 1
    assert checked > 100


def test_same_position_formula_and_head_breakdown(tiny: Tiny) -> None:
    """One real token after BOS: the residual part of a feature->feature edge at position 1 is
    z_j * centre(W_dec[l'][j]) . W_enc[l][:, i] / s, and the rest goes through heads."""
    config = dataclasses.replace(FULL, mode="lumped")
    state = tiny.engine.prepare(" John", config)
    assert state.cache.tokens.shape[0] == 2
    graph = tiny.engine.graph(state, config)
    nodes, edges, tcs = state.nodes, _edge_map(graph), tiny.transcoders
    pairs = 0
    for t in (
        ((nodes.kind == Code.FEATURE) & (nodes.layer == 2) & (nodes.pos == 1))
        .nonzero()
        .flatten()
        .tolist()[:4]
    ):
        i, scale = int(nodes.index[t]), state.cache.ln2_scale[2, 1]
        for s in ((nodes.kind == Code.FEATURE) & (nodes.layer == 0)).nonzero().flatten().tolist():
            j, sp = int(nodes.index[s]), int(nodes.pos[s])
            parts = edge_by_head(state, s, t)
            formula = (
                float(nodes.activation[s] * (centre(tcs[0].W_dec[j]) @ tcs[2].W_enc[:, i]) / scale)
                if sp == 1
                else 0.0
            )
            assert parts.residual == pytest.approx(formula, abs=1e-10)
            assert parts.total == pytest.approx(
                parts.residual + sum(parts.heads.values()) + parts.multi_layer
            )
            assert set(parts.heads) == {(a, h) for a in (1, 2) for h in range(4)}
            # lumped edges are exactly the residual plus the single-head paths
            assert edges[(s, t)] == pytest.approx(
                parts.residual + sum(parts.heads.values()), abs=1e-10
            )
            pairs += 1
    assert pairs > 10


def test_batch_equals_single(tiny: Tiny) -> None:
    prompts = [PROMPT, "The quick brown fox", "42 birds"]
    batch = tiny.engine.attribute_batch(prompts, FULL)
    for prompt, graph in zip(prompts, batch, strict=True):
        single = tiny.engine.attribute(prompt, FULL)
        assert graph.tokens == single.tokens
        assert torch.equal(graph.edges.weight, single.edges.weight)
        assert torch.equal(graph.edges.source, single.edges.source)


def test_chunking_does_not_change_edges(tiny: Tiny, exact: AttributionGraph) -> None:
    small = dataclasses.replace(FULL, chunk=dataclasses.replace(FULL.chunk, max_elements=600))
    other = tiny.engine.attribute(PROMPT, small)
    a, b = _edge_map(exact), _edge_map(other)
    assert a.keys() == b.keys()
    assert max(abs(a[k] - b[k]) for k in a) < 1e-12


def test_slicing_does_not_change_edges(
    tiny: Tiny, exact: AttributionGraph, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Exact mode's attention pull-back and the pruner's scans work a few rows at a time; the
    slice sizes change nothing but rounding."""
    from circuitstore.ingest.attribution import engine, prune

    pruned_config = AttributionConfig(mode="lumped", logit_top_k=3)
    pruned = tiny.engine.attribute(PROMPT, pruned_config)
    monkeypatch.setattr(engine, "BACKWARD_ELEMENTS", 1)  # one target per slice
    monkeypatch.setattr(prune, "SCAN_ELEMENTS", 1)  # one source row per slice
    a, b = _edge_map(exact), _edge_map(tiny.engine.attribute(PROMPT, FULL))
    assert a.keys() == b.keys()
    assert max(abs(a[k] - b[k]) for k in a) < 1e-12
    again = tiny.engine.attribute(PROMPT, pruned_config)
    assert torch.equal(pruned.nodes.kind, again.nodes.kind)
    assert torch.equal(pruned.nodes.index, again.nodes.index)
    assert torch.equal(pruned.edges.source, again.edges.source)
    assert torch.equal(pruned.edges.target, again.edges.target)
    assert torch.allclose(pruned.edges.weight, again.edges.weight, rtol=0, atol=1e-12)


def test_prompt_errors(tiny: Tiny) -> None:
    with pytest.raises(InputError, match="empty"):
        tiny.engine.attribute("   ", FULL)
    long = "the cat sat on the mat " * 40
    with pytest.raises(InputError, match=r"allows 1\.\.48 .*--truncate"):
        tiny.engine.attribute(long, FULL)
    graph = tiny.engine.attribute(long, dataclasses.replace(FULL, logit_top_k=1), truncate=True)
    assert len(graph.tokens) == 48


def test_all_positions_logits_and_float32(tiny32: Tiny) -> None:
    config = AttributionConfig(prune=None, logit_top_k=2, logit_positions="all", mode="lumped")
    graph = tiny32.engine.attribute(PROMPT, config)
    nodes = graph.nodes
    logits = nodes.kind == Code.LOGIT
    assert int(logits.sum()) == 2 * len(graph.tokens)
    targets = logits | (nodes.kind == Code.FEATURE)
    got, want = _incoming(graph)[targets], nodes.value[targets].double()
    scale = want.abs().clamp_min(1.0)
    assert float(((got - want).abs() / scale).max()) < 1e-3


def test_spilled_rows_are_products_like_the_rest() -> None:
    """A position far busier than the others keeps most of its rows in the spill slab; the
    products and the column order are the same as a plain loop over (source, target)."""
    from circuitstore.ingest.attribution.engine import _dot_into
    from circuitstore.ingest.attribution.slabs import padded_slab

    gen = torch.Generator().manual_seed(0)
    T, d, b = 6, 5, 3
    counts = torch.tensor([2, 9, 1, 3, 2, 12])  # positions 1 and 5 are outliers
    pos = torch.arange(T).repeat_interleave(counts)
    rank = torch.cat([torch.arange(int(c)) for c in counts])
    vectors = torch.randn(int(counts.sum()), d, generator=gen, dtype=torch.float64)
    slab = padded_slab(vectors, torch.arange(pos.shape[0]), pos, rank, counts, T)
    assert slab.spill is not None
    assert slab.per_pos < int(counts.max())
    field = torch.randn(b, T, d, generator=gen, dtype=torch.float64)
    for width in (2, 5, T):
        out = torch.empty(slab.rows(width), b, dtype=torch.float64)
        _dot_into(slab, field[:, :width], out)
        ids = slab.source_ids(width)
        real = ids >= 0
        assert sorted(ids[real].tolist()) == (pos < width).nonzero(as_tuple=True)[0].tolist()
        want = torch.einsum("sd,bsd->sb", vectors[ids[real]], field[:, pos[ids[real]]])
        assert torch.allclose(out[real], want)
        assert bool((out[~real] == 0).all())


@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_every_edge_by_head_sums_to_the_edge(tiny: Tiny, mode: str) -> None:
    """`attribute --by-head`: each stored edge's parts (same position, each head, two or more
    attention layers) add up to its weight: all of them in exact mode, all but the multi-layer
    part (which lumped mode keeps in the remainder) in lumped mode."""
    config = dataclasses.replace(FULL, mode=mode, prune=AttributionConfig().prune)
    graph, parts = tiny.engine.attribute_by_head(PROMPT, config)
    assert len(parts) == len(graph.edges)
    checked = 0
    for w, part in zip(graph.edges.weight.tolist(), parts, strict=True):
        if part is None:
            continue
        heads = sum(part.heads.values())
        if mode == "exact":
            assert part.total == pytest.approx(w, rel=1e-9, abs=1e-12)
            assert part.residual + heads + part.multi_layer == pytest.approx(w, abs=1e-9)
        else:
            assert part.residual + heads == pytest.approx(w, rel=1e-9, abs=1e-12)
        checked += 1
    assert checked > 0.5 * len(parts)
    assert any(part and part.strongest(1) for part in parts)
