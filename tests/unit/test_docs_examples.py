"""The docs' examples as tests/docs_examples.py reads them, and its comparison of shown output
with real output. tests/integration/test_docs_examples.py runs the examples on the demo store."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.docs_examples import (
    ROOT,
    Block,
    Example,
    all_examples,
    blocks,
    console,
    demo_commands,
    mismatch,
    rounds_to,
)

REAL = [
    "rank  product  path",
    "----  -------  ----------------------------",
    "1     20.42    embed0@4 ' Kate' -> logit[458]@14",
    "2     -6.557e-07  embed0@14 ' to' -> logit[458]@14",
    "3     3        bias[enc0]@14 -> logit[458]@14",
]


def test_the_real_output_matches_itself_whatever_the_column_widths() -> None:
    assert mismatch(REAL, REAL) is None
    squeezed = [" ".join(line.split()) for line in REAL]
    assert mismatch(squeezed, REAL) is None


def test_a_number_matches_when_the_real_one_rounds_to_it() -> None:
    shown = [*REAL[:2], REAL[2].replace("20.42", "20.4"), REAL[3].replace("-6.557e-07", "0.0000")]
    assert mismatch([*shown, REAL[4]], REAL) is None
    assert rounds_to("20.46", "20.5")
    assert not rounds_to("20.46", "20.4")
    assert not rounds_to("20.42", "20.43")  # more digits than the real output has, and wrong
    assert not rounds_to("-6.557e-07", "0.000000")


def test_a_wrong_number_word_or_row_is_a_mismatch() -> None:
    for wrong in ("20.52", "21"):
        why = mismatch([*REAL[:2], REAL[2].replace("20.42", wrong), *REAL[3:]], REAL)
        assert why is not None
        assert wrong in why
    assert mismatch([*REAL[:2], REAL[2].replace("Kate", "Mary"), *REAL[3:]], REAL) is not None
    assert mismatch([*REAL[:2], REAL[3], REAL[2], REAL[4]], REAL) is not None  # order counts
    assert mismatch(REAL[:3], REAL) is not None  # rows left out without `...`


def test_an_ellipsis_stands_for_any_number_of_lines() -> None:
    assert mismatch([*REAL[:3], "..."], REAL) is None
    assert mismatch(["...", REAL[4]], REAL) is None
    assert mismatch([REAL[0], "...", REAL[3], "..."], REAL) is None
    assert mismatch([*REAL, "..."], REAL) is None  # none at all
    assert mismatch(["...", REAL[2], "...", REAL[1]], REAL) is not None


def block(language: str, *lines: str) -> Block:
    return Block("page.md", language, tuple(enumerate(lines, 10)))


def test_a_console_block_pairs_each_command_with_its_output() -> None:
    found = list(
        console(
            block(
                "console",
                "$ circuitstore query heads \\",
                "    --prompt p",
                "rank  head",
                "$ circuitstore query prompts",
                "(no rows)",
            )
        )
    )
    assert [(e.line, e.argv, e.shown) for e in found] == [
        (10, ["circuitstore", "query", "heads", "--prompt", "p"], ("rank  head",)),
        (13, ["circuitstore", "query", "prompts"], ("(no rows)",)),
    ]


def test_the_demo_output_runs_to_the_end_of_its_block() -> None:
    lines = ("$ circuitstore demo", "...", "$ circuitstore query paths --prompt p", "rank")
    (demo,) = console(block("console", *lines))
    assert demo.is_demo
    assert demo.shown == lines[1:]
    assert [e.argv[2] for e in demo_commands(demo)] == ["paths"]


def test_output_before_any_command_is_refused() -> None:
    with pytest.raises(ValueError, match=r"page\.md:10"):
        list(console(block("console", "rank  head")))


def test_an_unclosed_block_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("tests.docs_examples.ROOT", tmp_path)
    page = tmp_path / "page.md"
    page.write_text("text\n\n```bash\ncircuitstore query prompts\n")
    with pytest.raises(ValueError, match="never closed"):
        list(blocks(page))


# -- the docs themselves ------------------------------------------------------------------------


def test_the_docs_show_query_commands_on_every_page_that_asks_the_store() -> None:
    found = all_examples()
    queries = [e for e in found if e.is_query]
    assert len(queries) >= 30
    pages = {e.page for e in queries}
    assert {"README.md", "docs/cli.md", "docs/install.md", "docs/verification.md"} <= pages
    assert any(e.shown for e in queries if e.page == "README.md")
    assert [e for e in found if e.is_demo and e.shown]


def test_every_example_parses() -> None:
    for example in all_examples():
        if example.language == "python":
            ast.parse(example.source, example.id)
        elif example.language in ("bash", "console"):
            assert example.argv, example.id


def test_no_command_hides_in_an_indented_code_block() -> None:
    """Indented code blocks are not read by the docs' test: commands go in fenced ones."""
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]:
        fenced = {n for b in blocks(path) for n, _ in b.lines}
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if number not in fenced and line.startswith("    ") and "circuitstore " in line:
                assert not line.strip().startswith(("circuitstore ", "$ ")), f"{path}:{number}"


def test_the_readme_is_a_short_front_door() -> None:
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_an_example_knows_where_it_is_shown() -> None:
    example = Example("docs/cli.md", 7, "bash", "circuitstore query drivers 'mlp0tc[70]' # x")
    assert example.id == "docs/cli.md:7"
    assert example.argv == ["circuitstore", "query", "drivers", "mlp0tc[70]"]
    assert example.is_query
    assert not example.is_demo
