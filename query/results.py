"""What queries answer: frozen records, each able to show itself as flat rows (for the table,
JSON and CSV outputs), as a pandas DataFrame (`.to_pandas()`, for notebooks; pandas is the
optional `notebook` extra, imported only when asked for) and, for subgraph answers, as a networkx
graph (`.to_networkx()`, also behind `--export`).

Per-prompt nodes carry the token a person reads them by (`token`): for a logit, the token it
predicts; for every other node, the prompt's token at its position. Features carry their label
(`label`) where one was imported (`circuitstore labels import`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import networkx as nx

from circuitstore.schema.errors import ConfigError, QueryError
from circuitstore.schema.names import NodeKind, head_name, numbered_head

if TYPE_CHECKING:
    import pandas as pd

NOTEBOOK_EXTRA = "pip install 'circuitstore[notebook]'"


def clean(value: Any) -> Any:
    """NaN (stored for 'not a target') as None, so JSON stays valid; enum members as their
    plain values, which every output format (GraphML among them) can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Enum):
        return value.value
    return value


def to_frame(rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> pd.DataFrame:
    """Rows as a pandas DataFrame (columns in the rows' order, or `columns` for no rows)."""
    try:
        import pandas as pd
    except ImportError:  # the optional extra
        raise ConfigError(f"pandas is not installed: {NOTEBOOK_EXTRA}") from None
    if not rows:
        return pd.DataFrame(columns=list(columns))
    return pd.DataFrame.from_records(list(rows))


class Tabular:
    """A record that shows itself as rows: one row (`as_row`) unless it says otherwise."""

    def as_row(self) -> dict[str, Any]:
        return {k: clean(v) for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def rows(self) -> list[dict[str, Any]]:
        return [self.as_row()]

    def to_pandas(self) -> pd.DataFrame:
        """This answer as a pandas DataFrame, one row per row of `rows()`."""
        return to_frame(self.rows())


class HasRow(Protocol):
    def as_row(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=HasRow)


class Records(tuple[R, ...], Generic[R]):
    """A tuple of records (what `examples`, `prompts_with`, `search`... return) that also shows
    itself as rows and as a DataFrame; equal to the plain tuple of the same records."""

    columns: tuple[str, ...]

    def __new__(cls, items: Iterable[R] = (), columns: Sequence[str] = ()) -> Records[R]:
        self = super().__new__(cls, items)
        self.columns = tuple(columns)
        return self

    def rows(self) -> list[dict[str, Any]]:
        return [r.as_row() for r in self]

    def to_pandas(self) -> pd.DataFrame:
        return to_frame(self.rows(), self.columns)


def token_text(token: str | None) -> str:
    """A token as a person reads it beside an id: quoted, so that spaces show (`' Kate'`)."""
    return "" if token is None else repr(token)


@dataclass(frozen=True)
class TranscoderSetInfo(Tabular):
    id: str
    n_layers: int
    d_transcoder: int
    model: str | None = None
    transcoders: str | None = None
    model_hash: str | None = None  # every weight's hash (what `verify` checks a model against)
    transcoders_hash: str | None = None
    n_heads: int | None = None  # stored edges number their heads layer * n_heads + head

    def head(self, number: int) -> tuple[int, int]:
        """(layer, head) of a head number stored on an ATTR edge."""
        if not self.n_heads:
            raise QueryError(f"transcoder set {self.id} does not record its heads per layer")
        return numbered_head(number, self.n_heads)

    def head_name(self, number: int) -> str:
        """`attn2[3]` for a head number stored on an ATTR edge."""
        return head_name(*self.head(number))


@dataclass(frozen=True)
class PromptInfo(Tabular):
    id: str
    key: str
    transcoder_set: str
    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...] = ()

    def token_at(self, pos: int | None) -> str | None:
        return self.tokens[pos] if pos is not None and 0 <= pos < len(self.tokens) else None

    def text_of(self, token_id: int | None) -> str | None:
        """The text of a token id where the prompt holds that token (ids map to one text)."""
        if token_id is None:
            return None
        for tid, tok in zip(self.token_ids, self.tokens, strict=False):
            if tid == token_id:
                return tok
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One row per token."""
        ids: Sequence[int | None] = self.token_ids or [None] * len(self.tokens)
        return [
            {"pos": i, "token": t, "token_id": tid}
            for i, (t, tid) in enumerate(zip(self.tokens, ids, strict=False))
        ]


@dataclass(frozen=True)
class PromptSummary(Tabular):
    """One stored prompt, without its graph: its scores (circuit-tracer's replacement and
    completeness, of the whole graph and of the stored one, by `PromptScore.field`; None where
    a store predates them), its accounting (mode, the influence its stored graph keeps...) and
    `extra`, the corpus's own fields (a demo prompt's `task` and `answer`)."""

    key: str
    transcoder_set: str
    text: str
    n_tokens: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    accounting: dict[str, Any] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        row = {
            "prompt": self.key,
            "transcoder_set": self.transcoder_set,
            "n_tokens": self.n_tokens,
            **{k: clean(v) for k, v in self.scores.items()},
            "text": self.text,
        }
        return {**row, **{k: clean(v) for k, v in self.extra.items() if k not in row}}

    def card(self) -> dict[str, Any]:
        """Everything known of the prompt, as one flat record (`query prompt KEY`)."""
        row = self.as_row()
        text = row.pop("text")
        return {**row, **{k: clean(v) for k, v in self.accounting.items()}, "text": text}


@dataclass(frozen=True)
class HeadSplit:
    """Stored ATTR edges (summed where several) split by path: the same-position residual part,
    the strongest attention heads (by name, `attn2[3]`, strongest first), all other heads
    together, and the paths through two or more attention layers (what is left of the weight:
    zero in lumped mode, whose remainder nodes hold those paths)."""

    residual: float
    heads: tuple[tuple[str, float], ...]
    other_heads: float
    multi_layer: float

    def as_columns(self) -> dict[str, Any]:
        return {
            "residual": self.residual,
            "heads": dict(self.heads),
            "other_heads": self.other_heads,
            "multi_layer": self.multi_layer,
        }

    @classmethod
    def of(cls, weight: float, parts: Sequence[HeadSplit], top: int) -> HeadSplit:
        """Several edges' splits as one (`weight` their summed weight): the heads summed by
        name, the `top` strongest kept by name and the rest added to the other heads."""
        by_name: dict[str, float] = {}
        for part in parts:
            for name, w in part.heads:
                by_name[name] = by_name.get(name, 0.0) + w
        ranked = sorted(by_name.items(), key=lambda kv: (-abs(kv[1]), kv[0]))
        residual = math.fsum(p.residual for p in parts)
        other = math.fsum(p.other_heads for p in parts) + math.fsum(w for _, w in ranked[top:])
        named = math.fsum(w for _, w in ranked[:top])
        return cls(residual, tuple(ranked[:top]), other, weight - residual - named - other)


@dataclass(frozen=True)
class HeadLoad(Tabular):
    """One attention head in one prompt's stored graph: on how many ATTR edges it is among the
    strongest heads, the weight it carries there (signed and absolute), and that absolute
    weight's share of all the head-carried weight stored for the prompt."""

    head: str
    layer: int
    index: int
    edges: int
    total: float
    sum_abs: float
    share: float


@dataclass(frozen=True)
class Link(Tabular):
    """One neighbour of a feature: a global feature (corpus-wide) or a per-prompt node.

    n counts the aggregated edges (prompt-position pairs corpus-wide; target positions in one
    prompt); total is their summed weight, mean = total / n. `token` is the per-prompt node's
    token (None corpus-wide), `label` the feature's imported label."""

    name: str
    kind: NodeKind
    layer: int | None
    pos: int | None
    n: int
    total: float
    mean: float
    sum_abs: float
    max_abs: float
    token: str | None = None
    label: str | None = None
    split: HeadSplit | None = None  # in one prompt, when asked for by head

    @property
    def shown(self) -> str:
        """The name as a person reads it: with its token where it has one."""
        return self.name if self.token is None else f"{self.name} {token_text(self.token)}"

    def as_row(self) -> dict[str, Any]:
        row = {k: clean(getattr(self, k)) for k in self.__dataclass_fields__ if k != "split"}
        return row if self.split is None else {**row, **self.split.as_columns()}


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
        return self.id if self.token is None else f"{self.id} {token_text(self.token)}"


@dataclass(frozen=True)
class Edge(Tabular):
    source: str
    target: str
    weight: float
    kind: str | None = None
    split: HeadSplit | None = None  # where the edge is stored split by head


def _labels(nodes: Iterable[Node]) -> dict[str, str]:
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

    def to_pandas(self, part: str = "nodes") -> pd.DataFrame:
        """The nodes (default) or the edges (`part="edges"`) as a DataFrame."""
        if part == "edges":
            return to_frame([e.as_row() for e in self.edges], ("source", "target", "weight"))
        if part != "nodes":
            raise ConfigError(f"part {part!r}: expected nodes or edges")
        return to_frame(self.rows(), ("id", "kind", "layer", "pos"))


class HasSubgraph(Tabular):
    subgraph: Subgraph | None

    def to_networkx(self) -> nx.DiGraph:
        """The answer's subgraph as a networkx DiGraph (see `Subgraph.to_networkx`)."""
        if self.subgraph is None:
            raise ConfigError("a corpus-wide answer has no subgraph: ask inside one prompt")
        return self.subgraph.to_networkx()


@dataclass(frozen=True)
class Neighbours(HasSubgraph):
    """drivers / targets of one feature, corpus-wide (prompt None) or in one prompt."""

    feature: str
    direction: str  # "drivers" or "targets"
    prompt: str | None
    links: tuple[Link, ...]
    subgraph: Subgraph | None = None  # per-prompt answers: the edges behind the links

    def rows(self) -> list[dict[str, Any]]:
        return [{"rank": i + 1, **link.as_row()} for i, link in enumerate(self.links)]

    def to_pandas(self) -> pd.DataFrame:
        return to_frame(self.rows(), ("rank", "name", "kind", "n", "total"))


@dataclass(frozen=True)
class Example(Tabular):
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
            "left": "".join(self.left),
            "right": "".join(self.right),
        }


@dataclass(frozen=True)
class LabelInfo(Tabular):
    """A feature's imported label and where it came from."""

    text: str
    source: str | None = None  # e.g. neuronpedia:gpt2-small/8-tres-dc
    explainer: str | None = None  # the explainer model, e.g. gpt-4o-mini
    type: str | None = None  # the explanation type, e.g. oai_token-act-pair
    score: float | None = None
    others: tuple[str, ...] = ()  # further explanations of the same feature in the source

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> LabelInfo | None:
        if not props.get("label"):
            return None
        return cls(
            text=props["label"],
            source=props.get("labelSource"),
            explainer=props.get("labelExplainer"),
            type=props.get("labelType"),
            score=props.get("labelScore"),
            others=tuple(x for x in props.get("labels") or () if x != props["label"]),
        )

    @property
    def provenance(self) -> str:
        parts = [
            f"{k} {v}"
            for k, v in (
                ("source", self.source),
                ("explainer", self.explainer),
                ("type", self.type),
                ("score", None if self.score is None else f"{self.score:.3g}"),
            )
            if v is not None
        ]
        return ", ".join(parts)


@dataclass(frozen=True)
class FeatureCard(Tabular):
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
    label: LabelInfo | None = None
    # Labels of the neighbours named in the card (virtual-weight, drivers, targets).
    neighbour_labels: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "id": self.id,
            "label": None if self.label is None else self.label.as_row(),
            "stats": {k: clean(v) for k, v in self.stats.items()},
            "deembedTokens": self.deembed_tokens,
            "logitLensTokens": self.logit_lens_tokens,
            "virtualIn": [
                {"name": n, "weight": w, "label": self.neighbour_labels.get(n)}
                for n, w in self.virtual_in
            ],
            "virtualOut": [
                {"name": n, "weight": w, "label": self.neighbour_labels.get(n)}
                for n, w in self.virtual_out
            ],
            "drivers": [link.as_row() for link in self.drivers],
            "targets": [link.as_row() for link in self.targets],
            "examples": [e.as_row() for e in self.examples],
        }

    def as_row(self) -> dict[str, Any]:
        return self.as_dict()

    def rows(self) -> list[dict[str, Any]]:
        """section, name, value (and label): one row per statistic, token, neighbour and
        example."""
        rows: list[dict[str, Any]] = []
        if self.label is not None:
            rows.append(
                {"section": "label", "name": self.label.provenance, "value": self.label.text}
            )
        rows += [{"section": "stat", "name": k, "value": clean(v)} for k, v in self.stats.items()]
        for section, tokens in (
            ("deembed", self.deembed_tokens),
            ("logitlens", self.logit_lens_tokens),
        ):
            rows += [
                {"section": section, "name": i + 1, "value": t} for i, t in enumerate(tokens or ())
            ]
        labels = self.neighbour_labels
        for section, pairs in (("virtual_in", self.virtual_in), ("virtual_out", self.virtual_out)):
            rows += [
                {"section": section, "name": n, "value": w, "label": labels.get(n)}
                for n, w in pairs
            ]
        for section, links in (("driver", self.drivers), ("target", self.targets)):
            rows += [
                {"section": section, "name": x.name, "value": x.total, "label": x.label}
                for x in links
            ]
        rows += [
            {"section": "example", "name": e.context, "value": e.activation} for e in self.examples
        ]
        return rows


@dataclass(frozen=True)
class Path(Tabular):
    """A path, source first. `contribution`: what the source gives the last node through it,
    where the beam search (`query.graphs.beam_paths`) computed one."""

    nodes: tuple[str, ...]
    weights: tuple[float, ...]
    contribution: float | None = None

    @property
    def product(self) -> float:
        return math.prod(self.weights)

    def as_row(self) -> dict[str, Any]:
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
            shown = " -> ".join(by_id[n].shown if n in by_id else n for n in p.nodes)
            labels = "; ".join(f"{k}: {v}" for k, v in _labels(on_path).items())
            out.append({"rank": i + 1, **p.as_row(), "path_tokens": shown, "labels": labels})
        return out

    def to_pandas(self) -> pd.DataFrame:
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
        ranked = sorted(self.subgraph.nodes, key=lambda n: -(n.influence or 0.0))
        return [{k: v for k, v in n.as_row().items() if k in CIRCUIT_COLUMNS} for n in ranked]

    def to_pandas(self) -> pd.DataFrame:
        return to_frame(self.rows(), CIRCUIT_COLUMNS)


@dataclass(frozen=True)
class PromptMatch(Tabular):
    key: str
    text: str
    score: float
    positions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def as_row(self) -> dict[str, Any]:
        where = "; ".join(f"{n}@{','.join(map(str, p))}" for n, p in self.positions.items())
        return {"prompt": self.key, "score": self.score, "positions": where, "text": self.text}


@dataclass(frozen=True)
class LabelMatch(Tabular):
    """A feature found by its label (`search`)."""

    name: str
    layer: int
    index: int
    score: float
    label: str
    source: str | None = None
    explainer: str | None = None
