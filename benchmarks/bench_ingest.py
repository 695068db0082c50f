"""Ingest benchmark: how fast the write path puts edges into a local Neo4j, beside a bare
`UNWIND ... CREATE` loop of the same rows on the same server in the same run; and end-to-end
tokens per second of the ingest job at GPT-2-small scale (random weights), into the store and
with `--parts` (the bulk path; `bench_load.py` measures its `load`).

    python benchmarks/bench_ingest.py [--prompts 40] [--edges 20000] [--repeats 5] [--e2e 3]
                                      [--write-docs]

Starts its own server (`circuitstore server start` in a temporary home, free loopback ports,
4g heap, 4g page cache) unless --use-env is given (then NEO4J_* name an existing server whose
database it WIPES). Prints medians; the write-path figures alternate bare and ingest batches so
both see the same machine load. `--write-docs` also writes the figures to
docs/performance/bench_ingest.md, which the results page includes.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from local_server import LocalServer  # noqa: E402  (a sibling script, found via sys.path)
from results import Results  # noqa: E402

N_LAYERS, D_TC = 12, 4096  # features in the synthetic set (hubs come from a Zipf popularity)
PATHS = {
    "bare": "bare `UNWIND ... CREATE` (id lookups)",
    "ingest (graph)": "ingest, per-prompt graph only",
    "ingest (full)": "ingest, with feature statistics, DRIVES increments and top examples",
}


def zipf_feature(rng: random.Random) -> tuple[int, int]:
    """A feature drawn with Zipf-like popularity: a few hubs fire almost everywhere."""
    rank = min(int(rng.paretovariate(1.1)) - 1, N_LAYERS * D_TC - 1)
    return rank % N_LAYERS, (rank * 7919) % D_TC


def synthetic_payload(i: int, n_edges: int, n_drives: int, rng: random.Random) -> Any:
    from circuitstore.ingest.payload import PromptPayload
    from circuitstore.schema.names import FeatureKey, NodeId

    prompt_id = NodeId.prompt("bench", f"p{i}")
    n_nodes = max(2, n_edges // 10)
    nodes = []
    for j in range(n_nodes):
        layer, index = zipf_feature(rng)
        local = NodeId.feature(layer, j % 64, index) + f"#{j}"
        props = {
            "id": f"{prompt_id}/{local}",
            "localId": local,
            "prompt": prompt_id,
            "kind": "feature",
            "pos": j % 64,
            "layer": layer,
            "transcoderSet": "bench",
            "feature": index,
            "activation": rng.random(),
            "preactivation": rng.random(),
        }
        nodes.append(["Occurrence", props])
    edges = []
    for _ in range(n_edges):
        a, b = sorted(rng.sample(range(n_nodes), 2))
        edges.append([a, b, rng.gauss(0, 1), "residual" if rng.random() < 0.5 else "attention"])
    feats = {FeatureKey("bench", *zipf_feature(rng)).id for _ in range(n_nodes)}
    features = [{"id": f, "n": 1, "sum": 1.0, "max": 1.0} for f in sorted(feats)]
    pairs = {
        (FeatureKey("bench", *zipf_feature(rng)).id, FeatureKey("bench", *zipf_feature(rng)).id)
        for _ in range(n_drives)
    }
    drives = [
        {"s": s, "t": t, "n": 1, "sum": 0.5, "sumAbs": 0.5, "maxAbs": 0.5} for s, t in sorted(pairs)
    ]
    top = [{"id": f, "activation": rng.random(), "pos": 0} for f in sorted(feats)]
    prompt = {"id": prompt_id, "key": f"p{i}", "transcoderSet": "bench", "run": "bench"}
    return PromptPayload(prompt_id, prompt, nodes, edges, features, drives, top)


def graph_only(payload: Any) -> Any:
    from dataclasses import replace

    return replace(payload, features=[], drives=[], top=[])


def bare_loop(driver: Any, payload: Any) -> None:
    """The same node and edge rows with plain UNWIND ... CREATE, one transaction per prompt."""
    from cypher import BARE_CREATE_EDGES, BARE_CREATE_NODES

    ids = [n[1]["id"] for n in payload.nodes]
    edges = [[ids[a], ids[b], w, k] for a, b, w, k in payload.edges]

    def work(tx: Any) -> None:
        tx.run(BARE_CREATE_NODES, nodes=payload.nodes).consume()
        tx.run(BARE_CREATE_EDGES, edges=edges).consume()

    with driver.session() as session:
        session.execute_write(work)


def reset(driver: Any) -> None:
    from cypher import WIPE_GRAPH_NODES, WIPE_PROMPTS

    with driver.session() as s:
        for statement in (WIPE_GRAPH_NODES, WIPE_PROMPTS):
            s.run(statement).consume()


def write_path_figures(out: Results, driver: Any, args: argparse.Namespace) -> None:
    from circuitstore.ingest.writer import StoreWriter, TranscoderSetNode
    from circuitstore.schema.apply import apply_schema
    from circuitstore.schema.names import FeatureKey

    apply_schema(driver, "neo4j")
    writer = StoreWriter(driver, "neo4j", top_k=20)
    features = (
        {"id": FeatureKey("bench", lyr, i).id, "props": {"layer": lyr, "index": i}}
        for lyr in range(N_LAYERS)
        for i in range(D_TC)
    )
    writer.ensure_transcoder_set(TranscoderSetNode("bench", {}, "bench"), features)
    rng = random.Random(0)
    payloads = [synthetic_payload(i, args.edges, args.drives, rng) for i in range(args.prompts)]
    rates: dict[str, list[float]] = {"bare": [], "ingest (graph)": [], "ingest (full)": []}
    per_rep = max(1, args.prompts // args.repeats)
    for rep in range(args.repeats):
        batch = payloads[rep * per_rep : (rep + 1) * per_rep]
        for name, fn in (
            ("bare", lambda p: bare_loop(driver, p)),
            ("ingest (graph)", lambda p: writer.write_prompt(graph_only(p))),
            ("ingest (full)", writer.write_prompt),
        ):
            reset(driver)
            start = time.perf_counter()
            for p in batch:
                fn(p)
            rates[name].append(sum(len(p.edges) for p in batch) / (time.perf_counter() - start))
    bare = statistics.median(rates["bare"])
    out.print(
        f"\nWrite path: {per_rep} prompts x {args.edges:,} ATTR edges per batch, "
        f"{args.drives:,} DRIVES rows per prompt (full), medians of {args.repeats} batches\n"
    )
    out.table("path", "ATTR relationships / s", "vs. bare loop")
    for name, values in rates.items():
        med = statistics.median(values)
        out.row(PATHS[name], f"{med:,.0f}", f"{med / bare:.2f}")


def end_to_end(out: Results, env: dict[str, str], args: argparse.Namespace) -> None:
    """`circuitstore ingest` with its default settings over 64-token prompts on a
    GPT-2-small-scale random model, into the store and with `--parts`, on the same prompts:
    per run its summary (engine and write seconds, stored edges, DRIVES rows, tokens/s), then
    how far each run's wall time is above its engine time (the writes overlap the engine: the
    bulk path's goal is within 10%); peak RSS of the ingest processes."""
    import resource

    from bench_attribution import build_model

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        build_model(folder / "model")  # the model, and transcoders calibrated on it
        (folder / "model" / "transcoders").rename(folder / "transcoders")
        words = [f"w{i}" for i in range(2000)]
        rng = random.Random(2)
        corpus = folder / "corpus.txt"
        corpus.write_text("\n".join(" ".join(rng.choices(words, k=40)) for _ in range(args.e2e)))
        runs = {}
        for path, extra in (("store", {}), ("parts", {"parts": str(folder / "parts")})):
            runs[path] = _ingest(folder, corpus, extra, env, path)
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
        out.print(
            f"\nEnd to end: the ingest job over {args.e2e} 64-token prompts, GPT-2-small "
            "scale (random weights), default settings, into the store and with `--parts`; "
            "the set's views (the same on both paths, after the prompts) are left out:\n"
        )
        out.table("path", "wall s", "engine s", "writes s (alongside)", "wall / engine")
        for path, (_, wall, engine, writes) in runs.items():
            out.row(path, f"{wall:.1f}", f"{engine:.1f}", f"{writes:.1f}", f"{wall / engine:.3f}")
        for path, (lines, *_) in runs.items():
            out.print(f"\nThe {path} run's summary:\n")
            for line in lines:
                out.print(f"- {line.strip()}")
        out.print(f"\nPeak RSS of the ingest processes: {peak:.2f} GiB")


SUMMARY = re.compile(
    r"([\d.]+) s \([\d.]+ tokens/s; engine ([\d.]+) s.*writes ([\d.]+) s alongside"
)


# One run of the ingest job as the command runs it, in a process of its own, without the
# set's views (minutes to hours of arithmetic on a CPU, the same on both paths, and after the
# prompts): `IngestRunner` with its `views` off, the summary printed as the command prints it.
RUN = """
import sys
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.runner import IngestRunner
from circuitstore.schema.connection import Neo4jSettings, open_driver
cfg = IngestConfig(**eval(sys.argv[1]))
if cfg.parts:
    runner = IngestRunner(cfg, None)
    runner.views = False
    summary = runner.run()
else:
    settings = Neo4jSettings.load()
    with open_driver(settings) as driver:
        runner = IngestRunner(cfg, driver, settings.database, settings.uri)
        runner.views = False
        summary = runner.run()
print("\\n".join(summary.lines()))
"""


def _ingest(
    folder: Path, corpus: Path, extra: dict[str, Any], env: dict[str, str], name: str
) -> tuple[list[str], float, float, float]:
    """One ingest run: its summary lines, wall, engine and write seconds (of the prompts)."""
    fields = {
        "model": str(folder / "model"),
        "transcoders": str(folder / "transcoders"),
        "prompts": str(corpus),
        "max_tokens": 64,
        "truncate": True,
        "progress": False,
        "run": "e2e",
        "catalog": f"sqlite:///{folder / f'catalog-{name}.sqlite'}",
        **extra,
    }
    cmd = [sys.executable, "-c", RUN, repr(fields)]
    done = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"ingest failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    lines = done.stdout.strip().splitlines()
    found = next(m for line in lines if (m := SUMMARY.search(line)))
    wall, engine, writes = (float(g) for g in found.groups())
    return lines, wall, engine, writes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=40, help="write path (0: skip)")
    parser.add_argument("--edges", type=int, default=20000)
    parser.add_argument("--drives", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--e2e", type=int, default=3, help="prompts for the end-to-end run (0: skip)"
    )
    parser.add_argument("--use-env", action="store_true")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' figures")
    args = parser.parse_args()

    from circuitstore.schema.apply import apply_schema
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    server = LocalServer(Path(tempfile.mkdtemp(prefix="bench-neo4j-")), secrets.token_urlsafe(12))
    if not args.use_env:
        server.start()
    env = {} if args.use_env else {"NEO4J_URI": server.uri, "NEO4J_PASSWORD": server.password}
    try:
        with Results("bench_ingest", enabled=args.write_docs) as out:
            settings = Neo4jSettings.load(
                uri=env.get("NEO4J_URI"), password=env.get("NEO4J_PASSWORD")
            )
            with open_driver(settings) as driver:
                if args.prompts:
                    write_path_figures(out, driver, args)
                from cypher import WIPE_ALL

                with driver.session() as s:
                    s.run(WIPE_ALL).consume()
                apply_schema(driver, "neo4j")  # the wipe took the version record with it
            if args.e2e:
                end_to_end(out, env, args)
    finally:
        if not args.use_env:
            server.stop()


if __name__ == "__main__":
    main()
