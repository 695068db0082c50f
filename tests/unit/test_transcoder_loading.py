from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from circuitstore.ingest.synthetic import random_transcoders, save_transcoders
from circuitstore.ingest.transcoder import load_transcoders, validate_against
from circuitstore.schema.errors import TranscoderLoadError


def _fresh(tmp_path: Path, **changes) -> tuple[Path, list[Path]]:
    tcs = random_transcoders(2, 16, 32, seed=1)
    if changes:
        layer = changes.pop("layer", 1)
        tc = replace(tcs[layer], **changes)
        tcs = replace(
            tcs, transcoders=tuple(tc if i == layer else t for i, t in enumerate(tcs.transcoders))
        )
    folder = tmp_path / "tc"
    return folder, save_transcoders(tcs, folder)


def _one_line_error(folder: Path, *needles: str) -> str:
    with pytest.raises(TranscoderLoadError) as info:
        load_transcoders(folder)
    msg = str(info.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg
    return msg


def test_published_round_trip(tmp_path: Path) -> None:
    folder, paths = _fresh(tmp_path)
    assert paths[0].name == "final_sparse_autoencoder_synthetic_blocks.0.ln2.hook_normalized_32.pt"
    assert (folder / (paths[0].stem + "_log_feature_sparsity.pt")).exists()
    loaded = load_transcoders(folder)
    original = random_transcoders(2, 16, 32, seed=1)
    for a, b in zip(loaded.transcoders, original.transcoders, strict=True):
        for name in ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out", "log_feature_sparsity"):
            assert torch.equal(getattr(a, name), getattr(b, name))
    assert loaded[1].cfg["hook_point"] == "blocks.1.ln2.hook_normalized"
    assert loaded[1].cfg["d_sae"] == 32
    assert loaded.model_name == "synthetic"
    assert "sae_training" not in sys.modules


def test_published_pickle_names_the_original_cfg_class(tmp_path: Path) -> None:
    _, paths = _fresh(tmp_path)
    import zipfile

    with zipfile.ZipFile(paths[0]) as zf:
        data = zf.read(next(n for n in zf.namelist() if n.endswith("data.pkl")))
    assert b"sae_training.config" in data
    assert b"LanguageModelSAERunnerConfig" in data


def test_safetensors_layout(tmp_path: Path) -> None:
    tcs = random_transcoders(2, 16, 32, seed=2)
    save_transcoders(tcs, tmp_path, layout="safetensors")
    loaded = load_transcoders(tmp_path, dtype=torch.float64)
    assert loaded[0].W_enc.dtype == torch.float64
    assert torch.allclose(loaded[1].W_dec, tcs[1].W_dec.double())


def test_missing_layer(tmp_path: Path) -> None:
    folder, _ = _fresh(tmp_path)
    tcs = random_transcoders(3, 16, 32, seed=1)
    save_transcoders(tcs, folder)
    next(folder.glob("*blocks.1.ln2*_32.pt")).unlink()
    _one_line_error(folder, "layer 1")


def test_shape_mismatch(tmp_path: Path) -> None:
    folder, _ = _fresh(tmp_path, W_dec=torch.zeros(32, 15))
    _one_line_error(folder, "blocks.1", "W_dec", "(32, 15)")


def test_nan_weights(tmp_path: Path) -> None:
    bad = random_transcoders(2, 16, 32, seed=1)[1].b_enc.clone()
    bad[3] = float("nan")
    folder, _ = _fresh(tmp_path, b_enc=bad)
    _one_line_error(folder, "b_enc", "NaN")


def test_hook_mismatch_against_model(tmp_path: Path) -> None:
    folder, _ = _fresh(tmp_path, hook_point="blocks.1.hook_resid_pre")
    loaded = load_transcoders(folder)
    with pytest.raises(
        TranscoderLoadError, match=r"hook point blocks\.1\.hook_resid_pre, expected blocks\.1\.ln2"
    ):
        validate_against(loaded, n_layers=2, d_model=16)


def test_layer_count_and_width_against_model(tmp_path: Path) -> None:
    folder, _ = _fresh(tmp_path)
    loaded = load_transcoders(folder)
    with pytest.raises(TranscoderLoadError, match="no transcoder file for layer 2"):
        validate_against(loaded, n_layers=3, d_model=16)
    with pytest.raises(TranscoderLoadError, match="d_model is 17"):
        validate_against(loaded, n_layers=2, d_model=17)


def test_no_files_and_bad_repo(tmp_path: Path) -> None:
    _one_line_error(tmp_path, "no transcoder files")
    with pytest.raises(TranscoderLoadError, match="not a folder"):
        load_transcoders(str(tmp_path / "missing" / "deeper" / "x"))
