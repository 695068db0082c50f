"""The labels question: feature labels read from Neuronpedia's explanation exports (`files`)
and written onto the store's Features (`imports`), the features whose labels match some words
(`search`), and a feature's label with its provenance (`records`)."""

from circuitstore.query.labels.files import Explanations, LabelRow, read_files, read_labels
from circuitstore.query.labels.imports import (
    ImportSummary,
    check_rows,
    feature_rows,
    import_labels,
)

__all__ = [
    "Explanations",
    "ImportSummary",
    "LabelRow",
    "check_rows",
    "feature_rows",
    "import_labels",
    "read_files",
    "read_labels",
]
