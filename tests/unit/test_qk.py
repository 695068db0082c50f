"""QK tracing (`ingest.qk`): a head's score split into the graph's nodes, on the tiny model and
the shipped demo model, in both modes, checked against the model's own `hook_attn_scores` and
by removing nodes from the forward pass."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from circuitstore.demo import WEIGHTS
from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
from circuitstore.ingest.model import LoadedModel, load_model, tokenize
from circuitstore.ingest.qk import HeadTrace, trace_head
from circuitstore.ingest.qkstore.select import edge_traces
from circuitstore.ingest.transcoder import load_transcoders
from circuitstore.schema.errors import InputError

from .conftest import PROMPT, SPEC
from .families import FAMILIES, KINDS, published_style
from .families import PROMPT as FAMILY_PROMPT

TOL = 1e-5
DEMO_PROMPT = "When Mary and John went to the store, John gave a drink to"
# (query, key) pairs of the tiny prompt's 12 tokens: the diagonal, BOS, and in between.
PAIRS = ((11, 3), (5, 5), (6, 0), (11, 10))


@pytest.fixture(scope="module")
def demo32() -> AttributionEngine:
    model = load_model(WEIGHTS / "model")
    return AttributionEngine(model, load_transcoders(WEIGHTS / "transcoders"))


def _size(t: HeadTrace) -> float:
    """The float error scale of a score: |q| |k| / sqrt(d_head)."""
    q, k = t.query.total, t.key.total
    return float(q.norm() * k.norm()) / math.sqrt(int(q.shape[0]))


def _check_sums(t: HeadTrace) -> None:
    """Every pairwise term adds up to the model's score; each side's marginals too."""
    scale = math.sqrt(int(t.query.vectors.shape[1]))
    pairs = (t.query.vectors.double() @ t.key.vectors.double().T) / scale
    size = _size(t)
    assert abs(float(pairs.sum()) - t.trace.score) <= TOL * size
    assert abs(t.trace.total - t.trace.score) <= TOL * size
    q_side = pairs.sum(dim=1)
    k_side = pairs.sum(dim=0)
    assert abs(float(q_side.sum()) - t.trace.score) <= TOL * size
    assert abs(float(k_side.sum()) - t.trace.score) <= TOL * size
    # The sides' totals are the model's own query and key.
    for side in (t.query, t.key):
        gap = float((side.total - side.observed.double()).norm())
        assert gap <= TOL * float(side.observed.norm())
    # The kept marginals are the strongest of the full ones, with their values.
    named = dict(zip(t.query.names, q_side.tolist(), strict=True))
    for name, value in t.trace.query_side:
        assert value == pytest.approx(named[name], abs=TOL * size)
    assert abs(t.trace.query_side[0][1]) == pytest.approx(float(q_side.abs().max()), abs=TOL * size)
    assert abs(t.trace.pairs[0][2]) == pytest.approx(float(pairs.abs().max()), abs=TOL * size)


@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_tiny_every_head_sums_to_the_models_score(tiny32, mode) -> None:
    tokens = tokenize(tiny32.model, PROMPT)
    assert tokens.shape[0] == 12
    for layer in range(SPEC.n_layers):
        for head in range(SPEC.n_heads):
            for query, key in PAIRS:
                _check_sums(trace_head(tiny32.engine, tokens, layer, head, query, key, mode=mode))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_demo_every_head_sums_to_the_models_score(demo32, mode) -> None:
    model = demo32.model
    tokens = tokenize(model, DEMO_PROMPT)
    n = int(tokens.shape[0])
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            for query, key in ((n - 1, 3), (n - 1, n - 1), (n // 2, 1)):
                _check_sums(trace_head(demo32, tokens, layer, head, query, key, mode=mode))


@pytest.mark.parametrize(
    ("mode", "layer", "head"),
    [("exact", 2, 1), ("lumped", 2, 1), ("exact", 1, 3), ("lumped", 1, 0)],
)
def test_removal_with_layernorm_frozen_changes_the_score_by_the_trace(
    tiny32, mode, layer, head
) -> None:
    """The frozen model's change is the trace's prediction (minus a one-sided node's marginal);
    the real model's change is reported beside it."""
    tokens = tokenize(tiny32.model, PROMPT)
    t = trace_head(tiny32.engine, tokens, layer, head, 8, 3, mode=mode, top=20, check=6)
    assert len(t.removals) == 6
    size = _size(t)
    marginals = dict(t.trace.query_side) | dict(t.trace.key_side)
    one_sided = 0
    for r in t.removals:
        assert abs(r.frozen - r.predicted) <= TOL * size, r
        assert math.isfinite(r.observed)
        on_q, on_k = r.node in t.query.names, r.node in t.key.names
        if on_q != on_k and r.node in marginals:
            one_sided += 1
            assert r.predicted == pytest.approx(-marginals[r.node], abs=TOL * size)
    assert one_sided > 0
    # LayerNorm free, the model responds: some change differs from the prediction.
    assert any(abs(r.observed - r.predicted) > 1e-3 for r in t.removals)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_demo_removal_with_layernorm_frozen(demo32, mode) -> None:
    tokens = tokenize(demo32.model, DEMO_PROMPT)
    n = int(tokens.shape[0])
    t = trace_head(demo32, tokens, demo32.model.n_layers - 1, 0, n - 1, 3, mode=mode, check=4)
    for r in t.removals:
        assert abs(r.frozen - r.predicted) <= TOL * _size(t), r


def test_lumped_mode_has_a_remainder_per_side_and_exact_mode_none(tiny32) -> None:
    tokens = tokenize(tiny32.model, PROMPT)
    exact = trace_head(tiny32.engine, tokens, 2, 0, 8, 3, mode="exact")
    lumped = trace_head(tiny32.engine, tokens, 2, 0, 8, 3, mode="lumped")
    assert "rem[attn2[0].q@8]" in lumped.query.names
    assert "rem[attn2[0].k@3]" in lumped.key.names
    assert not any(n.startswith("rem[") for n in exact.query.names + exact.key.names)
    assert "bias[attn2[0].q]@8" in exact.query.names
    assert "bias[attn2[0].k]@3" in exact.key.names
    # Layer 2 reads two attention layers: the remainder holds their chained paths.
    rem = lumped.query.vectors[lumped.query.names.index("rem[attn2[0].q@8]")]
    assert float(rem.norm()) > 1e-4
    # Sources: everything below attention 2 (layer 1's MLP included), nothing of layer 2.
    assert any(n.startswith("mlp1") for n in exact.query.names)
    assert not any(n.startswith(("mlp2", "bias[attn2]", "bias[mlp2]")) for n in exact.query.names)
    # The key side sees no position after the key.
    assert all(int(n.rsplit("@", 1)[1].rstrip("]")) <= 3 for n in exact.key.names)


def test_a_layer_0_head_reads_only_embeddings_and_its_biases(tiny32) -> None:
    tokens = tokenize(tiny32.model, PROMPT)
    t = trace_head(tiny32.engine, tokens, 0, 1, 4, 2)
    assert t.query.names == ("embed0@4", "bias[attn0[1].q]@4")
    assert t.key.names == ("embed0@2", "bias[attn0[1].k]@2")
    assert t.trace.n_query == 2
    assert len(t.trace.pairs) == 4


@pytest.mark.parametrize(
    ("layer", "head", "query", "key", "top", "message"),
    [
        (3, 0, 5, 2, 10, "head attn3[0]: the model has layers 0..2"),
        (0, 4, 5, 2, 10, "head attn0[4]: the model has layers 0..2 and heads 0..3"),
        (-1, 0, 5, 2, 10, "head attn-1[0]"),
        (1, 0, 2, 5, 10, "positions query 2, key 5: expected 0 <= key <= query <= 11"),
        (1, 0, 12, 2, 10, "positions query 12, key 2"),
        (1, 0, 5, -1, 10, "positions query 5, key -1"),
        (1, 0, 5, 2, 0, "top 0: expected 1..1000"),
    ],
)
def test_bad_head_positions_and_top_are_refused(
    tiny32, layer, head, query, key, top, message
) -> None:
    tokens = tokenize(tiny32.model, PROMPT)
    with pytest.raises(InputError) as err:
        trace_head(tiny32.engine, tokens, layer, head, query, key, top=top)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_engine_is_unchanged_by_the_pull_back_split(tiny32) -> None:
    """Feature targets still read resid_mid: a graph's edges conserve each pre-activation."""
    from circuitstore.ingest.attribution import AttributionConfig
    from circuitstore.ingest.attribution.graph import Code

    graph = tiny32.engine.attribute(PROMPT, AttributionConfig(prune=None))
    incoming = torch.zeros(len(graph.nodes), dtype=torch.float64)
    incoming.index_add_(0, graph.edges.target, graph.edges.weight.double())
    feats = graph.nodes.kind == Code.FEATURE
    assert torch.allclose(incoming[feats], graph.nodes.value[feats].double(), atol=1e-4)


@pytest.mark.parametrize("family", FAMILIES)
def test_families_without_learned_positions_are_refused_in_one_line(
    family_model: Callable[[str], LoadedModel], family: str
) -> None:
    """Rotary positions (and Qwen3's QK-norm, Gemma-2's attention soft-cap): refused by the
    library entry point and by the selection `ingest --qk-top` runs, naming the family."""
    model = family_model(family)
    engine = AttributionEngine(model, published_style("clt", model.n_layers, model.d_model))
    tokens = tokenize(model, FAMILY_PROMPT)
    with pytest.raises(InputError) as err:
        trace_head(engine, tokens, 1, 0, 5, 2)
    message = str(err.value)
    assert f"QK tracing is not available for {model.family.label}" in message
    assert "rotary position embeddings make the score depend on the relative position" in message
    assert ("QK-norm is not linear" in message) == (family == "qwen3")
    assert "\n" not in message
    config = AttributionConfig(prune=None, logit_top_k=1)
    state = engine.prepare(FAMILY_PROMPT, config)
    with pytest.raises(InputError, match="QK tracing is not available"):
        edge_traces(state, engine.graph(state, config), 2)
    assert edge_traces(state, engine.graph(state, config), 0) == []


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_gpt2_traces_with_every_kind_of_transcoder(
    family_model: Callable[[str], LoadedModel], kind: str, mode: str
) -> None:
    """Skip connections and cross-layer decoders: the terms still sum to the model's score,
    and a removal in the frozen model (skip connections responding, a cross-layer feature
    leaving every layer it writes to) changes it by the trace's prediction."""
    model = family_model("gpt2")
    engine = AttributionEngine(model, published_style(kind, model.n_layers, model.d_model))
    tokens = tokenize(model, FAMILY_PROMPT)
    t = trace_head(engine, tokens, 2, 1, 9, 4, mode=mode, top=20, check=8)
    _check_sums(t)
    assert len(t.removals) == 8
    assert any(r.node.startswith(("mlp0", "mlp1")) for r in t.removals)
    for r in t.removals:
        assert abs(r.frozen - r.predicted) <= 1e-9 * _size(t), r


def test_a_trace_is_stored_and_shown_in_its_sets_family() -> None:
    """The engine names a trace's contributors in the per-layer spelling; a cross-layer set's
    store (and the `qk` command's record of it) spells every feature in them `clt`, the rest
    as it was, so the links reach the stored nodes."""
    from circuitstore.commands.qk import as_record
    from circuitstore.ingest.qk.decompose import RawTrace
    from circuitstore.ingest.qkstore.write import TracedEdge, TracedPrompt, trace_row
    from circuitstore.schema.names import CLT, TRANSCODER

    raw = RawTrace(
        *(2, 1, 5, 3, "lumped", 1.5, 1.5, 0.4, 9, 7),
        pairs=(("mlp1tc[4]@5", "embed0@3", 1.0), ("rem[attn2[1].q@5]", "mlp0tc[7]@3", 0.5)),
        query_side=(("mlp1tc[4]@5", 1.2), ("bias[attn2[1].q]@5", 0.3)),
        key_side=(("mlp0tc[7]@3", 0.9), ("rem[mlp0tc[7]@3]", 0.6)),
    )
    edge = TracedEdge("mlp0tc[7]@3", "mlp1tc[4]@5", 0.25)
    row = trace_row(TracedPrompt("s/p", "p", "s", CLT), raw, edge)
    props = row["props"]
    assert props["pairsQuery"] == ["clt1[4]@5", "rem[attn2[1].q@5]"]
    assert props["pairsKey"] == ["embed0@3", "clt0[7]@3"]
    assert props["queryNodes"] == ["clt1[4]@5", "bias[attn2[1].q]@5"]
    assert props["keyNodes"] == ["clt0[7]@3", "rem[clt0[7]@3]"]
    assert (props["source"], props["target"]) == ("clt0[7]@3", "clt1[4]@5")
    assert [x["node"] for x in row["key"]] == ["s/p/clt0[7]@3", "s/p/rem[clt0[7]@3]"]
    per_layer = trace_row(TracedPrompt("s/p", "p", "s"), raw, edge)
    assert per_layer["props"]["keyNodes"] == ["mlp0tc[7]@3", "rem[mlp0tc[7]@3]"]
    assert per_layer["id"] == row["id"]  # the same trace, whatever the spelling
    shown = as_record(raw, TracedPrompt("s/p", "p", "s", CLT), family=CLT)
    assert [t.query for t in shown.query_side] == props["queryNodes"]
    assert [t.key for t in shown.key_side] == props["keyNodes"]
    assert as_record(raw, TracedPrompt("s/p", "p", "s"), family=TRANSCODER).pairs[0].query == (
        "mlp1tc[4]@5"
    )
