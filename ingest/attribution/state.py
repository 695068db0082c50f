"""Everything one prompt's attribution needs, computed once from the real forward pass:
the node table, the source vectors grouped by layer and position, and the targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.graph import Code, NodeTable
from circuitstore.ingest.model import ForwardCache, LoadedModel
from circuitstore.ingest.transcoder.types import TranscoderSet

Mode = Literal["exact", "lumped"]


@dataclass(frozen=True)
class Slab:
    """Source vectors that see the same pulled-back gradient, `per_pos` rows per position so that
    one batched product serves every position: row s * per_pos + k is position s's k-th source.
    Unused rows are zero vectors with node -1 (their products are exact zeros). Positions with
    more sources than `per_pos` put the rest in `spill`, rows for those positions only (`spill_pos`,
    ascending): padding every position to the busiest one's count would cost ~20% more rows on
    a random model and far more where one position is an outlier; batching wins ~50% back."""

    vectors: Float[Tensor, "n d_model"]
    idx: Int[Tensor, " n"]
    per_pos: int
    spill: Slab | None = None
    spill_pos: Int[Tensor, " p"] | None = None

    def spilled(self, width: int) -> int:
        """How many spill positions lie below width."""
        if self.spill_pos is None:
            return 0
        return int(torch.searchsorted(self.spill_pos, width))

    def rows(self, width: int) -> int:
        """How many rows hold the positions < width (main rows first, then spill rows)."""
        spill = self.spill.rows(self.spilled(width)) if self.spill is not None else 0
        return width * self.per_pos + spill

    def source_ids(self, width: int) -> Int[Tensor, " s"]:
        """Node rows (-1: padding) of the sources at positions < width, in column order."""
        main = self.idx[: width * self.per_pos]
        if self.spill is None:
            return main
        return torch.cat([main, self.spill.source_ids(self.spilled(width))])

    def find(self, node: int) -> Float[Tensor, " d_model"] | None:
        hit = (self.idx == node).nonzero(as_tuple=True)[0]
        if hit.numel():
            return self.vectors[int(hit[0])]
        return self.spill.find(node) if self.spill is not None else None


@dataclass(frozen=True)
class AttentionOp:
    """One frozen attention layer as the backward pass uses it, with LayerNorm folded in:
    ln1's centring into W_V (rows centred over d_model), ln1's scale into the pattern's columns."""

    W_O_t: Float[Tensor, "d_model heads_x_dhead"]
    W_V_centred_t: Float[Tensor, "heads_x_dhead d_model"]
    W_V_centred_heads: Float[Tensor, "n_heads d_head d_model"]
    pattern_scaled: Float[Tensor, "n_heads pos pos"]  # A[h, t, s] / ln1_scale[s]
    pattern_tsh: Float[Tensor, "pos pos n_heads"]  # the same, target-major (lumped mode's rows)


def attention_op(model: LoadedModel, cache: ForwardCache, layer: int) -> AttentionOp:
    w = model.weights
    H, dh, d = w.W_O.shape[1], w.W_O.shape[2], model.d_model
    heads = centre(w.W_V[layer].permute(0, 2, 1)).contiguous()  # (H, dh, d)
    pattern = (cache.pattern[layer] / cache.ln1_scale[layer][None, None, :]).contiguous()
    return AttentionOp(
        W_O_t=w.W_O[layer].reshape(H * dh, d).T,  # a view: GEMMs read transposed operands as is
        W_V_centred_t=heads.reshape(H * dh, d),
        W_V_centred_heads=heads,
        pattern_scaled=pattern,
        pattern_tsh=pattern.permute(1, 2, 0).contiguous(),
    )


ALL = slice(None)


@dataclass(frozen=True)
class Targets:
    """The targets of one layer (n_layers = the logits), sorted by position."""

    layer: int
    nodes: Int[Tensor, " k"]
    pos: Int[Tensor, " k"]
    readout: Float[Tensor, "d_model n"]  # W_enc or W_U: target i reads column columns[i]
    columns: Int[Tensor, " k"]
    scale: Float[Tensor, " k"]  # the LayerNorm scale at the target's input
    const: Float[Tensor, " k"]  # the constant part of the target
    const_nodes: Int[Tensor, " k"]

    def vectors(self, rows: slice | Int[Tensor, " r"] = ALL) -> Float[Tensor, "r d_model"]:
        """Gradients of the targets w.r.t. their residual input (one layer's at a time: every
        layer's at once would be as big as the feature vectors)."""
        columns = self.columns[rows]
        # Columns of a (d_model, n) matrix are strided: read them in ascending order, so each
        # row of the readout is scanned forward (a layer's 4,000 columns of a 768 x 24,576 W_enc:
        # 5 ms, against 62 ms gathered chunk by chunk in target order).
        order = torch.argsort(columns)
        picked = torch.index_select(self.readout, 1, columns[order]).T
        out = torch.empty_like(picked, memory_format=torch.contiguous_format)
        out[order] = picked
        return centre(out) / self.scale[rows, None]


@dataclass(frozen=True)
class PromptState:
    model: LoadedModel
    cache: ForwardCache
    nodes: NodeTable
    n_features: int
    layer_slabs: tuple[Slab, ...]  # per layer: features; per position error, b_dec_out, attn bias
    attn_bias_slabs: tuple[Slab, ...]  # per layer: the attention bias alone (a feature's own layer)
    embed_slab: Slab
    attention: tuple[AttentionOp, ...]
    targets: tuple[Targets, ...]  # index = layer; the last one is the logits
    remainder_base: int  # lumped mode: remainder of target row r is node remainder_base + r
    mode: Mode


def centre(x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """LayerNorm's mean removal; symmetric, so it is also its own transpose for gradients."""
    return x - x.mean(dim=-1, keepdim=True)


def feature_activations(
    tcs: TranscoderSet, cache: ForwardCache
) -> list[tuple[Float[Tensor, "pos d_tc"], Float[Tensor, "pos d_tc"]]]:
    """(pre-activation, activation) at every layer and position."""
    out = []
    for layer, tc in enumerate(tcs.transcoders):
        pre = tc.preactivation(cache.ln2_normalized[layer])
        out.append((pre, torch.relu(pre)))
    return out


def _bias_rows(base: int, n_layers: int, n_pos: int, name: int, layer: int, pos: int) -> int:
    return base + (name * n_layers + layer) * n_pos + pos


def top_logits(
    cache: ForwardCache, k: int, positions: Literal["last", "all"]
) -> list[tuple[int, int]]:
    """(pos, token) of the logit targets: top-k by value at the last position, or at every one."""
    n_pos = cache.logits.shape[0]
    chosen = range(n_pos) if positions == "all" else [n_pos - 1]
    k = min(k, cache.logits.shape[1])
    return [(p, int(v)) for p in chosen for v in torch.topk(cache.logits[p], k).indices.tolist()]


def build_state(
    model: LoadedModel,
    tcs: TranscoderSet,
    cache: ForwardCache,
    *,
    mode: Mode,
    logit_top_k: int,
    logit_positions: Literal["last", "all"],
) -> PromptState:
    L, T = model.n_layers, int(cache.tokens.shape[0])
    # Per layer only the active (pos, index) rows, sorted by pos then index, and their values
    # (where z > 0, z equals the pre-activation): the dense (pos, d_tc) maps are dropped at once.
    active, acts = [], []
    for layer, tc in enumerate(tcs.transcoders):
        pre = tc.preactivation(cache.ln2_normalized[layer])
        rows = (pre > 0).nonzero()
        active.append(rows)
        acts.append(pre[rows[:, 0], rows[:, 1]])
        del pre
    n_feat = sum(a.shape[0] for a in active)
    feat_off = [0]
    for a in active:
        feat_off.append(feat_off[-1] + a.shape[0])
    err_base = n_feat
    emb_base = err_base + L * T
    bias_base = emb_base + T
    logit_base = bias_base + 3 * L * T + T
    logits = top_logits(cache, logit_top_k, logit_positions)
    remainder_base = logit_base + len(logits)
    nodes = _node_table(model, cache, acts, active, logits, mode, remainder_base)

    attn_bias = [
        (model.weights.attn_bias[layer].expand(T, -1), _bias_rows(bias_base, L, T, 0, layer, 0))
        for layer in range(L)
    ]
    slabs = tuple(
        _layer_slab(
            model,
            tcs,
            cache,
            acts,
            active[layer],
            layer,
            feat_off[layer],
            err_base,
            bias_base,
            attn_bias[layer],
        )
        for layer in range(L)
    )
    attn_slabs = tuple(_per_pos_slab(*bias) for bias in attn_bias)
    emb = model.weights.W_E[cache.tokens] + model.weights.W_pos[:T]
    targets = [
        _feature_targets(tcs, cache, active[layer], layer, feat_off[layer], bias_base, L, T)
        for layer in range(L)
    ]
    targets.append(_logit_targets(model, cache, logits, logit_base, bias_base, L, T))
    return PromptState(
        model=model,
        cache=cache,
        nodes=nodes,
        n_features=n_feat,
        layer_slabs=slabs,
        attn_bias_slabs=attn_slabs,
        embed_slab=_per_pos_slab(emb, emb_base),
        attention=tuple(attention_op(model, cache, layer) for layer in range(L)),
        targets=tuple(targets),
        remainder_base=remainder_base,
        mode=mode,
    )


def _per_pos_slab(vectors: Float[Tensor, "pos d_model"], first_row: int) -> Slab:
    """One vector per position: position s is node first_row + s."""
    T = int(vectors.shape[0])
    return Slab(vectors.contiguous(), first_row + torch.arange(T), per_pos=1)


def _layer_slab(
    model: LoadedModel,
    tcs: TranscoderSet,
    cache: ForwardCache,
    acts: list[Tensor],
    active: Int[Tensor, "k 2"],
    layer: int,
    first_feature: int,
    err_base: int,
    bias_base: int,
    attn_bias: tuple[Float[Tensor, "pos d_model"], int],
) -> Slab:
    """Per position: the active features' z_j * W_dec[j], then the error term, b_dec_out and
    the layer's attention output bias (all of them see the gradient at resid_mid)."""
    L, T, d = model.n_layers, int(cache.tokens.shape[0]), model.d_model
    tc = tcs[layer]
    pos, index = active[:, 0], active[:, 1]
    feats = acts[layer][:, None] * tc.W_dec[index]
    # Error = real MLP output minus the transcoder's whole output (the same feature vectors),
    # so features + bias + error reproduce hook_mlp_out.
    decoded = torch.zeros_like(cache.mlp_out[layer]).index_add_(0, pos, feats)
    error = cache.mlp_out[layer] - (decoded + tc.b_dec_out)
    ar = torch.arange(T)
    extra = torch.stack([error, tc.b_dec_out.expand(T, -1), attn_bias[0]], dim=1)
    extra_idx = torch.stack(
        [
            err_base + layer * T + ar,
            _bias_rows(bias_base, L, T, 1, layer, 0) + ar,
            attn_bias[1] + ar,
        ],
        dim=1,
    )
    # Per position: its features (sorted by index), then the 3 extras.
    n_at = torch.bincount(pos, minlength=T)
    rank = torch.arange(pos.shape[0]) - (torch.cumsum(n_at, 0) - n_at)[pos]
    return _padded_slab(
        torch.cat([feats, extra.reshape(-1, d)]),
        torch.cat([first_feature + torch.arange(pos.shape[0]), extra_idx.reshape(-1)]),
        torch.cat([pos, ar.repeat_interleave(3)]),
        torch.cat([rank, (n_at[:, None] + torch.arange(3)).reshape(-1)]),
        n_at + 3,
        T,
    )


# Rows per position in a slab's main block: enough for this share of the positions.
MAIN_ROWS_QUANTILE = 0.9


def _padded_slab(
    vectors: Float[Tensor, "n d_model"],
    idx: Int[Tensor, " n"],
    pos: Int[Tensor, " n"],
    rank: Int[Tensor, " n"],
    counts: Int[Tensor, " pos"],
    T: int,
    quantile: float = MAIN_ROWS_QUANTILE,
) -> Slab:
    """Rows (position, rank within it) into the padded layout: `per_pos` rows per position, as
    many as 90% of the positions need; the busiest positions' other rows go to a spill slab
    (padded to its busiest position, so it has no spill of its own)."""
    m = int(torch.quantile(counts.double(), quantile).ceil())
    main = rank < m
    out = torch.zeros(T * m, vectors.shape[1], dtype=vectors.dtype)
    out_idx = torch.full((T * m,), -1, dtype=torch.long)
    out[pos[main] * m + rank[main]] = vectors[main]
    out_idx[pos[main] * m + rank[main]] = idx[main]
    if bool(main.all()):
        return Slab(out, out_idx, per_pos=m)
    spill_pos = (counts > m).nonzero(as_tuple=True)[0]
    at = torch.searchsorted(spill_pos, pos[~main])  # the spill position's number
    rest = counts[spill_pos] - m
    spill = _padded_slab(vectors[~main], idx[~main], at, rank[~main] - m, rest, len(spill_pos), 1.0)
    return Slab(out, out_idx, per_pos=m, spill=spill, spill_pos=spill_pos)


def _feature_targets(
    tcs: TranscoderSet,
    cache: ForwardCache,
    active: Int[Tensor, "k 2"],
    layer: int,
    first_feature: int,
    bias_base: int,
    L: int,
    T: int,
) -> Targets:
    tc = tcs[layer]
    pos, index = active[:, 0], active[:, 1]
    return Targets(
        layer=layer,
        nodes=first_feature + torch.arange(pos.shape[0]),
        pos=pos,
        readout=tc.W_enc,
        columns=index,
        scale=cache.ln2_scale[layer, pos],
        const=(tc.b_enc - tc.b_dec @ tc.W_enc)[index],
        const_nodes=_bias_rows(bias_base, L, T, 2, layer, 0) + pos,
    )


def _logit_targets(
    model: LoadedModel,
    cache: ForwardCache,
    logits: list[tuple[int, int]],
    base: int,
    bias_base: int,
    L: int,
    T: int,
) -> Targets:
    pos = torch.tensor([p for p, _ in logits], dtype=torch.long)
    tok = torch.tensor([v for _, v in logits], dtype=torch.long)
    return Targets(
        layer=L,
        nodes=base + torch.arange(len(logits)),
        pos=pos,
        readout=model.weights.W_U,
        columns=tok,
        scale=cache.final_scale[pos],
        const=model.weights.b_U[tok],
        const_nodes=bias_base + 3 * L * T + pos,
    )


Part = tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]


def _part(code: int, layer: Tensor, pos: Tensor, index: Tensor, act: Tensor, value: Tensor) -> Part:
    return (torch.full_like(pos, code), layer, pos, index, act, value)


def _node_table(
    model: LoadedModel,
    cache: ForwardCache,
    acts: list[Tensor],
    active: list[Tensor],
    logits: list[tuple[int, int]],
    mode: Mode,
    remainder_base: int,
) -> NodeTable:
    """Rows in this order: features (by layer, pos, index), errors (layer, pos), embeddings,
    biases (attn, mlp, enc by layer and pos; then unembed by pos), logits, remainders."""
    L, T, dt = model.n_layers, int(cache.tokens.shape[0]), model.dtype
    parts: list[Part] = []
    for layer, rows in enumerate(active):
        p, i, z = rows[:, 0], rows[:, 1], acts[layer]
        parts.append(_part(Code.FEATURE, torch.full_like(p, layer), p, i, z, z))
    ar, none_t, zeros_t = torch.arange(T), torch.full((T,), -1), torch.zeros(T, dtype=dt)
    grid_l, grid_p = torch.arange(L).repeat_interleave(T), ar.repeat(L)
    zeros_lt = torch.zeros(L * T, dtype=dt)
    parts.append(_part(Code.ERROR, grid_l, grid_p, torch.zeros_like(grid_l), zeros_lt, zeros_lt))
    parts.append(_part(Code.EMBEDDING, none_t, ar, cache.tokens.long(), zeros_t, zeros_t))
    for name in range(3):
        parts.append(
            _part(Code.BIAS, grid_l, grid_p, torch.full_like(grid_l, name), zeros_lt, zeros_lt)
        )
    parts.append(_part(Code.BIAS, none_t, ar, torch.full_like(ar, 3), zeros_t, zeros_t))
    lp = torch.tensor([p for p, _ in logits], dtype=torch.long)
    lt = torch.tensor([v for _, v in logits], dtype=torch.long)
    lv = cache.logits[lp, lt]
    parts.append(_part(Code.LOGIT, torch.full_like(lp, -1), lp, lt, torch.zeros_like(lv), lv))
    if mode == "lumped":
        # One remainder per target; target rows are the features, then the logits.
        n_feat = sum(a.shape[0] for a in active)
        rows = torch.cat(
            [torch.arange(n_feat), remainder_base - len(logits) + torch.arange(len(logits))]
        )
        layer_of = torch.cat(
            [torch.full_like(a[:, 0], layer) for layer, a in enumerate(active)]
            + [torch.full_like(lp, -1)]
        )
        pos_of = torch.cat([a[:, 0] for a in active] + [lp])
        zeros = torch.zeros(rows.shape[0], dtype=dt)
        parts.append(_part(Code.REMAINDER, layer_of, pos_of, rows, zeros, zeros))
    return NodeTable(*(torch.cat([p[k] for p in parts]) for k in range(6)))
