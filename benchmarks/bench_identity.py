"""What knowing a model and a transcoder set by all of their weights costs, at GPT-2-small size.

    python benchmarks/bench_identity.py [--repeats 5] [--write-docs]

Builds tensors of GPT-2 small's shapes (124 M parameters, float32) and of its 12 transcoders
(d_tc 24,576: 453 M parameters), then times, over several runs, the identity hash
(`weights_digest`: sha256 over every tensor's bytes) and the NaN/inf check of the model's weights
(`first_non_finite`). Prints medians, and the same hash's throughput on one 256 MB buffer as a
baseline measured in the same run. `--write-docs` also writes the table to
docs/performance/bench_identity.md, which the results page includes.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import time

import torch
from results import Results

from circuitstore.ingest.safeload import first_non_finite, weights_digest

D, L, V, CTX, D_TC = 768, 12, 50257, 1024, 24576


def gpt2_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, D), "wpe": (CTX, D)}
    for layer in range(L):
        p = f"h.{layer}."
        shapes |= {p + "attn.c_attn.weight": (D, 3 * D), p + "attn.c_proj.weight": (D, D)}
        shapes |= {p + "mlp.c_fc.weight": (D, 4 * D), p + "mlp.c_proj.weight": (4 * D, D)}
        shapes |= {p + n: (4 * D,) if "fc" in n else (D,) for n in ("mlp.c_fc.bias", "ln_1.bias")}
    return shapes


def transcoder_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(L):
        shapes |= {f"{layer}.W_enc": (D, D_TC), f"{layer}.W_dec": (D_TC, D)}
        shapes |= {f"{layer}.b_enc": (D_TC,), f"{layer}.b_dec": (D,), f"{layer}.b_dec_out": (D,)}
    return shapes


def timed(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' table")
    args = parser.parse_args()
    out = Results("bench_identity", enabled=args.write_docs)
    gen = torch.Generator().manual_seed(0)
    model = [(n, torch.randn(s, generator=gen)) for n, s in gpt2_shapes().items()]
    tcs = [(n, torch.randn(s, generator=gen)) for n, s in transcoder_shapes().items()]
    buffer = torch.randn(64 << 20, generator=gen).numpy()
    parts = {"model": model, "transcoders": tcs}
    gb = {name: sum(t.numel() * 4 for _, t in part) / 1e9 for name, part in parts.items()}
    with out:
        out.print(f"Medians of {args.repeats} runs, float32 tensors of GPT-2 small's shapes.\n")
        out.table("work", "bytes", "seconds", "GB/s")
        base = timed(lambda: hashlib.sha256(buffer).hexdigest(), args.repeats)
        size = buffer.nbytes / 1e9
        out.row(
            "sha256 of one buffer (the baseline)",
            f"{size:.2f} GB",
            f"{base:.3f}",
            f"{size / base:.2f}",
        )
        for name, part in parts.items():
            t = timed(lambda part=part: weights_digest(part), args.repeats)
            out.row(
                f"identity hash of the {name}",
                f"{gb[name]:.2f} GB",
                f"{t:.2f}",
                f"{gb[name] / t:.2f}",
            )
        check = timed(lambda: first_non_finite(model), args.repeats)
        out.row("NaN/inf check of the model", f"{gb['model']:.2f} GB", f"{check:.2f}", "")


if __name__ == "__main__":
    main()
