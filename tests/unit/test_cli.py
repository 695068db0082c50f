"""The root command: help, version, lazy loading, and one-line errors."""

from __future__ import annotations

import subprocess
import sys

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
    args = ["--model", "m", "--transcoders", "t", "--prompts", "p"]
    parsed = ingest.make_context("ingest", args).params
    defaults = {k: v for k, v in parsed.items() if k not in cli_only}
    assert IngestConfig.from_flat(**defaults) == IngestConfig(
        model="m", transcoders="t", prompts="p"
    )
