"""Attribution graphs of the local replacement model (see engine.py for the math).

Public API: :class:`AttributionEngine` (``attribute``, ``attribute_batch``, ``prepare`` +
``chunks`` for streaming), :class:`AttributionConfig`, :class:`PruneConfig`,
:class:`AttributionGraph`, :class:`EdgeChunk` / :class:`EdgeSink` (streamed edges, e.g. the
unpruned feature-to-feature edges via ``EdgeChunk.feature_edges``), :func:`edge_by_head`,
:func:`graph_to_json` and :func:`graph_to_table`.
"""

from circuitstore.ingest.attribution.api import AttributionEngine
from circuitstore.ingest.attribution.export import graph_to_json, graph_to_table
from circuitstore.ingest.attribution.graph import (
    AttributionGraph,
    CollectSink,
    EdgeChunk,
    Edges,
    EdgeSink,
    NodeAccounting,
    NodeTable,
)
from circuitstore.ingest.attribution.heads import EdgeBreakdown, edge_by_head
from circuitstore.ingest.attribution.state import PromptState, feature_activations
from circuitstore.ingest.config import AttributionConfig, ChunkPlan, PruneConfig

__all__ = [
    "AttributionConfig",
    "AttributionEngine",
    "AttributionGraph",
    "ChunkPlan",
    "CollectSink",
    "EdgeBreakdown",
    "EdgeChunk",
    "EdgeSink",
    "Edges",
    "NodeAccounting",
    "NodeTable",
    "PromptState",
    "PruneConfig",
    "edge_by_head",
    "feature_activations",
    "graph_to_json",
    "graph_to_table",
]
