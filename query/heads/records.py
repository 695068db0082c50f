"""What the heads question answers: a head's load in one prompt, and an edge's weight split by
path (same position, the strongest heads, the other heads, several attention layers)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from circuitstore.query.tables import Tabular


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
        """The split as the columns of a row."""
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

    @classmethod
    def stored(
        cls, weight: float, edge: dict[str, Any], name_of: Callable[[int], str]
    ) -> HeadSplit | None:
        """An ATTR edge's stored split, from a row holding its `heads`, `head_weights`,
        `other_heads` and `residual` (None where it has none: a constant's edge, a store
        ingested with --heads-per-edge 0)."""
        other = edge["other_heads"]
        if other is None:  # `otherHeads` marks a split edge; its lists are absent when empty
            return None
        numbers, weights = edge["heads"] or [], edge["head_weights"] or []
        heads = tuple((name_of(h), w) for h, w in zip(numbers, weights, strict=True))
        residual = edge["residual"] or 0.0
        return cls(residual, heads, other, weight - residual - math.fsum(weights) - other)


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
