"""circuit-tracer's per-layer layout (decoderesearch/circuit-tracer v0.5.0) and the config.yaml
its cross-layer layout shares.

config.yaml (read by `circuit_tracer/utils/hf_utils.py`, `load_transcoders`): `model_kind`
(transcoder_set or cross_layer_transcoder), `feature_input_hook` and `feature_output_hook`
(TransformerLens hook names relative to `blocks.L.`), optionally `transcoders` (one path or
`hf://` URI per layer, else the folder's `layer_{i}.safetensors`), `activation` (relu or topk,
with `k`; without it a stored threshold means JumpReLU) and `model_name`.

`layer_{i}.safetensors` (`transcoder/single_layer_transcoder.py`, `to_safetensors` and
`load_transcoder`): W_enc [d_tc, d_model], W_dec [d_tc, d_model], b_enc [d_tc], b_dec [d_model],
optionally `activation_function.threshold` [d_tc] and W_skip [d_model, d_model] (and `k` for
TopK, written by its `to_safetensors` though its loader refuses it). Its formula:
pre = x @ W_enc.T + b_enc (no input bias), out = z @ W_dec + b_dec + x @ W_skip.T. So here:
W_enc and W_skip transposed, b_dec -> b_dec_out, our b_dec zero. A `.npz` entry of the
`transcoders` list is a Gemma Scope file (`load_gemma_scope_transcoder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors.torch import save_file

from circuitstore.ingest.transcoder import gemma_scope
from circuitstore.ingest.transcoder.common import (
    OUTPUT_HOOKS,
    ReadOptions,
    ct_input_hook,
    folded_b_enc,
    layer_sequence,
    one_kind,
    output_hook,
)
from circuitstore.ingest.transcoder.tensorfile import SafetensorsFile
from circuitstore.ingest.transcoder.types import (
    INPUT_HOOKS,
    RELU,
    Activation,
    Transcoder,
    TranscoderSet,
)
from circuitstore.ingest.transcoder.validate import expect_2d, expect_shapes
from circuitstore.schema.errors import TranscoderLoadError

CONFIG = "config.yaml"
KINDS = ("transcoder_set", "cross_layer_transcoder")
REQUIRED = ("model_kind", "feature_input_hook", "feature_output_hook")
ACTIVATION_NAMES = ("relu", "jumprelu", "topk")
THRESHOLD = "activation_function.threshold"
LAYER_FILE = re.compile(r"layer_(\d+)\.safetensors")
PLT_TENSORS = ("W_enc", "W_dec", "b_enc", "b_dec")


@dataclass(frozen=True)
class CtConfig:
    """A checked config.yaml."""

    kind: str
    input_hook: str
    output_hook: str
    activation: str | None
    k: int | None
    transcoders: tuple[str, ...] | None
    raw: dict[str, Any]

    @property
    def model_name(self) -> str:
        """The model the set was trained on, where the config says."""
        return str(self.raw.get("model_name") or "")

    def hook_point(self, layer: int) -> str:
        """Our name for the hook layer `layer`'s transcoder reads."""
        return INPUT_HOOKS[self.input_hook](layer)

    def cfg(self, layer: int, file: str, layout: str) -> dict[str, Any]:
        """A layer's record of where it came from (kept on the Transcoder)."""
        kept = {k: v for k, v in self.raw.items() if k != "transcoders"}
        return {
            **kept,
            "layout": layout,
            "file": file,
            "hook_point": self.hook_point(layer),
            "out_hook_point": f"blocks.{layer}.{self.output_hook}",
        }


def read_config(folder: Path) -> CtConfig:
    """The folder's config.yaml, checked: each problem in one line naming the key."""
    path = folder / CONFIG
    try:
        raw = yaml.safe_load(path.read_text())
    except Exception as exc:
        raise TranscoderLoadError(f"{CONFIG}: cannot read it ({exc.__class__.__name__})") from None
    if not isinstance(raw, dict):
        raise TranscoderLoadError(f"{CONFIG}: expected a mapping of keys, got {type(raw).__name__}")
    missing = [k for k in REQUIRED if k not in raw]
    if missing:
        raise TranscoderLoadError(
            f"{CONFIG}: missing {', '.join(missing)} (needs {', '.join(REQUIRED)})"
        )
    if raw["model_kind"] not in KINDS:
        raise TranscoderLoadError(
            f"{CONFIG}: model_kind {raw['model_kind']!r} unknown, "
            f"expected one of {', '.join(KINDS)}"
        )
    return CtConfig(
        kind=raw["model_kind"],
        input_hook=_input_hook(raw["feature_input_hook"]),
        output_hook=_output_hook(raw["feature_output_hook"]),
        activation=_activation(raw.get("activation")),
        k=_k(raw),
        transcoders=_listed(raw.get("transcoders")),
        raw=raw,
    )


def _input_hook(name: object) -> str:
    if name not in INPUT_HOOKS:
        raise TranscoderLoadError(
            f"{CONFIG}: feature_input_hook {name!r} is not supported: a transcoder here reads "
            f"{', '.join(INPUT_HOOKS)}"
        )
    return str(name)


def _output_hook(name: object) -> str:
    if name not in OUTPUT_HOOKS:
        raise TranscoderLoadError(
            f"{CONFIG}: feature_output_hook {name!r} is not an MLP output "
            f"(expected {' or '.join(OUTPUT_HOOKS)})"
        )
    return str(name)


def _activation(name: object) -> str | None:
    if name is None:
        return None
    normal = str(name).lower().replace("_", "")
    if normal not in ACTIVATION_NAMES:
        raise TranscoderLoadError(
            f"{CONFIG}: activation {name!r} unknown, expected one of {', '.join(ACTIVATION_NAMES)}"
        )
    return normal


def _k(raw: dict[str, Any]) -> int | None:
    k = raw.get("k")
    if _activation(raw.get("activation")) == "topk" and k is None:
        raise TranscoderLoadError(f"{CONFIG}: activation topk needs k (features kept per position)")
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k <= 0):
        raise TranscoderLoadError(f"{CONFIG}: k is {k!r}, expected a positive integer")
    return k


def _listed(entries: object) -> tuple[str, ...] | None:
    if entries is None:
        return None
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries) or not entries:
        raise TranscoderLoadError(
            f"{CONFIG}: transcoders must be a list of paths or hf:// URIs, one per layer"
        )
    return tuple(entries)


def hub_files(config: CtConfig) -> list[str]:
    """What a hub folder with this config needs besides config.yaml (files a `transcoders` list
    names are fetched one by one when read)."""
    return [CONFIG] if config.transcoders is not None else [CONFIG, "layer_*.safetensors"]


def read_plt(folder: Path, options: ReadOptions) -> TranscoderSet:
    """A circuit-tracer per-layer set (config.yaml with model_kind transcoder_set)."""
    config = read_config(folder)
    if config.kind != "transcoder_set":
        raise TranscoderLoadError(
            f"{CONFIG}: model_kind {config.kind}, but the folder holds no W_enc_0.safetensors"
        )
    files = _layer_files(folder, config)
    tcs = tuple(_read_layer(*file, layer, config, options) for layer, file in enumerate(files))
    return TranscoderSet(tcs, str(folder), config.model_name)


def _layer_files(folder: Path, config: CtConfig) -> list[tuple[Path, str]]:
    """Each layer's file and how errors name it (a listed file by its entry: its cached path
    says nothing about the layer)."""
    if config.transcoders is None:
        found = {int(m[1]): p for p in folder.iterdir() if (m := LAYER_FILE.fullmatch(p.name))}
        return [(p, p.name) for p in layer_sequence(found, folder.name, "layer_{}.safetensors")]
    files = []
    for layer, entry in enumerate(config.transcoders):
        if entry.startswith("hf://"):
            from circuitstore.ingest.transcoder import hub

            path = hub.resolve_uri(entry)
        else:
            path = folder / entry  # an absolute entry replaces the folder
        if not path.is_file():
            raise TranscoderLoadError(f"{CONFIG}: transcoders[{layer}] {entry} does not exist")
        files.append((path, entry))
    return files


def _read_layer(
    path: Path, label: str, layer: int, config: CtConfig, options: ReadOptions
) -> Transcoder:
    cfg = config.cfg(layer, label, "circuit-tracer")
    hook = config.hook_point(layer)
    if path.suffix == ".npz":
        return gemma_scope.read_npz(path, layer, options.dtype, hook, cfg, label=label)
    f = SafetensorsFile(path, label)
    f.require(PLT_TENSORS, "a circuit-tracer layer file holds W_enc, W_dec, b_enc, b_dec")
    d_tc, d = expect_2d(f.label, "W_enc", f.shape("W_enc"))
    expected = {"W_dec": (d_tc, d), "b_enc": (d_tc,), "b_dec": (d,), THRESHOLD: (d_tc,)}
    expected["W_skip"] = (d, d)
    expect_shapes(f.label, {n: f.shape(n) for n in f.entries}, expected, f"from W_enc {(d_tc, d)}")
    dt = options.dtype
    return Transcoder(
        layer=layer,
        hook_point=hook,
        W_enc=f.tensor("W_enc", dt).T,
        b_enc=f.tensor("b_enc", dt),
        W_dec=f.tensor("W_dec", dt),
        b_dec=torch.zeros(d, dtype=dt),
        b_dec_out=f.tensor("b_dec", dt),
        source=label,
        cfg=cfg,
        activation=_plt_activation(f, config, d_tc, dt),
        W_skip=f.tensor("W_skip", dt).T if "W_skip" in f else None,
    )


def _plt_activation(
    f: SafetensorsFile, config: CtConfig, d_tc: int, dtype: torch.dtype
) -> Activation:
    """What the config and the file say about how features fire, checked against each other."""
    kind = config.activation
    if THRESHOLD in f and kind in ("relu", "topk"):
        raise TranscoderLoadError(
            f"{f.label}: holds {THRESHOLD} (JumpReLU) but {CONFIG} says activation {kind}"
        )
    if "k" in f:
        k = f.integer("k")
        if kind != "topk" or k != config.k:
            said = f"activation {kind}" if kind != "topk" else f"k {config.k}"
            raise TranscoderLoadError(f"{f.label}: holds k {k} but {CONFIG} says {said}")
    if THRESHOLD in f:
        return Activation("jumprelu", threshold=f.tensor(THRESHOLD, dtype))
    if kind == "jumprelu":
        raise TranscoderLoadError(f"{f.label}: missing {THRESHOLD} ({CONFIG} says jumprelu)")
    if kind == "topk":
        assert config.k is not None  # read_config requires it
        if config.k > d_tc:
            raise TranscoderLoadError(f"{CONFIG}: k {config.k} exceeds the {d_tc} features")
        return Activation("topk", k=config.k)
    return RELU


def config_for(tcs: TranscoderSet, kind: str) -> dict[str, Any]:
    """The config.yaml a set is written with."""
    first = tcs[0]
    hooks = {(ct_input_hook(tc), output_hook(tc)) for tc in tcs.transcoders}
    if len(hooks) != 1:
        raise ValueError(f"{kind}: layers read or write different hooks {sorted(hooks)}")
    config: dict[str, Any] = {
        "model_name": tcs.model_name or "synthetic",
        "model_kind": kind,
        "feature_input_hook": ct_input_hook(first),
        "feature_output_hook": output_hook(first),
    }
    activation = one_kind(tcs.transcoders, kind)
    if activation == "topk":
        ks = {tc.activation.k for tc in tcs.transcoders}
        if len(ks) != 1:
            raise ValueError(f"{kind}: layers keep different k {sorted(map(str, ks))}")
        config.update(activation="topk", k=ks.pop())
    elif activation == "relu":
        config["activation"] = "relu"
    return config


def write_config(config: dict[str, Any], folder: Path) -> Path:
    """config.yaml in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CONFIG
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def save_plt(tcs: TranscoderSet, folder: Path) -> list[Path]:
    """Write a per-layer set as circuit-tracer stores one: config.yaml and layer_{i}.safetensors
    (the file's formula has no input bias, so b_dec is folded into b_enc)."""
    if tcs.cross_layer:
        raise ValueError("circuit-tracer's per-layer layout has no cross-layer decoders: use clt")
    paths = [write_config(config_for(tcs, "transcoder_set"), folder)]
    for tc in tcs.transcoders:
        tensors = {
            "W_enc": tc.W_enc.T.contiguous(),
            "W_dec": tc.W_dec.contiguous(),
            "b_enc": folded_b_enc(tc),
            "b_dec": tc.b_dec_out.contiguous(),
        }
        if tc.activation.threshold is not None:
            tensors[THRESHOLD] = tc.activation.threshold.contiguous()
        if tc.W_skip is not None:
            tensors["W_skip"] = tc.W_skip.T.contiguous()
        path = folder / f"layer_{tc.layer}.safetensors"
        save_file({k: v.detach().clone() for k, v in tensors.items()}, str(path))
        paths.append(path)
    return paths
