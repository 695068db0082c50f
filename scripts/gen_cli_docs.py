"""Writes docs/cli-reference.md: every command's --help, walked from the root `circuitstore` group.

    python scripts/gen_cli_docs.py           # rewrite the page
    python scripts/gen_cli_docs.py --check   # exit 1 if the committed page is not current

The help is rendered at a fixed width (80 columns), so the page does not depend on the terminal
it was made in. tests/unit/test_cli_docs.py fails when the committed page is stale.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from pathlib import Path

import click

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cli-reference.md"
WIDTH = 80
HEADER = """\
# CLI reference

Every command's `--help`, as `circuitstore` prints it. This page is generated from the click
help by `python scripts/gen_cli_docs.py`; a unit test (`tests/unit/test_cli_docs.py`) fails when
it is not current, so edit the commands' docstrings and options, then regenerate it.

The guide to the commands, with examples, is [The command line](cli.md).
"""


def contexts(
    command: click.Command, name: str, parent: click.Context | None = None
) -> Iterator[click.Context]:
    """A context for `command` and, depth first in listed order, for each of its subcommands."""
    # make_context applies the command's own context settings (-h as well as --help).
    ctx = command.make_context(
        name, [], parent, resilient_parsing=True, terminal_width=WIDTH, max_content_width=WIDTH
    )
    yield ctx
    if isinstance(command, click.Group):
        for sub in command.list_commands(ctx):
            child = command.get_command(ctx, sub)
            if child is not None and not child.hidden:
                yield from contexts(child, sub, ctx)


def section(ctx: click.Context) -> str:
    depth = len(ctx.command_path.split())
    heading = "#" * min(depth + 1, 4)
    return f"{heading} {ctx.command_path}\n\n```text\n{ctx.command.get_help(ctx)}\n```\n"


def render() -> str:
    from circuitstore.cli import cli

    return "\n".join([HEADER, *(section(ctx) for ctx in contexts(cli, "circuitstore"))])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the page is not current")
    args = parser.parse_args()
    text = render()
    if args.check:
        if PAGE.read_text(encoding="utf-8") != text:
            sys.exit(f"{PAGE.name} is not current: run python scripts/gen_cli_docs.py")
        return
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")


if __name__ == "__main__":
    main()
