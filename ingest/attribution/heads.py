"""Edges broken down by path: the residual part (same position, no attention), each single
attention head, and the paths through two or more attention layers or skip connections (what
lumped mode folds into its remainder).

With attention frozen, the part of an edge s -> t that goes through head h of attention layer a
alone is A_a[h, t, s] / ln1_scale_a[s] * (W_O[a, h] u_t) . (W_V[a, h]^T readin(v_s)): one
d_head dot product per edge, head and layer once the targets' and sources' projections are
made. Where the transcoders have skip connections (out += x @ W_skip) a same-position edge also
runs through one skip connection with no attention: that part is the residual's too, so
residual + heads is what a lumped-mode edge holds, in every kind of set. A cross-layer
transcoder's feature is split write by write (`writes`) and the parts summed.
`head_parts` computes them for many edges at once; the rest of the module reads them out."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.engine import iter_chunks
from circuitstore.ingest.attribution.graph import AttributionGraph, Code
from circuitstore.ingest.attribution.state import PromptState, Targets
from circuitstore.ingest.attribution.writes import Writes, source_writes
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import head_name

# Edges per batched product: the gathered projections are 2 x this x d_model floats.
EDGE_BATCH = 8192


@dataclass(frozen=True)
class EdgeBreakdown:
    """total = residual + sum(heads.values()) + multi_layer. `residual`: the same-position part
    without attention (straight, or through one skip connection); `multi_layer`: the paths
    through two or more attention layers or skip connections."""

    total: float
    residual: float
    heads: dict[tuple[int, int], float]  # (attention layer, head) -> weight through it alone
    multi_layer: float

    def strongest(self, top: int | None = None) -> list[tuple[str, float]]:
        """Heads by name (`attn2[3]`), strongest first, zeros left out."""
        heads = sorted(self.heads.items(), key=lambda kv: -abs(kv[1]))
        return [(head_name(a, h), w) for (a, h), w in heads if w != 0.0][:top]

    def as_dict(self) -> dict[str, object]:
        """As an edge's `parts` in JSON."""
        return {
            "residual": self.residual,
            "heads": dict(self.strongest()),
            "multi_layer": self.multi_layer,
        }


@dataclass(frozen=True)
class HeadParts:
    """Edges (rows of the full node table) split by path. `valid` is False where an edge has no
    split (from a constant, into a remainder); `first`..`last` are the attention layers that can
    carry each edge (heads outside them hold zeros)."""

    residual: Float[Tensor, " e"]
    heads: Float[Tensor, "e n_layers n_heads"]
    valid: Bool[Tensor, " e"]
    first: Int[Tensor, " e"]
    last: Int[Tensor, " e"]

    def breakdown(self, i: int, total: float) -> EdgeBreakdown:
        """Edge `i` of weight `total` split by path: residual, each head, the rest."""
        layers = range(int(self.first[i]), int(self.last[i]) + 1)
        per_head = self.heads[i].tolist()
        heads = {(a, h): per_head[a][h] for a in layers for h in range(len(per_head[a]))}
        residual = float(self.residual[i])
        return EdgeBreakdown(total, residual, heads, total - residual - sum(heads.values()))


@dataclass(frozen=True)
class StrongestHeads:
    """Each edge's `k` strongest heads, numbered layer * n_heads + head (-1 where it has fewer
    non-zero ones), with their weights, all its other heads summed, and its residual part: what
    ingest stores on an ATTR edge. Edges without a split have `valid` False. Numbers, not names:
    Neo4j keeps three small integers inside the relationship's property record, where three
    names take a string-array record of their own (82 against 210 bytes per edge for the whole
    split, measured by `benchmarks/bench_heads.py`)."""

    index: Int[Tensor, "e k"]
    weight: Float[Tensor, "e k"]
    other: Float[Tensor, " e"]
    residual: Float[Tensor, " e"]
    valid: Bool[Tensor, " e"]

    def rows(self) -> list[tuple[list[int], list[float], float, float] | None]:
        """Per edge: (head numbers, their weights, the other heads' sum, the residual part)."""
        out: list[tuple[list[int], list[float], float, float] | None] = []
        columns = (self.index.tolist(), self.weight.tolist(), self.other.tolist())
        for ok, index, weight, other, residual in zip(
            self.valid.tolist(), *columns, self.residual.tolist(), strict=True
        ):
            kept = [(i, w) for i, w in zip(index, weight, strict=True) if i >= 0]
            split = ([i for i, _ in kept], [w for _, w in kept], other, residual)
            out.append(split if ok else None)
        return out


def graph_by_head(state: PromptState, graph: AttributionGraph) -> list[EdgeBreakdown | None]:
    """Each edge of `graph` (computed from `state`, pruned or not) broken down by path, its
    total the exact edge whatever the graph's mode; None where an edge has no breakdown (from
    a constant, into a remainder)."""
    sources, targets = _state_edges(graph)
    parts = head_parts(state, sources, targets)
    totals, _ = _exact_totals(state, sources, targets, parts.valid)
    return [
        parts.breakdown(i, total) if ok else None
        for i, (ok, total) in enumerate(zip(parts.valid.tolist(), totals.tolist(), strict=True))
    ]


def strongest_heads(state: PromptState, graph: AttributionGraph, k: int) -> StrongestHeads:
    """Each edge of `graph` with its `k` strongest heads, the rest summed (see StrongestHeads)."""
    sources, targets = _state_edges(graph)
    parts = head_parts(state, sources, targets)
    flat = parts.heads.flatten(1)  # column a * n_heads + h: `names.numbered_head`'s numbering
    k = min(k, flat.shape[1])
    top = flat.abs().topk(k, dim=1).indices
    weight = flat.gather(1, top)
    index = top.masked_fill(weight == 0, -1)
    other = flat.sum(1) - weight.sum(1)
    return StrongestHeads(index, weight, other, parts.residual, parts.valid)


def edge_by_head(state: PromptState, source: int, target: int) -> EdgeBreakdown:
    """Break the edge between two node rows of the full (unpruned) table down by attention head."""
    parts = edges_by_head(state, target, [source])
    if source not in parts:
        raise InputError(
            f"node {state.nodes.node_id(source)} is not a source of {state.nodes.node_id(target)}"
        )
    return parts[source]


def edges_by_head(
    state: PromptState, target: int, sources: Sequence[int]
) -> dict[int, EdgeBreakdown]:
    """The edges from `sources` into one target (rows of the full table), each broken down by
    path; sources that are not the target's (or have no residual-stream vector: constants,
    remainders) are left out."""
    src = torch.tensor(list(sources), dtype=torch.long)
    tgt = torch.full_like(src, target)
    parts = head_parts(state, src, tgt)
    totals, found = _exact_totals(state, src, tgt, parts.valid)
    rows = zip(src.tolist(), totals.tolist(), found.tolist(), strict=True)
    return {s: parts.breakdown(i, total) for i, (s, total, ok) in enumerate(rows) if ok}


def head_parts(
    state: PromptState, sources: Int[Tensor, " e"], targets: Int[Tensor, " e"]
) -> HeadParts:
    """The edges sources[i] -> targets[i] (rows of the full table, each source one its target
    reads) split into their residual part and one part per single attention head.

    Each write of a source (`writes`: a cross-layer feature writes into several MLP outputs) is
    split on its own and the parts summed: the target sees a write directly if it lies below
    the target's input, through a head of attention layer a if it lies below a, and through a
    skip connection of layer c (same position only) if it lies below c."""
    nodes, model = state.nodes, state.model
    L, H = model.n_layers, model.n_heads
    src, s_of = torch.unique(sources, return_inverse=True)
    tgt, t_of = torch.unique(targets, return_inverse=True)
    writes = source_writes(state, src)
    u, has_u = _target_vectors(state, tgt)
    valid = writes.found[s_of] & has_u[t_of]
    first = nodes.layer[sources] + 1  # a source at layer l is read by attention l+1 on
    is_feature = nodes.kind[targets] == Code.FEATURE
    reads = torch.where(is_feature, nodes.layer[targets], L)  # resid_mid[l], or the last stream
    last = reads.clamp_max(L - 1)  # a feature reads resid_mid: its own attention comes first
    edge, write = _per_write(writes, s_of, valid)
    ends = _Ends(
        writes.vectors, u, write, t_of[edge], nodes.pos[sources][edge], nodes.pos[targets][edge]
    )
    residual = torch.zeros(sources.shape[0], dtype=u.dtype)
    residual.index_add_(0, edge, _same_position(state, ends, writes, write, reads[edge]))
    heads = torch.zeros(sources.shape[0], L, H, dtype=u.dtype)
    pre_from, last_e = writes.pre_from[write], last[edge]
    for a in range(L):
        sel = ((pre_from <= a) & (a <= last_e)).nonzero(as_tuple=True)[0]
        if sel.numel():
            heads[:, a].index_add_(0, edge[sel], _through_head(state, a, ends, sel))
    return HeadParts(residual, heads, valid, first, last)


def _per_write(
    writes: Writes, s_of: Int[Tensor, " e"], valid: Bool[Tensor, " e"]
) -> tuple[Int[Tensor, " w"], Int[Tensor, " w"]]:
    """One entry per (valid edge, write of its source): the edge, and the write."""
    n_src = int(writes.found.shape[0])
    counts = torch.bincount(writes.of, minlength=n_src)
    starts = torch.cumsum(counts, 0) - counts
    edges = valid.nonzero(as_tuple=True)[0]
    per_edge = counts[s_of[edges]]
    edge = edges.repeat_interleave(per_edge)
    offset = torch.arange(edge.shape[0]) - (torch.cumsum(per_edge, 0) - per_edge).repeat_interleave(
        per_edge
    )
    return edge, starts[s_of[edge]] + offset


def _same_position(
    state: PromptState,
    ends: _Ends,
    writes: Writes,
    write: Int[Tensor, " w"],
    reads: Int[Tensor, " w"],
) -> Float[Tensor, " w"]:
    """Per (edge, write): the part that stays at the source's position without attention,
    straight to the target's input and through one skip connection (layer c reads the write
    when it lies below resid_mid c, and the target reads c's output when c is below it)."""
    same = ends.sp == ends.tp
    mid_from = writes.mid_from[write]
    out = torch.zeros(write.shape[0], dtype=ends.u.dtype)
    direct = (same & (mid_from <= reads)).nonzero(as_tuple=True)[0]
    out[direct] = (ends.v[ends.s_of[direct]] * ends.u[ends.t_of[direct]]).sum(-1)
    for c, skip in enumerate(state.skips):
        sel = (same & (mid_from <= c) & (c < reads)).nonzero(as_tuple=True)[0]
        if skip is None or not sel.numel():
            continue
        # The targets' vectors pulled back through the skip, once per target (at its position).
        tgt, t_at = torch.unique(ends.t_of[sel], return_inverse=True)
        at = torch.zeros(ends.u.shape[0], dtype=torch.long)
        at[ends.t_of[sel]] = ends.tp[sel]
        back = skip.back(ends.u[tgt], skip.inv_scale[at[tgt]][:, None])
        out[sel] += (ends.v[ends.s_of[sel]] * back[t_at]).sum(-1)
    return out


@dataclass(frozen=True)
class _Ends:
    """Per (edge, write) entries as indices into the writes' and the unique targets' vectors,
    with positions."""

    v: Float[Tensor, "w d_model"]
    u: Float[Tensor, "t d_model"]
    s_of: Int[Tensor, " e"]
    t_of: Int[Tensor, " e"]
    sp: Int[Tensor, " e"]
    tp: Int[Tensor, " e"]


def _through_head(state: PromptState, a: int, ends: _Ends, edges: Int[Tensor, " k"]) -> Tensor:
    """(k, n_heads): the part of each entry through each single head of attention layer `a`."""
    op, H = state.attention[a], state.model.n_heads
    # Project only the sources and targets these edges use: each is one d_model^2 product.
    src, s_at = torch.unique(ends.s_of[edges], return_inverse=True)
    tgt, t_at = torch.unique(ends.t_of[edges], return_inverse=True)
    q = (ends.v[src] @ op.W_V_centred_t.T).view(src.shape[0], H, -1)  # W_V^T readin(v)
    p = (ends.u[tgt] @ op.W_O_t).view(tgt.shape[0], H, -1)  # W_O u
    out = torch.empty(edges.shape[0], H, dtype=ends.v.dtype)
    for part in torch.arange(edges.shape[0]).split(EDGE_BATCH):
        e = edges[part]
        dots = (q[s_at[part]] * p[t_at[part]]).sum(-1)
        out[part] = dots * op.pattern_scaled[:, ends.tp[e], ends.sp[e]].T  # A / ln1 scale
    return out


def _target_vectors(
    state: PromptState, rows: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "n d_model"], Bool[Tensor, " n"]]:
    """Each row's target vector u (features and logits), zeros and False for other rows."""
    out = torch.zeros(rows.shape[0], state.model.d_model, dtype=state.model.dtype)
    found = torch.zeros(rows.shape[0], dtype=torch.bool)
    for targets in state.targets:
        lo, n = int(targets.nodes[0]) if targets.nodes.numel() else 0, targets.nodes.shape[0]
        # A layer's targets are consecutive rows (see `layout`).
        hit = (rows >= lo) & (rows < lo + n)
        if bool(hit.any()):
            out[hit] = targets.vectors(rows[hit] - lo)
            found |= hit
    return out, found


def _state_edges(graph: AttributionGraph) -> tuple[Int[Tensor, " e"], Int[Tensor, " e"]]:
    """The graph's edges as rows of the full table it was computed from."""
    rows = graph.rows if graph.rows is not None else torch.arange(len(graph.nodes))
    return rows[graph.edges.source], rows[graph.edges.target]


def _exact_totals(
    state: PromptState,
    sources: Int[Tensor, " e"],
    targets: Int[Tensor, " e"],
    valid: Bool[Tensor, " e"],
) -> tuple[Float[Tensor, " e"], Bool[Tensor, " e"]]:
    """The exact (all-paths) weight of each valid edge, from one exact pass over the targets
    they reach, and whether the edge is one (its source among its target's)."""
    n = len(state.nodes)
    totals = torch.zeros(sources.shape[0], dtype=state.model.dtype)
    found = torch.zeros(sources.shape[0], dtype=torch.bool)
    wanted = torch.unique(targets[valid])
    key = targets * n + sources
    order = torch.argsort(key)
    sorted_key = key[order]

    def select(layer_targets: Targets) -> Bool[Tensor, " k"]:
        return torch.isin(layer_targets.nodes, wanted)

    for chunk in iter_chunks(dataclasses.replace(state, mode="exact"), select=select):
        src, tgt, weight = chunk.coo()
        at = torch.searchsorted(sorted_key, tgt * n + src).clamp_max(max(0, key.shape[0] - 1))
        hit = sorted_key[at] == tgt * n + src
        totals[order[at[hit]]] = weight[hit]
        found[order[at[hit]]] = True
    return totals, found & valid
