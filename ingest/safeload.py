"""Weights files are data: read them with torch's weights-only unpickler and explain a refusal in
one line.

torch's `weights_only` unpickler looks every global a pickle names up in an allowlist (tensors,
storages, OrderedDict, dtypes, devices, plain containers, plus what the caller adds) before
touching it, so no file can call a function or build an arbitrary object, whatever its format:
zip archive, legacy tar/pickle, or a raw pickle stream. HF model folders get the same treatment
from transformers, which also loads `pytorch_model.bin` with `weights_only`.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

_REFUSED = re.compile(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)")


def load_weights_only(path: Path, allowed: Sequence[tuple[type, str]] = ()) -> Any:
    """`torch.load` onto the CPU with the weights-only unpickler; `allowed` adds (class, the
    dotted name the file uses for it) pairs, scoped to this call."""
    with warnings.catch_warnings(), torch.serialization.safe_globals(list(allowed)):
        # Old pickle protocols draw a warning from torch's unpickler; the file is still read.
        warnings.simplefilter("ignore")
        return torch.load(path, map_location="cpu", weights_only=True)


def load_failure(exc: BaseException) -> str:
    """One line for a failed load: the global a weights-only unpickler refused, else the first
    meaningful line of the error (torch's refusal starts with a paragraph of advice)."""
    text = str(exc)
    found = _REFUSED.search(text)
    if found:
        return f"refused: it names {found[1]}, which a weights file never needs"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if lines and lines[0].startswith("Weights only load failed"):
        lines = lines[1:]
    first = lines[0] if lines else type(exc).__name__
    return first if len(first) <= 200 else first[:197] + "..."


def weights_digest(named: Iterable[tuple[str, torch.Tensor]]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: a model or
    transcoder set is known by all of its weights, so two that differ anywhere never share an
    id (1.4 GB/s here: 0.35 s for GPT-2 small, 1.3 s for its 12 transcoders)."""
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().cpu().contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


def first_non_finite(named: Iterable[tuple[str, torch.Tensor]]) -> str | None:
    """The name of the first floating tensor holding NaN or infinity, else None. A float64 sum is
    non-finite exactly when some entry is (no float32 sum overflows it), and it is ~10x faster
    than an elementwise test."""
    for name, tensor in named:
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor.sum(dtype=torch.float64))):
            return name
    return None
