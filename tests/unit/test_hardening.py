"""Hardening pieces that need no database: the Java argument file that carries the initial
password, owner-only modes, terminal-safe text, the read-only statement filter, settings
checks, and model identity."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from circuitstore.clitools import printable, render_rows
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.model import load_model
from circuitstore.query.readonly import check_read_only
from circuitstore.schema.connection import Neo4jSettings, check_uri
from circuitstore.schema.errors import ConfigError, QueryError
from circuitstore.schema.home import data_home
from circuitstore.server import assemble, process

TRICKY = 'pw with "quotes", a \\ backslash\tand\na newline #$'


def test_the_password_argument_file_round_trips_through_java(tmp_path: Path) -> None:
    """Java's own launcher reads the file back: the last argument is the password, exactly."""
    java = shutil.which("java")
    if java is None:
        if os.environ.get("CI"):  # CI installs Java 17 (scripts/bootstrap.sh): it must run there
            pytest.fail("the argument-file test needs Java", pytrace=False)
        pytest.skip("needs Java")
    probe = tmp_path / "Probe.java"
    probe.write_text(
        "public class Probe { public static void main(String[] a) {"
        " System.out.print(a[a.length - 1]); } }"
    )
    text = assemble.admin_argfile(tmp_path, TRICKY)
    assert TRICKY not in text  # escaped, not verbatim
    lines = text.splitlines()
    args = tmp_path / "args"
    # The same file, with the admin tool's class swapped for the probe (single-file source
    # launch: java Probe.java ARGS...).
    args.write_text("\n".join([str(probe), *lines[4:]]) + "\n")
    out = subprocess.run([java, f"@{args}"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout == TRICKY


def test_make_private_strips_group_and_other_bits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / "data" / "dbms").mkdir(parents=True)
    secret = home / "data" / "dbms" / "auth.ini"
    secret.write_text("hash")
    os.chmod(secret, 0o644)
    os.chmod(home / "data", 0o755)
    process.make_private(home)
    for path in [home, *home.rglob("*")]:
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_the_server_environment_lacks_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEO4J_PASSWORD", "secret-password")
    assert "NEO4J_PASSWORD" not in process.server_environment()


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain ü 字", "plain ü 字"),
        ("\x1b[31mred\x1b[0m", "\\x1b[31mred\\x1b[0m"),
        ("tab\tnew\nline\r", "tab\\tnew\\nline\\r"),
        ("bell\x07 del\x7f c1\x9b", "bell\\x07 del\\x7f c1\\x9b"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
    ],
)
def test_printable_escapes_controls(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_tables_and_csv_never_carry_raw_controls() -> None:
    rows = [{"prompt": "k", "context": "a\x1b]0;title\x07b"}]
    for fmt in ("table", "csv"):
        assert "\x1b" not in render_rows(rows, fmt)


@pytest.mark.parametrize(
    "statement",
    [
        "LOAD CSV FROM 'http://127.0.0.1/x' AS r RETURN r",
        "match (n) with n load  csv from 'file:///x' as r return r",
        "TERMINATE TRANSACTIONS 'neo4j-transaction-3'",
        "/* read */ terminate transactions 'x'",
    ],
)
def test_read_only_filter_refuses(statement: str) -> None:
    with pytest.raises(QueryError, match="refused"):
        check_read_only(statement)


@pytest.mark.parametrize(
    "statement",
    [
        "RETURN 'LOAD CSV' AS s",
        'MATCH (n {name: "terminate"}) RETURN n // LOAD CSV in a comment',
        "MATCH (`LOAD CSV`) RETURN 1",
    ],
)
def test_read_only_filter_ignores_strings_and_comments(statement: str) -> None:
    check_read_only(statement)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("http://127.0.0.1:7474", "scheme http://"),
        ("localhost:7687", "no scheme"),
        ("bolt://", "no host"),
        ("bolt://user:pw-secret@127.0.0.1:7687", "holds a user name or password"),
    ],
)
def test_uri_checks(uri: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        check_uri(uri)
    assert "pw-secret" not in str(info.value)


@pytest.mark.parametrize("uri", ["bolt://127.0.0.1:7687", "neo4j+s://db.example:7687"])
def test_good_uris(uri: str) -> None:
    assert Neo4jSettings.load(uri=uri).uri == uri


def test_data_home_below_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv("CIRCUITSTORE_HOME", str(tmp_path / "file" / "home"))
    with pytest.raises(
        ConfigError, match=r"lies below .*file, which is a file; point CIRCUITSTORE_HOME"
    ):
        data_home()


def test_default_run_names_differ_for_corpora_that_share_a_stem() -> None:
    cfg = IngestConfig.from_flat(model="m", transcoders="t", prompts="a/corpus.txt")
    assert cfg.run_name("g" * 16, "one").startswith("corpus-")
    assert cfg.run_name("g" * 16, "one") != cfg.run_name("g" * 16, "two")
    assert cfg.run_name("g" * 16, "one") == cfg.run_name("g" * 16, "one")


def test_model_identity_covers_every_weight(tmp_path: Path, tiny_dirs: tuple[Path, Path]) -> None:
    """A copy whose MLP weights are scaled (the sampled hash of old missed these) is another
    model; a float64 load of the same weights is the same one."""
    original = load_model(tiny_dirs[0])
    copy = tmp_path / tiny_dirs[0].name
    shutil.copytree(tiny_dirs[0], copy)
    weights = load_file(copy / "model.safetensors")
    key = next(k for k in weights if "mlp.c_proj.weight" in k)
    weights[key] = weights[key] * 1.7
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    assert load_model(copy).weights_hash != original.weights_hash
    assert load_model(tiny_dirs[0], dtype=torch.float64).weights_hash == original.weights_hash


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("heads_per_edge", -1, "heads_per_edge = -1: allowed an integer >= 0"),
        ("heads_per_edge", 1.5, "heads_per_edge = 1.5: allowed an integer >= 0"),
        ("heads_per_edge", True, "heads_per_edge = True: allowed an integer >= 0"),
        ("qk_top", -1, "qk_top = -1: allowed an integer >= 0"),
        ("qk_top", 2.0, "qk_top = 2.0: allowed an integer >= 0"),
        ("top_examples", 0, "top_examples = 0: allowed an integer >= 1"),
        ("views_top_k", 0, "views_top_k = 0: allowed an integer >= 1"),
        ("batch_size", 0, "batch_size = 0: allowed an integer >= 1"),
        ("aggregate_min_fraction", 1.0, "aggregate_min_fraction = 1.0: allowed 0 <= x < 1"),
    ],
)
def test_ingest_config_refuses_bad_values(field: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        IngestConfig.from_flat(model="m", transcoders="t", prompts="p.txt", **{field: value})
    assert str(info.value) == message


def test_qk_traces_are_refused_with_parts() -> None:
    """The bulk path writes no QK traces (yet): asking for both is one line, before any work."""
    with pytest.raises(ConfigError) as info:
        IngestConfig.from_flat(model="m", transcoders="t", prompts="p.txt", qk_top=2, parts="d")
    assert str(info.value) == "qk_top = 2: allowed 0 with parts"
    assert IngestConfig.from_flat(model="m", transcoders="t", prompts="p.txt", parts="d")
