"""What `circuitstore verify` prints as a table: short cells, and the token that took the top."""

from __future__ import annotations

from dataclasses import dataclass

from circuitstore.commands.verify import MAX_CELL, _features, _table
from circuitstore.ingest.intervene.verify import Check, VerifyReport


@dataclass(frozen=True)
class Info:
    id: str = "p1"
    key: str = "eval-ioi-000001"
    transcoder_set: str = "set"
    token_ids: tuple[int, ...] = (1, 2, 3)


def check(features: tuple[str, ...], flips: bool = False, top: str = " Mary") -> Check:
    return Check(features, 0.5, 3, 1e-7, -1.0, -0.8, -2.0, -1.5, flips, top)


def report(groups: list[tuple[str, ...]], circuit: Check) -> VerifyReport:
    singles = tuple(check(g) for g in groups)
    return VerifyReport(Info(), "lumped", 0.0, (5, " Mary"), (6, " Paul"), singles, circuit)


def test_one_features_occurrences_share_its_name() -> None:
    assert _features(("mlp0tc[70]@14",)) == "mlp0tc[70]@14"
    assert _features(("mlp0tc[70]@3", "mlp0tc[70]@7", "mlp1tc[2]@7")) == (
        "mlp0tc[70]@3,7, mlp1tc[2]@7"
    )


def test_long_cells_are_abbreviated_with_counts() -> None:
    many = tuple(f"mlp0tc[70]@{p}" for p in range(40))
    assert _features(many) == "mlp0tc[70] at 40 positions"
    mixed = tuple(f"mlp{p % 3}tc[{p}]@{p}" for p in range(30))
    assert _features(mixed) == "30 occurrences of 30 features"


def test_the_together_row_refers_to_the_rows_above_and_flips_name_the_new_top() -> None:
    groups = [(f"mlp{i % 3}tc[{100 + i}]@{10 + i}",) for i in range(10)]
    together = check(tuple(n for g in groups for n in g), flips=True, top=" Anna")
    rows = _table(report(groups, together))
    assert [r["check"] for r in rows] == ["single"] * 10 + ["together"]
    assert rows[-1]["features"] == "all 10 above"
    assert rows[-1]["flips"] == "to ' Anna'"
    assert rows[0]["flips"] == "no"
    assert all(len(str(v)) <= MAX_CELL for r in rows for v in r.values())


def test_json_rows_keep_every_feature_and_the_top_token() -> None:
    groups = [(f"mlp0tc[{i}]@{i}",) for i in range(10)]
    together = check(tuple(n for g in groups for n in g), flips=True, top=" Anna")
    row = report(groups, together).rows()[-1]
    assert row["features"] == ", ".join(n for g in groups for n in g)
    assert (row["flips"], row["top_token"]) == (True, " Anna")
