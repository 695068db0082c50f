"""Rebuild the demo from its seed, or check a rebuild against the shipped artifacts.

    python -m demo.make --out circuitstore/demo/weights --seed 0
    python -m demo.make --out circuitstore/demo/weights --seed 0 --check

The build writes ``<out>/model`` (a ``save_pretrained`` GPT-2 folder with its tokenizer),
``<out>/transcoders`` (one published-layout pickle per layer plus its
``_log_feature_sparsity.pt``), ``<out>/fidelity.json`` (the figures below) and the held-out
prompts to ``--corpus`` (``<out>/../corpus.jsonl`` by default); they ship inside the package,
as data of :mod:`circuitstore.demo`. The training split is not shipped: it is regenerated from
the seed (``python -m demo.make.corpus``).

``--check`` builds into a temporary folder instead, leaves the shipped files alone, and exits
non-zero when the rebuilt corpus differs from the shipped one or a rebuilt figure is outside
:data:`TOLERANCE` of the shipped ``fidelity.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from demo.make import corpus as corpus_mod
from demo.make.train import (
    MODEL_NAME,
    DemoSpec,
    encode,
    fidelity,
    log,
    save_model_folder,
    train_model,
    train_tokenizer,
    train_transcoders,
)

EVAL_PER_TASK = 200

# How far a rebuild may drift from the shipped figures: absolute for fractions and accuracies,
# relative for losses and L0. A rebuild on the same software is bit-identical (one thread, fixed
# seeds); the slack covers other CPUs and library versions.
TOLERANCE: dict[str, tuple[str, float]] = {
    "ce_clean": ("rel", 0.03),
    "ce_mlp_zero_ablated": ("rel", 0.05),
    "ce_transcoders_spliced": ("rel", 0.03),
    "fraction_loss_recovered": ("abs", 0.03),
    "fraction_loss_recovered_per_layer": ("abs", 0.05),
    "l0_per_layer": ("rel", 0.2),
    "accuracy": ("abs", 0.05),
    "accuracy_spliced": ("abs", 0.08),
}


def build(out: Path, corpus_path: Path, seed: int, spec: DemoSpec) -> dict[str, Any]:
    torch.set_num_threads(1)  # bit-reproducible, and faster than two threads for these sizes
    torch.manual_seed(seed)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    held_out = corpus_mod.eval_split(seed, EVAL_PER_TASK)
    train = corpus_mod.train_split(seed, spec.train_examples, exclude={e.text for e in held_out})
    corpus_mod.write_jsonl(held_out, corpus_path)
    tokenizer = train_tokenizer([ex.training_text() for ex in train[:20_000]], spec.vocab_size)
    log(
        f"corpus: {len(train)} training examples, {len(held_out)} held-out prompts; "
        f"tokenizer: {len(tokenizer)} tokens"
    )
    timings["corpus_and_tokenizer_s"] = time.perf_counter() - t0

    t = time.perf_counter()
    log(f"model: {spec.n_layers} layers, d_model {spec.d_model}, {spec.n_heads} heads")
    model = train_model(tokenizer, train, spec, seed)
    for old in (out / "model", out / "transcoders"):  # never anything else under --out
        if old.is_dir():
            shutil.rmtree(old)
    save_model_folder(model, tokenizer, out / "model")
    timings["model_s"] = time.perf_counter() - t

    report = build_transcoders(out, train, held_out, spec, seed)
    timings.update(report.pop("timings"))
    timings["total_s"] = time.perf_counter() - t0
    report["timings"] = timings
    (out / "fidelity.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print_report(report)
    return report


def build_transcoders(
    out: Path,
    train: list[corpus_mod.Example],
    held_out: list[corpus_mod.Example],
    spec: DemoSpec,
    seed: int,
) -> dict[str, Any]:
    """Train and save the transcoders of the model in ``<out>/model``, and measure fidelity."""
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.synthetic import save_transcoders
    from circuitstore.ingest.transcoder import load_transcoders

    torch.set_num_threads(1)
    t = time.perf_counter()
    log(f"transcoders: d_tc {spec.d_tc}, {spec.tc_tokens} tokens, {spec.tc_steps} steps per layer")
    loaded = load_model(out / "model")  # booted exactly as the engine boots it
    seqs = encode(loaded.bridge.tokenizer, [ex.training_text() for ex in train])
    tcs, train_stats = train_transcoders(loaded, seqs, spec, seed)
    save_transcoders(tcs, out / "transcoders", layout="published")
    timings = {"transcoders_s": time.perf_counter() - t}

    t = time.perf_counter()
    reloaded = load_transcoders(out / "transcoders")  # measure what ships, through the loader
    figures = fidelity(loaded, reloaded, held_out)
    timings["fidelity_s"] = time.perf_counter() - t
    return {
        "model_name": MODEL_NAME,
        "seed": seed,
        "spec": spec.as_dict(),
        "torch": torch.__version__,
        **figures,
        "transcoder_training": train_stats,
        "timings": timings,
    }


def print_report(r: dict[str, Any]) -> None:
    log("fidelity (held-out prompts with their answers):")
    log(
        f"  CE clean {r['ce_clean']:.4f}, MLPs zero-ablated {r['ce_mlp_zero_ablated']:.4f}, "
        f"transcoders spliced {r['ce_transcoders_spliced']:.4f}"
    )
    log(
        f"  fraction of loss recovered: {r['fraction_loss_recovered']:.3f} (all layers), "
        + ", ".join(f"L{i} {f:.3f}" for i, f in enumerate(r["fraction_loss_recovered_per_layer"]))
    )
    log("  L0 per layer: " + ", ".join(f"{x:.1f}" for x in r["l0_per_layer"]))
    log("  accuracy clean:   " + ", ".join(f"{k} {v:.3f}" for k, v in r["accuracy"].items()))
    log(
        "  accuracy spliced: " + ", ".join(f"{k} {v:.3f}" for k, v in r["accuracy_spliced"].items())
    )
    log(f"  build time: {r['timings']['total_s']:.0f} s")


def compare(shipped: dict[str, Any], rebuilt: dict[str, Any]) -> list[str]:
    """Every figure outside its tolerance, as a line."""
    problems = []
    for key, (kind, tol) in TOLERANCE.items():
        a, b = shipped.get(key), rebuilt.get(key)
        if a is None or b is None:
            problems.append(f"{key}: missing ({'shipped' if a is None else 'rebuilt'})")
            continue
        if isinstance(a, dict):
            pairs = [(f"{key}.{k}", a[k], b.get(k)) for k in a]
        elif isinstance(a, list):
            pairs = [(f"{key}[{i}]", x, b[i] if i < len(b) else None) for i, x in enumerate(a)]
        else:
            pairs = [(key, a, b)]
        for name, x, y in pairs:
            if y is None:
                problems.append(f"{name}: missing in the rebuild")
                continue
            diff = abs(y - x) if kind == "abs" else abs(y - x) / max(abs(x), 1e-12)
            if diff > tol:
                problems.append(
                    f"{name}: shipped {x:.4f}, rebuilt {y:.4f} ({kind} diff {diff:.4f} > {tol})"
                )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.make")
    parser.add_argument("--out", type=Path, default=Path("circuitstore/demo/weights"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--corpus",
        type=Path,
        default=None,
        help="held-out prompts (default: <out>/../corpus.jsonl)",
    )
    parser.add_argument(
        "--check", action="store_true", help="rebuild in a temporary folder and compare with --out"
    )
    args = parser.parse_args(argv)
    corpus_path = args.corpus or args.out.parent / "corpus.jsonl"
    spec = DemoSpec()
    if not args.check:
        build(args.out, corpus_path, args.seed, spec)
        return 0
    shipped_file = args.out / "fidelity.json"
    if not shipped_file.is_file():
        print(f"--check: {shipped_file} not found", file=sys.stderr)
        return 2
    shipped = json.loads(shipped_file.read_text(encoding="utf-8"))
    if shipped.get("seed") != args.seed:
        print(
            f"--check: shipped seed {shipped.get('seed')}, asked for {args.seed}", file=sys.stderr
        )
        return 2
    with tempfile.TemporaryDirectory(prefix="circuitstore-demo-") as tmp:
        rebuilt_corpus = Path(tmp) / "corpus.jsonl"
        rebuilt = build(Path(tmp) / "weights", rebuilt_corpus, args.seed, spec)
        problems = compare(shipped, rebuilt)
        if corpus_path.is_file() and rebuilt_corpus.read_bytes() != corpus_path.read_bytes():
            problems.append(f"{corpus_path}: the rebuilt held-out corpus differs")
    if problems:
        print("--check failed:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    log("--check passed: every figure within tolerance of " + str(shipped_file))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
