"""The language model, loaded through TransformerLens 4 with HookedTransformer's processing.

``enable_compatibility_mode()`` folds each LayerNorm's gain and bias into the next matrices
(fold_ln), removes the d_model mean from every matrix that writes to the residual stream
(center_writing_weights) and from W_U (center_unembed), and folds b_V into b_O
(fold_value_biases). After it, ``lnX.hook_normalized`` is exactly centre(x)/scale and the hooks
reproduce a plain GPT-2 forward written with the processed weights, which is what the published
transcoders were trained on and what the attribution engine's linear algebra assumes. The engine
does not rely on the centring: it centres its own vectors, so the math also holds for b_V != 0.
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

from circuitstore.ingest.config import DtypeName
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
    "ln2.hook_scale",
    "ln2.hook_normalized",
    "hook_mlp_out",
)


def torch_dtype(name: DtypeName) -> torch.dtype:
    """The torch dtype of a config's dtype name (`ingest.config.DTYPES`)."""
    return {"float32": torch.float32, "float64": torch.float64}[name]


@dataclass(frozen=True)
class ModelWeights:
    """The processed weights the engine needs, in the engine's dtype."""

    W_E: Float[Tensor, "d_vocab d_model"]
    W_pos: Float[Tensor, "n_ctx d_model"]
    W_V: Float[Tensor, "n_layers n_heads d_model d_head"]
    W_O: Float[Tensor, "n_layers n_heads d_head d_model"]
    attn_bias: Float[Tensor, "n_layers d_model"]  # b_O plus b_V @ W_O (patterns sum to one)
    W_U: Float[Tensor, "d_model d_vocab"]
    b_U: Float[Tensor, " d_vocab"]  # noqa: N815 (the field's name)


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
    dtype: torch.dtype
    device: torch.device
    weights: ModelWeights
    weights_hash: str  # sha256 of every weight and the vocabulary (see `_fingerprint`)


@dataclass(frozen=True)
class ForwardCache:
    """What one prompt's real forward pass leaves for the local replacement model."""

    tokens: Int[Tensor, " pos"]
    str_tokens: tuple[str, ...]
    ln1_scale: Float[Tensor, "n_layers pos"]
    pattern: Float[Tensor, "n_layers n_heads pos pos"]
    ln2_scale: Float[Tensor, "n_layers pos"]
    ln2_normalized: Float[Tensor, "n_layers pos d_model"]
    mlp_out: Float[Tensor, "n_layers pos d_model"]
    final_scale: Float[Tensor, " pos"]
    logits: Float[Tensor, "pos d_vocab"]


def load_model(
    name_or_path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> LoadedModel:
    """Boot a HF model (hub name or a folder saved with ``save_pretrained`` plus its tokenizer)
    onto `device`. Raises ModelLoadError: it cannot be loaded, its weights hold NaN or infinity,
    or its normalisation is not LayerNorm."""
    device = torch.device(device)
    from transformer_lens.model_bridge import TransformerBridge

    try:
        # The bridge and HF print progress bars and advice; keep the CLI's output clean.
        with contextlib.redirect_stderr(io.StringIO()):
            logging.getLogger("transformers").setLevel(logging.ERROR)
            bridge = TransformerBridge.boot_transformers(
                str(name_or_path), device=str(device), dtype=dtype
            )
            bridge.enable_compatibility_mode(disable_warnings=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{name_or_path}: cannot load model ({type(exc).__name__}: {load_failure(exc)})"
        ) from None
    _copy_file_backed(bridge)
    named = list(bridge.state_dict().items())
    bad = first_degenerate(named)
    if bad is not None:
        raise ModelLoadError(f"{name_or_path}: weight {bad[0]} {bad[1]}")
    cfg = bridge.cfg
    if getattr(cfg, "normalization_type", "LN") not in ("LN", "LNPre"):
        raise ModelLoadError(
            f"{name_or_path}: normalization {cfg.normalization_type}, only LayerNorm is supported"
        )
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
        weights=_weights(bridge, dtype),
        weights_hash=_fingerprint(bridge, named),
    )


def _fingerprint(bridge: Any, named: list[tuple[str, Tensor]]) -> str:
    """A hash of every processed weight (in float32, so a float64 run is the same model) and of
    the tokenizer's vocabulary: the model's identity in the store."""
    as32 = [(n, t.float() if t.is_floating_point() else t) for n, t in named]
    vocab = sorted(bridge.tokenizer.get_vocab().items())
    return content_hash(weights_digest(as32), json.dumps(vocab), length=64)


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


def _weights(bridge: Any, dtype: torch.dtype) -> ModelWeights:
    with torch.no_grad():
        W_V, W_O = bridge.W_V.detach().to(dtype), bridge.W_O.detach().to(dtype)
        b_V, b_O = bridge.b_V.detach().to(dtype), bridge.b_O.detach().to(dtype)
        attn_bias = b_O + torch.einsum("lhe,lhed->ld", b_V, W_O)
        return ModelWeights(
            W_E=bridge.W_E.detach().to(dtype),
            W_pos=bridge.W_pos.detach().to(dtype),
            W_V=W_V,
            W_O=W_O,
            attn_bias=attn_bias,
            W_U=bridge.W_U.detach().to(dtype),
            b_U=bridge.b_U.detach().to(dtype),
        )


def tokenize(model: LoadedModel, prompt: str, *, truncate: bool = False) -> Int[Tensor, " pos"]:
    """Tokens with BOS at position 0, as in the transcoders' training."""
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
    """Every token of `prompt`, BOS first, however long."""
    if not prompt.strip():
        raise InputError("prompt is empty: give at least one token of text")
    return model.bridge.to_tokens(prompt, prepend_bos=True, truncate=False)[0]


def run_forward(model: LoadedModel, tokens: Int[Tensor, " pos"]) -> ForwardCache:
    """The real forward pass, keeping only the hooks the replacement model freezes or reads."""
    wanted = {f"blocks.{layer}.{h}" for layer in range(model.n_layers) for h in FORWARD_HOOKS}
    wanted.add("ln_final.hook_scale")
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
        ln1_scale=stack("ln1.hook_scale")[..., 0],
        pattern=stack("attn.hook_pattern"),
        ln2_scale=stack("ln2.hook_scale")[..., 0],
        ln2_normalized=stack("ln2.hook_normalized"),
        mlp_out=stack("hook_mlp_out"),
        final_scale=cache["ln_final.hook_scale"][0, :, 0].to(model.dtype),
        logits=logits[0].to(model.dtype),
    )
    _check_forward(model, out)
    return out


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
