"""What the labels question answers: a feature's label with its provenance, and a feature found
by its label."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuitstore.query.tables import Tabular
from circuitstore.schema.names import FeatureFamily


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
        """From a Feature node's properties (None where it has no label)."""
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
        """Source, explainer, type and score, those known, as one line."""
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
class LabelMatch(Tabular):
    """A feature found by its label (`search`)."""

    name: str
    layer: int
    index: int
    score: float
    label: str
    source: str | None = None
    explainer: str | None = None

    @classmethod
    def from_row(cls, r: dict[str, Any], family: FeatureFamily) -> LabelMatch:
        """From a `labels/cypher.SEARCH_LABELS` row, named in the set's `family`."""
        return cls(name=family.name(r["layer"], r["index"]), **r)
