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

from collections.abc import Callable, Iterator
from dataclasses import replace

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.graph import EdgeChunk
from circuitstore.ingest.attribution.slabs import Slab
from circuitstore.ingest.attribution.state import PromptState, Targets
from circuitstore.ingest.config import ChunkPlan

# Which of one layer's targets to compute (their influence is final when the layer starts).
TargetFilter = Callable[[Targets], Bool[Tensor, " k"]]


# Exact mode pulls a chunk's field back through attention in slices of this many floats.
BACKWARD_ELEMENTS = 1 << 21


class Workspace:
    """Buffers reused from chunk to chunk: fresh multi-megabyte tensors cost a page fault per
    4 KiB every time, more than the arithmetic that fills them on a busy machine."""

    def __init__(self) -> None:
        self._buffers: dict[str, Tensor] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype: torch.dtype) -> Tensor:
        """A reused buffer of `shape` and `dtype` (grown when too small): its contents are stale."""
        n = 1
        for size in shape:
            n *= size
        buf = self._buffers.get(name)
        if buf is None or buf.dtype != dtype or buf.numel() < n:
            buf = torch.empty(n, dtype=dtype)
            self._buffers[name] = buf
        return buf[:n].view(shape)


def iter_chunks(
    state: PromptState, plan: ChunkPlan | None = None, select: TargetFilter | None = None
) -> Iterator[EdgeChunk]:
    """Every target's incoming edges, logits first, then layers from the top down.

    `select` may leave targets out (e.g. pruning skips targets without influence). A chunk's
    `dense` block lives in a reused buffer: it is valid until the next chunk is requested, so
    sinks copy what they keep."""
    plan = plan or ChunkPlan()
    budget = (plan.max_elements or default_chunk_elements(state)) // state.model.d_model
    work = Workspace()
    for targets in reversed(state.targets):
        if select is not None:
            keep = select(targets).nonzero(as_tuple=True)[0]
            if keep.shape[0] < targets.nodes.shape[0]:
                targets = _subset(targets, keep)
        u = targets.vectors()
        # Positions are read on the host: on a GPU each read of a device tensor is a wait.
        pos = targets.pos.cpu()
        n, start = int(pos.shape[0]), 0
        while start < n:
            stop = _chunk_stop(pos, start, budget)
            width = int(pos[stop - 1]) + 1  # targets are sorted by position
            yield _chunk(state, targets, slice(start, stop), work, u[start:stop], width)
            start = stop


def default_chunk_elements(state: PromptState) -> int:
    """Floats of one chunk's gradient field: cache-sized on a CPU (bigger chunks are no faster
    there and take more memory); on a GPU few, large kernels: 2^27 ran a 64-token GPT-2-scale
    lumped graph 3.4x faster than 2^23 on an H200 (see the README)."""
    return 1 << 27 if state.cache.tokens.device.type == "cuda" else 1 << 23


def _subset(targets: Targets, rows: Int[Tensor, " k"]) -> Targets:
    return replace(
        targets,
        nodes=targets.nodes[rows],
        pos=targets.pos[rows],
        columns=targets.columns[rows],
        scale=targets.scale[rows],
        const=targets.const[rows],
        const_nodes=targets.const_nodes[rows],
    )


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


def _chunk(
    state: PromptState,
    targets: Targets,
    rows: slice,
    work: Workspace | None = None,
    u: Float[Tensor, "b d_model"] | None = None,
    width: int | None = None,
) -> EdgeChunk:
    work = work or Workspace()
    pos = targets.pos[rows]
    u = targets.vectors(rows) if u is None else u
    nodes = targets.nodes[rows]
    # A feature reads resid_mid: its own layer's attention comes first.
    own = targets.layer < state.model.n_layers
    dense_t, sources = pull_back(
        state, targets.layer, pos, u, own_attention=own, work=work, width=width
    )
    const = targets.const[rows]
    extra_src, extra_tgt, extra_w = [targets.const_nodes[rows]], [nodes], [const]
    if state.mode == "lumped":
        total = (dense_t.new_ones(dense_t.shape[0]) @ dense_t).to(torch.float64)
        remainder = state.nodes.value[nodes].to(torch.float64) - total - const.to(torch.float64)
        extra_src.append(state.layout.remainder(nodes))
        extra_tgt.append(nodes)
        extra_w.append(remainder.to(u.dtype))
    return EdgeChunk(
        targets=nodes,
        target_pos=pos,
        sources=sources,
        source_pos=state.nodes.pos[sources],
        dense=dense_t.T,
        extra_source=torch.cat(extra_src),
        extra_target=torch.cat(extra_tgt),
        extra_weight=torch.cat(extra_w),
    )


def pull_back(
    state: PromptState,
    layer: int,
    pos: Int[Tensor, " b"],
    u: Float[Tensor, "b d_model"],
    *,
    own_attention: bool,
    work: Workspace | None = None,
    width: int | None = None,
) -> tuple[Float[Tensor, "s b"], Int[Tensor, " s"]]:
    """Readouts u (one per row, each at its position) of layer `layer`'s residual input, pulled
    back to every source below it, as the mode says: (source-major products, source node rows;
    -1 is padding). The input is resid_mid (`own_attention`: the layer's own attention bias and
    attention come first) or resid_pre (the queries and keys of its heads, `ingest.qk`)."""
    work = work or Workspace()
    b = int(pos.shape[0])
    field = _Field(state, pos, u, work, width)
    width = field.width
    steps = _steps(state, layer, own_attention=own_attention)
    sizes = [slab.rows(width) for slab, _ in steps]
    # Source-major: every product lands in contiguous rows; `dense` is its transposed view.
    dense_t = work.get("dense", (sum(sizes), b), u.dtype)
    offset = 0
    for (slab, step), size in zip(steps, sizes, strict=True):
        _dot_into(slab, field.field, dense_t[offset : offset + size])
        offset += size
        if step is not None:
            field.through(*step)
    sources = torch.cat([slab.source_ids(width) for slab, _ in steps])
    if state.cross_layer:
        return _merge_rows(dense_t, sources)
    return dense_t, sources


# After a slab's products, the field is pulled back through one linear part of the model:
# ("attn", layer): frozen attention, resid_mid -> resid_pre; ("skip", layer): a transcoder's
# skip connection, resid_post -> resid_mid.
Step = tuple[str, int]


def _steps(
    state: PromptState, layer: int, *, own_attention: bool
) -> list[tuple[Slab, Step | None]]:
    """One entry per gradient version, top down: (the slab that sees it, the step after it)."""
    steps: list[tuple[Slab, Step | None]] = []
    if own_attention:
        steps.append((state.attn_bias_slabs[layer], ("attn", layer)))
    for below in reversed(range(layer)):
        if state.split:  # the MLP output sees resid_post; the attention bias resid_mid
            skip: Step | None = None if state.skips[below] is None else ("skip", below)
            steps.append((state.layer_slabs[below], skip))
            steps.append((state.attn_bias_slabs[below], ("attn", below)))
        else:  # without a skip connection both see the same gradient: one product
            steps.append((state.layer_slabs[below], ("attn", below)))
    steps.append((state.embed_slab, None))
    return steps


def _merge_rows(
    dense_t: Float[Tensor, "s b"], sources: Int[Tensor, " s"]
) -> tuple[Float[Tensor, "u b"], Int[Tensor, " u"]]:
    """One row per source: a cross-layer feature's products from every layer it writes to,
    summed (its direct effect through all of them)."""
    unique, inverse = torch.unique(sources, return_inverse=True)
    merged = dense_t.new_zeros(int(unique.shape[0]), dense_t.shape[1])
    return merged.index_add_(0, inverse, dense_t), unique


def _dot_into(slab: Slab, field: Float[Tensor, "b pos d_model"], out: Float[Tensor, "k b"]) -> None:
    """out[c, b] = source c's vector . the gradient of target b at the source's position.

    One batched product over positions, each reading that position's gradients once; a
    position after a target's own gives exact zeros (the field is causal). Spilled rows (the
    busiest positions' surplus) take a second product over a copy of those positions' field."""
    width, m = field.shape[1], slab.per_pos
    vectors = slab.vectors[: width * m].view(width, m, -1)
    torch.bmm(vectors, field.permute(1, 2, 0), out=out[: width * m].view(width, m, -1))
    n_spill = slab.spilled(width)
    if slab.spill is None or n_spill == 0:
        return
    assert slab.spill_pos is not None
    spill, m2 = slab.spill, slab.spill.per_pos
    gradients = field[:, slab.spill_pos[:n_spill]].permute(1, 2, 0)  # (p, d_model, b), a copy
    rows = out[width * m : width * m + n_spill * m2].view(n_spill, m2, -1)
    torch.bmm(spill.vectors[: n_spill * m2].view(n_spill, m2, -1), gradients, out=rows)


class _Field:
    """The chunk's targets pulled back to the current residual-stream layer, stored (b, pos, d).

    Starts as each target's own vector at its position. Exact mode sends the whole field through
    each attention layer; lumped mode sends only the targets' own vectors (one attention step)
    and accumulates, so paths through two or more attention layers are left out."""

    def __init__(
        self,
        state: PromptState,
        pos: Int[Tensor, " b"],
        u: Float[Tensor, "b d_model"],
        work: Workspace,
        width: int | None = None,
    ) -> None:
        self.state, self.pos, self.u = state, pos, u
        self.width = int(pos.max()) + 1 if width is None else width
        b = int(pos.shape[0])
        self.field = work.get("field", (b, self.width, u.shape[1]), u.dtype)
        self.field.zero_()
        self.field[torch.arange(b), pos] = u

    def through(self, kind: str, layer: int) -> None:
        exact = self.state.mode == "exact"
        if kind == "skip":
            if exact:
                _skip_backward(self.state, layer, self.field)
            else:
                _skip_one_step(self.state, layer, self.pos, self.u, self.field)
        elif exact:
            _attention_backward(self.state, layer, self.field)
        else:
            _one_step(self.state, layer, self.pos, self.u, self.field)


def _attention_backward(
    state: PromptState, layer: int, field: Float[Tensor, "b pos d_model"]
) -> None:
    """field += field pulled back through frozen attention (resid_mid -> resid_pre), a few
    targets at a time: the products' temporaries are then a quarter of the field, not 4x it."""
    op = state.attention[layer]
    _, width, d = field.shape
    H = state.model.n_heads
    dh = op.W_O_t.shape[1] // H
    pattern = op.pattern_scaled[:, :width, :width]  # (H, t, s), columns divided by ln1's scale
    step = max(1, BACKWARD_ELEMENTS // (width * d))
    for part in field.split(step):
        n = part.shape[0]
        x = (part.reshape(n * width, d) @ op.W_O_t).view(n, width, H, dh)
        y = torch.einsum("hts,bthe->bshe", pattern, x).reshape(n * width, H * dh)
        part.view(n * width, d).addmm_(y, op.W_V_centred_t)


def _skip_backward(state: PromptState, layer: int, field: Float[Tensor, "b pos d_model"]) -> None:
    """field += field pulled back through the skip connection (resid_post -> resid_mid)."""
    skip = state.skips[layer]
    assert skip is not None
    width = field.shape[1]
    field += skip.back(field, skip.inv_scale[:width][None, :, None])


def _skip_one_step(
    state: PromptState,
    layer: int,
    pos: Int[Tensor, " b"],
    u: Float[Tensor, "b d_model"],
    field: Tensor,
) -> None:
    """Lumped mode: the targets' own vectors through one skip connection, at their position."""
    skip = state.skips[layer]
    assert skip is not None
    field[torch.arange(u.shape[0]), pos] += skip.back(u, skip.inv_scale[pos][:, None])


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
    ov = (u @ op.W_O_t).view(u.shape[0], H, -1).transpose(0, 1)  # (H, b, dh)
    back = torch.bmm(ov, op.W_V_centred_heads).transpose(0, 1)  # (b, H, d)
    rows = op.pattern_tsh[pos, :width]  # (b, s, H)
    field.baddbmm_(rows, back)
