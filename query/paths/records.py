"""What the paths question answers: paths (source first) into a target, and the circuit of the
nodes that carry most of the influence on it, each with the part of the graph it stands on; and
the scores of a subgraph that keeps chosen features."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from circuitstore.query.subgraph import HasSubgraph, Subgraph, labelled_features
from circuitstore.query.tables import Tabular, node_text, to_frame

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class Path(Tabular):
    """A path, source first. `contribution`: what the source gives the last node through it,
    where the beam search (`query.graphs.beam_paths`) computed one."""

    nodes: tuple[str, ...]
    weights: tuple[float, ...]
    contribution: float | None = None

    @property
    def product(self) -> float:
        """The product of the path's edge weights."""
        return math.prod(self.weights)

    def as_row(self) -> dict[str, Any]:
        """(contribution,) product, length and the path's ids."""
        row = {
            "product": self.product,
            "length": len(self.weights),
            "path": " -> ".join(self.nodes),
        }
        if self.contribution is not None:
            return {"contribution": self.contribution, **row}
        return row


@dataclass(frozen=True)
class PathsResult(HasSubgraph):
    """The strongest paths into `target` in one prompt, with the edges they run along."""

    prompt: str
    target: str
    paths: tuple[Path, ...]
    subgraph: Subgraph

    def rows(self) -> list[dict[str, Any]]:
        """rank, product, length, path (ids), path_tokens (ids with their tokens) and the labels
        of the labelled features on the path."""
        by_id = {n.id: n for n in self.subgraph.nodes}
        out = []
        for i, p in enumerate(self.paths):
            on_path = [by_id[n] for n in p.nodes if n in by_id]
            shown = " -> ".join(node_text(n, by_id[n].token) if n in by_id else n for n in p.nodes)
            labels = "; ".join(f"{k}: {v}" for k, v in labelled_features(on_path).items())
            out.append({"rank": i + 1, **p.as_row(), "path_tokens": shown, "labels": labels})
        return out

    def to_pandas(self) -> pd.DataFrame:
        """One row per path."""
        return to_frame(self.rows(), ("rank", "product", "length", "path"))


CIRCUIT_COLUMNS = ("id", "token", "kind", "layer", "pos", "activation", "influence", "label")


@dataclass(frozen=True)
class CircuitResult(HasSubgraph):
    """Nodes carrying `threshold` of the influence on the targets, with the edges among them."""

    prompt: str
    targets: tuple[str, ...]
    threshold: float
    subgraph: Subgraph
    total_influence: float = 0.0

    def rows(self) -> list[dict[str, Any]]:
        """One row per node, the most influential first."""
        ranked = sorted(self.subgraph.nodes, key=lambda n: -(n.influence or 0.0))
        return [{k: v for k, v in n.as_row().items() if k in CIRCUIT_COLUMNS} for n in ranked]

    def to_pandas(self) -> pd.DataFrame:
        """One row per node."""
        return to_frame(self.rows(), CIRCUIT_COLUMNS)


@dataclass(frozen=True)
class SubgraphScores(Tabular):
    """circuit-tracer's replacement and completeness scores of the subgraph of one prompt's
    stored graph that keeps the `pinned` features and every node that is not a feature
    (`query.scores`): with every stored feature pinned, the prompt's stored scores."""

    prompt: str
    pinned: tuple[str, ...]
    replacement: float
    completeness: float

    def as_row(self) -> dict[str, Any]:
        """The scores as one flat row: the pinned ids joined by commas."""
        return {**super().as_row(), "pinned": ", ".join(self.pinned)}
