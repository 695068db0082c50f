"""Every transcoder layout: written by the synthetic writers in the real formats, read back into
our record, and checked against the file's own formula computed here from the file's tensors."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from circuitstore.ingest.synthetic import random_transcoders, save_transcoders
from circuitstore.ingest.transcoder import (
    LAYOUTS,
    Transcoder,
    TranscoderSet,
    load_transcoders,
    validate_against,
)
from circuitstore.ingest.transcoder.types import Activation
from circuitstore.schema.errors import TranscoderLoadError

N, D, T = 3, 16, 64
GEMMA = "layer_{}/width_16k/average_l0_{}/params.npz"


def _x(n: int = 40, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, D, generator=torch.Generator().manual_seed(seed))


def _outputs(tcs: TranscoderSet, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each layer's MLP output as our record computes it, from each layer's input: its own
    decoder, the skip, and the cross-layer decoders of the layers before it."""
    z = [tc.encode(x) for tc, x in zip(tcs.transcoders, xs, strict=True)]
    outs = []
    for layer, tc in enumerate(tcs.transcoders):
        out = tc.decode(z[layer])
        if tc.W_skip is not None:
            out = out + xs[layer] @ tc.W_skip
        for src in range(layer):
            if tcs[src].n_ahead:
                out = out + z[src] @ tcs[src].decoder_to(layer)
        outs.append(out)
    return outs


def _same(a: TranscoderSet, b: TranscoderSet) -> None:
    xs = [_x(seed=i) for i in range(a.n_layers)]
    for ta, tb, x in zip(a.transcoders, b.transcoders, xs, strict=True):
        assert ta.hook_point == tb.hook_point
        assert torch.equal(
            ta.activation.active(ta.preactivation(x)), tb.activation.active(tb.preactivation(x))
        )
        assert torch.allclose(ta.encode(x), tb.encode(x), atol=1e-5)
    for oa, ob in zip(_outputs(a, xs), _outputs(b, xs), strict=True):
        assert torch.allclose(oa, ob, atol=1e-5)


# The files' own formulas, written from circuit-tracer's and Gemma Scope's code.


def _ct_activation(pre: torch.Tensor, config: dict, threshold: torch.Tensor | None) -> torch.Tensor:
    if threshold is not None:
        return pre * (pre > threshold)
    if config.get("activation") == "topk":
        gate = torch.zeros_like(pre).scatter_(-1, pre.topk(config["k"], dim=-1).indices, 1)
        return pre * gate
    return torch.relu(pre)


def _ct_plt_outputs(folder: Path, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    outs = []
    for layer, x in enumerate(xs):
        f = load_file(folder / f"layer_{layer}.safetensors")
        pre = torch.nn.functional.linear(x, f["W_enc"], f["b_enc"])
        z = _ct_activation(pre, config, f.get("activation_function.threshold"))
        out = z @ f["W_dec"] + f["b_dec"]
        if "W_skip" in f:
            out = out + x @ f["W_skip"].T
        outs.append(out)
    return outs


def _clt_outputs(folder: Path, xs: list[torch.Tensor]) -> list[torch.Tensor]:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    n = len(xs)
    enc = [load_file(folder / f"W_enc_{i}.safetensors") for i in range(n)]
    dec = [load_file(folder / f"W_dec_{i}.safetensors")[f"W_dec_{i}"] for i in range(n)]
    z = [
        _ct_activation(x @ e[f"W_enc_{i}"].T + e[f"b_enc_{i}"], config, e.get(f"threshold_{i}"))
        for i, (x, e) in enumerate(zip(xs, enc, strict=True))
    ]
    return [
        sum(z[i] @ dec[i][:, layer - i] for i in range(layer + 1)) + enc[layer][f"b_dec_{layer}"]
        for layer in range(n)
    ]


def _gemma_outputs(folder: Path, l0s: list[int], xs: list[torch.Tensor]) -> list[torch.Tensor]:
    outs = []
    for layer, x in enumerate(xs):
        p = {
            k: torch.from_numpy(v)
            for k, v in np.load(folder / GEMMA.format(layer, l0s[layer])).items()
        }
        pre = x @ p["W_enc"] + p["b_enc"]
        z = (pre > p["threshold"]) * torch.relu(pre)
        outs.append(z @ p["W_dec"] + p["b_dec"])
    return outs


ROUND_TRIPS = {
    "ct-relu": ("circuit-tracer", {}),
    "ct-jumprelu-skip": ("circuit-tracer", {"activation": "jumprelu", "skip": True}),
    "ct-topk-mlp-in": (
        "circuit-tracer",
        {"activation": "topk", "k": 5, "input_hook": "mlp.hook_in"},
    ),
    "clt-jumprelu": ("clt", {"activation": "jumprelu", "cross_layer": True}),
    "clt-relu-mlp-in": ("clt", {"cross_layer": True, "input_hook": "mlp.hook_in"}),
    "gemma-scope": ("gemma-scope", {"activation": "jumprelu"}),
    "published": ("published", {}),
    "safetensors": ("safetensors", {}),
}
FORMULAS: dict[str, Callable[[Path, list[torch.Tensor]], list[torch.Tensor]]] = {
    "circuit-tracer": _ct_plt_outputs,
    "clt": _clt_outputs,
    "gemma-scope": lambda folder, xs: _gemma_outputs(folder, [10] * len(xs), xs),
}


@pytest.mark.parametrize("case", ROUND_TRIPS)
def test_round_trip(tmp_path: Path, case: str) -> None:
    layout, options = ROUND_TRIPS[case]
    original = random_transcoders(N, D, T, seed=7, **options)
    save_transcoders(original, tmp_path, layout=layout)
    loaded = load_transcoders(tmp_path)
    assert loaded.n_layers == N
    assert loaded.source == str(tmp_path)
    _same(original, loaded)
    assert loaded.cross_layer == original.cross_layer
    assert [tc.n_ahead for tc in loaded.transcoders] == [tc.n_ahead for tc in original.transcoders]
    if layout in FORMULAS:
        xs = [_x(seed=10 + i) for i in range(N)]
        for ours, theirs in zip(_outputs(loaded, xs), FORMULAS[layout](tmp_path, xs), strict=True):
            assert torch.allclose(ours, theirs, atol=1e-5)
        assert all(torch.count_nonzero(tc.b_dec) == 0 for tc in loaded.transcoders)


def test_clt_decoders_are_views_of_one_file_tensor(tmp_path: Path) -> None:
    tcs = random_transcoders(N, D, T, seed=2, cross_layer=True)
    save_transcoders(tcs, tmp_path, layout="clt")
    loaded = load_transcoders(tmp_path)
    W = load_file(tmp_path / "W_dec_0.safetensors")["W_dec_0"]
    assert W.shape == (T, N, D)
    assert torch.equal(loaded[0].W_dec, W[:, 0])
    assert torch.equal(loaded[0].decoder_to(2), W[:, 2])
    assert loaded[N - 1].W_dec_ahead is None
    assert (
        loaded[0].W_dec.untyped_storage().data_ptr()
        == loaded[0].W_dec_ahead.untyped_storage().data_ptr()
    )
    assert loaded[1].cfg["layout"] == "clt"
    assert loaded[1].cfg["out_hook_point"] == "blocks.1.hook_mlp_out"


def test_jumprelu_is_strict_and_topk_keeps_negative_values() -> None:
    act = Activation("jumprelu", threshold=torch.tensor([0.5, 0.5, 0.5]))
    assert act.active(torch.tensor([0.5, 0.6, -1.0])).tolist() == [False, True, False]
    # circuit-tracer's TopK has no ReLU: the k largest are active whatever their sign.
    topk = Activation("topk", k=2)
    assert topk.active(torch.tensor([[-3.0, -1.0, -2.0, -4.0]])).tolist() == [
        [False, True, True, False]
    ]


@pytest.mark.parametrize("activation", ["relu", "jumprelu", "topk"])
def test_synthetic_sets_fire_sparsely(activation: str) -> None:
    tcs = random_transcoders(2, 64, 512, seed=1, activation=activation, active_fraction=0.1)
    x = torch.randn(200, 64, generator=torch.Generator().manual_seed(0))
    fraction = float(tcs[1].activation.active(tcs[1].preactivation(x)).float().mean())
    assert 0.05 <= fraction <= 0.15
    if activation == "topk":
        assert fraction == pytest.approx(51 / 512)


def _gemma_folder(tmp_path: Path) -> Path:
    """Two widths and three L0s per layer (the lowest differs by layer)."""
    folder = tmp_path / "gemma"
    for seed, l0, width in ((1, [30, 20, 40], "16k"), (2, 50, "16k"), (3, 60, "65k")):
        tcs = random_transcoders(N, D, T, seed=seed, activation="jumprelu")
        save_transcoders(tcs, folder, layout="gemma-scope", l0=l0, width=width)
    return folder


def test_gemma_scope_l0_and_width(tmp_path: Path) -> None:
    folder = _gemma_folder(tmp_path)
    lowest = load_transcoders(folder)
    assert [tc.cfg["average_l0"] for tc in lowest.transcoders] == [30, 20, 40]
    _same(lowest, random_transcoders(N, D, T, seed=1, activation="jumprelu"))
    assert [tc.cfg["average_l0"] for tc in load_transcoders(folder, l0=50).transcoders] == [50] * N
    assert [
        tc.cfg["average_l0"] for tc in load_transcoders(folder, l0=[50, 20, 50]).transcoders
    ] == [50, 20, 50]
    wide = load_transcoders(folder, width="65k")
    assert wide[0].cfg["width"] == "65k"
    _same(wide, random_transcoders(N, D, T, seed=3, activation="jumprelu"))
    xs = [_x(seed=i) for i in range(N)]
    for ours, theirs in zip(
        _outputs(lowest, xs), _gemma_outputs(folder, [30, 20, 40], xs), strict=True
    ):
        assert torch.allclose(ours, theirs, atol=1e-5)
    assert lowest[0].hook_point == "blocks.0.ln2.hook_normalized"


# A fake HuggingFace cache, laid out as huggingface_hub writes one.


def _cache_repo(cache: Path, repo_id: str, revision: str = "a" * 40, ref: str = "main") -> Path:
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    snapshot = repo / "snapshots" / revision
    snapshot.mkdir(parents=True, exist_ok=True)
    return snapshot


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_gemma_scope_fetches_only_the_chosen_files(
    hf_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    snapshot = _cache_repo(hf_cache, "google/gemma-scope-2b-pt-transcoders")
    for path in _gemma_folder(tmp_path).rglob("*.npz"):
        target = snapshot / path.relative_to(tmp_path / "gemma")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    asked: list[list[str]] = []
    real = huggingface_hub.snapshot_download

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(kwargs.get("allow_patterns"))
        return real(*args, **kwargs)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", spy)
    tcs = load_transcoders("google/gemma-scope-2b-pt-transcoders", l0=50)
    assert [tc.cfg["average_l0"] for tc in tcs.transcoders] == [50] * N
    assert asked[-1] == [GEMMA.format(i, 50) for i in range(N)]
    assert tcs.source == "google/gemma-scope-2b-pt-transcoders"


def test_hub_config_listing_gemma_scope_files(hf_cache: Path, tmp_path: Path) -> None:
    """mntss/gemma-scope-transcoders: a config whose `transcoders:` are hf:// URIs into
    Google's repo, each resolved through the cache."""
    google = _cache_repo(hf_cache, "google/gemma-scope-2b-pt-transcoders", "b" * 40)
    for path in _gemma_folder(tmp_path).rglob("*.npz"):
        target = google / path.relative_to(tmp_path / "gemma")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(path.read_bytes())
    config = {
        "model_name": "google/gemma-2-2b",
        "model_kind": "transcoder_set",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
        "transcoders": [
            f"hf://google/gemma-scope-2b-pt-transcoders/{GEMMA.format(i, 50)}" for i in range(N)
        ],
    }
    (_cache_repo(hf_cache, "mntss/gemma-scope-transcoders") / "config.yaml").write_text(
        yaml.safe_dump(config)
    )
    tcs = load_transcoders("mntss/gemma-scope-transcoders")
    assert tcs.model_name == "google/gemma-2-2b"
    _same(tcs, random_transcoders(N, D, T, seed=2, activation="jumprelu"))
    assert tcs[2].cfg["out_hook_point"] == "blocks.2.hook_mlp_out"


def test_hub_clt_and_unknown_repo_with_folder_and_revision(hf_cache: Path) -> None:
    clt = random_transcoders(N, D, T, seed=4, cross_layer=True, activation="jumprelu")
    save_transcoders(clt, _cache_repo(hf_cache, "mntss/clt-llama-3.2-1b-524k"), layout="clt")
    _same(load_transcoders("mntss/clt-llama-3.2-1b-524k"), clt)
    plt = random_transcoders(N, D, T, seed=5, skip=True, input_hook="mlp.hook_in")
    snapshot = _cache_repo(hf_cache, "someone/transcoders", "c" * 40, ref="v2")
    save_transcoders(plt, snapshot / "qwen", layout="circuit-tracer")
    loaded = load_transcoders("someone/transcoders/qwen@v2")
    _same(loaded, plt)
    assert loaded[0].hook_point == "blocks.0.mlp.hook_in"


def test_hub_offline_through_the_environment(tmp_path: Path) -> None:
    """HF_HUB_CACHE and HF_HUB_OFFLINE as a user sets them, in a fresh interpreter."""
    cache = tmp_path / "hub"
    tcs = random_transcoders(N, D, T, seed=6, activation="topk", k=4)
    save_transcoders(
        tcs, _cache_repo(cache, "mwhanna/qwen3-4b-transcoders"), layout="circuit-tracer"
    )
    code = (
        "from circuitstore.ingest.transcoder import load_transcoders as load\n"
        "t = load('mwhanna/qwen3-4b-transcoders')\n"
        "print(t.n_layers, t[0].activation.kind, t[0].activation.k)"
    )
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == [str(N), "topk", "4"]


def test_bf16_loads_lazily_from_a_bf16_file(tmp_path: Path) -> None:
    tcs = random_transcoders(
        N, D, T, seed=8, dtype=torch.bfloat16, activation="jumprelu", skip=True
    )
    save_transcoders(tcs, tmp_path, layout="circuit-tracer")
    loaded = load_transcoders(tmp_path, dtype=torch.bfloat16)
    tc = loaded[1]
    assert {t.dtype for _, t in tc.named_tensors()} == {torch.bfloat16}
    assert torch.equal(tc.W_dec, tcs[1].W_dec)
    # The file is memory-mapped (paged in when read), not copied into this process.
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert str(tmp_path / "layer_1.safetensors") in maps.read_text()


def test_float32_files_convert_tensor_by_tensor(tmp_path: Path) -> None:
    tcs = random_transcoders(N, D, T, seed=9, cross_layer=True)
    save_transcoders(tcs, tmp_path, layout="clt")
    loaded = load_transcoders(tmp_path, dtype=torch.bfloat16)
    assert loaded[0].W_dec_ahead is not None
    assert loaded[0].W_dec_ahead.dtype == torch.bfloat16
    assert torch.equal(loaded[0].W_dec_ahead, tcs[0].W_dec_ahead.to(torch.bfloat16))


def test_layout_table_names_hub_repos() -> None:
    by_name = {layout.name: layout for layout in LAYOUTS}
    assert "google/gemma-scope-2b-pt-transcoders" in by_name["gemma-scope"].hub_repos
    assert "mntss/clt-gemma-2-2b-426k" in by_name["clt"].hub_repos
    assert "mntss/gemma-scope-transcoders" in by_name["circuit-tracer"].hub_repos
    assert "mwhanna/qwen3-4b-transcoders" in by_name["circuit-tracer"].hub_repos


def test_validate_against_accepts_both_hooks_and_checks_cross_layer_reach(tmp_path: Path) -> None:
    mlp_in = random_transcoders(N, D, T, seed=3, input_hook="mlp.hook_in")
    validate_against(mlp_in, n_layers=N, d_model=D)
    clt = random_transcoders(N, D, T, seed=3, cross_layer=True)
    validate_against(clt, n_layers=N, d_model=D)
    short = replace(clt[0], W_dec_ahead=clt[0].W_dec_ahead[:, :1])
    clipped = replace(clt, transcoders=(short, *clt.transcoders[1:]))
    with pytest.raises(TranscoderLoadError, match="layer 0 writes to 1 later layers, expected 2"):
        validate_against(clipped, n_layers=N, d_model=D)


# Bad inputs: each must give one line naming the file and the problem.


def _edit(path: Path, drop: tuple[str, ...] = (), **tensors: torch.Tensor) -> None:
    content = {k: v for k, v in load_file(path).items() if k not in drop}
    save_file({**content, **tensors}, path)


def _config(folder: Path, drop: tuple[str, ...] = (), **changes: object) -> None:
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config = {k: v for k, v in config.items() if k not in drop} | changes
    (folder / "config.yaml").write_text(yaml.safe_dump(config))


def _nan(shape: tuple[int, ...]) -> torch.Tensor:
    t = torch.zeros(shape)
    t.view(-1)[3] = float("nan")
    return t


def _listed_with_a_nan(folder: Path) -> None:
    (folder / "files").mkdir()
    for i in range(N):
        (folder / f"layer_{i}.safetensors").rename(folder / "files" / f"layer_{i}.safetensors")
    _config(folder, transcoders=[f"files/layer_{i}.safetensors" for i in range(N)])
    _edit(folder / "files/layer_1.safetensors", W_dec=_nan((T, D)))


def _npz_without_threshold(folder: Path) -> None:
    path = folder / GEMMA.format(1, 10)
    arrays = {k: v for k, v in np.load(path).items() if k != "threshold"}
    np.savez(path, **arrays)


def _npz_nan(folder: Path) -> None:
    path = folder / GEMMA.format(0, 10)
    arrays = dict(np.load(path).items())
    arrays["W_dec"][5, 2] = np.nan
    np.savez(path, **arrays)


PLT, CLT, GS = "circuit-tracer", "clt", "gemma-scope"
BAD: dict[str, tuple[str, dict, Callable[[Path], None], tuple[str, ...]]] = {
    "config missing keys": (
        PLT,
        {},
        lambda f: _config(f, drop=("feature_output_hook",)),
        ("config.yaml", "missing feature_output_hook"),
    ),
    "unknown model_kind": (
        PLT,
        {},
        lambda f: _config(f, model_kind="sae"),
        ("config.yaml", "model_kind 'sae' unknown"),
    ),
    "unknown input hook": (
        CLT,
        {"cross_layer": True},
        lambda f: _config(f, feature_input_hook="hook_resid_pre"),
        ("config.yaml", "'hook_resid_pre' is not supported"),
    ),
    "unknown output hook": (
        PLT,
        {},
        lambda f: _config(f, feature_output_hook="hook_resid_post"),
        ("config.yaml", "'hook_resid_post' is not an MLP output"),
    ),
    "topk without k": (
        PLT,
        {"activation": "topk", "k": 3},
        lambda f: _config(f, drop=("k",)),
        ("config.yaml", "topk needs k"),
    ),
    "zero k": (
        PLT,
        {"activation": "topk", "k": 3},
        lambda f: _config(f, k=0),
        ("config.yaml", "k is 0"),
    ),
    "negative k": (
        PLT,
        {"activation": "topk", "k": 3},
        lambda f: _config(f, k=-2),
        ("config.yaml", "k is -2"),
    ),
    "k beyond the features": (
        PLT,
        {"activation": "topk", "k": 3},
        lambda f: _config(f, k=T + 1),
        ("config.yaml", f"k {T + 1} exceeds"),
    ),
    "missing layer file": (
        PLT,
        {},
        lambda f: (f / "layer_1.safetensors").unlink(),
        ("layer_1.safetensors", "layer 1", "found layers 0, 2"),
    ),
    "wrong shape": (
        PLT,
        {},
        lambda f: _edit(f / "layer_1.safetensors", W_dec=torch.zeros(T, D - 1)),
        ("layer_1.safetensors", "W_dec has shape (64, 15), expected (64, 16)"),
    ),
    "wrong threshold shape": (
        PLT,
        {"activation": "jumprelu"},
        lambda f: _edit(
            f / "layer_2.safetensors", **{"activation_function.threshold": torch.zeros(T - 1)}
        ),
        ("layer_2.safetensors", "activation_function.threshold has shape (63,)"),
    ),
    "missing tensor": (
        PLT,
        {},
        lambda f: _edit(f / "layer_0.safetensors", drop=("b_enc",)),
        ("layer_0.safetensors", "missing b_enc"),
    ),
    "NaN": (
        PLT,
        {},
        lambda f: _edit(f / "layer_0.safetensors", W_enc=_nan((T, D))),
        ("layer_0.safetensors", "W_enc contains NaN"),
    ),
    "huge value": (
        PLT,
        {},
        lambda f: _edit(f / "layer_2.safetensors", b_dec=torch.full((D,), 1e30)),
        ("layer_2.safetensors", "b_dec reaches 1e+30"),
    ),
    "integer tensor": (
        PLT,
        {},
        lambda f: _edit(f / "layer_0.safetensors", b_enc=torch.zeros(T, dtype=torch.int64)),
        ("layer_0.safetensors", "b_enc has dtype I64"),
    ),
    "threshold but relu": (
        PLT,
        {"activation": "jumprelu"},
        lambda f: _config(f, activation="relu"),
        ("layer_0.safetensors", "JumpReLU", "activation relu"),
    ),
    "k in file disagrees": (
        PLT,
        {"activation": "topk", "k": 3},
        lambda f: _edit(f / "layer_0.safetensors", k=torch.tensor(4)),
        ("layer_0.safetensors", "holds k 4", "k 3"),
    ),
    "listed file missing": (
        PLT,
        {},
        lambda f: _config(f, transcoders=["layer_0.safetensors", "gone.safetensors"]),
        ("config.yaml", "transcoders[1] gone.safetensors"),
    ),
    "listed file with a NaN": (
        PLT,
        {},
        _listed_with_a_nan,
        ("files/layer_1.safetensors: W_dec contains NaN",),
    ),
    "clt decoder file missing": (
        CLT,
        {"cross_layer": True},
        lambda f: (f / "W_dec_1.safetensors").unlink(),
        ("W_dec_1.safetensors", "layer 1"),
    ),
    "clt decoder shape": (
        CLT,
        {"cross_layer": True},
        lambda f: _edit(f / "W_dec_0.safetensors", W_dec_0=torch.zeros(T, N - 1, D)),
        ("W_dec_0.safetensors", "W_dec_0 has shape (64, 2, 16), expected (64, 3, 16)"),
    ),
    "clt threshold missing": (
        CLT,
        {"cross_layer": True, "activation": "jumprelu"},
        lambda f: _edit(f / "W_enc_2.safetensors", drop=("threshold_2",)),
        ("W_enc_2.safetensors", "missing threshold_2"),
    ),
    "clt encoder file missing": (
        CLT,
        {"cross_layer": True},
        lambda f: (f / "W_enc_1.safetensors").unlink(),
        ("W_enc_1.safetensors", "found layers 0, 2"),
    ),
    "npz missing keys": (
        GS,
        {"activation": "jumprelu"},
        _npz_without_threshold,
        ("layer_1/width_16k/average_l0_10/params.npz", "missing threshold"),
    ),
    "npz NaN": (
        GS,
        {"activation": "jumprelu"},
        _npz_nan,
        ("layer_0/width_16k/average_l0_10/params.npz", "W_dec contains NaN"),
    ),
    "npz layer missing": (
        GS,
        {"activation": "jumprelu"},
        lambda f: (f / GEMMA.format(1, 10)).unlink(),
        ("no layer_1 params.npz", "found layers 0, 2"),
    ),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_inputs_give_one_line(tmp_path: Path, case: str) -> None:
    layout, options, spoil, needles = BAD[case]
    folder = tmp_path / "set"
    save_transcoders(random_transcoders(N, D, T, seed=1, **options), folder, layout=layout)
    spoil(folder)
    with pytest.raises(TranscoderLoadError) as info:
        load_transcoders(folder)
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message


@pytest.mark.parametrize(
    ("options", "needles"),
    [
        ({"l0": 99}, ("no layer_0/width_16k/average_l0_99/params.npz", "available L0s: 30, 50)")),
        ({"width": "1m"}, ("layer_0 has no width_1m", "available widths: 16k, 65k")),
        ({"l0": [20, 20]}, ("2 L0s given for 3 layers",)),
    ],
)
def test_gemma_scope_choice_errors(tmp_path: Path, options: dict, needles: tuple[str, ...]) -> None:
    folder = _gemma_folder(tmp_path)
    with pytest.raises(TranscoderLoadError) as info:
        load_transcoders(folder, **options)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_l0_and_width_are_refused_outside_gemma_scope(tmp_path: Path) -> None:
    save_transcoders(random_transcoders(N, D, T), tmp_path, layout="circuit-tracer")
    with pytest.raises(TranscoderLoadError, match="l0 and width choose among Gemma Scope's files"):
        load_transcoders(tmp_path, l0=10)


def test_writers_refuse_what_a_format_cannot_hold(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ReLU transcoders only"):
        save_transcoders(
            random_transcoders(N, D, T, activation="jumprelu"), tmp_path, layout="published"
        )
    with pytest.raises(ValueError, match="no cross-layer decoders"):
        save_transcoders(
            random_transcoders(N, D, T, cross_layer=True), tmp_path, layout="circuit-tracer"
        )
    with pytest.raises(ValueError, match="decoders into all 2 later layers"):
        save_transcoders(random_transcoders(N, D, T), tmp_path, layout="clt")
    with pytest.raises(ValueError, match=r"ln2\.hook_normalized"):
        save_transcoders(
            random_transcoders(N, D, T, input_hook="mlp.hook_in"), tmp_path, layout="gemma-scope"
        )


def test_transcoder_record_is_what_the_loader_returns(tmp_path: Path) -> None:
    save_transcoders(random_transcoders(N, D, T, skip=True), tmp_path, layout="circuit-tracer")
    tc = load_transcoders(tmp_path)[0]
    assert isinstance(tc, Transcoder)
    assert tc.W_enc.shape == (D, T)
    assert tc.W_skip is not None
    assert tc.W_skip.shape == (D, D)
    assert tc.cfg["layout"] == "circuit-tracer"
    assert tc.cfg["feature_input_hook"] == "ln2.hook_normalized"
