"""Docs that cannot drift: every example of the README and the docs pages, run against the store
that `circuitstore demo` fills (the default quarter of the demo corpus, as a user gets it).

- each `circuitstore query ...` command in a bash or console block (and each one the demo's
  shown output prints) exits 0;
- where a page shows a command's output, the shown lines match the real ones, but for the
  rounding the page uses and `...` for left-out lines (tests/docs_examples.py);
- the shown output of `circuitstore demo` matches what the demo printed while filling the store;
- each python block runs, with NEO4J_* naming the store; each cypher block runs read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from circuitstore.cli import cli
from tests.docs_examples import (
    CookbookBlock,
    Example,
    all_examples,
    cookbook_blocks,
    demo_commands,
    mismatch,
)

EXAMPLES = all_examples()
DEMOS = [e for e in EXAMPLES if e.is_demo and e.shown is not None]
QUERIES = [e for e in EXAMPLES if e.is_query] + [c for d in DEMOS for c in demo_commands(d)]
PROGRAMS = [e for e in EXAMPLES if e.language == "python"]
STATEMENTS = [e for e in EXAMPLES if e.language == "cypher"]


def ids(examples: list[Example]) -> list[str]:
    return [f"{e.id} {e.source.splitlines()[0][:60]}" for e in examples]


@pytest.fixture(scope="module")
def store_env(neo4j_settings, tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """NEO4J_* naming the test server, and a data folder of our own (the run catalog's)."""
    return {
        "NEO4J_URI": neo4j_settings.uri,
        "NEO4J_USERNAME": neo4j_settings.username,
        "NEO4J_PASSWORD": neo4j_settings.password.get_secret_value(),
        "NEO4J_DATABASE": neo4j_settings.database,
        "CIRCUITSTORE_HOME": str(tmp_path_factory.mktemp("docs-home")),
    }


def invoke(argv: list[str], env: Mapping[str, str]) -> Result:
    """`circuitstore ARGS...` in this process, as a user would run it with `env` exported."""
    assert argv[0] == "circuitstore", argv
    return CliRunner(env=dict(env)).invoke(cli, argv[1:], catch_exceptions=False)


@pytest.fixture(scope="module")
def demo_output(driver, store_env) -> str:  # type: ignore[no-untyped-def]
    """An emptied server filled by `circuitstore demo --no-server`; what the demo printed."""
    with driver.session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    done = invoke(["circuitstore", "demo", "--no-server", "--no-progress"], store_env)
    assert done.exit_code == 0, done.output
    return done.output


def test_the_docs_show_the_demo_and_many_queries() -> None:
    assert DEMOS, "a page should show what `circuitstore demo` prints"
    assert len(QUERIES) >= 30


@pytest.mark.parametrize("example", DEMOS, ids=ids(DEMOS))
def test_the_demo_prints_what_the_docs_show(example: Example, demo_output: str) -> None:
    why = mismatch(example.shown or (), demo_output.splitlines())
    assert why is None, f"{example.id}: {why}\nthe demo printed:\n{demo_output}"


@pytest.mark.parametrize("example", QUERIES, ids=ids(QUERIES))
def test_each_query_the_docs_show_runs_and_answers_as_shown(
    example: Example, demo_output: str, store_env: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # where `--export ... FILE` and `--out FILE` write
    done = invoke(example.argv, store_env)
    assert done.exit_code == 0, f"{example.id}: exit {done.exit_code}\n{done.output}"
    if example.shown is not None:
        why = mismatch(example.shown, done.output.splitlines())
        assert why is None, f"{example.id}: {why}\nthe real output:\n{done.output}"


@pytest.mark.parametrize("example", PROGRAMS, ids=ids(PROGRAMS))
def test_each_python_snippet_runs(
    example: Example, demo_output: str, store_env: dict[str, str], tmp_path: Path, monkeypatch
) -> None:
    for name, value in store_env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir(tmp_path)
    exec(compile(example.source, example.id, "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize("example", STATEMENTS, ids=ids(STATEMENTS))
def test_each_cypher_statement_runs_read_only(
    example: Example, demo_output: str, store_env: dict[str, str]
) -> None:
    done = invoke(["circuitstore", "query", "cypher", example.source], store_env)
    assert done.exit_code == 0, f"{example.id}: exit {done.exit_code}\n{done.output}"


BLOCKS = cookbook_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[f"cookbook {b.number}" for b in BLOCKS])
def test_each_cookbook_block_as_pasted_answers_on_the_demo_store(
    block: CookbookBlock, demo_output: str, store_env: dict[str, str], driver
) -> None:
    """Pasted as written after `circuitstore demo`, a block returns rows, or its comment names
    the command that fills what it reads (and then it returns rows once that has run)."""
    with driver.session() as s:
        params = {k: s.run(f"RETURN {v} AS v").single()["v"] for k, v in block.params.items()}
        rows = s.execute_read(lambda tx: tx.run(block.statement, params).data())
    if block.needs is not None and not rows:
        done = invoke(block.needs.split(), store_env)
        assert done.exit_code == 0, f"`{block.needs}`: exit {done.exit_code}\n{done.output}"
        with driver.session() as s:
            rows = s.execute_read(lambda tx: tx.run(block.statement, params).data())
    assert rows, f"cookbook block {block.number} returns no rows with its defaults {params}"
