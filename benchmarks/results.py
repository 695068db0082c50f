"""A benchmark's results as the docs show them: each benchmark's `--write-docs` rewrites its own
file under docs/performance/, which the results page (docs/performance.md) includes.

    with Results("bench_budget", enabled=args.write_docs) as out:
        out.table("budget", "stored edges")   # printed as always, and kept for the page
        out.row("none", f"{edges:,}")

A results file starts with the date, the machine and the load average at the start and at the
end, then holds what the benchmark reported, in Markdown. Progress lines stay plain `print`s.
"""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path
from types import TracebackType

PAGES = Path(__file__).resolve().parents[1] / "docs" / "performance"


def load_average() -> str:
    """The 1, 5 and 15 minute load averages."""
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


def machine(accelerator: str | None = None) -> str:
    """The machine in words: its cores, CPU, vector units and memory (and a GPU when used)."""
    cpu, flags = platform.processor() or platform.machine(), set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                cpu = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else None
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    words = f"{os.cpu_count()} cores of an {cpu}" + (f" ({vector})" if vector else "")
    words += f", {memory:.0f} GiB"
    return f"{accelerator} on {words}" if accelerator else words


class Results:
    """What a benchmark reports, printed and, when `enabled`, written to its results file."""

    def __init__(self, name: str, *, enabled: bool, accelerator: str | None = None) -> None:
        self.path = PAGES / f"{name}.md"
        self.enabled = enabled
        self.accelerator = accelerator
        self.lines: list[str] = []
        self.start_load = load_average()

    def print(self, text: str = "") -> None:
        print(text, flush=True)
        self.lines.append(text)

    def table(self, *columns: str) -> None:
        """A Markdown table's header."""
        self.print("| " + " | ".join(columns) + " |")
        self.print("|" + "---|" * len(columns))

    def row(self, *cells: object) -> None:
        self.print("| " + " | ".join(map(str, cells)) + " |")

    def __enter__(self) -> Results:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        if kind is None and self.enabled:
            self.write()

    def write(self) -> None:
        command = " ".join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
        header = (
            f"*Measured {datetime.date.today().isoformat()} on {machine(self.accelerator)}; "
            f"load average (1 / 5 / 15 min) {self.start_load} at the start, {load_average()} "
            f"at the end. `{command}` rewrites this part.*"
        )
        body = "\n".join(self.lines).strip("\n")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(f"{header}\n\n{body}\n", encoding="utf-8")
        print(f"wrote {self.path}", flush=True)
