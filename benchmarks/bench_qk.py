"""What `ingest --qk-top K` costs per prompt: the K QK traces of a prompt's strongest stored
attention edges (ingest/qkstore/select.py), beside the prompt's own graph, on the demo model
and on a GPT-2-small-scale random model (built as bench_attribution.py builds it).

    python benchmarks/bench_qk.py [--gpt2] [--write-docs]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
KS = (1, 5, 10)


def measure(engine, prompts: list[torch.Tensor], ks: tuple[int, ...]) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Per prompt: the pruned lumped graph's seconds, and each K's traces' seconds."""
    from circuitstore.ingest.attribution import AttributionConfig
    from circuitstore.ingest.qkstore.select import edge_traces

    config = AttributionConfig(mode="lumped")
    graph_s: list[float] = []
    qk_s: dict[int, list[float]] = {k: [] for k in ks}
    traced: dict[int, list[int]] = {k: [] for k in ks}
    for tokens in prompts:
        began = time.perf_counter()
        state = engine.prepare_tokens(tokens, config)
        graph = engine.graph(state, config)
        graph_s.append(time.perf_counter() - began)
        for k in ks:
            began = time.perf_counter()
            traces = edge_traces(state, graph, k)
            qk_s[k].append(time.perf_counter() - began)
            traced[k].append(len(traces))
    return {
        "tokens": statistics.median(int(t.shape[0]) for t in prompts),
        "graph": statistics.median(graph_s),
        "qk": {k: statistics.median(v) for k, v in qk_s.items()},
        "traced": {k: min(v) for k, v in traced.items()},
    }


def demo_engine():  # type: ignore[no-untyped-def]
    from circuitstore.ingest.attribution.api import load_engine

    weights = ROOT / "circuitstore" / "demo" / "weights"
    return load_engine(str(weights / "model"), str(weights / "transcoders"), device="cpu")


def demo_prompts(engine, n: int) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    import json

    from circuitstore.ingest.model import all_tokens

    lines = (ROOT / "circuitstore" / "demo" / "corpus.jsonl").read_text().splitlines()
    return [all_tokens(engine.model, json.loads(x)["text"]) for x in lines[:n]]


def report(out, name: str, row: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    qk, traced = row["qk"], row["traced"]
    cells = [f"{qk[k]:.3g} ({qk[k] / max(traced[k], 1):.3g} per trace)" for k in KS]  # type: ignore[index]
    out.row(name, row["tokens"], f"{row['graph']:.3g}", *cells)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8, help="demo prompts measured")
    parser.add_argument("--gpt2", action="store_true", help="also the GPT-2-scale random model")
    parser.add_argument("--gpt2-tokens", type=int, default=64)
    parser.add_argument("--gpt2-prompts", type=int, default=2)
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    sys.path.insert(0, str(Path(__file__).parent))
    from results import Results

    with Results("bench_qk", enabled=args.write_docs) as out:
        out.print(
            "\nSeconds per prompt (medians), on this CPU: the pruned lumped graph ingest stores, "
            "and `--qk-top K`'s traces of its K strongest attention edges (each at its strongest "
            "head, 10 terms kept per part)\n"
        )
        out.table("model", "tokens", "graph (s)", *(f"K = {k} (s)" for k in KS))
        engine = demo_engine()
        report(
            out, "demo (3 layers, 4 heads)", measure(engine, demo_prompts(engine, args.prompts), KS)
        )
        if args.gpt2:
            from bench_attribution import token_stream

            from circuitstore.ingest.attribution import AttributionEngine
            from circuitstore.ingest.model import load_model
            from circuitstore.ingest.transcoder import load_transcoders

            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(tmp) / "gpt2-random"
                script = Path(__file__).parent / "bench_attribution.py"
                subprocess.run(
                    [sys.executable, str(script), "--model-dir", str(folder)],
                    check=True,
                    capture_output=True,
                )
                model = load_model(folder)
                engine = AttributionEngine(model, load_transcoders(folder / "transcoders"))
            prompt = token_stream(model.bridge.tokenizer.bos_token_id)
            prompt(128)  # the calibration prompt
            prompts = [prompt(args.gpt2_tokens) for _ in range(args.gpt2_prompts)]
            report(out, "GPT-2-small-scale random", measure(engine, prompts, KS))


if __name__ == "__main__":
    main()
