"""Part of one prompt's stored graph: its nodes by local id and the ATTR edges between them. The
records every per-prompt answer (links in one prompt, paths, circuits, exports, `verify`) is
made of, and their networkx and pandas views.

Per-prompt nodes carry the token a person reads them by (`token`): for a logit, the token it
predicts; for every other node, the prompt's token at its position. Features carry their label
(`label`) where one was imported (`circuitstore labels import`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import networkx as nx

from circuitstore.query.heads.records import HeadSplit
from circuitstore.query.tables import Tabular, node_text, to_frame
from circuitstore.schema.errors import ConfigError
from circuitstore.schema.names import NodeKind

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Node(Tabular):
    """A per-prompt graph node, by its local id (`mlp0tc[6]@2`), with the token a person reads
    it by (see the module's docstring) and its feature's label."""

    id: str
    kind: NodeKind
    layer: int | None = None
    pos: int | None = None
    feature: int | None = None
    activation: float | None = None
    token: str | None = None
    token_id: int | None = None
    value: float | None = None
    influence: float | None = None
    label: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NodeKind(self.kind))  # "feature" reads as the member

    @property
    def shown(self) -> str:
        """`embed0@4 ' Kate'`, `mlp0tc[70]@14 ' to'`, `logit[458]@14 ' Kate'`."""
        return node_text(self.id, self.token)


@dataclass(frozen=True)
class Edge(Tabular):
    """A stored ATTR edge between two nodes of one prompt's graph."""

    source: str
    target: str
    weight: float
    kind: str | None = None
    split: HeadSplit | None = None  # where the edge is stored split by head


def labelled_features(nodes: Iterable[Node]) -> dict[str, str]:
    """Each labelled feature's base name and label (a feature at several positions, once)."""
    out: dict[str, str] = {}
    for n in nodes:
        if n.label and n.kind == NodeKind.FEATURE:
            out.setdefault(n.id.split("@", 1)[0], n.label)
    return out


@dataclass(frozen=True)
class Subgraph(Tabular):
    """Part of one prompt's graph: nodes by local id and the ATTR edges between them."""

    prompt: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def to_networkx(self) -> nx.DiGraph:
        """A networkx DiGraph: nodes by local id with their fields as attributes (None left
        out), edges with `weight` and `kind`."""
        graph = nx.DiGraph(prompt=self.prompt)
        for node in self.nodes:
            attrs = {k: v for k, v in node.as_row().items() if k != "id" and v is not None}
            graph.add_node(node.id, **attrs)
        for edge in self.edges:
            graph.add_edge(edge.source, edge.target, weight=edge.weight, kind=edge.kind or "")
        return graph

    def rows(self) -> list[dict[str, Any]]:
        """One row per node."""
        return [n.as_row() for n in self.nodes]

    def to_pandas(self, part: str = "nodes") -> pd.DataFrame:
        """The nodes (default) or the edges (`part="edges"`) as a DataFrame."""
        if part == "edges":
            return to_frame([e.as_row() for e in self.edges], ("source", "target", "weight"))
        if part != "nodes":
            raise ConfigError(f"part {part!r}: expected nodes or edges")
        return to_frame(self.rows(), ("id", "kind", "layer", "pos"))

    # The graph's predictions (`query.graphs`, which imports this module: imported on use).

    def influence(self, targets: Mapping[str, float]) -> dict[str, float]:
        """Each node's influence on the weighted targets (`graphs.influence`)."""
        from circuitstore.query import graphs

        return graphs.influence(self, targets)

    def sensitivity(self, targets: Mapping[str, float]) -> dict[str, float]:
        """Each node's first-order effect on the weighted targets (`graphs.sensitivity`)."""
        from circuitstore.query import graphs

        return graphs.sensitivity(self, targets)

    def propagated(self, changes: Mapping[str, float]) -> dict[str, float]:
        """Every node's change when `changes` change (`graphs.propagated`)."""
        from circuitstore.query import graphs

        return graphs.propagated(self, changes)


class HasSubgraph(Tabular):
    """An answer that carries part of one prompt's graph (or None, corpus-wide)."""

    subgraph: Subgraph | None

    def to_networkx(self) -> nx.DiGraph:
        """The answer's subgraph as a networkx DiGraph (see `Subgraph.to_networkx`)."""
        if self.subgraph is None:
            raise ConfigError("a corpus-wide answer has no subgraph: ask inside one prompt")
        return self.subgraph.to_networkx()
