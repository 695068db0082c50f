"""Source vectors laid out for batched products: per position, the vectors that see the same
pulled-back gradient (features, error term, biases), padded to a common count."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.layout import BiasKind, RowLayout
from circuitstore.ingest.model import ForwardCache, transcoder_input
from circuitstore.ingest.transcoder.types import TranscoderSet


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

    def parts(self) -> list[Slab]:
        """This slab and its spills: every row it holds, in blocks."""
        return [self, *(self.spill.parts() if self.spill is not None else [])]


def per_pos_slab(vectors: Float[Tensor, "pos d_model"], first_row: int) -> Slab:
    """One vector per position: position s is node first_row + s."""
    T = int(vectors.shape[0])
    return Slab(vectors.contiguous(), first_row + torch.arange(T), per_pos=1)


def layer_slab(
    tcs: TranscoderSet,
    cache: ForwardCache,
    acts: list[Tensor],
    active: list[Int[Tensor, "k 2"]],
    layer: int,
    layout: RowLayout,
    attn_bias: Float[Tensor, "pos d_model"] | None,
) -> Slab:
    """Per position: what the layer's MLP output holds (every feature that writes to it times
    its decoder into this layer, then the error term and b_dec_out), and the layer's attention
    output bias where given (it sees the same gradient unless a skip connection runs between).

    A cross-layer transcoder's features write to every layer from their own up, so a feature
    of layer i sits in the slabs of layers i..: its edges sum those products."""
    T = layout.n_pos
    tc = tcs[layer]
    writers = [i for i in range(layer + 1) if i == layer or tcs[i].n_ahead >= layer - i]
    feats_l, ids_l, pos_l = [], [], []
    for i in writers:
        pos_i, index = active[i][:, 0], active[i][:, 1]
        decoder = tcs[i].decoder_to(layer)[index].to(acts[i].dtype)
        feats_l.append(acts[i][:, None] * decoder)
        ids_l.append(layout.features(i) + torch.arange(pos_i.shape[0]))
        pos_l.append(pos_i)
    feats, ids, pos = torch.cat(feats_l), torch.cat(ids_l), torch.cat(pos_l)
    if len(writers) > 1:  # rows per position in one run, as the padded layout wants
        order = torch.argsort(pos, stable=True)
        feats, ids, pos = feats[order], ids[order], pos[order]
    # Error = real MLP output minus the transcoder's whole output (the same feature vectors and
    # the skip connection's linear part), so features + bias + skip + error reproduce it.
    b_out = tc.b_dec_out.to(feats.dtype)
    decoded = torch.zeros_like(cache.mlp_out[layer]).index_add_(0, pos, feats)
    if tc.W_skip is not None:
        x = transcoder_input(cache, layer, residual=tc.reads_residual)
        decoded += x @ tc.W_skip.to(feats.dtype)
    error = cache.mlp_out[layer] - (decoded + b_out)
    ar = torch.arange(T)
    extras = [error, b_out.expand(T, -1)]
    extra_ids = [layout.error(layer, ar), layout.bias(BiasKind.MLP, layer, ar)]
    if attn_bias is not None:
        extras.append(attn_bias)
        extra_ids.append(layout.bias(BiasKind.ATTN, layer, ar))
    n_extra = len(extras)
    extra = torch.stack(extras, dim=1)
    extra_idx = torch.stack(extra_ids, dim=1)
    # Per position: its features (sorted by index), then the extras.
    n_at = torch.bincount(pos, minlength=T)
    rank = torch.arange(pos.shape[0]) - (torch.cumsum(n_at, 0) - n_at)[pos]
    return padded_slab(
        torch.cat([feats, extra.reshape(-1, feats.shape[1])]),
        torch.cat([ids, extra_idx.reshape(-1)]),
        torch.cat([pos, ar.repeat_interleave(n_extra)]),
        torch.cat([rank, (n_at[:, None] + torch.arange(n_extra)).reshape(-1)]),
        n_at + n_extra,
        T,
    )


# Rows per position in a slab's main block: enough for this share of the positions.
MAIN_ROWS_QUANTILE = 0.9


def padded_slab(
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
    spill = padded_slab(vectors[~main], idx[~main], at, rank[~main] - m, rest, len(spill_pos), 1.0)
    return Slab(out, out_idx, per_pos=m, spill=spill, spill_pos=spill_pos)
