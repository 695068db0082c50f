"""Edges broken down by path: same-position residual, each single attention head, and the paths
through two or more attention layers (what lumped mode folds into its remainder).

With attention frozen, the part of an edge s -> t that goes through head h of attention layer a
alone is A_a[h, t, s] / ln1_scale_a[s] * (W_O[a, h] u_t) . (W_V[a, h]^T centre(v_s)): one d_head
dot product per edge, head and layer once the targets' and sources' projections are made.
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
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import head_name

# Edges per batched product: the gathered projections are 2 x this x d_model floats.
EDGE_BATCH = 8192


@dataclass(frozen=True)
class EdgeBreakdown:
    """total = residual + sum(heads.values()) + multi_layer."""

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
    reads) split into their residual part and one part per single attention head."""
    nodes, model = state.nodes, state.model
    L, H = model.n_layers, model.n_heads
    src, s_of = torch.unique(sources, return_inverse=True)
    tgt, t_of = torch.unique(targets, return_inverse=True)
    v, has_v = _source_vectors(state, src)
    u, has_u = _target_vectors(state, tgt)
    valid = has_v[s_of] & has_u[t_of]
    first = nodes.layer[sources] + 1  # a source at layer l is read by attention l+1 on
    is_feature = nodes.kind[targets] == Code.FEATURE
    last = torch.where(is_feature, nodes.layer[targets], L - 1)  # a feature reads resid_mid
    ends = _Ends(v, u, s_of, t_of, nodes.pos[sources], nodes.pos[targets])
    same = valid & (ends.sp == ends.tp)
    residual = torch.zeros(sources.shape[0], dtype=v.dtype)
    residual[same] = (v[s_of[same]] * u[t_of[same]]).sum(-1)
    heads = torch.zeros(sources.shape[0], L, H, dtype=v.dtype)
    for a in range(L):
        edges = (valid & (first <= a) & (a <= last)).nonzero(as_tuple=True)[0]
        if edges.numel():
            heads[edges, a] = _through_head(state, a, ends, edges)
    return HeadParts(residual, heads, valid, first, last)


@dataclass(frozen=True)
class _Ends:
    """Edges as indices into their unique sources' and targets' vectors, with positions."""

    v: Float[Tensor, "s d_model"]
    u: Float[Tensor, "t d_model"]
    s_of: Int[Tensor, " e"]
    t_of: Int[Tensor, " e"]
    sp: Int[Tensor, " e"]
    tp: Int[Tensor, " e"]


def _through_head(state: PromptState, a: int, ends: _Ends, edges: Int[Tensor, " k"]) -> Tensor:
    """(k, n_heads): the part of each edge through each single head of attention layer `a`."""
    op, H = state.attention[a], state.model.n_heads
    # Project only the sources and targets these edges use: each is one d_model^2 product.
    src, s_at = torch.unique(ends.s_of[edges], return_inverse=True)
    tgt, t_at = torch.unique(ends.t_of[edges], return_inverse=True)
    q = (ends.v[src] @ op.W_V_centred_t.T).view(src.shape[0], H, -1)  # W_V^T centre(v)
    p = (ends.u[tgt] @ op.W_O_t).view(tgt.shape[0], H, -1)  # W_O u
    out = torch.empty(edges.shape[0], H, dtype=ends.v.dtype)
    for part in torch.arange(edges.shape[0]).split(EDGE_BATCH):
        e = edges[part]
        dots = (q[s_at[part]] * p[t_at[part]]).sum(-1)
        out[part] = dots * op.pattern_scaled[:, ends.tp[e], ends.sp[e]].T  # A / ln1 scale
    return out


def _source_vectors(
    state: PromptState, rows: Int[Tensor, " n"]
) -> tuple[Float[Tensor, "n d_model"], Bool[Tensor, " n"]]:
    """Each row's residual-stream vector (features, errors, embeddings, biases), zeros and False
    for rows with none (a target's constant, a remainder, a logit)."""
    out = torch.zeros(rows.shape[0], state.model.d_model, dtype=state.model.dtype)
    found = torch.zeros(rows.shape[0], dtype=torch.bool)
    where = torch.full((len(state.nodes),), -1, dtype=torch.long)
    slabs = [*state.layer_slabs, *state.attn_bias_slabs, state.embed_slab]
    for slab in (part for whole in slabs for part in whole.parts()):
        real = (slab.idx >= 0).nonzero(as_tuple=True)[0]
        where[slab.idx[real]] = real
        at = where[rows]
        hit = (at >= 0) & ~found
        out[hit] = slab.vectors[at[hit]]
        found |= hit
        where[slab.idx[real]] = -1
    return out, found


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
