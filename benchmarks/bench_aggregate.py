"""What the corpus aggregate (DRIVES) adds to a prompt's engine pass, at GPT-2-small scale.

The engine benchmark's model and prompt; per round, in alternation: the bare chunk loop, the
loop with the DRIVES sink (`EdgeChunk.feature_edges`, which scans each block source-major, the
engine's layout), and the loop with the same reduction scanning across the block (target-major
masks), the baseline. Medians over rounds.

    python benchmarks/bench_aggregate.py --rounds 3 --threads 1 [--write-docs]

`--write-docs` also writes the table to docs/performance/bench_aggregate.md, which the results
page includes.
"""

from __future__ import annotations

import argparse
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

D_TC, N_LAYERS, FLOOR = 24576, 12, 0.01


def across_the_block(chunk, n_features: int, min_fraction: float):  # type: ignore[no-untyped-def]
    """The reduction with target-major masks: the baseline."""
    floor = min_fraction * chunk.row_abs_sums()
    mask = chunk.allowed()
    mask &= (chunk.targets < n_features)[:, None] & (chunk.sources < n_features)[None, :]
    mask &= chunk.dense.abs() >= floor[:, None]
    rows, cols = mask.nonzero(as_tuple=True)
    return chunk.sources[cols], chunk.targets[rows], chunk.dense[rows, cols]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' table")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_grad_enabled(False)
    from circuitstore.ingest.aggregate import DrivesSink
    from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine, EdgeChunk
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    here = Path(__file__).with_name("bench_attribution.py")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "gpt2-random"
        build = [sys.executable, str(here), "--model-dir", str(folder)]
        subprocess.run(build, check=True, capture_output=True)
        model = load_model(folder)
        engine = AttributionEngine(model, load_transcoders(folder / "transcoders"))
    prompt = token_stream(model.bridge.tokenizer.bos_token_id)
    prompt(128)  # the calibration prompt, as in bench_attribution
    config = AttributionConfig(mode="lumped", prune=None)
    state = engine.prepare_tokens(prompt(args.tokens), config)
    source_major = EdgeChunk.feature_edges

    def loop(reduce: Callable[..., object] | None) -> tuple[float, int]:
        sink = DrivesSink(state.nodes, state.n_features, D_TC, N_LAYERS, FLOOR)
        EdgeChunk.feature_edges = reduce or source_major  # type: ignore[method-assign]
        start = time.perf_counter()
        with engine.on_device():
            for chunk in engine.chunks(state, config):
                if reduce is not None:
                    sink.consume(chunk)
        seconds = time.perf_counter() - start
        EdgeChunk.feature_edges = source_major  # type: ignore[method-assign]
        return seconds, len(sink.result()) if reduce is not None else 0

    variants = {"bare": None, "DRIVES": source_major, "DRIVES across": across_the_block}
    times: dict[str, list[float]] = {name: [] for name in variants}
    rows = {}
    print(f"threads {torch.get_num_threads()}, load {load_average()}", flush=True)
    for _ in range(args.rounds):
        for name, reduce in variants.items():
            seconds, rows[name] = loop(reduce)
            times[name].append(seconds)
            print(f"{name}: {seconds:.1f} s", flush=True)
    assert rows["DRIVES"] == rows["DRIVES across"], rows
    bare = statistics.median(times["bare"])
    names = {
        "bare": "bare",
        "DRIVES": "with `DRIVES`",
        "DRIVES across": "with `DRIVES` scanning across the block (target-major masks)",
    }
    with Results("bench_aggregate", enabled=args.write_docs) as out:
        out.print(
            f"GPT-2 scale, {args.tokens} tokens, {torch.get_num_threads()} threads, medians of "
            f"{args.rounds} alternating rounds; both reductions give the same "
            f"{rows['DRIVES']:,} rows.\n"
        )
        out.table("chunk loop", "full lumped graph", "over the bare loop")
        for name, ts in times.items():
            med = statistics.median(ts)
            out.row(names[name], f"{med:.1f} s", "" if name == "bare" else f"+{med - bare:.1f} s")
    print(f"load {load_average()}")


if __name__ == "__main__":
    main()
