"""Reading and writing single transcoder files in the two supported layouts.

Published layout (pchlenski/gpt2-transcoders), one file per layer:
``final_sparse_autoencoder_{model_name}_{hook_point}_{d_sae}.pt``, a torch pickle of
``{"cfg": sae_training.config.LanguageModelSAERunnerConfig, "state_dict": OrderedDict(W_enc,
b_enc, W_dec, b_dec, b_dec_out)}``, and optionally ``..._log_feature_sparsity.pt`` beside it.
The cfg class lives in a package we neither have nor want (it imports wandb), so torch's
`weights_only` unpickler reads the files, with that one class mapped to :class:`ConfigRecord`;
any other global (a function, a class with a `__reduce__`) is refused before it is looked up.

Safetensors layout (ours): ``blocks.{L}.ln2.hook_normalized.safetensors`` holding the same five
tensors under the same names and shapes (plus ``log_feature_sparsity`` when known); the file's
metadata carries ``model_name``, ``hook_point`` and ``layer`` as strings.
"""

from __future__ import annotations

import sys
import types
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open, save_file

from circuitstore.ingest.safeload import load_failure, load_weights_only
from circuitstore.ingest.transcoder.types import PARAM_NAMES, Transcoder
from circuitstore.schema.errors import TranscoderLoadError

CFG_MODULE = "sae_training.config"
CFG_CLASS = "LanguageModelSAERunnerConfig"


class ConfigRecord:
    """Plain stand-in for the published cfg object: keeps its fields, runs none of its code."""

    def __setstate__(self, state: Any) -> None:
        # Dataclasses pickle their __dict__ (sometimes as a (dict, slots) pair).
        if isinstance(state, tuple):
            state = {k: v for part in state if isinstance(part, dict) for k, v in part.items()}
        self.__dict__.update(state if isinstance(state, dict) else {})

    def as_dict(self) -> dict[str, Any]:
        """The config as a plain dict."""
        return dict(self.__dict__)


# The one class the published files need beyond what `weights_only` allows (tensors, OrderedDict,
# dtypes, devices, plain containers): their cfg, read as a plain record.
_CFG_GLOBAL = (ConfigRecord, f"{CFG_MODULE}.{CFG_CLASS}")


def _load(path: Path, what: str) -> Any:
    try:
        return load_weights_only(path, [_CFG_GLOBAL])
    except Exception as exc:  # pickle, zip and torch errors alike: the file is unusable
        raise TranscoderLoadError(
            f"{path.name}: cannot read {what} ({load_failure(exc)})"
        ) from None


@dataclass(frozen=True)
class RawTranscoderFile:
    """What one file holds, before any checks against a model."""

    path: Path
    tensors: dict[str, torch.Tensor]
    cfg: dict[str, Any] = field(default_factory=dict)


def read_published(path: Path) -> RawTranscoderFile:
    """Read one published per-layer pickle, safely and onto the CPU (its cfg says cuda)."""
    obj = _load(path, "transcoder file")
    state = obj.get("state_dict") if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise TranscoderLoadError(
            f"{path.name}: expected a dict with 'cfg' and a 'state_dict' of tensors"
        )
    cfg = obj.get("cfg")
    if isinstance(cfg, ConfigRecord):
        cfg_dict = cfg.as_dict()
    elif isinstance(cfg, dict) or cfg is None:
        cfg_dict = dict(cfg or {})
    else:
        raise TranscoderLoadError(
            f"{path.name}: 'cfg' is a {type(cfg).__name__}, expected a record"
        )
    return RawTranscoderFile(path, dict(state), cfg_dict)


def read_sparsity(path: Path) -> torch.Tensor:
    """A published transcoder's log10 feature firing frequencies."""
    t = _load(path, "feature sparsity")
    if not isinstance(t, torch.Tensor):
        raise TranscoderLoadError(f"{path.name}: expected a tensor of log10 firing frequencies")
    return t


def read_safetensors(path: Path) -> RawTranscoderFile:
    """A transcoder saved as safetensors, with its metadata."""
    try:
        tensors = load_file(str(path), device="cpu")
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
    except Exception as exc:
        raise TranscoderLoadError(
            f"{path.name}: cannot read safetensors file ({load_failure(exc)})"
        ) from None
    return RawTranscoderFile(path, tensors, meta)


def _stand_in_cfg_class() -> type:
    """A class that pickles as sae_training.config.LanguageModelSAERunnerConfig."""
    return type(CFG_CLASS, (), {"__module__": CFG_MODULE, "__qualname__": CFG_CLASS})


def published_name(model_name: str, hook_point: str, d_sae: int) -> str:
    """The file name the published transcoders give one layer."""
    return f"final_sparse_autoencoder_{model_name}_{hook_point}_{d_sae}.pt"


def save_published(tc: Transcoder, folder: Path, model_name: str) -> Path:
    """Write one layer in the published layout (the pickle names the original cfg class)."""
    cls = _stand_in_cfg_class()
    cfg = cls()
    cfg.__dict__.update(
        model_name=model_name,
        hook_point=tc.hook_point,
        hook_point_layer=tc.layer,
        out_hook_point=f"blocks.{tc.layer}.hook_mlp_out",
        d_in=tc.d_model,
        d_out=tc.d_model,
        d_sae=tc.d_tc,
        is_transcoder=True,
        context_size=128,
        dataset_path="synthetic",
        device="cuda",
        dtype=torch.float32,
    )
    state = OrderedDict((name, getattr(tc, name).detach().clone()) for name in PARAM_NAMES)
    path = folder / published_name(model_name, tc.hook_point, tc.d_tc)
    # Register the stand-in module only while pickling, so nothing else can import it.
    pkg, mod = types.ModuleType("sae_training"), types.ModuleType(CFG_MODULE)
    setattr(mod, CFG_CLASS, cls)
    pkg.config = mod  # type: ignore[attr-defined]
    saved = {k: sys.modules.get(k) for k in ("sae_training", CFG_MODULE)}
    sys.modules.update({"sae_training": pkg, CFG_MODULE: mod})
    try:
        torch.save({"cfg": cfg, "state_dict": state}, path)
    finally:
        for key, old in saved.items():
            if old is None:
                sys.modules.pop(key, None)
            else:
                sys.modules[key] = old
    if tc.log_feature_sparsity is not None:
        sparsity_path = path.with_name(path.name[: -len(".pt")] + "_log_feature_sparsity.pt")
        torch.save(tc.log_feature_sparsity.detach().clone(), sparsity_path)
    return path


def save_safetensors(tc: Transcoder, folder: Path, model_name: str) -> Path:
    """Write a transcoder as safetensors in `folder`; returns the file's path."""
    tensors = {name: getattr(tc, name).detach().contiguous() for name in PARAM_NAMES}
    if tc.log_feature_sparsity is not None:
        tensors["log_feature_sparsity"] = tc.log_feature_sparsity.detach().contiguous()
    path = folder / f"{tc.hook_point}.safetensors"
    meta = {"model_name": model_name, "hook_point": tc.hook_point, "layer": str(tc.layer)}
    save_file(tensors, str(path), metadata=meta)
    return path
