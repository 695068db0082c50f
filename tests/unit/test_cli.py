"""The root command: help, version, lazy loading, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from circuitstore import __version__
from circuitstore.cli import COMMANDS, cli


def test_help_lists_every_group():
    result = CliRunner().invoke(cli, ["-h"])
    assert result.exit_code == 0
    for name in COMMANDS:
        assert name in result.output


def test_version():
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_every_command_has_help_with_an_example():
    runner = CliRunner()
    for name in COMMANDS:
        command = cli.get_command(None, name)  # type: ignore[arg-type]
        listing = runner.invoke(cli, [name, "-h"])
        assert listing.exit_code == 0, listing.output
        subs = getattr(command, "commands", None)
        if subs is None:
            assert "Example:" in listing.output, f"{name} has no example in its help"
            continue
        for sub in subs:
            text = runner.invoke(cli, [name, sub, "-h"]).output
            assert "Example:" in text, f"{name} {sub} has no example in its help"


def test_missing_password_is_one_line(monkeypatch):
    monkeypatch.delenv("NEO4J_PASSWORD", raising=False)
    result = CliRunner().invoke(cli, ["schema", "show"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "Error: NEO4J_PASSWORD is not set: export it or put it in a file named by --env-file"
    )


def test_query_side_never_imports_torch():
    code = (
        "import sys; from circuitstore.cli import cli; "
        "cli.get_command(None, 'query'); import circuitstore.commands.query; "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_ingest_options_map_onto_the_config_fields():
    """Every option of `ingest` is a field of IngestConfig (or of the records it holds), and
    its defaults build the default config: options and configs cannot drift apart."""
    from circuitstore.commands.ingest import ingest
    from circuitstore.ingest.config import IngestConfig

    cli_only = {"shard", "run_name", "uri", "username", "database", "env_file"}
    cli_only |= {"ray_address", "workers", "cpus_per_worker", "gpus_per_worker"}  # the Ray plan
    args = ["--model", "m", "--transcoders", "t", "--prompts", "p"]
    parsed = ingest.make_context("ingest", args).params
    defaults = {k: v for k, v in parsed.items() if k not in cli_only}
    assert IngestConfig.from_flat(**defaults) == IngestConfig(
        model="m", transcoders="t", prompts="p"
    )


# -- the root command as installed: `circuitstore` and `python -m circuitstore` ------------------

# Run in a child whose import system refuses the ingest extra's packages, as a base install
# (no extra) would: `circuitstore.__main__.main` must name the extra in one line, exit 2.
WITHOUT_EXTRA = """
import sys
from importlib.abc import MetaPathFinder

class NoExtra(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {"torch", "transformer_lens", "transformers", "sqlalchemy"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NoExtra())
from circuitstore.__main__ import main
main(sys.argv[1:])
"""


def run_without_extra(*args: str, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")}
    env["NEO4J_PASSWORD"] = "not-used-here"
    return subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("attribute", ["--model", "m", "--transcoders", "t", "--prompt", "x"]),
        ("ingest", ["--model", "m", "--transcoders", "t", "--prompts", "p.txt"]),
        ("demo", ["--home", "unused-home"]),
    ],
)
def test_without_the_ingest_extra_one_line_names_it(command, args, tmp_path):
    done = run_without_extra(command, *args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"Error: circuitstore {command} needs the ingest extra (torch is not installed); "
        "install it with: pip install 'circuitstore[ingest]'"
    )
    assert list(tmp_path.iterdir()) == []  # nothing started, nothing written


def test_without_the_ingest_extra_the_rest_works():
    done = run_without_extra("demo", "-h")
    assert done.returncode == 0, done.stderr
    assert "Example:" in done.stdout
    other = run_without_extra("query", "drivers", "not-a-feature")
    assert other.returncode == 2
    assert "torch" not in other.stderr
    assert len(other.stderr.strip().splitlines()) == 1


def test_other_missing_modules_are_not_blamed_on_the_extra(monkeypatch):
    """A missing module that is not the extra's is a bug: it is raised, not explained away."""
    import circuitstore.__main__ as entry

    def broken(*_args, **_kwargs):
        raise ModuleNotFoundError("No module named 'not_ours'", name="not_ours")

    monkeypatch.setattr(entry.cli, "main", broken)
    with pytest.raises(ModuleNotFoundError):
        entry.main(["query", "cypher", "RETURN 1"])


def test_python_dash_m_circuitstore_is_the_cli():
    done = subprocess.run(
        [sys.executable, "-m", "circuitstore", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"circuitstore, version {__version__}"


def test_demo_is_registered_lazily_without_torch():
    code = (
        "import sys; from circuitstore.cli import cli; cli.get_command(None, 'demo'); "
        "assert 'torch' not in sys.modules, 'torch was imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -- what `circuitstore demo` prints --------------------------------------------------------------


def test_demo_commands_are_quoted_for_the_shell():
    from circuitstore.commands.demo import command

    assert command("query", "drivers", "mlp1tc[31]", "--top", "5") == (
        "$ circuitstore query drivers 'mlp1tc[31]' --top 5"
    )
    assert command("query", "paths", "--prompt", "eval-ioi-000010", "--to", "logit[458]@14") == (
        "$ circuitstore query paths --prompt eval-ioi-000010 --to 'logit[458]@14'"
    )


def test_demo_labels_show_tokens_beside_node_ids():
    from circuitstore.commands.demo_questions import Labels
    from circuitstore.demo import token_texts
    from circuitstore.query.results import Node, PromptInfo
    from circuitstore.schema.names import NodeKind

    kate = next(i for i, t in token_texts().items() if t == " Kate")
    tokens = ("<|endoftext|>", "When", " Peter", " and", " Kate", "\x1b[2J")
    prompt = PromptInfo("p1", "k", "set", "When Peter and Kate", tokens)
    nodes = {
        "embed0@4": Node("embed0@4", NodeKind.EMBEDDING, pos=4, token=" Kate"),
        "mlp0tc[70]@3": Node("mlp0tc[70]@3", NodeKind.FEATURE, layer=0, pos=3, feature=70),
        f"logit[{kate}]@3": Node(f"logit[{kate}]@3", NodeKind.LOGIT, pos=3, token_id=kate),
        "mlp0err@5": Node("mlp0err@5", NodeKind.ERROR, layer=0, pos=5),
        "rem[x]": Node("rem[x]", NodeKind.ERROR),
    }
    labels = Labels(prompt, nodes, token_texts())
    assert labels("embed0@4") == "embed0@4 ' Kate'"
    assert labels("mlp0tc[70]@3") == "mlp0tc[70]@3 ' and'"
    assert labels(f"logit[{kate}]@3") == f"logit[{kate}]@3 ' Kate'"  # the token it predicts
    assert labels("mlp0err@5") == "mlp0err@5 '\\x1b[2J'"  # a control character never raw
    assert labels("rem[x]") == "rem[x]"
    assert labels("not-in-graph") == "not-in-graph"


def test_demo_expected_answers():
    from circuitstore.commands.demo_questions import Expected

    ioi = Expected.of({"task": "ioi", "answer": " Kate", "source": " Kate"})
    assert ioi.describe() == "' Kate'"
    assert ioi.met_by(" Kate")
    assert not ioi.met_by(" Peter")
    assert not ioi.met_by(None)
    years = Expected.of({"task": "years", "answer": "76", "source": "44"})
    assert years.describe() == "a two-digit half above '44' (the corpus gives '76')"
    assert [t for t in ("80", "45", "44", "12", " 80", "8", "99") if years.met_by(t)] == [
        "80",
        "45",
        "99",
    ]


def test_demo_shows_the_first_prompt_of_each_task_in_its_shard():
    from circuitstore.commands.demo import TASKS, shown_prompts
    from circuitstore.ingest.corpus import shard_of

    every = shown_prompts(lambda _: True)
    assert list(every) == list(TASKS)
    assert [r["id"] for r in every.values()] == [
        "eval-ioi-000000",
        "eval-years-000000",
        "eval-induction-000000",
    ]
    quarter = shown_prompts(lambda key: shard_of(key, 4) == 0)
    assert list(quarter) == list(TASKS)
    assert all(shard_of(r["id"], 4) == 0 for r in quarter.values())
    assert quarter["ioi"]["answer"] == quarter["ioi"]["source"]
    assert shown_prompts(lambda _: False) == {}
