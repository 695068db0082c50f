"""Feature labels read from Neuronpedia's explanation exports (`imports` writes them on Features).

What is read (Neuronpedia's published export of a source set, `v1/<model>/<source>/explanations/
batch-<n>.jsonl.gz`, and the JSON array its export API returns): one object per explanation with

- `layer`: the source id, `<layer>-<source set>` (`8-tres-dc`), or a bare layer number;
- `index`: the feature's index, a string of digits in the export (a number is taken too);
- `description`: the label;
- optional provenance: `modelId` (`gpt2-small`), `explanationModelName` (the explainer,
  `gpt-4o-mini`), `typeName` (`oai_token-act-pair`), `id` (Neuronpedia's explanation id), and a
  score where one is given (`score`, `scoreV1` or `scoreV2`). Other fields (`embedding`,
  `umap_*`, `authorId`...) are ignored.

Files may be gzipped (by content, whatever their name), JSON Lines or one JSON array. Every file
is read and checked whole before anything is written: a malformed line, a missing or mistyped
field, a source set other than the one asked for, a layer or index the transcoder set does not
have, is one error naming the file and line (or array entry), and nothing is written. A feature
with several explanations gets the best scored (else the first) as its `label` and all of them in
`labels`. Writes go in batches, each setting every label property absolutely, so an interrupted
import is finished by running it again and an import run twice leaves the same store.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from circuitstore.schema.errors import InputError
from circuitstore.schema.inputs import (
    MalformedJSONError,
    byte_lines,
    read_document,
    starts_with,
    strict_json,
)

MAX_LABEL_CHARS = 10_000
SCORE_FIELDS = ("score", "scoreV2", "scoreV1")
_SOURCE = re.compile(r"(?P<layer>\d{1,9})-(?P<set>[A-Za-z0-9_.-]+?)(?:__.*)?")
_INDEX = re.compile(r"\d{1,9}")


@dataclass(frozen=True)
class LabelRow:
    """One explanation as read, with where it was read (`file line N` or `file entry N`)."""

    where: str
    layer: int
    index: int
    description: str
    source_set: str | None
    model_id: str | None
    explainer: str | None
    type_name: str | None
    score: float | None
    label_id: str | None

    @property
    def source(self) -> str:
        """Neuronpedia's name of the feature's source: `neuronpedia:gpt2-small/8-tres-dc`."""
        src = f"{self.layer}-{self.source_set}" if self.source_set else str(self.layer)
        return f"neuronpedia:{self.model_id}/{src}" if self.model_id else f"neuronpedia:{src}"


def read_labels(path: Path, source_set: str | None = None) -> tuple[list[LabelRow], int]:
    """Every explanation in `path`, checked (see the module's docstring), and how many blank
    descriptions were skipped. `source_set`: the rows must name this source set."""
    rows: list[LabelRow] = []
    blank = 0
    for where, obj in _entries(path):
        row = _row(where, obj, source_set)
        if row is None:
            blank += 1
        else:
            rows.append(row)
    return rows, blank


def _entries(path: Path) -> Iterator[tuple[str, Any]]:
    if starts_with(path, b"[", gunzip=True):
        raw = read_document(path, gunzip=True)
        try:
            items = strict_json(_text(path, raw))
        except MalformedJSONError as exc:
            raise InputError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:
            raise InputError(f"{path}: {exc}") from None
        if not isinstance(items, list):
            raise InputError(f"{path}: expected one JSON array of explanations")
        for i, obj in enumerate(items, 1):
            yield f"{path} entry {i}", obj
        return
    # The whole file is read and decoded before any row is checked.
    lines = [(number, _text(path, raw, number)) for number, raw in byte_lines(path, gunzip=True)]
    for number, line in lines:
        if not line.strip():
            continue
        try:
            obj = strict_json(line)
        except MalformedJSONError as exc:
            raise InputError(f"{path} line {number}: not valid JSON ({exc.msg})") from None
        except ValueError as exc:
            raise InputError(f"{path} line {number}: {exc}") from None
        yield f"{path} line {number}", obj


def _text(path: Path, raw: bytes, first_line: int = 1) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = first_line + raw[: exc.start].count(b"\n")
        raise InputError(f"{path} line {at}: not UTF-8 text") from None


def _row(where: str, obj: Any, wanted_set: str | None) -> LabelRow | None:
    if not isinstance(obj, dict):
        raise InputError(f"{where}: expected a JSON object, found {type(obj).__name__}")
    for name in ("layer", "index", "description"):
        if name not in obj:
            raise InputError(
                f"{where}: no {name!r} field (an explanation needs layer, index, description)"
            )
    layer, source_set = _layer(where, obj["layer"])
    if wanted_set is not None and source_set is not None and source_set != wanted_set:
        raise InputError(
            f"{where}: source {obj['layer']!r} is of source set {source_set!r}, not {wanted_set!r}"
        )
    source_set = source_set or wanted_set
    index = _index(where, obj["index"])
    description = obj["description"]
    if not isinstance(description, str):
        raise InputError(f"{where}: 'description' must be a string")
    description = description.strip()
    if not description:
        return None
    _check_text(where, "description", description)
    if len(description) > MAX_LABEL_CHARS:
        raise InputError(
            f"{where}: description of {len(description)} characters (at most {MAX_LABEL_CHARS})"
        )
    return LabelRow(
        where=where,
        layer=layer,
        index=index,
        description=description,
        source_set=source_set,
        model_id=_optional_text(where, obj, "modelId"),
        explainer=_optional_text(where, obj, "explanationModelName"),
        type_name=_optional_text(where, obj, "typeName"),
        score=_score(where, obj),
        label_id=_optional_text(where, obj, "id"),
    )


def _layer(where: str, value: Any) -> tuple[int, str | None]:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value, None
    if isinstance(value, str):
        if _INDEX.fullmatch(value):
            return int(value), None
        match = _SOURCE.fullmatch(value)
        if match:
            return int(match["layer"]), match["set"]
    raise InputError(
        f"{where}: layer {value!r}: expected a Neuronpedia source id such as '8-tres-dc' "
        "or a layer number"
    )


def _index(where: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**9:
        return value
    if isinstance(value, str) and _INDEX.fullmatch(value):
        return int(value)
    raise InputError(f"{where}: index {value!r}: expected a feature index (digits)")


def _optional_text(where: str, obj: dict[str, Any], name: str) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InputError(f"{where}: {name!r} must be a string")
    _check_text(where, name, value)
    return value or None


def _check_text(where: str, name: str, value: str) -> None:
    """Neo4j stores UTF-8: a lone surrogate (JSON can spell one) cannot be stored."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InputError(f"{where}: {name!r} holds a lone surrogate (not storable text)") from None


def _score(where: str, obj: dict[str, Any]) -> float | None:
    for name in SCORE_FIELDS:
        value = obj.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"{where}: {name!r} must be a number")
        if not math.isfinite(value):
            raise InputError(f"{where}: {name!r} must be finite")
        return float(value)
    return None


@dataclass(frozen=True)
class Explanations:
    """Every explanation of some files, read and checked (not yet against a store)."""

    paths: tuple[Path, ...]
    rows: tuple[LabelRow, ...]
    blank: int


def read_files(paths: Sequence[Path], source_set: str | None = None) -> Explanations:
    """Read and check every file (see `read_labels`); refuse files with no explanation."""
    if not paths:
        raise InputError("labels import: name at least one file")
    rows: list[LabelRow] = []
    blank = 0
    for path in paths:
        got, skipped = read_labels(path, source_set)
        rows += got
        blank += skipped
    if not rows:
        raise InputError(f"{', '.join(map(str, paths))}: no explanation with a description")
    return Explanations(tuple(paths), tuple(rows), blank)
