"""A checked parts folder as the bulk importer's CSV files, the corpus reductions done columnar.

DuckDB reads the parts (as pyarrow datasets, so any filesystem pyarrow opens) and computes what
the transactional path accumulates prompt by prompt: each feature's statistics and top-k
examples (ties broken by prompt id, as there), the DRIVES sums over prompts, and the set's
views on its features. The CSV files follow `neo4j-admin database import`'s header format;
lists join their items with a character that no stored text holds (checked).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from circuitstore.ingest.parts.format import PartsError
from circuitstore.ingest.parts.scan import Parts
from circuitstore.schema.model import Label, RelType

# Between a list's items in the CSV files: the first of these that no stored text holds (Unicode
# private-use characters first: decoded tokens hold control characters, U+001F among them).
DELIMITERS = ("\ue000", "\ue001", "\ue002", "\x1f", "\x1e")
_LISTED = {pa.string(): "string", pa.int64(): "long", pa.float64(): "double", pa.bool_(): "boolean"}


# A double as the importer reads it: DuckDB's shortest round-trip text, but Java's names for
# the values that are not numbers (the store holds NaN where a node had no input to explain).
NEO_DOUBLE = """
CREATE MACRO neo_double(x) AS CASE
  WHEN isnan(x) THEN 'NaN' WHEN isinf(x) AND x > 0 THEN 'Infinity'
  WHEN isinf(x) THEN '-Infinity' ELSE x::VARCHAR END
"""


@dataclass
class ImportFiles:
    """The CSV files of one import: `--nodes`/`--relationships` arguments and row counts."""

    folder: Path
    nodes: list[tuple[str, Path]] = field(default_factory=list)  # (labels, file)
    relationships: list[tuple[str, Path]] = field(default_factory=list)  # (type, file)
    multiline: list[Path] = field(default_factory=list)  # files whose text may hold newlines
    counts: dict[str, int] = field(default_factory=dict)
    delimiter: str = DELIMITERS[0]  # between list items: one that no stored text holds

    @property
    def n_relationships(self) -> int:
        """Relationships in all the files."""
        return sum(self.counts[t] for t, _ in self.relationships)

    @property
    def n_nodes(self) -> int:
        """Nodes in all the files."""
        return sum(self.counts[lab] for lab, _ in self.nodes)


def build(parts: Parts, out: Path, step: Callable[[str], None] = lambda _: None) -> ImportFiles:
    """Write the import files for `parts` into `out`; `step` hears each file's name first."""
    import duckdb  # imported where used: only load needs it

    con = duckdb.connect(config={"preserve_insertion_order": False})
    con.execute(NEO_DOUBLE)
    for table, names in parts.files.items():
        paths = [parts.folder.path(f) for f in names]
        dataset = ds.dataset(
            paths, schema=parts.schemas[table], format="parquet", filesystem=parts.folder.fs
        )
        con.register(table, dataset)
    con.register("transcoder_set", pa.Table.from_pylist([parts.set_row]))
    files = ImportFiles(out, delimiter=_delimiter(con, parts))
    writer = _Writer(con, files, step)
    _nodes(writer, parts)
    _relationships(writer, parts)
    return files


@dataclass
class _Writer:
    con: object
    files: ImportFiles
    step: Callable[[str], None]

    def copy(self, kind: str, name: str, sql: str, multiline: bool = False) -> None:
        path = self.files.folder / f"{name.replace(':', '_')}.csv"
        self.step(name)
        target = str(path).replace("'", "''")
        options = "HEADER, DELIMITER ',', QUOTE '\"', ESCAPE '\"'"
        if multiline:
            sql, quoted = self._multiline(sql)
            options += f", FORCE_QUOTE ({quoted})"
        copy = f"COPY ({sql}) TO '{target}' ({options})"
        (rows,) = self.con.execute(copy).fetchone()  # type: ignore[attr-defined]  # rows written
        (self.files.nodes if kind == "nodes" else self.files.relationships).append((name, path))
        self.files.counts[name] = int(rows)
        if multiline:
            self.files.multiline.append(path)

    def _multiline(self, sql: str) -> tuple[str, str]:
        """The importer's reader of files whose text may hold newlines finds where a row
        starts by its quotes: every row must hold a quoted cell and none may start with one
        (else "reached beginning with no previous CR" once a file outgrows its 4 MiB buffer).
        So each row starts with a number the importer ignores, and every text is quoted."""
        relation = self.con.sql(sql)  # type: ignore[attr-defined]
        names, types = relation.columns, [str(t) for t in relation.types]
        text = ", ".join(f'"{n}"' for n, t in zip(names, types, strict=True) if t == "VARCHAR")
        return f'SELECT 0 AS "row:IGNORE", * FROM ({sql})', text


def columns(
    schema: pa.Schema,
    ids: dict[str, str],
    delimiter: str,
    skip: tuple[str, ...] = (),
    table: str = "",
) -> str:
    """A SELECT list that renders each column in the importer's header form: `name:type`,
    lists joined with `delimiter` (empty lists as absent, which CSV cannot tell apart), `ids`
    mapping a column to its `:ID(...)`/`:START_ID(...)` header; `table` qualifies the names."""
    out = []
    for f in schema:
        if f.name in skip:
            continue
        col = f'{table}."{f.name}"' if table else f'"{f.name}"'
        if f.name in ids:
            out.append(f'{col} AS "{ids[f.name]}"')
        elif pa.types.is_list(f.type):
            kind = _LISTED.get(f.type.value_type, "string")
            items = f"list_transform({col}, lambda x: neo_double(x))" if kind == "double" else col
            joined = f"array_to_string({items}, chr({ord(delimiter)}))"
            out.append(
                f'CASE WHEN len({col}) = 0 THEN NULL ELSE {joined} END AS "{f.name}:{kind}[]"'
            )
        elif f.type == pa.null():
            continue  # a column no part ever filled
        elif f.type == pa.float64():
            out.append(f'neo_double({col}) AS "{f.name}:double"')
        else:
            out.append(f'{col} AS "{f.name}:{_LISTED.get(f.type, "string")}"')
    return ", ".join(out)


def _nodes(w: _Writer, parts: Parts) -> None:
    s, d = parts.schemas, w.files.delimiter
    set_cols = columns(pa.Table.from_pylist([parts.set_row]).schema, {"id": "id:ID(T)"}, d)
    layers = f" || chr({ord(d)}) || ".join(f"'{x}'" for x in parts.view_layers)
    extra = f', {layers} AS "viewLayers:long[]"' if layers else ""
    w.copy(
        "nodes",
        Label.TRANSCODER_SET,
        f'SELECT {set_cols}, true AS "featuresComplete:boolean"{extra} FROM transcoder_set',
        multiline=True,
    )
    view_cols = columns(s["views"], {}, d, skip=("id",), table="views")
    feature_cols = columns(s["features"], {"id": "id:ID(F)"}, d, table="features")
    w.copy("nodes", Label.FEATURE, _features_sql(feature_cols, view_cols, parts.top_k), True)
    prompt_cols = columns(s["prompts"], {"id": "id:ID(P)"}, d)
    w.copy("nodes", Label.PROMPT, f"SELECT {prompt_cols} FROM prompts", True)
    node_cols = columns(s["nodes"], {"id": "id:ID(G)"}, d, skip=("label",))
    label = f"'{Label.GRAPH_NODE}' || chr({ord(d)}) || label AS \":LABEL\""
    w.copy("nodes", Label.GRAPH_NODE, f"SELECT {node_cols}, {label} FROM nodes", multiline=True)


def _features_sql(feature_cols: str, view_cols: str, k: int) -> str:
    """Each feature with its views, its statistics over the prompts (0 where it never fired:
    the transactional path's starting values) and its top examples' count and least
    activation."""
    views = f", {view_cols}" if view_cols else ""
    return f"""
    WITH stats AS (
      SELECT feature, sum(n)::BIGINT AS n, count(*)::BIGINT AS p, sum("sum") AS s,
             greatest(max("max"), 0.0) AS m
      FROM occurrences GROUP BY feature),
    tops AS (
      SELECT feature, count(*)::BIGINT AS c, min(activation) AS lo
      FROM ({_top_sql(k)}) GROUP BY feature)
    SELECT {feature_cols}{views},
           coalesce(stats.n, 0) AS "nActive:long", coalesce(stats.p, 0) AS "nPrompts:long",
           neo_double(coalesce(stats.s, 0.0)) AS "sumActivation:double",
           neo_double(coalesce(stats.m, 0.0)) AS "maxActivation:double",
           coalesce(tops.c, 0) AS "topCount:long",
           neo_double(coalesce(tops.lo, 0.0)) AS "topMin:double"
    FROM features
    LEFT JOIN stats ON stats.feature = features.id
    LEFT JOIN tops ON tops.feature = features.id
    LEFT JOIN views ON views.id = features.id
    """


def _top_sql(k: int) -> str:
    """Each feature's k best prompts by activation, ties to the lower prompt id."""
    return f"""
    SELECT feature, prompt, "max" AS activation, pos FROM occurrences
    QUALIFY row_number() OVER (PARTITION BY feature ORDER BY "max" DESC, prompt ASC) <= {int(k)}
    """


def _relationships(w: _Writer, parts: Parts) -> None:
    ends = {"source": ":START_ID(G)", "target": ":END_ID(G)"}
    attr = columns(parts.schemas["edges"], ends, w.files.delimiter, skip=("prompt",))
    w.copy("relationships", RelType.ATTR, f"SELECT {attr} FROM edges")
    w.copy(
        "relationships",
        RelType.DRIVES,
        """SELECT source AS ":START_ID(F)", target AS ":END_ID(F)", sum(n)::BIGINT AS "n:long",
                  neo_double(sum("sum")) AS "sum:double",
                  neo_double(sum(sumAbs)) AS "sumAbs:double",
                  neo_double(max(maxAbs)) AS "maxAbs:double"
           FROM drives GROUP BY source, target""",
    )
    w.copy(
        "relationships",
        RelType.TOP_EXAMPLE,
        f"""SELECT feature AS ":START_ID(F)", prompt AS ":END_ID(P)",
                   neo_double(activation) AS "activation:double", pos AS "pos:long", prompt
            FROM ({_top_sql(parts.top_k)})""",
    )
    w.copy(
        "relationships",
        RelType.VIRTUAL_WEIGHT,
        'SELECT source AS ":START_ID(F)", target AS ":END_ID(F)", '
        'neo_double(weight) AS "weight:double" '
        "FROM virtual_weights",
    )


def _delimiter(con: object, parts: Parts) -> str:
    """The first of `DELIMITERS` that no text list in the parts holds (the importer would split
    an item at it)."""
    lists = [
        (table, f.name)
        for table, schema in parts.schemas.items()
        for f in schema
        if pa.types.is_list(f.type) and f.type.value_type == pa.string()
    ]
    for d in DELIMITERS:
        hits = (
            con.execute(  # type: ignore[attr-defined]
                f'SELECT 1 FROM {t} WHERE len(list_filter("{c}", '
                f"lambda x: contains(x, chr({ord(d)})))) > 0 LIMIT 1"
            ).fetchone()
            for t, c in lists
        )
        if not any(hit is not None for hit in hits):
            return d
    raise PartsError(
        f"{parts.folder.shown}: stored text holds every list delimiter the importer could use "
        f"({', '.join(f'U+{ord(d):04X}' for d in DELIMITERS)}): ingest without --parts"
    )
