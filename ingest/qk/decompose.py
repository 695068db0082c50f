"""One head's attention score split into the bilinear terms of the graph's nodes.

With LayerNorm's scale frozen, the query of head h of layer L at position T is a linear readout
of resid_pre_L at T: q_e = u_e . resid_pre_L[T] + b_Q[e] with u_e = centre(W_Q[L, h][:, e]) /
ln1_scale[L, T], one readout per component e of d_head; the key at S likewise with W_K, b_K.
The attribution engine pulls such readouts back to every source below attention L
(`engine.pull_back` with resid_pre as the input: every layer < L whole, the MLP of L - 1
included), through every earlier attention layer in exact mode, through one in lumped mode
with the rest as one remainder per side. So q_T = sum_i q_i + b_Q (+ remainder) and k_S =
sum_j k_j + b_K (+ remainder), and the score q_T . k_S / sqrt(d_head) (TransformerLens's
`hook_attn_scores`) is the sum of one term per (query contributor, key contributor) pair.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.engine import pull_back
from circuitstore.ingest.attribution.graph import Rows
from circuitstore.ingest.attribution.state import PromptState
from circuitstore.ingest.model import LoadedModel
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import QKPart


def require_qk_tracing(model: LoadedModel) -> None:
    """Refuse, in one line, a model whose family the bilinear split does not hold for."""
    family = model.family
    if family.no_qk_tracing is None:
        return
    raise InputError(
        f"QK tracing is not available for {family.label} ({model.name}): "
        f"{family.no_qk_tracing}; it needs "
        "learned absolute positions and no QK-norm, as in GPT-2"
    )


# Pairwise terms are computed this many at a time (query rows x key rows) while the top ones
# are kept: a GPT-2-scale side has tens of thousands of contributors.
PAIR_BLOCK = 1 << 22


@dataclass(frozen=True)
class Side:
    """One side of a trace: each contributor's part of the head's query (or key) vector."""

    names: tuple[str, ...]  # local ids: graph nodes, then the side's bias (and remainder)
    rows: Int[Tensor, " n"]  # node-table rows (-1: the bias or remainder)
    vectors: Float[Tensor, "n d_head"]
    observed: Float[Tensor, " d_head"]  # the model's own query (or key), `hook_q` / `hook_k`
    pos: int

    def part(self, row: int) -> Float[Tensor, " d_head"]:
        """Node-table row `row`'s vector on this side (zeros where the side lacks it)."""
        return self.vectors[self.rows == row].sum(0)

    @property
    def total(self) -> Float[Tensor, " d_head"]:
        """The sum of the contributors, in float64."""
        return self.vectors.to(torch.float64).sum(0)


@dataclass(frozen=True)
class HeadScore:
    """What the real forward pass says of head (layer, head) at (query, key)."""

    q: Float[Tensor, " d_head"]
    k: Float[Tensor, " d_head"]
    score: float  # hook_attn_scores
    probability: float  # hook_pattern


@dataclass(frozen=True)
class RawTrace:
    """A trace as the ingest side computes it (the command makes a `QKTrace` of it): the
    strongest terms as (query contributor, key contributor, value), a marginal's other side
    None; `score` the model's, `total` the sum of every pairwise term."""

    layer: int
    head: int
    query_pos: int
    key_pos: int
    mode: str
    score: float
    total: float
    probability: float
    n_query: int
    n_key: int
    pairs: tuple[tuple[str, str, float], ...]
    query_side: tuple[tuple[str, float], ...]
    key_side: tuple[tuple[str, float], ...]


def head_score(state: PromptState, layer: int, head: int, query: int, key: int) -> HeadScore:
    """The model's query, key, score and attention probability, from its own hooks."""
    model = state.model
    names = {f"blocks.{layer}.attn.{h}" for h in ("hook_q", "hook_k", "hook_attn_scores")}
    with torch.no_grad():
        _, cache = model.bridge.run_with_cache(
            state.cache.tokens[None], names_filter=lambda n: n in names
        )
    at = f"blocks.{layer}.attn."
    return HeadScore(
        q=cache[at + "hook_q"][0, query, head].to(model.dtype),
        k=cache[at + "hook_k"][0, key, head].to(model.dtype),
        score=float(cache[at + "hook_attn_scores"][0, head, query, key]),
        probability=float(state.cache.pattern[layer, head, query, key]),
    )


def side(state: PromptState, layer: int, head: int, which: str, pos: int, observed: Tensor) -> Side:
    """Side `which` ("q" or "k") of head (layer, head) at `pos`, split into contributors."""
    bridge = state.model.bridge
    W, b = (bridge.W_Q, bridge.b_Q) if which == "q" else (bridge.W_K, bridge.b_K)
    dtype = state.model.dtype
    weight = W[layer, head].detach().to(dtype)  # (d_model, d_head)
    bias = b[layer, head].detach().to(dtype)
    d_head = int(weight.shape[1])
    u = state.model.readin(weight.T) / state.cache.ln1_scale[layer, pos]
    positions = torch.full((d_head,), pos, dtype=torch.long)
    with torch.no_grad():
        dense_t, sources = pull_back(state, layer, positions, u, own_attention=False)
    keep = (sources >= 0) & (dense_t != 0).any(dim=1)
    rows, vectors = sources[keep], dense_t[keep].clone()
    table = Rows(state.nodes)
    names = [table.local_id(int(r)) for r in rows.tolist()]
    extra = [bias]
    names.append(QKPart("bias", layer, head, which, pos).name)
    if state.mode == "lumped":  # the paths through two or more attention layers
        rest = observed.to(torch.float64) - bias.to(torch.float64) - vectors.double().sum(0)
        extra.append(rest.to(dtype))
        names.append(QKPart("remainder", layer, head, which, pos).name)
    pad = torch.full((len(extra),), -1, dtype=torch.long)
    return Side(
        tuple(names),
        torch.cat([rows, pad]),
        torch.cat([vectors, torch.stack(extra)]),
        observed,
        pos,
    )


def trace(
    state: PromptState, layer: int, head: int, query: int, key: int, top: int
) -> tuple[RawTrace, Side, Side]:
    """The trace of head (layer, head) at (query, key), its `top` strongest terms of each part,
    and the two sides it was computed from (what the removal checks read)."""
    model = head_score(state, layer, head, query, key)
    q = side(state, layer, head, "q", query, model.q)
    k = side(state, layer, head, "k", key, model.k)
    scale = math.sqrt(int(q.vectors.shape[1]))
    q_side = (q.vectors.double() @ k.total) / scale
    k_side = (k.vectors.double() @ q.total) / scale
    raw = RawTrace(
        layer=layer,
        head=head,
        query_pos=query,
        key_pos=key,
        mode=state.mode,
        score=model.score,
        total=float(q_side.sum()),
        probability=model.probability,
        n_query=len(q.names),
        n_key=len(k.names),
        pairs=top_pairs(q, k, scale, top),
        query_side=_top_marginals(q.names, q_side, top),
        key_side=_top_marginals(k.names, k_side, top),
    )
    return raw, q, k


def _top_marginals(
    names: tuple[str, ...], values: Float[Tensor, " n"], top: int
) -> tuple[tuple[str, float], ...]:
    order = torch.argsort(values.abs(), descending=True, stable=True)[:top].tolist()
    return tuple((names[i], float(values[i])) for i in order)


def top_pairs(q: Side, k: Side, scale: float, top: int) -> tuple[tuple[str, str, float], ...]:
    """The `top` pairwise terms q_i . k_j / scale by |value|, a block of query rows at a time."""
    n_k = int(k.vectors.shape[0])
    step = max(1, PAIR_BLOCK // max(1, n_k))
    best_v = torch.zeros(0, dtype=q.vectors.dtype)
    best_i = torch.zeros(0, dtype=torch.long)
    keys = k.vectors.T / scale
    for start in range(0, int(q.vectors.shape[0]), step):
        block = (q.vectors[start : start + step] @ keys).flatten()
        values = torch.cat([best_v, block])
        index = torch.cat([best_i, start * n_k + torch.arange(block.shape[0])])
        keep = torch.topk(values.abs(), min(top, int(values.shape[0]))).indices
        best_v, best_i = values[keep], index[keep]
    order = torch.argsort(best_v.abs(), descending=True, stable=True).tolist()
    out = []
    for i in order:
        qi, kj = divmod(int(best_i[i]), n_k)
        out.append((q.names[qi], k.names[kj], float(best_v[i])))
    return tuple(out)
