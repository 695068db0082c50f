"""What every layout's reader and writer shares: the read options, the layer sequence, and the
conversions between our conventions and those of layouts without an input bias."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch import Tensor

from circuitstore.ingest.transcoder.types import INPUT_HOOKS, Transcoder
from circuitstore.schema.errors import TranscoderLoadError

T = TypeVar("T")

# circuit-tracer names hooks relative to `blocks.L.` (TransformerLens's names); ours are absolute
# (the inputs: `types.INPUT_HOOKS`). The MLP's output as TransformerLens names it (hook_mlp_out)
# and as circuit-tracer's MLP wrapper does (mlp.hook_out). On Gemma-2 they differ: hook_mlp_out
# comes after the post-MLP RMSNorm.
OUTPUT_HOOKS = ("hook_mlp_out", "mlp.hook_out")


@dataclass(frozen=True)
class ReadOptions:
    """How to read a set: the dtype to hold it in, and for Gemma Scope's layout which width and
    which L0 (one for every layer, or one per layer; None: the lowest present)."""

    dtype: torch.dtype = torch.float32
    l0: int | tuple[int, ...] | None = None
    width: str | None = None


def layer_sequence(found: Mapping[int, T], label: str, pattern: str) -> list[T]:
    """`found` (layer -> file) as a list for layers 0..n-1; `pattern` names a layer's file,
    with {} for the layer."""
    if not found:
        raise TranscoderLoadError(f"{label}: no {pattern.format('*')} files")
    for layer in range(max(found) + 1):
        if layer not in found:
            have = ", ".join(str(i) for i in sorted(found))
            raise TranscoderLoadError(
                f"{label}: no {pattern.format(layer)} for layer {layer} (found layers {have})"
            )
    return [found[layer] for layer in range(len(found))]


def ct_input_hook(tc: Transcoder) -> str:
    """The transcoder's input hook as circuit-tracer names it (relative to its block)."""
    for name, hook in INPUT_HOOKS.items():
        if tc.hook_point == hook(tc.layer):
            return name
    raise ValueError(
        f"layer {tc.layer} reads {tc.hook_point}, which circuit-tracer's configs cannot name"
    )


def output_hook(tc: Transcoder) -> str:
    """The MLP output hook the transcoder reconstructs, circuit-tracer's name (default
    hook_mlp_out)."""
    return str(tc.cfg.get("feature_output_hook", OUTPUT_HOOKS[0]))


def folded_b_enc(tc: Transcoder) -> Tensor:
    """The encoder bias of the same transcoder without an input bias: (x - b_dec) @ W_enc + b_enc
    = x @ W_enc + (b_enc - b_dec @ W_enc), for the layouts that have no b_dec on the input side."""
    return (tc.b_enc - tc.b_dec @ tc.W_enc).contiguous()


def one_kind(tcs: Sequence[Transcoder], what: str) -> str:
    """The activation kind all layers share (a file set states it once)."""
    kinds = {tc.activation.kind for tc in tcs}
    if len(kinds) != 1:
        raise ValueError(f"{what}: layers mix activations {sorted(kinds)}")
    return kinds.pop()
