"""What the store answers about its QK traces beyond the traces themselves: the features that
drive one head's scores across the corpus, and the stored edge a trace was made for."""

from __future__ import annotations

from dataclasses import dataclass

from circuitstore.query.qk.records import QKTrace
from circuitstore.query.tables import Tabular

DRIVER_COLUMNS = ("feature", "n", "traces", "total", "mean", "max_abs")


@dataclass(frozen=True)
class QKDriver(Tabular):
    """A feature whose occurrences, on one side (query or key) of one head's stored traces,
    push its scores: their marginals summed (`total`) over the `n` of the `traces` stored
    traces that keep it among their strongest, `mean` = total / n, and the largest |marginal|
    in one trace (its positions there summed).
    A trace keeps only its strongest marginals, so these are sums of what was kept."""

    feature: str
    n: int
    traces: int
    total: float
    mean: float
    max_abs: float
    label: str | None = None


@dataclass(frozen=True)
class TracedEdge:
    """A stored trace with the ATTR edge it was made for (local ids of its source and target,
    and its weight), where it was made for one (`ingest --qk-top`, `qk --edge`)."""

    trace: QKTrace
    source: str | None
    target: str | None
    weight: float | None
