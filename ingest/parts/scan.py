"""Reading a parts folder back: every file checked (readable, this format, one set, one set of
graph settings) before anything is loaded, and the committed prompts' files listed."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from circuitstore.ingest.parts import format as fmt
from circuitstore.ingest.parts.folder import Folder
from circuitstore.ingest.parts.format import PartsError


@dataclass(frozen=True)
class Parts:
    """A checked parts folder: its files per table and what they were written for."""

    folder: Folder
    stamp: fmt.Stamp
    set_row: dict[str, Any]
    files: dict[str, list[str]]  # table -> paths relative to the folder
    schemas: dict[str, pa.Schema]
    view_layers: list[int]

    @property
    def top_k(self) -> int:
        """The top examples kept per feature, from the graph settings the parts were made with."""
        return int(json.loads(self.set_row["graphConfig"])["top_examples"])

    @property
    def n_prompts(self) -> int:
        """The committed prompts."""
        return len(self.files["prompts"])


def scan(url: str, progress: Callable[[int], None] = lambda _: None) -> Parts:
    """Check every file of the folder at `url` and list the committed prompts' parts; a
    PartsError names the first problem (a truncated or foreign file, two sets or settings, a
    format version this code does not read). `progress` hears each file checked."""
    folder = Folder.open(url)
    if not folder.exists(fmt.SET_FILE):
        raise PartsError(
            f"{folder.shown}: no {fmt.SET_FILE}, so not a parts folder, or its ingest wrote no "
            "prompt yet"
        )
    stamp = folder.stamp(fmt.SET_FILE, "transcoder_set")
    set_table = folder.read(fmt.SET_FILE)
    committed = folder.names("prompts")
    files: dict[str, list[str]] = {}
    schemas: dict[str, pa.Schema] = {}
    for table in fmt.PROMPT_TABLES + fmt.LAYER_TABLES:
        held = folder.names(table)
        names = committed if table in fmt.PROMPT_TABLES else held
        if missing := sorted(set(names) - set(held)):
            raise PartsError(
                f"{folder.shown}/{table}/{missing[0]}: missing, though its prompt is committed"
            )
        files[table] = [f"{table}/{name}" for name in names]
        found: list[pa.Schema] = []
        for rel in files[table]:
            schema = folder.schema(rel)
            _same(folder, rel, stamp, fmt.stamp_of(f"{folder.shown}/{rel}", schema.metadata, table))
            found.append(schema.remove_metadata())
            progress(1)
        schemas[table] = fmt.SCHEMAS.get(table) or _unify(folder, table, found)
    layers = sorted(int(name.split("/")[-1][1:4]) for name in files["views"])
    row = set_table.to_pylist()[0]
    return Parts(folder, stamp, row, files, schemas, layers)


def count_files(url: str) -> int:
    """How many files `scan` checks (for its progress bar)."""
    folder = Folder.open(url)
    prompts = len(folder.names("prompts"))
    return prompts * len(fmt.PROMPT_TABLES) + sum(len(folder.names(t)) for t in fmt.LAYER_TABLES)


def _same(folder: Folder, rel: str, want: fmt.Stamp, got: fmt.Stamp) -> None:
    if got == want:
        return
    if got.transcoder_set != want.transcoder_set:
        what = f"transcoder set {got.transcoder_set}, the folder's is {want.transcoder_set}"
    else:
        what = f"graph settings hash {got.graph_hash}, the folder's is {want.graph_hash}"
    raise PartsError(
        f"{folder.shown}/{rel}: a part of {what}: parts of two sets or settings in one folder"
    )


def _unify(folder: Folder, table: str, schemas: list[pa.Schema]) -> pa.Schema:
    """One schema for a table whose columns vary by part (a corpus's own fields)."""
    try:
        if not schemas:  # no prompt yet: the one column every prompt has
            return pa.schema({"id": pa.string()})
        return pa.unify_schemas(schemas, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise PartsError(
            f"{folder.shown}/{table}: a column has different types in different parts ({exc})"
        ) from None
