"""The global part of the store for one model + transcoder set: its TranscoderSet node and one
Feature node per (layer, index), with the input-independent views, computed once."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

import torch

from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder import TranscoderSet
from circuitstore.ingest.writer import TranscoderSetInfo
from circuitstore.schema.model import content_hash
from circuitstore.schema.names import FeatureKey

# Features per matmul: large enough to keep the matmul efficient, small enough that a chunk
# of logit-lens scores (CHUNK x d_vocab floats) stays near 200 MB at GPT-2 scale.
CHUNK = 1024


def transcoder_set_info(
    model: LoadedModel,
    tcs: TranscoderSet,
    provenance: dict[str, Any],
    graph_hash: str,
    graph_config: dict[str, Any],
) -> TranscoderSetInfo:
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
        "model": provenance["model"],
        "modelHash": provenance["model_hash"],
        "transcoders": provenance["transcoders"],
        "hash": provenance["transcoders_hash"],
        "nLayers": tcs.n_layers,
        "dModel": model.d_model,
        "dTranscoder": tcs.d_tc,
    }
    return TranscoderSetInfo(set_id, props, graph_hash, graph_config)


def features_and_views(
    model: LoadedModel, tcs: TranscoderSet, set_id: str, top_k: int
) -> tuple[Iterator[dict[str, Any]], Iterator[dict[str, Any]]]:
    """Feature rows (with their views) and VIRTUAL_WEIGHT rows, generated lazily in chunks.

    Views are computed in bulk (chunks of features against whole matrices) because the store
    wants them for every feature: one matmul per chunk instead of one per feature."""
    return _feature_rows(model, tcs, set_id, top_k), _virtual_rows(tcs, set_id, top_k)


def _feature_rows(
    model: LoadedModel, tcs: TranscoderSet, set_id: str, top_k: int
) -> Iterator[dict[str, Any]]:
    decode = _decoder(model)
    for layer, tc in enumerate(tcs.transcoders):
        sparsity = tc.log_feature_sparsity
        for start in range(0, tc.d_tc, CHUNK):
            stop = min(start + CHUNK, tc.d_tc)
            lens = _top_tokens(tc.W_dec[start:stop].to(model.dtype) @ model.weights.W_U, top_k)
            deembed = None
            if layer == 0:
                scores = (model.weights.W_E @ tc.W_enc[:, start:stop].to(model.dtype)).T
                deembed = _top_tokens(scores, top_k)
            for offset, index in enumerate(range(start, stop)):
                key = FeatureKey(set_id, layer, index)
                props: dict[str, Any] = {
                    "transcoderSet": set_id,
                    "layer": layer,
                    "index": index,
                    "name": key.name,
                    "logitLensTokens": [decode(t) for t in lens[offset]],
                }
                if deembed is not None:
                    props["deembedTokens"] = [decode(t) for t in deembed[offset]]
                if sparsity is not None:
                    props["logFrequency"] = float(sparsity[index])
                yield {"id": key.id, "props": props}


def _virtual_rows(tcs: TranscoderSet, set_id: str, top_k: int) -> Iterator[dict[str, Any]]:
    """Each feature's top-k earlier features by |W_dec[l'][j] . W_enc[l][:, i]|.

    Per chunk of targets, one source layer at a time with a running top-k, so memory stays at
    one (chunk x d_tc) score block whatever the depth (at GPT-2 scale a concatenation of the
    earlier decoders alone would be 0.8 GB)."""
    for layer in range(1, tcs.n_layers):
        enc = tcs[layer].W_enc
        for start in range(0, enc.shape[1], CHUNK):
            block = enc[:, start : start + CHUNK].T.contiguous()  # (chunk, d_model)
            best = _running_top(block, [tcs[src].W_dec for src in range(layer)], top_k)
            weights, src_layer, src_index = (t.tolist() for t in best)
            for col, row in enumerate(zip(weights, src_layer, src_index, strict=True)):
                target = FeatureKey(set_id, layer, start + col).id
                for w, sl, si in zip(*row, strict=True):
                    source = FeatureKey(set_id, sl, si).id
                    yield {"source": source, "target": target, "weight": w}


def _running_top(
    block: torch.Tensor, decoders: list[torch.Tensor], k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per row of `block`, the k source features (over all `decoders`) with the largest
    |decoder row . block row|: (weights, source layers, source indices), strongest first."""
    rows = block.shape[0]
    weights = block.new_zeros(rows, 0)
    layers = torch.zeros(rows, 0, dtype=torch.long)
    indices = torch.zeros(rows, 0, dtype=torch.long)
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
