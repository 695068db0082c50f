"""Hostile weights files: nothing in them runs, in any format torch accepts, and the error is one
line naming the file. Each payload would create a marker file if it ran; the marker must never
appear."""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from circuitstore.ingest.model import load_model
from circuitstore.ingest.synthetic import random_transcoders, save_transcoders
from circuitstore.ingest.transcoder import load_transcoders
from circuitstore.schema.errors import ModelLoadError, TranscoderLoadError

LAYER0 = "final_sparse_autoencoder_m_blocks.0.ln2.hook_normalized_32.pt"
SPARSITY0 = LAYER0.removesuffix(".pt") + "_log_feature_sparsity.pt"


class Payload:
    """Pickles as a call to os.system: the attack the published layout's loader must not run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, (f"touch {self.marker}",))


def _published_dict(marker: Path) -> dict[str, object]:
    return {"cfg": Payload(marker), "state_dict": {"W_enc": torch.zeros(2, 2)}}


def _zip(path: Path, marker: Path) -> None:
    torch.save(_published_dict(marker), path)


def _legacy(path: Path, marker: Path) -> None:
    torch.save(_published_dict(marker), path, _use_new_zipfile_serialization=False)


def _raw(protocol: int) -> Callable[[Path, Path], None]:
    def write(path: Path, marker: Path) -> None:
        path.write_bytes(pickle.dumps(Payload(marker), protocol=protocol))

    return write


def _payload_first_in_zip(path: Path, marker: Path) -> None:
    """A well-formed archive whose data.pkl is the payload alone (no tensors at all)."""
    buf = io.BytesIO()
    torch.save({"x": torch.zeros(1)}, buf)
    with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data.pkl"):
                data = pickle.dumps(Payload(marker), protocol=2)
            dst.writestr(item, data)


WRITERS = {
    "zip": _zip,
    "legacy": _legacy,
    "raw pickle, protocol 2": _raw(2),
    "raw pickle, protocol 5": _raw(5),
    "zip whose data.pkl is the payload": _payload_first_in_zip,
}


def _folder_with_good_files(tmp_path: Path) -> Path:
    folder = tmp_path / "tc"
    save_transcoders(random_transcoders(2, 16, 32, seed=1), folder)
    for path in folder.iterdir():
        path.rename(path.with_name(path.name.replace("_synthetic_", "_m_")))
    return folder


@pytest.mark.parametrize("fmt", sorted(WRITERS))
@pytest.mark.parametrize("target", ["layer file", "sparsity file"])
def test_crafted_file_runs_nothing(tmp_path: Path, fmt: str, target: str) -> None:
    folder = _folder_with_good_files(tmp_path)
    marker = tmp_path / "MARKER"
    WRITERS[fmt](folder / (LAYER0 if target == "layer file" else SPARSITY0), marker)
    with pytest.raises(TranscoderLoadError) as info:
        load_transcoders(folder)
    assert not marker.exists(), "the payload ran"
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(LAYER0 if target == "layer file" else SPARSITY0)
    assert len(message) < 300


def test_refusal_names_the_global(tmp_path: Path) -> None:
    folder = _folder_with_good_files(tmp_path)
    _zip(folder / LAYER0, tmp_path / "MARKER")
    with pytest.raises(TranscoderLoadError, match=r"names (posix|os|nt)\.system"):
        load_transcoders(folder)


def test_model_folder_with_a_crafted_pickle_runs_nothing(
    tmp_path: Path, tiny_dirs: tuple[Path, Path]
) -> None:
    """A model folder whose weights are a pickle (pytorch_model.bin) instead of safetensors."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    for path in tiny_dirs[0].iterdir():
        if path.name != "model.safetensors":
            (model_dir / path.name).write_bytes(path.read_bytes())
    marker = tmp_path / "MARKER"
    torch.save({"transformer.wte.weight": Payload(marker)}, model_dir / "pytorch_model.bin")
    with pytest.raises(ModelLoadError) as info:
        load_model(model_dir)
    assert not marker.exists(), "the payload ran"
    assert "\n" not in str(info.value)
