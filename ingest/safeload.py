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


# How torch.save's formats begin: a zip archive, or (before torch 1.6) a pickle whose first
# object is torch's magic number, 0x1950a86a20f9469cfc6c, as protocol 2 writes it.
_ZIP = b"PK\x03\x04"
_LEGACY = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def load_weights_only(path: Path, allowed: Sequence[tuple[type, str]] = ()) -> Any:
    """`torch.load` onto the CPU with the weights-only unpickler; `allowed` adds (class, the
    dotted name the file uses for it) pairs, scoped to this call. A bare pickle stream (not
    written by torch.save) is refused before torch reads it: that is how code ships as data."""
    with path.open("rb") as stream:
        head = stream.read(len(_LEGACY))
    if head[:1] == b"\x80" and not head.startswith((_ZIP, _LEGACY)):
        raise ValueError(
            "refused: a bare pickle stream, not a file torch.save wrote (a pickle can run code "
            "when read; weights are read from torch.save's formats or safetensors)"
        )
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


def weights_digest(
    named: Iterable[tuple[str, torch.Tensor]], as_dtype: torch.dtype | None = None
) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order: a model or
    transcoder set is known by all of its weights, so two that differ anywhere never share an
    id (1.4 GB/s here: 0.35 s for GPT-2 small, 1.3 s for its 12 transcoders). Floating tensors
    are hashed `as_dtype` where given, one at a time (a bfloat16 set is never copied whole)."""
    h = hashlib.sha256()
    for name, tensor in sorted(named, key=lambda item: item[0]):
        t = tensor.detach().cpu()
        if as_dtype is not None and t.is_floating_point():
            t = t.to(as_dtype)
        t = t.contiguous()
        h.update(f"{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    return h.hexdigest()


USEFUL_MAX = 1e18
"""The largest magnitude attribution can work with in float32: its square (LayerNorm's variance,
the pruner's norms) must stay below float32's 3.4e38. Real weights and activations are many
orders below it (GPT-2's largest residual entries are in the thousands)."""


def magnitude_problem(tensor: torch.Tensor) -> str | None:
    """What makes a floating tensor unusable for attribution (NaN, infinity, or values beyond
    ±:data:`USEFUL_MAX`), else None. A float64 sum is non-finite exactly when some entry is (no
    float32 sum overflows it), and it is ~10x faster than an elementwise test."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    if not bool(torch.isfinite(tensor.sum(dtype=torch.float64))):
        return "contains NaN or infinite values"
    peak = float(tensor.detach().abs().max())
    if peak > USEFUL_MAX:
        return f"reaches {peak:.3g}, beyond ±{USEFUL_MAX:.0e} (float32 attribution squares it)"
    return None


def first_degenerate(named: Iterable[tuple[str, torch.Tensor]]) -> tuple[str, str] | None:
    """(name, what is wrong) of the first tensor with a :func:`magnitude_problem`, else None."""
    for name, tensor in named:
        problem = magnitude_problem(tensor)
        if problem is not None:
            return name, problem
    return None
