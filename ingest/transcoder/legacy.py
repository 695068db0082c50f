"""The published per-layer pickles (pchlenski/gpt2-transcoders) and our safetensors layout: one
file per layer, named for its hook point (see `files`). Both read ln2's normalised output and
subtract b_dec from it before encoding, as our record does; each layer is converted to the
requested dtype as soon as it is read, so a float32 copy of the whole set never exists."""

from __future__ import annotations

import re
from pathlib import Path

from circuitstore.ingest.transcoder.common import ReadOptions
from circuitstore.ingest.transcoder.files import (
    RawTranscoderFile,
    read_published,
    read_safetensors,
    read_sparsity,
)
from circuitstore.ingest.transcoder.types import PARAM_NAMES, Transcoder, TranscoderSet
from circuitstore.ingest.transcoder.validate import check_file
from circuitstore.schema.errors import TranscoderLoadError

PUBLISHED = re.compile(
    r"^final_sparse_autoencoder_(?P<model>.+?)_(?P<hook>blocks\.(?P<layer>\d+)\.[\w.]+?)_(?P<d>\d+)\.pt$"
)
SAFETENSORS = re.compile(r"^(?P<hook>blocks\.(?P<layer>\d+)\.[\w.]+)\.safetensors$")
_SPARSITY_SUFFIX = "_log_feature_sparsity.pt"


def is_published(names: frozenset[str]) -> bool:
    """Whether a folder's files include published per-layer pickles."""
    return any(PUBLISHED.match(n) and not n.endswith(_SPARSITY_SUFFIX) for n in names)


def is_safetensors(names: frozenset[str]) -> bool:
    """Whether a folder's files include our blocks.L.<hook>.safetensors files."""
    return any(SAFETENSORS.match(n) for n in names)


def read_legacy(folder: Path, options: ReadOptions) -> TranscoderSet:
    """Every layer's file of a published or safetensors folder, checked one by one here;
    `validate_against` checks the set against a model."""
    files = _discover(folder)
    transcoders = [
        _assemble(layer, hook, raw).to(options.dtype)
        for layer, (hook, raw) in sorted(files.items())
    ]
    for expected, tc in enumerate(transcoders):
        if tc.layer != expected:
            raise TranscoderLoadError(f"{folder.name}: no transcoder file for layer {expected}")
    model_names = {str(tc.cfg.get("model_name", "")) for tc in transcoders}
    model_name = model_names.pop() if len(model_names) == 1 else ""
    return TranscoderSet(tuple(transcoders), str(folder), model_name)


def _discover(folder: Path) -> dict[int, tuple[str, Path]]:
    found: dict[int, tuple[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        if path.name.endswith(_SPARSITY_SUFFIX):
            continue
        match = PUBLISHED.match(path.name) or SAFETENSORS.match(path.name)
        if match is None:
            continue
        layer = int(match["layer"])
        if layer in found:
            raise TranscoderLoadError(f"{path.name}: a second transcoder file for layer {layer}")
        found[layer] = (match["hook"], path)
    return found


def _assemble(layer: int, hook: str, path: Path) -> Transcoder:
    raw: RawTranscoderFile = (
        read_published(path) if path.suffix == ".pt" else read_safetensors(path)
    )
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
    W_enc, b_enc, W_dec, b_dec, b_dec_out = (tensors[name] for name in PARAM_NAMES)
    return Transcoder(
        layer=layer,
        hook_point=hook,
        W_enc=W_enc,
        b_enc=b_enc,
        W_dec=W_dec,
        b_dec=b_dec,
        b_dec_out=b_dec_out,
        source=raw.path.name,
        cfg=raw.cfg,
        log_feature_sparsity=sparsity,
    )
