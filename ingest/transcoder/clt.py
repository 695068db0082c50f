"""circuit-tracer's cross-layer transcoder layout (`transcoder/cross_layer_transcoder.py`,
`to_safetensors` and `_load_state_dict`, decoderesearch/circuit-tracer v0.5.0).

A folder with config.yaml (model_kind: cross_layer_transcoder) and, for each layer i of n:
`W_enc_{i}.safetensors` holding W_enc_{i} [d_tc, d_model], b_enc_{i} [d_tc], b_dec_{i} [d_model]
and threshold_{i} [d_tc] (JumpReLU, when layer 0's file has one; else ReLU), and
`W_dec_{i}.safetensors` holding W_dec_{i} [d_tc, n - i, d_model], where W_dec_{i}[:, j] is what
layer i's features write into layer i + j's MLP output. Its formula: pre_i = x_i @ W_enc_i.T +
b_enc_i (no input bias); the output of layer L is sum over i <= L of z_i @ W_dec_i[:, L - i],
plus b_dec_L: b_dec_{i} is the bias of layer i's output, stored beside layer i's encoder. The
files hold no skip connection (the loader reads none).

Read into one Transcoder per layer: W_enc = W_enc_i.T, W_dec = W_dec_i[:, 0], W_dec_ahead =
W_dec_i[:, 1:] (None for the last layer), b_dec_out = b_dec_i, b_dec zero. The decoders are
views of the memory-mapped file when its dtype is the one asked for.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from safetensors.torch import save_file

from circuitstore.ingest.transcoder.circuit_tracer import (
    CONFIG,
    CtConfig,
    config_for,
    read_config,
    write_config,
)
from circuitstore.ingest.transcoder.common import ReadOptions, folded_b_enc, layer_sequence
from circuitstore.ingest.transcoder.tensorfile import SafetensorsFile
from circuitstore.ingest.transcoder.types import RELU, Activation, Transcoder, TranscoderSet
from circuitstore.ingest.transcoder.validate import expect_2d, expect_shapes
from circuitstore.schema.errors import TranscoderLoadError

ENC_FILE = re.compile(r"W_enc_(\d+)\.safetensors")
HUB_FILES = [CONFIG, "W_enc_*.safetensors", "W_dec_*.safetensors"]


def read_clt(folder: Path, options: ReadOptions) -> TranscoderSet:
    """A cross-layer set: one Transcoder per layer, each with its decoders into later layers."""
    config = read_config(folder)
    if config.kind != "cross_layer_transcoder":
        raise TranscoderLoadError(
            f"{CONFIG}: model_kind {config.kind}, but the folder holds W_enc_0.safetensors "
            "(a cross-layer transcoder)"
        )
    if config.activation == "topk":
        raise TranscoderLoadError(
            f"{CONFIG}: activation topk, but circuit-tracer's cross-layer transcoders are "
            "ReLU or JumpReLU"
        )
    found = {int(m[1]): p for p in folder.iterdir() if (m := ENC_FILE.fullmatch(p.name))}
    encoders = layer_sequence(found, folder.name, "W_enc_{}.safetensors")
    first = SafetensorsFile(encoders[0])
    first.require(("W_enc_0",), "a cross-layer encoder file holds W_enc_i, b_enc_i, b_dec_i")
    d_tc, d = expect_2d(first.label, "W_enc_0", first.shape("W_enc_0"))
    jump = "threshold_0" in first
    n, dims = len(encoders), (d_tc, d)
    tcs = [
        _read_layer(path, i, n, dims, jump, config, options.dtype)
        for i, path in enumerate(encoders)
    ]
    return TranscoderSet(tuple(tcs), str(folder), config.model_name)


def _read_layer(
    path: Path,
    i: int,
    n: int,
    dims: tuple[int, int],
    jump: bool,
    config: CtConfig,
    dt: torch.dtype,
) -> Transcoder:
    d_tc, d = dims
    f = SafetensorsFile(path)
    names = (f"W_enc_{i}", f"b_enc_{i}", f"b_dec_{i}") + ((f"threshold_{i}",) if jump else ())
    holds = "a cross-layer encoder file holds " + ", ".join(names)
    f.require(names, holds + (" as W_enc_0.safetensors has threshold_0" if jump else ""))
    expected = {f"W_enc_{i}": (d_tc, d), f"b_enc_{i}": (d_tc,), f"b_dec_{i}": (d,)}
    expected[f"threshold_{i}"] = (d_tc,)
    expect_shapes(f.label, {k: f.shape(k) for k in f.entries}, expected, f"W_enc_0 is {dims}")
    dec_path = path.with_name(f"W_dec_{i}.safetensors")
    if not dec_path.is_file():
        raise TranscoderLoadError(f"{path.parent.name}: no W_dec_{i}.safetensors for layer {i}")
    g = SafetensorsFile(dec_path)
    g.require((f"W_dec_{i}",), f"the decoders of layer {i}")
    shape = (d_tc, n - i, d)
    expect_shapes(
        g.label,
        {k: g.shape(k) for k in g.entries},
        {f"W_dec_{i}": shape},
        f"{n} layers, W_enc_0 is {dims}",
    )
    W_dec = g.tensor(f"W_dec_{i}", dt)
    activation = Activation("jumprelu", threshold=f.tensor(f"threshold_{i}", dt)) if jump else RELU
    return Transcoder(
        layer=i,
        hook_point=config.hook_point(i),
        W_enc=f.tensor(f"W_enc_{i}", dt).T,
        b_enc=f.tensor(f"b_enc_{i}", dt),
        W_dec=W_dec[:, 0],
        W_dec_ahead=W_dec[:, 1:] if n - i > 1 else None,
        b_dec=torch.zeros(d, dtype=dt),
        b_dec_out=f.tensor(f"b_dec_{i}", dt),
        source=path.name,
        cfg=config.cfg(i, path.name, "clt"),
        activation=activation,
    )


def save_clt(tcs: TranscoderSet, folder: Path) -> list[Path]:
    """Write a cross-layer set as circuit-tracer stores one (b_dec folded into b_enc)."""
    n = tcs.n_layers
    for tc in tcs.transcoders:
        if tc.n_ahead != n - 1 - tc.layer or tc.W_skip is not None:
            raise ValueError(
                f"layer {tc.layer}: the clt layout needs decoders into all {n - 1 - tc.layer} "
                "later layers and no skip connection"
            )
    config = config_for(tcs, "cross_layer_transcoder")
    if config.get("activation") == "topk":
        raise ValueError("circuit-tracer's cross-layer transcoders are ReLU or JumpReLU")
    config.pop("activation", None)
    paths = [write_config(config, folder)]
    for tc in tcs.transcoders:
        i = tc.layer
        enc = {f"W_enc_{i}": tc.W_enc.T, f"b_enc_{i}": folded_b_enc(tc), f"b_dec_{i}": tc.b_dec_out}
        if tc.activation.threshold is not None:
            enc[f"threshold_{i}"] = tc.activation.threshold
        decoders = [tc.W_dec[:, None]] + ([tc.W_dec_ahead] if tc.W_dec_ahead is not None else [])
        dec = {f"W_dec_{i}": torch.cat(decoders, dim=1)}
        for name, tensors in ((f"W_enc_{i}", enc), (f"W_dec_{i}", dec)):
            path = folder / f"{name}.safetensors"
            save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, str(path))
            paths.append(path)
    return paths
