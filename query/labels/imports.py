"""Labels written onto the store's Features: the explanations `files` read, checked against the
transcoder set, one label per feature (its best explanation), written in batches that set every
label property absolutely (an import run twice leaves the same store)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import neo4j

from circuitstore.query.labels import cypher
from circuitstore.query.labels.files import Explanations, LabelRow, read_files
from circuitstore.query.reader import StoreReader, TranscoderSetInfo
from circuitstore.query.tables import Tabular
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import FeatureKey

BATCH = 5000


@dataclass(frozen=True)
class ImportSummary(Tabular):
    """What one label import wrote."""

    transcoder_set: str
    files: tuple[str, ...]
    explanations: int
    features: int
    written: int
    skipped_blank: int
    source_sets: tuple[str, ...] = field(default_factory=tuple)


def check_rows(rows: Sequence[LabelRow], n_layers: int, d_transcoder: int, tset: str) -> None:
    """Every row's layer and index exist in the transcoder set; one source set in all."""
    sets = {r.source_set for r in rows if r.source_set is not None}
    if len(sets) > 1:
        first = rows[0]
        other = next(r for r in rows if r.source_set not in (None, first.source_set))
        raise InputError(
            f"{other.where}: source set {other.source_set!r} differs from "
            f"{first.source_set!r} ({first.where}): import one source set at a time"
        )
    for r in rows:
        if not 0 <= r.layer < n_layers:
            raise InputError(
                f"{r.where}: layer {r.layer} is out of range; transcoder set {tset} has layers "
                f"0..{n_layers - 1}"
            )
        if not 0 <= r.index < d_transcoder:
            raise InputError(
                f"{r.where}: index {r.index} is out of range; transcoder set {tset} has "
                f"features 0..{d_transcoder - 1} per layer"
            )


def feature_rows(rows: Sequence[LabelRow], tset: str) -> list[dict[str, Any]]:
    """One write row per feature: its best explanation (highest score, else the first) as the
    label, every distinct explanation in `labels`."""
    grouped: dict[tuple[int, int], list[LabelRow]] = {}
    for r in rows:
        grouped.setdefault((r.layer, r.index), []).append(r)
    out = []
    for (layer, index), group in sorted(grouped.items()):
        scored = [r for r in group if r.score is not None]
        best = max(scored, key=lambda r: r.score or 0.0) if scored else group[0]
        texts = list(dict.fromkeys([best.description, *(r.description for r in group)]))
        out.append(
            {
                "id": FeatureKey(tset, layer, index).id,
                "label": best.description,
                "labels": texts,
                "source": best.source,
                "explainer": best.explainer,
                "type": best.type_name,
                "score": best.score,
                "labelId": best.label_id,
            }
        )
    return out


def import_labels(
    store: StoreReader,
    source: Explanations | Sequence[Path],
    source_set: str | None = None,
    transcoder_set: str | None = None,
    batch: int = BATCH,
    stored_only: bool = False,
) -> ImportSummary:
    """Write the labels of `source` (files, or what `read_files` read of them) onto the
    Features of the transcoder set (`transcoder_set`, else the store's only one). Raises
    InputError, naming the file and line, before any write for anything wrong in the files.
    `stored_only`: leave out the labels of features the store lacks instead (a store that
    holds part of a corpus, as the demo's does)."""
    found = source if isinstance(source, Explanations) else read_files(source, source_set)
    rows = list(found.rows)
    info = store.tset(transcoder_set)
    check_rows(rows, info.n_layers, info.d_transcoder, info.id)
    writes = feature_rows(rows, info.id)
    if stored_only:
        ids = [w["id"] for w in writes]
        stored = {r["id"] for r in store.rows(cypher.STORED_FEATURES, ids=ids)}
        writes = [w for w in writes if w["id"] in stored]
    _check_features_exist(store, writes, rows, info)
    written = 0
    with (
        translate_errors(where=store.where),
        store.driver.session(database=store.database) as session,
    ):
        for start in range(0, len(writes), batch):
            chunk = writes[start : start + batch]
            written += session.execute_write(_write_batch, chunk)
    return ImportSummary(
        transcoder_set=info.id,
        files=tuple(str(p) for p in found.paths),
        explanations=len(rows),
        features=len(writes),
        written=written,
        skipped_blank=found.blank,
        source_sets=tuple(sorted({r.source_set for r in rows if r.source_set})),
    )


def _write_batch(tx: neo4j.ManagedTransaction, chunk: list[dict[str, Any]]) -> int:
    record = tx.run(cypher.SET_LABELS, rows=chunk).single()
    return 0 if record is None else int(record["n"])


def _check_features_exist(
    store: StoreReader, writes: list[dict[str, Any]], rows: list[LabelRow], tset: TranscoderSetInfo
) -> None:
    """Refuse (before any write) when a label's Feature is not in the store."""
    ids = [w["id"] for w in writes]
    found = store.rows(cypher.MISSING_FEATURE, ids=ids)
    if found:
        missing = writes[found[0]["i"]]["id"]
        layer, index = (int(x) for x in missing.rsplit("/", 2)[1:])
        where = next(r.where for r in rows if (r.layer, r.index) == (layer, index))
        raise InputError(
            f"{where}: feature {tset.family.name(layer, index)} is not in the store "
            f"(transcoder set {tset.id} has no Feature node for it)"
        )
