"""The transcoder file layouts, as a table: how to recognise each from a folder's file names, how
to read and write it, which files of a hub repo it needs, and the hub repos known to use it.
`load_transcoders` dispatches through it for a local folder or a HuggingFace repo.

- clt: config.yaml (model_kind: cross_layer_transcoder), W_enc_{i} and W_dec_{i}.safetensors;
  e.g. mntss/clt-gemma-2-2b-426k.
- circuit-tracer: config.yaml (model_kind: transcoder_set), layer_{i}.safetensors or a
  `transcoders:` list; e.g. mntss/gemma-scope-transcoders, mwhanna/qwen3-4b-transcoders.
- gemma-scope: layer_{i}/width_{w}/average_l0_{n}/params.npz; google/gemma-scope-2b-pt-transcoders.
- published: final_sparse_autoencoder_*.pt; pchlenski/gpt2-transcoders.
- safetensors (ours): blocks.{L}.ln2.hook_normalized.safetensors.

Of the circuit-tracer sets, Gemma Scope's read ln2.hook_normalized and Qwen3's mlp.hook_in; the
Llama-3.2-1B per-layer set and the cross-layer sets read hook_resid_mid, the residual stream
before the norm (circuit-tracer's former in-repo config for the former; third-party quotes of
the hub configs for the latter).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from circuitstore.ingest.transcoder import circuit_tracer, clt, gemma_scope, hub, legacy
from circuitstore.ingest.transcoder.common import ReadOptions
from circuitstore.ingest.transcoder.files import save_published, save_safetensors
from circuitstore.ingest.transcoder.types import TranscoderSet
from circuitstore.schema.errors import TranscoderLoadError


@dataclass(frozen=True)
class Layout:
    """One file layout: `recognise` sees a folder's file names (paths relative to it), `read`
    turns the folder into a set, `hub_files` says which files of a hub repo to fetch (given
    the repo's folder and the read options), `write` saves a set in it."""

    name: str
    files: str
    recognise: Callable[[frozenset[str]], bool]
    read: Callable[[Path, ReadOptions], TranscoderSet]
    hub_files: Callable[[hub.HubRef, ReadOptions], list[str]]
    write: Callable[..., list[Path]]
    hub_repos: tuple[str, ...] = ()
    chooses_files: bool = False  # whether l0 and width apply


def _ct_hub_files(ref: hub.HubRef, _: ReadOptions) -> list[str]:
    return circuit_tracer.hub_files(circuit_tracer.read_config(hub.file(ref, "config.yaml").parent))


def _gemma_hub_files(ref: hub.HubRef, options: ReadOptions) -> list[str]:
    return gemma_scope.choose(hub.list_files(ref), options, str(ref))


def _per_layer_writer(write: Callable[..., Path]) -> Callable[..., list[Path]]:
    """A writer of one file per layer for formats that hold ReLU transcoders and nothing more."""

    def write_set(tcs: TranscoderSet, folder: Path) -> list[Path]:
        folder.mkdir(parents=True, exist_ok=True)
        for tc in tcs.transcoders:
            if tc.activation.kind != "relu" or tc.W_skip is not None or tc.n_ahead:
                raise ValueError(f"layer {tc.layer}: this layout holds ReLU transcoders only")
        return [write(tc, folder, tcs.model_name or "synthetic") for tc in tcs.transcoders]

    return write_set


LAYOUTS: tuple[Layout, ...] = (
    Layout(
        "clt",
        "config.yaml (model_kind: cross_layer_transcoder), W_enc_{i}.safetensors, "
        "W_dec_{i}.safetensors",
        lambda names: circuit_tracer.CONFIG in names and "W_enc_0.safetensors" in names,
        clt.read_clt,
        lambda _ref, _options: clt.HUB_FILES,
        clt.save_clt,
        ("mntss/clt-gemma-2-2b-426k", "mntss/clt-gemma-2-2b-2.5M", "mntss/clt-llama-3.2-1b-524k"),
    ),
    Layout(
        "circuit-tracer",
        "config.yaml (model_kind: transcoder_set), layer_{i}.safetensors or a transcoders: list",
        lambda names: circuit_tracer.CONFIG in names,
        circuit_tracer.read_plt,
        _ct_hub_files,
        circuit_tracer.save_plt,
        (
            "mntss/gemma-scope-transcoders",
            "mwhanna/gemma-scope-transcoders",
            "mntss/transcoder-Llama-3.2-1B",
            "mwhanna/qwen3-0.6b-transcoders-lowl0",
            "mwhanna/qwen3-1.7b-transcoders-lowl0",
            "mwhanna/qwen3-4b-transcoders",
            "mwhanna/qwen3-8b-transcoders",
            "mwhanna/qwen3-14b-transcoders-lowl0",
        ),
    ),
    Layout(
        "gemma-scope",
        gemma_scope.GLOB,
        gemma_scope.recognise,
        gemma_scope.read_gemma_scope,
        _gemma_hub_files,
        gemma_scope.save_gemma_scope,
        ("google/gemma-scope-2b-pt-transcoders",),
        chooses_files=True,
    ),
    Layout(
        "published",
        "final_sparse_autoencoder_{model}_{hook}_{d}.pt",
        legacy.is_published,
        legacy.read_legacy,
        lambda _ref, _options: ["*.pt"],
        _per_layer_writer(save_published),
        ("pchlenski/gpt2-transcoders",),
    ),
    Layout(
        "safetensors",
        "blocks.{L}.{hook}.safetensors",
        legacy.is_safetensors,
        legacy.read_legacy,
        lambda _ref, _options: ["*.safetensors"],
        _per_layer_writer(save_safetensors),
    ),
)
BY_NAME = {layout.name: layout for layout in LAYOUTS}


def detect(label: str, names: Iterable[str]) -> Layout:
    """The first layout that recognises these file names."""
    found = frozenset(names)
    for layout in LAYOUTS:
        if layout.recognise(found):
            return layout
    expected = "; ".join(f"{layout.name}: {layout.files}" for layout in LAYOUTS)
    raise TranscoderLoadError(f"{label}: no transcoder files (expected one of {expected})")


def folder_names(folder: Path) -> list[str]:
    """A folder's file names, with Gemma Scope's nested parameter files as relative paths."""
    nested = (p.relative_to(folder).as_posix() for p in folder.glob(gemma_scope.GLOB))
    return [p.name for p in folder.iterdir()] + list(nested)


def load_transcoders(
    source: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    l0: int | Sequence[int] | None = None,
    width: str | None = None,
) -> TranscoderSet:
    """Every layer's transcoder from a folder in any layout of `LAYOUTS`, or from a HuggingFace
    repo (`owner/name[/folder][@revision]`, through the cache, offline once cached) when no such
    folder exists. `dtype` is the dtype to hold the set in (read tensor by tensor); `l0` (one
    for every layer or one per layer; default the lowest) and `width` (default 16k) choose among
    Gemma Scope's files. Files are checked one by one here; `validate_against` checks the set
    against a model. Raises TranscoderLoadError in one line naming the file and the problem."""
    options = ReadOptions(dtype, l0 if l0 is None or isinstance(l0, int) else tuple(l0), width)
    folder = Path(source)
    ref = None if folder.is_dir() else hub.parse_ref(str(source))
    if ref is None:
        layout = detect(folder.name, folder_names(folder))
    else:
        layout = _known(ref.repo_id) or detect(str(ref), hub.list_files(ref))
    if (l0 is not None or width is not None) and not layout.chooses_files:
        raise TranscoderLoadError(
            f"{source}: l0 and width choose among Gemma Scope's files ({gemma_scope.GLOB}); "
            f"this is the {layout.name} layout"
        )
    if ref is not None:
        folder = hub.download(ref, layout.hub_files(ref, options))
    return replace(layout.read(folder, options), source=str(source))


def _known(repo_id: str) -> Layout | None:
    return next((layout for layout in LAYOUTS if repo_id in layout.hub_repos), None)


def save_transcoders(tcs: TranscoderSet, folder: Path, layout: str, **options: Any) -> list[Path]:
    """Write a set in one of the layouts (options: Gemma Scope's `width` and `l0`)."""
    if layout not in BY_NAME:
        raise ValueError(f"layout {layout!r} unknown, expected one of {', '.join(BY_NAME)}")
    folder.mkdir(parents=True, exist_ok=True)
    return BY_NAME[layout].write(tcs, folder, **options)
