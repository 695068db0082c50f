"""Apply, inspect and check the schema of a store."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import neo4j

from circuitstore.schema import ddl
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.errors import SchemaError


@dataclass(frozen=True)
class SchemaRow:
    """One constraint or index as the server reports it."""

    name: str
    kind: str
    type: str
    entity: str
    labels_or_types: tuple[str, ...]
    properties: tuple[str, ...]
    ours: bool

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> SchemaRow:
        """From a SHOW CONSTRAINTS / SHOW INDEXES row."""
        return cls(
            name=record["name"],
            kind=record["kind"],
            type=record["type"],
            entity=record["entityType"],
            labels_or_types=tuple(record["labelsOrTypes"] or ()),
            properties=tuple(record["properties"] or ()),
            ours=record["name"] in ddl.SCHEMA_NAMES,
        )


@dataclass(frozen=True)
class SchemaState:
    """What the store holds of the schema: its version and its constraints and indexes."""

    version: int | None
    rows: tuple[SchemaRow, ...]

    @property
    def missing(self) -> tuple[str, ...]:
        """The names of the schema's items the store lacks."""
        present = {row.name for row in self.rows}
        return tuple(sorted(ddl.SCHEMA_NAMES - present))


def apply_schema(driver: neo4j.Driver, database: str, await_seconds: int = 300) -> SchemaState:
    """Create every constraint and index (idempotent), wait for them, record the version.
    Raises StoreUnavailableError or SchemaError (the driver's errors, translated)."""
    with translate_errors(), driver.session(database=database) as session:
        for item in ddl.SCHEMA_ITEMS:
            # Schema statements can't share a transaction with writes: one auto-commit each.
            session.run(item.cypher).consume()
        session.run(ddl.AWAIT_INDEXES, seconds=await_seconds).consume()
        session.execute_write(lambda tx: tx.run(ddl.RECORD_VERSION, version=ddl.SCHEMA_VERSION))
    return read_schema(driver, database)


def read_schema(driver: neo4j.Driver, database: str) -> SchemaState:
    """The store's schema version and its constraints and indexes."""
    with (
        translate_errors(),
        driver.session(database=database, default_access_mode=neo4j.READ_ACCESS) as session,
    ):
        rows = [
            SchemaRow.from_record(r.data())
            for query in (ddl.SHOW_CONSTRAINTS, ddl.SHOW_INDEXES)
            for r in session.run(query)
        ]
        record = session.run(ddl.READ_VERSION).single()
    version = None if record is None else int(record["version"])
    return SchemaState(version=version, rows=tuple(rows))


def require_current_schema(driver: neo4j.Driver, database: str) -> None:
    """Refuse to write into a store whose schema is missing or from another version."""
    state = read_schema(driver, database)
    if state.version is None or state.missing:
        raise SchemaError("the store has no circuitstore schema: run `circuitstore schema apply`")
    if state.version != ddl.SCHEMA_VERSION:
        raise SchemaError(
            f"the store's schema is version {state.version}, this circuitstore needs "
            f"{ddl.SCHEMA_VERSION}: migrate it or use a new database"
        )
