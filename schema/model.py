"""The graph model: a closed set of labels and relationship types.

Nothing a user types ever becomes a label or a relationship type: Cypher is built only from the
enums below. Node kinds, names and ids are in `schema.names`, the one grammar both sides use.

Model (see README "Graph model"):

    (:TranscoderSet {id, name, featureFamily, modelFamily, model, modelHash, nLayers, dModel,
                     dTranscoder, source})
                                  featureFamily: "transcoder" | "clt" (`names.FEATURE_FAMILIES`);
                                  modelFamily: the model's HF model_type ("gpt2", "llama", ...);
                                  both absent on sets stored before them (GPT-2's transcoders)
    (:Feature {id, transcoderSet, layer, index, nActive, sumActivation, maxActivation, ...})
    (:Prompt {id, key, transcoderSet, text, tokens, nTokens, run, ...})
    (:GraphNode:Occurrence {id, prompt, layer, pos, feature, activation, preactivation})
    (:GraphNode:Embedding  {id, prompt, pos, token})
    (:GraphNode:ErrorTerm  {id, prompt, layer, pos})
    (:GraphNode:Bias       {id, prompt, layer, pos})
    (:GraphNode:Logit      {id, prompt, pos, token, value})
    (:GraphNode)-[:ATTR {weight, kind, heads, headWeights, otherHeads, residual}]->(:GraphNode)
                                                             one prompt's pruned edges
    (:Feature)-[:DRIVES {n, sum, sumAbs, maxAbs}]->(:Feature)  corpus-level aggregate
    (:Feature)-[:TOP_EXAMPLE {activation, pos}]->(:Prompt)  bounded top-k
    (:Feature)-[:VIRTUAL_WEIGHT {weight}]->(:Feature)       input-independent neighbours
    (:Intervention {id, prompt, features, scale, predictedDiff, observedDiff, flips, ...})
    (:Intervention)-[:OF_PROMPT]->(:Prompt), (:Intervention)-[:ON_FEATURE]->(:Feature)
                                                             `circuitstore verify`'s results
    (:QKTrace {id, prompt, promptKey, transcoderSet, layer, head, queryPos, keyPos, mode, score,
               total, probability, nQuery, nKey, pairsQuery, pairsKey, pairsValue, queryNodes,
               queryValues, keyNodes, keyValues, source, target, edgeWeight})
    (:QKTrace)-[:OF_PROMPT]->(:Prompt), (:QKTrace)-[:QK_QUERY|QK_KEY {value, rank}]->(:GraphNode)
                                                             one head's score at (T, S), split
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
    """The node labels of the graph model."""

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
    INTERVENTION = "Intervention"
    QK_TRACE = "QKTrace"


class RelType(StrEnum):
    """The relationship types of the graph model."""

    ATTR = "ATTR"
    DRIVES = "DRIVES"
    TOP_EXAMPLE = "TOP_EXAMPLE"
    VIRTUAL_WEIGHT = "VIRTUAL_WEIGHT"
    OF_PROMPT = "OF_PROMPT"
    ON_FEATURE = "ON_FEATURE"
    QK_QUERY = "QK_QUERY"
    QK_KEY = "QK_KEY"


class EdgeKind(StrEnum):
    """Whether an edge's source sits at the target's position or reaches it through attention."""

    RESIDUAL = "residual"
    ATTENTION = "attention"


class PromptScore(StrEnum):
    """The scores every ingested Prompt carries (README "How much of the model a graph
    explains"): circuit-tracer's two, of the whole graph and of the stored one. The value is the
    stored property's name; `.option` is the name a user types (`query prompts --order`)."""

    REPLACEMENT = "replacementScore"
    COMPLETENESS = "completenessScore"
    STORED_REPLACEMENT = "storedReplacementScore"
    STORED_COMPLETENESS = "storedCompletenessScore"

    @property
    def option(self) -> str:
        """The score's name as a command-line choice (`stored-replacement`)."""
        return "stored-" + self.field[7:] if self.field.startswith("stored_") else self.field

    @property
    def field(self) -> str:
        """The column name in rows and tables: `storedReplacementScore` -> `stored_replacement`
        (the graph metadata's key is this plus `_score`)."""
        return snake_case(self.value).removesuffix("_score")


# The model family of a set stored before sets recorded theirs: every such set was GPT-2's.
MODEL_FAMILY_BEFORE = "gpt2"


def snake_case(name: str) -> str:
    """A stored property's name as rows and JSON name it: `keptInfluence` -> `kept_influence`."""
    return "".join("_" + c.lower() if c.isupper() else c for c in name)


# Prompt properties of the store's own (the rest came from the corpus; a corpus field named like
# one of these is stored with an `x_` prefix).
PROMPT_OWN = frozenset(
    {
        *("id", "key", "transcoderSet", "text", "tokens", "tokenIds", "nTokens", "run", "line"),
        *("mode", "truncated", "nTokensBeforeTruncation"),
        *("logitInputExplained", "featureInputExplained", "keptInfluence", "unexpandedInfluence"),
        *(s.value for s in PromptScore),
    }
)


def content_hash(*parts: str | bytes, length: int = 16) -> str:
    """Short stable hash used in ids (sha256, hex)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() if isinstance(part, str) else part)
        h.update(b"\x00")
    return h.hexdigest()[:length]
