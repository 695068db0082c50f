#!/usr/bin/env python
"""circuit-tracer's attribution graph of a local model folder and transcoder folder, saved as npz.

This script runs in circuit-tracer's own environment, never in circuitstore's: it imports
circuit-tracer (upstream decoderesearch/circuit-tracer, tag v0.5.0, TransformerLens backend),
TransformerLens 2.x and transformers 4.5x, and nothing of circuitstore. bench_circuit_tracer.py
runs it in a subprocess and compares its graph with circuitstore's on the same files.

    CT-PYTHON benchmarks/circuit_tracer_reference.py --model MODEL_DIR --transcoders TC_DIR \
        --tokens 0,17,42,... --out graph.npz [--dtype float64] [--logits all | salient:10 | 5,17]

1. The model: a transformers ``save_pretrained`` folder, loaded offline (weights through
   ``AutoModelForCausalLM``, the tokenizer through ``PreTrainedTokenizerFast(tokenizer_file=...)``)
   and turned into circuit-tracer's ``TransformerLensReplacementModel`` by circuit-tracer's own
   ``ReplacementModel.from_pretrained_and_transcoders`` (so its fold_ln / centring / freezing
   choices are circuit-tracer's). TransformerLens 2.x only takes official model names and
   hard-codes Gemma-2's sizes per official name, so for local folders only two functions of
   ``transformer_lens.loading_from_pretrained`` are patched: ``get_official_model_name`` passes a
   folder through, and ``convert_hf_model_config`` builds TransformerLens's config from the
   folder's config.json with the field mapping TransformerLens uses for LlamaForCausalLM,
   Qwen3ForCausalLM and its google/gemma-2-* entries. The weights go through TransformerLens's
   usual conversion. Folders written by transformers 5 keep ``rope_parameters.rope_theta``, which
   transformers 4.5x does not read, so rope_theta is copied over.
2. The transcoders: a folder with circuit-tracer's ``config.yaml``.
   ``model_kind: transcoder_set`` (``layer_{i}.safetensors``, or a ``transcoders:`` list of
   ``.safetensors`` or Gemma Scope ``.npz`` paths, relative ones taken from the folder) is read by
   circuit-tracer's ``load_transcoders(config)``, which honours ``activation``/``k`` and reads
   ``.npz`` files with its Gemma Scope loader when ``repo_id`` names gemma-scope (set here as the
   published set's, mntss/gemma-scope-transcoders). circuit-tracer's cache loader for local folders
   would drop ``activation``/``k``, hence the explicit call. ``model_kind: cross_layer_transcoder``
   (``W_enc_{i}`` / ``W_dec_{i}.safetensors``) is read by its ``load_clt``.
3. The tokens: ``--tokens`` as given (they should start with a special token: circuit-tracer
   zeroes position 0), or ``--prompt`` tokenised without special tokens behind a prepended one,
   chosen as circuit-tracer's ``ensure_tokenized`` does (bos, pad, eos, then any special id)
   except that id 0 is allowed (circuit-tracer's ``filter(None, ...)`` skips id 0). A token tensor
   is passed to ``attribute``, so circuit-tracer prepends nothing.
4. ``attribute(tokens, model, attribution_targets=..., max_feature_nodes=None)``: no pruning, on
   the CPU, in ``--dtype`` (float64 also sets torch's default dtype, which circuit-tracer's edge
   buffers use).

The npz (N nodes = n_features + n_layers * n_pos + n_pos + n_logits, circuit-tracer's order):

- adjacency (N, N): circuit-tracer's ``graph.adjacency_matrix``, rows = targets, columns =
  sources; the rows of error and token nodes are zero.
- node_kind (N,) int8: 0 feature, 1 error, 2 token (embedding), 3 logit (names in
  node_kind_names); node_layer: a feature's (encoder) layer, an error's layer, -1 for tokens,
  n_layers for logits; node_pos; node_index: the feature index, -1 for errors, the token id
  for tokens and logits.
- active_features (n_features, 3): (layer, pos, index); activation_values; feature_preactivation
  (with b_enc); feature_b_enc; selected_features.
- logit_token_ids, logit_token_strs, logit_probabilities (softmax of the model's output),
  logit_values_precap, logit_values_postcap, logit_mean_precap,
  logit_values_demeaned_precap (what a logit row explains: pre-softcap logit minus its mean
  over the vocabulary, without b_U).
- input_tokens, input_token_strs, n_layers, n_pos, d_vocab, n_features, meta_json (folders,
  hooks, transcoder class, dtype, versions, timings, TransformerLens-vs-HF logit difference).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
import yaml

CIRCUIT_TRACER = (
    "decoderesearch/circuit-tracer tag v0.5.0 (4bb8c0ea10bde09727e14565ec8469656880da53)"
)
KIND_NAMES = ("feature", "error", "token", "logit")


def read_hf_config(model_dir: Path) -> dict[str, Any]:
    return json.loads((model_dir / "config.json").read_text())


def rope_theta(cfg: dict[str, Any], default: float) -> float:
    """rope_theta as transformers 4.5x (top level) or 5 (rope_parameters) stores it."""
    if cfg.get("rope_theta") is not None:
        return float(cfg["rope_theta"])
    params = cfg.get("rope_parameters") or {}
    if isinstance(params, dict) and params.get("rope_theta") is not None:
        if params.get("rope_type", "default") != "default":
            raise NotImplementedError(f"rope_type {params.get('rope_type')} is not mapped here")
        return float(params["rope_theta"])
    return default


def _llama_cfg(c: dict[str, Any], head_dim: int, n_kv: int | None) -> dict[str, Any]:
    """TransformerLens's generic LlamaForCausalLM branch (rotary_base read, not defaulted)."""
    if c.get("rope_scaling") or (c.get("rope_parameters") or {}).get("rope_type", "default") != (
        "default"
    ):
        raise NotImplementedError("Llama rope scaling is not mapped here")
    return {
        "d_model": c["hidden_size"],
        "d_head": head_dim,
        "n_heads": c["num_attention_heads"],
        "d_mlp": c["intermediate_size"],
        "n_layers": c["num_hidden_layers"],
        "n_ctx": c["max_position_embeddings"],
        "eps": c["rms_norm_eps"],
        "d_vocab": c["vocab_size"],
        "act_fn": c["hidden_act"],
        "n_key_value_heads": n_kv,
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": head_dim,
        "rotary_base": rope_theta(c, 10000.0),
        "final_rms": True,
        "gated_mlp": True,
    }


def _qwen3_cfg(c: dict[str, Any], head_dim: int, n_kv: int | None) -> dict[str, Any]:
    """TransformerLens's Qwen3ForCausalLM branch."""
    return {
        "d_model": c["hidden_size"],
        "d_head": head_dim,
        "n_heads": c["num_attention_heads"],
        "n_key_value_heads": n_kv,
        "d_mlp": c["intermediate_size"],
        "n_layers": c["num_hidden_layers"],
        "n_ctx": 2048,
        "eps": c["rms_norm_eps"],
        "d_vocab": c["vocab_size"],
        "act_fn": c["hidden_act"],
        "use_attn_scale": True,
        "initializer_range": c.get("initializer_range", 0.02),
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_base": int(rope_theta(c, 1000000.0)),
        "rotary_adjacent_pairs": False,
        "rotary_dim": head_dim,
        "tokenizer_prepends_bos": True,
        "final_rms": True,
        "gated_mlp": True,
        "default_prepend_bos": False,
        "use_qk_norm": True,
        "trust_remote_code": True,
    }


def _gemma2_cfg(c: dict[str, Any], head_dim: int) -> dict[str, Any]:
    """TransformerLens's google/gemma-2-2b entry with the sizes read from the folder."""
    n_layers = c["num_hidden_layers"]
    if c.get("layer_types"):
        attn_types = ["local" if t == "sliding_attention" else "global" for t in c["layer_types"]]
    else:  # HF's Gemma-2 default: even layers slide
        attn_types = ["local" if i % 2 == 0 else "global" for i in range(n_layers)]
    return {
        "d_model": c["hidden_size"],
        "d_head": head_dim,
        "n_heads": c["num_attention_heads"],
        "d_mlp": c["intermediate_size"],
        "n_layers": n_layers,
        "n_ctx": c["max_position_embeddings"],
        "eps": c["rms_norm_eps"],
        "d_vocab": c["vocab_size"],
        "act_fn": c.get("hidden_activation") or c.get("hidden_act") or "gelu_pytorch_tanh",
        "initializer_range": c.get("initializer_range", 0.02),
        "normalization_type": "RMS",
        "rotary_base": rope_theta(c, 10000.0),
        "rotary_dim": head_dim,
        "positional_embedding_type": "rotary",
        "use_attn_scale": True,
        "attn_scale": float(c.get("query_pre_attn_scalar", head_dim)) ** 0.5,
        "n_key_value_heads": c.get("num_key_value_heads"),
        "window_size": c.get("sliding_window", 4096),
        "use_local_attn": True,
        "attn_types": attn_types,
        "attn_scores_soft_cap": float(c.get("attn_logit_softcapping") or -1.0),
        "output_logits_soft_cap": float(c.get("final_logit_softcapping") or -1.0),
        "gated_mlp": True,
        "final_rms": True,
        "use_normalization_before_and_after": True,
    }


def tl_config_of_folder(model_dir: str) -> dict[str, Any]:
    """TransformerLens's config dict for a local HF folder (TransformerLens 2.18's mapping)."""
    c = read_hf_config(Path(model_dir))
    arch = c["architectures"][0]
    head_dim = c.get("head_dim") or c["hidden_size"] // c["num_attention_heads"]
    n_kv = c.get("num_key_value_heads", c["num_attention_heads"])
    n_kv = None if n_kv == c["num_attention_heads"] else n_kv
    if arch == "LlamaForCausalLM":
        d = _llama_cfg(c, head_dim, n_kv)
    elif arch == "Qwen3ForCausalLM":
        d = _qwen3_cfg(c, head_dim, n_kv)
    elif arch == "Gemma2ForCausalLM":
        d = _gemma2_cfg(c, head_dim)
    else:
        raise NotImplementedError(f"{arch}: only Llama, Qwen3 and Gemma-2 folders are mapped")
    return d | {"original_architecture": arch, "tokenizer_name": model_dir}


def patch_transformer_lens_for_local_folders() -> None:
    """Let TransformerLens load a local folder by its path (official names work as before)."""
    import transformer_lens.loading_from_pretrained as loading

    official, convert = loading.get_official_model_name, loading.convert_hf_model_config

    def get_official_model_name(name: str) -> str:
        return name if (Path(name) / "config.json").exists() else official(name)

    def convert_hf_model_config(name: str, **kwargs: Any) -> dict[str, Any]:
        if (Path(name) / "config.json").exists():
            return tl_config_of_folder(name)
        return convert(name, **kwargs)

    loading.get_official_model_name = get_official_model_name
    loading.convert_hf_model_config = convert_hf_model_config


def load_tokenizer(model_dir: Path) -> Any:
    """The folder's tokenizer.json (its tokenizer_class may be one transformers 4.5x lacks)."""
    from transformers import PreTrainedTokenizerFast

    path = model_dir / "tokenizer_config.json"
    tc = json.loads(path.read_text()) if path.exists() else {}
    names = ("bos_token", "eos_token", "unk_token", "pad_token")
    special = {k: tc[k] for k in names if isinstance(tc.get(k), str)}
    # add_bos_token=True only keeps TransformerLens from reloading the tokenizer with
    # AutoTokenizer; prompts are tokenised here without special tokens.
    return PreTrainedTokenizerFast(
        tokenizer_file=str(model_dir / "tokenizer.json"),
        name_or_path=str(model_dir),
        add_bos_token=True,
        **special,
    )


def load_hf_model(model_dir: Path, dtype: torch.dtype) -> Any:
    from transformers import AutoConfig, AutoModelForCausalLM

    raw = read_hf_config(model_dir)
    cfg = AutoConfig.from_pretrained(str(model_dir))
    default = 1000000.0 if raw["architectures"][0] == "Qwen3ForCausalLM" else 10000.0
    cfg.rope_theta = rope_theta(raw, default)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), config=cfg, dtype=dtype)
    return model.eval()


def load_local_transcoders(
    tc_dir: Path, dtype: torch.dtype, device: torch.device
) -> tuple[Any, dict[str, Any]]:
    """circuit-tracer's transcoders from a local folder with a config.yaml, and the config."""
    from circuit_tracer.transcoder.cross_layer_transcoder import load_clt
    from circuit_tracer.utils.hf_utils import load_transcoders

    config = dict(yaml.safe_load((tc_dir / "config.yaml").read_text()))
    config.setdefault("scan", tc_dir.name)
    kind = config["model_kind"]
    if kind == "cross_layer_transcoder":
        clt = load_clt(
            str(tc_dir),
            scan=config["scan"],
            feature_input_hook=config["feature_input_hook"],
            feature_output_hook=config["feature_output_hook"],
            lazy_decoder=False,
            lazy_encoder=False,
            dtype=dtype,
            device=device,
        )
        return clt, config
    if kind != "transcoder_set":
        raise ValueError(f"model_kind {kind!r}")
    if "transcoders" in config:
        paths = [str(tc_dir / p) for p in config["transcoders"]]  # an absolute p replaces tc_dir
    else:
        n = len(list(tc_dir.glob("layer_*.safetensors")))
        paths = [str(tc_dir / f"layer_{i}.safetensors") for i in range(n)]
    config["transcoders"] = paths
    if any(p.endswith(".npz") for p in paths):
        # The published set is mntss/gemma-scope-transcoders. A repo_id containing
        # "gemma-scope-2" (google/gemma-scope-2b-...) would pick the GemmaScope-2 loader.
        config["repo_id"] = config.get("repo_id") or "mntss/gemma-scope-transcoders"
    else:
        config.setdefault("repo_id", "")
    tcs = load_transcoders(
        config, device=device, dtype=dtype, lazy_encoder=False, lazy_decoder=False
    )
    return tcs, config


def prefix_token(tok: Any) -> int:
    """The special token circuit-tracer prepends, id 0 allowed."""
    for c in [tok.bos_token_id, tok.pad_token_id, tok.eos_token_id, *tok.all_special_ids]:
        if c is not None:
            return int(c)
    raise ValueError("the tokenizer has no special token to prepend")


def input_tokens(args: argparse.Namespace, tok: Any) -> torch.Tensor:
    if args.tokens:
        return torch.tensor([int(t) for t in args.tokens.split(",")], dtype=torch.long)
    ids = tok(args.prompt, add_special_tokens=False)["input_ids"]
    if not args.no_prefix and (not ids or ids[0] not in tok.all_special_ids):
        ids = [prefix_token(tok), *ids]
    return torch.tensor(ids, dtype=torch.long)


def target_kwargs(spec: str, d_vocab: int, desired_prob: float) -> dict[str, Any]:
    if spec == "all":
        return {"attribution_targets": torch.arange(d_vocab)}
    if spec.startswith("salient:"):
        n = int(spec.split(":")[1])
        return {"attribution_targets": None, "max_n_logits": n, "desired_logit_prob": desired_prob}
    return {"attribution_targets": torch.tensor([int(x) for x in spec.split(",")])}


def node_identities(graph: Any, n_layers: int) -> dict[str, np.ndarray]:
    """Kind, layer, position and index of every node, in circuit-tracer's order."""
    af = graph.active_features.cpu().long().numpy()
    n_feat, n_pos = af.shape[0], len(graph.input_tokens)
    logit_ids = graph.logit_token_ids.cpu().long().numpy()
    n_logits = logit_ids.shape[0]
    tokens = graph.input_tokens.cpu().long().numpy()
    n_err = n_layers * n_pos
    return {
        "node_kind": np.repeat(np.arange(4, dtype=np.int8), [n_feat, n_err, n_pos, n_logits]),
        "node_layer": np.concatenate(
            [
                af[:, 0],
                np.repeat(np.arange(n_layers), n_pos),
                np.full(n_pos, -1),
                np.full(n_logits, n_layers),
            ]
        ).astype(np.int64),
        "node_pos": np.concatenate(
            [
                af[:, 1],
                np.tile(np.arange(n_pos), n_layers),
                np.arange(n_pos),
                np.full(n_logits, n_pos - 1),
            ]
        ).astype(np.int64),
        "node_index": np.concatenate([af[:, 2], np.full(n_err, -1), tokens, logit_ids]).astype(
            np.int64
        ),
    }


def feature_b_enc(transcoders: Any, af: torch.Tensor) -> np.ndarray:
    if not hasattr(transcoders, "transcoders"):  # a CLT: b_enc is (n_layers, d_tc)
        return transcoders.b_enc[af[:, 0], af[:, 2]].detach().cpu().numpy()
    pairs = zip(af[:, 0].tolist(), af[:, 2].tolist(), strict=True)
    return np.array([float(transcoders[layer].b_enc[i]) for layer, i in pairs])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--model", required=True, help="a transformers save_pretrained folder")
    ap.add_argument("--transcoders", required=True, help="a folder with circuit-tracer's config")
    source = ap.add_mutually_exclusive_group(required=True)
    source.add_argument("--tokens", help="token ids, comma-separated, special token first")
    source.add_argument("--prompt", help="text, tokenised behind a prepended special token")
    ap.add_argument("--out", required=True, help="the npz to write")
    ap.add_argument(
        "--logits",
        default="all",
        help="'all' (every vocabulary id as an explicit target), 'salient:N' (circuit-tracer's "
        "own choice, max_n_logits=N, desired_logit_prob=--desired-prob) or comma-separated ids",
    )
    ap.add_argument("--desired-prob", type=float, default=0.95)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-prefix", action="store_true", help="with --prompt: prepend nothing")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    began = time.time()
    dtype = {"float32": torch.float32, "float64": torch.float64}[args.dtype]
    if dtype == torch.float64:
        torch.set_default_dtype(torch.float64)  # circuit-tracer's edge buffers take the default
    device = torch.device("cpu")

    import transformer_lens
    import transformers
    from circuit_tracer import ReplacementModel
    from circuit_tracer.attribution.attribute import attribute

    patch_transformer_lens_for_local_folders()
    model_dir, tc_dir = Path(args.model).resolve(), Path(args.transcoders).resolve()
    tok = load_tokenizer(model_dir)
    hf = load_hf_model(model_dir, dtype)
    transcoders, tc_config = load_local_transcoders(tc_dir, dtype, device)
    model = ReplacementModel.from_pretrained_and_transcoders(
        model_name=str(model_dir),
        transcoders=transcoders,
        device=device,
        dtype=dtype,
        hf_model=hf,
        tokenizer=tok,
    )
    seconds_load = time.time() - began
    tokens = input_tokens(args, tok)

    with torch.no_grad():  # TransformerLens's model and HF's agree on these tokens
        tl_vs_hf = float((hf(tokens[None]).logits[0] - model(tokens[None])[0]).abs().max())

    d_vocab, n_layers = int(model.cfg.d_vocab), int(model.cfg.n_layers)
    began_attr = time.time()
    graph = attribute(
        tokens,
        model,
        batch_size=args.batch_size,
        max_feature_nodes=None,
        **target_kwargs(args.logits, d_vocab, args.desired_prob),
    )
    seconds_attribute = time.time() - began_attr

    nodes = node_identities(graph, n_layers)
    af = graph.active_features.cpu().long()
    logit_ids = graph.logit_token_ids.cpu().long()
    n_pos = len(graph.input_tokens)
    size = graph.adjacency_matrix.shape[0]
    assert size == nodes["node_kind"].shape[0], (size, nodes["node_kind"].shape)

    with torch.no_grad():
        _, pre_cache = model.get_activations(tokens, apply_activation_function=False)
        pre = pre_cache[af[:, 0], af[:, 1], af[:, 2]].cpu().numpy()
        with model.zero_softcap():
            precap = model(tokens[None])[0, -1].detach().cpu()
        postcap = model(tokens[None])[0, -1].detach().cpu()
    mean_precap = float(precap.mean())

    meta = {
        "model": model_dir.name,
        "transcoders": tc_dir.name,
        "transcoder_config": {k: v for k, v in tc_config.items() if k != "transcoders"},
        "transcoder_class": type(transcoders).__name__,
        "feature_input_hook": model.feature_input_hook,
        "feature_output_hook": model.original_feature_output_hook,
        "skip_connection": bool(model.skip_transcoder),
        "dtype": args.dtype,
        "logits": args.logits,
        "circuit_tracer": CIRCUIT_TRACER,
        "transformer_lens": getattr(transformer_lens, "__version__", "2.x"),
        "transformers": transformers.__version__,
        "torch": torch.__version__,
        "output_logits_soft_cap": float(model.cfg.output_logits_soft_cap),
        "tl_vs_hf_max_abs_logit_diff": tl_vs_hf,
        "seconds_load": round(seconds_load, 3),
        "seconds_attribute": round(seconds_attribute, 3),
    }
    in_tok = graph.input_tokens.cpu().long().numpy()
    np.savez_compressed(
        args.out,
        adjacency=graph.adjacency_matrix.cpu().numpy(),
        node_kind_names=np.array(KIND_NAMES),
        **nodes,
        active_features=af.numpy(),
        activation_values=graph.activation_values.detach().cpu().numpy(),
        feature_preactivation=pre,
        feature_b_enc=feature_b_enc(transcoders, af),
        selected_features=graph.selected_features.cpu().long().numpy(),
        logit_token_ids=logit_ids.numpy(),
        logit_token_strs=np.array([t.token_str for t in graph.logit_targets]),
        logit_probabilities=graph.logit_probabilities.detach().cpu().numpy(),
        logit_values_precap=precap[logit_ids].numpy(),
        logit_values_postcap=postcap[logit_ids].numpy(),
        logit_mean_precap=np.array(mean_precap),
        logit_values_demeaned_precap=(precap[logit_ids] - mean_precap).numpy(),
        input_tokens=in_tok,
        input_token_strs=np.array([tok.decode([int(t)]) for t in in_tok]),
        n_layers=np.array(n_layers),
        n_pos=np.array(n_pos),
        d_vocab=np.array(d_vocab),
        n_features=np.array(af.shape[0]),
        meta_json=np.array(json.dumps(meta)),
    )
    summary = {
        "out": args.out,
        "n_nodes": int(size),
        "n_features": int(af.shape[0]),
        "n_logits": int(logit_ids.shape[0]),
        "n_pos": int(n_pos),
        "seconds_load": round(seconds_load, 2),
        "seconds_attribute": round(seconds_attribute, 2),
        "seconds_total": round(time.time() - began, 2),
        "tl_vs_hf_max_abs_logit_diff": tl_vs_hf,
    }
    print(json.dumps(summary))
    # circuit-tracer's __del__ resets hooks: run it now, not during interpreter shutdown.
    del graph, model
    gc.collect()


if __name__ == "__main__":
    sys.exit(main())
