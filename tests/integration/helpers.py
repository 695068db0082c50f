"""Builders the integration tests share: corpora, the ingest command line, snapshots of the
whole store and their comparison."""

from __future__ import annotations

import math
import random
import sys
from pathlib import Path
from typing import Any

import pytest

NAMES = ("Mary", "John", "the cat", "the dog", "a bird")
PLACES = ("store", "river", "hills", "mat", "bank")


def make_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    prompts = []
    for i in range(n):
        a, b = rng.sample(NAMES, 2)
        place = rng.choice(PLACES)
        prompts.append(f"When {a} and {b} went to the {place}, {b} gave a drink to ({i})")
    return prompts


def ingest_cmd(
    tiny_weights: tuple[Path, Path], corpus: Path, catalog: str, *extra: str
) -> list[str]:
    """`circuitstore ingest` of `corpus` as run "r", as a subprocess's argument list; `catalog`
    is a folder (its SQLite file) or a database URL."""
    model, tcs = tiny_weights
    if "://" not in catalog:
        catalog = f"sqlite:///{Path(catalog) / 'catalog.sqlite'}"
    return [
        sys.executable,
        "-m",
        "circuitstore.cli",
        "ingest",
        "--model",
        str(model),
        "--transcoders",
        str(tcs),
        "--prompts",
        str(corpus),
        "--run",
        "r",
        "--catalog",
        catalog,
        "--batch-size",
        "2",
        *extra,
    ]


def count(driver: Any, label: str) -> int:
    with driver.session() as s:
        return int(s.run(f"MATCH (n:{label}) RETURN count(n) AS c").single()["c"])


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 9) if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return tuple(_canonical(v) for v in value)
    return value


def snapshot(driver: Any) -> dict[str, list[Any]]:
    """Every node and relationship, keyed by ids and with rounded floats, timestamps dropped."""
    with driver.session() as s:
        nodes = sorted(
            (
                tuple(sorted(r["labels"])),
                tuple(sorted((k, _canonical(v)) for k, v in r["props"].items())),
            )
            for r in s.run(
                "MATCH (n) WHERE NOT n:SchemaVersion RETURN labels(n) AS labels, properties(n) AS props"
            )
        )
        rels = sorted(
            (
                r["a"],
                r["type"],
                r["b"],
                tuple(sorted((k, _canonical(v)) for k, v in r["props"].items())),
            )
            for r in s.run(
                "MATCH (a)-[r]->(b) RETURN a.id AS a, type(r) AS type, b.id AS b, properties(r) AS props"
            )
        )
    return {"nodes": nodes, "rels": rels}


def snapshot_close(a: dict[str, list[Any]], b: dict[str, list[Any]]) -> bool:
    """Equal, except float sums may differ in the last bits (shards add in another order)."""
    if a == b:
        return True
    for key in ("nodes", "rels"):
        assert len(a[key]) == len(b[key])
        for x, y in zip(a[key], b[key], strict=True):
            assert _close(x, y), (x, y)
    return True


def _close(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return bool(x == pytest.approx(y, rel=1e-9, abs=1e-12))
    if isinstance(x, tuple) and isinstance(y, tuple):
        return len(x) == len(y) and all(_close(p, q) for p, q in zip(x, y, strict=True))
    return bool(x == y)


def wipe_data(driver: Any) -> None:
    """Delete every node but the schema version, keeping constraints and indexes."""
    with driver.session() as s:
        s.run(
            "MATCH (n) WHERE NOT n:SchemaVersion CALL (n) { DETACH DELETE n } IN TRANSACTIONS"
        ).consume()


N_PROMPTS = 12


def fill(driver: Any, database: str, tiny_weights: tuple[Path, Path], folder: Path) -> None:
    """Ingest the tiny corpus (a no-op when another module already did: ingest is idempotent)."""
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.runner import IngestRunner
    from circuitstore.schema.apply import apply_schema

    texts = make_corpus(N_PROMPTS)
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(texts) + "\n")
    with driver.session(database=database) as session:
        held = sorted(r["t"] for r in session.run("MATCH (p:Prompt) RETURN p.text AS t"))
        if held != sorted(texts):  # another module's data: start from an empty store
            session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    apply_schema(driver, database)
    model, tcs = tiny_weights
    cfg = IngestConfig.from_flat(
        model=str(model),
        transcoders=str(tcs),
        prompts=str(corpus),
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        progress=False,
    )
    IngestRunner(cfg, driver, database).run()


def fill_demo(driver: Any, database: str, rows: list[dict[str, Any]], folder: Path) -> int:
    """An emptied store holding `rows` of the demo corpus, ingested with the shipped demo model
    and transcoders; returns how many prompts the run wrote."""
    import json

    from circuitstore.demo import WEIGHTS
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.runner import IngestRunner
    from circuitstore.schema.apply import apply_schema

    with driver.session(database=database) as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    apply_schema(driver, database)
    corpus = folder / "slice.jsonl"
    corpus.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = IngestConfig.from_flat(
        model=str(WEIGHTS / "model"),
        transcoders=str(WEIGHTS / "transcoders"),
        prompts=str(corpus),
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        progress=False,
    )
    return IngestRunner(cfg, driver, database).run().written
