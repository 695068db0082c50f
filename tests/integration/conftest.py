"""Fixtures for the ingest and query tiers: tiny weights in the real formats, a corpus, and a
canonical snapshot of everything in the store (to compare two runs' final graphs)."""

from __future__ import annotations

import math
import random
from pathlib import Path

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


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> tuple[Path, Path]:
    """A 2-layer random GPT-2 (with tokenizer) and its transcoders in the published layout."""
    from circuitstore.ingest.synthetic import (
        ModelSpec,
        random_transcoders,
        save_model,
        save_transcoders,
    )

    root = tmp_path_factory.mktemp("tiny")
    spec = ModelSpec()
    save_model(root / "model", spec)
    save_transcoders(random_transcoders(spec.n_layers, spec.d_model, 64), root / "transcoders")
    return root / "model", root / "transcoders"


@pytest.fixture
def corpus_file(tmp_path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(make_corpus(24)) + "\n")
    return path


def _canonical(value):  # type: ignore[no-untyped-def]
    if isinstance(value, float):
        return round(value, 9) if math.isfinite(value) else str(value)
    if isinstance(value, list):
        return tuple(_canonical(v) for v in value)
    return value


def snapshot(driver) -> dict:  # type: ignore[no-untyped-def]
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


def wipe_data(driver) -> None:  # type: ignore[no-untyped-def]
    """Delete every node but the schema version, keeping constraints and indexes."""
    with driver.session() as s:
        s.run(
            "MATCH (n) WHERE NOT n:SchemaVersion CALL (n) { DETACH DELETE n } IN TRANSACTIONS"
        ).consume()


@pytest.fixture
def store_snapshot():  # type: ignore[no-untyped-def]
    return snapshot


@pytest.fixture
def wipe():  # type: ignore[no-untyped-def]
    return wipe_data
