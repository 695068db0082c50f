"""Read-only Cypher pass-through: the statement must plan as a read, and it runs in a READ
transaction, so the server refuses any write in it."""

from __future__ import annotations

import re
from typing import Any

import neo4j

from circuitstore.query import cypher as cq
from circuitstore.schema.errors import QueryError
from circuitstore.schema.inputs import MalformedJSONError, strict_json


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`name=value` pairs; values are JSON where they parse as JSON, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.isidentifier():
            raise QueryError(f"parameter {pair!r}: expected name=value, e.g. layer=8")
        params[name] = _value(pair, raw)
    return params


def _value(pair: str, raw: str) -> Any:
    """JSON where the text is JSON, else the text itself; JSON that could not be sent (nested
    too deep, an integer of thousands of digits, NaN) is refused."""
    try:
        return strict_json(raw)
    except MalformedJSONError:
        return raw
    except ValueError as exc:
        name = pair.partition("=")[0]
        raise QueryError(f"parameter {name!r}: {exc}") from None


# Clauses a read transaction still allows but that reach beyond reading the store: LOAD CSV
# fetches files and URLs (the server connects wherever it is told), TERMINATE stops other users'
# transactions. Matched outside strings and comments.
_REFUSED = {
    r"\bLOAD\s+CSV\b": "LOAD CSV reads files and URLs outside the store",
    r"\bTERMINATE\b": "TERMINATE is an administration command",
}
_NOT_CODE = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|`[^`]*`|//[^\n]*|/\*.*?\*/", re.S)


def check_read_only(statement: str) -> None:
    """Refuse, before it runs, a statement that reaches outside the store or administers it."""
    code = _NOT_CODE.sub(" ", statement).upper()
    for pattern, why in _REFUSED.items():
        if re.search(pattern, code):
            raise QueryError(f"refused: {why}; `query cypher` runs read-only statements")


def run_read(
    driver: neo4j.Driver, database: str, cypher: str, params: dict[str, Any], limit: int = 1000
) -> list[dict[str, Any]]:
    """Rows of a read-only query, at most `limit` of them. The server plans it first and must
    call it a read (query type `r`): schema, user and procedure administration are refused even
    where a read transaction would let them run."""
    check_read_only(cypher)

    def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
        kind = tx.run(cq.EXPLAIN + cypher, params).consume().query_type
        if kind != "r":
            raise QueryError(
                f"refused: the server plans this statement as {_KINDS.get(str(kind), kind)}; "
                "`query cypher` runs read-only statements"
            )
        result = tx.run(cypher, params)
        rows: list[dict[str, Any]] = []
        for record in result:
            if len(rows) >= limit:
                break
            items = record.items()  # type: ignore[no-untyped-call]  # untyped in the driver
            rows.append({k: _plain(v) for k, v in items})
        return rows

    with driver.session(database=database) as session:
        try:
            return session.execute_read(work)
        except neo4j.exceptions.ClientError as exc:
            if not (exc.code or "").startswith("Neo.ClientError.Statement."):
                raise
            reason = ((exc.message or "").strip().splitlines() or ["no details"])[0]
            raise QueryError(f"Neo4j refused the statement: {reason}") from None


_KINDS = {"rw": "a read-write", "w": "a write", "s": "a schema or administration command"}


def _plain(value: Any) -> Any:
    """Nodes and relationships as plain dicts, so every output format can print them."""
    if isinstance(value, neo4j.graph.Node):
        return {"labels": sorted(value.labels), **dict(value)}
    if isinstance(value, neo4j.graph.Relationship):
        return {"type": value.type, **dict(value)}
    if isinstance(value, neo4j.graph.Path):
        return [_plain(n) for n in value.nodes]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
