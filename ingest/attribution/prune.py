"""Pruning for storage, in the same single pass that computes the edges.

Influence: a logit's is its probability (normalised over the chosen logits); a node's is the sum
over its out-edges of |weight| / (target's total |input|) x the target's influence, i.e. the
share of the output that flows through it along all paths. The engine emits targets from the top
layer down, so a target's influence is final before its own in-edges arrive.

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

from circuitstore.ingest.attribution.graph import Code, EdgeChunk, Edges, NodeAccounting, NodeTable


@dataclass(frozen=True)
class PruneConfig:
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    max_edges_per_target: int = 64

    def as_dict(self) -> dict[str, float | int]:
        return {
            "node_threshold": self.node_threshold,
            "edge_threshold": self.edge_threshold,
            "max_edges_per_target": self.max_edges_per_target,
        }


@dataclass
class PruneSink:
    """Streams influence and per-target candidate edges; `finish` selects what is kept."""

    nodes: NodeTable
    config: PruneConfig
    logit_weights: Float[Tensor, " n"]  # influence seeds, zero except at logit nodes
    influence: Tensor = field(init=False)
    abs_input: Tensor = field(init=False)
    parts: list[tuple[Tensor, Tensor, Tensor]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.influence = self.logit_weights.to(torch.float64).clone()
        self.abs_input = torch.zeros(len(self.nodes), dtype=torch.float64)

    def consume(self, chunk: EdgeChunk) -> None:
        abs_dense = chunk.dense.abs()
        norm = chunk.row_abs_sums(abs_dense).to(torch.float64).clamp_min(1e-30)
        self.abs_input[chunk.targets] = norm
        share = self.influence[chunk.targets] / norm
        flow = share.to(abs_dense.dtype) @ abs_dense  # padding columns are zeros: harmless at row 0
        self.influence.index_add_(0, chunk.sources.clamp_min(0), flow.to(torch.float64))
        row = chunk.extra_rows()
        self.influence.index_add_(
            0, chunk.extra_source, chunk.extra_weight.abs().to(torch.float64) * share[row]
        )
        self.parts.append(self._candidates(chunk, abs_dense, norm))

    def _candidates(
        self, chunk: EdgeChunk, abs_dense: Tensor, norm: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = min(self.config.max_edges_per_target, abs_dense.shape[1])
        vals, cols = torch.topk(abs_dense, k, dim=1)
        before = (torch.cumsum(vals.to(torch.float64), dim=1) - vals) / norm[:, None]
        keep = (before < self.config.edge_threshold) & (vals > 0)
        rows = torch.arange(chunk.targets.shape[0])[:, None].expand_as(cols)[keep]
        cols = cols[keep]
        # Constants and remainders are few and always candidates: they are each target's own terms.
        return (
            torch.cat([chunk.sources[cols], chunk.extra_source]),
            torch.cat([chunk.targets[rows], chunk.extra_target]),
            torch.cat([chunk.dense[rows, cols], chunk.extra_weight]),
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
        kept[src] = True  # errors, biases, remainders with a kept edge
        return kept, Edges(src, tgt, w), self._accounting(kept, tgt, w)

    def _kept_targets(self) -> Bool[Tensor, " n"]:
        kind = self.nodes.kind
        kept = (kind == Code.LOGIT) | (kind == Code.EMBEDDING)
        feats = (kind == Code.FEATURE).nonzero(as_tuple=True)[0]
        if feats.numel():
            scores = self.influence[feats]
            order = torch.argsort(scores, descending=True)
            cum = torch.cumsum(scores[order], 0)
            before = (cum - scores[order]) / cum[-1].clamp_min(1e-30)
            kept[feats[order[before < self.config.node_threshold]]] = True
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
