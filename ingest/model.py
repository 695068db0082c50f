"""The language model, loaded through TransformerLens 4's bridge: any family of
`ingest.families` (GPT-2, Llama, Qwen3, Gemma-2). Families other than GPT-2 keep HF's weights,
and `_weights` folds their norms' gains into the matrices the engine reads.

For GPT-2, ``enable_compatibility_mode()`` (HookedTransformer's processing) folds each
LayerNorm's gain and bias into the next matrices (fold_ln), removes the d_model mean from every
matrix that writes to the residual stream (center_writing_weights) and from W_U
(center_unembed), and folds b_V into b_O (fold_value_biases). After it,
``lnX.hook_normalized`` is exactly centre(x)/scale and the hooks reproduce a plain GPT-2 forward
written with the processed weights, which is what the published transcoders were trained on
and what the attribution engine's linear algebra assumes. The engine does not rely on the
centring: it centres its own vectors, so the math also holds for b_V != 0.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.config import WeightsDtypeName
from circuitstore.ingest.families import MODEL_FAMILIES, ModelFamily, family_of
from circuitstore.ingest.safeload import (
    first_degenerate,
    load_failure,
    magnitude_problem,
    weights_digest,
)
from circuitstore.schema.errors import InputError, ModelLoadError
from circuitstore.schema.model import content_hash

FORWARD_HOOKS = (
    "ln1.hook_scale",
    "attn.hook_pattern",
    "hook_resid_mid",
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "hook_mlp_out",
)
POST_NORM_HOOK = "ln1_post.hook_scale"  # Gemma-2's norm on the attention output


def torch_dtype(name: WeightsDtypeName) -> torch.dtype:
    """The torch dtype of a config's dtype name (`ingest.config.WEIGHTS_DTYPES`)."""
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}[name]


@dataclass(frozen=True)
class ModelWeights:
    """The processed weights the engine needs, in the engine's dtype."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_V: Float[Tensor, "n_layers n_heads d_model d_head"]  # one per query head (GQA expanded)
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"]  # times the post-attention gain
    attn_bias: Float[Tensor, "n_layers d_model"]  # b_O plus b_V @ W_O (patterns sum to one)
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, " d_vocab"]  # noqa: N815 (the field's name)
    # ln2's gain and bias as the model applies them, before processing folds them into the MLP:
    # what a transcoder reading the MLP's real input (`mlp.hook_in`) sees on top of ln2's output.
    mlp_in_gain: Float[Tensor, "n_layers d_model"]
    mlp_in_bias: Float[Tensor, "n_layers d_model"]


@dataclass(frozen=True)
class LoadedModel:
    """A loaded model with the sizes and weights the engine reads."""

    bridge: Any  # transformer_lens.model_bridge.TransformerBridge (untyped upstream)
    name: str
    n_layers: int
    d_model: int
    n_heads: int
    n_ctx: int
    d_vocab: int
    dtype: torch.dtype  # the engine's: every product accumulates in it
    device: torch.device
    weights: ModelWeights
    weights_hash: str  # sha256 of every weight and the vocabulary (see `_fingerprint`)
    family: ModelFamily
    weights_dtype: torch.dtype  # the bridge's, W_E's and W_U's (and the transcoders')
    softcap: float | None  # logits = softcap * tanh(raw / softcap); the engine attributes raw
    prepend_bos: bool

    @property
    def centred(self) -> bool:
        """Whether the model's norms remove the mean (LayerNorm) before scaling."""
        return self.family.centred

    def readin(self, x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
        """The norm's linear part before its frozen scale: LayerNorm's mean removal, or nothing
        (RMSNorm). Symmetric, so it is also its own transpose for gradients."""
        return x - x.mean(dim=-1, keepdim=True) if self.family.centred else x


@dataclass(frozen=True)
class ForwardCache:
    """What one prompt's real forward pass leaves for the local replacement model."""

    tokens: Int[Tensor, " pos"]
    str_tokens: tuple[str, ...]
    embed: Float[Tensor, "pos d_model"]  # the residual stream before block 0 (scale, positions)
    ln1_scale: Float[Tensor, "n_layers pos"]
    pattern: Float[Tensor, "n_layers n_heads pos pos"]
    resid_mid: Float[Tensor, "n_layers pos d_model"]
    ln2_scale: Float[Tensor, "n_layers pos"]
    ln2_normalized: Float[Tensor, "n_layers pos d_model"]
    mlp_out: Float[Tensor, "n_layers pos d_model"]
    final_scale: Float[Tensor, " pos"]
    logits: Float[Tensor, "pos d_vocab"]  # before any soft-cap: what the logit nodes hold
    attn_out_scale: Float[Tensor, "n_layers pos"] | None = None  # Gemma-2's post-attention norm


def load_model(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    weights_dtype: torch.dtype | None = None,
) -> LoadedModel:
    """Boot a HF model (hub name or a folder saved with ``save_pretrained`` plus its tokenizer)
    onto `device`. Raises ModelLoadError: it cannot be loaded, its weights hold NaN or infinity,
    or its architecture is not in `ingest.families`. The weights are held in `weights_dtype`
    (default: `dtype`); the few the engine multiplies often (W_V, W_O) in `dtype`."""
    device = torch.device(device)
    held = weights_dtype or dtype
    from transformer_lens.model_bridge import TransformerBridge

    try:
        # The bridge and HF print progress bars and advice; keep the CLI's output clean.
        with contextlib.redirect_stderr(io.StringIO()):
            logging.getLogger("transformers").setLevel(logging.ERROR)
            bridge = TransformerBridge.boot_transformers(
                str(name_or_path), device=str(device), dtype=held
            )
            family = _family(bridge, name_or_path)
            mlp_in = _mlp_input_norm(bridge, family, dtype)
            if family.processed:
                bridge.enable_compatibility_mode(disable_warnings=True)
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(
            f"{name_or_path}: cannot load model ({type(exc).__name__}: {load_failure(exc)})"
        ) from None
    if dtype == torch.float64:
        _norms_in_run_dtype(bridge)
    _copy_file_backed(bridge)
    named = list(bridge.state_dict().items())
    bad = first_degenerate(named)
    if bad is not None:
        raise ModelLoadError(f"{name_or_path}: weight {bad[0]} {bad[1]}")
    cfg = bridge.cfg
    cap = float(getattr(cfg, "output_logits_soft_cap", -1.0) or -1.0)
    return LoadedModel(
        bridge=bridge,
        name=str(name_or_path),
        n_layers=int(cfg.n_layers),
        d_model=int(cfg.d_model),
        n_heads=int(cfg.n_heads),
        n_ctx=int(cfg.n_ctx),
        d_vocab=int(cfg.d_vocab),
        dtype=dtype,
        device=device,
        weights=_weights(bridge, family, dtype, held, mlp_in),
        weights_hash=_fingerprint(bridge, named),
        family=family,
        weights_dtype=held,
        softcap=cap if cap > 0 else None,
        prepend_bos=bool(getattr(cfg, "default_prepend_bos", True)),
    )


def _norms_in_run_dtype(bridge: Any) -> None:
    """Compute every norm in float64 when the run is float64: HF's RMSNorm computes in float32
    whatever the input, which leaves the real forward 1e-8 off its own hooks and the graph's
    conservation near 1e-3 on a tiny random Llama. The bridge's own norm is the same formula
    in the input's dtype (float32 runs keep HF's forward, bit for bit)."""
    from transformer_lens.model_bridge.generalized_components.normalization import (
        NormalizationBridge,
    )

    for module in bridge.modules():
        if isinstance(module, NormalizationBridge):
            module.use_native_layernorm_autograd = False


def _family(bridge: Any, name: str | Path) -> ModelFamily:
    model_type = str(getattr(bridge.original_model.config, "model_type", ""))
    family = family_of(model_type)
    if family is None:
        known = ", ".join(MODEL_FAMILIES)
        raise ModelLoadError(f"{name}: architecture {model_type!r} is not supported ({known})")
    return family


def _norm_params(norm: Any, family: ModelFamily, d_model: int, dtype: torch.dtype) -> Tensor:
    """A norm's applied gain and bias, stacked (2, d_model): the family's offset added to the
    stored weight, zeros where the norm has no bias."""
    module = norm._original_component
    gain = module.weight.detach().to(dtype) + family.gain_offset
    bias = getattr(module, "bias", None)
    bias = torch.zeros(d_model, dtype=dtype) if bias is None else bias.detach().to(dtype)
    return torch.stack([gain, bias.to(gain.device)])


def _mlp_input_norm(bridge: Any, family: ModelFamily, dtype: torch.dtype) -> Tensor:
    """ln2's gain and bias of every layer (n_layers, 2, d_model), read before processing folds
    them into the MLP's input weights."""
    d = int(bridge.cfg.d_model)
    return torch.stack([_norm_params(b.ln2, family, d, dtype) for b in bridge.blocks])


def _fingerprint(bridge: Any, named: list[tuple[str, Tensor]]) -> str:
    """A hash of every processed weight (in float32, so a float64 run is the same model) and of
    the tokenizer's vocabulary: the model's identity in the store."""
    vocab = sorted(bridge.tokenizer.get_vocab().items())
    digest = weights_digest(named, as_dtype=torch.float32)  # a tensor at a time: no full copy
    return content_hash(digest, json.dumps(vocab), length=64)


def _file_ranges() -> list[tuple[int, int]]:
    """Address ranges of memory-mapped files (Linux; empty elsewhere)."""
    ranges = []
    try:
        with open("/proc/self/maps") as maps:
            for line in maps:
                fields = line.split()
                if len(fields) >= 6 and fields[5].startswith("/"):
                    lo, hi = fields[0].split("-")
                    ranges.append((int(lo, 16), int(hi, 16)))
    except OSError:
        return []
    return ranges


def _copy_file_backed(module: torch.nn.Module) -> None:
    """Give tensors still backed by the memory-mapped checkpoint their own memory.

    The loader maps the whole safetensors file; a few weights the processing leaves untouched
    keep the mapping alive, and with it every page of the file read while loading (about the
    model's size in RSS). Copying those few lets the mapping go."""
    ranges = _file_ranges()
    if not ranges:
        return
    copies: dict[int, torch.UntypedStorage] = {}
    with torch.no_grad():
        for sub in module.modules():
            for table in (sub._parameters, sub._buffers):
                for tensor in table.values():
                    if tensor is None:
                        continue
                    storage = tensor.untyped_storage()
                    ptr = storage.data_ptr()
                    if not any(lo <= ptr < hi for lo, hi in ranges):
                        continue
                    if ptr not in copies:
                        copies[ptr] = storage.clone()
                    tensor.data = torch.empty(0, dtype=tensor.dtype).set_(
                        copies[ptr], tensor.storage_offset(), tensor.size(), tensor.stride()
                    )
    gc.collect()
    _trim_heap()


def _trim_heap() -> None:
    """Hand the loader's freed heap back to the OS (glibc only; a no-op elsewhere)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _param(bridge: Any, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
    """A stacked weight, or zeros where the checkpoint has none (bias-free projections)."""
    try:
        return getattr(bridge, name).detach().to(dtype)
    except AttributeError:
        return torch.zeros(shape, dtype=dtype)


def _weights(
    bridge: Any, family: ModelFamily, dtype: torch.dtype, held: torch.dtype, mlp_in: Tensor
) -> ModelWeights:
    """The engine's weights: W_V, W_O and the biases in `dtype`; W_E and W_U, the big ones
    (256,000 x 2,304 each for Gemma-2), in `held`: their readers widen the rows they pick."""
    cfg = bridge.cfg
    L, H, d = int(cfg.n_layers), int(cfg.n_heads), int(cfg.d_model)
    with torch.no_grad():
        W_O = bridge.W_O.detach().to(dtype)
        W_V = bridge.W_V.detach().to(dtype)
        W_U = bridge.W_U.detach().to(held)
        if not family.processed:  # fold ln1's gain into W_V and ln_final's into W_U ourselves
            ln1 = torch.stack([_norm_params(b.ln1, family, d, dtype)[0] for b in bridge.blocks])
            W_V = W_V * ln1[:, None, :, None]
            W_U = W_U * _norm_params(bridge.ln_final, family, d, dtype)[0].to(held)[:, None]
        dh = int(W_V.shape[-1])
        b_V = _param(bridge, "b_V", (L, W_V.shape[1], dh), dtype)
        # Grouped-query attention: query head h reads key/value head h // (H / n_kv).
        W_V = W_V.repeat_interleave(H // W_V.shape[1], dim=1)
        b_V = b_V.repeat_interleave(H // b_V.shape[1], dim=1)
        b_O = _param(bridge, "b_O", (L, d), dtype)
        attn_bias = b_O + torch.einsum("lhe,lhed->ld", b_V, W_O)
        if family.post_norms:  # the post-attention norm's gain, per layer; its scale stays frozen
            post = torch.stack(
                [_norm_params(b.ln1_post, family, d, dtype)[0] for b in bridge.blocks]
            )
            W_O = W_O * post[:, None, None, :]
            attn_bias = attn_bias * post
        return ModelWeights(
            W_E=bridge.W_E.detach().to(held),
            W_V=W_V,
            W_O=W_O,
            attn_bias=attn_bias,
            W_U=W_U,
            b_U=_param(bridge, "b_U", (W_U.shape[1],), dtype),
            mlp_in_gain=mlp_in[:, 0].to(dtype),
            mlp_in_bias=mlp_in[:, 1].to(dtype),
        )


def tokenize(model: LoadedModel, prompt: str, *, truncate: bool = False) -> Int[Tensor, " pos"]:
    """Tokens with BOS at position 0 where the model's family prepends one (GPT-2, Llama,
    Gemma-2; not Qwen3), as in the transcoders' training."""
    tokens = all_tokens(model, prompt)
    if tokens.shape[0] > model.n_ctx:
        if not truncate:
            raise InputError(
                f"prompt is {tokens.shape[0]} tokens with BOS; the model allows 1..{model.n_ctx} "
                "(pass --truncate to cut it)"
            )
        tokens = tokens[: model.n_ctx]
    return tokens


def all_tokens(model: LoadedModel, prompt: str) -> Int[Tensor, " pos"]:
    """Every token of `prompt` (BOS first where the model prepends one), however long."""
    if not prompt.strip():
        raise InputError("prompt is empty: give at least one token of text")
    return model.bridge.to_tokens(prompt, prepend_bos=model.prepend_bos, truncate=False)[0]


def run_forward(model: LoadedModel, tokens: Int[Tensor, " pos"]) -> ForwardCache:
    """The real forward pass, keeping only the hooks the replacement model freezes or reads."""
    hooks = FORWARD_HOOKS + ((POST_NORM_HOOK,) if model.family.post_norms else ())
    wanted = {f"blocks.{layer}.{h}" for layer in range(model.n_layers) for h in hooks}
    wanted |= {"ln_final.hook_scale", "blocks.0.hook_resid_pre", "unembed.hook_out"}
    with torch.no_grad():
        logits, cache = model.bridge.run_with_cache(
            tokens[None].to(model.device), names_filter=lambda n: n in wanted
        )

    def stack(hook: str) -> Tensor:
        return torch.stack(
            [cache[f"blocks.{layer}.{hook}"][0] for layer in range(model.n_layers)]
        ).to(model.dtype)

    out = ForwardCache(
        tokens=tokens.to(model.device),
        str_tokens=tuple(model.bridge.to_str_tokens(tokens)),
        embed=cache["blocks.0.hook_resid_pre"][0].to(model.dtype),
        ln1_scale=stack("ln1.hook_scale")[..., 0],
        pattern=stack("attn.hook_pattern"),
        resid_mid=stack("hook_resid_mid"),
        ln2_scale=stack("ln2.hook_scale")[..., 0],
        ln2_normalized=stack("ln2.hook_normalized"),
        mlp_out=stack("hook_mlp_out"),
        final_scale=cache["ln_final.hook_scale"][0, :, 0].to(model.dtype),
        # The unembedding's output, before a soft-cap (the same as the logits without one).
        logits=cache["unembed.hook_out"][0].to(model.dtype),
        attn_out_scale=stack(POST_NORM_HOOK)[..., 0] if model.family.post_norms else None,
    )
    del logits
    _check_forward(model, out)
    return out


def transcoder_input(
    cache: ForwardCache, layer: int, *, residual: bool
) -> Float[Tensor, "pos d_model"]:
    """What a (paired) transcoder of `layer` reads: ln2's normalised output, or the raw residual
    stream before the MLP."""
    return cache.resid_mid[layer] if residual else cache.ln2_normalized[layer]


def _check_forward(model: LoadedModel, cache: ForwardCache) -> None:
    """Refuse a forward pass whose values float32 attribution cannot use, naming the first
    place it goes wrong: weights that are finite but huge overflow here, not at load."""
    for layer in range(model.n_layers):
        for what, values in (
            ("the residual stream's scale before attention", cache.ln1_scale[layer]),
            ("the residual stream's scale before the MLP", cache.ln2_scale[layer]),
            ("the MLP output", cache.mlp_out[layer]),
        ):
            problem = magnitude_problem(values)
            if problem is not None:
                raise ModelLoadError(
                    f"{model.name}: {what} of layer {layer} {problem} on this prompt; the "
                    f"weights of blocks.{layer} are degenerate"
                )
    problem = magnitude_problem(cache.logits)
    if problem is not None:
        raise ModelLoadError(f"{model.name}: the logits {problem} on this prompt")
