"""The examples of the README and the docs pages, read from their fenced code blocks, and the
comparison of the output a page shows with the real one.

The conventions (docs/development.md says them for writers):
- ```bash (or sh, shell) blocks hold commands, one per line (a trailing backslash continues it,
  `#` starts a comment);
- ```console blocks hold commands after `$ `, each followed by the output the page shows for it.
  The output of `circuitstore demo` runs to the end of its block: it prints commands of its own;
- ```python blocks are programs, ```cypher blocks statements, each run whole;
- in shown output, a line `...` stands for any number of lines, and a number stands for any
  real number that rounds to it (`20.4` for `20.42`, `0.0000` for `2.962e-07`).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w-]*)")
NUMBER = re.compile(r"([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)")
SHELLS = {"bash", "sh", "shell"}
ELISION = "..."


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language, and its lines with their line numbers."""

    page: str
    language: str
    lines: tuple[tuple[int, str], ...]


@dataclass(frozen=True)
class Example:
    """A command or a program a page shows, with the output it shows for it (console blocks)."""

    page: str
    line: int
    language: str
    source: str
    shown: tuple[str, ...] | None = None

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.source, comments=True)

    @property
    def is_query(self) -> bool:
        """A command that reads the demo's store: `query ...`, and `verify` and `qk` (each reads
        one stored prompt and shows what the docs show of it)."""
        return self.argv[:2] in (
            ["circuitstore", "query"],
            ["circuitstore", "verify"],
            ["circuitstore", "qk"],
        )

    @property
    def is_demo(self) -> bool:
        return self.argv[:2] == ["circuitstore", "demo"]


def pages() -> list[Path]:
    """The README and every page of the docs site."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def blocks(path: Path) -> Iterator[Block]:
    """The fenced code blocks of a Markdown file, dedented to their fence."""
    page = str(path.relative_to(ROOT))
    opened: re.Match[str] | None = None
    body: list[tuple[int, str]] = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        found = FENCE.match(line)
        if opened is None:
            if found:
                opened, body = found, []
            continue
        if found and found["fence"] == opened["fence"] and not found["lang"]:
            yield Block(page, opened["lang"].lower(), tuple(body))
            opened = None
            continue
        body.append((number, line[len(opened["indent"]) :]))
    if opened is not None:
        raise ValueError(f"{page}: a code block opened with {opened['fence']} is never closed")


def logical_lines(lines: Sequence[tuple[int, str]]) -> Iterator[tuple[int, str]]:
    """Lines with their backslash continuations joined, numbered by their first line."""
    start, parts = 0, []
    for number, line in lines:
        if not parts:
            start = number
        if line.rstrip().endswith("\\"):
            parts.append(line.rstrip()[:-1])
            continue
        parts.append(line)
        yield start, " ".join(p.strip() for p in parts)
        parts = []
    if parts:
        yield start, " ".join(p.strip() for p in parts)


def examples(block: Block) -> Iterator[Example]:
    if block.language in SHELLS:
        for number, line in logical_lines(block.lines):
            if line.strip() and not line.lstrip().startswith("#"):
                yield Example(block.page, number, "bash", line.strip())
    elif block.language == "console":
        yield from console(block)
    elif block.language in ("python", "cypher"):
        code = "\n".join(line for _, line in block.lines)
        yield Example(block.page, block.lines[0][0], block.language, code)


def console(block: Block) -> Iterator[Example]:
    """Each `$ ` command of a console block with the lines that follow it, up to the next one
    (`circuitstore demo`'s, to the end of the block)."""
    rows = list(block.lines)
    i = 0
    while i < len(rows):
        number, line = rows[i]
        if not line.startswith("$ "):
            raise ValueError(f"{block.page}:{number}: output before any `$ ` command")
        command, i = line[2:], i + 1
        while command.rstrip().endswith("\\") and i < len(rows):
            command, i = command.rstrip()[:-1] + " " + rows[i][1].strip(), i + 1
        example = Example(block.page, number, "console", command.strip())
        end = i
        if example.is_demo:
            end = len(rows)
        else:
            while end < len(rows) and not rows[end][1].startswith("$ "):
                end += 1
        yield Example(
            block.page, number, "console", example.source, tuple(r[1] for r in rows[i:end])
        )
        i = end


def all_examples() -> list[Example]:
    return [e for path in pages() for block in blocks(path) for e in examples(block)]


def demo_commands(demo: Example) -> list[Example]:
    """The commands `circuitstore demo` prints, as a page shows them in its output."""
    shown = demo.shown or ()
    return [
        Example(demo.page, demo.line, "console", line[2:].strip())
        for line in shown
        if line.startswith("$ circuitstore ")
    ]


# -- shown output against the real one --------------------------------------------------------


def mismatch(shown: Sequence[str], real: Sequence[str]) -> str | None:
    """Why the output a page shows is not the real output, or None when it is (see above)."""
    shown = [line.rstrip() for line in shown]
    real = [line.rstrip() for line in real]
    while shown and not shown[-1]:
        shown.pop()
    while real and not real[-1]:
        real.pop()
    if _match(shown, 0, real, 0):
        return None
    # Say where: the first shown line that no real line after the last match matches.
    j = 0
    for line in shown:
        if line.strip() == ELISION:
            continue
        found = next((k for k in range(j, len(real)) if same_line(line, real[k])), None)
        if found is None:
            return f"shown line {line!r} is not in the real output (from its line {j + 1} on)"
        j = found + 1
    return "the real output has more lines than the page shows (end it with `...`)"


def _match(shown: Sequence[str], i: int, real: Sequence[str], j: int) -> bool:
    while i < len(shown):
        if shown[i].strip() == ELISION:
            return any(_match(shown, i + 1, real, k) for k in range(j, len(real) + 1))
        if j >= len(real) or not same_line(shown[i], real[j]):
            return False
        i, j = i + 1, j + 1
    return j == len(real)


def same_line(shown: str, real: str) -> bool:
    """Whether two lines hold the same words (columns may be aligned differently), numbers
    compared by the shown one's rounding and rules of dashes by their kind only."""
    words, real_words = shown.split(), real.split()
    if len(words) != len(real_words):
        return False
    return all(same_word(a, b) for a, b in zip(words, real_words, strict=True))


def same_word(shown: str, real: str) -> bool:
    if set(shown) == {"-"}:
        return set(real) == {"-"}
    parts, real_parts = NUMBER.split(shown), NUMBER.split(real)
    if len(parts) != len(real_parts):
        return False
    # NUMBER.split puts the numbers at the odd places.
    return all(
        rounds_to(real_part, part) if k % 2 else part == real_part
        for k, (part, real_part) in enumerate(zip(parts, real_parts, strict=True))
    )


def rounds_to(real: str, shown: str) -> bool:
    """Whether `real` rounds to `shown` at the last digit `shown` writes."""
    quantum = Decimal(1).scaleb(Decimal(shown).as_tuple().exponent)  # type: ignore[arg-type]
    return abs(Decimal(real) - Decimal(shown)) <= quantum / 2


COOKBOOK = ROOT / "query" / "cookbook.cypher"
FILLED_BY = re.compile(r"returns no rows until `(circuitstore [^`]+)` has run", re.I)


@dataclass(frozen=True)
class CookbookBlock:
    """One block of query/cookbook.cypher: its number, its `:param` values (Cypher
    expressions), its statement, and the command its comment says must run first, if any."""

    number: int
    params: dict[str, str]
    statement: str
    needs: str | None


def cookbook_blocks() -> list[CookbookBlock]:
    out = []
    for chunk in COOKBOOK.read_text().split("\n\n"):
        lines = [x for x in chunk.splitlines() if x.strip()]
        comment = " ".join(x.lstrip("/ ") for x in lines if x.startswith("//"))
        number = re.match(r"(\d+)\.", comment)
        code = [x for x in lines if not x.startswith("//")]
        params = dict(re.findall(r"^:param (\w+) => (.+);$", "\n".join(code), re.M))
        statement = "\n".join(x for x in code if not x.startswith(":param")).rstrip(";")
        if number and statement:
            needs = FILLED_BY.search(comment)
            out.append(
                CookbookBlock(int(number[1]), params, statement, needs[1] if needs else None)
            )
    return out
