"""The per-feature reference for `transcoder_set`'s bulk views: what a feature reads from and
writes to, from weights alone, one feature at a time (the tests compare the two)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder.types import TranscoderSet
from circuitstore.schema.errors import InputError


@dataclass(frozen=True)
class Neighbour:
    layer: int
    index: int
    weight: float


@dataclass(frozen=True)
class TokenScore:
    token_id: int
    token: str
    score: float


def _check(tcs: TranscoderSet, layer: int, index: int) -> None:
    if not 0 <= layer < tcs.n_layers:
        raise InputError(f"layer {layer} out of range 0..{tcs.n_layers - 1}")
    if not 0 <= index < tcs[layer].d_tc:
        raise InputError(f"feature {index} out of range 0..{tcs[layer].d_tc - 1} at layer {layer}")


def writes(tcs: TranscoderSet, source: int, reader: int | None = None) -> Tensor:
    """Layer `source`'s features' writes into the residual stream that layer `reader` reads
    (every layer's where None): their decoders into the MLP outputs of layers source ..
    reader - 1, one by one (a per-layer transcoder writes only its own: W_dec)."""
    tc = tcs[source]
    end = tcs.n_layers if reader is None else reader
    parts = [tc.W_dec]
    for m in range(source + 1, end):
        ahead = m - source
        if tc.W_dec_ahead is not None and ahead <= tc.W_dec_ahead.shape[1]:
            parts.append(tc.W_dec_ahead[:, ahead - 1])
    return torch.stack(parts).sum(0)


def virtual_weights_in(
    tcs: TranscoderSet, layer: int, index: int, *, k: int = 10
) -> list[Neighbour]:
    """Earlier features writing most into this one's encoder: writes[l'->l][j] . W_enc[l][:, i]."""
    _check(tcs, layer, index)
    enc = tcs[layer].W_enc[:, index]
    scores = [(source, writes(tcs, source, layer) @ enc) for source in range(layer)]
    return _top(scores, k)


def virtual_weights_out(
    tcs: TranscoderSet, layer: int, index: int, *, k: int = 10
) -> list[Neighbour]:
    """Later features this one writes into most strongly: writes[l->l'][i] . W_enc[l'][:, j]."""
    _check(tcs, layer, index)
    scores = [
        (target, writes(tcs, layer, target)[index] @ tcs[target].W_enc)
        for target in range(layer + 1, tcs.n_layers)
    ]
    return _top(scores, k)


def _top(scores: list[tuple[int, Float[Tensor, " d_tc"]]], k: int) -> list[Neighbour]:
    """Top k by |weight| across all the given layers."""
    if not scores:
        return []
    flat = torch.cat([s for _, s in scores])
    layers = torch.cat([torch.full((s.shape[0],), layer) for layer, s in scores])
    starts = torch.cumsum(torch.tensor([0] + [s.shape[0] for _, s in scores[:-1]]), 0)
    offsets = torch.cat(
        [torch.full((s.shape[0],), int(o)) for o, (_, s) in zip(starts, scores, strict=True)]
    )
    top = torch.topk(flat.abs(), min(k, flat.shape[0])).indices
    return [Neighbour(int(layers[i]), int(i - offsets[i]), float(flat[i])) for i in top]


def deembedding(
    model: LoadedModel, tcs: TranscoderSet, index: int, *, k: int = 10
) -> list[TokenScore]:
    """Tokens whose embedding excites a layer-0 feature most: W_E @ W_enc[0][:, i]."""
    _check(tcs, 0, index)
    scores = model.weights.W_E @ tcs[0].W_enc[:, index].to(model.dtype)
    return _tokens(model, scores, k)


def logit_lens(
    model: LoadedModel, tcs: TranscoderSet, layer: int, index: int, *, k: int = 10
) -> list[TokenScore]:
    """Output tokens a feature promotes most: all it writes, writes[l][i] @ W_U."""
    _check(tcs, layer, index)
    scores = writes(tcs, layer)[index].to(model.dtype) @ model.weights.W_U
    return _tokens(model, scores, k)


def _tokens(model: LoadedModel, scores: Float[Tensor, " d_vocab"], k: int) -> list[TokenScore]:
    top = torch.topk(scores, min(k, scores.shape[0])).indices.tolist()
    decode = model.bridge.tokenizer.decode
    return [TokenScore(t, decode([t]), float(scores[t])) for t in top]
