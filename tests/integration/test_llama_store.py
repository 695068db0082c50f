"""A Llama model in the store: ingested as GPT-2 is, its stored edges checked by `verify` in the
frozen replacement model, and QK tracing refused in one line, nothing written, both where
ingest would trace (`ingest --qk-top`) and by `circuitstore qk` (rotary positions make a score
no sum of bilinear terms of the graph's nodes)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from circuitstore.cli import cli
from circuitstore.query import CircuitStore
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


@pytest.fixture(scope="module")
def llama_store(driver, neo4j_settings, llama, tmp_path_factory) -> str:  # type: ignore[no-untyped-def]
    """The Llama corpus ingested (no QK traces) into an emptied store: its first prompt's key."""
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.runner import IngestRunner

    wipe_data(driver)
    apply_schema(driver, neo4j_settings.database)
    folder = tmp_path_factory.mktemp("llama-catalog")
    cfg = IngestConfig.from_flat(
        model=llama["model"],
        transcoders=llama["tcs"],
        prompts=llama["corpus"],
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        progress=False,
        device="cpu",
    )
    assert IngestRunner(cfg, driver, neo4j_settings.database).run().written == 2
    with driver.session() as s:
        return str(s.run("MATCH (p:Prompt) RETURN p.key AS k ORDER BY k LIMIT 1").single()["k"])


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
    driver, neo4j_env, llama, llama_store, tmp_path
) -> None:
    before = _counts(driver)
    ingest = ["ingest", "--model", llama["model"], "--transcoders", llama["tcs"]]
    ingest += ["--prompts", llama["corpus"], "--no-progress", "--device", "cpu", "--qk-top", "2"]
    _refused(_invoke(ingest, tmp_path / "home"))
    qk = ["qk", "--prompt", llama_store, "--head", "attn1[0]", "--query", "3", "--key", "1"]
    _refused(_invoke([*qk, "--device", "cpu"], tmp_path / "home"))
    assert _counts(driver) == before


def test_verify_agrees_with_a_llama_stores_edges(  # type: ignore[no-untyped-def]
    driver, neo4j_settings, llama_store
) -> None:
    from circuitstore.commands.verify import check_prompt
    from circuitstore.ingest.intervene.verify import VerifyConfig

    store = CircuitStore(driver, neo4j_settings.database)
    report = check_prompt(VerifyConfig(llama_store, top=4, device="cpu", rank="effect"), store)
    assert report.checks
    assert sum(c.targets for c in report.checks) > 10
    # float32 rounding, relative to each target's stored |input|
    assert max(c.frozen_error for c in report.checks) < 1e-4
