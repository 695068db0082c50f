"""Everything one prompt's attribution needs, computed once from the real forward pass:
the row layout and node table, the source vectors grouped by layer and position (slabs), the
frozen attention layers, and the targets."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.graph import Code, NodeTable
from circuitstore.ingest.attribution.layout import LAYERED_BIASES, BiasKind, RowLayout
from circuitstore.ingest.attribution.slabs import Slab, layer_slab, per_pos_slab
from circuitstore.ingest.config import Mode
from circuitstore.ingest.model import ForwardCache, LoadedModel, transcoder_input
from circuitstore.ingest.safeload import magnitude_problem
from circuitstore.ingest.transcoder.types import Transcoder, TranscoderSet
from circuitstore.schema.errors import TranscoderLoadError


@dataclass(frozen=True)
class AttentionOp:
    """One frozen attention layer as the backward pass uses it, with its norms folded in:
    ln1's centring into W_V (LayerNorm: rows centred over d_model), ln1's scale into the
    pattern's columns, and a post-attention norm's scale (Gemma-2) into its rows (its gain is
    in W_O already)."""

    W_O_t: Float[Tensor, "d_model heads_x_dhead"]
    W_V_centred_t: Float[Tensor, "heads_x_dhead d_model"]
    W_V_centred_heads: Float[Tensor, "n_heads d_head d_model"]
    pattern_scaled: Float[Tensor, "n_heads pos pos"]  # A[h, t, s] / ln1_scale[s]
    pattern_tsh: Float[Tensor, "pos pos n_heads"]  # the same, target-major (lumped mode's rows)


def attention_op(model: LoadedModel, cache: ForwardCache, layer: int) -> AttentionOp:
    """One layer's frozen attention, as the linear map the backward pass applies."""
    w = model.weights
    H, dh, d = w.W_O.shape[1], w.W_O.shape[2], model.d_model
    heads = model.readin(w.W_V[layer].permute(0, 2, 1)).contiguous()  # (H, dh, d)
    pattern = cache.pattern[layer] / cache.ln1_scale[layer][None, None, :]
    if cache.attn_out_scale is not None:
        pattern = pattern / cache.attn_out_scale[layer][None, :, None]
    pattern = pattern.contiguous()
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
    scale: Float[Tensor, " k"]  # the norm's scale at the target's input
    const: Float[Tensor, " k"]  # the constant part of the target
    const_nodes: Int[Tensor, " k"]
    centred: bool = True  # the norm at the target's input removes the mean (LayerNorm)

    def vectors(self, rows: slice | Int[Tensor, " r"] = ALL) -> Float[Tensor, "r d_model"]:
        """Gradients of the targets w.r.t. their residual input (one layer's at a time: every
        layer's at once would be as big as the feature vectors)."""
        columns = self.columns[rows]
        # Columns of a (d_model, n) matrix are strided: read them in ascending order, so each
        # row of the readout is scanned forward (a layer's 4,000 columns of a 768 x 24,576 W_enc:
        # 5 ms, against 62 ms gathered chunk by chunk in target order).
        order = torch.argsort(columns)
        picked = torch.index_select(self.readout, 1, columns[order]).T
        # Weights may be stored narrower than the engine computes (bfloat16): widen the picks.
        out = torch.empty(picked.shape, dtype=self.scale.dtype, device=picked.device)
        out[order] = picked.to(out.dtype)
        out = centre(out) if self.centred else out
        return out / self.scale[rows, None]


@dataclass(frozen=True)
class PromptState:
    """One prompt's frozen forward pass and node table: what the engine attributes over."""

    model: LoadedModel
    cache: ForwardCache
    layout: RowLayout
    nodes: NodeTable
    layer_slabs: tuple[Slab, ...]  # per layer: features; per position error, b_dec_out, attn bias
    attn_bias_slabs: tuple[Slab, ...]  # per layer: the attention bias alone (a feature's own layer)
    embed_slab: Slab
    attention: tuple[AttentionOp, ...]
    skips: tuple[SkipOp | None, ...]  # per layer: the skip connection, or None
    cross_layer: bool  # features write to later layers too: a source can sit in several slabs
    targets: tuple[Targets, ...]  # index = layer; the last one is the logits
    mode: Mode

    @property
    def n_features(self) -> int:
        """How many feature nodes the prompt has."""
        return self.layout.n_features

    @property
    def split(self) -> bool:
        """Whether the layer slabs leave the attention bias out: with a skip connection the MLP
        output and the attention bias below it see different gradients."""
        return any(skip is not None for skip in self.skips)


def centre(x: Float[Tensor, "... d_model"]) -> Float[Tensor, "... d_model"]:
    """LayerNorm's mean removal; symmetric, so it is also its own transpose for gradients."""
    return x - x.mean(dim=-1, keepdim=True)


def feature_activations(
    tcs: TranscoderSet, cache: ForwardCache
) -> list[tuple[Float[Tensor, "pos d_tc"], Float[Tensor, "pos d_tc"]]]:
    """(pre-activation, activation) at every layer and position."""
    out = []
    for layer, tc in enumerate(tcs.transcoders):
        pre = tc.preactivation(transcoder_input(cache, layer, residual=tc.reads_residual))
        out.append((pre, pre * tc.activation.active(pre)))
    return out


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
    """Freeze one prompt's forward pass into the engine's node table and slabs."""
    L, T = model.n_layers, int(cache.tokens.shape[0])
    # Per layer only the active (pos, index) rows, sorted by pos then index, and their values
    # (where z > 0, z equals the pre-activation): the dense (pos, d_tc) maps are dropped at once.
    active, acts = [], []
    for layer, tc in enumerate(tcs.transcoders):
        pre = tc.preactivation(transcoder_input(cache, layer, residual=tc.reads_residual))
        problem = magnitude_problem(pre)
        if problem is not None:  # finite but huge W_enc or b_enc: caught here, before any write
            raise TranscoderLoadError(
                f"{tc.source}: the pre-activations of layer {layer} {problem} on this prompt; "
                "its W_enc or b_enc is degenerate"
            )
        rows = tc.activation.active(pre).nonzero()
        active.append(rows)
        acts.append(pre[rows[:, 0], rows[:, 1]])
        del pre
    logits = top_logits(cache, logit_top_k, logit_positions)
    counts = tuple(int(a.shape[0]) for a in active)
    layout = RowLayout(L, T, counts, len(logits), lumped=mode == "lumped")
    targets = [
        _feature_targets(model, tcs, cache, active[layer], layer, layout) for layer in range(L)
    ]
    targets.append(_logit_targets(model, cache, logits, layout))
    attn_bias = model.weights.attn_bias[:, None, :].expand(L, T, -1)
    if cache.attn_out_scale is not None:
        attn_bias = attn_bias / cache.attn_out_scale[:, :, None]
    split = tcs.has_skip  # the MLP output and the attention bias see different gradients
    return PromptState(
        model=model,
        cache=cache,
        layout=layout,
        nodes=_node_table(model, cache, acts, active, logits, layout),
        layer_slabs=tuple(
            layer_slab(
                tcs,
                cache,
                acts,
                active,
                layer,
                layout,
                attn_bias=None if split else attn_bias[layer],
            )
            for layer in range(L)
        ),
        attn_bias_slabs=tuple(
            per_pos_slab(attn_bias[layer], layout.bias(BiasKind.ATTN, layer, 0))
            for layer in range(L)
        ),
        embed_slab=per_pos_slab(cache.embed, layout.embedding(0)),
        attention=tuple(attention_op(model, cache, layer) for layer in range(L)),
        skips=tuple(_skip(model, cache, tc) for tc in tcs.transcoders),
        targets=tuple(targets),
        mode=mode,
        cross_layer=tcs.cross_layer,
    )


def _feature_targets(
    model: LoadedModel,
    tcs: TranscoderSet,
    cache: ForwardCache,
    active: Int[Tensor, "k 2"],
    layer: int,
    layout: RowLayout,
) -> Targets:
    tc = tcs[layer]
    pos, index = active[:, 0], active[:, 1]
    # A transcoder reading the raw residual stream has no norm before it: no scale, no centring.
    scale = cache.ln2_scale[layer, pos]
    return Targets(
        layer=layer,
        nodes=layout.features(layer) + torch.arange(pos.shape[0]),
        pos=pos,
        readout=tc.W_enc,
        columns=index,
        scale=torch.ones_like(scale) if tc.reads_residual else scale,
        const=(tc.b_enc - tc.b_dec @ tc.W_enc.to(tc.b_dec.dtype))[index].to(model.dtype),
        const_nodes=layout.bias(BiasKind.ENC, layer, pos),
        centred=model.centred and not tc.reads_residual,
    )


@dataclass(frozen=True)
class SkipOp:
    """A transcoder's skip connection as the backward pass uses it: x's gradient is
    readin(W_skip g) / scale, or W_skip g where the transcoder reads the raw residual stream."""

    W_skip_t: Float[Tensor, "d_model d_model"]
    inv_scale: Float[Tensor, " pos"]  # 1 / ln2's scale, or ones
    centred: bool

    def back(self, g: Float[Tensor, "*b d_model"], inv_scale: Tensor) -> Tensor:
        """The gradient at the MLP's input of `g` at its output, through the skip alone."""
        out = g @ self.W_skip_t
        if self.centred:
            out = out - out.mean(dim=-1, keepdim=True)
        return out * inv_scale


def _skip(model: LoadedModel, cache: ForwardCache, tc: Transcoder) -> SkipOp | None:
    if tc.W_skip is None:
        return None
    inv = 1.0 / cache.ln2_scale[tc.layer]
    return SkipOp(
        W_skip_t=tc.W_skip.T.to(model.dtype).contiguous(),
        inv_scale=torch.ones_like(inv) if tc.reads_residual else inv,
        centred=model.centred and not tc.reads_residual,
    )


def _logit_targets(
    model: LoadedModel, cache: ForwardCache, logits: list[tuple[int, int]], layout: RowLayout
) -> Targets:
    pos = torch.tensor([p for p, _ in logits], dtype=torch.long)
    tok = torch.tensor([v for _, v in logits], dtype=torch.long)
    return Targets(
        layer=layout.n_layers,
        nodes=layout.logit(torch.arange(len(logits))),
        pos=pos,
        readout=model.weights.W_U,
        columns=tok,
        scale=cache.final_scale[pos],
        const=model.weights.b_U[tok],
        const_nodes=layout.bias(BiasKind.UNEMBED, 0, pos),
        centred=model.centred,
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
    layout: RowLayout,
) -> NodeTable:
    """One row per node, in the layout's order (see `layout`)."""
    L, T, dt = layout.n_layers, layout.n_pos, model.dtype
    parts: list[Part] = []
    for layer, rows in enumerate(active):
        p, i, z = rows[:, 0], rows[:, 1], acts[layer]
        parts.append(_part(Code.FEATURE, torch.full_like(p, layer), p, i, z, z))
    ar, none_t, zeros_t = torch.arange(T), torch.full((T,), -1), torch.zeros(T, dtype=dt)
    grid_l, grid_p = torch.arange(L).repeat_interleave(T), ar.repeat(L)
    zeros_lt = torch.zeros(L * T, dtype=dt)
    parts.append(_part(Code.ERROR, grid_l, grid_p, torch.zeros_like(grid_l), zeros_lt, zeros_lt))
    parts.append(_part(Code.EMBEDDING, none_t, ar, cache.tokens.long(), zeros_t, zeros_t))
    for kind in LAYERED_BIASES:
        name = torch.full_like(grid_l, kind)
        parts.append(_part(Code.BIAS, grid_l, grid_p, name, zeros_lt, zeros_lt))
    unembed = torch.full_like(ar, BiasKind.UNEMBED)
    parts.append(_part(Code.BIAS, none_t, ar, unembed, zeros_t, zeros_t))
    lp = torch.tensor([p for p, _ in logits], dtype=torch.long)
    lt = torch.tensor([v for _, v in logits], dtype=torch.long)
    lv = cache.logits[lp, lt]
    parts.append(_part(Code.LOGIT, torch.full_like(lp, -1), lp, lt, torch.zeros_like(lv), lv))
    if layout.lumped:
        # One remainder per target (features, then logits); its index is the target's row.
        rows = torch.cat([torch.arange(layout.n_features), layout.logit(torch.arange(len(logits)))])
        layer_of = torch.cat(
            [torch.full_like(a[:, 0], layer) for layer, a in enumerate(active)]
            + [torch.full_like(lp, -1)]
        )
        pos_of = torch.cat([a[:, 0] for a in active] + [lp])
        zeros = torch.zeros(rows.shape[0], dtype=dt)
        parts.append(_part(Code.REMAINDER, layer_of, pos_of, rows, zeros, zeros))
    table = NodeTable(*(torch.cat([p[k] for p in parts]) for k in range(6)))
    assert len(table) == layout.size, "the node table and the row layout disagree"
    return table


def logit_seeds(state: PromptState) -> Tensor:
    """Influence seeds: the chosen logits' probabilities (after any soft-cap), renormalised to
    sum to one."""
    seeds = torch.zeros(len(state.nodes), dtype=torch.float64)
    logits = state.targets[-1]
    raw = state.cache.logits.to(torch.float64)
    cap = state.model.softcap
    probs = torch.softmax(raw if cap is None else cap * torch.tanh(raw / cap), dim=-1)
    tok = state.nodes.index[logits.nodes]
    p = probs[logits.pos, tok]
    seeds[logits.nodes] = p / p.sum().clamp_min(1e-30)
    return seeds
