"""Tensors read one at a time, lazily where the file allows, and checked in bounded memory.

safetensors' reader (`safe_open(...).get_tensor`, safetensors 0.8) returns tensors backed by a
private memory map of the file: nothing is read until a page is touched. So when the file's dtype
is the one asked for, a tensor is returned as it is and its pages are read when the engine reads
them (clean page-cache pages, shared between processes and reclaimable); otherwise each tensor is
converted on its own, so at most one tensor ever exists in both dtypes.
`benchmarks/bench_transcoder_memory.py`, 2026-12-07, 2-core CPU machine, 8 layers of 2304 x 16384
(the bf16 set: 1153 MiB), resident set after loading above an interpreter that only imported the
loader: bf16 files as bf16, +23 MiB in 0.4 s (then file pages as rows are read: 100 decoder rows
per layer brought in 561 MiB, the kernel's readahead); float32 files as bf16, +1173 MiB, peak
+1200; Gemma Scope's float32 npz as bf16, +1159 MiB, peak +1185.

The checks (NaN, infinities, magnitudes beyond `USEFUL_MAX`) must not page a mapped tensor in:
they stream the file's bytes through a fixed 16 MiB buffer instead (the page cache holds them, not
this process): 7-10 GiB/s from the page cache, about 1 GiB/s from a cold disk on the same
machine, so a full check reads the whole set once. In-memory tensors are checked in row chunks
with `aminmax`, which allocates nothing (a float64 `sum` of a bf16 tensor allocated twice its
size).
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from circuitstore.ingest.safeload import USEFUL_MAX, load_failure
from circuitstore.schema.errors import TranscoderLoadError

CHUNK_BYTES = 16 << 20

# safetensors' dtype names for the floating dtypes a weights file may hold.
FLOAT_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
}


def _peak_problem(lo: float, hi: float) -> str | None:
    peak = max(abs(lo), abs(hi))
    if not math.isfinite(peak):  # aminmax propagates NaN
        return "contains NaN or infinite values"
    if peak > USEFUL_MAX:
        return f"reaches {peak:.3g}, beyond ±{USEFUL_MAX:.0e} (float32 attribution squares it)"
    return None


def value_problem(tensor: Tensor) -> str | None:
    """What makes an in-memory floating tensor unusable (NaN, infinity, a magnitude beyond
    ±USEFUL_MAX), else None; read in chunks of about 16 MiB, allocating nothing."""
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return None
    t = tensor.detach().reshape(1) if tensor.ndim == 0 else tensor.detach()
    row_bytes = max(1, t[0].numel() * t.element_size())
    step = max(1, CHUNK_BYTES // row_bytes)
    for start in range(0, t.shape[0], step):
        lo, hi = t[start : start + step].aminmax()
        problem = _peak_problem(float(lo), float(hi))
        if problem is not None:
            return problem
    return None


@dataclass(frozen=True)
class Entry:
    """One tensor of a safetensors file, as its header describes it."""

    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offsets in the file
    end: int


class SafetensorsFile:
    """A safetensors file read tensor by tensor; `label` names it in every error."""

    def __init__(self, path: Path, label: str | None = None) -> None:
        self.path = path
        self.label = label or path.name
        try:
            with path.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                header = json.loads(f.read(size))
        except Exception as exc:
            raise TranscoderLoadError(
                f"{self.label}: cannot read safetensors file ({load_failure(exc)})"
            ) from None
        self.metadata: dict[str, str] = dict(header.pop("__metadata__", None) or {})
        base = 8 + size
        self.entries = {
            name: Entry(
                e["dtype"],
                tuple(e["shape"]),
                base + e["data_offsets"][0],
                base + e["data_offsets"][1],
            )
            for name, e in header.items()
        }

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def shape(self, name: str) -> tuple[int, ...]:
        """The tensor's shape, from the header (nothing is read)."""
        return self.entries[name].shape

    def require(self, names: tuple[str, ...], holds: str) -> None:
        """Every name in `names` is present; `holds` says what such a file should hold."""
        missing = [n for n in names if n not in self.entries]
        if missing:
            raise TranscoderLoadError(f"{self.label}: missing {', '.join(missing)} ({holds})")

    def tensor(self, name: str, dtype: torch.dtype) -> Tensor:
        """The checked tensor in `dtype`: memory-mapped when the file already holds `dtype`."""
        entry = self.entries[name]
        if entry.dtype not in FLOAT_DTYPES:
            raise TranscoderLoadError(
                f"{self.label}: {name} has dtype {entry.dtype}, expected a floating dtype"
            )
        problem = self._stream_problem(entry)
        if problem is not None:
            raise TranscoderLoadError(f"{self.label}: {name} {problem}")
        t = self._get(name)
        return t if t.dtype == dtype else t.to(dtype)

    def integer(self, name: str) -> int:
        """A scalar integer tensor's value (TopK's k)."""
        t = self._get(name)
        if t.is_floating_point() or t.numel() != 1:
            raise TranscoderLoadError(
                f"{self.label}: {name} has dtype {t.dtype} and shape {tuple(t.shape)}, "
                "expected one integer"
            )
        return int(t.reshape(-1)[0])

    def _get(self, name: str) -> Tensor:
        from safetensors import safe_open

        try:
            with safe_open(str(self.path), framework="pt", device="cpu") as f:
                return f.get_tensor(name)
        except Exception as exc:
            raise TranscoderLoadError(
                f"{self.label}: cannot read {name} ({load_failure(exc)})"
            ) from None

    def _stream_problem(self, entry: Entry) -> str | None:
        dtype = FLOAT_DTYPES[entry.dtype]
        width = torch.empty((), dtype=dtype).element_size()
        buf = bytearray(CHUNK_BYTES)
        with self.path.open("rb") as f:
            f.seek(entry.start)
            left = entry.end - entry.start
            while left > 0:
                got = f.readinto(memoryview(buf)[: min(left, CHUNK_BYTES)])
                if not got:
                    return "is cut short (the file is truncated)"
                chunk = torch.frombuffer(buf, dtype=dtype, count=got // width)
                c_lo, c_hi = chunk.aminmax()
                problem = _peak_problem(float(c_lo), float(c_hi))
                if problem is not None:
                    return problem
                left -= got
        return None
