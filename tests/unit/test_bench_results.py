"""benchmarks/results.py: what `--write-docs` writes into a benchmark's results file."""

from __future__ import annotations

import datetime
import re
from pathlib import Path

import pytest

from benchmarks import results


@pytest.fixture
def pages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(results, "PAGES", tmp_path)
    return tmp_path


def test_the_file_says_when_where_and_under_what_load(pages: Path) -> None:
    with results.Results("bench_x", enabled=True) as out:
        out.print("Medians of 3 runs.\n")
        out.table("work", "seconds")
        out.row("hash", "0.36")
    text = (pages / "bench_x.md").read_text()
    header, body = text.split("\n\n", 1)
    assert header.startswith(f"*Measured {datetime.date.today().isoformat()} on ")
    assert f"{results.machine()}; load average (1 / 5 / 15 min) " in header
    assert re.search(
        r"[\d.]+ / [\d.]+ / [\d.]+ at the start, [\d.]+ / [\d.]+ / [\d.]+ at the end", header
    )
    assert header.endswith("` rewrites this part.*")
    assert body == "Medians of 3 runs.\n\n| work | seconds |\n|---|---|\n| hash | 0.36 |\n"


def broken() -> None:
    with results.Results("bench_z", enabled=True) as out:
        out.row("a", 1)
        raise RuntimeError("the benchmark broke")


def test_nothing_is_written_without_the_option_or_when_the_benchmark_fails(pages: Path) -> None:
    with results.Results("bench_y", enabled=False) as out:
        out.row("a", 1)
    with pytest.raises(RuntimeError, match="broke"):
        broken()
    assert list(pages.iterdir()) == []


def test_the_machine_names_its_cores_and_memory_and_a_gpu_when_used() -> None:
    assert re.fullmatch(r"\d+ cores of an .+, \d+ GiB", results.machine())
    assert results.machine("NVIDIA H200").startswith("NVIDIA H200 on ")
