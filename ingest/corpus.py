"""Prompt corpora: plain text (one prompt per line), JSONL (`{"id", "text", ...}`), or a
HuggingFace dataset (`hf:NAME[:SPLIT[:COLUMN]]`, where the hub is reachable).

Everything wrong with a file is found before any work starts, and reported as one line naming
the file and line. Blank lines and repeated lines of a text file are skipped and counted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from circuitstore.schema.errors import InputError
from circuitstore.schema.inputs import strict_json, text_lines

TEXT_FORMATS = ("txt", "jsonl")


@dataclass(frozen=True)
class PromptRecord:
    """One prompt of a corpus. `key` is the user's id, or a hash of the text for plain text."""

    key: str
    text: str
    line: int
    extra: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Corpus:
    """The prompts of one corpus file, read and checked, with what was left out."""

    source: str
    prompts: tuple[PromptRecord, ...]
    blank_lines: int = 0
    repeated_lines: int = 0

    def shard(self, index: int, count: int) -> Corpus:
        """The prompts of shard `index` of `count`: the same split on every machine."""
        mine = tuple(p for p in self.prompts if shard_of(p.key, count) == index)
        return Corpus(self.source, mine, self.blank_lines, self.repeated_lines)

    def digest(self) -> str:
        """A hash of the prompts (keys and texts, in order): two corpora that share a file name
        still get different default run names, and the same corpus anywhere gets the same."""
        h = hashlib.sha256()
        for p in self.prompts:
            h.update(f"{p.key}\0{p.text}\0".encode())
        return h.hexdigest()


def shard_of(key: str, count: int) -> int:
    """Which of `count` shards a prompt key falls in: the same on every machine."""
    return int(hashlib.sha256(key.encode()).hexdigest()[:12], 16) % count


def parse_shard(spec: str) -> tuple[int, int]:
    """`I/N` with 0 <= I < N."""
    index, sep, count = spec.partition("/")
    if not (sep and index.isdigit() and count.isdigit()) or not 0 <= int(index) < int(count):
        raise InputError(f"--shard {spec!r}: expected I/N with 0 <= I < N, e.g. 0/4")
    return int(index), int(count)


def text_key(text: str) -> str:
    """The key of a prompt given as bare text: a hash of the text."""
    return "t" + hashlib.sha256(text.encode()).hexdigest()[:16]


def read_corpus(source: str, fmt: str | None = None) -> Corpus:
    """Read and validate a whole corpus; raises `InputError` on the first problem."""
    if source.startswith("hf:"):
        return _read_hf(source)
    path = Path(source)
    fmt = fmt or ("jsonl" if path.suffix in (".jsonl", ".ndjson") else "txt")
    if not path.exists():
        raise InputError(f"{path}: no such file")
    lines = list(text_lines(path))
    if not any(text.strip() for _, text in lines):
        raise InputError(f"{path}: no prompts (the file is empty or blank)")
    return _from_jsonl(path, lines) if fmt == "jsonl" else _from_text(path, lines)


def _from_text(path: Path, lines: Iterable[tuple[int, str]]) -> Corpus:
    prompts: dict[str, PromptRecord] = {}
    blank = repeated = 0
    for number, text in lines:
        if not text.strip():
            blank += 1
            continue
        key = text_key(text)
        if key in prompts:
            repeated += 1
            continue
        prompts[key] = PromptRecord(key, text, number)
    return Corpus(str(path), tuple(prompts.values()), blank, repeated)


def _from_jsonl(path: Path, lines: Iterable[tuple[int, str]]) -> Corpus:
    prompts: dict[str, PromptRecord] = {}
    blank = 0
    for number, raw in lines:
        if not raw.strip():
            blank += 1
            continue
        record = _parse_json_line(path, number, raw)
        key = record.key
        if key in prompts:
            first = prompts[key].line
            raise InputError(
                f"{path}:{number}: duplicate prompt id {key!r} (first on line {first})"
            )
        prompts[key] = record
    return Corpus(str(path), tuple(prompts.values()), blank, 0)


def _parse_json_line(path: Path, number: int, raw: str) -> PromptRecord:
    try:
        obj = strict_json(raw)
    except ValueError as exc:
        raise InputError(f"{path}:{number}: {exc}") from None
    if not isinstance(obj, dict):
        raise InputError(f'{path}:{number}: expected an object like {{"id": ..., "text": ...}}')
    text = obj.get("text")
    if not isinstance(text, str) or not text.strip():
        raise InputError(f'{path}:{number}: "text" must be a non-empty string')
    raw_id = obj.get("id")
    if raw_id is None:
        key = text_key(text)
    elif isinstance(raw_id, str | int) and not isinstance(raw_id, bool) and str(raw_id).strip():
        key = str(raw_id)
    else:
        raise InputError(f'{path}:{number}: "id" must be a non-empty string or an integer')
    if len(key) > MAX_KEY:
        raise InputError(
            f'{path}:{number}: "id" is {len(key)} characters long; at most {MAX_KEY} '
            "(it is indexed, and index entries are bounded)"
        )
    for name, value in (("id", key), ("text", text)):
        if not _encodable(value):
            raise InputError(f'{path}:{number}: "{name}" {_SURROGATE}')
    extra = {k: v for k, v in obj.items() if k not in ("id", "text") and v is not None}
    for name, value in extra.items():
        problem = property_problem(name, value)
        if problem:
            raise InputError(f"{path}:{number}: field {_short(name)!r} {problem}")
    return PromptRecord(key, text, number, extra)


INT64 = (-(2**63), 2**63 - 1)
_SURROGATE = "holds a lone surrogate (\\ud800-\\udfff), which UTF-8 cannot encode"
MAX_KEY = 1000  # a prompt id's characters: Neo4j's range index entries stop near 8 KB
_STORABLE = "a string, number or boolean, or a list of one of these"


def property_problem(name: str, value: Any) -> str | None:
    """Why Neo4j could not store `value` as property `name` (None when it can): a non-empty
    name holding a string, a 64-bit integer, a float or a boolean, or a list of one of these
    kinds (integers and floats mix); no nulls in lists, nothing nested."""
    items = value if isinstance(value, list) else [value]
    if not name.strip():
        return "has an empty name; Neo4j property names need at least one character"
    if not _encodable(name) or not all(_encodable(v) for v in items if isinstance(v, str)):
        return _SURROGATE
    for v in items:
        if not isinstance(v, str | int | float | bool):
            what = {dict: "an object", list: "a nested list", type(None): "a null"}.get(
                type(v), type(v).__name__
            )
            where = "in a list" if isinstance(value, list) else "as its value"
            return f"holds {what} {where}; a prompt property is {_STORABLE}"
        if isinstance(v, int) and not isinstance(v, bool) and not INT64[0] <= v <= INT64[1]:
            return f"holds the integer {_short(str(v))}, outside 64 bits ({INT64[0]}..{INT64[1]})"
    kinds = {"number" if type(v) in (int, float) else type(v).__name__ for v in items}
    if len(kinds) > 1:
        mixed = ", ".join(sorted(kinds))
        return f"is a list of mixed kinds ({mixed}); a prompt property is {_STORABLE}"
    return None


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_hf(source: str) -> Corpus:
    """`hf:NAME[:SPLIT[:COLUMN]]` through the `datasets` package (needs the hub)."""
    name, _, rest = source[3:].partition(":")
    split, _, column = rest.partition(":")
    try:
        import datasets
    except ImportError:
        raise InputError(f"{source}: install the `datasets` package to read hub datasets") from None
    try:
        rows = datasets.load_dataset(name, split=split or "train")
    except Exception as exc:  # the hub client raises many unrelated types
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise InputError(
            f"{source}: cannot load dataset ({type(exc).__name__}: {reason})"
        ) from None
    column = column or "text"
    prompts: dict[str, PromptRecord] = {}
    for number, row in enumerate(rows, start=1):
        text = row.get(column)
        if isinstance(text, str) and text.strip():
            prompts.setdefault(text_key(text), PromptRecord(text_key(text), text, number))
    if not prompts:
        raise InputError(f"{source}: no non-empty {column!r} strings")
    return Corpus(source, tuple(prompts.values()))
