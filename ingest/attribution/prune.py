"""Pruning for storage, in the same single pass that computes the edges.

Influence: a logit's is its probability (normalised over the chosen logits); a node's is the sum
over its out-edges of |weight| / (target's total |input|) x the target's influence, i.e. the
share of the output that flows through it along all paths. The engine emits targets from the top
layer down, so a target's influence is final before its own in-edges arrive.

Expansion: per layer, the targets that together hold the smallest `skip_fraction` of the layer's
influence get no in-edges computed (on a GPT-2-sized random model, 1% of the influence is held by
a third of the targets below the top layers, the costliest ones). They cannot be kept, and what
they would have passed down is reported as `unexpanded_influence`.

Kept nodes: the fewest features that carry `node_threshold` of the total feature influence, all
logits and embeddings, and the error/bias/remainder nodes with a kept edge. Kept edges: per
target, the strongest in-edges that carry `edge_threshold` of its |input| (at most
`max_edges_per_target` candidates, chosen while streaming), then only those between kept nodes.
Each kept target records how much of its input the kept edges explain.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.engine import Workspace
from circuitstore.ingest.attribution.graph import Code, EdgeChunk, Edges, NodeAccounting, NodeTable
from circuitstore.ingest.attribution.scores import GraphScores, edge_scores, is_error, scores
from circuitstore.ingest.attribution.state import Targets
from circuitstore.ingest.config import PruneConfig

# Rows of a chunk's block scanned at once: a few MB, so each slice's |values| stay in cache
# between the passes over it (the whole block is tens of MB).
SCAN_ELEMENTS = 1 << 21


def block_maxima(abs_t: Float[Tensor, "s b"], q: int) -> Float[Tensor, "blocks b"]:
    """Per target, the maximum of each run of q sources (the last run may be shorter)."""
    n, b = abs_t.shape
    full = n // q * q
    parts = [abs_t[:full].view(-1, q, b).amax(dim=1)] if full else []
    if full < n:
        parts.append(abs_t[full:].amax(dim=0, keepdim=True))
    return torch.cat(parts)


def top_bound(maxima: Float[Tensor, "blocks b"], k: int) -> Float[Tensor, " b"]:
    """A lower bound on each target's k-th largest entry: the k-th largest block maximum (k
    distinct entries reach it). Only entries at or above it can be in the top k; it must also
    be positive (the smallest normal float when there are fewer than k blocks)."""
    tiny = torch.finfo(maxima.dtype).tiny
    if maxima.shape[0] < k:
        return torch.full((maxima.shape[1],), tiny, dtype=maxima.dtype)
    return torch.topk(maxima, k, dim=0).values[-1].clamp_min(tiny)


def rank_top(
    cols: Int[Tensor, " m"], rows: Int[Tensor, " m"], vals: Float[Tensor, " m"], b: int, k: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Of the candidate entries, each row's k largest, grouped by row, largest first (ties keep
    source order): one sort on a composite key, since the fraction stays in [0, 1) and float64
    has room for both."""
    frac = vals.to(torch.float64) / (2 * vals.max().to(torch.float64)) if vals.numel() else vals
    order = torch.argsort(rows.to(torch.float64) + (1 - frac), stable=True)
    cols, rows, vals = cols[order], rows[order], vals[order]
    counts = torch.bincount(rows, minlength=b)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(rows.shape[0]) - first[rows]
    top = rank < k
    return cols[top], rows[top], vals[top]


@dataclass
class PruneSink:
    """Streams influence and per-target candidate edges; `finish` selects what is kept."""

    nodes: NodeTable
    config: PruneConfig
    logit_weights: Float[Tensor, " n"]  # influence seeds, zero except at logit nodes
    expand_all: bool = False  # compute every row (for other sinks); skipped rows are ignored
    keep_edges: bool = True  # False: influence and scores only, no candidate edges kept
    influence: Tensor = field(init=False)
    abs_input: Tensor = field(init=False)
    skipped: Tensor = field(init=False)  # targets whose in-edges are ignored (see `wanted`)
    error_input: Tensor = field(init=False)  # each target's |input| from error nodes
    parts: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)
    _work: Workspace = field(default_factory=Workspace)

    def __post_init__(self) -> None:
        self.influence = self.logit_weights.to(torch.float64).clone()
        self.abs_input = torch.zeros(len(self.nodes), dtype=torch.float64)
        self.skipped = torch.zeros(len(self.nodes), dtype=torch.bool)
        self.error_input = torch.zeros(len(self.nodes), dtype=torch.float64)
        self._is_error = is_error(self.nodes.kind)

    def wanted(self, targets: Targets) -> Bool[Tensor, " k"]:
        """The layer's targets worth expanding, decided once their influence is final: not those
        without influence (exact: they can pass none on), nor those holding together the
        smallest `skip_fraction` of the layer's influence. Logits are always expanded."""
        influence = self.influence[targets.nodes]
        keep = influence > 0
        is_logit = bool((self.nodes.kind[targets.nodes] == Code.LOGIT).any())
        if self.config.skip_fraction > 0 and not is_logit and bool(keep.any()):
            order = torch.argsort(influence, stable=True)
            cum = torch.cumsum(influence[order], 0)
            keep[order[cum <= self.config.skip_fraction * cum[-1]]] = False
        self.skipped[targets.nodes] = ~keep
        return torch.ones_like(keep) if self.expand_all else keep

    def unexpanded_influence(self) -> float:
        """Share of the total feature influence held by skipped targets (not passed down)."""
        feats = self.nodes.kind == Code.FEATURE
        total = float(self.influence[feats].sum())
        return float(self.influence[feats & self.skipped].sum()) / total if total > 0 else 0.0

    def consume(self, chunk: EdgeChunk) -> None:
        """Two passes over the chunk's block, a cache-sized slice at a time: first each target's
        |input| and block maxima (the top-k bound), then the influence flowing to each source
        and the entries that can be among a target's strongest."""
        # The engine's block is source-major (`dense` is a transposed view): slice whole rows.
        dense_t = chunk.dense.T
        n_src, b = dense_t.shape
        k = self.config.max_edges_per_target
        step = max(1, SCAN_ELEMENTS // max(b, 1))
        q = max(1, n_src // (4 * k))  # 4k blocks: a bound close to the k-th largest entry
        row = chunk.extra_rows()
        extra_abs = chunk.extra_weight.abs().to(torch.float64)
        norm = torch.zeros(b, dtype=torch.float64).index_add_(0, row, extra_abs)
        error_extra = self._is_error[chunk.extra_source].to(extra_abs.dtype) * extra_abs
        errors = torch.zeros(b, dtype=torch.float64).index_add_(0, row, error_extra)
        from_error = (self._is_error[chunk.sources.clamp_min(0)] & (chunk.sources >= 0)).to(
            dense_t.dtype
        )
        maxima = []
        for lo in range(0, n_src, step):
            part = self._abs(dense_t[lo : lo + step])
            norm += (part.new_ones(part.shape[0]) @ part).to(torch.float64)
            errors += (from_error[lo : lo + step] @ part).to(torch.float64)
            maxima.append(block_maxima(part, q))
        norm = norm.clamp_min(1e-30)
        self.abs_input[chunk.targets] = norm
        self.error_input[chunk.targets] = errors
        bound = top_bound(torch.cat(maxima), k)
        # Rows computed only for other sinks (see `wanted`) pass nothing on and offer no edges.
        share = torch.where(self.skipped[chunk.targets], 0.0, self.influence[chunk.targets] / norm)
        share_t = share.to(dense_t.dtype)
        flow = torch.empty(n_src, dtype=dense_t.dtype)
        found: list[tuple[Tensor, Tensor, Tensor]] = []
        for lo in range(0, n_src, step):
            part = self._abs(dense_t[lo : lo + step])
            torch.mv(part, share_t, out=flow[lo : lo + step])
            if self.keep_edges:
                cols, rows = (part >= bound).nonzero(as_tuple=True)
                found.append((cols + lo, rows, part[cols, rows]))
        real = chunk.sources >= 0  # not padding
        self.influence.index_add_(0, chunk.sources[real], flow[real].to(torch.float64))
        self.influence.index_add_(0, chunk.extra_source, extra_abs * share[row])
        if self.keep_edges:
            cols, rows, vals = (torch.cat(t) for t in zip(*found, strict=True))
            self.parts.append(self._candidates(chunk, rank_top(cols, rows, vals, b, k), norm))

    def _abs(self, rows: Tensor) -> Tensor:
        out = self._work.get("abs", tuple(rows.shape), rows.dtype)
        return torch.abs(rows, out=out)

    def _candidates(
        self, chunk: EdgeChunk, top: tuple[Tensor, Tensor, Tensor], norm: Float[Tensor, " b"]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Per target, its strongest in-edges (at most max_edges_per_target) until they carry
        edge_threshold of its |input|."""
        cols, rows, vals = top
        v64 = vals.to(torch.float64)
        cum = torch.cumsum(v64, 0) - v64  # exclusive, over all rows
        counts = torch.bincount(rows, minlength=norm.shape[0])
        first = torch.cumsum(counts, 0) - counts
        before = (cum - cum[first][rows]) / norm[rows]
        keep = (before < self.config.edge_threshold) & ~self.skipped[chunk.targets][rows]
        rows, cols = rows[keep], cols[keep]
        # Constants and remainders are few and always candidates: they are each target's own terms.
        extra = ~self.skipped[chunk.extra_target]
        return (
            torch.cat([chunk.sources[cols], chunk.extra_source[extra]]),
            torch.cat([chunk.targets[rows], chunk.extra_target[extra]]),
            torch.cat([chunk.dense[rows, cols], chunk.extra_weight[extra]]),
        )

    def finish(self) -> tuple[Bool[Tensor, " n"], Edges, NodeAccounting]:
        """(kept-node mask over the full table, kept edges in full-table rows, accounting of the
        kept nodes in kept-node order)."""
        src = torch.cat([p[0] for p in self.parts])
        tgt = torch.cat([p[1] for p in self.parts])
        w = torch.cat([p[2] for p in self.parts])
        kept = self._kept_targets()
        # A feature source must itself be kept; errors, biases, remainders come with their edges.
        edge_ok = kept[tgt] & (kept[src] | (self.nodes.kind[src] != Code.FEATURE))
        src, tgt, w = src[edge_ok], tgt[edge_ok], w[edge_ok]
        src, tgt, w = self._edge_budget(src, tgt, w)
        kept[src] = True  # errors, biases, remainders with a kept edge
        return kept, Edges(src, tgt, w), self._accounting(kept, tgt, w)

    def _edge_budget(self, src: Tensor, tgt: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """At most `max_edges` edges: the strongest by |weight| / target's |input| x (target's
        influence + its logit weight), the share of the output that flows along the edge (the
        edge score of circuit-tracer's pruning)."""
        cap = self.config.max_edges
        if cap is None or src.shape[0] <= cap:
            return src, tgt, w
        reach = self.influence[tgt] + self.logit_weights.to(torch.float64)[tgt]
        score = w.abs().to(torch.float64) / self.abs_input[tgt].clamp_min(1e-30) * reach
        top = torch.topk(score, cap).indices.sort().values  # keep the stream's order
        return src[top], tgt[top], w[top]

    def full_scores(self) -> GraphScores:
        """The scores of the whole graph, from this pass's influence (the skipped targets'
        share, `unexpanded_influence`, is not passed on)."""
        computed = self.abs_input > 0
        share = torch.where(computed, self.error_input / self.abs_input.clamp_min(1e-30), 0.0)
        return scores(self.influence, self.nodes.kind, share)

    def stored_scores(self, src: Tensor, tgt: Tensor, w: Tensor) -> GraphScores:
        """The scores of the stored graph (its edges in full-table rows): what it leaves out of
        each target's input counts as error there."""
        return edge_scores(self.nodes.kind, src, tgt, w, self.abs_input, self.logit_weights)

    def kept_influence(self, kept: Bool[Tensor, " n"]) -> float:
        """Share of the total feature influence the kept features carry."""
        feats = self.nodes.kind == Code.FEATURE
        total = float(self.influence[feats].sum())
        return float(self.influence[feats & kept].sum()) / total if total > 0 else 1.0

    def _kept_targets(self) -> Bool[Tensor, " n"]:
        kind = self.nodes.kind
        kept = (kind == Code.LOGIT) | (kind == Code.EMBEDDING)
        feats = (kind == Code.FEATURE).nonzero(as_tuple=True)[0]
        if feats.numel():
            scores = self.influence[feats]
            order = torch.argsort(scores, descending=True)
            cum = torch.cumsum(scores[order], 0)
            before = (cum - scores[order]) / cum[-1].clamp_min(1e-30)
            # A feature without influence carries none of it (and may not have been computed).
            chosen = (before < self.config.node_threshold) & (scores[order] > 0)
            if self.config.max_feature_nodes is not None:  # the most influential come first
                chosen &= torch.arange(chosen.shape[0]) < self.config.max_feature_nodes
            kept[feats[order[chosen]]] = True
        kept &= ~self.skipped
        return kept

    def _accounting(
        self, kept: Tensor, tgt: Int[Tensor, " k"], w: Float[Tensor, " k"]
    ) -> NodeAccounting:
        n = len(self.nodes)
        kept_sum = torch.zeros(n, dtype=torch.float64).index_add_(0, tgt, w.to(torch.float64))
        kept_abs = torch.zeros(n, dtype=torch.float64).index_add_(0, tgt, w.abs().to(torch.float64))
        is_target = (self.nodes.kind == Code.FEATURE) | (self.nodes.kind == Code.LOGIT)
        frac = torch.where(is_target, kept_abs / self.abs_input.clamp_min(1e-30), torch.nan)
        kept_sum = torch.where(is_target, kept_sum, torch.nan)
        value = torch.where(is_target, self.nodes.value.to(torch.float64), torch.nan)
        return NodeAccounting(value[kept], kept_sum[kept], frac[kept])
