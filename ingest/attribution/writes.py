"""Where each source node adds its vector to the residual stream, as the engine's slabs hold it.

The residual stream is written at numbered points: 0 the embedding (before block 0), 2b + 1
the attention output of block b, 2b + 2 its MLP output. A source node writes at one point (an
embedding, a bias, an error term, a per-layer feature), or at several: a cross-layer
transcoder's feature writes into the MLP output of its own layer and of each later layer it
decodes to, a different vector at each. Whatever reads the residual stream sees the writes at
the points before it: attention k reads `resid_pre` k (points < 2k + 1), a skip connection and
a feature of layer k read `resid_mid` k (points < 2k + 2), the logits every point.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.layout import BiasKind
from circuitstore.ingest.attribution.slabs import Slab
from circuitstore.ingest.attribution.state import PromptState

EMBEDDING_POINT = 0


def attn_point(layer: int) -> int:
    """The point where block `layer`'s attention output (and its bias) enters the stream."""
    return 2 * layer + 1


def mlp_point(layer: int) -> int:
    """The point where block `layer`'s MLP output (features, error, b_dec_out) enters."""
    return 2 * layer + 2


def point_hook(point: int) -> str:
    """The model's hook at a write point: the first residual stream, an attention output or an
    MLP output (Gemma-2's both after their post-norms, as the engine reads them)."""
    if point == EMBEDDING_POINT:
        return "blocks.0.hook_resid_pre"
    block, is_mlp = divmod(point - 1, 2)
    return f"blocks.{block}.hook_{'mlp' if is_mlp else 'attn'}_out"


@dataclass(frozen=True)
class Writes:
    """The writes of some source rows, grouped by row: write w belongs to row `of[w]` (an index
    into the rows asked for) and adds `vectors[w]` at `point[w]`, at the row's position."""

    of: Int[Tensor, " w"]
    point: Int[Tensor, " w"]
    vectors: Float[Tensor, "w d_model"]
    found: Bool[Tensor, " n"]  # per row asked for: whether it writes at all

    @property
    def pre_from(self) -> Int[Tensor, " w"]:
        """The first attention layer that reads each write (its `resid_pre`)."""
        return (self.point + 1) // 2

    @property
    def mid_from(self) -> Int[Tensor, " w"]:
        """The first `resid_mid` that holds each write: the first skip connection and feature
        layer that read it."""
        return self.point // 2


def source_writes(state: PromptState, rows: Int[Tensor, " n"]) -> Writes:
    """The writes of node-table rows `rows` (distinct); rows that write nothing (a target's own
    constant, a remainder, a logit) have none and `found` False."""
    n = len(state.nodes)
    asked = torch.full((n,), -1, dtype=torch.long)
    asked[rows] = torch.arange(rows.shape[0])
    # Without a skip connection a layer's slab also holds its attention bias (one product for
    # both): that bias is taken from its own slab, at the attention's point.
    is_attn_bias = (state.nodes.kind == Code.BIAS) & (state.nodes.index == BiasKind.ATTN)
    found: list[tuple[Tensor, Tensor, Tensor]] = []
    slabs: list[tuple[Slab, int, bool]] = [(state.embed_slab, EMBEDDING_POINT, False)]
    for layer in range(state.model.n_layers):
        slabs.append((state.attn_bias_slabs[layer], attn_point(layer), False))
        slabs.append((state.layer_slabs[layer], mlp_point(layer), True))
    for whole, point, mlp in slabs:
        for part in whole.parts():
            real = (part.idx >= 0).nonzero(as_tuple=True)[0]
            idx = part.idx[real]
            hit = asked[idx] >= 0
            if mlp:
                hit &= ~is_attn_bias[idx]
            at = real[hit]
            found.append((asked[part.idx[at]], torch.full_like(at, point), part.vectors[at]))
    of = torch.cat([f[0] for f in found])
    order = torch.argsort(of, stable=True)
    has = torch.zeros(rows.shape[0], dtype=torch.bool)
    has[of] = True
    return Writes(
        of[order],
        torch.cat([f[1] for f in found])[order],
        torch.cat([f[2] for f in found])[order],
        has,
    )
