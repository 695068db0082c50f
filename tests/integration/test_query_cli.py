"""`circuitstore query ...` end to end: every command in the three formats, exports, and the
one-line errors, against the store the ingest job fills."""

from __future__ import annotations

import csv
import io
import json
import unicodedata
from pathlib import Path

import jsonschema
import networkx as nx
import pytest
from click.testing import CliRunner

from circuitstore.cli import cli

from .helpers import fill

pytestmark = pytest.mark.slow

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "neuronpedia" / "graph-schema.json").read_text()
)


@pytest.fixture(scope="module")
def filled(driver, neo4j_settings, tiny_weights, tmp_path_factory):  # type: ignore[no-untyped-def]
    fill(driver, neo4j_settings.database, tiny_weights, tmp_path_factory.mktemp("query-cli"))
    with driver.session() as s:
        r = s.run(
            "MATCH (o:Occurrence {layer: 1})<-[:ATTR]-() WITH o, count(*) AS c "
            "MATCH (p:Prompt {id: o.prompt}) RETURN p.key AS key, o.localId AS occ ORDER BY c DESC LIMIT 1"
        ).single()
    feature = r["occ"].split("@")[0]
    return {"prompt": r["key"], "occurrence": r["occ"], "feature": feature}


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["query", *args])
    return result.exit_code, result.output


def commands(f: dict[str, str]) -> list[list[str]]:
    return [
        ["drivers", f["feature"], "--sign", "abs"],
        ["targets", "0:40", "--top", "3"],
        ["drivers", f["occurrence"], "--prompt", f["prompt"], "--sign", "abs"],
        ["examples", f["feature"], "--top", "3"],
        ["feature", f["feature"]],
        ["paths", "--prompt", f["prompt"], "--top", "3"],
        ["circuit", "--prompt", f["prompt"], "--threshold", "0.5"],
        ["prompts-with", f["feature"]],
        ["cypher", "MATCH (p:Prompt) RETURN count(p) AS n"],
        ["prompts", "--top", "3"],
        ["prompts", "--order", "stored-replacement", "--ascending", "--max", "1"],
        ["prompt", f["prompt"]],
        ["paths", "--prompt", f["prompt"], "--method", "beam", "--beam-width", "3"],
        ["drivers", f["occurrence"], "--prompt", f["prompt"], "--sign", "abs", "--by-head"],
        ["heads", "--prompt", f["prompt"], "--top", "4"],
    ]


def test_by_head_shows_named_heads(filled, neo4j_env):
    occ, prompt = filled["occurrence"], filled["prompt"]
    code, table = run("drivers", occ, "--prompt", prompt, "--sign", "abs", "--by-head")
    assert code == 0, table
    header = table.splitlines()[0].split()
    assert {"residual", "heads", "other_heads", "multi_layer"} <= set(header)
    assert "attn" in table
    code, text = run("drivers", occ, "--prompt", prompt, "--by-head", "--format", "json")
    rows = json.loads(text)
    assert any(isinstance(r["heads"], dict) and r["heads"] for r in rows)
    code, text = run("heads", "--prompt", prompt, "--format", "json")
    heads = json.loads(text)
    assert [r["rank"] for r in heads] == list(range(1, len(heads) + 1))
    assert [r["sum_abs"] for r in heads] == sorted((r["sum_abs"] for r in heads), reverse=True)
    assert 0 < sum(r["share"] for r in heads) <= 1 + 1e-9
    code, out = run("drivers", filled["feature"], "--by-head")
    assert code == 2
    assert "--by-head needs --prompt" in out


@pytest.mark.parametrize("index", range(15))
def test_every_command_in_three_formats(filled, neo4j_env, index):
    args = commands(filled)[index]
    code, table = run(*args)
    assert code == 0, table
    assert args[0] == "feature" or "(no rows)" not in table
    code, text = run(*args, "--format", "json")
    assert code == 0, text
    data = json.loads(text)
    assert data
    code, text = run(*args, "--format", "csv")
    assert code == 0, text
    assert list(csv.reader(io.StringIO(text)))[1:]


def test_exports(filled, neo4j_env, tmp_path):
    p = filled["prompt"]
    code, out = run("circuit", "--prompt", p, "--export", "graphml", str(tmp_path / "c.graphml"))
    assert code == 0, out
    g = nx.read_graphml(tmp_path / "c.graphml")
    assert g.number_of_nodes() > 1
    assert g.number_of_edges() > 0
    code, out = run("paths", "--prompt", p, "--export", "json", str(tmp_path / "p.json"))
    assert code == 0, out
    assert json.loads((tmp_path / "p.json").read_text())["links"]
    code, out = run(
        "drivers", filled["occurrence"], "--prompt", p, "--export", "json", str(tmp_path / "d.json")
    )
    assert code == 0, out
    code, out = run("export-graph", "--prompt", p, "--out", str(tmp_path / "g.json"))
    assert code == 0, out
    graph = json.loads((tmp_path / "g.json").read_text())
    assert {"metadata", "qParams", "nodes", "links"} <= set(graph)
    jsonschema.Draft7Validator(SCHEMA).validate(graph)
    # A folder: circuit-tracer's viewer layout, the scan and source set as asked.
    viewer = tmp_path / "viewer"
    viewer.mkdir()
    code, out = run(
        "export-graph",
        "--prompt",
        p,
        "--out",
        str(viewer),
        "--scan",
        "gpt2-small",
        "--source-set",
        "tres-dc",
        "--format",
        "json",
    )
    assert code == 0, out
    summary = json.loads(out)[0]
    assert (summary["scan"], summary["source_set"]) == ("gpt2-small", "tres-dc")
    listed = json.loads((viewer / "graph-metadata.json").read_text())["graphs"]
    assert [g["slug"] for g in listed] == [graph["metadata"]["slug"]]
    written = json.loads((viewer / f"{listed[0]['slug']}.json").read_text())
    assert written["metadata"]["feature_details"] == {"neuronpedia_source_set": "tres-dc"}
    jsonschema.Draft7Validator(SCHEMA).validate(written)
    code, out = run("drivers", filled["feature"], "--export", "json", str(tmp_path / "x.json"))
    assert code == 2
    assert "--export needs a subgraph answer" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["drivers", "mlp1tc[x]"],
            "Error: feature 'mlp1tc[x]': expected mlp<layer>tc[<index>], mlp<layer>tc[<index>]@<pos>, "
            "clt<layer>[<index>], clt<layer>[<index>]@<pos> or <layer>:<index>",
        ),
        (["drivers", "mlp1tc[999]"], "Error: feature mlp1tc[999]: index 999 is out of range;"),
        (["examples", "mlp9tc[1]"], "Error: feature mlp9tc[1]: layer 9 is out of range;"),
        (["paths", "--prompt", "no-such-prompt"], "Error: unknown prompt 'no-such-prompt'"),
        (
            ["drivers", "1:1", "--prompt", "no-such-prompt"],
            "Error: unknown prompt 'no-such-prompt'",
        ),
        (["feature", "1:1", "--transcoder-set", "nope"], "Error: unknown transcoder set 'nope'"),
        (
            ["cypher", "CREATE (n:Feature) RETURN n"],
            "Error: refused: the server plans this statement as a read-write",
        ),
    ],
)
def test_errors_are_one_line(filled, neo4j_env, args, message):
    code, out = run(*args)
    assert code != 0
    assert out.startswith(message), out
    assert len(out.strip().splitlines()) == 1


def screen_width(text: str) -> int:
    return sum(
        0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
        for c in text
    )


def test_tables_show_tokens(filled, neo4j_env):
    """Node ids come with their tokens in the tables people read."""
    p = filled["prompt"]
    code, out = run(
        "cypher",
        "MATCH (x:Prompt {key: $k}) RETURN x.tokens AS t",
        "-p",
        f"k={p}",
        "--format",
        "json",
    )
    tokens = json.loads(out)[0]["t"]
    code, out = run("paths", "--prompt", p, "--top", "3")
    assert code == 0, out
    for line in out.splitlines()[2:]:
        first = line.split()[3]  # rank, product, length, then the path
        pos = (
            int(first.rsplit("@", 1)[1]) if "@" in first and not first.startswith("rem[") else None
        )
        if pos is not None:
            assert f"{first} {tokens[pos]!r}" in line
    code, out = run("circuit", "--prompt", p, "--threshold", "0.5")
    assert code == 0, out
    code, text = run("circuit", "--prompt", p, "--threshold", "0.5", "--format", "json")
    rows = json.loads(text)
    assert rows
    for r in rows:
        shown = r["id"] if r["token"] is None else f"{r['id']} {r['token']!r}"
        assert shown in out
    occurrence = filled["occurrence"]
    pos = int(occurrence.rsplit("@", 1)[1])
    code, out = run("drivers", occurrence, "--prompt", p, "--sign", "abs", "--top", "50")
    assert code == 0, out
    assert any(f"@{pos} {tokens[pos]!r}" in line for line in out.splitlines()[2:])
    # JSON keeps ids and tokens apart.
    code, out = run("drivers", occurrence, "--prompt", p, "--sign", "abs", "--format", "json")
    row = json.loads(out)[0]
    assert "'" not in row["name"]
    assert row["token"] == tokens[row["pos"]]


def test_examples_align_the_token(filled, neo4j_env):
    code, out = run("examples", filled["feature"], "--top", "10", "--window", "3")
    assert code == 0, out
    lines = out.splitlines()[2:]
    assert len(lines) > 1
    assert len({screen_width(line[: line.index("[[")]) for line in lines}) == 1, out
