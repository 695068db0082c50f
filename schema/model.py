"""The graph model: a closed set of labels and relationship types, and named id constructors.

Nothing a user types ever becomes a label or a relationship type: Cypher is built only from the
enums below. Ids are strings built by the constructors here, so that the ingest side (writing) and
the query side (reading) can never disagree on them.

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
from dataclasses import dataclass
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


class NodeKind(StrEnum):
    """Kinds of per-prompt graph node, as they appear in the attribution JSON (`type`)."""

    FEATURE = "feature"
    EMBEDDING = "embedding"
    ERROR = "error"
    BIAS = "bias"
    LOGIT = "logit"

    @property
    def label(self) -> Label:
        return _KIND_LABEL[self]


_KIND_LABEL = {
    NodeKind.FEATURE: Label.OCCURRENCE,
    NodeKind.EMBEDDING: Label.EMBEDDING,
    NodeKind.ERROR: Label.ERROR_TERM,
    NodeKind.BIAS: Label.BIAS,
    NodeKind.LOGIT: Label.LOGIT,
}


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


@dataclass(frozen=True)
class FeatureKey:
    """A global transcoder feature: layer and index within one transcoder set."""

    transcoder_set: str
    layer: int
    index: int

    @property
    def id(self) -> str:
        return f"{self.transcoder_set}/{self.layer}/{self.index}"

    @property
    def name(self) -> str:
        """The original work's name, e.g. ``mlp8tc[355]``."""
        return f"mlp{self.layer}tc[{self.index}]"


class NodeId:
    """Named constructors for per-prompt graph node ids, in the original work's notation.

    Ids are local to one prompt (``mlp8tc[355]@9``); the store qualifies them with the prompt's id
    (``<prompt id>/mlp8tc[355]@9``) so they are unique across the database.
    """

    @staticmethod
    def feature(layer: int, pos: int, index: int) -> str:
        return f"mlp{layer}tc[{index}]@{pos}"

    @staticmethod
    def embedding(pos: int) -> str:
        return f"embed0@{pos}"

    @staticmethod
    def error(layer: int, pos: int) -> str:
        return f"mlp{layer}err@{pos}"

    @staticmethod
    def bias(name: str, pos: int) -> str:
        """A constant term, e.g. ``bias[attn3]@9`` (layer 3's attention output bias)."""
        return f"bias[{name}]@{pos}"

    @staticmethod
    def logit(pos: int, token_id: int) -> str:
        return f"logit[{token_id}]@{pos}"

    @staticmethod
    def remainder(target_local_id: str) -> str:
        """Lumped mode: the part of one target's input through two or more attention layers."""
        return f"rem[{target_local_id}]"

    @staticmethod
    def prompt(transcoder_set: str, key: str) -> str:
        return f"{transcoder_set}/{key}"

    @staticmethod
    def qualified(prompt_id: str, local_id: str) -> str:
        return f"{prompt_id}/{local_id}"
