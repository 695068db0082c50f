"""`circuitstore` and `python -m circuitstore`: the root command, behind one more boundary.

The base install (CLI, schema, server, queries, exports) has no torch; `ingest`, `load`,
`attribute`, `demo` and `verify` need the `ingest` extra. When a package of that extra is
missing, the command says so in one line, with the install command and exit status 2, instead
of a traceback.
"""

from __future__ import annotations

import sys

import click

from circuitstore.cli import cli

EXTRA = "ingest"
# The import names of the packages the extra brings (pyproject.toml's `ingest` list, and the
# packages they pull in that our code imports).
EXTRA_MODULES = frozenset(
    {
        "torch",
        "transformer_lens",
        "transformers",
        "jaxtyping",
        "safetensors",
        "tokenizers",
        "huggingface_hub",
        "sqlalchemy",
        "tqdm",
        "tenacity",
        "filelock",
        "pyarrow",
        "duckdb",
    }
)
INSTALL = f"pip install 'circuitstore[{EXTRA}]'"


def missing_extra_message(module: str, command: str | None) -> str:
    what = f"circuitstore {command}" if command else "this command"
    return (
        f"Error: {what} needs the {EXTRA} extra ({module} is not installed); "
        f"install it with: {INSTALL}"
    )


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    try:
        cli.main(args, prog_name="circuitstore")
    except ModuleNotFoundError as exc:
        top = (exc.name or "").partition(".")[0]
        if top not in EXTRA_MODULES:
            raise
        command = next((a for a in args if not a.startswith("-")), None)
        click.echo(missing_extra_message(top, command), err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
