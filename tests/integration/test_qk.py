"""`circuitstore qk` on a store of the shipped demo model: traces of stored prompts (by head
and positions, or by a stored edge), equal to the model's score, and bad input refused in one
line with nothing written."""

from __future__ import annotations

import json

import pytest

from circuitstore.demo import CORPUS
from circuitstore.query import CircuitStore

from .helpers import fill_demo

PER_TASK = 2


@pytest.fixture(scope="module")
def qk_store(driver, neo4j_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    picked = [
        r
        for task in ("ioi", "induction")
        for r in [x for x in rows if x["task"] == task][:PER_TASK]
    ]
    folder = tmp_path_factory.mktemp("qk")
    assert fill_demo(driver, neo4j_settings.database, picked, folder) == len(picked)
    return CircuitStore(driver, neo4j_settings.database), picked


def _count(store: CircuitStore) -> tuple[int, int]:
    row = store.cypher(
        "MATCH (n) OPTIONAL MATCH (n)-[r]->() RETURN count(DISTINCT n) AS n, count(r) AS r"
    )[0]
    return row["n"], row["r"]


def test_the_python_api_returns_a_trace_equal_to_the_models_score(qk_store):
    from circuitstore.commands.qk import QKConfig, trace_prompt

    store, picked = qk_store
    key = picked[0]["id"]
    n = len(store.prompt(key).tokens)
    trace = trace_prompt(
        QKConfig(key, head="attn1[0]", query=n - 1, key=2, top=5, check=3, device="cpu"), store
    )
    assert (trace.layer, trace.head, trace.query_pos, trace.key_pos) == (1, 0, n - 1, 2)
    assert trace.mode in ("exact", "lumped")
    size = max(abs(t.value) for t in trace.pairs)
    assert abs(trace.total - trace.score) <= 1e-5 * max(size, abs(trace.score))
    assert 0.0 < trace.probability < 1.0
    assert len(trace.pairs) == 5
    assert len(trace.checks) == 3
    for c in trace.checks:
        assert abs(c.frozen - c.predicted) <= 1e-4 * max(1.0, abs(c.predicted)), c
    frame = trace.to_pandas()
    assert list(frame["part"].unique()) == ["pair", "query", "key"]
    assert len(frame) == 15


def test_the_command_prints_tokens_scores_and_json(qk_store, neo4j_env):
    from click.testing import CliRunner

    from circuitstore.cli import cli

    store, picked = qk_store
    key = picked[-1]["id"]  # an induction prompt
    n = len(store.prompt(key).tokens)
    before = _count(store)
    args = [
        "qk",
        "--prompt",
        key,
        "--head",
        "attn1[1]",
        "--query",
        str(n - 1),
        "--key",
        "3",
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "attn1[1] in prompt" in out
    assert "(hook_attn_scores), sum of all" in out
    assert "attention probability" in out
    assert "embed0@" in out or "mlp0" in out
    assert "removal checks" in out
    assert "'" in out  # tokens beside contributors
    result = CliRunner().invoke(cli, [*args, "--format", "json", "--top", "3", "--check", "0"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["head"] == "attn1[1]"
    assert len(data["pairs"]) == 3
    assert data["checks"] == []
    assert abs(data["score"] - data["total"]) < 1e-4
    assert _count(store) == before


def test_edge_traces_its_strongest_head_at_its_positions(qk_store):
    from circuitstore.commands.qk import QKConfig, trace_prompt

    store, picked = qk_store
    key = picked[0]["id"]
    info = store.prompt(key)
    rows = store.cypher(
        "MATCH (s:GraphNode {prompt: $p})-[a:ATTR]->(t:GraphNode) WHERE size(coalesce(a.heads, [])) > 0 "
        "AND s.pos < t.pos RETURN s.localId AS s, t.localId AS t, s.pos AS sp, t.pos AS tp, "
        "a.heads AS heads, a.headWeights AS w ORDER BY abs(a.weight) DESC LIMIT 1",
        {"p": info.id},
    )
    assert rows
    edge = rows[0]
    best = max(zip(edge["heads"], edge["w"], strict=True), key=lambda hw: abs(hw[1]))[0]
    layer, head = store.tset(info.transcoder_set).head(best)
    trace = trace_prompt(QKConfig(key, edge=(edge["s"], edge["t"]), check=0, device="cpu"), store)
    assert (trace.layer, trace.head) == (layer, head)
    assert (trace.query_pos, trace.key_pos) == (edge["tp"], edge["sp"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--head", "attn7[0]", "--query", "5", "--key", "2"],
            "head attn7[0]: the model has layers 0..2 and heads 0..3 per layer",
        ),
        (
            ["--head", "attn0[99]", "--query", "5", "--key", "2"],
            "head attn0[99]: the model has layers",
        ),
        (
            ["--head", "attn0", "--query", "5", "--key", "2"],
            "head 'attn0': expected attn<layer>[<head>]",
        ),
        (
            ["--head", "attn0[0]", "--query", "2", "--key", "5"],
            "positions query 2, key 5: expected 0 <= key <= query",
        ),
        (["--head", "attn0[0]", "--query", "999", "--key", "5"], "positions query 999, key 5"),
        (["--head", "attn0[0]", "--query", "5", "--key", "-1"], "positions query 5, key -1"),
        (
            ["--head", "attn0[0]", "--query", "5", "--key", "2", "--top", "0"],
            "Invalid value for '--top'",
        ),
        (["--head", "attn0[0]", "--query", "5"], "--head needs --query and --key"),
        (
            ["--query", "5", "--key", "2"],
            "name a head (--head with --query and --key) or an --edge",
        ),
        (["--edge", "embed0@1", "mlp9tc[1]@3"], "has no stored edge embed0@1 -> mlp9tc[1]@3"),
        (
            ["--prompt", "no-such-prompt", "--head", "attn0[0]", "--query", "5", "--key", "2"],
            "unknown prompt 'no-such-prompt'",
        ),
    ],
)
def test_qk_refuses_bad_input_in_one_line(qk_store, neo4j_env, args, message):
    from click.testing import CliRunner

    from circuitstore.cli import cli

    store, picked = qk_store
    before = _count(store)
    argv = [
        "qk",
        *(args if args[0] == "--prompt" else ["--prompt", picked[0]["id"], *args]),
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert result.output.strip().count("\n") == 0 or "Usage:" in result.output, result.output
    assert _count(store) == before


def test_qk_refuses_other_weights(qk_store, neo4j_env, tiny_weights):
    from click.testing import CliRunner

    from circuitstore.cli import cli

    store, picked = qk_store
    key = picked[0]["id"]
    before = _count(store)
    model, _ = tiny_weights
    argv = [
        "qk",
        "--prompt",
        key,
        "--head",
        "attn0[0]",
        "--query",
        "5",
        "--key",
        "2",
        "--model",
        str(model),
        "--device",
        "cpu",
    ]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    line = result.output.strip()
    assert line.count("\n") == 0, line
    assert f"model {model}: its weights (hash" in line
    assert f"are not those prompt {key} was ingested with" in line
    assert _count(store) == before
