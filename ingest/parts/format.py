"""The parts format: what `ingest --parts DIR` writes and `circuitstore load DIR` reads.

A parts folder holds Parquet files, one folder per table:

- `transcoder_set.parquet`: the set's one row (its node's properties, `graphConfig` as JSON);
  written after the set's features, so its presence means they are all there.
- `features/L<layer>.parquet`: the set's features (id, name, firing frequency).
- `virtual_weights/L<layer>.parquet`, then `views/L<layer>.parquet`: each layer's views; the
  views file, written last, says the layer is complete.
- per prompt, one file in each of `nodes/`, `edges/`, `occurrences/` and `drives/`, then one in
  `prompts/`: the prompts file, written last, is the prompt's commit point (as the Prompt node
  is in the store); the others of a prompt without it are leftovers that a resume overwrites
  and `load` ignores.

Every file carries in its Parquet metadata the format version, its table, the transcoder set and
the hash of the graph settings, so a truncated or foreign file, or parts of two sets or two
settings in one folder, are named before anything is loaded. Files appear atomically (written
under a temporary name, then renamed). Column meanings: docs/parts.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from circuitstore.schema.errors import InputError
from circuitstore.schema.names import KINDS

FORMAT_VERSION = 1
KEY_VERSION = b"circuitstore.parts"
KEY_TABLE = b"circuitstore.table"
KEY_SET = b"circuitstore.transcoderSet"
KEY_GRAPH = b"circuitstore.graphConfigHash"

SET_FILE = "transcoder_set.parquet"
PROMPT_TABLES = ("nodes", "edges", "occurrences", "drives", "prompts")  # the last commits
LAYER_TABLES = ("features", "virtual_weights", "views")


class PartsError(InputError):
    """A parts folder that cannot be written or loaded: the message names the file."""


_STR, _INT, _F64, _BOOL = pa.string(), pa.int64(), pa.float64(), pa.bool_()

# The graph nodes' columns: the common ones, then each kind's own (the kind table's
# `Form.props`); tests/unit/test_parts.py checks that every form's property has a column.
NODE_COLUMNS: dict[str, pa.DataType] = {
    "id": _STR,
    "label": _STR,  # the kind's label besides GraphNode
    "localId": _STR,
    "prompt": _STR,
    "kind": _STR,
    "pos": _INT,
    "layer": _INT,
    "transcoderSet": _STR,
    "feature": _INT,
    "activation": _F64,
    "preactivation": _F64,
    "tokenId": _INT,
    "token": _STR,
    "remainder": _BOOL,
    "name": _STR,
    "value": _F64,
    "inputExplained": _F64,
    "keptInput": _F64,
}

SCHEMAS: dict[str, pa.Schema] = {
    "nodes": pa.schema(NODE_COLUMNS),
    "edges": pa.schema(
        {
            "prompt": _STR,
            "source": _STR,
            "target": _STR,
            "weight": _F64,
            "kind": _STR,
            "heads": pa.list_(_INT),
            "headWeights": pa.list_(_F64),
            "otherHeads": _F64,
            "residual": _F64,
        }
    ),
    "occurrences": pa.schema(
        {"prompt": _STR, "feature": _STR, "n": _INT, "sum": _F64, "max": _F64, "pos": _INT}
    ),
    "drives": pa.schema(
        {
            "prompt": _STR,
            "source": _STR,
            "target": _STR,
            "n": _INT,
            "sum": _F64,
            "sumAbs": _F64,
            "maxAbs": _F64,
        }
    ),
    "features": pa.schema(
        {
            "id": _STR,
            "transcoderSet": _STR,
            "layer": _INT,
            "index": _INT,
            "name": _STR,
            "logFrequency": _F64,
        }
    ),
    "views": pa.schema(
        {"id": _STR, "logitLensTokens": pa.list_(_STR), "deembedTokens": pa.list_(_STR)}
    ),
    "virtual_weights": pa.schema({"source": _STR, "target": _STR, "weight": _F64}),
}
# `prompts` and `transcoder_set` take their columns from their rows: a corpus line's own fields
# become the prompt's `x_*` properties, as in the store.


@dataclass(frozen=True)
class Stamp:
    """What every file of one folder shares: the set and the graph settings' hash."""

    transcoder_set: str
    graph_hash: str

    def metadata(self, table: str) -> dict[bytes, bytes]:
        """The file's Parquet key-value metadata."""
        return {
            KEY_VERSION: str(FORMAT_VERSION).encode(),
            KEY_TABLE: table.encode(),
            KEY_SET: self.transcoder_set.encode(),
            KEY_GRAPH: self.graph_hash.encode(),
        }


def stamp_of(where: str, metadata: dict[bytes, bytes] | None, table: str) -> Stamp:
    """The stamp a file carries, or a PartsError naming what is wrong with it."""
    meta = metadata or {}
    if KEY_VERSION not in meta:
        raise PartsError(f"{where}: not a circuitstore part (no {KEY_VERSION.decode()} metadata)")
    version = meta[KEY_VERSION].decode()
    if version != str(FORMAT_VERSION):
        raise PartsError(
            f"{where}: parts format version {version}, but this circuitstore reads version "
            f"{FORMAT_VERSION}: load it with the circuitstore that wrote it"
        )
    if meta.get(KEY_TABLE, b"").decode() != table:
        found = meta.get(KEY_TABLE, b"?").decode()
        raise PartsError(f"{where}: a part of table {found!r} in the folder of table {table!r}")
    return Stamp(meta.get(KEY_SET, b"").decode(), meta.get(KEY_GRAPH, b"").decode())


def part_name(prompt_id: str) -> str:
    """A prompt's file name in each per-prompt table: a hash of its id, so that a resumed or
    repeated run writes the same names."""
    return hashlib.sha256(prompt_id.encode()).hexdigest()[:24] + ".parquet"


def layer_name(layer: int) -> str:
    """A layer's file name in the per-layer tables."""
    return f"L{layer:03d}.parquet"


def table(name: str, rows: list[dict[str, Any]], stamp: Stamp) -> pa.Table:
    """Rows as a table of `name`, with the stamp in its metadata; columns from `SCHEMAS`, or
    from the rows for the tables whose columns vary."""
    schema = SCHEMAS.get(name)
    out = pa.Table.from_pylist(rows, schema=schema) if schema else pa.Table.from_pylist(rows)
    return out.replace_schema_metadata(stamp.metadata(name))


def column_table(name: str, columns: dict[str, list[Any]], stamp: Stamp) -> pa.Table:
    """Columns as a table of `name` (one with fixed columns; those not given are null)."""
    schema = SCHEMAS[name]
    n = len(next(iter(columns.values()))) if columns else 0
    data = {f.name: columns.get(f.name, [None] * n) for f in schema}
    return pa.Table.from_pydict(data, schema=schema).replace_schema_metadata(stamp.metadata(name))


def kind_props_without_column() -> set[str]:
    """Properties the kind table stores that the nodes table has no column for (none)."""
    wanted = {p for spec in KINDS.values() for p in spec.props}
    return wanted - set(NODE_COLUMNS)
