"""Query-layer benchmark: a synthetic store of realistic shape, then p50/p95 latency per command.

    NEO4J_PASSWORD=... python benchmarks/bench_query.py [--prompts 10000] [--edges 1000]

What it builds (numpy, seeded): `--prompts` prompts of `--tokens` tokens over a GPT-2-small-sized
transcoder set (12 layers x 24576 features). Feature popularity is Zipf-like (exponent
`--zipf`), so hub features fire in most prompts, as they do in real corpora. Each prompt's
pruned graph: its token embeddings, `--occurrences` feature occurrences, a few error nodes,
5 logits at the last position, and `--edges` ATTR edges, each from a node of a lower layer at
the same or an earlier position. DRIVES is the corpus aggregate of the feature-to-feature edges,
TOP_EXAMPLE the top 20 prompts per feature, and VIRTUAL_WEIGHT 5 neighbours per active feature.

How: a fresh server home (`circuitstore server start` on free ports, `--heap`/`--pagecache`),
stopped, filled by `neo4j-admin database import full` from CSV (the bulk path; the ingest
writer's transactional path is benchmarked separately), restarted, `schema apply`. Then each
command runs through `CircuitStore` (what the CLI calls, without the process start) `--reps`
times with random features/prompts after a warm-up, `--runs` passes in all, and a Markdown table
of the median over the passes is printed with the load average (timings on a shared machine
move with it). `--uri` measures an existing, already filled store instead (NEO4J_* settings):

    NEO4J_PASSWORD=... python benchmarks/bench_query.py --uri bolt://127.0.0.1:7687 --runs 3

`--write-docs` also writes the table to docs/performance/bench_query.md, which the results page
includes.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import LocalServer

from circuitstore.schema.names import NodeId, feature_name

TSET = "bench-gpt2"
LAYERS, D_TC = 12, 24576
N_LOGITS, N_ERRORS, TOP_K = 5, 24, 20


# -- synthetic data ------------------------------------------------------------------------------


class Writer:
    """CSV files for neo4j-admin import, one per node label set / relationship type."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files: dict[str, object] = {}
        self.args: list[str] = []

    def open(self, kind: str, spec: str, header: str) -> None:
        path = self.folder / f"{spec.replace(':', '_')}.csv"
        handle = path.open("w", buffering=1 << 22)
        handle.write(header + "\n")
        self.files[spec] = handle
        self.args.append(f"--{kind}={spec}={path}")

    def write(self, spec: str, lines: list[str]) -> None:
        if lines:
            self.files[spec].write("\n".join(lines) + "\n")  # type: ignore[attr-defined]

    def close(self) -> None:
        for handle in self.files.values():
            handle.close()  # type: ignore[attr-defined]


def open_files(w: Writer) -> None:
    w.open("nodes", "TranscoderSet", "id:ID(T),name,nLayers:int,dTranscoder:int,dModel:int,model")
    w.open(
        "nodes",
        "Feature",
        "id:ID(F),transcoderSet,layer:int,index:int,name,nActive:int,nPrompts:int,"
        "sumActivation:double,maxActivation:double,logFrequency:double",
    )
    w.open("nodes", "Prompt", "id:ID(P),key,transcoderSet,text,tokens:string[],nTokens:int,run")
    g = "id:ID(G),localId,prompt,kind,pos:int"
    w.open(
        "nodes",
        "GraphNode:Occurrence",
        f"{g},layer:int,transcoderSet,feature:int,activation:double,preactivation:double",
    )
    w.open("nodes", "GraphNode:Embedding", f"{g},tokenId:int,token")
    w.open("nodes", "GraphNode:ErrorTerm", f"{g},layer:int")
    w.open("nodes", "GraphNode:Logit", f"{g},tokenId:int,value:double")
    w.open("relationships", "ATTR", ":START_ID(G),:END_ID(G),weight:double,kind")
    w.open(
        "relationships",
        "DRIVES",
        ":START_ID(F),:END_ID(F),n:int,sum:double,sumAbs:double,maxAbs:double",
    )
    w.open(
        "relationships", "TOP_EXAMPLE", ":START_ID(F),:END_ID(P),activation:double,pos:int,prompt"
    )
    w.open("relationships", "VIRTUAL_WEIGHT", ":START_ID(F),:END_ID(F),weight:double")


def fid(gid: int) -> str:
    return f"{TSET}/{gid // D_TC}/{gid % D_TC}"


class Synth:
    def __init__(self, args: argparse.Namespace) -> None:
        self.a = args
        self.rng = np.random.default_rng(args.seed)
        n = LAYERS * D_TC
        weights = 1.0 / np.arange(1, n + 1) ** args.zipf
        self.pop = weights / weights.sum()
        self.rank_to_gid = self.rng.permutation(n)
        self.occ: list[np.ndarray] = []  # per prompt: (gid, prompt, pos, activation)
        self.ff: list[np.ndarray] = []  # feature->feature edges: (src gid, tgt gid, weight)
        self.n_edges = 0

    def prompt(self, w: Writer, p: int) -> None:
        a, rng = self.a, self.rng
        pid, T = f"{TSET}/p{p}", a.tokens
        tokens = [f"w{t}" for t in rng.integers(0, 5000, T)]
        w.write("Prompt", [f'{pid},p{p},{TSET},"{" ".join(tokens)}",{";".join(tokens)},{T},bench'])
        gids = self.rank_to_gid[rng.choice(len(self.pop), a.occurrences, p=self.pop)]
        pos = rng.integers(0, T, a.occurrences)
        _, first = np.unique(gids * T + pos, return_index=True)
        gids, pos = gids[first], pos[first]
        act = rng.exponential(1.0, len(gids))
        layer = gids // D_TC
        self.occ.append(np.stack([gids, np.full(len(gids), p), pos, act], axis=1))
        err_layer = rng.integers(0, LAYERS, N_ERRORS)
        err_pos = rng.integers(0, T, N_ERRORS)
        _, ef = np.unique(err_layer * T + err_pos, return_index=True)
        err_layer, err_pos = err_layer[ef], err_pos[ef]
        # node table: embeddings (layer -1), occurrences, errors, logits (layer LAYERS)
        n_layer = np.concatenate([np.full(T, -1), layer, err_layer, np.full(N_LOGITS, LAYERS)])
        n_pos = np.concatenate([np.arange(T), pos, err_pos, np.full(N_LOGITS, T - 1)])
        logit_tok = rng.choice(5000, N_LOGITS, replace=False)
        ids = [NodeId.embedding(t) for t in range(T)]
        ids += [NodeId.feature(g // D_TC, q, g % D_TC) for g, q in zip(gids, pos, strict=True)]
        ids += [NodeId.error(lv, q) for lv, q in zip(err_layer, err_pos, strict=True)]
        ids += [NodeId.logit(T - 1, t) for t in logit_tok]
        self._nodes(w, pid, ids, tokens, gids, pos, act, err_layer, err_pos, logit_tok)
        self._edges(w, pid, ids, n_layer, n_pos, len(gids), T)

    def _nodes(self, w, pid, ids, tokens, gids, pos, act, err_layer, err_pos, logit_tok) -> None:  # type: ignore[no-untyped-def]
        T = len(tokens)
        w.write(
            "GraphNode:Embedding",
            [f"{pid}/{ids[t]},{ids[t]},{pid},embedding,{t},{t},{tokens[t]}" for t in range(T)],
        )
        w.write(
            "GraphNode:Occurrence",
            [
                f"{pid}/{ids[T + i]},{ids[T + i]},{pid},feature,{pos[i]},{g // D_TC},{TSET},"
                f"{g % D_TC},{act[i]:.5g},{act[i]:.5g}"
                for i, g in enumerate(gids)
            ],
        )
        base = T + len(gids)
        w.write(
            "GraphNode:ErrorTerm",
            [
                f"{pid}/{ids[base + i]},{ids[base + i]},{pid},error,{q},{lv}"
                for i, (lv, q) in enumerate(zip(err_layer, err_pos, strict=True))
            ],
        )
        base += len(err_layer)
        values = sorted(self.rng.normal(5, 2, N_LOGITS), reverse=True)
        w.write(
            "GraphNode:Logit",
            [
                f"{pid}/{ids[base + i]},{ids[base + i]},{pid},logit,{T - 1},{t},{v:.5g}"
                for i, (t, v) in enumerate(zip(logit_tok, values, strict=True))
            ],
        )

    def _edges(self, w, pid, ids, n_layer, n_pos, n_occ, T) -> None:  # type: ignore[no-untyped-def]
        rng, m = self.rng, self.a.edges
        targets = np.concatenate(
            [np.arange(T, T + n_occ), np.arange(len(ids) - N_LOGITS, len(ids))]
        )
        tw = np.where(n_layer[targets] == LAYERS, 12.0, 1.0) * np.where(
            n_layer[targets] == 0, 0.3, 1.0
        )
        tgt = rng.choice(targets, int(m * 1.6), p=tw / tw.sum())
        sources = np.arange(len(ids) - N_LOGITS)
        src = rng.choice(sources, len(tgt))
        for _ in range(30):
            bad = (n_layer[src] >= n_layer[tgt]) | (n_pos[src] > n_pos[tgt])
            if not bad.any():
                break
            src[bad] = rng.choice(sources, int(bad.sum()))
        ok = (n_layer[src] < n_layer[tgt]) & (n_pos[src] <= n_pos[tgt])
        src, tgt = src[ok], tgt[ok]
        _, first = np.unique(src * len(ids) + tgt, return_index=True)
        first = np.sort(first)[:m]
        src, tgt = src[first], tgt[first]
        weight = rng.normal(0, 1, len(src)) * rng.lognormal(-2, 1, len(src))
        self.n_edges += len(src)
        w.write(
            "ATTR",
            [
                f"{pid}/{ids[s]},{pid}/{ids[t]},{x:.5g},"
                f"{'residual' if n_pos[s] == n_pos[t] else 'attention'}"
                for s, t, x in zip(src.tolist(), tgt.tolist(), weight.tolist(), strict=True)
            ],
        )
        is_f = lambda i: (i >= T) & (i < T + n_occ)  # noqa: E731
        ff = is_f(src) & is_f(tgt)
        gid = self.occ[-1][:, 0]
        self.ff.append(np.stack([gid[src[ff] - T], gid[tgt[ff] - T], weight[ff]], axis=1))

    def globals(self, w: Writer) -> dict[str, int]:
        w.write("TranscoderSet", [f"{TSET},{TSET},{LAYERS},{D_TC},768,gpt2"])
        occ = np.concatenate(self.occ)
        gid = occ[:, 0].astype(np.int64)
        n = LAYERS * D_TC
        n_active = np.bincount(gid, minlength=n)
        sum_act = np.bincount(gid, weights=occ[:, 3], minlength=n)
        max_act = np.zeros(n)
        np.maximum.at(max_act, gid, occ[:, 3])
        pairs = np.unique(gid * self.a.prompts + occ[:, 1].astype(np.int64))
        n_prompts = np.bincount(pairs // self.a.prompts, minlength=n)
        logf = self.rng.uniform(-6, -1, n)
        w.write(
            "Feature",
            [
                f"{fid(g)},{TSET},{g // D_TC},{g % D_TC},{feature_name(g // D_TC, g % D_TC)},"
                f"{n_active[g]},{n_prompts[g]},{sum_act[g]:.6g},{max_act[g]:.6g},{logf[g]:.4g}"
                for g in range(n)
            ],
        )
        drives = self._drives(w)
        tops = self._top(w, occ)
        vw = self._virtual(w, np.flatnonzero(n_active))
        return {
            "features": n,
            "occurrences": len(occ),
            "drives": drives,
            "top": tops,
            "virtual": vw,
        }

    def _drives(self, w: Writer) -> int:
        ff = np.concatenate(self.ff)
        n = LAYERS * D_TC
        key = ff[:, 0].astype(np.int64) * n + ff[:, 1].astype(np.int64)
        order = np.argsort(key, kind="stable")
        key, wt = key[order], ff[order, 2]
        uniq, start, count = np.unique(key, return_index=True, return_counts=True)
        sums = np.add.reduceat(wt, start)
        sabs = np.add.reduceat(np.abs(wt), start)
        mabs = np.maximum.reduceat(np.abs(wt), start)
        for lo in range(0, len(uniq), 500_000):
            sl = slice(lo, lo + 500_000)
            w.write(
                "DRIVES",
                [
                    f"{fid(k // n)},{fid(k % n)},{c},{s:.6g},{a:.6g},{m:.6g}"
                    for k, c, s, a, m in zip(
                        uniq[sl].tolist(),
                        count[sl].tolist(),
                        sums[sl].tolist(),
                        sabs[sl].tolist(),
                        mabs[sl].tolist(),
                        strict=True,
                    )
                ],
            )
        return len(uniq)

    def _top(self, w: Writer, occ: np.ndarray) -> int:
        order = np.lexsort((-occ[:, 3], occ[:, 1], occ[:, 0]))
        occ = occ[order]
        keep = np.ones(len(occ), bool)
        keep[1:] = (occ[1:, 0] != occ[:-1, 0]) | (occ[1:, 1] != occ[:-1, 1])  # best pos per prompt
        occ = occ[keep]
        occ = occ[np.lexsort((-occ[:, 3], occ[:, 0]))]
        start = np.r_[0, np.flatnonzero(np.diff(occ[:, 0])) + 1]
        rank = np.arange(len(occ)) - np.repeat(start, np.diff(np.r_[start, len(occ)]))
        occ = occ[rank < TOP_K]
        w.write(
            "TOP_EXAMPLE",
            [
                f"{fid(int(g))},{TSET}/p{int(p)},{a:.5g},{int(q)},{TSET}/p{int(p)}"
                for g, p, q, a in occ.tolist()
            ],
        )
        return len(occ)

    def _virtual(self, w: Writer, active: np.ndarray) -> int:
        src = np.repeat(active[active // D_TC < LAYERS - 1], 5)
        tgt_layer = src // D_TC + 1 + self.rng.integers(0, 2, len(src))
        tgt_layer = np.minimum(tgt_layer, LAYERS - 1)
        tgt = tgt_layer * D_TC + self.rng.integers(0, D_TC, len(src))
        wt = self.rng.normal(0, 0.3, len(src))
        w.write(
            "VIRTUAL_WEIGHT",
            [
                f"{fid(s)},{fid(t)},{x:.4g}"
                for s, t, x in zip(src.tolist(), tgt.tolist(), wt.tolist(), strict=True)
            ],
        )
        return len(src)


def build_csv(args: argparse.Namespace, folder: Path) -> tuple[list[str], dict[str, int]]:
    w = Writer(folder)
    open_files(w)
    synth = Synth(args)
    start = time.perf_counter()
    for p in range(args.prompts):
        synth.prompt(w, p)
        if p and p % 1000 == 0:
            print(
                f"  {p} prompts, {synth.n_edges} edges, {time.perf_counter() - start:.0f} s",
                flush=True,
            )
    sizes = synth.globals(w)
    w.close()
    sizes.update(prompts=args.prompts, attr=synth.n_edges)
    return w.args, sizes


# -- server ----------------------------------------------------------------------------------


def import_csv(home: Path, import_args: list[str]) -> None:
    java = shutil.which("java") or "java"
    with tempfile.TemporaryDirectory(prefix="neo4j-admin-") as conf:
        Path(conf, "neo4j.conf").write_text(f"server.directories.data={home / 'data'}\n")
        env = {**os.environ, "NEO4J_HOME": str(home), "NEO4J_CONF": conf}
        cmd = [java, "-Xmx2g", "-cp", f"{home / 'lib'}/*", "org.neo4j.cli.AdminTool"]
        cmd += ["database", "import", "full", "neo4j", "--overwrite-destination=true"]
        cmd += ["--id-type=string", "--threads=2", "--array-delimiter=;", *import_args]
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)


# -- measurement ---------------------------------------------------------------------------


def timed(fn: Callable[[], object], reps: int, warm: int) -> list[float]:
    for _ in range(warm):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure(store, reps: int, seed: int) -> list[tuple[str, list[float]]]:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(seed)
    hubs = [
        r["n"]
        for r in store.cypher(
            "MATCH (f:Feature) WHERE f.nPrompts > 0 "
            "RETURN f.name AS n ORDER BY f.nPrompts DESC LIMIT 200"
        )
    ]
    active = [
        r["n"]
        for r in store.cypher(
            "MATCH (f:Feature) WHERE f.nPrompts > 0 RETURN f.name AS n", limit=10**7
        )
    ]
    prompts = [r["k"] for r in store.cypher("MATCH (p:Prompt) RETURN p.key AS k", limit=10**7)]

    def feature() -> str:  # half hubs, half any active feature
        pool = hubs if rng.random() < 0.5 else active
        return str(pool[rng.integers(len(pool))])

    def prompt() -> str:
        return str(prompts[rng.integers(len(prompts))])

    def occurrence() -> tuple[str, str]:
        key = prompt()
        rows = store.cypher(
            "MATCH (o:Occurrence {prompt: $p}) RETURN o.localId AS id", {"p": f"{TSET}/{key}"}
        )
        return rows[rng.integers(len(rows))]["id"], key

    occ = [occurrence() for _ in range(reps + 20)]
    it = iter(occ)
    cases: list[tuple[str, Callable[[], object]]] = [
        ("drivers (corpus)", lambda: store.drivers(feature(), top=10)),
        (
            "drivers --order mean --sign abs",
            lambda: store.drivers(feature(), top=10, order="mean", sign="abs"),
        ),
        ("targets (corpus)", lambda: store.targets(feature(), top=10)),
        ("drivers --prompt (per prompt)", lambda: store.drivers(*next(it), top=10, sign="abs")),
        ("examples", lambda: store.examples(feature(), top=10)),
        ("feature (card)", lambda: store.feature(feature())),
        (
            "prompts-with (2 hubs)",
            lambda: store.prompts_with([hubs[rng.integers(20)], hubs[rng.integers(20, 200)]]),
        ),
        ("paths --top 10", lambda: store.paths(prompt(), top=10)),
        ("circuit --threshold 0.8", lambda: store.circuit(prompt(), 0.8)),
        ("prompt graph fetch", lambda: store.prompt_graph(prompt())),
    ]
    results = []
    for name, fn in cases:
        it = iter(occ)
        results.append((name, timed(fn, reps, warm=20)))
        print(f"  {name}: done", flush=True)
    return results


def store_sizes(store) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Counts from the count store (cheap), for a store this script did not build."""
    counts = {
        "prompts": "MATCH (p:Prompt) RETURN count(p) AS n",
        "attr": "MATCH ()-[r:ATTR]->() RETURN count(r) AS n",
        "occurrences": "MATCH (o:Occurrence) RETURN count(o) AS n",
        "drives": "MATCH ()-[r:DRIVES]->() RETURN count(r) AS n",
        "features": "MATCH (f:Feature) RETURN count(f) AS n",
    }
    return {k: store.cypher(q)[0]["n"] for k, q in counts.items()}


def measure_runs(store, args: argparse.Namespace) -> list[tuple[str, list[list[float]]]]:  # type: ignore[no-untyped-def]
    """`--runs` full passes over every command (seeds seed, seed+1, ...), with the load average
    before each, so that one noisy pass on a shared machine does not decide the table."""
    runs: dict[str, list[list[float]]] = {}
    for i in range(args.runs):
        print(f"pass {i + 1}/{args.runs}, load average {load():.2f}", flush=True)
        for name, ms in measure(store, args.reps, args.seed + i):
            runs.setdefault(name, []).append(ms)
    return list(runs.items())


def load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def report(results: list[tuple[str, list[list[float]]]], sizes: dict[str, int]) -> str:
    """p50/p95/max per pass, then the median of each over the passes."""
    n_runs = len(results[0][1]) if results else 0
    lines = [
        f"Store: {sizes.get('prompts', '?')} prompts, {sizes.get('attr', '?'):,} ATTR edges, "
        f"{sizes.get('occurrences', '?'):,} occurrences, {sizes.get('drives', '?'):,} DRIVES, "
        f"{sizes.get('features', '?'):,} features; {os.cpu_count()} CPU cores, load average "
        f"{load():.2f} at the end; median over {n_runs} pass(es) of each pass's p50/p95/max.",
        "",
        "| command | reps | p50 ms | p95 ms | max ms |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, passes in results:
        p50 = statistics.median(statistics.median(ms) for ms in passes)
        p95 = statistics.median(statistics.quantiles(ms, n=20)[18] for ms in passes)
        top = statistics.median(max(ms) for ms in passes)
        reps = "+".join(str(len(ms)) for ms in passes)
        lines.append(f"| {name} | {reps} | {p50:.1f} | {p95:.1f} | {top:.1f} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--occurrences", type=int, default=160, help="feature occurrences per prompt")
    ap.add_argument("--edges", type=int, default=1000, help="ATTR edges per prompt")
    ap.add_argument("--zipf", type=float, default=1.1)
    ap.add_argument("--reps", type=int, default=200)
    ap.add_argument("--runs", type=int, default=1, help="passes over all commands (median)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--heap", default="4g")
    ap.add_argument("--pagecache", default="4g")
    ap.add_argument("--home", type=Path, help="server home (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="leave the server running")
    ap.add_argument("--uri", help="measure an existing store (NEO4J_* settings) instead")
    ap.add_argument("--write-docs", action="store_true", help="rewrite the docs' table")
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from results import Results

    out = Results("bench_query", enabled=args.write_docs)

    from circuitstore.query import CircuitStore
    from circuitstore.schema.apply import apply_schema
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    if args.uri:
        settings = Neo4jSettings.load(uri=args.uri)
        with open_driver(settings) as driver:
            store = CircuitStore(driver, settings.database)
            with out:
                out.print(report(measure_runs(store, args), store_sizes(store)))
        return
    home = args.home or Path(tempfile.mkdtemp(prefix="cs-bench-"))
    password = os.environ.get("NEO4J_PASSWORD") or secrets.token_urlsafe(12)
    server = LocalServer(home, password, heap=args.heap, pagecache=args.pagecache)
    csv_dir = home / "bench-csv"
    csv_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    import_args, sizes = build_csv(args, csv_dir)
    print(f"CSV written in {time.perf_counter() - t0:.0f} s: {sizes}", flush=True)
    server.start()  # assembles the home and sets the password
    server.stop()
    t0 = time.perf_counter()
    import_csv(home, import_args)
    print(f"neo4j-admin import: {time.perf_counter() - t0:.0f} s", flush=True)
    shutil.rmtree(csv_dir)
    server.start()
    try:
        settings = Neo4jSettings(uri=server.uri, password=password)
        with open_driver(settings) as driver:
            t0 = time.perf_counter()
            apply_schema(driver, settings.database, await_seconds=3600)
            print(f"schema apply (index population): {time.perf_counter() - t0:.0f} s", flush=True)
            with out:
                results = measure_runs(CircuitStore(driver, settings.database), args)
                out.print(report(results, sizes))
    finally:
        if not args.keep:
            server.stop()
            if not args.home:
                shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
