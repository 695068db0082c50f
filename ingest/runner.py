"""`IngestRunner(cfg).run()`: a corpus through the engine into the store, resumable.

Order of work, and why it survives `kill -9` at any moment:
1. validate the corpus and the weights before touching anything;
2. record the run and its prompts in the catalog (pending);
3. reconcile: prompts whose Prompt node is already in the store are done, whatever the catalog
   says (the Prompt node is written in the same transaction as the prompt's aggregates);
4. for each pending prompt: attribute, then one write transaction; then update the catalog.
A crash between 4's transaction and its catalog update is repaired by 3 on the next run.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import neo4j
import torch
from tqdm import tqdm

from circuitstore import __version__
from circuitstore.ingest.aggregate import DrivesSink, feature_summary
from circuitstore.ingest.attribution import AttributionEngine
from circuitstore.ingest.attribution.api import load_engine
from circuitstore.ingest.attribution.heads import strongest_heads
from circuitstore.ingest.catalog import DONE, FAILED, SKIPPED, Catalog, RunRecord
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.corpus import Corpus, PromptRecord, read_corpus
from circuitstore.ingest.model import LoadedModel, all_tokens
from circuitstore.ingest.parts.writer import PartsWriter
from circuitstore.ingest.payload import PromptPayload, build_payload
from circuitstore.ingest.qk import require_qk_tracing
from circuitstore.ingest.qkstore.select import edge_traces
from circuitstore.ingest.qkstore.write import TracedPrompt, trace_rows
from circuitstore.ingest.transcoder import TranscoderSet
from circuitstore.ingest.transcoder_set import (
    feature_rows,
    features_family,
    layer_views,
    transcoder_set_info,
)
from circuitstore.ingest.writebehind import Done, write_behind
from circuitstore.ingest.writer import PromptWriteError, StoreWriter, TranscoderSetNode
from circuitstore.schema.apply import require_current_schema
from circuitstore.schema.errors import InputError, StoreUnavailableError
from circuitstore.schema.names import TRANSCODER, FeatureFamily, NodeId


@dataclass
class IngestSummary:
    """What one ingest run did: prompts, writes, skips, failures, throughput."""

    run: str
    resumed: bool
    prompts: int = 0
    written: int = 0
    already_stored: int = 0
    skipped: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    truncated: int = 0
    tokens: int = 0
    edges: int = 0
    drives_rows: int = 0
    seconds: float = 0.0
    engine_seconds: float = 0.0  # the engine's share (forward, attribution, payload)
    heads_seconds: float = 0.0  # of which splitting the stored edges by attention head
    qk_traces: int = 0  # QK traces written (`--qk-top`)
    qk_seconds: float = 0.0  # the engine's share spent on them
    write_seconds: float = 0.0  # the writer thread's, overlapping the engine's
    blank_lines: int = 0
    repeated_lines: int = 0
    setup_seconds: float | None = None  # set when this run wrote the transcoder set's features
    views_seconds: float | None = None  # set when this run wrote views of some layers

    def lines(self) -> list[str]:
        """The summary as lines for people."""
        rate = self.tokens / self.seconds if self.seconds else 0.0
        out = [
            f"run {self.run} ({'resumed' if self.resumed else 'new'}): {self.prompts} prompts "
            f"in this shard, {self.written} written, {self.already_stored} already in the store",
            f"{self.tokens} tokens, {self.edges} per-prompt edges, {self.drives_rows} DRIVES "
            f"increments, {self.seconds:.1f} s "
            f"({rate:.1f} tokens/s; engine {self.engine_seconds:.1f} s, of which heads "
            f"{self.heads_seconds:.1f} s; writes "
            f"{self.write_seconds:.1f} s alongside)",
        ]
        if self.setup_seconds is not None:
            out.insert(1, f"the set's features written once, in {self.setup_seconds:.1f} s")
        if self.views_seconds is not None:
            out.append(
                f"input-independent views (logit lens, de-embedding, virtual weights) written "
                f"after the prompts, in {self.views_seconds:.1f} s"
            )
        if self.qk_traces:
            out.append(f"{self.qk_traces} QK traces, computed in {self.qk_seconds:.1f} s")
        skipped = [f"{n} {why}" for why, n in sorted(self.skipped.items())]
        if self.blank_lines or self.repeated_lines:
            skipped.append(f"{self.blank_lines} blank and {self.repeated_lines} repeated lines")
        if skipped:
            out.append("skipped: " + "; ".join(skipped))
        if self.truncated:
            out.append(f"truncated: {self.truncated} prompts cut to the token limit")
        if self.failed:
            out.append(
                f"failed: {self.failed} prompts could not be written (their reasons are in the "
                "catalog; a rerun retries them)"
            )
        return out


class IngestRunner:
    """`IngestRunner(cfg, driver).run()`; `where` names the store in messages (its URI). With
    `cfg.parts` the prompts go to parts files and `driver` may be None: nothing talks to Neo4j."""

    def __init__(
        self,
        cfg: IngestConfig,
        driver: neo4j.Driver | None,
        database: str = "neo4j",
        where: str | None = None,
        on_prompt: Callable[[int], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.driver = driver
        self.database = database
        self.where = where
        self.on_prompt = on_prompt  # hears each finished prompt's token count (0: skipped)
        self.views = True  # compute the set's missing views after the prompts

    def run(self) -> IngestSummary:
        """Ingest the corpus (this shard of it) and return what happened.

        Raises InputError (a bad corpus, model or transcoder file: before anything is written
        to the store),
        ConfigError (settings that clash with the store's), SchemaError (no schema applied),
        StoreUnavailableError (Neo4j unreachable past the retry window: rerun to resume),
        CatalogError. A prompt the store refuses is recorded as failed, not raised.
        """
        cfg = self.cfg
        # Cheap checks first: a bad corpus, store or catalog fails before the model loads.
        full = read_corpus(cfg.prompts)
        corpus = full.shard(cfg.shard_index, cfg.shard_count)
        writer = self._writer()  # an unreachable store or unwritable folder fails here
        catalog = Catalog.open(cfg.catalog_url())
        engine = load_engine(
            cfg.model,
            cfg.transcoders,
            device=cfg.device,
            dtype=cfg.dtype,
            weights_dtype=cfg.weights_dtype,
            tf32=cfg.tf32,
        )
        model, tcs = engine.model, engine.transcoders
        if cfg.qk_top:  # refused before the run is recorded, not at its first prompt
            require_qk_tracing(model)
        provenance = _provenance(cfg, model, tcs)
        graph_hash = cfg.graph_hash(provenance)
        settings = {k: v for k, v in cfg.graph_dict().items() if k not in ("model", "transcoders")}
        info = transcoder_set_info(model, tcs, provenance, graph_hash, settings)
        writer.check_transcoder_set(info)  # before the catalog records a run it would refuse
        name = cfg.run_name(graph_hash, full.digest())
        record = catalog.open_run(name, cfg.public_dict(), graph_hash, provenance)
        setup = _SetSetup(writer, info, tcs)
        try:
            job = _Job(cfg, engine, writer, catalog, record, info.id, tcs.d_tc, tcs.n_layers)
            job.family = features_family(tcs)
            job.on_prompt = self.on_prompt
            job.before_first_write = setup
            summary = job.run(corpus)
            if self.views and writer.has_features(info.id):
                summary.views_seconds = _views(engine, writer, info.id, cfg.views_top_k)
        except BaseException as exc:
            # A run stopped by an error or Ctrl-C is not left "running" in the catalog.
            with contextlib.suppress(Exception):
                catalog.finish(
                    name, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                )
            raise
        summary.setup_seconds = setup.seconds
        catalog.finish(name, "complete" if not summary.failed else "incomplete")
        return summary

    def _writer(self) -> Writer:
        if self.cfg.parts is not None:
            return PartsWriter(self.cfg.parts)
        if self.driver is None:
            raise ValueError("IngestRunner needs a driver unless cfg.parts is set")
        require_current_schema(self.driver, self.database)
        return StoreWriter(self.driver, self.database, self.cfg.top_examples, self.where)


# Where prompts go: one Neo4j transaction each, or Parquet parts (`ingest --parts`).
Writer = StoreWriter | PartsWriter


@dataclass
class _SetSetup:
    """The transcoder set and its Feature nodes, written once a first prompt has been computed:
    weights the engine cannot use (overflowing activations, say) then leave no set behind."""

    writer: Writer
    info: TranscoderSetNode
    tcs: TranscoderSet
    seconds: float | None = None  # set when this run wrote the set's features

    def __call__(self) -> None:
        start = time.perf_counter()
        if self.writer.ensure_transcoder_set(self.info, feature_rows(self.tcs, self.info.id)):
            self.seconds = time.perf_counter() - start


@dataclass(frozen=True)
class _Computed:
    """A prompt whose payload waits for the writer."""

    key: str
    payload: PromptPayload
    n_tokens: int
    truncated: bool


@dataclass
class _Job:
    cfg: IngestConfig
    engine: AttributionEngine
    writer: Writer
    catalog: Catalog
    record: RunRecord
    tset: str
    d_tc: int
    n_layers: int
    on_prompt: Callable[[int], None] | None = None
    before_first_write: Callable[[], None] | None = None
    family: FeatureFamily = TRANSCODER  # spells the stored node ids

    def run(self, corpus: Corpus) -> IngestSummary:
        run = self.record.name
        summary = IngestSummary(run, self.record.resumed, len(corpus.prompts))
        summary.blank_lines, summary.repeated_lines = corpus.blank_lines, corpus.repeated_lines
        self.catalog.register(run, [(p.key, p.line) for p in corpus.prompts])
        pending = self._reconcile(corpus, summary)
        start = time.perf_counter()
        updates: list[dict[str, Any]] = []
        bar = tqdm(total=len(pending), unit="prompt", disable=_quiet(self.cfg))
        # An outage stops the run once: the engine's lookups and the write in flight retry
        # over the same window (the driver's), and nothing queued is tried after it.
        with bar, write_behind(self._write, depth=2, fatal=(StoreUnavailableError,)) as behind:
            for record in pending:
                item = self._compute(record, summary)
                if isinstance(item, _Computed):
                    behind.put(item)
                else:
                    updates.append(item)
                    self._finished(bar, 0)
                for done in behind.done():
                    updates.append(self._written(done, summary))
                    self._finished(bar, done.item.n_tokens)
                bar.set_postfix(
                    tok_s=f"{summary.tokens / max(time.perf_counter() - start, 1e-9):.0f}",
                    edges=summary.edges,
                )
                if len(updates) >= self.cfg.batch_size:
                    self.catalog.mark(run, updates)
                    updates = []
            for done in behind.close():
                updates.append(self._written(done, summary))
                self._finished(bar, done.item.n_tokens)
        self.catalog.mark(run, updates)
        summary.seconds = time.perf_counter() - start
        return summary

    def _reconcile(self, corpus: Corpus, summary: IngestSummary) -> list[PromptRecord]:
        """The prompts still to write. The store decides, not the catalog: a prompt is done when
        its Prompt node exists (from this run or another), and one the catalog calls done but
        the store lacks (a wiped or different database) is written again."""
        ids = {NodeId.prompt(self.tset, p.key): p for p in corpus.prompts}
        stored = self.writer.existing_prompts(list(ids))
        settled = self.catalog.keys_in_state(self.record.name, DONE)
        settled |= self.catalog.keys_in_state(self.record.name, SKIPPED)
        marks = [
            {
                "key": ids[pid].key,
                "state": DONE if run == self.record.name else SKIPPED,
                "reason": None if run == self.record.name else f"in the store from run {run}",
            }
            for pid, run in stored.items()
            if ids[pid].key not in settled
        ]
        self.catalog.mark(self.record.name, marks)
        summary.already_stored += len(stored)
        return [p for pid, p in ids.items() if pid not in stored]

    def _finished(self, bar: Any, tokens: int) -> None:
        bar.update()
        if self.on_prompt is not None:
            self.on_prompt(tokens)

    def _compute(self, record: PromptRecord, summary: IngestSummary) -> _Computed | dict[str, Any]:
        """The prompt's payload, or its final catalog update when there is nothing to write."""
        prompt_id = NodeId.prompt(self.tset, record.key)
        if self.writer.existing_prompts([prompt_id]):
            # Another process running the same corpus wrote it since the reconcile.
            summary.already_stored += 1
            return {"key": record.key, "state": DONE, "reason": "written by another process"}
        try:
            tokens, cut_from = self._tokens(record)
        except InputError as exc:
            # tokenize refuses only empty and over-long prompts; count them by kind.
            reason = "over the length limit" if record.text.strip() else "empty"
            summary.skipped[reason] = summary.skipped.get(reason, 0) + 1
            return {"key": record.key, "state": SKIPPED, "reason": str(exc)}
        began = time.perf_counter()
        payload = self._payload(record, tokens, cut_from, summary)
        summary.engine_seconds += time.perf_counter() - began
        return _Computed(record.key, payload, int(tokens.shape[0]), cut_from is not None)

    def _write(self, item: _Computed) -> tuple[bool, float]:
        """In the writer thread: whether the prompt was written (not already there), and how
        long it took."""
        if self.before_first_write is not None:
            # In the writer thread: the set's nodes go in while the engine computes prompt 2.
            self.before_first_write()
            self.before_first_write = None
        began = time.perf_counter()
        return self.writer.write_prompt(item.payload), time.perf_counter() - began

    def _written(
        self, done: Done[_Computed, tuple[bool, float]], summary: IngestSummary
    ) -> dict[str, Any]:
        """A finished write as a catalog update, counted in the summary."""
        item = done.item
        if isinstance(done.error, PromptWriteError):
            # This prompt cannot go in (the store refused it): record why and go on; an outage
            # (StoreUnavailableError) stops the run, which a rerun resumes.
            summary.failed += 1
            return {"key": item.key, "state": FAILED, "reason": str(done.error)}
        if done.error is not None:
            raise done.error
        assert done.result is not None
        written, seconds = done.result
        summary.write_seconds += seconds
        if written:
            summary.written += 1
            summary.edges += item.payload.n_edges
            summary.drives_rows += len(item.payload.drives)
            summary.qk_traces += len(item.payload.qk)
            summary.truncated += item.truncated
        else:
            summary.already_stored += 1
        summary.tokens += item.n_tokens
        edges = item.payload.n_edges
        return {"key": item.key, "state": DONE, "n_tokens": item.n_tokens, "n_edges": edges}

    def _tokens(self, record: PromptRecord) -> tuple[torch.Tensor, int | None]:
        """Token ids with BOS, cut to the model's context or --max-tokens with --truncate (then
        also the length before the cut); too long otherwise."""
        model = self.engine.model
        tokens = all_tokens(model, record.text)
        n_full = int(tokens.shape[0])
        limit = min(model.n_ctx, self.cfg.max_tokens or model.n_ctx)
        if n_full <= limit:
            return tokens, None
        if not self.cfg.truncate:
            option = "--max-tokens" if limit < model.n_ctx else "the model's context"
            raise InputError(f"over {option}: {n_full} tokens with BOS > {limit}")
        return tokens[:limit], n_full

    def _payload(
        self,
        record: PromptRecord,
        tokens: torch.Tensor,
        cut_from: int | None,
        summary: IngestSummary,
    ) -> PromptPayload:
        config = self.cfg.attribution
        with torch.no_grad(), self.engine.on_device():
            state = self.engine.prepare_tokens(tokens, config)
            drives = DrivesSink(
                state.nodes,
                state.n_features,
                self.d_tc,
                self.n_layers,
                self.cfg.aggregate_min_fraction,
            )
            graph = self.engine.graph(state, config, sinks=[drives])
            began = time.perf_counter()
            k = self.cfg.heads_per_edge
            heads = strongest_heads(state, graph, k) if k else None
            summary.heads_seconds += time.perf_counter() - began
            began = time.perf_counter()
            traces = edge_traces(state, graph, self.cfg.qk_top) if self.cfg.qk_top else []
            summary.qk_seconds += time.perf_counter() - began
            payload = build_payload(
                record,
                graph,
                feature_summary(state.nodes, self.d_tc),
                drives.result(),
                heads,
                transcoder_set=self.tset,
                run=self.record.name,
                d_tc=self.d_tc,
                truncated_from=cut_from,
                family=self.family,
            )
        prompt = TracedPrompt(payload.prompt_id, record.key, self.tset, self.family)
        return replace(payload, qk=trace_rows(prompt, traces))


def _views(engine: AttributionEngine, writer: Writer, set_id: str, top_k: int) -> float | None:
    """The views of every layer not yet in the store, a layer a transaction (exactly once each,
    resumable); after the prompts, so that a corpus never waits for them (on 2 CPU cores they are
    minutes of arithmetic at GPT-2 scale; on a GPU, seconds). Seconds taken, or None if none
    were missing."""
    missing = sorted(set(range(engine.model.n_layers)) - writer.view_layers(set_id))
    if not missing:
        return None
    start = time.perf_counter()
    for layer in missing:
        with torch.no_grad(), engine.on_device():
            tokens, virtual = layer_views(engine.model, engine.transcoders, set_id, layer, top_k)
        writer.write_views(set_id, layer, tokens, virtual)
    return time.perf_counter() - start


def _quiet(cfg: IngestConfig) -> bool | None:
    # tqdm's disable=None turns the bar off when stderr is not a terminal.
    return None if cfg.progress is None else not cfg.progress


def _provenance(cfg: IngestConfig, model: LoadedModel, tcs: TranscoderSet) -> dict[str, Any]:
    return {
        "model": cfg.model,
        "model_hash": model.weights_hash,
        "transcoders": cfg.transcoders,
        "transcoders_hash": tcs.content_hash,
        "code_version": __version__,
    }
