"""Shared by the family tests: tiny Llama, Qwen3 and Gemma-2 specs, and in-memory transcoder sets
in the published sets' conventions (`published_style`)."""

from __future__ import annotations

import dataclasses

import torch

from circuitstore.ingest.synthetic import ModelSpec, random_transcoders
from circuitstore.ingest.transcoder.types import (
    Activation,
    TranscoderSet,
    expected_hook_point,
    mlp_input_hook,
    residual_input_hook,
)

FAMILIES = ("llama", "qwen3", "gemma2")
PROMPT = "When Mary and John went to the store, John gave a drink"


def spec(family: str) -> ModelSpec:
    """The tiny model of a family the family tests build."""
    return ModelSpec(n_layers=3, d_model=32, n_heads=4, n_ctx=64, family=family, seed=7)


# The published sets' conventions (see docs/models.md): what each reads, how it fires, its linear
# extras. Qwen3's read the MLP's input, Llama's and the CLTs the raw residual stream, Gemma Scope
# ln2's normalised output.
KINDS = {
    "mlp-in-skip": (mlp_input_hook, "jumprelu", "skip"),
    "resid-skip": (residual_input_hook, "jumprelu", "skip"),
    "normalized-topk": (expected_hook_point, "topk", None),
    "clt": (residual_input_hook, "jumprelu", "clt"),
}


def published_style(kind: str, n_layers: int, d_model: int, seed: int = 3) -> TranscoderSet:
    """A random float64 set of one of `KINDS`, 64 features a layer."""
    hook, activation, extra_kind = KINDS[kind]
    base = random_transcoders(n_layers, d_model, 64, active_fraction=0.3, seed=seed)
    gen = torch.Generator().manual_seed(seed + 1)
    out = []
    for tc in base.transcoders:
        n_ahead = n_layers - 1 - tc.layer
        act = (
            Activation("topk", k=6)
            if activation == "topk"
            else Activation("jumprelu", threshold=0.05 * torch.rand(64, generator=gen))
        )
        extra: dict[str, object] = {"hook_point": hook(tc.layer), "activation": act}
        if hook is residual_input_hook:  # the raw residual of HF's initialisation is ~0.05 wide
            extra["W_enc"] = 25.0 * tc.W_enc
        if extra_kind == "skip":
            extra["W_skip"] = 0.2 * torch.randn(d_model, d_model, generator=gen)
        if extra_kind == "clt" and n_ahead:
            extra["W_dec_ahead"] = 0.5 * torch.randn(64, n_ahead, d_model, generator=gen)
        out.append(dataclasses.replace(tc, **extra))  # type: ignore[arg-type]
    return TranscoderSet(tuple(out), kind, "synthetic").to(torch.float64)
