"""What queries answer, in one place: every record the store's questions return, each able to
show itself as flat rows (for the table, JSON and CSV outputs), as a pandas DataFrame
(`.to_pandas()`) and, for subgraph answers, as a networkx graph (`.to_networkx()`). Each record
lives beside its question (`features`, `prompts`, `paths`, `heads`, `labels`,
`interventions`); this module names them all for notebooks and scripts.
"""

from circuitstore.query.features.records import Example, FeatureCard, Link, Neighbours
from circuitstore.query.heads.records import HeadLoad, HeadSplit
from circuitstore.query.interventions.records import InterventionInfo
from circuitstore.query.labels.records import LabelInfo, LabelMatch
from circuitstore.query.paths.records import (
    CIRCUIT_COLUMNS,
    CircuitResult,
    Path,
    PathsResult,
    SubgraphScores,
)
from circuitstore.query.prompts.records import PromptInfo, PromptMatch, PromptSummary
from circuitstore.query.reader import TranscoderSetInfo
from circuitstore.query.subgraph import Edge, HasSubgraph, Node, Subgraph
from circuitstore.query.tables import (
    NOTEBOOK_EXTRA,
    HasRow,
    Records,
    Tabular,
    clean,
    node_text,
    readable_token,
    to_frame,
    token_text,
)

__all__ = [
    "CIRCUIT_COLUMNS",
    "NOTEBOOK_EXTRA",
    "CircuitResult",
    "Edge",
    "Example",
    "FeatureCard",
    "HasRow",
    "HasSubgraph",
    "HeadLoad",
    "HeadSplit",
    "InterventionInfo",
    "LabelInfo",
    "LabelMatch",
    "Link",
    "Neighbours",
    "Node",
    "Path",
    "PathsResult",
    "PromptInfo",
    "PromptMatch",
    "PromptSummary",
    "Records",
    "Subgraph",
    "SubgraphScores",
    "Tabular",
    "TranscoderSetInfo",
    "clean",
    "node_text",
    "readable_token",
    "to_frame",
    "token_text",
]
