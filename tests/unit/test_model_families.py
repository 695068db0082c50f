"""Llama, Qwen3 and Gemma-2 (tiny, random, saved as transformers folders) through the engine, in
float64: every feature and logit node's incoming edges sum to its value, and the features'
activations equal a plain HF forward with the transcoders applied to the MLPs' real inputs."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine, AttributionGraph
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.model import LoadedModel, load_model
from circuitstore.ingest.synthetic import save_model
from circuitstore.schema.errors import TranscoderLoadError

from .families import FAMILIES, KINDS, PROMPT, published_style, spec

FULL = AttributionConfig(prune=None, logit_top_k=3)


@pytest.fixture(scope="module", params=FAMILIES)
def model(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    folder = save_model(tmp_path_factory.mktemp(request.param) / "model", spec(request.param))
    return load_model(folder, dtype=torch.float64)


def _incoming(graph: AttributionGraph) -> torch.Tensor:
    return torch.zeros(len(graph.nodes), dtype=torch.float64).index_add_(
        0, graph.edges.target, graph.edges.weight.double()
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_conservation(model: LoadedModel, kind: str, mode: str) -> None:
    engine = AttributionEngine(model, published_style(kind, model.n_layers, model.d_model))
    graph = engine.attribute(PROMPT, dataclasses.replace(FULL, mode=mode))
    nodes = graph.nodes
    targets = (nodes.kind == Code.FEATURE) | (nodes.kind == Code.LOGIT)
    assert int((nodes.kind == Code.FEATURE).sum()) > 50
    got, want = _incoming(graph)[targets], nodes.value[targets]
    worst = float(((got - want).abs() / want.abs().clamp_min(1e-3)).max())
    assert worst < 1e-8, f"{model.family.model_type} {kind} {mode}: relative error {worst:.2e}"


def _rms_in_float64(module: torch.nn.Module) -> None:
    """HF's RMSNorms compute in float32 whatever the input: the same formula in float64, so the
    comparison can be exact (Gemma's norms scale by 1 + weight)."""
    offset = 1.0 if type(module).__name__.startswith("Gemma") else 0.0
    eps = float(getattr(module, "eps", getattr(module, "variance_epsilon", 1e-6)))

    def forward(x: torch.Tensor) -> torch.Tensor:
        inv = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        return x * inv * (offset + module.weight)

    module.forward = forward  # type: ignore[method-assign]


def _softmax_in_input_dtype(monkeypatch: pytest.MonkeyPatch) -> None:
    """HF's eager attention (Gemma-2's, which the bridge runs too) takes its softmax in float32
    whatever the input."""
    softmax = torch.nn.functional.softmax

    def in_input_dtype(x: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        kwargs.pop("dtype", None)
        return softmax(x, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(torch.nn.functional, "softmax", in_input_dtype)


# The norm before each MLP, by HF model_type.
PRE_MLP_NORM = {
    "llama": "post_attention_layernorm",
    "qwen3": "post_attention_layernorm",
    "gemma2": "pre_feedforward_layernorm",
}


def _hf_inputs(folder: Path, tokens: torch.Tensor, n_layers: int) -> dict[str, list[torch.Tensor]]:
    """What each kind of transcoder reads, per layer, in a plain transformers forward (its norms
    and softmax computed in float64): the residual stream before the MLP's norm, that norm's
    output (the MLP's input) and the normalised residual without the gain."""
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float64)
    for module in hf.modules():
        if type(module).__name__.endswith("RMSNorm"):
            _rms_in_float64(module)
    embed = hf.model.embed_tokens
    if hasattr(embed, "embed_scale"):  # Gemma's sqrt(d_model), kept as a float32 number
        embed.embed_scale = torch.tensor(hf.config.hidden_size**0.5, dtype=torch.float64)
    resid: list[torch.Tensor] = []
    mlp_in: list[torch.Tensor] = []
    for layer in hf.model.layers[:n_layers]:
        norm = getattr(layer, PRE_MLP_NORM[hf.config.model_type])
        norm.register_forward_pre_hook(lambda _m, args: resid.append(args[0][0].detach()))
        layer.mlp.register_forward_pre_hook(lambda _m, args: mlp_in.append(args[0][0].detach()))
    with torch.no_grad():
        hf(tokens[None])
    eps = float(hf.config.rms_norm_eps)
    normalized = [x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) for x in resid]
    return {"hook_resid_mid": resid, "mlp.hook_in": mlp_in, "ln2.hook_normalized": normalized}


@pytest.mark.parametrize("kind", KINDS)
def test_activations_equal_hf_forward(
    model: LoadedModel, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _softmax_in_input_dtype(monkeypatch)  # in both forwards: the graph's and HF's
    tcs = published_style(kind, model.n_layers, model.d_model)
    graph = AttributionEngine(model, tcs).attribute(PROMPT, FULL)
    inputs = _hf_inputs(Path(model.name), torch.tensor(graph.token_ids), model.n_layers)
    nodes = graph.nodes
    for layer, tc in enumerate(tcs.transcoders):
        hook = tc.hook_point.split(".", 2)[2]
        want = tc.encode(inputs[hook][layer])  # the set's own convention, on HF's values
        mine = torch.zeros_like(want)
        sel = (nodes.kind == Code.FEATURE) & (nodes.layer == layer)
        mine[nodes.pos[sel], nodes.index[sel]] = nodes.activation[sel]
        assert int(sel.sum()) > 5
        worst = float((mine - want).abs().max() / want.abs().max())
        assert worst < 1e-12, f"layer {layer}: {worst:.1e} of the largest activation"


def test_transcoder_rewrite_is_exact() -> None:
    tc = published_style("mlp-in-skip", 2, 16).transcoders[1]
    gain, bias = 1 + torch.rand(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    n = torch.randn(5, 16, dtype=torch.float64)
    x = n * gain + bias
    rewritten = tc.reading_normalized(gain, bias)
    assert torch.allclose(rewritten.preactivation(n), tc.preactivation(x))
    assert tc.W_skip is not None
    assert rewritten.W_skip is not None
    want = tc.decode(tc.encode(x)) + x @ tc.W_skip
    got = rewritten.decode(rewritten.encode(n)) + n @ rewritten.W_skip
    assert torch.allclose(got, want)


@pytest.mark.parametrize("kind", ["mlp-in-skip", "clt"])
def test_bfloat16_weights_accumulate_in_float32(model: LoadedModel, kind: str) -> None:
    """Weights held in bfloat16 (the real model's forward runs in bfloat16 too), the engine in
    float32: conservation holds to bfloat16's precision, measured 1e-2 of the largest value at
    worst on these models (float32 weights: 1e-6)."""
    held = load_model(model.name, dtype=torch.float32, weights_dtype=torch.bfloat16)
    assert held.weights.W_U.dtype == torch.bfloat16
    assert held.weights.W_V.dtype == torch.float32
    tcs = published_style(kind, held.n_layers, held.d_model).to(torch.bfloat16)
    engine = AttributionEngine(held, tcs)
    assert engine.transcoders[0].W_enc.dtype == torch.bfloat16
    graph = engine.attribute(PROMPT, dataclasses.replace(FULL, mode="lumped"))
    nodes = graph.nodes
    targets = (nodes.kind == Code.FEATURE) | (nodes.kind == Code.LOGIT)
    got, want = _incoming(graph)[targets], nodes.value[targets].double()
    assert graph.edges.weight.dtype == torch.float32
    assert float((got - want).abs().max() / want.abs().max()) < 2e-2


def test_output_before_gemmas_post_norm_is_refused(model: LoadedModel) -> None:
    tcs = published_style("resid-skip", model.n_layers, model.d_model)
    before = dataclasses.replace(
        tcs,
        transcoders=tuple(
            dataclasses.replace(tc, cfg={**tc.cfg, "feature_output_hook": "mlp.hook_out"})
            for tc in tcs.transcoders
        ),
    )
    if not model.family.post_norms:  # Llama and Qwen3: the same point as hook_mlp_out
        AttributionEngine(model, before)
        return
    with pytest.raises(TranscoderLoadError) as info:
        AttributionEngine(model, before)
    assert "before Gemma-2's post-MLP norm" in str(info.value)
    assert "\n" not in str(info.value)


def test_a_cross_layer_graph_names_its_features_clt(model: LoadedModel) -> None:
    from circuitstore.ingest.attribution.export import graph_to_json, graph_to_table

    clt = AttributionEngine(model, published_style("clt", model.n_layers, model.d_model))
    graph = clt.attribute(PROMPT, dataclasses.replace(FULL, mode="lumped"))
    ids = [n["id"] for n in graph_to_json(graph)["nodes"] if n["type"] == "feature"]
    assert ids
    assert all(i.startswith("clt") for i in ids)
    assert "mlp1tc[" not in graph_to_table(graph)
    assert graph.metadata["feature_family"] == "clt"
    per_layer = AttributionEngine(
        model, published_style("resid-skip", model.n_layers, model.d_model)
    )
    nodes = graph_to_json(per_layer.attribute(PROMPT, FULL))["nodes"]
    assert all(n["id"].startswith("mlp") for n in nodes if n["type"] == "feature")
