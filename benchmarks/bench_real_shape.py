"""Gemma-2-2B with Gemma Scope's 16k transcoders at their real shapes (random weights), through
the HuggingFace cache, on this machine's CPU: load time, peak RSS and seconds per 64-token prompt.

    python benchmarks/bench_real_shape.py [--cache DIR] [--keep] [--prompts 3] [--l0 80]
        [--profile] [--ct-python PYTHON [--ct-features 64] [--ct-batch 8]] [--write-docs]

A fake HuggingFace cache (`models--google--gemma-2-2b` and `models--google--gemma-scope-2b-pt-
transcoders`, each with `refs/main` and one snapshot) is built once under `--cache` (default a
temporary folder; removed afterwards unless `--keep`; a complete one is reused):

- a random Gemma-2-2B at the real config (26 layers, d_model 2304, 8 heads on 4 KV heads of 256,
  d_mlp 9216, vocabulary 256,000, tied embeddings, soft-caps 30/50, sliding window 4096) in
  bfloat16 safetensors shards with their index, as `save_pretrained` lays them out, and a small
  byte-level BPE tokenizer (the model's vocabulary stays 256,000). The shards are written a
  tensor at a time from a model built on the meta device: no copy of the model is ever held;
- random Gemma Scope `layer_i/width_16k/average_l0_N/params.npz` files (float32, as published),
  written by the project's Gemma Scope writer a layer at a time: unit-norm encoder columns and
  JumpReLU thresholds at the normal quantile that lets N of 16,384 fire. The transcoders read
  the pre-MLP RMSNorm's output without its gain, which has RMS 1, so each pre-activation is
  close to a standard normal and about N features fire per position.

Each configuration runs in a fresh process (its peak RSS its own) with HF_HUB_CACHE on the cache
and HF_HUB_OFFLINE=1, loading the hub names through `load_engine`: weights held in bfloat16, the
engine in float32, the ingest's attribution settings (`IngestConfig().attribution`: lumped,
pruned, the storage budget), a warm-up prompt of `--warmup-tokens`, then `--prompts` prompts of
64 tokens cut from public-domain prose. The engine's chunks are tallied as they pass (targets
expanded, steps through attention layers, floating-point operations of the products);
`--profile` runs the first prompt (forward, state and graph) under cProfile. Float32 weights
run only where the bfloat16 run's peak, with everything held in bfloat16 doubled, fits under
`--max-rss-gib` and the machine's free memory; the parent stops any child that outgrows that
(or `--timeout`).

`--ct-python` (an interpreter with circuit-tracer v0.5 and TransformerLens 2) runs circuit-tracer's
`attribute` on the same files, the model's snapshot folder and the npz files, through
circuit_tracer_reference.py (this folder's, or the one in `--ct-reference`), in bfloat16 with a
small `max_feature_nodes`, capped at `--ct-timeout`: its per-target cost and peak RSS.
`--write-docs` writes the tables to docs/performance/bench_real_shape.md, which the results page
includes.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MODEL_REPO = "google/gemma-2-2b"
TC_REPO = "google/gemma-scope-2b-pt-transcoders"
REVISION = "0" * 39 + "1"  # the snapshots' (made-up) commit
GIB = 2**30

# Public-domain prose (Dickens, Austen, Melville, Lincoln, Darwin, Thoreau, Shelley): each prompt
# is the longest run of a paragraph's words that tokenizes to at most 64 tokens with BOS.
PROSE = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the "
    "age of foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the "
    "season of Light, it was the season of Darkness, it was the spring of hope, it was the "
    "winter of despair, we had everything before us, we had nothing before us.",
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, "
    "must be in want of a wife. However little known the feelings or views of such a man may be "
    "on his first entering a neighbourhood, this truth is so well fixed in the minds of the "
    "surrounding families, that he is considered the rightful property of some one or other of "
    "their daughters.",
    "Call me Ishmael. Some years ago, never mind how long precisely, having little or no money "
    "in my purse, and nothing particular to interest me on shore, I thought I would sail about a "
    "little and see the watery part of the world. It is a way I have of driving off the spleen "
    "and regulating the circulation.",
    "Four score and seven years ago our fathers brought forth on this continent, a new nation, "
    "conceived in Liberty, and dedicated to the proposition that all men are created equal. Now "
    "we are engaged in a great civil war, testing whether that nation, or any nation so "
    "conceived and so dedicated, can long endure.",
    "It is interesting to contemplate a tangled bank, clothed with many plants of many kinds, "
    "with birds singing on the bushes, with various insects flitting about, and with worms "
    "crawling through the damp earth, and to reflect that these elaborately constructed forms, "
    "so different from each other, and dependent upon each other in so complex a manner, have "
    "all been produced by laws acting around us.",
    "I went to the woods because I wished to live deliberately, to front only the essential "
    "facts of life, and see if I could not learn what it had to teach, and not, when I came to "
    "die, discover that I had not lived. I did not wish to live what was not life, living is so "
    "dear; nor did I wish to practise resignation, unless it was quite necessary.",
    "You will rejoice to hear that no disaster has accompanied the commencement of an "
    "enterprise which you have regarded with such evil forebodings. I arrived here yesterday, "
    "and my first task is to assure my dear sister of my welfare and increasing confidence in "
    "the success of my undertaking.",
)


@dataclass(frozen=True)
class Shape:
    """The model's and the transcoders' sizes (`real`: Gemma-2-2B and Gemma Scope 16k)."""

    n_layers: int = 26
    d_model: int = 2304
    n_heads: int = 8
    n_kv_heads: int = 4
    head_dim: int = 256
    d_mlp: int = 9216
    d_vocab: int = 256_000
    d_tc: int = 16_384
    sliding_window: int = 4096
    tokenizer_vocab: int = 1000
    prompt_tokens: int = 64

    def model_params(self) -> int:
        d, q, kv = self.d_model, self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        block = d * (2 * q + 2 * kv) + 3 * d * self.d_mlp + 4 * d
        return self.n_layers * block + self.d_vocab * d + d

    def transcoder_params(self) -> int:
        return self.n_layers * (2 * self.d_model * self.d_tc + 2 * self.d_tc + self.d_model)


SHAPES = {
    "real": Shape(),
    # A smoke test of the whole route in seconds.
    "tiny": Shape(2, 64, 4, 2, 16, 128, 4000, 1024, 16, 1000, 64),
}


# --------------------------------------------------------------------------- the fake cache


def snapshot(hub: Path, repo_id: str) -> Path:
    """A repo's snapshot folder in an HF cache laid out as huggingface_hub writes one."""
    repo = hub / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(REVISION)
    folder = repo / "snapshots" / REVISION
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def gemma_config(shape: Shape, tokenizer: Any) -> Any:
    from transformers import Gemma2Config

    return Gemma2Config(
        vocab_size=shape.d_vocab,
        hidden_size=shape.d_model,
        intermediate_size=shape.d_mlp,
        num_hidden_layers=shape.n_layers,
        num_attention_heads=shape.n_heads,
        num_key_value_heads=shape.n_kv_heads,
        head_dim=shape.head_dim,
        hidden_activation="gelu_pytorch_tanh",
        max_position_embeddings=8192,
        rms_norm_eps=1e-6,
        query_pre_attn_scalar=shape.head_dim,
        sliding_window=shape.sliding_window,
        final_logit_softcapping=30.0,
        attn_logit_softcapping=50.0,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        dtype="bfloat16",
        architectures=["Gemma2ForCausalLM"],
    )


def random_weight(name: str, shape: tuple[int, ...], gen: Any) -> Any:
    """One bfloat16 weight: HF's init scale (0.02), norm gains 1 + 0.3 N(0, 1) (Gemma's RMSNorm
    scales by 1 + weight), queries and keys doubled for attention patterns far from uniform."""
    import torch

    t = torch.randn(shape, generator=gen, dtype=torch.bfloat16)
    if name.endswith("norm.weight"):
        return t.mul_(0.3)
    scale = 0.04 if name.endswith(("q_proj.weight", "k_proj.weight")) else 0.02
    return t.mul_(scale)


def write_model(folder: Path, shape: Shape, max_shard: int = 2 * GIB) -> None:
    """config.json, the tokenizer and bfloat16 safetensors shards with their index, a tensor at
    a time: the model is built on the meta device only for its weights' names and shapes."""
    import torch
    from safetensors.torch import save_file
    from transformers import Gemma2ForCausalLM, GenerationConfig

    from circuitstore.ingest.synthetic import train_tokenizer

    tokenizer = train_tokenizer(shape.tokenizer_vocab)
    tokenizer.save_pretrained(folder)
    cfg = gemma_config(shape, tokenizer)
    cfg.save_pretrained(folder)
    GenerationConfig.from_model_config(cfg).save_pretrained(folder)
    with torch.device("meta"):
        meta = Gemma2ForCausalLM(cfg)
    named = [(n, tuple(p.shape)) for n, p in meta.state_dict().items() if n != "lm_head.weight"]
    shards: list[list[tuple[str, tuple[int, ...]]]] = [[]]
    size = 0
    for name, dims in named:
        nbytes = 2 * math.prod(dims)
        if shards[-1] and size + nbytes > max_shard:
            shards.append([])
            size = 0
        shards[-1].append((name, dims))
        size += nbytes
    gen = torch.Generator().manual_seed(0)
    weight_map, total = {}, 0
    for i, shard in enumerate(shards):
        file = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        tensors = {name: random_weight(name, dims, gen) for name, dims in shard}
        save_file(tensors, folder / file, metadata={"format": "pt"})
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        weight_map.update(dict.fromkeys(tensors, file))
        del tensors
    index = {"metadata": {"total_size": total}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


def write_transcoders(folder: Path, shape: Shape, l0: int, seed: int) -> None:
    """Every layer's params.npz through the project's Gemma Scope writer, a layer at a time:
    unit-norm encoder columns, so a pre-activation on an RMS-1 input is about N(0, 1) plus the
    encoder bias, and thresholds around the normal quantile that lets `l0` of d_tc fire."""
    import torch

    from circuitstore.ingest.synthetic import save_transcoders
    from circuitstore.ingest.transcoder import TranscoderSet
    from circuitstore.ingest.transcoder.types import Activation, Transcoder, expected_hook_point

    gen = torch.Generator().manual_seed(seed)
    d, n = shape.d_model, shape.d_tc
    cut = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - l0 / n)))
    for layer in range(shape.n_layers):
        W_enc = torch.randn(d, n, generator=gen)
        W_enc /= W_enc.norm(dim=0, keepdim=True)
        W_dec = torch.randn(n, d, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        tc = Transcoder(
            layer=layer,
            hook_point=expected_hook_point(layer),
            W_enc=W_enc,
            b_enc=0.05 * torch.randn(n, generator=gen),
            W_dec=W_dec,
            b_dec=torch.zeros(d),
            b_dec_out=0.1 * torch.randn(d, generator=gen),
            source=f"random layer {layer}",
            activation=Activation("jumprelu", threshold=cut + 0.05 * torch.randn(n, generator=gen)),
        )
        save_transcoders(TranscoderSet((tc,), "random", ""), folder, layout="gemma-scope", l0=l0)
        del W_enc, W_dec, tc


def build(root: Path, shape: Shape, l0s: list[int]) -> None:
    """The child process that writes the cache (its peak RSS is reported)."""
    hub = root / "hub"
    t0 = time.perf_counter()
    write_model(snapshot(hub, MODEL_REPO), shape)
    t_model = time.perf_counter() - t0
    for i, l0 in enumerate(l0s):
        write_transcoders(snapshot(hub, TC_REPO), shape, l0, seed=1 + i)
    t_tc = time.perf_counter() - t0 - t_model
    emit({"event": "built", "model_s": t_model, "transcoders_s": t_tc, "peak_gib": peak_gib()})


# --------------------------------------------------------------------------- measured children


def peak_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def rss_gib(pid: int | str = "self") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0


def emit(record: dict[str, Any]) -> None:
    print("@@" + json.dumps(record), flush=True)


def prompts(tokenizer: Any, length: int) -> list[str]:
    """Each paragraph's longest prefix that is at most `length` tokens with BOS (cut inside a
    word where that reaches `length` exactly, as a corpus cut at a token budget is)."""
    out = []
    for text in PROSE:
        best = text[:1]
        for end in range(1, len(text) + 1):
            if len(tokenizer(text[:end], add_special_tokens=False)["input_ids"]) + 1 > length:
                break
            best = text[:end]
        out.append(best.rstrip())
    return out


def measure(shape: Shape, weights_dtype: str, args: argparse.Namespace) -> None:
    """One configuration in this (fresh) process: load, a short warm-up prompt (the first
    prompt's first `--warmup-tokens` tokens: every kernel and buffer once), then the prompts."""
    import torch

    from circuitstore.ingest.attribution.api import load_engine
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.model import tokenize

    torch.set_grad_enabled(False)
    t0 = time.perf_counter()
    engine = load_engine(MODEL_REPO, TC_REPO, device="cpu", weights_dtype=weights_dtype)  # type: ignore[arg-type]
    load_s = time.perf_counter() - t0
    emit({"event": "loaded", "load_s": load_s, "rss_gib": rss_gib(), "peak_gib": peak_gib()})
    config = IngestConfig(model=MODEL_REPO, transcoders=TC_REPO, prompts="corpus.txt").attribution
    texts = prompts(engine.model.bridge.tokenizer, shape.prompt_tokens)[: args.prompts]
    emit({"event": "prompts", "texts": texts})
    work = Tally(engine)
    warmup = tokenize(engine.model, texts[0])[: args.warmup_tokens]
    runs = [("warmup", lambda: engine.prepare_tokens(warmup, config))]
    runs += [("prompt", lambda text=text: engine.prepare(text, config)) for text in texts]
    for i, (kind, prepare) in enumerate(runs):
        work.reset()
        profile = cProfile.Profile() if args.profile and i == 1 else None
        t1, cpu1 = time.perf_counter(), cpu_seconds()
        if profile is not None:
            profile.enable()
        state = prepare()
        t2 = time.perf_counter()
        graph = engine.graph(state, config)
        t3 = time.perf_counter()
        if profile is not None:
            profile.disable()
            emit({"event": "profile", "top": top_functions(profile)})
        n_pos = len(graph.tokens)
        emit(
            {
                "event": kind,
                "tokens": n_pos,
                "prepare_s": t2 - t1,
                "graph_s": t3 - t2,
                "total_s": t3 - t1,
                "cpu_s": cpu_seconds() - cpu1,
                "features_per_position": state.n_features / (n_pos * engine.model.n_layers),
                "features": state.n_features,
                "nodes": len(graph.nodes),
                "edges": int(graph.edges.weight.shape[0]),
                "rss_gib": rss_gib(),
                "peak_gib": peak_gib(),
                "load": os.getloadavg()[0],
                **work.summary(),
            }
        )
        del state, graph


def cpu_seconds() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Tally:
    """What the engine computes, chunk by chunk, seen through `AttributionEngine.chunks`: the
    targets expanded, their steps through attention layers, and the floating-point operations
    of the pull-back's products (two per multiply-add):

    - per target and attention step, lumped mode's one step: u W_O^T (d_model x heads*d_head),
      then each head's W_V (the same again), then spreading over `width` positions per head;
    - per target and source row it is dotted with: d_model (the dense block's entries)."""

    def __init__(self, engine: Any) -> None:
        self.model = engine.model
        real = engine.chunks

        def observed(state: Any, config: Any, select: Any = None) -> Any:
            for chunk in real(state, config, select):
                self.add(state, chunk)
                yield chunk

        engine.chunks = observed
        self.reset()

    def reset(self) -> None:
        self.targets = self.logits = self.steps = 0
        self.flop = 0.0

    def add(self, state: Any, chunk: Any) -> None:
        m = self.model
        d, heads = m.d_model, m.n_heads
        hd = int(m.weights.W_O.shape[1] * m.weights.W_O.shape[2])
        b = int(chunk.targets.shape[0])
        layer = int(state.nodes.layer[chunk.targets[0]])
        steps = m.n_layers if layer < 0 else layer + 1  # a logit: every layer; a feature: its own
        width = int(chunk.target_pos.max()) + 1
        self.targets += b
        self.logits += b if layer < 0 else 0
        self.steps += b * steps
        self.flop += 2.0 * d * chunk.dense.numel() + b * steps * (
            4.0 * d * hd + 2.0 * width * heads * d
        )

    def summary(self) -> dict[str, float]:
        return {
            "targets": self.targets,
            "logit_targets": self.logits,
            "target_steps": self.steps,
            "tflop": self.flop / 1e12,
        }


def top_functions(profile: Any) -> list[str]:
    """The 25 functions that took the most time themselves."""
    import io
    import pstats

    stream = io.StringIO()
    pstats.Stats(profile, stream=stream).sort_stats("tottime").print_stats(25)
    # Paths relative to the repository or site-packages: the page names no machine's folders.
    text = stream.getvalue().replace(str(Path(__file__).resolve().parents[1]) + "/", "")
    return [re.sub(r"\S*/site-packages/", "", line) for line in text.splitlines()]


# --------------------------------------------------------------------------- circuit-tracer

# Run with circuit-tracer's own environment: the model's snapshot folder loaded as its reference
# script loads a local folder (TransformerLens 2 takes only official names, so a local folder's
# config is mapped as TL maps google/gemma-2-2b), the npz files through circuit-tracer's Gemma
# Scope loader (a config listing them), then `attribute` with a small feature budget.
CT_CHILD = r"""
import json, os, sys, time, resource
sys.path.insert(0, sys.argv[1])
import torch
torch.set_num_threads(int(sys.argv[6]))
def emit(r): print("@@" + json.dumps(r), flush=True)
def peak(): return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
from pathlib import Path
import importlib
ref = importlib.import_module(sys.argv[8])
prefix_token = getattr(ref, "prefix_token", None) or ref.pick_prefix_token
from circuit_tracer import ReplacementModel
from circuit_tracer.attribution.attribute import attribute
model_dir, tc_dir = Path(sys.argv[2]), Path(sys.argv[3])
dtype = torch.bfloat16
t0 = time.perf_counter()
ref.patch_transformer_lens_for_local_folders()
tok = ref.load_tokenizer(model_dir)
hf = ref.load_hf_model(model_dir, dtype)
emit({"event": "hf_loaded", "s": time.perf_counter() - t0, "peak_gib": peak()})
tcs, _ = ref.load_local_transcoders(tc_dir, dtype, torch.device("cpu"))
emit({"event": "tc_loaded", "s": time.perf_counter() - t0, "peak_gib": peak()})
model = ReplacementModel.from_pretrained_and_transcoders(
    model_name=str(model_dir), transcoders=tcs, device=torch.device("cpu"), dtype=dtype,
    hf_model=hf, tokenizer=tok)
del hf
emit({"event": "ct_loaded", "load_s": time.perf_counter() - t0, "peak_gib": peak()})
text = sys.argv[4]
ids = [prefix_token(tok)] + tok(text, add_special_tokens=False)["input_ids"]
tokens = torch.tensor(ids)
import logging
class Phases(logging.Handler):
    def emit(self, record):
        emit({"event": "phase", "t": time.perf_counter() - t1, "msg": record.getMessage()})
log = logging.getLogger("attribution"); log.addHandler(Phases()); log.setLevel(logging.INFO)
log.setLevel = lambda level: None  # attribute() would set WARNING: a handler is already there
t1 = time.perf_counter()
graph = attribute(tokens, model, max_n_logits=5, desired_logit_prob=0.95,
                  batch_size=int(sys.argv[7]), max_feature_nodes=int(sys.argv[5]), verbose=False)
emit({"event": "ct_done", "tokens": len(ids), "attribute_s": time.perf_counter() - t1,
      "active": int(graph.active_features.shape[0]), "logits": len(graph.logit_targets),
      "selected": int(graph.selected_features.shape[0]), "peak_gib": peak()})
"""


def ct_config(root: Path, shape: Shape, l0: int) -> Path:
    """A circuit-tracer config listing the snapshot's npz files (its Gemma Scope loader)."""
    import yaml

    folder = root / "ct"
    folder.mkdir(exist_ok=True)
    tc = root / "hub" / f"models--{TC_REPO.replace('/', '--')}" / "snapshots" / REVISION
    files = [
        str(tc / f"layer_{i}/width_16k/average_l0_{l0}/params.npz") for i in range(shape.n_layers)
    ]
    config = {
        "model_name": MODEL_REPO,
        "model_kind": "transcoder_set",
        "feature_input_hook": "ln2.hook_normalized",
        "feature_output_hook": "hook_mlp_out",
        "repo_id": "mntss/gemma-scope-transcoders",
        "transcoders": files,
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    return folder


# --------------------------------------------------------------------------- the parent


@dataclass
class Run:
    """A child's records, its wall time, its peak resident set as the parent saw it, and why it
    was stopped (None: it finished by itself)."""

    records: list[dict[str, Any]]
    wall_s: float
    watched_peak_gib: float
    stopped: str | None
    returncode: int
    tail: str

    def last(self, event: str) -> dict[str, Any] | None:
        return next((r for r in reversed(self.records) if r["event"] == event), None)

    def all(self, event: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["event"] == event]


def run_child(cmd: list[str], env: dict[str, str], max_rss_gib: float, timeout_s: float) -> Run:
    """A child process, its `@@` records printed as they come, stopped past the memory or time
    limit (the parent samples its resident set every 0.2 s)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    records: list[dict[str, Any]] = []
    tail: list[str] = []
    state = {"peak": 0.0, "stopped": None}

    def watch() -> None:
        while proc.poll() is None:
            rss = rss_gib(proc.pid)
            state["peak"] = max(state["peak"], rss)
            over = time.perf_counter() - t0 > timeout_s
            if rss > max_rss_gib or over:
                state["stopped"] = (
                    f"stopped at {rss:.1f} GiB (limit {max_rss_gib:.0f})"
                    if rss > max_rss_gib
                    else f"stopped after {timeout_s:.0f} s"
                )
                proc.kill()
                return
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("@@"):
            record = json.loads(line[2:])
            records.append(record)
            print(
                "   ",
                {
                    k: round(v, 3) if isinstance(v, float) else v
                    for k, v in record.items()
                    if k != "top"
                },
                flush=True,
            )
            for text in record.get("top", []):
                print("     ", text, flush=True)
        else:
            tail = [*tail[-39:], line.rstrip()]
    proc.wait()
    watcher.join()
    return Run(
        records,
        time.perf_counter() - t0,
        state["peak"],
        state["stopped"],
        proc.returncode,
        "\n".join(tail),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=None, help="where the fake HF cache lives")
    parser.add_argument("--keep", action="store_true", help="keep the cache afterwards")
    parser.add_argument("--shape", choices=sorted(SHAPES), default="real")
    parser.add_argument("--l0", type=int, nargs="+", default=[80], help="Gemma Scope L0s written")
    parser.add_argument("--prompts", type=int, default=3, help="measured prompts (after a warm-up)")
    parser.add_argument("--max-rss-gib", type=float, default=20.0)
    parser.add_argument(
        "--timeout", type=float, default=3 * 3600.0, help="seconds per configuration"
    )
    parser.add_argument("--warmup-tokens", type=int, default=8, help="the warm-up prompt's tokens")
    parser.add_argument("--profile", action="store_true", help="profile the first prompt's graph")
    parser.add_argument("--ct-python", default=None, help="an interpreter with circuit-tracer 0.5")
    parser.add_argument("--ct-reference", type=Path, default=None, help="ct_reference.py's folder")
    parser.add_argument("--ct-features", type=int, default=64, help="its max_feature_nodes")
    parser.add_argument("--ct-batch", type=int, default=8, help="its batch_size")
    parser.add_argument("--ct-timeout", type=float, default=900.0)
    parser.add_argument("--write-docs", action="store_true")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_docs and args.shape != "real":  # the page's figures are the real shapes'
        parser.error("--write-docs needs --shape real")
    shape = SHAPES[args.shape]
    if args.child == "build":
        build(args.cache, shape, args.l0)
        return
    if args.child is not None:
        measure(shape, args.child, args)
        return
    root = args.cache or Path(tempfile.mkdtemp(prefix="real-shape-"))
    try:
        bench(root, shape, args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
            print(f"removed {root}")


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 2**20
    return 0.0


def limit(args: argparse.Namespace) -> float:
    """The resident set a child may reach: the flag's, or less where the machine has less free
    (it is shared: the others' memory is not ours to take)."""
    return min(args.max_rss_gib, available_gib() - 1.0)


def size_gib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / GIB


def bench(root: Path, shape: Shape, args: argparse.Namespace) -> None:
    from results import Results

    out = Results("bench_real_shape", enabled=args.write_docs)  # the load average at the start
    hub = root / "hub"
    env = {"HF_HUB_CACHE": str(hub), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    me = [sys.executable, __file__, "--shape", args.shape, "--cache", str(root)]
    built = None
    if not (root / "complete").exists():
        print(f"building the cache under {root}", flush=True)
        built = run_child(
            [*me, "--child", "build", "--l0", *map(str, args.l0)], {}, limit(args), 7200
        )
        if built.returncode != 0:
            sys.exit(f"build failed ({built.stopped or built.returncode}):\n{built.tail}")
        (root / "complete").write_text(json.dumps(built.records[-1]))
    model_dir = hub / f"models--{MODEL_REPO.replace('/', '--')}" / "snapshots" / REVISION
    tc_dir = hub / f"models--{TC_REPO.replace('/', '--')}" / "snapshots" / REVISION
    print(
        f"cache: model {size_gib(model_dir):.2f} GiB, transcoders {size_gib(tc_dir):.2f} GiB",
        flush=True,
    )
    runs: dict[str, Run] = {}
    child = [*me, "--prompts", str(args.prompts), "--warmup-tokens", str(args.warmup_tokens)]
    child += ["--profile"] if args.profile else []
    print("weights bfloat16, engine float32", flush=True)
    runs["bfloat16"] = run_child([*child, "--child", "bfloat16"], env, limit(args), args.timeout)
    f32_estimate = float32_estimate(runs["bfloat16"], shape)
    if f32_estimate is not None and f32_estimate < limit(args):
        print("weights float32, engine float32", flush=True)
        runs["float32"] = run_child([*child, "--child", "float32"], env, limit(args), args.timeout)
    ct = None
    if args.ct_python:
        texts = (runs["bfloat16"].last("prompts") or {}).get("texts", [])
        folder = ct_config(root, shape, min(args.l0))
        here = Path(__file__).resolve().parent
        if (here / "circuit_tracer_reference.py").exists():
            reference, module = here, "circuit_tracer_reference"
        elif args.ct_reference is not None:
            reference, module = args.ct_reference, "ct_reference"
        else:
            sys.exit("--ct-python needs circuit_tracer_reference.py here or --ct-reference")
        cmd = [
            args.ct_python,
            "-c",
            CT_CHILD,
            str(reference),
            str(model_dir),
            str(folder),
            texts[0] if texts else PROSE[0],
            str(args.ct_features),
            str(os.cpu_count() or 1),
            str(args.ct_batch),
            module,
        ]
        print(
            f"circuit-tracer, max_feature_nodes {args.ct_features}, batch {args.ct_batch}",
            flush=True,
        )
        ct = run_child(cmd, env, limit(args), args.ct_timeout)
    sys.argv = public_argv(sys.argv)  # the command the page shows
    with out:
        report(out, shape, args, model_dir, tc_dir, built, runs, f32_estimate, ct)


def public_argv(argv: list[str]) -> list[str]:
    """The command line with this machine's paths replaced by what they stand for."""
    shown = {"--cache": "DIR", "--ct-python": "PYTHON", "--ct-reference": "DIR"}
    return [shown.get(before, arg) for before, arg in zip(["", *argv], argv, strict=False)]


def float32_estimate(bf16: Run, shape: Shape) -> float | None:
    """The float32 run's peak, from the bfloat16 run's: everything held in bfloat16 (the model,
    the transcoders and the unembedding the engine folds the final norm into) twice as big."""
    peak = max([r["peak_gib"] for r in bf16.records if "peak_gib" in r], default=None)
    if peak is None:
        return None
    doubled = 2 * (shape.model_params() + shape.transcoder_params() + shape.d_vocab * shape.d_model)
    return peak + doubled / GIB


def report(
    out: Any,
    shape: Shape,
    args: argparse.Namespace,
    model_dir: Path,
    tc_dir: Path,
    built: Run | None,
    runs: dict[str, Run],
    f32_estimate: float | None,
    ct: Run | None,
) -> None:
    out.print(
        f"Gemma-2-2B's shape ({shape.n_layers} layers, d_model {shape.d_model}, "
        f"{shape.n_heads} heads on {shape.n_kv_heads} KV heads of {shape.head_dim}, d_mlp "
        f"{shape.d_mlp}, vocabulary {shape.d_vocab:,}; {shape.model_params() / 1e9:.2f} B "
        f"weights) with Gemma Scope's {shape.d_tc:,}-feature transcoders on every layer "
        f"({shape.transcoder_params() / 1e9:.2f} B weights), random weights, loaded by their hub "
        f"names from an offline HuggingFace cache: the model's snapshot is "
        f"{size_gib(model_dir):.2f} GiB of bfloat16 safetensors, the transcoders' "
        f"{size_gib(tc_dir):.2f} GiB of float32 npz (L0 {', '.join(map(str, args.l0))})."
    )
    if built is not None and built.records:
        b = built.records[-1]
        out.print(
            f"\nWriting the cache took {b['model_s']:.0f} s (model) and {b['transcoders_s']:.0f} s "
            f"(transcoders), peak RSS {b['peak_gib']:.2f} GiB."
        )
    out.print(
        "\nEach configuration in a fresh process: the ingest's attribution settings (lumped, "
        f"pruned, budget {budget()}), a warm-up prompt of {args.warmup_tokens} tokens, then "
        f"{args.prompts} prompts of {shape.prompt_tokens} tokens (medians; CPU s counts both "
        "cores, so CPU s / s is the share of the 2 cores the process got):\n"
    )
    out.table(
        "weights / engine",
        "load s",
        "RSS after load GiB",
        "peak RSS GiB",
        "prompts",
        "s per prompt",
        "CPU s per prompt",
        "forward and state s",
        "graph s",
    )
    for name, run in runs.items():
        loaded, measured = run.last("loaded"), run.all("prompt")
        peak = max([r["peak_gib"] for r in run.records if "peak_gib" in r] + [run.watched_peak_gib])
        label = f"{name} / float32"
        if loaded is None or not measured:
            why = run.stopped or f"exit {run.returncode}"
            out.row(label, "-", "-", f"{peak:.2f}", 0, why, "", "", "")
            continue
        out.row(
            label,
            f"{loaded['load_s']:.0f}",
            f"{loaded['rss_gib']:.2f}",
            f"{peak:.2f}",
            len(measured),
            f"{med(measured, 'total_s'):.0f}",
            f"{med(measured, 'cpu_s'):.0f}",
            f"{med(measured, 'prepare_s'):.1f}",
            f"{med(measured, 'graph_s'):.0f}",
        )
    out.print("\nWhat each prompt's graph holds and what computing it took (medians):\n")
    out.table(
        "weights / engine",
        "features per position and layer",
        "active features",
        "targets expanded",
        "target-layer steps",
        "TFLOP",
        "GFLOP/s",
        "nodes kept",
        "edges kept",
    )
    for name, run in runs.items():
        measured = run.all("prompt")
        if not measured:
            continue
        out.row(
            f"{name} / float32",
            f"{med(measured, 'features_per_position'):.1f}",
            f"{med(measured, 'features'):,.0f}",
            f"{med(measured, 'targets'):,.0f}",
            f"{med(measured, 'target_steps'):,.0f}",
            f"{med(measured, 'tflop'):.1f}",
            f"{statistics.median(1e3 * r['tflop'] / r['graph_s'] for r in measured):.0f}",
            f"{med(measured, 'nodes'):,.0f}",
            f"{med(measured, 'edges'):,.0f}",
        )
    if "float32" not in runs and f32_estimate is not None:
        out.print(
            f"\nFloat32 weights were not run: from the bfloat16 run's peak, they would need about "
            f"{f32_estimate:.1f} GiB (model, transcoders and the folded unembedding twice as big), "
            f"over the {args.max_rss_gib:.0f} GiB this {machine_memory():.0f} GiB machine can give."
        )
    for name, run in runs.items():
        lines = [
            f"{r['total_s']:.0f} s ({r['tokens']} tokens, load {r['load']:.1f})"
            for r in run.all("warmup") + run.all("prompt")
        ]
        if lines:
            out.print(
                f"\n{name}, each prompt (the warm-up first) and the 1-minute load average "
                f"after it: {', '.join(lines)}."
            )
        profile = run.last("profile")
        if profile is not None:
            out.print("\nThe first prompt under cProfile, by own time:\n\n```")
            for line in profile["top"]:
                if line.strip():
                    out.print(line.rstrip())
            out.print("```")
    if ct is not None:
        report_ct(out, ct, args)


def budget() -> str:
    from circuitstore.ingest.config import PruneConfig

    p = PruneConfig()
    return f"{p.max_feature_nodes:,} features and {p.max_edges:,} edges"


def med(records: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in records)


def machine_memory() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GIB


CT_PHASES = (
    ("Precomputation completed in", "encoders: the active features (phase 0)"),
    ("Forward pass completed in", "forward pass, batch copies of the prompt (phase 1)"),
    ("Input vectors built in", "input vectors (phase 2)"),
    ("Logit attributions completed in", "the logits' rows (phase 3)"),
    ("Feature attributions completed in", "the features' rows (phase 4)"),
)


def report_ct(out: Any, ct: Run, args: argparse.Namespace) -> None:
    """circuit-tracer's load, phases and per-target cost, or how far it got."""
    peak = max([r["peak_gib"] for r in ct.records if "peak_gib" in r] + [ct.watched_peak_gib])
    out.print(
        f"\ncircuit-tracer v0.5's `attribute` (TransformerLens backend, bfloat16, "
        f"{os.cpu_count()} threads) on the same files and the first prompt: max_n_logits 5, "
        f"max_feature_nodes {args.ct_features}, batch_size {args.ct_batch}; peak RSS "
        f"{peak:.2f} GiB" + (f"; {ct.stopped}" if ct.stopped else "") + ":\n"
    )
    out.table("step", "s", "per target s")
    loaded = ct.last("ct_loaded")
    if loaded is not None:
        out.row(f"load (peak RSS {loaded['peak_gib']:.2f} GiB)", f"{loaded['load_s']:.0f}", "")
    done = ct.last("ct_done")
    seconds: dict[str, float] = {}
    for r in ct.all("phase"):
        for key, label in CT_PHASES:
            if r["msg"].startswith(key):
                seconds[label] = float(r["msg"].removeprefix(key).strip().rstrip("s"))
    for _, label in CT_PHASES:
        if label not in seconds:
            continue
        n = None
        if done is not None and "logits" in label:
            n = done["logits"]
        elif done is not None and "features'" in label:
            n = done["selected"]
        out.row(label, f"{seconds[label]:.1f}", f"{seconds[label] / n:.2f}" if n else "")
    if done is None:
        if ct.returncode != 0 and not ct.stopped:
            out.print(f"\nIt failed:\n\n```\n{ct.tail[-1500:]}\n```")
        return
    out.row(
        f"attribute in all (peak RSS {done['peak_gib']:.2f} GiB)", f"{done['attribute_s']:.1f}", ""
    )
    per = seconds.get(CT_PHASES[-1][1], 0.0) / max(1, done["selected"])
    from circuitstore.ingest.config import PruneConfig

    budget = PruneConfig().max_feature_nodes or 0
    out.print(
        f"\n{done['active']:,} features were active on its {done['tokens']} tokens. At "
        f"{per:.2f} s per feature row, the {budget:,} features of the ingest's budget would take "
        f"about {per * budget / 60:.0f} min (extrapolated from {done['selected']} rows, not run)."
    )


if __name__ == "__main__":
    main()
