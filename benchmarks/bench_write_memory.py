"""Transaction memory of the ingest writes at GPT-2 scale: how much of a Neo4j server's
transaction memory one prompt's write takes, part by part (the per-row figures behind
`PromptPayload.write_bytes`), and the last layer's views written as one transaction against the
chunks `StoreWriter.write_views` writes now.

    python benchmarks/bench_write_memory.py [--tokens 64] [--heap 1g] [--write-docs]

Starts its own server (`circuitstore server start` in a temporary home, free loopback ports) with
the given heap: 1g is the smallest a user is likely to run, and its transactions may hold 70% of
it, 716.8 MiB. The model is the engine benchmark's random GPT-2-small-scale one (12 x 24,576
transcoder features, ~64 firing per token and layer). Memory is Neo4j's own estimate per
transaction (`SHOW TRANSACTIONS ... estimatedUsedHeapMemory`), sampled every 0.1 s: the peak is a
lower bound, close when a write takes seconds.
"""

from __future__ import annotations

import argparse
import random
import secrets
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from local_server import LocalServer  # noqa: E402  (sibling scripts, found via sys.path)
from results import Results  # noqa: E402

PARTS = ("nodes", "edges", "features", "top", "drives")


class PeakMemory:
    """The largest `estimatedUsedHeapMemory` of any transaction while it runs."""

    def __init__(self, driver: Any) -> None:
        self.driver, self.peak, self._stop = driver, 0, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)

    def _poll(self) -> None:
        while not self._stop.is_set():
            with self.driver.session() as s:
                for r in s.run("SHOW TRANSACTIONS YIELD estimatedUsedHeapMemory AS m RETURN m"):
                    self.peak = max(self.peak, r["m"] or 0)
            time.sleep(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.3)
        self._stop.set()
        self._thread.join()


def stand_in(folder: Path) -> tuple[Path, Path]:
    from bench_attribution import build_model

    if not (folder / "transcoders").exists():
        build_model(folder / "model")  # the model, and transcoders calibrated on it
        (folder / "model" / "transcoders").rename(folder / "transcoders")
    return folder / "model", folder / "transcoders"


def one_payload(driver: Any, weights: tuple[Path, Path], tokens: int, folder: Path) -> Any:
    """Ingest one prompt (no views), keeping the payload the writer was handed."""
    from circuitstore.ingest import writer as w
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.runner import IngestRunner

    words = [f"w{i}" for i in range(2000)]
    (folder / "corpus.txt").write_text(" ".join(random.Random(2).choices(words, k=tokens)) + "\n")
    kept: list[Any] = []
    real = w.StoreWriter.write_prompt

    def keep(self: Any, payload: Any) -> bool:
        kept.append(payload)
        return real(self, payload)

    w.StoreWriter.write_prompt = keep  # type: ignore[method-assign]
    cfg = IngestConfig(
        model=str(weights[0]),
        transcoders=str(weights[1]),
        prompts=str(folder / "corpus.txt"),
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        max_tokens=tokens,
        truncate=True,
        progress=False,
    )
    runner = IngestRunner(cfg, driver)
    runner.views = False
    runner.run()
    w.StoreWriter.write_prompt = real  # type: ignore[method-assign]
    return kept[0]


def only(payload: Any, part: str) -> Any:
    """The payload with every part but `part` (and, for edges, the nodes they join) emptied."""
    keep = {part, "nodes"} if part == "edges" else {part}
    return replace(payload, **{p: [] for p in PARTS if p not in keep})


def write_measured(driver: Any, writer: Any, payload: Any) -> int:
    from cypher import WIPE_GRAPH_NODES, WIPE_PROMPTS

    with driver.session() as s:
        for statement in (WIPE_GRAPH_NODES, WIPE_PROMPTS):
            s.run(statement).consume()
    with PeakMemory(driver) as peak:
        writer.write_prompt(payload)
    return peak.peak


def prompt_table(out: Results, driver: Any, payload: Any) -> None:
    from circuitstore.ingest.writer import StoreWriter

    writer = StoreWriter(driver, "neo4j", 20)
    nodes = write_measured(driver, writer, only(payload, "nodes"))
    out.table("part", "rows", "peak transaction memory (MiB)", "KiB per row")
    for part in PARTS:
        peak = nodes if part == "nodes" else write_measured(driver, writer, only(payload, part))
        own = peak - nodes if part == "edges" else peak
        rows = len(getattr(payload, part))
        out.row(part, f"{rows:,}", f"{peak / 2**20:.0f}", f"{own / 2**10 / max(rows, 1):.1f}")
    full = write_measured(driver, writer, payload)
    estimate = payload.write_bytes()
    out.row("the whole prompt", "", f"{full / 2**20:.0f}", "")
    out.print(f"\n`PromptPayload.write_bytes()` estimates {estimate / 2**20:.0f} MiB for it.")


def views_table(out: Results, driver: Any, weights: tuple[Path, Path], limit: int) -> None:
    import torch

    from circuitstore.ingest import writer as w
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders
    from circuitstore.ingest.transcoder_set import layer_views

    with driver.session() as s:
        set_id = s.run("MATCH (t:TranscoderSet) RETURN t.id AS id").single()["id"]
    model, tcs = load_model(weights[0]), load_transcoders(str(weights[1]))
    last = tcs.n_layers - 1  # the layer whose virtual weights come from every earlier one
    with torch.no_grad():
        tokens, virtual = layer_views(model, tcs, set_id, last, 10)
    out.print(
        f"\nLayer {last}'s views, {len(tokens):,} features and {len(virtual) * 10:,} virtual "
        "weights:\n"
    )
    out.table("write", "transactions", "peak transaction memory (MiB)", "outcome")
    chunked = w.VIEW_CHUNK
    for name, size in (("one transaction (before)", 10**9), ("chunks (now)", chunked)):
        w.VIEW_CHUNK = size
        with driver.session() as s:
            s.run("MATCH ()-[v:VIRTUAL_WEIGHT]->() DELETE v").consume()
            s.run("MATCH (t:TranscoderSet) SET t.viewLayers = [], t.viewChunks = []").consume()
        outcome = "written"
        with PeakMemory(driver) as peak:
            try:
                w.StoreWriter(driver, "neo4j", 20).write_views(set_id, last, tokens, virtual)
            except Exception as exc:  # the server's refusal is the figure here
                outcome = f"refused: {str(exc)[:70]}"
        count = -(-len(tokens) // size)
        out.row(name, count, f"{peak.peak / 2**20:.0f} (limit {limit / 2**20:.0f})", outcome)
    w.VIEW_CHUNK = chunked


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--heap", default="1g")
    parser.add_argument("--folder", type=Path, help="keep the stand-in weights here (reused)")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()

    from circuitstore.ingest.writer import StoreWriter
    from circuitstore.schema.apply import apply_schema
    from circuitstore.schema.connection import Neo4jSettings, open_driver

    server = LocalServer(Path(tempfile.mkdtemp(prefix="bench-neo4j-")), secrets.token_urlsafe(12))
    server = replace(server, heap=args.heap, pagecache="512m")
    server.start()
    try:
        settings = Neo4jSettings.load(uri=server.uri, password=server.password)
        with open_driver(settings) as driver, tempfile.TemporaryDirectory() as tmp:
            apply_schema(driver, "neo4j")
            weights = stand_in(args.folder or Path(tmp))
            payload = one_payload(driver, weights, args.tokens, Path(tmp))
            limit = (StoreWriter(driver, "neo4j", 20).transaction_limit() or (0, ""))[0]
            with Results("bench_write_memory", enabled=args.write_docs) as out:
                out.print(
                    f"One {args.tokens}-token prompt of the GPT-2-scale stand-in into Neo4j 5.26 "
                    f"with a {args.heap} heap (transactions may hold {limit / 2**20:.1f} MiB):\n"
                )
                prompt_table(out, driver, payload)
                views_table(out, driver, weights, limit)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
