"""Read-only Cypher pass-through: the query runs in a READ transaction, so the server refuses
any write in it."""

from __future__ import annotations

import json
from typing import Any

import neo4j

from circuitstore.errors import QueryError


def parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    """`name=value` pairs; values are JSON where they parse as JSON, else strings."""
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep or not name.isidentifier():
            raise QueryError(f"parameter {pair!r}: expected name=value, e.g. layer=8")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def run_read(
    driver: neo4j.Driver, database: str, cypher: str, params: dict[str, Any], limit: int = 1000
) -> list[dict[str, Any]]:
    """Rows of a read-only query, at most `limit` of them."""

    def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
        result = tx.run(cypher, params)
        rows: list[dict[str, Any]] = []
        for record in result:
            if len(rows) >= limit:
                break
            rows.append({k: _plain(v) for k, v in record.items()})
        return rows

    with driver.session(database=database) as session:
        return session.execute_read(work)


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
