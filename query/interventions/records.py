"""What the interventions question answers: one stored intervention of `circuitstore verify`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuitstore.query.tables import Tabular

COLUMNS = (
    *("prompt", "kind", "features", "scale", "predicted_diff", "observed_diff", "flips"),
    "top_token",
)


@dataclass(frozen=True)
class InterventionInfo(Tabular):
    """One intervention `verify` stored: its prompt (by key), its kind (`single`: one feature;
    `together`: the prompt's circuit at once), the features (node ids, sorted) scaled by
    `scale`, the change in the answer's logit difference to the runner-up that the stored
    graph predicted and that the real model showed, whether the model's top token changed
    (`flips`) and its top token after the intervention."""

    prompt: str
    kind: str
    features: tuple[str, ...]
    scale: float
    predicted_diff: float
    observed_diff: float
    flips: bool
    top_token: str

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> InterventionInfo:
        """From a map of `interventions/cypher.py`'s statements."""
        return cls(**{**r, "features": tuple(r["features"])})

    def as_row(self) -> dict[str, Any]:
        """The intervention as one flat row: its features joined by commas."""
        return {**super().as_row(), "features": ", ".join(self.features)}
