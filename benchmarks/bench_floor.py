"""What the arithmetic alone allows on this machine, at GPT-2-small scale.

Two figures bound `ingest`'s speed from below, whatever the code around them:
- the matrix products of one prompt's full lumped graph (every edge, which the DRIVES aggregate
  needs), counted by torch's profiler on the engine benchmark's model and prompt;
- the matrix products of the transcoder set's views (logit lens, de-embedding, virtual
  weights), counted from their shapes.
Divided by the best float32 matrix-product rate measured here (at the shapes those products
have), they give the fewest seconds each can take, so the most tokens/s end to end. The engine's
graphs are also timed without the profiler (medians), as a share of that best rate measured in
the same run, with how the time splits into products and other work and what the BLAS achieves
alone at the engine's own product shapes.

    python benchmarks/bench_floor.py            # 64-token prompt, default threads
    python benchmarks/bench_floor.py --tokens 32 --repeats 7 --engine-repeats 5
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
from dataclasses import dataclass
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
REFERENCE = SHAPES[-1]  # the fastest here: timed around each engine run
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


# The engine's products at a 64-token prompt's typical chunk (b targets, width positions):
# (name, batch, m, k, n) of a batched (m x k) @ (k x n).
ENGINE_SHAPES = [
    ("slab: sources . field", 64, 75, 768, 176),
    ("one head's W_V", 12, 176, 64, 768),
    ("one layer's W_O", 1, 176, 768, 768),
    ("pattern x heads", 176, 62, 12, 768),
]


@dataclass
class Graph:
    """One graph's products (FLOP and seconds by op, under the profiler) and its wall times
    without the profiler."""

    flop: dict[str, float]
    product_seconds: dict[str, float]
    seconds: list[float]
    around: list[float]  # the reference product's rate just before and after each run, best

    @property
    def total_flop(self) -> float:
        return sum(self.flop.values())

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def share_around(self) -> float:
        """The median run's share of the product rate measured around it: on a shared machine
        the rate the products could have had moves from minute to minute."""
        return statistics.median(
            self.total_flop / s / (r * 1e9) for s, r in zip(self.seconds, self.around, strict=True)
        )


def engine_graphs(folder: Path, n_tokens: int, repeats: int) -> dict[str, Graph]:
    """One prompt's graphs, profiled once and timed `repeats` times: the full lumped graph
    with the DRIVES sink attached (what ingest computes), and the pruned one alone (the pruner
    skips the targets holding 1% of each layer's influence: what a store whose DRIVES came from
    pruned graphs would compute)."""
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

        def full() -> object:
            drives = DrivesSink(state.nodes, state.n_features, D_TC, N_LAYERS, 0.01)
            return engine.graph(state, config, sinks=[drives])

        graphs = {"full": full, "pruned": lambda: engine.graph(state, config)}
        return {name: measured(work, repeats) for name, work in graphs.items()}


def measured(work: Callable[[], object], repeats: int) -> Graph:
    from torch.profiler import ProfilerActivity, profile

    seconds, around = [], []
    for _ in range(repeats):
        before = gemm_rate(*REFERENCE, 3)
        start = time.perf_counter()
        work()
        seconds.append(time.perf_counter() - start)
        around.append(max(before, gemm_rate(*REFERENCE, 3)))
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        work()
    flop: dict[str, float] = {}
    product_seconds: dict[str, float] = {}
    for event in prof.key_averages(group_by_input_shape=True):
        op = event.key.removeprefix("aten::").rstrip("_")
        if event.key in GEMM_OPERANDS:
            flop[op] = flop.get(op, 0.0) + gemm_flop(event)
            self_s = event.self_cpu_time_total / 1e6
            product_seconds[op] = product_seconds.get(op, 0.0) + self_s
    return Graph(flop, product_seconds, seconds, around)


def batched_rate(batch: int, m: int, k: int, n: int, repeats: int) -> float:
    """Median float32 GFLOP/s of a batched (m x k) @ (k x n) product."""
    a, b = torch.randn(batch, m, k), torch.randn(batch, k, n)
    out = torch.empty(batch, m, n)
    torch.bmm(a, b, out=out)  # warm
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.bmm(a, b, out=out)
        times.append(time.perf_counter() - start)
    return 2 * batch * m * k * n / statistics.median(times) / 1e9


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
    parser.add_argument("--repeats", type=int, default=5, help="products per shape")
    parser.add_argument("--engine-repeats", type=int, default=3, help="graphs timed, each kind")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' table")
    args = parser.parse_args()
    torch.set_grad_enabled(False)
    print(f"threads {torch.get_num_threads()}, cores {os.cpu_count()}, load {load_average()}")
    here = Path(__file__).with_name("bench_attribution.py")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-random"
        build = [sys.executable, str(here), "--model-dir", str(folder)]
        subprocess.run(build, check=True, capture_output=True)
        graphs = engine_graphs(folder, args.tokens, args.engine_repeats)
    rates = {shape: gemm_rate(*shape, args.repeats) for shape in SHAPES}
    at_shapes = {shape: batched_rate(*shape[1:], args.repeats) for shape in ENGINE_SHAPES}
    with Results("bench_floor", enabled=args.write_docs) as out:
        for (m, k, n), rate in rates.items():
            out.print(
                f"- float32 ({m} x {k}) @ ({k} x {n}): {rate:.0f} GFLOP/s "
                f"(median of {args.repeats})"
            )
        around = [r for graph in graphs.values() for r in graph.around]
        best = max([*rates.values(), *around]) * 1e9
        out.print(
            f"\nThe floors use the best rate measured in this run, {best / 1e9:.0f} GFLOP/s "
            f"(the {REFERENCE[0]} x {REFERENCE[1]} x {REFERENCE[2]} product is also timed around "
            "each engine run below).\n"
        )
        floors(out, graphs, best, args.tokens)
        engine_rate(out, graphs, best, args.tokens, args.engine_repeats)
        shapes(out, at_shapes, best, args.repeats)
    print(f"load {load_average()}")


def floors(out: Results, graphs: dict[str, Graph], best: float, tokens: int) -> None:
    out.table("work", "matrix products", "floor", "so at most")
    for name, graph in graphs.items():
        floor = graph.total_flop / best
        out.row(
            f"one {tokens}-token prompt's {name} lumped graph",
            f"{graph.total_flop / 1e12:.2f} TFLOP",
            f"{floor:.1f} s",
            f"{tokens / floor:.2f} tokens/s",
        )
    views = views_flop()
    out.row("the set's views", f"{views / 1e12:.1f} TFLOP", f"{views / best:.0f} s", "")


def engine_rate(
    out: Results, graphs: dict[str, Graph], best: float, tokens: int, repeats: int
) -> None:
    """The engine's achieved rate, and how its time splits: products (their self time under
    the profiler, which adds little to long calls) and everything else."""
    out.print(
        f"\nThe engine on the same prompt, without the profiler (median of {repeats}), and its "
        "products' own time under the profiler:\n"
    )
    out.table(
        "graph",
        "seconds",
        "achieved",
        "of the best rate",
        "of the rate around it",
        "products",
        "other work",
    )
    for name, graph in graphs.items():
        achieved = graph.total_flop / graph.median
        products = sum(graph.product_seconds.values())
        out.row(
            f"{tokens}-token {name} lumped",
            f"{graph.median:.1f} s",
            f"{achieved / 1e9:.0f} GFLOP/s",
            f"**{achieved / best:.0%}**",
            f"{graph.share_around:.0%}",
            f"{products:.1f} s at {graph.total_flop / products / 1e9:.0f} GFLOP/s",
            f"{max(0.0, graph.median - products):.1f} s",
        )
    full = graphs["full"]
    out.print("\nThe full graph's products by kind (under the profiler):\n")
    out.table("product", "TFLOP", "seconds", "GFLOP/s")
    for op, flop in sorted(full.flop.items(), key=lambda kv: -kv[1]):
        seconds = full.product_seconds[op]
        out.row(op, f"{flop / 1e12:.2f}", f"{seconds:.1f}", f"{flop / seconds / 1e9:.0f}")


def shapes(out: Results, at_shapes: dict[tuple, float], best: float, repeats: int) -> None:
    out.print(f"\nThe BLAS alone at the engine's product shapes (median of {repeats}):\n")
    out.table("product", "batch x (m x k) @ (k x n)", "GFLOP/s", "of the best rate")
    for (name, batch, m, k, n), rate in at_shapes.items():
        out.row(
            name, f"{batch} x ({m} x {k}) @ ({k} x {n})", f"{rate:.0f}", f"{rate * 1e9 / best:.0%}"
        )


if __name__ == "__main__":
    main()
