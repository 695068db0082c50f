"""Checks that run before any work: one clear line per problem, naming the file."""

from __future__ import annotations

from collections.abc import Mapping

from circuitstore.ingest.transcoder.files import RawTranscoderFile
from circuitstore.ingest.transcoder.tensorfile import value_problem
from circuitstore.ingest.transcoder.types import INPUT_HOOKS, PARAM_NAMES, TranscoderSet
from circuitstore.schema.errors import TranscoderLoadError


def expect_shapes(
    label: str,
    actual: Mapping[str, tuple[int, ...]],
    expected: Mapping[str, tuple[int, ...]],
    origin: str,
) -> None:
    """Each tensor named in `expected` that the file holds has that shape; `origin` says where
    the expected sizes come from (e.g. "from W_enc (32, 16)")."""
    for name, shape in expected.items():
        if name in actual and tuple(actual[name]) != shape:
            raise TranscoderLoadError(
                f"{label}: {name} has shape {tuple(actual[name])}, expected {shape} ({origin})"
            )


def expect_2d(label: str, name: str, shape: tuple[int, ...]) -> tuple[int, int]:
    """The two sizes of a matrix the file must hold as one."""
    if len(shape) != 2:
        raise TranscoderLoadError(f"{label}: {name} has shape {tuple(shape)}, expected 2-D")
    return shape[0], shape[1]


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
        dtype = raw.tensors[p].dtype
        if not dtype.is_floating_point:
            raise TranscoderLoadError(f"{name}: {p} has dtype {dtype}, expected a floating dtype")
    for p in PARAM_NAMES:
        problem = value_problem(raw.tensors[p])
        if problem is not None:
            raise TranscoderLoadError(f"{name}: {p} {problem}")
    shapes = {p: tuple(t.shape) for p, t in raw.tensors.items()}
    d_in, d_tc = expect_2d(name, "W_enc", shapes["W_enc"])
    expected = {"b_enc": (d_tc,), "W_dec": (d_tc, d_in), "b_dec": (d_in,), "b_dec_out": (d_in,)}
    actual = {p: shapes[p] for p in expected}
    expect_shapes(name, actual, expected, f"from W_enc {(d_in, d_tc)}")


def validate_against(tcs: TranscoderSet, *, n_layers: int, d_model: int) -> None:
    """The set fits the model: one transcoder per layer, reading ln2's normalised output or the
    MLP's input, as wide as the model, and a cross-layer set writing to every later layer."""
    if tcs.n_layers < n_layers:
        raise TranscoderLoadError(
            f"{tcs.source}: no transcoder file for layer {tcs.n_layers} "
            f"(the model has {n_layers} layers)"
        )
    if tcs.n_layers > n_layers:
        raise TranscoderLoadError(
            f"{tcs.source}: {tcs.n_layers} transcoder layers for a model with {n_layers} layers"
        )
    cross_layer = tcs.cross_layer
    for tc in tcs.transcoders:
        hooks = [hook(tc.layer) for hook in INPUT_HOOKS.values()]
        if tc.hook_point not in hooks:
            raise TranscoderLoadError(
                f"{tc.source}: hook point {tc.hook_point}, expected {' or '.join(hooks)}"
            )
        if tc.d_model != d_model:
            raise TranscoderLoadError(
                f"{tc.source}: d_in {tc.d_model} but the model's d_model is {d_model}"
            )
        if cross_layer and tc.n_ahead != n_layers - 1 - tc.layer:
            raise TranscoderLoadError(
                f"{tc.source}: layer {tc.layer} writes to {tc.n_ahead} later layers, expected "
                f"{n_layers - 1 - tc.layer} (a cross-layer transcoder writes to every later layer)"
            )
