"""Session fixtures: a tiny GPT-2 with a trained BPE tokenizer and random transcoders in the
published pickle layout, written to a temp folder and loaded back through the real loaders."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from circuitstore.ingest.attribution import AttributionEngine
from circuitstore.ingest.model import LoadedModel, load_model
from circuitstore.ingest.synthetic import (
    ModelSpec,
    random_transcoders,
    save_model,
    save_transcoders,
)
from circuitstore.ingest.transcoder import TranscoderSet, load_transcoders

SPEC = ModelSpec(n_layers=3, d_model=48, n_heads=4, n_ctx=48, vocab_size=360, seed=3)
D_TC = 96
PROMPT = "When Mary and John went to the store"


@dataclass(frozen=True)
class Tiny:
    model_dir: Path
    tc_dir: Path
    model: LoadedModel
    transcoders: TranscoderSet
    engine: AttributionEngine


@pytest.fixture(scope="session")
def tiny_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("tiny")
    save_model(root / "model", SPEC)
    tcs = random_transcoders(SPEC.n_layers, SPEC.d_model, D_TC, active_fraction=0.15, seed=5)
    save_transcoders(tcs, root / "transcoders")
    return root / "model", root / "transcoders"


@pytest.fixture(scope="session")
def tiny(tiny_dirs: tuple[Path, Path]) -> Tiny:
    model_dir, tc_dir = tiny_dirs
    model = load_model(model_dir, dtype=torch.float64)
    tcs = load_transcoders(tc_dir, dtype=torch.float64)
    return Tiny(model_dir, tc_dir, model, tcs, AttributionEngine(model, tcs))


@pytest.fixture(scope="session")
def tiny32(tiny_dirs: tuple[Path, Path]) -> Tiny:
    model_dir, tc_dir = tiny_dirs
    model = load_model(model_dir, dtype=torch.float32)
    tcs = load_transcoders(tc_dir)
    return Tiny(model_dir, tc_dir, model, tcs, AttributionEngine(model, tcs))


@pytest.fixture(scope="session")
def family_model(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], LoadedModel]:
    """The tiny float64 model of a family (`families.spec`), built once per session."""
    from .families import spec

    built: dict[str, LoadedModel] = {}

    def get(family: str) -> LoadedModel:
        if family not in built:
            folder = save_model(tmp_path_factory.mktemp(family) / "model", spec(family))
            built[family] = load_model(folder, dtype=torch.float64)
        return built[family]

    return get
