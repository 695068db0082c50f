"""The attribution engine: direct effects in the local replacement model, streamed per target chunk.

With attention patterns and LayerNorm scales frozen and every MLP replaced by its transcoder's
features plus an error term, the residual stream is linear in the sources (embeddings, feature
decoder outputs, errors, biases). A target (feature pre-activation or logit) is u . resid + c with
u = centre(w) / scale, so its edges are u pulled back to every earlier residual position,
dotted with each source vector. The pull-back runs for a whole chunk of targets at once:

- exact mode: through every attention layer (all paths; cost ~ T * d_model^2 per target and layer);
- lumped mode: only paths with at most one attention layer, which need a single d_model^2
  product per target and layer; the rest of each target's input (paths through two or more
  attention layers) becomes one remainder node per target, so conservation still holds.

Targets are emitted from the logits down to layer 0, so every target's consumers have been seen
before it is: sinks can compute influence in the same single pass.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.graph import EdgeChunk
from circuitstore.ingest.attribution.state import PromptState, Slab, Targets


@dataclass(frozen=True)
class ChunkPlan:
    """How many residual-stream floats one chunk's gradient may hold (memory vs. batching)."""

    max_elements: int = 1 << 24


def iter_chunks(state: PromptState, plan: ChunkPlan | None = None) -> Iterator[EdgeChunk]:
    """Every target's incoming edges, logits first, then layers from the top down."""
    plan = plan or ChunkPlan()
    for targets in reversed(state.targets):
        n, start = int(targets.nodes.shape[0]), 0
        while start < n:
            stop = _chunk_stop(targets.pos, start, plan.max_elements // state.model.d_model)
            yield _chunk(state, targets, slice(start, stop))
            start = stop


def _chunk_stop(pos: Int[Tensor, " k"], start: int, budget: int) -> int:
    """Targets are sorted by position and a chunk only needs positions up to its last target's,
    so early positions get bigger chunks: grow while chunk size x width fits the budget."""
    n, size = int(pos.shape[0]), 8
    for _ in range(8):
        width = int(pos[min(n, start + size) - 1]) + 1
        grown = max(8, budget // width)
        if grown <= size:
            break
        size = grown
    width = int(pos[min(n, start + size) - 1]) + 1
    return min(n, start + min(size, max(8, budget // width)))


def _chunk(state: PromptState, targets: Targets, rows: slice) -> EdgeChunk:
    pos, u = targets.pos[rows], targets.vectors[rows]
    nodes = targets.nodes[rows]
    field = _Field(state, pos, u)
    slabs: list[Slab] = []
    L = state.model.n_layers
    if targets.layer < L:  # a feature reads resid_mid: its own layer's attention comes first
        slabs.append(state.attn_bias_slabs[targets.layer])
    for layer in reversed(range(targets.layer)):
        slabs += [state.layer_slabs[layer], state.attn_bias_slabs[layer]]
    slabs.append(state.embed_slab)
    width = field.width
    sizes = [width * slab.idx.shape[1] for slab in slabs]
    # Source-major storage: each slab's product lands contiguously, no gather or concat.
    dense_t = torch.empty(sum(sizes), nodes.shape[0], dtype=u.dtype)
    offset, k = 0, 0
    if targets.layer < L:
        _dot_into(slabs[0], field.grad_t(), dense_t[: sizes[0]])
        field.through_attention(targets.layer)
        offset, k = sizes[0], 1
    for layer in reversed(range(targets.layer)):
        grad_t = field.grad_t()
        for slab in slabs[k : k + 2]:
            _dot_into(slab, grad_t, dense_t[offset : offset + sizes[k]])
            offset += sizes[k]
            k += 1
        field.through_attention(layer)
    _dot_into(slabs[-1], field.grad_t(), dense_t[offset:])
    sources = torch.cat([slab.idx[:width].reshape(-1) for slab in slabs])
    dense = dense_t.T
    const = targets.const[rows]
    extra_src, extra_tgt, extra_w = [targets.const_nodes[rows]], [nodes], [const]
    if state.mode == "lumped":
        remainder = state.nodes.value[nodes] - dense_t.sum(dim=0) - const
        extra_src.append(_remainder_rows(state, nodes))
        extra_tgt.append(nodes)
        extra_w.append(remainder)
    return EdgeChunk(
        targets=nodes,
        target_pos=pos,
        sources=sources,
        source_pos=state.nodes.pos[sources.clamp_min(0)],
        dense=dense,
        extra_source=torch.cat(extra_src),
        extra_target=torch.cat(extra_tgt),
        extra_weight=torch.cat(extra_w),
    )


def _remainder_rows(state: PromptState, nodes: Int[Tensor, " b"]) -> Int[Tensor, " b"]:
    n_logits = int(state.targets[-1].nodes.shape[0])
    logit_base = state.remainder_base - n_logits
    rank = torch.where(nodes < state.n_features, nodes, nodes - logit_base + state.n_features)
    return state.remainder_base + rank


def _dot_into(
    slab: Slab, grad_t: Float[Tensor, "pos d_model b"], out: Float[Tensor, "k b"]
) -> None:
    """out[s * n + j, b] = slab vector j at position s . gradient of target b at s."""
    width = grad_t.shape[0]
    vectors = slab.vectors[:width]
    torch.bmm(vectors, grad_t, out=out.view(width, vectors.shape[1], -1))


class _Field:
    """The chunk's targets pulled back to the current residual-stream layer, stored (b, pos, d).

    Starts as each target's own vector at its position. Exact mode sends the whole field through
    each attention layer; lumped mode sends only the targets' own vectors (one attention step)
    and accumulates, so paths through two or more attention layers are left out."""

    def __init__(
        self, state: PromptState, pos: Int[Tensor, " b"], u: Float[Tensor, "b d_model"]
    ) -> None:
        self.state, self.pos, self.u = state, pos, u
        self.width, b = int(pos.max()) + 1, int(pos.shape[0])
        self.field = torch.zeros(b, self.width, u.shape[1], dtype=u.dtype)
        self.field[torch.arange(b), pos] = u

    def grad_t(self) -> Float[Tensor, "pos d_model b"]:
        """A strided view BLAS reads directly (no copy)."""
        return self.field.permute(1, 2, 0)

    def through_attention(self, layer: int) -> None:
        if self.state.mode == "exact":
            _attention_backward(self.state, layer, self.field)
        else:
            _one_step(self.state, layer, self.pos, self.u, self.field)


def _attention_backward(
    state: PromptState, layer: int, field: Float[Tensor, "b pos d_model"]
) -> None:
    """field += field pulled back through frozen attention (resid_mid -> resid_pre)."""
    op = state.attention[layer]
    b, width, d = field.shape
    H = state.model.n_heads
    dh = op.W_O_t.shape[1] // H
    x = (field.reshape(b * width, d) @ op.W_O_t).view(b, width, H, dh)
    pattern = op.pattern_scaled[:, :width, :width]  # (H, t, s), columns divided by ln1's scale
    y = torch.einsum("hts,bthe->bshe", pattern, x).reshape(b * width, H * dh)
    field.view(b * width, d).addmm_(y, op.W_V_centred_t)


def _one_step(
    state: PromptState,
    layer: int,
    pos: Int[Tensor, " b"],
    u: Float[Tensor, "b d_model"],
    field: Tensor,
) -> None:
    """field += the targets' own vectors through one attention layer: per head one d_model
    vector (centred W_V W_O^T u), spread over positions by the frozen pattern row / ln1 scale."""
    op = state.attention[layer]
    H = state.model.n_heads
    width = field.shape[1]
    ov = (u @ op.W_O_t).view(u.shape[0], H, -1)  # (b, H, dh)
    back = torch.einsum("bhe,hed->bhd", ov, op.W_V_centred_heads)  # (b, H, d)
    rows = op.pattern_scaled[:, pos, :width].permute(1, 2, 0)  # (b, s, H)
    field.baddbmm_(rows, back)
