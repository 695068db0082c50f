"""Fixtures for the ingest and query tiers: tiny weights in the real formats, a corpus, and a
canonical snapshot of everything in the store (to compare two runs' final graphs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import make_corpus, snapshot, wipe_data


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


@pytest.fixture
def fresh_store(empty_store, neo4j_settings):  # type: ignore[no-untyped-def]
    """An empty database with the schema applied."""
    from circuitstore.schema.apply import apply_schema

    apply_schema(empty_store, neo4j_settings.database)
    return empty_store


@pytest.fixture
def store_snapshot():  # type: ignore[no-untyped-def]
    return snapshot


@pytest.fixture
def wipe():  # type: ignore[no-untyped-def]
    return wipe_data
