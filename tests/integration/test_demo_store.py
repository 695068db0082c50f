"""The shipped demo model through the whole store: ingest a slice of the demo corpus, then the
query layer finds what was planted.

- A layer-0 feature that responds to names (chosen from the transcoder's activations, not from
  the store) is found by `examples` firing on name tokens.
- For year prompts the strongest stored path into the answer logit starts at the start year.
- For indirect-object prompts the answer's name reaches the last position through the head that
  attends to it in the real model's forward pass.
"""

from __future__ import annotations

import json

import pytest
import torch

from circuitstore.demo import CORPUS, WEIGHTS
from circuitstore.ingest.model import load_model, run_forward, tokenize
from circuitstore.ingest.transcoder import load_transcoders
from circuitstore.query import CircuitStore
from demo.make import corpus as dc

from .helpers import fill_demo

PER_TASK = 10
NAME_TOKENS = {" " + name for name in dc.NAMES}


@pytest.fixture(scope="module")
def demo_slice(tmp_path_factory) -> list[dict]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    return [r for task in dc.TASKS for r in [x for x in rows if x["task"] == task][:PER_TASK]]


@pytest.fixture(scope="module")
def demo_store(demo_slice, driver, neo4j_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("demo")
    assert fill_demo(driver, neo4j_settings.database, demo_slice, folder) == len(demo_slice)
    return CircuitStore(driver, neo4j_settings.database)


def _name_feature(demo_slice: list[dict]) -> int:
    """The layer-0 feature whose mean activation on name tokens most exceeds its mean elsewhere,
    from the model and transcoder alone."""
    model = load_model(WEIGHTS / "model")
    tc = load_transcoders(WEIGHTS / "transcoders")[0]
    on, off = [], []
    for row in demo_slice:
        cache = run_forward(model, tokenize(model, row["text"]))
        acts = tc.encode(cache.ln2_normalized[0])
        is_name = torch.tensor([t in NAME_TOKENS for t in cache.str_tokens])
        on.append(acts[is_name])
        off.append(acts[~is_name])
    score = torch.cat(on).mean(0) - torch.cat(off).mean(0)
    return int(score.argmax())


def test_examples_of_a_name_feature_fire_on_names(demo_store, demo_slice):
    index = _name_feature(demo_slice)
    examples = demo_store.examples(f"mlp0tc[{index}]", top=10)
    assert len(examples) >= 5
    on_names = [e.token in NAME_TOKENS for e in examples]
    assert sum(on_names) >= 0.8 * len(examples), [e.context for e in examples]


def test_the_answer_name_moves_through_the_head_that_attends_to_it(demo_store, demo_slice):
    """Indirect-object prompts, by head: the strongest stored edge from the answer name's
    embedding into the last position runs mostly through one layer-0 head, and that head is
    the one that, in the real model's forward pass, attends most from the last position to the
    name (the demo model's name movers)."""
    model = load_model(WEIGHTS / "model")
    agree = 0
    ioi = [r for r in demo_slice if r["task"] == "ioi"]
    for row in ioi:
        found = demo_store.cypher(
            "MATCH (p:Prompt {key: $key}) "
            "MATCH (e:Embedding {prompt: p.id})-[a:ATTR]->(n:GraphNode {prompt: p.id}) "
            "WHERE e.token = p.answer AND n.pos = p.nTokens - 1 AND a.heads IS NOT NULL "
            "RETURN e.pos AS pos, a.weight AS w, a.heads AS heads, a.headWeights AS hw "
            "ORDER BY abs(a.weight) DESC LIMIT 1",
            {"key": row["id"]},
        )
        assert found, row["id"]
        top = found[0]
        layer, head = divmod(top["heads"][0], model.n_heads)
        assert layer == 0
        assert top["hw"][0] / top["w"] > 0.5
        cache = run_forward(model, tokenize(model, row["text"]))
        attention = cache.pattern[0][:, -1, top["pos"]]  # each head, last position -> the name
        agree += int(attention.argmax()) == head
    assert agree >= 0.8 * len(ioi)


def test_year_answers_are_reached_from_the_start_year(demo_store, demo_slice):
    hits, tried = 0, 0
    for row in (r for r in demo_slice if r["task"] == "years"):
        result = demo_store.paths(row["id"], to="logit", top=1)
        if not result.paths:
            continue
        tried += 1
        source = result.paths[0].nodes[0]
        pos = int(source.rsplit("@", 1)[1])
        tokens = demo_store.cypher(
            "MATCH (p:Prompt {key: $k}) RETURN p.tokens AS t", {"k": row["id"]}
        )[0]["t"]
        # The start year is written as a century token then a two-digit half (" 17", "32").
        start_half = row["source"].strip() if row.get("source") else None
        hits += tokens[pos].strip() == start_half
    assert tried == PER_TASK
    assert hits >= 0.7 * tried


# -- circuitstore verify: interventions on the demo model ---------------------------------------


def _ioi_answered(demo_store, demo_slice) -> list[str]:  # type: ignore[no-untyped-def]
    """The indirect-object prompts whose stored top logit is the corpus's answer."""
    keys = []
    for row in (r for r in demo_slice if r["task"] == "ioi"):
        _, graph = demo_store.prompt_graph(row["id"])
        logits = [n for n in graph.nodes if n.kind == "logit"]
        top = max(logits, key=lambda n: n.value)
        if top.token == row["answer"]:
            keys.append(row["id"])
    return keys


@pytest.fixture(scope="module")
def verified(demo_store, demo_slice):  # type: ignore[no-untyped-def]
    from circuitstore.commands.verify import check_prompt
    from circuitstore.ingest.intervene.verify import VerifyConfig
    from circuitstore.ingest.intervene.write import write_report

    reports = {}
    for key in _ioi_answered(demo_store, demo_slice):
        report = check_prompt(VerifyConfig(key, top=10, device="cpu"), demo_store)
        write_report(demo_store.driver, demo_store.database, report)
        reports[key] = report
    assert len(reports) >= 0.8 * PER_TASK
    return reports


def test_frozen_model_agrees_with_every_stored_edge(verified):
    """Removing a stored feature in the frozen replacement model (lumped mode: attention reads
    only the direct change) moves every target of its stored edges by minus the edge, to
    float32 tolerance, for single features and for all of them at once."""
    checks = [c for r in verified.values() for c in (*r.checks, r.circuit)]
    assert sum(c.targets for c in checks) > 500
    worst = max(checks, key=lambda c: c.frozen_error)
    assert worst.frozen_error < 1e-4, worst
    assert all(r.mode == "lumped" for r in verified.values())


def test_removing_the_ioi_circuit_lowers_the_answers_logit_difference(verified, demo_slice):
    """The planted circuit shows in the real model: removing the 10 most influential stored
    features of an indirect-object prompt lowers the correct name's logit difference to the
    runner-up in at least 80% of those prompts, and the graph predicts a drop there too."""
    answers = {r["id"]: r.get("answer") for r in demo_slice}
    assert all(r.answer[1] == answers[k] for k, r in verified.items())
    lowered = [r.circuit.observed_diff < 0 for r in verified.values()]
    assert sum(lowered) >= 0.8 * len(lowered), [r.circuit for r in verified.values()]
    predicted = [r.circuit.predicted_diff < 0 for r in verified.values()]
    assert sum(predicted) >= 0.8 * len(predicted)


def test_interventions_are_stored_for_corpus_questions(demo_store, verified):
    """One (:Intervention) per check, linked to its prompt and features: "which features, when
    removed, flip the answer most often?" is one Cypher query."""
    expected = sum(len(r.checks) + 1 for r in verified.values())
    stored = demo_store.cypher(
        "MATCH (i:Intervention)-[:OF_PROMPT]->(p:Prompt) "
        "RETURN count(i) AS n, count(DISTINCT p) AS prompts"
    )[0]
    assert stored == {"n": expected, "prompts": len(verified)}
    flips = demo_store.cypher(
        "MATCH (i:Intervention {kind: 'single', scale: 0.0})-[:ON_FEATURE]->(f:Feature) "
        "RETURN f.name AS feature, count(*) AS checked, "
        "sum(CASE WHEN i.flips THEN 1 ELSE 0 END) AS flips ORDER BY flips DESC, feature"
    )
    assert sum(r["checked"] for r in flips) == expected - len(verified)
    want = sum(c.flips for r in verified.values() for c in r.checks)
    assert sum(r["flips"] for r in flips) == want
    # A rerun of the same interventions replaces them rather than adding more.
    from circuitstore.ingest.intervene.write import write_report

    for report in verified.values():
        write_report(demo_store.driver, demo_store.database, report)
    again = demo_store.cypher("MATCH (i:Intervention) RETURN count(i) AS n")[0]["n"]
    assert again == expected


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--prompt", "no-such-prompt"], "unknown prompt 'no-such-prompt'"),
        (["--feature", "mlp0tc[383]@1"], "mlp0tc[383]@1 is not in the stored graph of prompt"),
        (["--feature", "embed0@1"], "verify intervenes on features"),
        (["--top", "0"], "Invalid value for '--top'"),
        (["--scale", "1"], "scale 1.0: expected a finite number other than 1"),
        (["--scale", "nan"], "scale nan: expected a finite number other than 1"),
        (["--device", "tpu"], "Invalid value for '--device'"),
    ],
)
def test_verify_refuses_bad_input_in_one_line(demo_store, demo_slice, neo4j_env, args, message):
    from click.testing import CliRunner

    from circuitstore.cli import cli

    key = next(r["id"] for r in demo_slice if r["task"] == "ioi")
    before = demo_store.cypher("MATCH (i:Intervention) RETURN count(i) AS n")[0]["n"]
    argv = ["verify", *(args if args[0] == "--prompt" else ["--prompt", key, *args])]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code != 0
    assert message in result.output, result.output
    assert "Traceback" not in result.output
    assert demo_store.cypher("MATCH (i:Intervention) RETURN count(i) AS n")[0]["n"] == before


def test_verify_refuses_other_weights(demo_store, demo_slice, neo4j_env, tiny_weights):
    """A model or transcoders other than those the prompt was ingested with: one line naming
    them and both hashes, nothing written."""
    from click.testing import CliRunner

    from circuitstore.cli import cli

    key = next(r["id"] for r in demo_slice if r["task"] == "ioi")
    before = demo_store.cypher("MATCH (i:Intervention) RETURN count(i) AS n")[0]["n"]
    model, transcoders = tiny_weights
    for option, path, what in (
        ("--model", model, "model"),
        ("--transcoders", transcoders, "transcoders"),
    ):
        result = CliRunner().invoke(cli, ["verify", "--prompt", key, option, str(path)])
        assert result.exit_code != 0
        line = result.output.strip()
        assert line.count("\n") == 0, line
        assert f"{what} {path}: its weights (hash" in line, line
        assert f"are not those prompt {key} was ingested with" in line
    assert demo_store.cypher("MATCH (i:Intervention) RETURN count(i) AS n")[0]["n"] == before


def test_verify_command_prints_and_stores(demo_store, demo_slice, neo4j_env):
    from click.testing import CliRunner

    from circuitstore.cli import cli

    key = next(r["id"] for r in demo_slice if r["task"] == "years")
    result = CliRunner().invoke(cli, ["verify", "--prompt", key, "--top", "3", "--scale", "0.5"])
    assert result.exit_code == 0, result.output
    assert "frozen replacement model: largest deviation from a stored edge" in result.output
    assert "stored 4 (:Intervention) nodes" in result.output
    rows = demo_store.cypher(
        "MATCH (i:Intervention {promptKey: $k, scale: 0.5}) RETURN i.kind AS kind", {"k": key}
    )
    assert sorted(r["kind"] for r in rows) == ["single"] * 3 + ["together"]
