"""A Llama model in the store: ingested as GPT-2 is, and QK tracing refused in one line, nothing
written, both where ingest would trace (`ingest --qk-top`) and by `circuitstore qk` (rotary
positions make a score no sum of bilinear terms of the graph's nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from circuitstore.cli import cli
from circuitstore.schema.apply import apply_schema

from .helpers import make_corpus, wipe_data

pytestmark = pytest.mark.slow

REFUSAL = "QK tracing is not available for Llama"


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    from circuitstore.ingest.synthetic import (
        ModelSpec,
        random_transcoders,
        save_model,
        save_transcoders,
    )

    root = tmp_path_factory.mktemp("llama")
    spec = ModelSpec(family="llama", seed=3)
    save_model(root / "model", spec)
    tcs = random_transcoders(spec.n_layers, spec.d_model, 64, active_fraction=0.3, seed=4)
    save_transcoders(tcs, root / "transcoders")
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(2, seed=5)) + "\n")
    return {"model": str(root / "model"), "tcs": str(root / "transcoders"), "corpus": str(corpus)}


def _counts(driver) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    with driver.session() as s:
        nodes = s.run("MATCH (n) RETURN count(n) AS c").single()["c"]
        rels = s.run("MATCH ()-[r]->() RETURN count(r) AS c").single()["c"]
    return nodes, rels


def _invoke(args: list[str], home: Path) -> Result:
    return CliRunner(env={"CIRCUITSTORE_HOME": str(home)}).invoke(cli, args)


def _refused(result: Result) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, result.stderr
    assert REFUSAL in errors[0]
    assert "rotary position embeddings make the score depend on the relative position" in errors[0]


def test_qk_tracing_is_refused_for_a_llama_store(  # type: ignore[no-untyped-def]
    driver, neo4j_settings, neo4j_env, llama, tmp_path
) -> None:
    wipe_data(driver)
    apply_schema(driver, neo4j_settings.database)
    ingest = [
        "ingest",
        "--model",
        llama["model"],
        "--transcoders",
        llama["tcs"],
        "--prompts",
        llama["corpus"],
        "--no-progress",
        "--device",
        "cpu",
    ]
    before = _counts(driver)
    _refused(_invoke([*ingest, "--qk-top", "2"], tmp_path / "home"))
    assert _counts(driver) == before

    result = _invoke(ingest, tmp_path / "home")
    assert result.exit_code == 0, result.output
    with driver.session() as s:
        key = s.run("MATCH (p:Prompt) RETURN p.key AS k ORDER BY k LIMIT 1").single()["k"]
    before = _counts(driver)
    args = ["qk", "--prompt", key, "--head", "attn1[0]", "--query", "3", "--key", "1"]
    _refused(_invoke([*args, "--device", "cpu"], tmp_path / "home"))
    assert _counts(driver) == before
