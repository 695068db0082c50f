"""What the arithmetic alone allows on this machine, at GPT-2-small scale.

Two figures bound `ingest`'s speed from below, whatever the code around them:
- the matrix products of one prompt's full lumped graph (every edge, which the DRIVES aggregate
  needs), counted by torch's profiler on the engine benchmark's model and prompt;
- the matrix products of the transcoder set's views (logit lens, de-embedding, virtual
  weights), counted from their shapes.
Divided by the best float32 matrix-product rate measured here (at the shapes those products
have), they give the fewest seconds each can take, so the most tokens/s end to end.

    python benchmarks/bench_floor.py            # 64-token prompt, default threads
    python benchmarks/bench_floor.py --tokens 32 --repeats 7
    python benchmarks/bench_floor.py --write-docs   # also rewrite docs/performance/bench_floor.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from bench_attribution import load_average, token_stream
from results import Results

# The profiler's own FLOP counts skip the in-place batched products (baddbmm_): count from the
# operands' shapes instead, (m x k) @ (k x n) as 2mkn, times the batch.
GEMM_OPERANDS = {"aten::mm": 0, "aten::addmm": 1, "aten::bmm": 0, "aten::baddbmm": 1}
GEMM_OPERANDS["aten::baddbmm_"] = 1
# (m, k, n) of the products that dominate: the views' chunk against the unembedding and against
# a decoder, and the engine's batched products are of the same inner width (d_model 768).
SHAPES = [(1024, 768, 50257), (1024, 768, 24576), (4096, 768, 4096)]
D_MODEL, D_TC, D_VOCAB, N_LAYERS = 768, 24576, 50257, 12


def gemm_rate(m: int, k: int, n: int, repeats: int) -> float:
    """Median float32 GFLOP/s of an (m x k) @ (k x n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    out = torch.empty(m, n)
    torch.mm(a, b, out=out)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * m * k * n / statistics.median(times) / 1e9


def views_flop() -> float:
    lens = N_LAYERS * D_TC * D_MODEL * D_VOCAB * 2
    deembed = D_VOCAB * D_MODEL * D_TC * 2
    virtual = sum(layer for layer in range(N_LAYERS)) * D_TC * D_MODEL * D_TC * 2
    return float(lens + deembed + virtual)


def engine_flop(folder: Path, n_tokens: int) -> dict[str, tuple[float, float]]:
    """(profiled GEMM FLOP, seconds) of one prompt's graph: the full lumped graph with the
    DRIVES sink attached (what ingest computes), and the pruned one alone (the pruner skips the
    targets holding 1% of each layer's influence: what a store whose DRIVES came from pruned
    graphs would compute)."""
    from circuitstore.ingest.aggregate import DrivesSink
    from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    model = load_model(folder)
    engine = AttributionEngine(model, load_transcoders(folder / "transcoders"))
    prompt = token_stream(model.bridge.tokenizer.bos_token_id)
    prompt(128)  # the calibration prompt, as in bench_attribution
    config = AttributionConfig(mode="lumped")
    with torch.no_grad():
        state = engine.prepare_tokens(prompt(n_tokens), config)
        drives = DrivesSink(state.nodes, state.n_features, D_TC, N_LAYERS, 0.01)
        return {
            "full": profiled(lambda: engine.graph(state, config, sinks=[drives])),
            "pruned": profiled(lambda: engine.graph(state, config)),
        }


def profiled(work: Callable[[], object]) -> tuple[float, float]:
    from torch.profiler import ProfilerActivity, profile

    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        work()
    seconds = time.perf_counter() - start
    return sum(gemm_flop(e) for e in prof.key_averages(group_by_input_shape=True)), seconds


def gemm_flop(event: object) -> float:
    """FLOP of all calls of one (op, input shapes) group, 0 for other ops."""
    first = GEMM_OPERANDS.get(getattr(event, "key", ""))
    if first is None:
        return 0.0
    a, b = event.input_shapes[first : first + 2]  # type: ignore[attr-defined]
    batch = a[0] if len(a) == 3 else 1
    m, k, n = a[-2], a[-1], b[-1]
    return 2.0 * batch * m * k * n * event.count  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' table")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"threads {torch.get_num_threads()}, cores {os.cpu_count()}, load {load_average()}")
    here = Path(__file__).with_name("bench_attribution.py")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-random"
        build = [sys.executable, str(here), "--model-dir", str(folder)]
        subprocess.run(build, check=True, capture_output=True)
        graphs = engine_flop(folder, args.tokens)
    rates = {shape: gemm_rate(*shape, args.repeats) for shape in SHAPES}
    with Results("bench_floor", enabled=args.write_docs) as out:
        for (m, k, n), rate in rates.items():
            out.print(
                f"- float32 ({m} x {k}) @ ({k} x {n}): {rate:.0f} GFLOP/s "
                f"(median of {args.repeats})"
            )
        best = max(rates.values()) * 1e9
        out.print(f"\nThe floors use the best rate, {best / 1e9:.0f} GFLOP/s.\n")
        out.table("work", "matrix products", "under the profiler", "floor", "so at most")
        for name, (flop, seconds) in graphs.items():
            floor = flop / best
            out.row(
                f"one {args.tokens}-token prompt's {name} lumped graph",
                f"{flop / 1e12:.2f} TFLOP",
                f"{seconds:.1f} s",
                f"{floor:.1f} s",
                f"{args.tokens / floor:.2f} tokens/s",
            )
        views = views_flop()
        out.row("the set's views", f"{views / 1e12:.1f} TFLOP", "", f"{views / best:.0f} s", "")
    print(f"load {load_average()}")


if __name__ == "__main__":
    main()
