"""What queries answer: frozen records, each able to show itself as flat rows (for the table,
JSON and CSV outputs) and, for subgraph answers, as a networkx graph (for `--export`)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

import networkx as nx

from circuitstore.schema.names import NodeKind


def clean(value: Any) -> Any:
    """NaN (stored for 'not a target') as None, so JSON stays valid; enum members as their
    plain values, which every output format (GraphML among them) can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Enum):
        return value.value
    return value


@dataclass(frozen=True)
class TranscoderSetInfo:
    id: str
    n_layers: int
    d_transcoder: int
    model: str | None = None


@dataclass(frozen=True)
class PromptInfo:
    id: str
    key: str
    transcoder_set: str
    text: str
    tokens: tuple[str, ...]


@dataclass(frozen=True)
class Link:
    """One neighbour of a feature: a global feature (corpus-wide) or a per-prompt node.

    n counts the aggregated edges (prompt-position pairs corpus-wide; target positions in one
    prompt); total is their summed weight, mean = total / n."""

    name: str
    kind: NodeKind
    layer: int | None
    pos: int | None
    n: int
    total: float
    mean: float
    sum_abs: float
    max_abs: float

    def as_row(self) -> dict[str, Any]:
        return {k: clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Node:
    """A per-prompt graph node, by its local id (`mlp0tc[6]@2`)."""

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

    def __post_init__(self) -> None:
        object.__setattr__(self, "kind", NodeKind(self.kind))  # "feature" reads as the member

    def as_row(self) -> dict[str, Any]:
        return {k: clean(v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    weight: float
    kind: str | None = None

    def as_row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Subgraph:
    """Part of one prompt's graph: nodes by local id and the ATTR edges between them."""

    prompt: str
    nodes: tuple[Node, ...]
    edges: tuple[Edge, ...]

    def to_networkx(self) -> nx.DiGraph:
        graph = nx.DiGraph(prompt=self.prompt)
        for node in self.nodes:
            attrs = {k: v for k, v in node.as_row().items() if k != "id" and v is not None}
            graph.add_node(node.id, **attrs)
        for edge in self.edges:
            graph.add_edge(edge.source, edge.target, weight=edge.weight, kind=edge.kind or "")
        return graph


@dataclass(frozen=True)
class Neighbours:
    """drivers / targets of one feature, corpus-wide (prompt None) or in one prompt."""

    feature: str
    direction: str  # "drivers" or "targets"
    prompt: str | None
    links: tuple[Link, ...]
    subgraph: Subgraph | None = None  # per-prompt answers: the edges behind the links

    def rows(self) -> list[dict[str, Any]]:
        return [{"rank": i + 1, **link.as_row()} for i, link in enumerate(self.links)]


@dataclass(frozen=True)
class Example:
    prompt: str
    pos: int
    token: str
    activation: float
    left: tuple[str, ...]
    right: tuple[str, ...]

    @property
    def context(self) -> str:
        return f"{''.join(self.left)}[[{self.token}]]{''.join(self.right)}"

    def as_row(self) -> dict[str, Any]:
        return {
            "prompt": self.prompt,
            "pos": self.pos,
            "token": self.token,
            "activation": self.activation,
            "context": self.context,
        }


@dataclass(frozen=True)
class FeatureCard:
    name: str
    id: str
    stats: dict[str, Any]
    deembed_tokens: tuple[str, ...] | None
    logit_lens_tokens: tuple[str, ...] | None
    virtual_in: tuple[tuple[str, float], ...]
    virtual_out: tuple[tuple[str, float], ...]
    drivers: tuple[Link, ...]
    targets: tuple[Link, ...]
    examples: tuple[Example, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "stats": {k: clean(v) for k, v in self.stats.items()},
            "deembedTokens": self.deembed_tokens,
            "logitLensTokens": self.logit_lens_tokens,
            "virtualIn": [{"name": n, "weight": w} for n, w in self.virtual_in],
            "virtualOut": [{"name": n, "weight": w} for n, w in self.virtual_out],
            "drivers": [link.as_row() for link in self.drivers],
            "targets": [link.as_row() for link in self.targets],
            "examples": [e.as_row() for e in self.examples],
        }


@dataclass(frozen=True)
class Path:
    nodes: tuple[str, ...]
    weights: tuple[float, ...]

    @property
    def product(self) -> float:
        return math.prod(self.weights)

    def as_row(self) -> dict[str, Any]:
        return {
            "product": self.product,
            "length": len(self.weights),
            "path": " -> ".join(self.nodes),
        }


@dataclass(frozen=True)
class PathsResult:
    prompt: str
    target: str
    paths: tuple[Path, ...]
    subgraph: Subgraph

    def rows(self) -> list[dict[str, Any]]:
        return [{"rank": i + 1, **p.as_row()} for i, p in enumerate(self.paths)]


@dataclass(frozen=True)
class CircuitResult:
    """Nodes carrying `threshold` of the influence on the targets, with the edges among them."""

    prompt: str
    targets: tuple[str, ...]
    threshold: float
    subgraph: Subgraph
    total_influence: float = 0.0

    def rows(self) -> list[dict[str, Any]]:
        keep = ("id", "kind", "layer", "pos", "activation", "influence")
        ranked = sorted(self.subgraph.nodes, key=lambda n: -(n.influence or 0.0))
        return [{k: v for k, v in n.as_row().items() if k in keep} for n in ranked]


@dataclass(frozen=True)
class PromptMatch:
    key: str
    text: str
    score: float
    positions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        where = "; ".join(f"{n}@{','.join(map(str, p))}" for n, p in self.positions.items())
        return {"prompt": self.key, "score": self.score, "positions": where, "text": self.text}
