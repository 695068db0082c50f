"""Find, read and assemble a transcoder set from a local folder or a HuggingFace repo."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from circuitstore.ingest.safeload import load_failure
from circuitstore.ingest.transcoder.files import (
    RawTranscoderFile,
    read_published,
    read_safetensors,
    read_sparsity,
)
from circuitstore.ingest.transcoder.types import PARAM_NAMES, Transcoder, TranscoderSet
from circuitstore.ingest.transcoder.validate import check_file
from circuitstore.schema.errors import TranscoderLoadError

_PUBLISHED = re.compile(
    r"^final_sparse_autoencoder_(?P<model>.+?)_(?P<hook>blocks\.(?P<layer>\d+)\.[\w.]+?)_(?P<d>\d+)\.pt$"
)
_SAFETENSORS = re.compile(r"^(?P<hook>blocks\.(?P<layer>\d+)\.[\w.]+)\.safetensors$")
_SPARSITY_SUFFIX = "_log_feature_sparsity.pt"


def load_transcoders(source: str | Path, *, dtype: torch.dtype = torch.float32) -> TranscoderSet:
    """Load every layer's transcoder from a folder, or from a HuggingFace repo id when no such
    folder exists. Files are checked one by one here; :func:`validate_against` checks the set
    against a model. Raises TranscoderLoadError naming the file (unreadable, refused by the
    weights-only unpickler, missing or malformed tensors, a missing layer)."""
    folder = Path(source)
    if not folder.is_dir():
        folder = _download(str(source))
    files = _discover(folder)
    transcoders = [_assemble(layer, hook, raw) for layer, (hook, raw) in sorted(files.items())]
    for expected, tc in enumerate(transcoders):
        if tc.layer != expected:
            raise TranscoderLoadError(f"{folder.name}: no transcoder file for layer {expected}")
    model_names = {str(tc.cfg.get("model_name", "")) for tc in transcoders}
    model_name = model_names.pop() if len(model_names) == 1 else ""
    return TranscoderSet(tuple(tc.to(dtype) for tc in transcoders), str(source), model_name)


def _download(repo_id: str) -> Path:
    """The hub path (needs the internet; not reachable from the test machines)."""
    if repo_id.count("/") != 1 or repo_id.startswith((".", "/")):
        raise TranscoderLoadError(
            f"{repo_id}: not a folder and not a HuggingFace repo id (owner/name)"
        )
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["*.pt", "*.safetensors"]))
    except Exception as exc:
        raise TranscoderLoadError(
            f"{repo_id}: cannot download transcoders ({load_failure(exc)})"
        ) from None


def _discover(folder: Path) -> dict[int, tuple[str, RawTranscoderFile]]:
    found: dict[int, tuple[str, RawTranscoderFile]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(_SPARSITY_SUFFIX):
            continue
        match = _PUBLISHED.match(path.name) or _SAFETENSORS.match(path.name)
        if match is None:
            continue
        layer = int(match["layer"])
        if layer in found:
            raise TranscoderLoadError(f"{path.name}: a second transcoder file for layer {layer}")
        raw = read_published(path) if path.suffix == ".pt" else read_safetensors(path)
        found[layer] = (match["hook"], raw)
    if not found:
        raise TranscoderLoadError(
            f"{folder.name}: no transcoder files "
            "(final_sparse_autoencoder_*.pt or blocks.L.*.safetensors)"
        )
    return found


def _assemble(layer: int, hook: str, raw: RawTranscoderFile) -> Transcoder:
    check_file(raw, layer, hook)
    tensors = raw.tensors
    sparsity = tensors.get("log_feature_sparsity")
    sparsity_path = raw.path.with_name(raw.path.name[: -len(".pt")] + _SPARSITY_SUFFIX)
    if raw.path.suffix == ".pt" and sparsity_path.exists():
        sparsity = read_sparsity(sparsity_path)
    if sparsity is not None and sparsity.shape != (tensors["W_enc"].shape[1],):
        raise TranscoderLoadError(
            f"{raw.path.name}: log feature sparsity has shape {tuple(sparsity.shape)}"
        )
    params = {name: tensors[name] for name in PARAM_NAMES}
    return Transcoder(
        layer=layer,
        hook_point=hook,
        source=raw.path.name,
        cfg=raw.cfg,
        log_feature_sparsity=sparsity,
        **params,
    )
