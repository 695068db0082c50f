"""Attribution engine benchmark at GPT-2-small scale (random weights), on this machine's CPU.

    nice python benchmarks/bench_attribution.py [--lengths 64 128] [--repeats 3 1]
        [--exact-repeats 1] [--skip-exact] [--threads N] [--device auto|cpu|cuda] [--tf32]
        [--write-docs]

12 layers, d_model 768, 12 heads, d_vocab 50257, transcoders d_tc 24576 with encoder biases
calibrated so about 64 features fire per token per layer. Reports medians of seconds per prompt:
the bare forward (model + 12 encoders), the full graph in exact and lumped modes (every edge
computed and streamed through a sink that counts them and checks conservation; a full graph has
~10^8-10^9 edges and is not held in memory), the pruned graph, and splitting the pruned graph's
edges by attention head (what ingest stores: the 3 strongest heads per edge); plus peak RSS and
the load average. The model and the calibrated transcoders (published pickle layout) are written
to a temporary folder in a child process and loaded through the real loaders. On a shared
machine `--threads 1` avoids OpenMP threads waiting on each other. With `--device cuda` the
engine runs on the GPU (timings synchronise it; peak GPU memory is reported); `--tf32` adds, for
each length, the pruned and full lumped graphs with TF32 products and their conservation error.
`--write-docs` also writes the table to docs/performance/bench_attribution.md (on a GPU,
bench_attribution-cuda.md), which the results page includes.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

# As circuitstore/__init__.py does, but before torch (imported first here) starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

FEATURES_PER_TOKEN = 64


@dataclass
class CountSink:
    """Counts edges and checks conservation (each target's in-edges add up to its value)."""

    values: torch.Tensor
    edges: int = 0
    worst: float = 0.0

    def consume(self, chunk) -> None:
        self.edges += chunk.n_edges()
        want = self.values[chunk.targets].double()
        err = (chunk.row_sums().double() - want).abs() / want.abs().clamp_min(1.0)
        self.worst = max(self.worst, float(err.max()))


def peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_model(folder: Path) -> None:
    """The model, and transcoders calibrated on it, written in the real formats (run in a child
    process, so the measured one holds only what the real loaders give it)."""
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.synthetic import ModelSpec, save_model, save_transcoders

    save_model(
        folder,
        ModelSpec(n_layers=12, d_model=768, n_heads=12, n_ctx=1024, vocab_size=2000, d_vocab=50257),
    )
    model = load_model(folder)
    calibration = token_stream(model.bridge.tokenizer.bos_token_id)(128)
    save_transcoders(calibrated_transcoders(model, calibration), folder / "transcoders")


def token_stream(bos: int):
    """Random prompts with BOS first: the first one calibrates, the others are measured."""
    gen = torch.Generator().manual_seed(1)
    return lambda n: torch.cat(
        [torch.tensor([bos]), torch.randint(1, 2000, (n - 1,), generator=gen)]
    )


def calibrated_transcoders(engine_model, tokens):
    """Random transcoders whose encoder thresholds make ~64 features fire per token and layer
    (set on a calibration prompt, not the measured ones)."""
    from circuitstore.ingest.model import run_forward
    from circuitstore.ingest.synthetic import random_transcoders

    d_tc = 24576
    tcs = random_transcoders(12, 768, d_tc, active_fraction=FEATURES_PER_TOKEN / d_tc)
    cache = run_forward(engine_model, tokens)
    fixed = []
    for layer, tc in enumerate(tcs.transcoders):
        pre = tc.preactivation(cache.ln2_normalized[layer, 1:])
        k = FEATURES_PER_TOKEN * pre.shape[0]
        cut = torch.topk(pre.flatten(), k).values[-1]
        fixed.append(replace(tc, b_enc=tc.b_enc - cut))
        del pre
    return replace(tcs, transcoders=tuple(fixed))


def load_average() -> str:
    return " / ".join(f"{x:.1f}" for x in os.getloadavg())


DEVICE = torch.device("cpu")


def sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        out = fn()
        sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def gpu_peak_gib() -> float:
    return torch.cuda.max_memory_allocated(DEVICE) / 2**30 if DEVICE.type == "cuda" else 0.0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128])
    parser.add_argument(
        "--repeats", type=int, nargs="+", default=[3], help="per length (the last one repeats)"
    )
    parser.add_argument("--exact-repeats", type=int, default=1)
    parser.add_argument("--skip-exact", action="store_true")
    parser.add_argument("--exact-lengths", type=int, nargs="*", default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--tf32", action="store_true", help="also measure TF32 products (CUDA)")
    parser.add_argument(
        "--chunk-sweep",
        type=int,
        nargs="*",
        default=[],
        help="log2 of chunk sizes to time full lumped graphs of the first length with",
    )
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' table")
    parser.add_argument("--model-dir", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.model_dir is not None:  # child process: only writes the model and transcoders
        build_model(args.model_dir)
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from circuitstore.ingest.attribution import AttributionEngine
    from circuitstore.ingest.device import resolve_device
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    global DEVICE
    DEVICE = resolve_device(args.device)
    print(f"device: {DEVICE} ({device_name()})", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-random"
        subprocess.run(
            [sys.executable, __file__, "--model-dir", str(folder)], check=True, capture_output=True
        )
        model = load_model(folder, device=DEVICE)
        print(f"model loaded: peak RSS {peak_rss_gib():.2f} GiB", flush=True)
        engine = AttributionEngine(model, load_transcoders(folder / "transcoders"))
    print(f"transcoders loaded: peak RSS {peak_rss_gib():.2f} GiB", flush=True)
    prompt = token_stream(model.bridge.tokenizer.bos_token_id)
    prompt(128)  # the calibration prompt
    rows, loads = [], [load_average()]
    for i, n in enumerate(args.lengths):
        tokens = prompt(n)
        reps = args.repeats[min(i, len(args.repeats) - 1)]
        exact = not args.skip_exact and (args.exact_lengths is None or n in args.exact_lengths)
        rows.append(measure(engine, tokens, reps, args.exact_repeats if exact else 0))
        if args.tf32:
            rows[-1].update(measure_tf32(engine, tokens, reps))
        loads.append(load_average())
    for log2 in args.chunk_sweep:
        chunk_size(engine, prompt(args.lengths[0]), 1 << log2, args.repeats[0])
    from results import Results

    gpu = device_name() if DEVICE.type == "cuda" else None
    name = "bench_attribution" + ("-cuda" if gpu else "")
    with Results(name, enabled=args.write_docs, accelerator=gpu) as out:
        print_table(out, rows, args, loads)


def chunk_size(engine, tokens: torch.Tensor, elements: int, reps: int) -> None:
    """A full lumped graph with another chunk size (the default suits CPU caches)."""
    from circuitstore.ingest.attribution import AttributionConfig, ChunkPlan

    cfg = AttributionConfig(mode="lumped", prune=None, chunk=ChunkPlan(elements))

    def full():
        with engine.on_device():
            state = engine.prepare_tokens(tokens, cfg)
            sink = CountSink(state.nodes.value)
            for chunk in engine.chunks(state, cfg):
                sink.consume(chunk)
            return sink.edges

    seconds, edges = timed(full, reps)
    n = int(tokens.shape[0])
    print(
        f"chunk 2^{elements.bit_length() - 1} floats: full lumped graph of {n} tokens in "
        f"{seconds:.3f} s ({n / seconds:.0f} tokens/s, {edges:.3g} edges), "
        f"GPU peak {gpu_peak_gib():.2f} GiB",
        flush=True,
    )


def device_name() -> str:
    if DEVICE.type == "cuda":
        return torch.cuda.get_device_name(DEVICE)
    return f"{os.cpu_count()} CPUs, {torch.get_num_threads()} threads"


def measure_tf32(engine, tokens: torch.Tensor, reps: int) -> dict[str, object]:
    """TF32 products against float32: time of the full lumped graph, conservation of the full
    exact graph (lumped conservation holds by construction: its remainders absorb any error),
    and the pruned lumped graph's kept features and edge weights."""
    from circuitstore.ingest.attribution import AttributionConfig, PruneConfig
    from circuitstore.ingest.device import use_tf32

    lumped = AttributionConfig(mode="lumped", prune=None)
    exact = AttributionConfig(mode="exact", prune=None)
    pruned = AttributionConfig(mode="lumped", prune=PruneConfig())

    def full(cfg):
        with engine.on_device():
            state = engine.prepare_tokens(tokens, cfg)
            sink = CountSink(state.nodes.value)
            for chunk in engine.chunks(state, cfg):
                sink.consume(chunk)
            return sink.worst

    def kept():
        graph = engine.graph(engine.prepare_tokens(tokens, pruned), pruned)
        ids = graph.nodes.ids()
        edges = zip(graph.edges.source.tolist(), graph.edges.target.tolist(), strict=True)
        weights = graph.edges.weight.tolist()
        return {(ids[s], ids[t]): w for (s, t), w in zip(edges, weights, strict=True)}

    reference = kept()
    row: dict[str, object] = {}
    use_tf32(True)
    try:
        row["full_lumped_tf32"], _ = timed(lambda: full(lumped), reps)
        _, row["conservation_exact_tf32"] = timed(lambda: full(exact), 1)
        tf32 = kept()
    finally:
        use_tf32(False)
    same = reference.keys() & tf32.keys()
    errors = sorted(abs(tf32[k] - reference[k]) / max(abs(reference[k]), 1e-12) for k in same)
    row["kept_edges_jaccard_tf32"] = len(same) / len(reference.keys() | tf32.keys())
    row["edge_rel_error_median_tf32"] = errors[len(errors) // 2] if errors else 0.0
    row["edge_rel_error_p99_tf32"] = errors[int(len(errors) * 0.99)] if errors else 0.0
    print(row, flush=True)
    return row


def measure(engine, tokens: torch.Tensor, reps: int, exact_reps: int) -> dict[str, object]:
    from circuitstore.ingest.attribution import AttributionConfig, PruneConfig
    from circuitstore.ingest.attribution.heads import strongest_heads
    from circuitstore.ingest.attribution.state import feature_activations
    from circuitstore.ingest.model import run_forward

    def forward() -> None:  # returns nothing: 12 layers' activations would stay in memory
        with engine.on_device():
            feature_activations(engine.transcoders, run_forward(engine.model, tokens))

    row: dict[str, object] = {"tokens": int(tokens.shape[0]), "reps": reps}
    row["forward"], _ = timed(forward, reps)
    for mode, n_reps in (("lumped", reps), ("exact", exact_reps)):
        if n_reps == 0:
            continue
        full_cfg = AttributionConfig(mode=mode, prune=None)

        def full(cfg=full_cfg):
            with engine.on_device():
                state = engine.prepare_tokens(tokens, cfg)
                sink = CountSink(state.nodes.value)
                for chunk in engine.chunks(state, cfg):
                    sink.consume(chunk)
                return state.n_features, sink.edges, sink.worst

        row[f"full_{mode}"], out = timed(full, n_reps)
        row["features"], row[f"edges_{mode}"], row[f"conservation_{mode}"] = out
        pruned_cfg = AttributionConfig(mode=mode, prune=PruneConfig())

        def pruned(cfg=pruned_cfg):
            state = engine.prepare_tokens(tokens, cfg)
            return state, engine.graph(state, cfg)

        row[f"pruned_{mode}"], (state, graph) = timed(pruned, n_reps)
        # What ingest adds per prompt to store each kept edge's 3 strongest heads.
        row[f"heads_{mode}"], _ = timed(lambda s=state, g=graph: strongest_heads(s, g, 3), n_reps)
        row[f"pruned_edges_{mode}"] = len(graph.edges)
        row[f"pruned_nodes_{mode}"] = len(graph.nodes)
        row[f"unexpanded_{mode}"] = graph.metadata["unexpanded_influence"]
        print(
            row,
            f"peak RSS {peak_rss_gib():.2f} GiB, GPU peak {gpu_peak_gib():.2f} GiB, "
            f"load {load_average()}",
            flush=True,
        )
    return row


def print_table(out, rows, args, loads: list[str]) -> None:  # type: ignore[no-untyped-def]
    from circuitstore.ingest.attribution import PruneConfig

    reps = ", ".join(f"{r['tokens']} tokens: {r['reps']}" for r in rows)
    out.print(
        f"\nGPT-2-small-scale random model, d_tc 24576, ~{FEATURES_PER_TOKEN} features/token/layer,"
        f" on {DEVICE} ({device_name()}); medians of runs ({reps}; exact: {args.exact_repeats})\n"
    )
    out.print(
        "| tokens | active features | forward + encoders (s) | full lumped (s) | edges (lumped) "
        "| pruned lumped (s) | kept nodes / edges (lumped) | heads of the kept edges (s) "
        "| full exact (s) | pruned exact (s) |"
    )
    out.print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        out.print(
            f"| {r['tokens']} | {r['features']} | {_f(r, 'forward')} | {_f(r, 'full_lumped')} "
            f"| {r['edges_lumped']:.3g} | {_f(r, 'pruned_lumped')} "
            f"| {r['pruned_nodes_lumped']} / {r['pruned_edges_lumped']} | {_f(r, 'heads_lumped')} "
            f"| {_f(r, 'full_exact')} "
            f"| {_f(r, 'pruned_exact')} |"
        )
    skipped = ", ".join(
        f"{r['tokens']} tokens {k.removeprefix('unexpanded_')}: {float(r[k]):.3f}"
        for r in rows
        for k in r
        if str(k).startswith("unexpanded")
    )
    out.print(
        f"\npruned graphs skip the targets holding the smallest {PruneConfig().skip_fraction:.0%}"
        f" of each layer's influence; share of the influence left unexpanded: {skipped}"
    )
    worst = max(float(r[k]) for r in rows for k in r if str(k).startswith("conservation"))
    out.print(
        f"\npeak RSS of the whole process (model + transcoders + engine): {peak_rss_gib():.2f} GiB;"
        f" peak GPU memory {gpu_peak_gib():.2f} GiB;"
        f" worst relative conservation error {worst:.1e}; load average (1/5/15 min) at start and"
        f" after each length: {'; '.join(loads)}"
    )


def _f(row: dict[str, object], key: str) -> str:
    return f"{row[key]:.2f}" if key in row else "-"


if __name__ == "__main__":
    main()
