"""The exports question: answers as files (`files`: GraphML, node-link JSON, a viewer folder) and
one prompt's graph as the viewers' attribution-graph JSON (`neuronpedia`)."""

from circuitstore.query.export.files import (
    EXPORT_FORMATS,
    VIEWER_INDEX,
    write_json,
    write_subgraph,
    write_viewer_graph,
)
from circuitstore.query.export.neuronpedia import (
    HUB_SETS,
    cantor,
    fold_constants,
    neuronpedia_graph,
    neuronpedia_names,
    uncantor,
)

__all__ = [
    "EXPORT_FORMATS",
    "HUB_SETS",
    "VIEWER_INDEX",
    "cantor",
    "fold_constants",
    "neuronpedia_graph",
    "neuronpedia_names",
    "uncantor",
    "write_json",
    "write_subgraph",
    "write_viewer_graph",
]
