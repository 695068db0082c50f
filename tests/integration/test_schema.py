"""Schema and connection against a real Neo4j (testcontainers)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.schema import ddl
from circuitstore.schema.apply import apply_schema, read_schema, require_current_schema
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.errors import ConstraintViolationError, StoreUnavailableError
from circuitstore.schema.model import Label


def test_apply_twice_is_idempotent(empty_store, neo4j_settings):
    first = apply_schema(empty_store, neo4j_settings.database)
    second = apply_schema(empty_store, neo4j_settings.database)
    names = sorted(r.name for r in second.rows if r.ours)
    assert names == sorted(ddl.SCHEMA_NAMES)
    assert sorted(r.name for r in first.rows if r.ours) == names
    assert second.version == ddl.SCHEMA_VERSION
    assert not second.missing
    require_current_schema(empty_store, neo4j_settings.database)


def test_missing_schema_is_reported(empty_store, neo4j_settings):
    state = read_schema(empty_store, neo4j_settings.database)
    assert state.version is None
    assert set(state.missing) == ddl.SCHEMA_NAMES


def test_write_read_round_trip(empty_store, neo4j_settings):
    apply_schema(empty_store, neo4j_settings.database)
    row = {"id": "ts/8/355", "transcoderSet": "ts", "layer": 8, "index": 355}
    with empty_store.session(database=neo4j_settings.database) as s:
        s.execute_write(
            lambda tx: tx.run(f"UNWIND $rows AS r CREATE (f:{Label.FEATURE}) SET f = r", rows=[row])
        )
        got = s.run(
            f"MATCH (f:{Label.FEATURE} {{transcoderSet: $s, layer: $l, index: $i}}) RETURN f",
            s="ts",
            l=8,
            i=355,
        ).single()
    assert dict(got["f"]) == row


def test_constraint_violation_becomes_our_error(empty_store, neo4j_settings):
    apply_schema(empty_store, neo4j_settings.database)
    create = f"CREATE (:{Label.PROMPT} {{id: $id}})"
    with empty_store.session(database=neo4j_settings.database) as s:
        s.run(create, id="p1").consume()
        with (
            pytest.raises(ConstraintViolationError, match="constraint violated"),
            translate_errors(),
        ):
            s.run(create, id="p1").consume()


def test_wrong_password_is_one_clear_error(neo4j_settings):
    bad = Neo4jSettings(uri=neo4j_settings.uri, password="not-the-password")
    with pytest.raises(StoreUnavailableError, match="refused the credentials"):
        open_driver(bad)


def test_cli_apply_then_show(empty_store, neo4j_env):
    runner = CliRunner()
    applied = runner.invoke(cli, ["schema", "apply"])
    assert applied.exit_code == 0, applied.output
    assert f"schema version {ddl.SCHEMA_VERSION}" in applied.output
    shown = runner.invoke(cli, ["schema", "show", "--format", "csv"])
    assert shown.exit_code == 0, shown.output
    assert all(name in shown.output for name in ddl.SCHEMA_NAMES)
    password = neo4j_env.password.get_secret_value()
    assert password not in applied.output + shown.output


def test_cli_cypher_is_read_only(empty_store, neo4j_env):
    runner = CliRunner()
    ok = runner.invoke(
        cli, ["query", "cypher", "RETURN $x + 1 AS y", "-p", "x=41", "--format", "json"]
    )
    assert ok.exit_code == 0, ok.output
    assert '"y": 42' in ok.output
    write = runner.invoke(cli, ["query", "cypher", "CREATE (:Prompt {id: 'x'})"])
    assert write.exit_code != 0
    assert "Traceback" not in write.output
    with empty_store.session() as s:
        assert s.run("MATCH (n) RETURN count(n) AS c").single()["c"] == 0


def test_cli_unreachable_server_is_one_line(monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    monkeypatch.setenv("NEO4J_PASSWORD", "whatever-password")
    result = CliRunner().invoke(cli, ["schema", "show"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0
    assert "cannot reach Neo4j at bolt://127.0.0.1:1" in result.output
