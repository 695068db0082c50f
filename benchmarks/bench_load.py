"""The whole job, measured: the same GPT-2-scale prompts into Neo4j by the transactional writer
and by the bulk path (`ingest --parts`, then `load`), in one run; then optionally a large corpus
through `load` alone; then what the figures mean for 10,000 and 100,000 prompts.

    python benchmarks/bench_load.py [--prompts 30] [--repeats 3] [--prompts-large 0|1000]
                                    [--write-docs]

The rows (numpy, seeded per prompt, so every path gets the same ones): 64-token prompts over a
GPT-2-small-sized transcoder set (12 x 24,576 features) with Zipf-like popularity (exponent
`--zipf`), each prompt shaped as the default settings store it: 64 embeddings, 4,096 feature
occurrences (the feature budget), 96 error nodes and 10 logits; 50,000 ATTR edges (the edge
budget), each from a lower layer at the same or an earlier position, the attention ones split
over 3 heads; ~48,000 active (feature, position) pairs summarised per feature (statistics and
top-example candidates); 1,700 DRIVES increments (what a GPT-2-scale prompt gave end to end).

1. Transactional: `StoreWriter.write_prompt` of `--prompts` prompts into a fresh local server
   (`circuitstore server`, 4g heap, 4g page cache), the set's 294,912 features created first
   (not timed); `--repeats` consecutive batches, median.
2. Bulk: `PartsWriter.write_prompt` of the same prompts (seconds per prompt, median), then
   `BulkLoad(..., overwrite=True).run()` of that folder into the same server home `--repeats`
   times (median of each phase). The two stores are compared (counts and sums) before the figures
   are trusted.
3. `--prompts-large N`: N prompts' parts written directly in the parts format (vectorised, checked
   with `scan`, the first prompt compared with `PartsWriter`'s), loaded once in a child process;
   each phase's seconds, peak RSS of the loading process and of its children (neo4j-admin), the
   parts' size and the server home's peak size. The folders are deleted after.
4. Projections from these figures and the engine's measured seconds per prompt.

`--write-docs` writes docs/performance/bench_load.md, which the results page includes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import multiprocessing
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_server import LocalServer
from results import Results

TSET = "bench-gpt2"
LAYERS, D_TC, T, N_HEADS = 12, 24576, 64, 12
N_OCC, N_ERR, N_LOGITS, N_ACTIVE, N_DRIVES, N_SPLIT = 4096, 96, 10, 48_000, 1_700, 3
TOP_K = 20
GiB = 2**30


# -- the rows ------------------------------------------------------------------------------------


class Popularity:
    """Zipf-like feature popularity over the whole set: a few hub features fire in most
    prompts. `draw` gives global feature numbers (layer * D_TC + index)."""

    def __init__(self, zipf: float) -> None:
        n = LAYERS * D_TC
        weights = 1.0 / np.arange(1, n + 1) ** zipf
        self.cdf = np.cumsum(weights) / weights.sum()
        self.rank_to_gid = np.random.default_rng(0).permutation(n)

    def draw(self, rng: np.random.Generator, size: int) -> np.ndarray:
        ranks = np.minimum(np.searchsorted(self.cdf, rng.random(size)), len(self.cdf) - 1)
        return self.rank_to_gid[ranks]


@dataclass
class Synth:
    """One prompt's rows as arrays: nodes (kind code, layer, pos, index, activation), edges
    (row numbers, weight), per-feature summary, DRIVES pairs."""

    i: int
    token_ids: np.ndarray
    kind: np.ndarray  # 0 embedding, 1 feature, 2 error, 3 logit
    layer: np.ndarray
    pos: np.ndarray
    index: np.ndarray
    act: np.ndarray
    explained: np.ndarray
    src: np.ndarray
    tgt: np.ndarray
    weight: np.ndarray
    heads: np.ndarray  # (edges, N_SPLIT) head numbers, used where the edge is an attention one
    head_w: np.ndarray
    feat: np.ndarray  # per active feature: gid, n, sum, max, argmax pos
    f_n: np.ndarray
    f_sum: np.ndarray
    f_max: np.ndarray
    f_pos: np.ndarray
    d_src: np.ndarray
    d_tgt: np.ndarray
    d_n: np.ndarray
    d_sum: np.ndarray

    @property
    def prompt_id(self) -> str:
        return f"{TSET}/p{self.i}"

    @property
    def attention(self) -> np.ndarray:
        return np.asarray(self.pos[self.src] != self.pos[self.tgt])


def synth(i: int, pop: Popularity, n_edges: int) -> Synth:
    rng = np.random.default_rng([7, i])
    token_ids = rng.integers(0, 50257, T)
    # Every active (feature, position) of the prompt, then its summary per feature.
    gids, at = pop.draw(rng, N_ACTIVE), rng.integers(0, T, N_ACTIVE)
    _, first = np.unique(gids * T + at, return_index=True)
    gids, at = gids[first], at[first]
    act = rng.exponential(1.0, len(gids))
    feat, inv, f_n = np.unique(gids, return_inverse=True, return_counts=True)
    f_sum = np.bincount(inv, weights=act)
    f_max = np.zeros(len(feat))
    np.maximum.at(f_max, inv, act)
    big = np.iinfo(np.int64).max
    f_pos = np.full(len(feat), big)
    best = act == f_max[inv]
    np.minimum.at(f_pos, inv[best], at[best])
    # The stored nodes: embeddings, the kept occurrences, error terms, logits at the last token.
    keep = np.sort(rng.choice(len(gids), N_OCC, replace=False))
    kind = np.repeat([0, 1, 2, 3], [T, N_OCC, N_ERR, N_LOGITS])
    err = rng.choice(LAYERS * T, N_ERR, replace=False)  # distinct (layer, position)s
    layer = np.concatenate([np.full(T, -1), gids[keep] // D_TC, err // T, np.full(N_LOGITS, -1)])
    pos = np.concatenate([np.arange(T), at[keep], err % T, np.full(N_LOGITS, T - 1)])
    index = np.concatenate(
        [token_ids, gids[keep] % D_TC, np.zeros(N_ERR, int), rng.choice(50257, N_LOGITS, False)]
    )
    node_act = np.concatenate([np.zeros(T), act[keep], np.zeros(N_ERR), rng.normal(5, 2, N_LOGITS)])
    src, tgt = _edges(rng, kind, layer, pos, n_edges)
    weight = rng.normal(0, 1, len(src)) * rng.lognormal(-2, 1, len(src))
    spread = np.array([0, 5, 11])  # N_SPLIT distinct heads
    heads = (rng.integers(0, LAYERS * N_HEADS, (len(src), 1)) + spread) % (LAYERS * N_HEADS)
    d_src, d_tgt = _drives(rng, pop, feat)
    return Synth(
        i,
        token_ids,
        kind,
        layer,
        pos,
        index,
        node_act,
        rng.random(len(kind)),
        src,
        tgt,
        weight,
        heads,
        rng.normal(0, 0.1, (len(src), N_SPLIT)),
        feat,
        f_n,
        f_sum,
        f_max,
        f_pos,
        d_src,
        d_tgt,
        rng.integers(1, 40, len(d_src)),
        rng.normal(0, 1, len(d_src)),
    )


def _edges(
    rng: np.random.Generator, kind: np.ndarray, layer: np.ndarray, pos: np.ndarray, m: int
) -> tuple[np.ndarray, np.ndarray]:
    """m distinct edges into features and logits, each from a lower layer (embeddings lowest,
    logits highest) at the same or an earlier position."""
    depth = np.where(kind == 0, -1, np.where(kind == 3, LAYERS, layer))
    targets = np.flatnonzero((kind == 1) | (kind == 3))
    sources = np.flatnonzero(kind != 3)
    src_all, tgt_all = np.empty(0, int), np.empty(0, int)
    while len(src_all) < m:
        tgt = rng.choice(targets, 2 * m)
        src = rng.choice(sources, 2 * m)
        ok = (depth[src] < depth[tgt]) & (pos[src] <= pos[tgt])
        src_all = np.concatenate([src_all, src[ok]])
        tgt_all = np.concatenate([tgt_all, tgt[ok]])
        _, first = np.unique(src_all * len(kind) + tgt_all, return_index=True)
        first = np.sort(first)
        src_all, tgt_all = src_all[first], tgt_all[first]
    return src_all[:m], tgt_all[:m]


def _drives(
    rng: np.random.Generator, pop: Popularity, feat: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """N_DRIVES distinct (source, target) pairs of the prompt's active features, source in a
    lower layer, hubs more often (both ends drawn by popularity, kept where active)."""
    active = np.zeros(LAYERS * D_TC, bool)
    active[feat] = True
    s, t = pop.draw(rng, 40 * N_DRIVES), pop.draw(rng, 40 * N_DRIVES)
    ok = active[s] & active[t] & (s // D_TC < t // D_TC)
    key = np.unique(s[ok] * (LAYERS * D_TC) + t[ok])
    key = rng.permutation(key)[:N_DRIVES]
    key.sort()
    return key // (LAYERS * D_TC), key % (LAYERS * D_TC)


def fid(gid: np.ndarray) -> list[str]:
    return [f"{TSET}/{g // D_TC}/{g % D_TC}" for g in gid.tolist()]


def local_ids(s: Synth) -> list[str]:
    """The nodes' ids within the prompt (all distinct by construction)."""
    out = []
    for k, lyr, p, x in zip(
        s.kind.tolist(), s.layer.tolist(), s.pos.tolist(), s.index.tolist(), strict=True
    ):
        if k == 0:
            out.append(f"embed0@{p}")
        elif k == 1:
            out.append(f"mlp{lyr}tc[{x}]@{p}")
        elif k == 2:
            out.append(f"mlp{lyr}err@{p}")
        else:
            out.append(f"logit[{x}]@{p}")
    return out


def prompt_row(s: Synth) -> dict[str, Any]:
    tokens = [f" w{t}" for t in s.token_ids.tolist()]
    return {
        "id": s.prompt_id,
        "key": f"p{s.i}",
        "transcoderSet": TSET,
        "text": "".join(tokens),
        "tokens": tokens,
        "tokenIds": s.token_ids.tolist(),
        "nTokens": T,
        "run": "bench",
        "line": s.i + 1,
        "mode": "lumped",
        "keptInfluence": 0.5,
        "unexpandedInfluence": 0.01,
        "logitInputExplained": 0.2,
        "featureInputExplained": 0.3,
    }


LABELS = ("Embedding", "Occurrence", "ErrorTerm", "Logit")
KINDS = ("embedding", "feature", "error", "logit")


def to_payload(s: Synth) -> Any:
    """The rows as the engine hands them to a writer (`PromptPayload`)."""
    from circuitstore.ingest.payload import PromptPayload

    ids, nodes = local_ids(s), []
    cols = zip(
        s.kind.tolist(),
        s.layer.tolist(),
        s.pos.tolist(),
        s.index.tolist(),
        s.act.tolist(),
        s.explained.tolist(),
        strict=True,
    )
    for j, (k, lyr, p, x, a, e) in enumerate(cols):
        props: dict[str, Any] = {
            "id": f"{s.prompt_id}/{ids[j]}",
            "localId": ids[j],
            "prompt": s.prompt_id,
            "kind": KINDS[k],
            "pos": p,
        }
        if lyr >= 0:
            props["layer"] = lyr
        if k == 1:
            props.update(transcoderSet=TSET, feature=x, activation=a, preactivation=a)
        elif k in (0, 3):
            props["tokenId"] = x
            props.update(token=f" w{x}") if k == 0 else props.update(value=a)
        props.update(inputExplained=e, keptInput=e)
        nodes.append([LABELS[k], props])
    edges: list[list[Any]] = []
    cols = zip(
        s.src.tolist(),
        s.tgt.tolist(),
        s.weight.tolist(),
        s.attention.tolist(),
        s.heads.tolist(),
        s.head_w.tolist(),
        strict=True,
    )
    for a, b, w, att, h, hw in cols:
        edges.append([a, b, w, "attention", h, hw, 0.01, 0.02] if att else [a, b, w, "residual"])
    f_ids = fid(s.feat)
    features = [
        {"id": f, "n": n, "sum": x, "max": m}
        for f, n, x, m in zip(
            f_ids, s.f_n.tolist(), s.f_sum.tolist(), s.f_max.tolist(), strict=True
        )
    ]
    top = [
        {"id": f, "activation": m, "pos": p}
        for f, m, p in zip(f_ids, s.f_max.tolist(), s.f_pos.tolist(), strict=True)
    ]
    order = sorted(range(len(f_ids)), key=f_ids.__getitem__)  # writers get them sorted by id
    drives = [
        {"s": a, "t": b, "n": n, "sum": x, "sumAbs": abs(x), "maxAbs": abs(x) / n}
        for a, b, n, x in zip(
            fid(s.d_src), fid(s.d_tgt), s.d_n.tolist(), s.d_sum.tolist(), strict=True
        )
    ]
    drives.sort(key=lambda r: (r["s"], r["t"]))
    return PromptPayload(
        s.prompt_id,
        prompt_row(s),
        nodes,
        edges,
        [features[j] for j in order],
        drives,
        [top[j] for j in order],
    )


def to_tables(s: Synth, stamp: Any) -> dict[str, Any]:
    """The same rows as the parts tables `PartsWriter` writes, built column by column."""
    import pyarrow as pa

    from circuitstore.ingest.parts import format as fmt

    ids = local_ids(s)
    gid = [f"{s.prompt_id}/{x}" for x in ids]
    n, feature = len(ids), s.kind == 1
    pid = pa.array([s.prompt_id] * n)

    def masked(values: np.ndarray, where: np.ndarray) -> pa.Array:
        return pa.array(values, mask=~where)

    att = s.attention
    m = len(s.src)
    f_ids = fid(s.feat)
    order = np.argsort(np.array(f_ids, dtype=object), kind="stable")
    d = pa.array
    nodes = {
        "id": gid,
        "label": [LABELS[k] for k in s.kind.tolist()],
        "localId": ids,
        "prompt": pid,
        "kind": [KINDS[k] for k in s.kind.tolist()],
        "pos": s.pos,
        "layer": masked(s.layer, s.layer >= 0),
        "transcoderSet": pa.array([TSET if f else None for f in feature.tolist()]),
        "feature": masked(s.index, feature),
        "activation": masked(s.act, feature),
        "preactivation": masked(s.act, feature),
        "tokenId": masked(s.index, s.kind % 3 == 0),
        "token": pa.array(
            [
                f" w{x}" if k == 0 else None
                for k, x in zip(s.kind.tolist(), s.index.tolist(), strict=True)
            ]
        ),
        "value": masked(s.act, s.kind == 3),
        "inputExplained": s.explained,
        "keptInput": s.explained,
    }
    offsets = np.arange(0, N_SPLIT * (m + 1), N_SPLIT, dtype=np.int32)
    heads = pa.ListArray.from_arrays(offsets, s.heads.ravel(), mask=pa.array(~att))
    head_w = pa.ListArray.from_arrays(offsets, s.head_w.ravel(), mask=pa.array(~att))
    edges = {
        "prompt": pa.array([s.prompt_id] * m),
        "source": [gid[j] for j in s.src.tolist()],
        "target": [gid[j] for j in s.tgt.tolist()],
        "weight": s.weight,
        "kind": np.where(att, "attention", "residual").tolist(),
        "heads": heads,
        "headWeights": head_w,
        "otherHeads": masked(np.full(m, 0.01), att),
        "residual": masked(np.full(m, 0.02), att),
    }
    occ = {
        "prompt": d([s.prompt_id] * len(f_ids)),
        "feature": d(f_ids).take(order),
        "n": s.f_n[order],
        "sum": s.f_sum[order],
        "max": s.f_max[order],
        "pos": s.f_pos[order],
    }
    d_src, d_tgt = fid(s.d_src), fid(s.d_tgt)
    by_id = sorted(range(len(d_src)), key=lambda j: (d_src[j], d_tgt[j]))  # as writers sort
    d_n, d_sum = s.d_n[by_id], s.d_sum[by_id]
    drives = {
        "prompt": d([s.prompt_id] * len(d_n)),
        "source": [d_src[j] for j in by_id],
        "target": [d_tgt[j] for j in by_id],
        "n": d_n,
        "sum": d_sum,
        "sumAbs": np.abs(d_sum),
        "maxAbs": np.abs(d_sum) / d_n,
    }
    out = {
        name: _table(cols, fmt.SCHEMAS[name]).replace_schema_metadata(stamp.metadata(name))
        for name, cols in (
            ("nodes", nodes),
            ("edges", edges),
            ("occurrences", occ),
            ("drives", drives),
        )
    }
    return out | {"prompts": fmt.table("prompts", [prompt_row(s)], stamp)}


def _table(cols: dict[str, Any], schema: Any) -> Any:
    """The columns as a table of `schema`, the columns none of these rows fills all null."""
    import pyarrow as pa

    n = len(next(iter(cols.values())))
    full = {f.name: cols.get(f.name, pa.nulls(n, f.type)) for f in schema}
    return pa.table(full, schema=schema)


def set_node() -> Any:
    from circuitstore.ingest.writer import TranscoderSetNode

    props = {"name": TSET, "model": "gpt2", "nLayers": LAYERS, "dModel": 768, "nHeads": N_HEADS}
    return TranscoderSetNode(TSET, props | {"dTranscoder": D_TC}, "bench", {"top_examples": TOP_K})


def feature_rows() -> Any:
    for layer in range(LAYERS):
        for index in range(D_TC):
            props = {"transcoderSet": TSET, "layer": layer, "index": index}
            props |= {"name": f"mlp{layer}tc[{index}]", "logFrequency": -3.0}
            yield {"id": f"{TSET}/{layer}/{index}", "props": props}


# -- measuring -----------------------------------------------------------------------------------


def store_counts(server: LocalServer) -> dict[str, int]:
    from cypher import LOAD_COUNTS

    from circuitstore.schema.connection import Neo4jSettings, open_driver

    settings = Neo4jSettings.load(uri=server.uri, password=server.password)
    with open_driver(settings) as driver, driver.session() as session:
        row = session.run(LOAD_COUNTS).single(strict=True)
    return {k: int(v or 0) for k, v in row.data().items()}


@dataclass
class Tx:
    """The transactional path's figures."""

    setup: float  # the set's features, before the first prompt
    seconds: list[float]  # per prompt
    rows: list[int]  # relationship rows each prompt's transaction wrote
    batch_rows: list[float]  # per batch: rows written / s
    batch_attr: list[float]  # per batch: ATTR / s
    batch_store: list[float]  # per batch: relationships the store gained / s
    counts: dict[str, int]


def transactional(server: LocalServer, args: argparse.Namespace, pop: Popularity) -> Tx:
    """K prompts through `StoreWriter.write_prompt` into the fresh store, in consecutive
    batches; each prompt's rows are built before its write is timed."""
    from circuitstore.ingest.writer import StoreWriter
    from circuitstore.schema.apply import apply_schema
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    settings = Neo4jSettings.load(uri=server.uri, password=server.password)
    with open_driver(settings) as driver:
        apply_schema(driver, "neo4j")
        writer = StoreWriter(driver, "neo4j", top_k=TOP_K)
        began = time.perf_counter()
        writer.ensure_transcoder_set(set_node(), feature_rows())
        tx = Tx(time.perf_counter() - began, [], [], [], [], [], {})
        per_batch = max(1, args.prompts // args.repeats)
        for b in range(args.repeats):
            before = store_counts(server)["relationships"]
            secs, attr = 0.0, 0
            for i in range(b * per_batch, (b + 1) * per_batch):
                payload = to_payload(synth(i, pop, args.edges))
                began = time.perf_counter()
                assert writer.write_prompt(payload)
                tx.seconds.append(time.perf_counter() - began)
                tx.rows.append(len(payload.edges) + len(payload.drives) + len(payload.top))
                secs, attr = secs + tx.seconds[-1], attr + len(payload.edges)
            gained = store_counts(server)["relationships"] - before
            tx.batch_rows.append(sum(tx.rows[-per_batch:]) / secs)
            tx.batch_attr.append(attr / secs)
            tx.batch_store.append(gained / secs)
            print(f"transactional batch {b + 1}: {per_batch} prompts in {secs:.1f} s", flush=True)
    tx.counts = store_counts(server)
    return tx


def write_parts(folder: Path, n: int, args: argparse.Namespace, pop: Popularity) -> list[float]:
    """The first n prompts through `PartsWriter.write_prompt`; seconds per prompt."""
    from circuitstore.ingest.parts.writer import PartsWriter

    writer = PartsWriter(str(folder))
    writer.ensure_transcoder_set(set_node(), feature_rows())
    seconds = []
    for i in range(n):
        payload = to_payload(synth(i, pop, args.edges))
        began = time.perf_counter()
        assert writer.write_prompt(payload)
        seconds.append(time.perf_counter() - began)
    return seconds


def settings_of(server: LocalServer) -> Any:
    from circuitstore.server.config import ServerSettings

    return ServerSettings(server.home, server.bolt, server.http, server.heap, server.pagecache)


def bulk_load(server: LocalServer, folder: Path) -> Any:
    from circuitstore.server.bulk import BulkLoad

    return BulkLoad(str(folder), settings_of(server), server.password, overwrite=True).run()


def du(path: Path) -> int:
    """Bytes on disk under path."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):  # renamed or removed meanwhile
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
    return total


def load_in_child(url: str, server: LocalServer) -> dict[str, Any]:
    """`BulkLoad.run()` in a fresh process (spawned), so that its peak RSS and its children's
    (the neo4j-admin JVM; the server it starts is not reaped there) are the load's alone."""
    summary = bulk_load(server, Path(url))
    return {
        "seconds": summary.seconds,
        "relationships": summary.relationships,
        "nodes": summary.nodes,
        "counts": summary.counts,
        "self": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    }


def jvm_peak(parent: int, children: int) -> str:
    """RUSAGE_CHILDREN's peak in words: Linux counts the memory a child shares with its parent
    at the fork into the child's peak, so a figure no larger than the parent's bounds the
    child's own peak from above only."""
    if children > parent:
        return f"{children / GiB:.2f} GiB"
    return (
        f"at most {children / GiB:.2f} GiB (RUSAGE_CHILDREN cannot tell the JVM's own peak "
        "from the loading process's memory at the fork, which Linux counts into it)"
    )


class PeakSize(threading.Thread):
    """The largest size a folder reaches while it runs (sampled every 2 s)."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self.path, self.peak, self.halt = path, 0, threading.Event()

    def run(self) -> None:
        while not self.halt.wait(2.0):
            self.peak = max(self.peak, du(self.path))


def check_direct_format(stamp: Any, pop: Popularity, args: argparse.Namespace) -> None:
    """The directly built tables of one prompt equal what `PartsWriter` writes for it."""
    import pyarrow.parquet as pq

    from circuitstore.ingest.parts import format as fmt
    from circuitstore.ingest.parts.writer import PartsWriter

    with tempfile.TemporaryDirectory(prefix="bench-parts-check-") as tmp:
        writer = PartsWriter(tmp)
        writer.check_transcoder_set(set_node())
        s = synth(0, pop, args.edges)
        writer.write_prompt(to_payload(s))
        name = fmt.part_name(s.prompt_id)
        for table, direct in to_tables(s, stamp).items():
            written = pq.read_table(f"{tmp}/{table}/{name}")
            if not written.equals(direct):
                sys.exit(f"direct {table} table differs from PartsWriter's")


def large(out: Results, server: LocalServer, args: argparse.Namespace, pop: Popularity) -> float:
    """The large corpus through `load`; returns the whole load's seconds per prompt."""
    from circuitstore.ingest.parts import format as fmt
    from circuitstore.ingest.parts.folder import Folder
    from circuitstore.ingest.parts.scan import scan
    from circuitstore.ingest.parts.writer import PartsWriter

    n = args.prompts_large
    folder = Path(tempfile.mkdtemp(prefix="bench-parts-large-"))
    try:
        writer = PartsWriter(str(folder))
        writer.ensure_transcoder_set(set_node(), feature_rows())
        stamp = writer.stamp
        check_direct_format(stamp, pop, args)
        parts = Folder.open(str(folder))
        began = time.perf_counter()
        for i in range(n):
            s = synth(i, pop, args.edges)
            name = fmt.part_name(s.prompt_id)
            for table, data in to_tables(s, stamp).items():  # `prompts` last: the commit
                parts.write(f"{table}/{name}", data)
            if (i + 1) % 100 == 0:
                print(f"large corpus: {i + 1} prompts' parts", flush=True)
        made = time.perf_counter() - began
        began = time.perf_counter()
        checked = scan(str(folder))
        if checked.n_prompts != n:
            sys.exit(f"scan found {checked.n_prompts} prompts, not {n}")
        scanned, size = time.perf_counter() - began, du(folder)
        sampler = PeakSize(server.home)
        sampler.start()
        spawn = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=spawn) as pool:
            began = time.perf_counter()
            got = pool.submit(load_in_child, str(folder), server).result()
            wall = time.perf_counter() - began
        sampler.halt.set()
        sampler.join()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    rels = got["relationships"]
    out.print(
        f"\nLarge corpus: {n:,} prompts ({n * args.edges:,} ATTR edges) through `load` alone, "
        f"into the same server home. Their parts were written directly in the parts format "
        f"(one prompt's tables checked equal to `PartsWriter`'s; `scan` found the {n:,} "
        f"prompts valid in {scanned:.0f} s): {made / n:.2f} s per prompt, "
        f"{size / GiB:.2f} GiB on disk ({size / n / 2**20:.2f} MiB per prompt).\n"
    )
    out.table("phase", "seconds")
    for phase, secs in got["seconds"].items():
        out.row(phase, f"{secs:,.1f}")
    total = sum(got["seconds"].values())
    out.row("**whole load**", f"**{total:,.1f}** ({wall:,.1f} with the child process's start)")
    out.print(
        f"\n- {got['nodes']:,} nodes, {rels:,} relationships ("
        + ", ".join(f"{v:,} {k}" for k, v in got["counts"].items() if k.isupper())
        + ")"
    )
    out.print(
        f"- import alone **{rels / got['seconds']['import']:,.0f} relationships/s**; "
        f"the whole load {rels / total:,.0f} relationships/s"
    )
    out.print(
        f"- peak RSS: the loading process (DuckDB's reductions) {got['self'] / GiB:.2f} GiB; "
        f"its children (neo4j-admin's JVM, `-Xmx1g`) {jvm_peak(got['self'], got['children'])}"
    )
    out.print(
        f"- the server home's peak size during the load (old store, import files, new store): "
        f"{sampler.peak / GiB:.2f} GiB; after it: {du(server.home) / GiB:.2f} GiB"
    )
    return total / n


# -- the report ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def side_by_side(
    out: Results, server: LocalServer, args: argparse.Namespace, pop: Popularity
) -> tuple[float, float, float]:
    """Both paths over the same prompts; returns (transactional seconds per prompt, parts
    seconds per prompt, the whole load's seconds per prompt)."""
    k = args.prompts
    tx = transactional(server, args, pop)
    with tempfile.TemporaryDirectory(prefix="bench-parts-") as tmp:
        parts_seconds = write_parts(Path(tmp), k, args, pop)
        size = du(Path(tmp))
        loads = []
        for r in range(args.repeats):
            loads.append(bulk_load(server, Path(tmp)))
            print(f"load {r + 1}: {sum(loads[-1].seconds.values()):.1f} s", flush=True)
            if r == 0:
                loaded = store_counts(server)
                if loaded != tx.counts:
                    sys.exit(f"the stores differ:\ntransactional {tx.counts}\nloaded {loaded}")
    c, rels = tx.counts, loads[0].relationships
    per = max(1, k // args.repeats)
    out.print(
        f"{k} prompts, each 64 tokens: {T + N_OCC + N_ERR + N_LOGITS:,} graph nodes, "
        f"{args.edges:,} ATTR edges (the attention ones split over {N_SPLIT} heads), "
        f"{median(tx.rows) - args.edges:,.0f} "
        f"DRIVES and top-example rows (median; {N_DRIVES:,} DRIVES, the rest the prompt's "
        f"active features), Zipf-like feature popularity (exponent {args.zipf}) over "
        f"{LAYERS} x {D_TC:,} features. Both paths built the same store, checked by counts and "
        f"sums: {c['prompts']} prompts, {c['graphNodes']:,} graph nodes, {c['attr']:,} ATTR, "
        f"{c['drives']:,} DRIVES, {c['top']:,} TOP_EXAMPLE: **{rels:,} relationships**. "
        f"One local Neo4j 5.26 server (`circuitstore server`, 4g heap, 4g page cache).\n"
    )
    load_wall = [sum(x.seconds.values()) for x in loads]
    imports = [x.seconds["import"] for x in loads]
    tx_store = c["relationships"] / sum(tx.seconds)
    out.table("path", "seconds per prompt", "relationships / s", "vs. transactional")
    out.row(
        f"transactional `write_prompt` (medians of {args.repeats} batches of {per})",
        f"{median(tx.seconds):.2f}",
        f"{median(tx.batch_store):,.0f}",
        "1.00",
    )
    out.row(
        f"`load`, import phase alone (median of {args.repeats} loads)",
        f"{median(imports) / k:.2f}",
        f"{rels / median(imports):,.0f}",
        f"**{rels / median(imports) / median(tx.batch_store):.1f}**",
    )
    out.row(
        "`load`, whole (check, server, reduce, stop, import, start, schema)",
        f"{median(load_wall) / k:.2f}",
        f"{rels / median(load_wall):,.0f}",
        f"{rels / median(load_wall) / median(tx.batch_store):.1f}",
    )
    out.row(
        "`ingest --parts`: `PartsWriter.write_prompt` (median prompt)",
        f"{median(parts_seconds):.2f}",
        "",
        "",
    )
    out.print(
        "\nRelationships / s counts the relationships of the resulting store on both paths (the "
        f"same store): for the transactional path, what the store gained per batch over the "
        f"batch's write seconds (over the whole run: {tx_store:,.0f}). Each transaction also "
        f"rewrites what is already there: per prompt it sends {median(tx.rows):,.0f} "
        f"relationship rows (ATTR, a MERGE per DRIVES increment, a candidate per top example), "
        f"{median(tx.batch_rows):,.0f} rows/s; its ATTR edges alone went in at "
        f"{median(tx.batch_attr):,.0f}/s. The set's {LAYERS * D_TC:,} Feature nodes took "
        f"{tx.setup:.0f} s before the first prompt (not counted). The parts took "
        f"{size / k / 2**20:.2f} MiB per prompt on disk.\n"
    )
    out.table("`load` phase", *[f"run {r + 1}" for r in range(len(loads))], "median")
    for phase in loads[0].seconds:
        values = [x.seconds[phase] for x in loads]
        out.row(phase, *[f"{v:.1f}" for v in values], f"{median(values):.1f}")
    out.row("whole", *[f"{v:.1f}" for v in load_wall], f"{median(load_wall):.1f}")
    return median(tx.seconds), median(parts_seconds), median(load_wall) / k


def projections(out: Results, tx: float, parts: float, load: float, measured: str) -> None:
    """Corpus file to queryable store, for 10,000 and 100,000 64-token prompts."""
    engines = {
        "2 CPU cores (random-weight GPT-2, 83 s a prompt, `bench_ingest.py`)": 83.0,
        "one H200 (0.35 s a full lumped graph, `bench_attribution.py --device cuda`)": 0.35,
    }
    out.print(
        "\nProjections: from a corpus file to a queryable store, for N 64-token prompts on W "
        "engine workers (each on its own machine), with e the engine's seconds per prompt:\n\n"
        f"- transactional: N x max(e / W, w), w = {tx:.2f} s, the measured write per prompt: "
        "the workers compute side by side, but one server takes the prompts' transactions one "
        "after another (in `bench_capacity.py` two writers gained 18% over one, four lost "
        "ground);\n"
        f"- bulk: N x (e + p) / W + N x l, p = {parts:.2f} s, the measured parts writing per "
        f"prompt (taken as not overlapping the engine), l = {load:.3f} s, the whole `load` per "
        f"prompt measured {measured}, scaled linearly.\n"
    )
    out.table("engine", "W", "N", "transactional", "bulk", "bulk's `load` share")
    for name, e in engines.items():
        for n in (10_000, 100_000):
            for w in (1, 4):
                t_tx = n * max(e / w, tx)
                t_bulk = n * (e + parts) / w + n * load
                out.row(name, w, f"{n:,}", hours(t_tx), hours(t_bulk), hours(n * load))


def hours(seconds: float) -> str:
    return f"{seconds / 3600:,.1f} h" if seconds >= 3600 else f"{seconds / 60:,.0f} min"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=20, help="prompts through both paths")
    parser.add_argument("--edges", type=int, default=50_000, help="ATTR edges per prompt")
    parser.add_argument("--repeats", type=int, default=4, help="batches and loads (medians)")
    parser.add_argument(
        "--prompts-large", type=int, default=0, help="prompts through `load` alone (0: skip)"
    )
    parser.add_argument("--zipf", type=float, default=1.1)
    parser.add_argument("--write-docs", action="store_true", help="rewrite the docs' figures")
    args = parser.parse_args()
    if args.prompts % args.repeats:  # both paths must write the same prompts
        parser.error(f"--prompts {args.prompts} is not a multiple of --repeats {args.repeats}")

    pop = Popularity(args.zipf)
    server = LocalServer(Path(tempfile.mkdtemp(prefix="bench-neo4j-")), secrets.token_urlsafe(12))
    server.start()
    try:
        with Results("bench_load", enabled=args.write_docs) as out:
            out.print(
                "No GPU was available for these measurements; the H200's figure below is the "
                "one measured on 2026-11-29 (`docs/performance/bench_attribution-cuda.md`).\n"
            )
            tx, parts, load = side_by_side(out, server, args, pop)
            measured = f"over {args.prompts} prompts"
            if args.prompts_large:
                load = large(out, server, args, pop)
                measured = f"over {args.prompts_large:,} prompts"
            projections(out, tx, parts, load, measured)
    finally:
        server.stop()
        shutil.rmtree(server.home, ignore_errors=True)


if __name__ == "__main__":
    main()
