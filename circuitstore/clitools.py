"""Pieces every command shares: the error boundary, option bundles, and output formatting.

Commands stay thin: build settings or a config from their options, call the library, print.
Only here do domain errors become one-line messages and exit statuses.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from circuitstore.ingest.config import (
    DEVICE_FORMS,
    DTYPES,
    MODES,
    WEIGHTS_DTYPES,
    AttributionConfig,
    IngestConfig,
    PruneConfig,
    check_device,
)
from circuitstore.schema.errors import CircuitStoreError

F = TypeVar("F", bound=Callable[..., Any])

# Every command takes -h as well as --help. Set on each command, not only the root, because
# click caches a command's help option from the first context it sees.
HELP: dict[str, Any] = {"help_option_names": ["-h", "--help"]}


class CircuitStoreCommand(click.Command):
    """A command that turns our errors into one line and an exit status even when it is invoked
    on its own (tests, embedding), not only under the root group."""

    def invoke(self, ctx: click.Context) -> Any:
        with error_boundary():
            return super().invoke(ctx)


class CircuitStoreGroup(click.Group):
    """A click group whose subcommands are imported only when used, and that turns our errors
    into one line on stderr with the error's exit status (no traceback).

    Lazy loading keeps `circuitstore query ...` from importing torch.
    """

    def __init__(
        self, *args: Any, lazy: dict[str, tuple[str, str]] | None = None, **kwargs: Any
    ) -> None:
        """`lazy` maps a command name to ("module:attribute", one-line help)."""
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self._lazy:
            module_name, _, attr = self._lazy[cmd_name][0].partition(":")
            module = __import__(module_name, fromlist=[attr])
            command: click.Command = getattr(module, attr)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:  # noqa: ARG002 (click's signature)
        # Listing the commands must not import them (the ingest side imports torch).
        eager = {name: cmd.get_short_help_str(60) for name, cmd in self.commands.items()}
        rows = sorted({**eager, **{n: h for n, (_, h) in self._lazy.items()}}.items())
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    command_class = CircuitStoreCommand

    def invoke(self, ctx: click.Context) -> Any:
        with error_boundary():
            return super().invoke(ctx)


@contextmanager
def error_boundary() -> Iterator[None]:
    try:
        yield
    except CircuitStoreError as exc:
        click.echo(f"Error: {printable(str(exc))}", err=True)
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        raise SystemExit(130) from None


def connection_options(func: F) -> F:
    """`--uri/--username/--database/--env-file`; the password only from the environment or the
    env file, so it never lands in shell history or `ps`."""

    @click.option("--uri", envvar="NEO4J_URI", help="Bolt URI [env NEO4J_URI; default local].")
    @click.option("--username", envvar="NEO4J_USERNAME", help="[env NEO4J_USERNAME; neo4j]")
    @click.option("--database", envvar="NEO4J_DATABASE", help="[env NEO4J_DATABASE; neo4j]")
    @click.option(
        "--env-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="A dotenv file with NEO4J_* settings (NEO4J_PASSWORD among them).",
    )
    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from circuitstore.schema.connection import Neo4jSettings

        kwargs["settings"] = Neo4jSettings.load(
            env_file=kwargs.pop("env_file"),
            uri=kwargs.pop("uri"),
            username=kwargs.pop("username"),
            database=kwargs.pop("database"),
        )
        return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


# The defaults the shared option bundles show are the configs' own.
INGEST_DEFAULTS = IngestConfig(model="", transcoders="", prompts="")

# Row counts the store is ever asked for; beyond 64-bit integers the driver could not even send.
MAX_ROWS = 100_000
# Rows skipped before the answer: past any store's prompt count, inside what the driver can send.
MAX_SKIP = 10**12


def top_option(default: int, help: str = "At most this many rows.") -> Callable[[F], F]:
    return click.option(
        "--top",
        default=default,
        show_default=True,
        type=click.IntRange(1, MAX_ROWS),
        help=help,
    )


def output_path(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A click callback: the folder of an output file (`--out`, `--export FORMAT FILE`) must
    exist and be writable, checked before any query runs."""
    path = value[1] if isinstance(value, tuple) else value
    if path is None:
        return value
    folder = Path(path).expanduser().absolute().parent
    if not folder.is_dir():
        raise click.BadParameter(f"folder {folder} does not exist", ctx, param)
    if not os.access(folder, os.W_OK):
        raise click.BadParameter(f"folder {folder} is not writable", ctx, param)
    return value


def options(func: F, *bundle: Callable[[F], F]) -> F:
    """`func` with every option of `bundle`, listed in `--help` in that order."""
    for option in reversed(bundle):
        func = option(func)
    return func


class Cap(click.ParamType[int | None]):
    """A positive count, or `none` for no cap."""

    name = "N|none"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() == "none"):
            return None
        try:
            number = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a count; allowed: an integer >= 1 or none", param, ctx)
        if number < 1:
            self.fail(f"{number} is not >= 1; allowed: an integer >= 1 or none", param, ctx)
        return number


def pruning_options(func: F) -> F:
    """`--node-threshold/--edge-threshold/--skip-fraction`, shared by `attribute` and `ingest`;
    defaults and ranges are PruneConfig's."""
    prune = PruneConfig()
    return options(
        func,
        click.option(
            "--node-threshold",
            default=prune.node_threshold,
            show_default=True,
            type=click.FloatRange(0, 1, min_open=True),
            help="Pruning: keep the fewest features carrying this share of the influence.",
        ),
        click.option(
            "--edge-threshold",
            default=prune.edge_threshold,
            show_default=True,
            type=click.FloatRange(0, 1, min_open=True),
            help="Pruning: per target, keep the strongest in-edges carrying this share of its "
            "absolute input.",
        ),
        click.option(
            "--skip-fraction",
            default=prune.skip_fraction,
            show_default=True,
            type=click.FloatRange(0, 1, max_open=True),
            help="Pruning: per layer, leave unexpanded (and unkept) the targets holding this "
            "smallest share of its influence (ingest's aggregates still see their edges).",
        ),
        click.option(
            "--max-feature-nodes",
            default=prune.max_feature_nodes,
            show_default=True,
            type=Cap(),
            help="Storage budget: keep at most this many features, the most influential.",
        ),
        click.option(
            "--max-edges",
            default=prune.max_edges,
            show_default=True,
            type=Cap(),
            help="Storage budget: keep at most this many edges per prompt, the strongest by "
            "influence-weighted weight.",
        ),
    )


def attribution_options(attribution: AttributionConfig) -> Callable[[F], F]:
    """`--mode/--logit-top-k/--dtype/--device/--tf32`, shared by `attribute` and `ingest`, with
    `attribution`'s defaults (the command's config's own)."""
    return lambda func: options(
        func,
        click.option(
            "--mode",
            type=click.Choice(MODES),
            default=attribution.mode,
            show_default=True,
            help="exact: every path through attention; lumped: at most one attention layer, "
            "the rest in one remainder node per target.",
        ),
        click.option(
            "--logit-top-k",
            "--top-logits",  # the name `attribute` had first
            "logit_top_k",
            type=click.IntRange(min=1),
            default=attribution.logit_top_k,
            show_default=True,
            help="Logit targets: the k highest logits.",
        ),
        click.option(
            "--dtype",
            type=click.Choice(DTYPES),
            default=INGEST_DEFAULTS.dtype,
            show_default=True,
            help="The engine's dtype: every product accumulates in it.",
        ),
        click.option(
            "--weights-dtype",
            type=click.Choice(WEIGHTS_DTYPES),
            default=None,
            help="Hold the model's and transcoders' weights in this dtype (default: --dtype). "
            "bfloat16 halves their memory: Gemma-2-2B with Gemma Scope fits 23 GB.",
        ),
        device_option(),
        click.option(
            "--tf32",
            is_flag=True,
            help="On a CUDA GPU, TF32 matrix products: faster, less exact (docs: Performance).",
        ),
    )


def device_option() -> Callable[[F], F]:
    return click.option(
        "--device",
        default=INGEST_DEFAULTS.device,
        show_default=True,
        callback=_device,
        help=f"Where the model and the engine run: {DEVICE_FORMS} (auto: a CUDA GPU when "
        "torch sees one, else the CPU).",
    )


def _device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        check_device(value)
    except CircuitStoreError as exc:
        raise click.BadParameter(str(exc).split(": ", 1)[-1], ctx, param) from None
    return value


def format_option(*choices: str) -> Callable[[F], F]:
    names = choices or ("table", "json", "csv")
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(names),
        default=names[0],
        show_default=True,
        help="Output format: a table for people, json or csv for scripts.",
    )


def render_rows(
    rows: Sequence[dict[str, Any]],
    fmt: str,
    columns: Sequence[str] = (),
    right: Collection[str] = (),
) -> str:
    """Rows of dicts as a table, JSON or CSV. `right`: the table's right-aligned columns."""
    cols = list(columns) or (list(rows[0]) if rows else [])
    if fmt == "json":
        return json.dumps(list(rows), indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: _csv_cell(v) for k, v in row.items()} for row in rows])
        return buf.getvalue().rstrip("\n")
    return render_table(rows, cols, right)


def _csv_cell(value: Any) -> Any:
    return printable(value) if isinstance(value, str) else value


def render_table(
    rows: Sequence[dict[str, Any]], cols: Sequence[str], right: Collection[str] = ()
) -> str:
    """A table for a terminal: columns padded by the width the text takes on screen (wide
    characters count two columns, combining marks none), every control character escaped, so
    that columns stay aligned whatever the stored text. `right`: right-aligned columns."""
    if not rows:
        return "(no rows)"
    cells = [[_cell(row.get(c)) for c in cols] for row in rows]
    widths = [
        max(display_width(c), *(display_width(r[i]) for r in cells)) for i, c in enumerate(cols)
    ]
    aligned = [c in right for c in cols]
    lines = [_line(list(cols), widths, aligned)]
    lines.append("  ".join("-" * w for w in widths))
    lines += [_line(r, widths, aligned) for r in cells]
    return "\n".join(line.rstrip() for line in lines)


def _line(values: list[str], widths: list[int], right: list[bool]) -> str:
    parts = []
    for value, width, to_right in zip(values, widths, right, strict=True):
        pad = " " * (width - display_width(value))
        parts.append(pad + value if to_right else value + pad)
    return "  ".join(parts)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return "" if value is None else printable(str(value))


# C0 and C1 controls, DEL, and the bidirectional overrides: text that would move the cursor,
# change colours or reorder what a terminal shows. Tabs and newlines break a table's columns.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# Everything else a terminal must not get raw: lone surrogates (what undecodable bytes become
# under `surrogateescape`; they cannot even be written to a UTF-8 stream), the other format
# characters (zero-width joiners and spaces, the other bidirectional marks), line and
# paragraph separators, private-use and unassigned code points.
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))


def printable(text: str) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\n`), and every
    other character a terminal would not show as itself (lone surrogates, zero-width and format
    characters, separators, unassigned code points) as its `\\u` escape, so that stored text
    (prompts, tokens, labels) never reaches a terminal raw."""
    text = _CONTROLS.sub(_escape, text)
    if text.isprintable() or not any(unicodedata.category(ch) in _HIDDEN for ch in text):
        return text
    return "".join(_escape_char(ch) if unicodedata.category(ch) in _HIDDEN else ch for ch in text)


def _escape(match: re.Match[str]) -> str:
    return _escape_char(match[0])


def _escape_char(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def display_width(text: str) -> int:
    """The columns `text` takes in a terminal: East Asian wide and fullwidth characters two,
    combining marks none, every other (printable) character one."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me"):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def stdout_is_terminal() -> bool:
    return sys.stdout.isatty()
