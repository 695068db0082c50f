"""The CLI reference page (docs/cli-reference.md) is the click help as the commands print it now:
regenerate it with `python scripts/gen_cli_docs.py` after changing a command."""

from __future__ import annotations

import difflib

from scripts.gen_cli_docs import PAGE, render


def test_the_cli_reference_page_is_current() -> None:
    committed = PAGE.read_text(encoding="utf-8")
    fresh = render()
    diff = "".join(
        difflib.unified_diff(
            committed.splitlines(keepends=True),
            fresh.splitlines(keepends=True),
            "docs/cli-reference.md (committed)",
            "the commands' help now",
            n=1,
        )
    )
    assert not diff, f"run python scripts/gen_cli_docs.py; the page differs:\n{diff[:4000]}"


def test_the_reference_has_a_section_for_every_command() -> None:
    text = render()
    for path in ("circuitstore", "circuitstore query drivers", "circuitstore server start"):
        assert f" {path}\n\n```text\nUsage: {path} " in text
