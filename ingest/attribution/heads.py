"""One edge broken down by path: same-position residual, each single attention head, and the
paths through two or more attention layers (what lumped mode folds into its remainder)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from circuitstore.ingest.attribution.engine import _chunk
from circuitstore.ingest.attribution.state import PromptState, centre
from circuitstore.schema.errors import InputError


@dataclass(frozen=True)
class EdgeBreakdown:
    """total = residual + sum(heads.values()) + multi_layer."""

    total: float
    residual: float
    heads: dict[tuple[int, int], float]  # (attention layer, head) -> weight through it alone
    multi_layer: float


def edge_by_head(state: PromptState, source: int, target: int) -> EdgeBreakdown:
    """Break the edge between two node rows of the full (unpruned) table down by attention head."""
    layer, rank = _target_row(state, target)
    targets = state.targets[layer]
    chunk = _chunk(dataclasses.replace(state, mode="exact"), targets, slice(rank, rank + 1))
    cols = (chunk.sources == source).nonzero(as_tuple=True)[0]
    if cols.numel() == 0:
        raise InputError(
            f"node {state.nodes.node_id(source)} is not a source of {state.nodes.node_id(target)}"
        )
    total = float(chunk.dense[0, cols[0]])
    vector, first_attn = _source_vector(state, source)
    u, t = targets.vectors(slice(rank, rank + 1))[0], int(targets.pos[rank])
    s = int(state.nodes.pos[source])
    residual = float(vector @ u) if s == t else 0.0
    last_attn = min(layer, state.model.n_layers - 1)
    heads = {}
    for a in range(first_attn, last_attn + 1):
        per_head = _through_heads(state, a, vector, u, s, t)
        heads.update({(a, h): float(v) for h, v in enumerate(per_head)})
    return EdgeBreakdown(total, residual, heads, total - residual - sum(heads.values()))


def _through_heads(
    state: PromptState,
    layer: int,
    vector: Float[Tensor, " d_model"],
    u: Float[Tensor, " d_model"],
    s: int,
    t: int,
) -> Float[Tensor, " n_heads"]:
    w = state.model.weights
    back = torch.einsum("hde,hef,f->hd", w.W_V[layer], w.W_O[layer], u)  # W_V W_O u per head
    coef = state.cache.pattern[layer][:, t, s] / state.cache.ln1_scale[layer, s]
    return coef * (back @ centre(vector))


def _target_row(state: PromptState, target: int) -> tuple[int, int]:
    for layer, targets in enumerate(state.targets):
        hit = (targets.nodes == target).nonzero(as_tuple=True)[0]
        if hit.numel():
            return layer, int(hit[0])
    raise InputError(f"node {state.nodes.node_id(target)} is not a feature or logit target")


def _source_vector(state: PromptState, source: int) -> tuple[Tensor, int]:
    """The source's residual-stream vector and the first attention layer that can carry it."""
    slabs = [(slab, layer + 1) for layer, slab in enumerate(state.layer_slabs)]
    slabs += [(slab, layer + 1) for layer, slab in enumerate(state.attn_bias_slabs)]
    slabs.append((state.embed_slab, 0))
    for slab, first in slabs:
        vector = slab.find(source)
        if vector is not None:
            return vector, first
    raise InputError(
        f"node {state.nodes.node_id(source)} has no residual-stream vector (a target constant)"
    )
