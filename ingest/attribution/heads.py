"""One edge broken down by path: same-position residual, each single attention head, and the
paths through two or more attention layers (what lumped mode folds into its remainder)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from circuitstore.ingest.attribution.engine import _chunk
from circuitstore.ingest.attribution.graph import AttributionGraph, Code
from circuitstore.ingest.attribution.state import PromptState, centre
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import head_name

TARGET_KINDS = (Code.FEATURE, Code.LOGIT)


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


def graph_by_head(state: PromptState, graph: AttributionGraph) -> list[EdgeBreakdown | None]:
    """Each edge of `graph` (computed from `state`, pruned or not) broken down by path; None
    where an edge has no breakdown (from a constant, into a remainder)."""
    row = {node: i for i, node in enumerate(state.nodes.ids())}
    ids = graph.nodes.ids()
    src = [row.get(ids[s]) for s in graph.edges.source.tolist()]
    tgt = [row.get(ids[t]) for t in graph.edges.target.tolist()]
    wanted: dict[int, list[int]] = {}
    for s, t in zip(src, tgt, strict=True):
        if s is not None and t is not None and int(state.nodes.kind[t]) in TARGET_KINDS:
            wanted.setdefault(t, []).append(s)
    parts = {(s, t): p for t, ss in wanted.items() for s, p in edges_by_head(state, t, ss).items()}
    return [
        parts.get((s, t)) if s is not None and t is not None else None
        for s, t in zip(src, tgt, strict=True)
    ]


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
    remainders) are left out. The target's exact row is computed once."""
    layer, rank = _target_row(state, target)
    targets = state.targets[layer]
    chunk = _chunk(dataclasses.replace(state, mode="exact"), targets, slice(rank, rank + 1))
    u, t = targets.vectors(slice(rank, rank + 1))[0], int(targets.pos[rank])
    w = state.model.weights
    # W_V W_O u per head, for each attention layer that can carry an edge into this target.
    back = {
        a: torch.einsum("hde,hef,f->hd", w.W_V[a], w.W_O[a], u)
        for a in range(min(layer, state.model.n_layers - 1) + 1)
    }
    col = {int(c): i for i, c in enumerate(chunk.sources.tolist())}
    out = {}
    for source in sources:
        found = _source_vector(state, source) if source in col else None
        if found is None:
            continue
        vector, first_attn = found
        total = float(chunk.dense[0, col[source]])
        s = int(state.nodes.pos[source])
        residual = float(vector @ u) if s == t else 0.0
        heads = {}
        for a in range(first_attn, len(back)):
            coef = state.cache.pattern[a][:, t, s] / state.cache.ln1_scale[a, s]
            per_head = (coef * (back[a] @ centre(vector))).tolist()
            heads.update({(a, h): v for h, v in enumerate(per_head)})
        out[source] = EdgeBreakdown(total, residual, heads, total - residual - sum(heads.values()))
    return out


def _target_row(state: PromptState, target: int) -> tuple[int, int]:
    for layer, targets in enumerate(state.targets):
        hit = (targets.nodes == target).nonzero(as_tuple=True)[0]
        if hit.numel():
            return layer, int(hit[0])
    raise InputError(f"node {state.nodes.node_id(target)} is not a feature or logit target")


def _source_vector(state: PromptState, source: int) -> tuple[Tensor, int] | None:
    """The source's residual-stream vector and the first attention layer that can carry it;
    None for a node with none (a target's constant, a remainder)."""
    slabs = [(slab, layer + 1) for layer, slab in enumerate(state.layer_slabs)]
    slabs += [(slab, layer + 1) for layer, slab in enumerate(state.attn_bias_slabs)]
    slabs.append((state.embed_slab, 0))
    for slab, first in slabs:
        vector = slab.find(source)
        if vector is not None:
            return vector, first
    return None
