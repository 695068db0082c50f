"""What storing attention heads on the ATTR edges costs: disk, ingest time, `attribute --by-head`.

    python benchmarks/bench_heads.py [--prompts 120] [--rounds 3] [--attribute 10] [--edges 100000]
                                     [--write-docs]

Each part against servers it starts (as bench_capacity.py does: `circuitstore server start` in a
temporary home, free loopback ports):

1. Encodings: `--edges` relationships written with each candidate encoding of a 3-head split
   into a fresh store, and the bytes each adds per relationship (store size after a clean stop,
   less the size before the relationships).
2. Ingest on the shipped demo model, the first `--prompts` prompts of its corpus (tasks
   interleaved), with `--heads-per-edge 0` and with the default 3: the store's size on disk in
   a fresh store each; then, alternating into an emptied store `--rounds` times, medians of the
   wall time, the engine's seconds, the seconds spent splitting the stored edges by head
   (inside the engine's) and the writer's seconds.
3. Without a server, `attribute --by-head` against a plain `attribute` on the first
   `--attribute` indirect-object prompts (pruned lumped graphs; each edge's split has the exact
   edge as its total, so this also computes those): medians of 3 alternating rounds per prompt.

`--write-docs` also writes the results to docs/performance/bench_heads.md, which the results
page includes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_capacity import counts, disk_bytes, ingest, interleaved  # noqa: E402
from local_server import LocalServer  # noqa: E402

SUMMARY = re.compile(
    r"engine (?P<engine>[\d.]+) s, of which heads (?P<heads>[\d.]+) s; "
    r"writes (?P<writes>[\d.]+) s"
)


@contextmanager
def server_at(home: Path) -> Iterator[tuple[LocalServer, Any]]:
    """A server of its own and a driver to it; stopped on the way out."""
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    server = LocalServer(home, secrets.token_urlsafe(12), heap="2g", pagecache="2g")
    server.start()
    try:
        with open_driver(Neo4jSettings.load(uri=server.uri, password=server.password)) as driver:
            yield server, driver
    finally:
        server.stop()


# -- 1. encodings ---------------------------------------------------------------------------


def encoding_rows(n: int) -> list[dict[str, Any]]:
    rng = random.Random(0)
    rows = []
    for i in range(n):
        numbers = rng.sample(range(144), 3)  # GPT-2 small: 12 layers x 12 heads
        rows.append(
            {
                "i": i,
                "weight": rng.gauss(0, 1),
                "numbers": numbers,
                "names": [f"attn{h // 12}[{h % 12}]" for h in numbers],
                "weights": [rng.gauss(0, 0.3) for _ in range(3)],
                "other": rng.gauss(0, 0.1),
            }
        )
    return rows


def encoding_figures(out, tmp: Path, n: int) -> None:  # type: ignore[no-untyped-def]
    rows = encoding_rows(n)
    out.print(f"\n{n:,} relationships between 1,000 nodes, each encoding in a fresh store\n")
    out.table("encoding of the split", "bytes per relationship", "added by the split")
    base = None
    from cypher import ENCODING_NODES, ENCODINGS

    from circuitstore.schema.apply import apply_schema

    for i, (name, statement) in enumerate(ENCODINGS.items()):
        with server_at(tmp / f"encoding-{i}") as (server, driver):
            apply_schema(driver, "neo4j")  # the GraphNode id constraint the lookups use
            with driver.session() as s:
                s.run(ENCODING_NODES).consume()
            server.stop()  # the size before the relationships
            before = disk_bytes(server.home)
            server.start()
            with driver.session() as s:
                for start in range(0, n, 10_000):
                    s.run(statement, rows=rows[start : start + 10_000]).consume()
        per = (disk_bytes(server.home) - before) / n
        base = per if base is None else base
        out.row(name, f"{per:.0f}", f"{per - base:.0f}")


# -- 2. ingest --------------------------------------------------------------------------------


def one_run(env: dict[str, str], driver, corpus: Path, catalog: Path, k: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    from cypher import WIPE_ALL

    from circuitstore.schema.apply import apply_schema

    with driver.session() as s:
        s.run(WIPE_ALL).consume()
    apply_schema(driver, "neo4j")
    catalog.unlink(missing_ok=True)
    start = time.perf_counter()
    proc = ingest(env, corpus, catalog, "--heads-per-edge", str(k))
    out, err = proc.communicate()
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(err.decode()[-2000:])
    found = SUMMARY.search(out.decode())
    if found is None:
        sys.exit(f"no timing line in: {out.decode()}")
    return {"wall": wall, **{key: float(v) for key, v in found.groupdict().items()}}


def ingest_figures(out, tmp: Path, n_prompts: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    corpus = tmp / "corpus.jsonl"
    corpus.write_text("\n".join(interleaved()[:n_prompts]) + "\n")
    sizes: dict[int, tuple[int, int]] = {}
    for k in (0, 3):  # a fresh store each: a wiped one keeps its files' size
        with server_at(tmp / f"size-{k}") as (server, driver):
            env = {**os.environ, "NEO4J_URI": server.uri, "NEO4J_PASSWORD": server.password}
            one_run(env, driver, corpus, tmp / "size.sqlite", k)
            attr = counts(driver)["attr"]
        sizes[k] = (disk_bytes(server.home), attr)  # after a clean stop
    runs: dict[int, list[dict[str, float]]] = {0: [], 3: []}
    with server_at(tmp / "timing") as (server, driver):
        env = {**os.environ, "NEO4J_URI": server.uri, "NEO4J_PASSWORD": server.password}
        for round_ in range(rounds):
            for k in (0, 3) if round_ % 2 == 0 else (3, 0):
                runs[k].append(one_run(env, driver, corpus, tmp / "timing.sqlite", k))
                print(json.dumps({"heads_per_edge": k, **runs[k][-1]}), flush=True)
    out.print(f"\nDemo model, {n_prompts} prompts, medians of {rounds} runs each (alternating)\n")
    out.table(
        "heads per edge",
        "wall (s)",
        "engine (s)",
        "of which heads (s)",
        "writes (s)",
        "store on disk",
        "ATTR",
        "store bytes / ATTR",
    )
    for k, rows in runs.items():
        med = {key: statistics.median(r[key] for r in rows) for key in rows[0]}
        size, attr = sizes[k]
        out.row(
            k,
            f"{med['wall']:.1f}",
            f"{med['engine']:.1f}",
            f"{med['heads']:.2f}",
            f"{med['writes']:.1f}",
            f"{size / 2**20:.1f} MiB",
            f"{attr:,}",
            f"{size / attr:.0f}",
        )


# -- 3. attribute -----------------------------------------------------------------------------


def attribute_figures(out, n: int) -> None:  # type: ignore[no-untyped-def]
    import torch

    from circuitstore.demo import CORPUS, MODEL, TRANSCODERS
    from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    torch.set_grad_enabled(False)
    engine = AttributionEngine(load_model(MODEL), load_transcoders(TRANSCODERS))
    config = AttributionConfig(mode="lumped")
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    prompts = [r["text"] for r in rows if r["task"] == "ioi"][:n]
    plain: list[float] = []
    split: list[float] = []
    edges = []
    for prompt in prompts:
        times: dict[str, list[float]] = {"plain": [], "split": []}
        for _ in range(3):
            for name, fn in (
                ("plain", lambda p=prompt: engine.attribute(p, config)),
                ("split", lambda p=prompt: engine.attribute_by_head(p, config)),
            ):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        plain.append(statistics.median(times["plain"]))
        split.append(statistics.median(times["split"]))
        edges.append(len(engine.attribute(prompt, config).edges))
    out.print(
        f"\n`attribute` on {len(prompts)} indirect-object prompts (pruned lumped graphs, "
        f"{min(edges)}-{max(edges)} edges): median per prompt {statistics.median(plain):.3f} s, "
        f"with --by-head {statistics.median(split):.3f} s (range {min(split):.3f}-"
        f"{max(split):.3f} s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=120, help="ingest part (0: skip)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attribute", type=int, default=10, help="prompts (0: skip)")
    parser.add_argument("--edges", type=int, default=100_000, help="encodings part (0: skip)")
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' tables")
    args = parser.parse_args()
    from results import Results

    print(json.dumps({"load average": os.getloadavg()}))
    with Results("bench_heads", enabled=args.write_docs) as out:
        with tempfile.TemporaryDirectory(prefix="bench-heads-") as name:
            if args.edges:
                encoding_figures(out, Path(name), args.edges)
            if args.prompts:
                ingest_figures(out, Path(name), args.prompts, args.rounds)
        if args.attribute:
            attribute_figures(out, args.attribute)
    print(json.dumps({"load average": os.getloadavg()}))


if __name__ == "__main__":
    main()
