"""Tiny random models (GPT-2, Llama, Qwen3, Gemma-2) and transcoders, saved in the real formats.

The tests and the benchmark cannot download GPT-2 or the published transcoders, so they build
stand-ins here and load them back through the same loaders users run on the real thing:
a ``save_pretrained`` folder (model plus a trained byte-level BPE tokenizer) that TransformerLens
boots offline, and transcoders in any of the layouts the loader reads (the published GPT-2 pickles,
safetensors, circuit-tracer's per-layer and cross-layer layouts, Gemma Scope's npz files).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from circuitstore.ingest.transcoder import layouts
from circuitstore.ingest.transcoder.types import INPUT_HOOKS, Activation, Transcoder, TranscoderSet

BOS = "<|endoftext|>"
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. When Mary and John went to the store, John gave "
    "a drink to Mary. Transcoders replace each MLP with a wide sparse layer whose features can be "
    "read. Attention moves information between positions; the residual stream carries it upward. "
    "In 1984 the cat sat on the mat, and 42 birds flew over 7 green hills near the river bank."
)


@dataclass(frozen=True)
class ModelSpec:
    """The sizes of a small random model built for tests (a key of `FAMILY_CONFIGS`)."""

    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    n_ctx: int = 64
    vocab_size: int = 320  # tokenizer size; the model's d_vocab is max(this, d_vocab)
    d_vocab: int = 0
    seed: int = 0
    family: str = "gpt2"
    n_kv_heads: int = 2  # grouped-query attention (not GPT-2)


def train_tokenizer(vocab_size: int):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer trained offline on a fixed paragraph (GPT-2's scheme, tiny)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    lines = [s.strip() + "." for s in _CORPUS.split(".") if s.strip()]
    bpe.train_from_iterator(
        lines * 20, vocab_size=vocab_size, min_frequency=1, special_tokens=[BOS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=BOS, eos_token=BOS, unk_token=BOS
    )


def _gpt2(spec: ModelSpec, tokenizer: Any) -> Any:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(
        GPT2Config(
            vocab_size=max(len(tokenizer), spec.d_vocab),
            n_positions=spec.n_ctx,
            n_embd=spec.d_model,
            n_layer=spec.n_layers,
            n_head=spec.n_heads,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def _rotary_kwargs(spec: ModelSpec, tokenizer: Any) -> dict[str, Any]:
    return {
        "vocab_size": max(len(tokenizer), spec.d_vocab),
        "hidden_size": spec.d_model,
        "intermediate_size": 2 * spec.d_model,
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "head_dim": spec.d_model // spec.n_heads,
        "max_position_embeddings": spec.n_ctx,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        # Gemma's config pads with id 0, our BOS: a padding row is initialised to zeros, and a
        # zero residual stream at BOS makes every norm there divide by sqrt(eps).
        "pad_token_id": None,
        "tie_word_embeddings": False,
    }


def _llama(spec: ModelSpec, tokenizer: Any) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    return LlamaForCausalLM(LlamaConfig(**_rotary_kwargs(spec, tokenizer)))


def _qwen3(spec: ModelSpec, tokenizer: Any) -> Any:
    from transformers import Qwen3Config, Qwen3ForCausalLM

    return Qwen3ForCausalLM(Qwen3Config(**_rotary_kwargs(spec, tokenizer)))


def _gemma2(spec: ModelSpec, tokenizer: Any) -> Any:
    from transformers import Gemma2Config, Gemma2ForCausalLM

    kwargs = _rotary_kwargs(spec, tokenizer) | {"tie_word_embeddings": True}
    cfg = Gemma2Config(
        **kwargs,
        query_pre_attn_scalar=spec.d_model // spec.n_heads,
        sliding_window=max(4, spec.n_ctx // 4),  # local layers see less than the context
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
    )
    return Gemma2ForCausalLM(cfg)


# HF model builders by family (`ingest.families`): tests and benchmarks make one of each.
FAMILY_CONFIGS: dict[str, Callable[[ModelSpec, Any], Any]] = {
    "gpt2": _gpt2,
    "llama": _llama,
    "qwen3": _qwen3,
    "gemma2": _gemma2,
}


def save_model(folder: Path, spec: ModelSpec) -> Path:
    """A random model of `spec.family` with non-trivial norm gains (and GPT-2's biases), so
    folding them matters, and attention far from uniform, saved with its tokenizer."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size)
    torch.manual_seed(spec.seed)
    model = FAMILY_CONFIGS[spec.family](spec, tokenizer)
    with torch.no_grad():
        for name, p in model.named_parameters():
            _randomise(name, p, spec.family)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _randomise(name: str, p: torch.Tensor, family: str) -> None:
    if ("ln" in name or "norm" in name) and name.endswith("weight"):
        centre = 0.0 if family == "gemma2" else 1.0  # Gemma's norms scale by 1 + weight
        p.copy_(centre + 0.3 * torch.randn_like(p))
    elif name.endswith("bias"):
        p.copy_(0.1 * torch.randn_like(p))
    elif "attn.c_attn.weight" in name or name.endswith(("q_proj.weight", "k_proj.weight")):
        p.mul_(8.0)  # sharper, uneven attention patterns


def random_transcoders(
    n_layers: int,
    d_model: int,
    d_tc: int,
    *,
    active_fraction: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    activation: str = "relu",
    k: int | None = None,
    skip: bool = False,
    cross_layer: bool = False,
    input_hook: str = "ln2.hook_normalized",
) -> TranscoderSet:
    """Unit-norm decoder rows, unit-norm encoder columns, and an encoder bias that lets about
    ``active_fraction`` of features fire on unit-variance inputs.

    `activation`: relu, jumprelu (thresholds in [0.5, 0.75], the encoder bias raised to match)
    or topk (`k` features per position, default ``active_fraction * d_tc``); `skip` adds a small
    W_skip; `cross_layer` gives each layer decoders into every later layer (a CLT);
    `input_hook` is circuit-tracer's name of what the transcoders read (ln2.hook_normalized or
    mlp.hook_in). With the defaults the draws are those of the plain per-layer sets."""
    gen = torch.Generator().manual_seed(seed)
    z = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - active_fraction)))
    hook = INPUT_HOOKS[input_hook]
    tcs = []
    for layer in range(n_layers):
        W_enc = torch.randn(d_model, d_tc, generator=gen)
        W_enc /= W_enc.norm(dim=0, keepdim=True)
        W_dec = torch.randn(d_tc, d_model, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        b_enc = -z + 0.1 * torch.randn(d_tc, generator=gen)
        b_dec = 0.1 * torch.randn(d_model, generator=gen)
        b_dec_out = 0.1 * torch.randn(d_model, generator=gen)
        parts = _family_parts(gen, layer, n_layers, d_model, d_tc, activation, skip, cross_layer)
        if parts["activation"].threshold is not None:
            b_enc = b_enc + parts["activation"].threshold
        if activation == "topk":
            parts["activation"] = Activation("topk", k=k or max(1, round(active_fraction * d_tc)))
        tc = Transcoder(
            layer=layer,
            hook_point=hook(layer),
            W_enc=W_enc,
            b_enc=b_enc,
            W_dec=W_dec,
            b_dec=b_dec,
            b_dec_out=b_dec_out,
            source=f"synthetic layer {layer}",
            cfg={"model_name": "synthetic", "hook_point": hook(layer)},
            log_feature_sparsity=torch.full(
                (d_tc,), float(torch.log10(torch.tensor(active_fraction)))
            ),
            **parts,
        )
        tcs.append(tc.to(dtype))
    return TranscoderSet(tuple(tcs), "synthetic", "synthetic")


def _family_parts(
    gen: torch.Generator,
    layer: int,
    n_layers: int,
    d_model: int,
    d_tc: int,
    activation: str,
    skip: bool,
    cross_layer: bool,
) -> dict[str, Any]:
    """The optional parts, drawn after the plain ones (so the defaults draw nothing here)."""
    threshold = 0.5 + 0.25 * torch.rand(d_tc, generator=gen) if activation == "jumprelu" else None
    parts: dict[str, Any] = {"activation": Activation(activation, threshold=threshold)}
    if skip:
        parts["W_skip"] = 0.1 * torch.randn(d_model, d_model, generator=gen) / d_model**0.5
    n_ahead = n_layers - 1 - layer
    if cross_layer and n_ahead:
        ahead = torch.randn(d_tc, n_ahead, d_model, generator=gen)
        parts["W_dec_ahead"] = 0.5 * ahead / ahead.norm(dim=2, keepdim=True)
    return parts


def save_transcoders(
    tcs: TranscoderSet, folder: Path, *, layout: str = "published", **options: Any
) -> list[Path]:
    """Write every layer in one of the layouts of `LAYOUTS` (published, safetensors,
    circuit-tracer, clt, gemma-scope; Gemma Scope's take `width` and `l0`), in the real files'
    formats."""
    return layouts.save_transcoders(tcs, folder, layout, **options)
