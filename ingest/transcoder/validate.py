"""Checks that run before any work: one clear line per problem, naming the file."""

from __future__ import annotations

from circuitstore.ingest.safeload import first_degenerate
from circuitstore.ingest.transcoder.files import RawTranscoderFile
from circuitstore.ingest.transcoder.types import (
    INPUT_HOOKS,
    PARAM_NAMES,
    TranscoderSet,
    expected_hook_point,
)
from circuitstore.schema.errors import TranscoderLoadError


def check_file(raw: RawTranscoderFile, layer: int, hook: str) -> None:
    """Self-consistency of one file: all five tensors, floating, finite, shapes that agree."""
    name = raw.path.name
    missing = [p for p in PARAM_NAMES if p not in raw.tensors]
    if missing:
        raise TranscoderLoadError(f"{name}: missing tensors {', '.join(missing)}")
    cfg_hook = raw.cfg.get("hook_point")
    if cfg_hook is not None and str(cfg_hook) != hook:
        raise TranscoderLoadError(f"{name}: file name says hook {hook} but its cfg says {cfg_hook}")
    cfg_layer = raw.cfg.get("hook_point_layer", raw.cfg.get("layer"))
    if cfg_layer is not None and int(cfg_layer) != layer:
        raise TranscoderLoadError(
            f"{name}: file name says layer {layer} but its cfg says {cfg_layer}"
        )
    for p in PARAM_NAMES:
        t = raw.tensors[p]
        if not t.is_floating_point():
            raise TranscoderLoadError(f"{name}: {p} has dtype {t.dtype}, expected a floating dtype")
    bad = first_degenerate((p, raw.tensors[p]) for p in PARAM_NAMES)
    if bad is not None:
        raise TranscoderLoadError(f"{name}: {bad[0]} {bad[1]}")
    _check_shapes(raw)


def _check_shapes(raw: RawTranscoderFile) -> None:
    t = raw.tensors
    if t["W_enc"].ndim != 2:
        raise TranscoderLoadError(
            f"{raw.path.name}: W_enc has shape {tuple(t['W_enc'].shape)}, expected 2-D"
        )
    d_in, d_tc = t["W_enc"].shape
    expected = {
        "b_enc": (d_tc,),
        "W_dec": (d_tc, d_in),
        "b_dec": (d_in,),
        "b_dec_out": (d_in,),
    }
    for p, shape in expected.items():
        if tuple(t[p].shape) != shape:
            raise TranscoderLoadError(
                f"{raw.path.name}: {p} has shape {tuple(t[p].shape)}, expected {shape} "
                f"(from W_enc {(d_in, d_tc)})"
            )


def validate_against(tcs: TranscoderSet, *, n_layers: int, d_model: int) -> None:
    """The set fits the model: one transcoder per layer, reading ln2's normalised output."""
    if tcs.n_layers < n_layers:
        raise TranscoderLoadError(
            f"{tcs.source}: no transcoder file for layer {tcs.n_layers} "
            f"(the model has {n_layers} layers)"
        )
    if tcs.n_layers > n_layers:
        raise TranscoderLoadError(
            f"{tcs.source}: {tcs.n_layers} transcoder layers for a model with {n_layers} layers"
        )
    for tc in tcs.transcoders:
        if tc.hook_point not in (hook(tc.layer) for hook in INPUT_HOOKS):
            raise TranscoderLoadError(
                f"{tc.source}: hook point {tc.hook_point}, expected {expected_hook_point(tc.layer)}"
            )
        if tc.d_model != d_model:
            raise TranscoderLoadError(
                f"{tc.source}: d_in {tc.d_model} but the model's d_model is {d_model}"
            )
