"""The global part of the store for one model + transcoder set: its TranscoderSet node, one
Feature node per (layer, index), and the input-independent views, computed once per layer."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder import Transcoder, TranscoderSet
from circuitstore.ingest.writer import TranscoderSetNode
from circuitstore.schema.model import content_hash
from circuitstore.schema.names import CLT, TRANSCODER, FeatureFamily, FeatureKey

# Features per matmul: large enough to keep the matmul efficient, small enough that a chunk
# of logit-lens scores (CHUNK x d_vocab floats) stays near 200 MB at GPT-2 scale.
CHUNK = 1024


def transcoder_set_info(
    model: LoadedModel,
    tcs: TranscoderSet,
    provenance: dict[str, Any],
    graph_hash: str,
    graph_config: dict[str, Any],
) -> TranscoderSetNode:
    """The set's id is readable and content-addressed: `<model name>-<12 hex>`, the hex a hash of
    the model's and the transcoders' full weight hashes, so that a changed model in a folder of
    the same name is a new set, never an extension of the old one."""
    # The last part of a hub name or folder path: readable, and free of machine paths.
    base = model.name.rstrip("/").rsplit("/", 1)[-1]
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", base).strip("-") or "model"
    digest = content_hash(provenance["model_hash"], provenance["transcoders_hash"], length=12)
    set_id = f"{name}-{digest}"
    props = {
        "name": set_id,
        # How its features are named and what it is (read back as `TranscoderSetInfo.family`;
        # absent on sets stored before: a per-layer transcoder of GPT-2).
        "featureFamily": features_family(tcs).key,
        "modelFamily": model.family.model_type,
        "model": provenance["model"],
        "modelHash": provenance["model_hash"],
        "transcoders": provenance["transcoders"],
        "hash": provenance["transcoders_hash"],
        "nLayers": tcs.n_layers,
        "dModel": model.d_model,
        "nHeads": model.n_heads,  # ATTR edges number their heads layer * nHeads + head
        "dTranscoder": tcs.d_tc,
    }
    return TranscoderSetNode(set_id, props, graph_hash, graph_config)


def features_family(tcs: TranscoderSet) -> FeatureFamily:
    """The set's feature family: a cross-layer transcoder's features write to later layers."""
    return CLT if tcs.cross_layer else TRANSCODER


def feature_rows(tcs: TranscoderSet, set_id: str) -> Iterator[dict[str, Any]]:
    """One row per feature: its id, name (in the set's family) and firing frequency; the views
    come later, per layer (`layer_views`), so that the set's features exist before the first
    prompt."""
    family = features_family(tcs)
    for layer, tc in enumerate(tcs.transcoders):
        sparsity = tc.log_feature_sparsity
        for index in range(tc.d_tc):
            key = FeatureKey(set_id, layer, index, family)
            props: dict[str, Any] = {
                "transcoderSet": set_id,
                "layer": layer,
                "index": index,
                "name": key.name,
            }
            if sparsity is not None:
                props["logFrequency"] = float(sparsity[index])
            yield {"id": key.id, "props": props}


def layer_views(
    model: LoadedModel, tcs: TranscoderSet, set_id: str, layer: int, top_k: int
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One layer's input-independent views: per feature its logit-lens tokens (and, in layer 0,
    its de-embedding tokens), and the VIRTUAL_WEIGHT rows into its features from every earlier
    layer (`target` and its `sources`, [id, weight] strongest first). A feature's write is all
    it adds to the residual stream (`written`): for a cross-layer transcoder's, its decoders
    into every layer the reader sees.

    Computed in bulk (chunks of features against whole matrices) on the model's device: the
    store wants them for every feature, and at GPT-2 scale they are ~85 TFLOP in all."""
    decode = _decoder(model)
    tc = tcs[layer]
    tokens: list[dict[str, Any]] = []
    virtual: list[dict[str, Any]] = []
    # A per-layer set's are its W_dec (no copies); a CLT's, one sum per earlier layer: fewer
    # tensors than the n(n+1)/2 decoders it holds.
    out = written(tc)
    into = [written(tcs[src], layer) for src in range(layer)]
    for start in range(0, tc.d_tc, CHUNK):
        stop = min(start + CHUNK, tc.d_tc)
        W_U, W_E = model.weights.W_U, model.weights.W_E  # in the weights' dtype, as tc's
        lens = _top_tokens(out[start:stop].to(W_U.dtype) @ W_U, top_k)
        deembed = None
        if layer == 0:
            deembed = _top_tokens((W_E @ tc.W_enc[:, start:stop].to(W_E.dtype)).T, top_k)
        for offset, index in enumerate(range(start, stop)):
            props: dict[str, Any] = {"logitLensTokens": [decode(t) for t in lens[offset]]}
            if deembed is not None:
                props["deembedTokens"] = [decode(t) for t in deembed[offset]]
            tokens.append({"id": FeatureKey(set_id, layer, index).id, "props": props})
        if layer > 0:
            virtual += _virtual_rows(tcs, set_id, layer, start, stop, into, top_k)
    return tokens, virtual


def written(tc: Transcoder, before: int | None = None) -> Tensor:
    """What a layer's features add to the residual stream that layer `before`'s MLP reads (every
    later layer's where None): the sum of their decoders into the MLP outputs of their own layer
    up to `before - 1`. A per-layer transcoder's is its W_dec itself."""
    last = tc.layer + tc.n_ahead
    if before is not None:
        last = min(last, before - 1)
    total = tc.W_dec
    for layer in range(tc.layer + 1, last + 1):
        total = total + tc.decoder_to(layer)
    return total


def _virtual_rows(
    tcs: TranscoderSet,
    set_id: str,
    layer: int,
    start: int,
    stop: int,
    decoders: list[Tensor],
    top_k: int,
) -> list[dict[str, Any]]:
    """Features start..stop of `layer`, each with its top-k earlier features by
    |written[l'][j] . W_enc[l][:, i]| (`decoders`: each earlier layer's `written` into this
    one): a running top-k over source layers, so memory stays at one (chunk x d_tc) score block
    whatever the depth (a concatenation of the earlier decoders alone would be 0.8 GB at GPT-2
    scale)."""
    block = tcs[layer].W_enc[:, start:stop].T.contiguous()  # (chunk, d_model)
    best = _running_top(block, decoders, top_k)
    weights, src_layer, src_index = (t.tolist() for t in best)
    return [
        {
            "target": FeatureKey(set_id, layer, start + col).id,
            "sources": [[FeatureKey(set_id, sl, si).id, w] for w, sl, si in zip(*row, strict=True)],
        }
        for col, row in enumerate(zip(weights, src_layer, src_index, strict=True))
    ]


def _running_top(
    block: torch.Tensor, decoders: list[torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of `block`, the k source features (over all `decoders`) with the largest
    |decoder row . block row|: (weights, source layers, source indices), strongest first."""
    rows = block.shape[0]
    weights = block.new_zeros(rows, 0)
    layers = torch.zeros(rows, 0, dtype=torch.long, device=block.device)
    indices = torch.zeros(rows, 0, dtype=torch.long, device=block.device)
    for src, W_dec in enumerate(decoders):
        scores = block @ W_dec.T  # (chunk, d_tc): rows contiguous, so topk runs along them
        top = scores.abs().topk(min(k, scores.shape[1]), dim=1).indices
        weights = torch.cat([weights, scores.gather(1, top)], dim=1)
        layers = torch.cat([layers, torch.full_like(top, src)], dim=1)
        indices = torch.cat([indices, top], dim=1)
        keep = weights.abs().topk(min(k, weights.shape[1]), dim=1).indices
        weights, layers, indices = (t.gather(1, keep) for t in (weights, layers, indices))
    return weights, layers, indices


def _top_tokens(scores: torch.Tensor, k: int) -> list[list[int]]:
    """Per row, the k highest-scoring token ids."""
    return scores.topk(min(k, scores.shape[1]), dim=1).indices.tolist()


def _decoder(model: LoadedModel) -> Callable[[int], str]:
    tokenizer = model.bridge.tokenizer
    return lambda token_id: str(tokenizer.decode([token_id]))
