"""`circuitstore query ...` without a database: help, and names refused before connecting."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.commands.query import query

COMMANDS = [
    "drivers",
    "targets",
    "examples",
    "feature",
    "paths",
    "circuit",
    "prompts-with",
    "cypher",
    "export-graph",
    "search",
    "prompts",
]


def test_every_command_is_there():
    assert set(COMMANDS) <= set(query.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_help_has_an_example(name):
    result = CliRunner().invoke(cli, ["query", name, "-h"])
    assert result.exit_code == 0
    assert "Example: circuitstore query" in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["drivers", "mlp8tc[x]"],
        ["targets", "mlp8tc[x]", "--prompt", "p"],
        ["examples", "mlp8tc[x]"],
        ["feature", "mlp8tc[x]"],
        ["prompts-with", "1:2", "mlp8tc[x]"],
    ],
)
def test_malformed_feature_fails_in_one_line_before_connecting(args, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    result = CliRunner().invoke(cli, ["query", *args])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: feature 'mlp8tc[x]': expected mlp<layer>tc[<index>], "
        "mlp<layer>tc[<index>]@<pos>, clt<layer>[<index>], clt<layer>[<index>]@<pos> "
        "or <layer>:<index>"
    )


def test_malformed_path_target(monkeypatch):
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    result = CliRunner().invoke(cli, ["query", "paths", "--prompt", "p", "--to", "logit[3]"])
    assert result.exit_code == 2
    assert result.output.startswith("Error: node 'logit[3]': expected a feature")


def test_labels_import_has_an_example():
    result = CliRunner().invoke(cli, ["labels", "import", "-h"])
    assert result.exit_code == 0
    assert "Example: circuitstore labels import" in result.output


def test_malformed_label_file_fails_in_one_line_before_connecting(tmp_path, monkeypatch):
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("NEO4J_PASSWORD", "x")
    path = tmp_path / "batch-0.jsonl"
    path.write_text('{"layer": "0-tres-dc", "index": "3", "description": "ok"}\n{oops\n')
    result = CliRunner().invoke(cli, ["labels", "import", str(path)])
    assert result.exit_code == 2
    assert (
        result.output.strip()
        == f"Error: {path} line 2: not valid JSON (Expecting property name enclosed in double quotes)"
    )
    missing = CliRunner().invoke(cli, ["labels", "import", str(tmp_path / "nope.jsonl")])
    assert missing.exit_code == 2
    assert missing.output.startswith(f"Error: {tmp_path / 'nope.jsonl'}: cannot read")
    assert len(missing.output.strip().splitlines()) == 1
