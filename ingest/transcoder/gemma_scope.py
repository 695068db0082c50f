"""Gemma Scope's own layout (google/gemma-scope-2b-pt-transcoders):
`layer_{i}/width_{w}/average_l0_{n}/params.npz`, one per layer, width and L0, each holding
W_enc [d_model, d_tc], W_dec [d_tc, d_model], b_enc [d_tc], b_dec [d_model], threshold [d_tc]
(float32, np.savez).

Conventions, from circuit-tracer (decoderesearch/circuit-tracer v0.5.0):
`transcoder/single_layer_transcoder.py`, `load_gemma_scope_transcoder`, transposes W_enc to its
[d_tc, d_model] and encodes with `F.linear(x, W_enc, b_enc)`: b_dec is **not** subtracted from
the input; it is the output bias (here b_dec_out; our b_dec is zero). The input is
`ln2.hook_normalized` (the config it shipped for these files, `circuit_tracer/configs/
gemmascope-l0-0.yaml` until 2025-08, and its TransformerLens-to-HF map `utils/
tl_nnsight_mapping.py` for Gemma-2): the pre-MLP RMSNorm's output *without* its gain, which
Google's model card says is folded into the encoder. The output is `hook_mlp_out`, after the
post-MLP RMSNorm. Gemma Scope's own JumpReLU is (pre > threshold) * relu(pre), circuit-tracer's
pre * (pre > threshold); they agree for thresholds >= 0, and the threshold is read clamped at 0
so that ours equals Gemma Scope's formula for any file.

Options choose the width (default 16k) and the L0: one for every layer, one per layer, or by
default the lowest present at each layer (as circuit-tracer's config does).
"""

from __future__ import annotations

import re
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib import format as npy_format

from circuitstore.ingest.safeload import load_failure
from circuitstore.ingest.transcoder.common import OUTPUT_HOOKS, ReadOptions, folded_b_enc
from circuitstore.ingest.transcoder.tensorfile import value_problem
from circuitstore.ingest.transcoder.types import (
    Activation,
    Transcoder,
    TranscoderSet,
    expected_hook_point,
)
from circuitstore.ingest.transcoder.validate import expect_2d, expect_shapes
from circuitstore.schema.errors import TranscoderLoadError

PARAMS = re.compile(r"layer_(\d+)/width_([^/]+)/average_l0_(\d+)/params\.npz")
GLOB = "layer_*/width_*/average_l0_*/params.npz"
KEYS = ("W_enc", "W_dec", "b_enc", "b_dec", "threshold")
DEFAULT_WIDTH = "16k"


def recognise(names: frozenset[str]) -> bool:
    """Whether a folder's files (relative paths) include Gemma Scope parameter files."""
    return any(PARAMS.fullmatch(n) for n in names)


def choose(names: Iterable[str], options: ReadOptions, label: str) -> list[str]:
    """The params.npz to read for each layer (relative paths), by width and L0."""
    index: dict[int, dict[str, set[int]]] = {}
    for name in names:
        if m := PARAMS.fullmatch(name):
            index.setdefault(int(m[1]), {}).setdefault(m[2], set()).add(int(m[3]))
    if not index:
        raise TranscoderLoadError(f"{label}: no {GLOB}")
    n = max(index) + 1
    for layer in range(n):
        if layer not in index:
            have = ", ".join(map(str, sorted(index)))
            raise TranscoderLoadError(f"{label}: no layer_{layer} params.npz (found layers {have})")
    width = (options.width or DEFAULT_WIDTH).removeprefix("width_")
    l0s = _per_layer(options.l0, n, label)
    chosen = []
    for layer in range(n):
        widths = index[layer]
        if width not in widths:
            have = ", ".join(sorted(widths))
            raise TranscoderLoadError(
                f"{label}: layer_{layer} has no width_{width} (available widths: {have})"
            )
        available = sorted(widths[width])
        l0 = available[0] if l0s[layer] is None else l0s[layer]
        if l0 not in available:
            raise TranscoderLoadError(
                f"{label}: no layer_{layer}/width_{width}/average_l0_{l0}/params.npz "
                f"(available L0s: {', '.join(map(str, available))})"
            )
        chosen.append(f"layer_{layer}/width_{width}/average_l0_{l0}/params.npz")
    return chosen


def _per_layer(l0: int | tuple[int, ...] | None, n: int, label: str) -> Sequence[int | None]:
    if l0 is None or isinstance(l0, int):
        return [l0] * n
    if len(l0) != n:
        raise TranscoderLoadError(f"{label}: {len(l0)} L0s given for {n} layers")
    return l0


def read_gemma_scope(folder: Path, options: ReadOptions) -> TranscoderSet:
    """The chosen params.npz of each layer, as one set."""
    names = [p.relative_to(folder).as_posix() for p in folder.glob(GLOB)]
    tcs = []
    for layer, rel in enumerate(choose(names, options, folder.name)):
        m = PARAMS.fullmatch(rel)
        assert m is not None
        cfg = {
            "layout": "gemma-scope",
            "file": rel,
            "width": m[2],
            "average_l0": int(m[3]),
            "hook_point": expected_hook_point(layer),
            "feature_output_hook": OUTPUT_HOOKS[0],
            "out_hook_point": f"blocks.{layer}.{OUTPUT_HOOKS[0]}",
        }
        hook = expected_hook_point(layer)
        tcs.append(read_npz(folder / rel, layer, options.dtype, hook, cfg, label=rel))
    return TranscoderSet(tuple(tcs), str(folder), "")


def _headers(path: Path, label: str) -> dict[str, tuple[tuple[int, ...], np.dtype[Any]]]:
    """Each array's shape and dtype, from the .npy headers inside the zip (no data read)."""
    found = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with zf.open(info) as member:
                    version = npy_format.read_magic(member)
                    read = (
                        npy_format.read_array_header_1_0
                        if version == (1, 0)
                        else npy_format.read_array_header_2_0
                    )
                    shape, _, dtype = read(member)
                found[info.filename[: -len(".npy")]] = (tuple(shape), dtype)
    except Exception as exc:
        raise TranscoderLoadError(f"{label}: cannot read npz ({load_failure(exc)})") from None
    return found


def read_npz(
    path: Path,
    layer: int,
    dtype: torch.dtype,
    hook_point: str,
    cfg: dict[str, Any],
    *,
    label: str | None = None,
) -> Transcoder:
    """One Gemma Scope params.npz, read array by array (each float32 array is converted to
    `dtype` before the next is read)."""
    label = label or path.name
    headers = _headers(path, label)
    missing = [k for k in KEYS if k not in headers]
    if missing:
        raise TranscoderLoadError(
            f"{label}: missing {', '.join(missing)} (Gemma Scope's params.npz holds "
            f"{', '.join(KEYS)})"
        )
    d, d_tc = expect_2d(label, "W_enc", headers["W_enc"][0])
    expected = {"W_dec": (d_tc, d), "b_enc": (d_tc,), "b_dec": (d,), "threshold": (d_tc,)}
    expect_shapes(label, {k: h[0] for k, h in headers.items()}, expected, f"from W_enc {(d, d_tc)}")
    with np.load(path, allow_pickle=False) as npz:
        t = {key: _array(npz, key, headers[key][1], dtype, label) for key in KEYS}
    return Transcoder(
        layer=layer,
        hook_point=hook_point,
        W_enc=t["W_enc"],
        b_enc=t["b_enc"],
        W_dec=t["W_dec"],
        b_dec=torch.zeros(d, dtype=dtype),
        b_dec_out=t["b_dec"],
        source=label,
        cfg=cfg,
        activation=Activation("jumprelu", threshold=t["threshold"].clamp(min=0)),
    )


def _array(
    npz: Any, key: str, file_dtype: np.dtype[Any], dtype: torch.dtype, label: str
) -> torch.Tensor:
    if file_dtype.kind != "f":
        raise TranscoderLoadError(
            f"{label}: {key} has dtype {file_dtype}, expected a floating dtype"
        )
    t = torch.from_numpy(npz[key])
    problem = value_problem(t)
    if problem is not None:
        raise TranscoderLoadError(f"{label}: {key} {problem}")
    return t.to(dtype)


def save_gemma_scope(
    tcs: TranscoderSet, folder: Path, *, width: str = DEFAULT_WIDTH, l0: int | Sequence[int] = 10
) -> list[Path]:
    """Write each layer as Gemma Scope's params.npz (float32, b_dec folded into b_enc); the set
    must read the normalised input with JumpReLU thresholds >= 0 (or ReLU) and no skip."""
    l0s = [l0] * tcs.n_layers if isinstance(l0, int) else list(l0)
    paths = []
    for tc, n in zip(tcs.transcoders, l0s, strict=True):
        threshold = tc.activation.threshold
        if threshold is None and tc.activation.kind != "relu":
            raise ValueError(f"layer {tc.layer}: Gemma Scope's files hold JumpReLU or ReLU only")
        if threshold is not None and bool((threshold < 0).any()):
            raise ValueError(f"layer {tc.layer}: Gemma Scope's JumpReLU needs thresholds >= 0")
        if tc.hook_point != expected_hook_point(tc.layer) or tc.W_skip is not None or tc.n_ahead:
            raise ValueError(
                f"layer {tc.layer}: Gemma Scope's files read ln2.hook_normalized, per layer, "
                "without a skip connection"
            )
        arrays = {
            "W_enc": tc.W_enc,
            "W_dec": tc.W_dec,
            "b_enc": folded_b_enc(tc),
            "b_dec": tc.b_dec_out,
            "threshold": torch.zeros(tc.d_tc) if threshold is None else threshold,
        }
        path = folder / f"layer_{tc.layer}/width_{width}/average_l0_{n}/params.npz"
        path.parent.mkdir(parents=True, exist_ok=True)
        numpy_arrays = {k: v.detach().float().contiguous().numpy() for k, v in arrays.items()}
        np.savez(path, **numpy_arrays)  # type: ignore[arg-type]
        paths.append(path)
    return paths
