"""The graph model: a closed set of labels and relationship types.

Nothing a user types ever becomes a label or a relationship type: Cypher is built only from the
enums below. Node kinds, names and ids are in `schema.names`, the one grammar both sides use.

Model (see README "Graph model"):

    (:TranscoderSet {id, name, model, modelHash, nLayers, dModel, dTranscoder, source})
    (:Feature {id, transcoderSet, layer, index, nActive, sumActivation, maxActivation, ...})
    (:Prompt {id, key, transcoderSet, text, tokens, nTokens, run, ...})
    (:GraphNode:Occurrence {id, prompt, layer, pos, feature, activation, preactivation})
    (:GraphNode:Embedding  {id, prompt, pos, token})
    (:GraphNode:ErrorTerm  {id, prompt, layer, pos})
    (:GraphNode:Bias       {id, prompt, layer, pos})
    (:GraphNode:Logit      {id, prompt, pos, token, value})
    (:GraphNode)-[:ATTR {weight, kind}]->(:GraphNode)       one prompt's pruned edges
    (:Feature)-[:DRIVES {n, sum, sumAbs, maxAbs}]->(:Feature)  corpus-level aggregate
    (:Feature)-[:TOP_EXAMPLE {activation, pos}]->(:Prompt)  bounded top-k
    (:Feature)-[:VIRTUAL_WEIGHT {weight}]->(:Feature)       input-independent neighbours
    (:IngestRun {id, name, configHash, config, codeVersion})
    (:SchemaVersion {id, version})

Per-prompt nodes carry their prompt and feature as properties instead of relationships to the
global Feature: a relationship would lock the global node on every write, and hub features fire in
almost every prompt, so parallel ingest writers would queue on them.
"""

from __future__ import annotations

import hashlib
from enum import StrEnum


class Label(StrEnum):
    TRANSCODER_SET = "TranscoderSet"
    FEATURE = "Feature"
    PROMPT = "Prompt"
    GRAPH_NODE = "GraphNode"
    OCCURRENCE = "Occurrence"
    EMBEDDING = "Embedding"
    ERROR_TERM = "ErrorTerm"
    BIAS = "Bias"
    LOGIT = "Logit"
    INGEST_RUN = "IngestRun"
    SCHEMA_VERSION = "SchemaVersion"


class RelType(StrEnum):
    ATTR = "ATTR"
    DRIVES = "DRIVES"
    TOP_EXAMPLE = "TOP_EXAMPLE"
    VIRTUAL_WEIGHT = "VIRTUAL_WEIGHT"


class EdgeKind(StrEnum):
    """Whether an edge's source sits at the target's position or reaches it through attention."""

    RESIDUAL = "residual"
    ATTENTION = "attention"


def content_hash(*parts: str | bytes, length: int = 16) -> str:
    """Short stable hash used in ids (sha256, hex)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()[:length]
