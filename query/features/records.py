"""What the features question answers: a feature's neighbours (links, corpus-wide or in one
prompt), its top examples and its card; each read from its row by name."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from circuitstore.query.heads.records import HeadSplit
from circuitstore.query.labels.records import LabelInfo
from circuitstore.query.subgraph import HasSubgraph, Subgraph
from circuitstore.query.tables import Tabular, clean, node_text, to_frame
from circuitstore.schema.names import FeatureFamily, NodeKind

if TYPE_CHECKING:
    import pandas as pd


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

    @classmethod
    def corpus(cls, r: dict[str, Any], family: FeatureFamily) -> Link:
        """A DRIVES neighbour, from a map of `features/cypher.corpus_links`, named in the
        set's `family`."""
        return cls(
            name=family.name(r["layer"], r["index"]),
            kind=NodeKind.FEATURE,
            layer=r["layer"],
            pos=None,
            n=r["n"],
            total=r["total"],
            mean=r["total"] / r["n"],
            sum_abs=r["sum_abs"],
            max_abs=r["max_abs"],
            label=r["label"],
        )

    @property
    def shown(self) -> str:
        """The name as a person reads it: with its token where it has one."""
        return node_text(self.name, self.token)

    def as_row(self) -> dict[str, Any]:
        """The link's fields, its split by head (where asked for) as columns."""
        row = {k: clean(getattr(self, k)) for k in self.__dataclass_fields__ if k != "split"}
        return row if self.split is None else {**row, **self.split.as_columns()}


@dataclass(frozen=True)
class Neighbours(HasSubgraph):
    """drivers / targets of one feature, corpus-wide (prompt None) or in one prompt."""

    feature: str
    direction: str  # "drivers" or "targets"
    prompt: str | None
    links: tuple[Link, ...]
    subgraph: Subgraph | None = None  # per-prompt answers: the edges behind the links

    def rows(self) -> list[dict[str, Any]]:
        """One row per link, ranked."""
        return [{"rank": i + 1, **link.as_row()} for i, link in enumerate(self.links)]

    def to_pandas(self) -> pd.DataFrame:
        """One row per link."""
        return to_frame(self.rows(), ("rank", "name", "kind", "n", "total"))


@dataclass(frozen=True)
class Example(Tabular):
    """A prompt where a feature fires, with the token it fires on in its context."""

    prompt: str
    pos: int
    token: str
    activation: float
    left: tuple[str, ...]
    right: tuple[str, ...]

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> Example:
        """From a map of `features/cypher.EXAMPLES`: the tokens of a window from `start`."""
        window, at = r["window"], r["pos"] - r["start"]
        token = window[at] if 0 <= at < len(window) else ""
        left, right = tuple(window[:at]), tuple(window[at + 1 :])
        return cls(r["prompt"], r["pos"], token, r["activation"], left, right)

    @property
    def context(self) -> str:
        """The window with the token marked: `... went [[to]] the`."""
        return f"{''.join(self.left)}[[{self.token}]]{''.join(self.right)}"

    def as_row(self) -> dict[str, Any]:
        """Prompt, position, token, activation, the marked context and each side of it."""
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
class FeatureCard(Tabular):
    """What a feature is: statistics, views, virtual-weight neighbours, top drivers, targets
    and examples, and its label."""

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
        """The card as one nested record (`query feature --format json`)."""
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
        """The card as one nested record (see `as_dict`)."""
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
