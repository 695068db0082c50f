"""Capacity: how big a store a corpus makes and how fast one Neo4j server takes it.

    python benchmarks/bench_capacity.py [--steps 100 200 400 800] [--workers 1 2 4] [--write-docs]

On the shipped demo model and corpus (default settings), against a server it starts
(`circuitstore server start` in a temporary home, free loopback ports, 2g heap and page cache):

1. Growth: ingests the demo corpus (its four tasks interleaved) in growing prefixes (100, 200,
   400, 800 prompts; each step adds to the same store) and after each step counts prompts,
   graph nodes, ATTR and DRIVES relationships, and the store's size on disk (the database
   folder, after a clean stop).
2. Concurrency: the first `--concurrency-prompts` prompts (default 200) again, into an emptied
   store, as 1, 2 and 4 concurrent `--shard I/N` processes, timed from the first start to the
   last exit.

Prints a table for each. Bytes per relationship are the store's size over all relationships;
DRIVES growth is what makes a corpus's aggregate sublinear in its size. `--write-docs` also
writes them to docs/performance/bench_capacity.md, which the results page includes.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from local_server import LocalServer  # noqa: E402  (a sibling script)
from results import Results  # noqa: E402

from circuitstore.demo import CORPUS, MODEL, TRANSCODERS  # noqa: E402


def interleaved() -> list[str]:
    """The corpus's lines with its tasks taken in turn (the file lists them task by task), so
    that every prefix holds all four."""
    lines = CORPUS.read_text().splitlines()
    tasks: dict[str, list[str]] = {}
    for line in lines:
        tasks.setdefault(json.loads(line)["task"], []).append(line)
    rounds = zip(*tasks.values(), strict=False)
    return [line for batch in rounds for line in batch]


def counts(driver) -> dict[str, int]:  # type: ignore[no-untyped-def]
    from cypher import CAPACITY_COUNTS

    with driver.session() as s:
        return dict(s.run(CAPACITY_COUNTS).single())


def disk_bytes(home: Path) -> int:
    data = home / "data" / "databases" / "neo4j"
    return sum(p.stat().st_size for p in data.rglob("*") if p.is_file())


def ingest(env: dict[str, str], corpus: Path, catalog: Path, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "circuitstore", "ingest",
        "--model", str(MODEL), "--transcoders", str(TRANSCODERS), "--prompts", str(corpus),
        "--run", "capacity", "--catalog", f"sqlite:///{catalog}", "--no-progress", *extra,
    ]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def growth(
    out: Results, server: LocalServer, env: dict[str, str], driver, steps: list[int], tmp: Path
) -> None:  # type: ignore[no-untyped-def]
    lines = interleaved()
    out.print("\nGrowth: the corpus in growing prefixes, into one store.\n")
    out.table("prompts", "graph nodes", "ATTR", "DRIVES", "store on disk", "bytes / relationship")
    for n in steps:
        corpus = tmp / f"corpus-{n}.jsonl"
        corpus.write_text("\n".join(lines[:n]) + "\n")
        proc = ingest(env, corpus, tmp / "growth.sqlite")
        _, err = proc.communicate()
        if proc.returncode:
            sys.exit(err.decode()[-2000:])
        c = counts(driver)
        # A clean stop checkpoints every page to the store files (Community Edition has no
        # checkpoint procedure); their size is read while the server is down.
        server.stop()
        size = disk_bytes(server.home)
        server.start()
        rels = c["attr"] + c["drives"] + c["other"]
        out.row(
            c["prompts"],
            f"{c['nodes']:,}",
            f"{c['attr']:,}",
            f"{c['drives']:,}",
            f"{size / 2**20:.1f} MiB",
            f"{size / max(rels, 1):.0f}",
        )


def concurrency(
    out: Results, env: dict[str, str], driver, workers: list[int], n: int, tmp: Path
) -> None:  # type: ignore[no-untyped-def]
    from cypher import WIPE_ALL

    from circuitstore.schema.apply import apply_schema

    corpus = tmp / f"concurrency-{n}.jsonl"
    corpus.write_text("\n".join(interleaved()[:n]) + "\n")
    out.print(
        f"\nConcurrency: the first {n} prompts into an emptied store, as concurrent shards.\n"
    )
    out.table("workers", "prompts", "tokens", "seconds", "tokens / s", "ATTR relationships / s")
    for k in workers:
        with driver.session() as s:
            s.run(WIPE_ALL).consume()
        apply_schema(driver, "neo4j")
        start = time.perf_counter()
        procs = [
            ingest(env, corpus, tmp / f"conc-{k}.sqlite", "--shard", f"{i}/{k}") for i in range(k)
        ]
        outs = [p.communicate() for p in procs]
        seconds = time.perf_counter() - start
        if any(p.returncode for p in procs):
            sys.exit("\n".join(e.decode()[-1000:] for _, e in outs))
        c = counts(driver)
        tokens = c["tokens"]
        out.row(
            k,
            c["prompts"],
            f"{tokens:,}",
            f"{seconds:.1f}",
            f"{tokens / seconds:.1f}",
            f"{c['attr'] / seconds:,.0f}",
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, nargs="+", default=[100, 200, 400, 800])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--concurrency-prompts", type=int, default=200)
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' tables")
    args = parser.parse_args()
    from circuitstore.schema.apply import apply_schema
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    with tempfile.TemporaryDirectory(prefix="bench-capacity-") as name:
        tmp = Path(name)
        server = LocalServer(tmp / "neo4j", secrets.token_urlsafe(12), heap="2g", pagecache="2g")
        server.start()
        env = {**os.environ, "NEO4J_URI": server.uri, "NEO4J_PASSWORD": server.password}
        try:
            settings = Neo4jSettings.load(uri=server.uri, password=server.password)
            with open_driver(settings) as driver:
                apply_schema(driver, "neo4j")
                with Results("bench_capacity", enabled=args.write_docs) as out:
                    out.print(
                        "The demo model and corpus (its tasks interleaved), default settings, "
                        "one local Neo4j 5.26 server (2g heap, 2g page cache)."
                    )
                    growth(out, server, env, driver, args.steps, tmp)
                    concurrency(out, env, driver, args.workers, args.concurrency_prompts, tmp)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
