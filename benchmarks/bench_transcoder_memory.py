"""Peak memory of loading a large transcoder set in bf16, per layout and file dtype.

Writes synthetic sets of Gemma-2-2B width (d_model 2304, 16384 features per layer) to a scratch
folder, then loads each in a fresh interpreter under `/usr/bin/time -v` and reports the peak
resident set against a bare interpreter that only imports the loader:

- circuit-tracer files already in bf16, loaded as bf16: tensors memory-mapped, nothing copied;
- the same files in float32, loaded as bf16: each tensor converted alone;
- Gemma Scope npz (float32), loaded as bf16: each array read, checked and converted alone.

Each child also reports its resident set after loading, after reading 100 decoder rows per
layer, and after encoding one position with every layer (which reads every encoder).

    python benchmarks/bench_transcoder_memory.py --layers 8 [--scratch DIR]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

CHILD = """
import sys, time, torch
from circuitstore.ingest.transcoder import load_transcoders
def rss():
    fields = dict(line.split(":", 1) for line in open("/proc/self/status"))
    return "/".join(str(int(fields[k].split()[0]) // 1024) for k in ("VmRSS", "RssAnon", "RssFile"))
if sys.argv[1] == "bare":
    print("loaded", rss()); sys.exit()
t0 = time.perf_counter()
tcs = load_transcoders(sys.argv[1], dtype=torch.bfloat16)
print("loaded", rss(), f"{time.perf_counter() - t0:.1f}s")
rows = torch.randperm(tcs.d_tc, generator=torch.Generator().manual_seed(0))[:100]
s = sum(float(tc.W_dec[rows].float().sum()) for tc in tcs.transcoders)
print("rows", rss())
x = torch.randn(1, tcs[0].d_model).to(torch.bfloat16)
s += sum(float(tc.encode(x).float().sum()) for tc in tcs.transcoders)
print("encoded", rss())
"""


def write_sets(root: Path, layers: int) -> dict[str, Path]:
    """The three sets (skipped when already there)."""
    import torch

    from circuitstore.ingest.synthetic import random_transcoders, save_transcoders

    sets = {
        "ct bf16 files": (root / "ct_bf16", torch.bfloat16, "circuit-tracer"),
        "ct f32 files": (root / "ct_f32", torch.float32, "circuit-tracer"),
        "gemma-scope npz (f32)": (root / "gemma", torch.float32, "gemma-scope"),
    }
    for folder, dtype, layout in sets.values():
        if folder.exists():
            continue
        for layer in range(layers):  # one layer at a time, into the same folder
            one = random_transcoders(1, 2304, 16384, seed=layer, dtype=dtype, activation="jumprelu")
            tc = replace(one[0], layer=layer, hook_point=f"blocks.{layer}.ln2.hook_normalized")
            save_transcoders(replace(one, transcoders=(tc,)), folder, layout=layout)
    return {name: folder for name, (folder, _, _) in sets.items()}


def measure(arg: str) -> tuple[int, list[str]]:
    """Peak RSS (MiB) of a child loading `arg`, and its own lines."""
    done = subprocess.run(
        ["/usr/bin/time", "-v", sys.executable, "-c", CHILD, arg],
        capture_output=True,
        text=True,
        check=True,
    )
    peak = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", done.stderr)[1])  # type: ignore[index]
    return peak // 1024, done.stdout.splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--scratch", type=Path, default=None)
    args = parser.parse_args()
    root = args.scratch or Path(tempfile.mkdtemp(prefix="tcmem-"))
    t0 = time.perf_counter()
    sets = write_sets(root, args.layers)
    print(f"sets written in {time.perf_counter() - t0:.0f}s under {root}")
    bare, lines = measure("bare")
    print(f"bare interpreter: peak {bare} MiB; {lines[0]} (RSS/anon/file MiB)")
    for name, folder in sets.items():
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20
        peak, lines = measure(str(folder))
        print(f"{name}: {size:.0f} MiB on disk; peak {peak} MiB (+{peak - bare} over bare)")
        for line in lines:
            print("   ", line, "(RSS/anon/file MiB)")


if __name__ == "__main__":
    main()
