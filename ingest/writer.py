"""Writing to Neo4j: the transcoder set and its features once, then one transaction per prompt.

A prompt's transaction first checks for its Prompt node and does nothing if it is there, so a
prompt re-sent after a crash (or by a second run over the same corpus) is never counted twice.
The driver's managed transactions retry deadlocks and a restarting server.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

import neo4j

from circuitstore.ingest import cypher
from circuitstore.ingest.payload import PromptPayload
from circuitstore.ingest.qkstore.cypher import WRITE_QK_TRACES
from circuitstore.schema.connection import (
    MEMORY_CODE,
    display_uri,
    memory_error,
    translate_errors,
)
from circuitstore.schema.errors import (
    CircuitStoreError,
    ConfigError,
    ConstraintViolationError,
    SchemaError,
    TransactionMemoryError,
)

BATCH_ROWS = 10_000
# Features per view transaction: at GPT-2 scale 1,024 of them peaked at 42 MiB of transaction
# memory, where a whole layer was refused at a 1 GiB heap's 716.8 MiB (bench_write_memory.py).
VIEW_CHUNK = 1024


class PromptWriteError(CircuitStoreError):
    """The store refused one prompt's write (a value it cannot hold, say); the others go on."""


@dataclass(frozen=True)
class TranscoderSetNode:
    """The TranscoderSet node to write: its id, properties and graph configuration (read back
    as `query.reader.TranscoderSetInfo`)."""

    id: str
    props: dict[str, Any]
    graph_config_hash: str
    graph_config: dict[str, Any] = field(default_factory=dict)

    def stored_props(self) -> dict[str, Any]:
        """The node's properties as stored (both write paths): the graph configuration as
        JSON beside its hash."""
        graph = json.dumps(self.graph_config, sort_keys=True)
        return {**self.props, "graphConfigHash": self.graph_config_hash, "graphConfig": graph}


class StoreWriter:
    """Writes transcoder sets, their features and views, and prompts to one store."""

    def __init__(
        self, driver: neo4j.Driver, database: str, top_k: int, where: str | None = None
    ) -> None:
        self.driver = driver
        self.database = database
        self.top_k = top_k
        self.where = where  # the store's URI, for messages
        self._limit: object = _MISSING

    def check_transcoder_set(self, info: TranscoderSetNode) -> None:
        """Refuse a store whose prompts for this set were written under another graph
        configuration: per-prompt graphs and aggregates of two configurations must not mix. The
        message names the options that differ where the store recorded them."""
        with self._translate(), self._session(read=True) as session:
            state = session.execute_read(_rows, cypher.TRANSCODER_SET_STATE, id=info.id)
        if not state or state[0]["graphConfigHash"] == info.graph_config_hash:
            return
        stored = json.loads(state[0]["graphConfig"] or "{}")
        changed = [
            _difference(k, stored, info.graph_config)
            for k in sorted(stored.keys() | info.graph_config.keys())
            if stored.get(k, _MISSING) != info.graph_config.get(k, _MISSING)
        ]
        detail = "; ".join(changed) or "pruning, mode or aggregation settings"
        raise ConfigError(
            f"this store holds transcoder set {info.id} ingested with other graph settings "
            f"({detail}): use the same settings or another database"
        )

    def ensure_transcoder_set(
        self, info: TranscoderSetNode, features: Iterable[dict[str, Any]]
    ) -> bool:
        """Create the set and its features once (their views come per layer, `write_views`).
        True if created now. MERGE: a creation killed half-way is finished, not doubled."""
        self.check_transcoder_set(info)
        with self._translate(), self._session() as session:
            state = session.run(cypher.TRANSCODER_SET_STATE, id=info.id).single()
            if state is not None and state["featuresComplete"]:
                return False
            props = info.stored_props()
            session.execute_write(_run, cypher.MERGE_TRANSCODER_SET, id=info.id, props=props)
            for batch in _batches(features):
                session.execute_write(_run, cypher.MERGE_FEATURES, rows=batch)
            session.execute_write(_run, cypher.MARK_FEATURES_COMPLETE, id=info.id)
        return True

    def has_features(self, set_id: str) -> bool:
        """Whether the set and all its Feature nodes are in the store."""
        with self._translate(), self._session(read=True) as session:
            rows = session.execute_read(_rows, cypher.TRANSCODER_SET_STATE, id=set_id)
        return bool(rows and rows[0]["featuresComplete"])

    def view_layers(self, set_id: str) -> set[int]:
        """The layers whose views are in the store."""
        with self._translate(), self._session(read=True) as session:
            rows = session.execute_read(_rows, cypher.VIEW_LAYERS, id=set_id)
        return set(rows[0]["layers"]) if rows else set()

    def write_views(
        self,
        set_id: str,
        layer: int,
        tokens: list[dict[str, Any]],
        virtual: list[dict[str, Any]],
    ) -> bool:
        """One layer's views, in chunks of at most :data:`VIEW_CHUNK` features, each in one
        transaction that records it in the set's `viewChunks`, so that every chunk lands exactly
        once and a killed write resumes where it stopped; the layer goes into `viewLayers` when
        its last chunk is in. False if that layer was already there.

        Why chunks: one GPT-2 layer (24,576 features, 245,760 virtual weights) took over 716.8
        MiB of transaction memory, the whole budget of a server with a 1 GiB heap
        (`benchmarks/bench_write_memory.py`)."""
        n_chunks = max(1, -(-max(len(tokens), len(virtual)) // VIEW_CHUNK))

        def chunk(tx: neo4j.ManagedTransaction, i: int) -> bool:
            marker = f"{layer}:{i}"
            state = tx.run(cypher.LOCK_VIEWS, id=set_id).single()
            if state is None or layer in state["layers"] or marker in state["chunks"]:
                return False
            rows = slice(i * VIEW_CHUNK, (i + 1) * VIEW_CHUNK)
            with _no_retry_on_memory(self._shown()):
                tx.run(cypher.SET_FEATURE_VIEWS, rows=tokens[rows]).consume()
                for batch in _batches(virtual[rows], size=BATCH_ROWS // 10):  # ~10 sources/row
                    tx.run(cypher.CREATE_VIRTUAL_WEIGHTS, rows=batch).consume()
            tx.run(cypher.MARK_VIEW_CHUNK, id=set_id, chunk=marker).consume()
            return True

        def finish(tx: neo4j.ManagedTransaction) -> bool:
            state = tx.run(cypher.LOCK_VIEWS, id=set_id).single()
            if state is None or layer in state["layers"]:
                return False
            tx.run(cypher.MARK_VIEW_LAYER, id=set_id, layer=layer, prefix=f"{layer}:").consume()
            return True

        with self._translate(), self._session() as session:
            for i in range(n_chunks):
                session.execute_write(chunk, i)
            return bool(session.execute_write(finish))

    def existing_prompts(self, ids: Sequence[str]) -> dict[str, str]:
        """Which of `ids` are already in the store, and from which run."""
        found: dict[str, str] = {}
        with self._translate(), self._session(read=True) as session:
            for batch in _batches(ids):
                rows = session.execute_read(_rows, cypher.EXISTING_PROMPTS, ids=batch)
                found.update({r["id"]: r["run"] for r in rows})
        return found

    def transaction_limit(self) -> tuple[int, str] | None:
        """The most bytes the server lets one transaction hold, and the setting that says so;
        None when no limit is set (read once)."""
        if self._limit is _MISSING:
            with self._translate(), self._session(read=True) as session:
                rows = session.execute_read(_rows, cypher.SETTINGS, names=TRANSACTION_LIMITS)
            limits = [(_bytes(r["value"]), r["name"]) for r in rows]
            self._limit = min(((b, n) for b, n in limits if b), default=None)
        return self._limit  # type: ignore[return-value]

    def check_fits(self, payload: PromptPayload) -> None:
        """Refuse, before it is tried, a prompt whose write needs more transaction memory than
        the server allows, with the way to raise that limit."""
        limit = self.transaction_limit()
        need = payload.write_bytes()
        if limit is None or need <= limit[0]:
            return
        heap = max(2, math.ceil(need / 0.7 / 2**30) + 1)  # the default limit is 70% of the heap
        raise TransactionMemoryError(
            f"prompt {payload.prompt.get('key', payload.prompt_id)!r}: its write needs about "
            f"{need / 2**20:,.0f} MiB of transaction memory, but {self._shown()} "
            f"allows {limit[0] / 2**20:,.0f} MiB ({limit[1]}): restart that server with a "
            f"larger heap (`circuitstore server start --heap {heap}g`, or "
            f"NEO4J_server_memory_heap_max__size={heap}g for the Docker image), or store less "
            "per prompt (--max-edges, --max-tokens)"
        )

    def write_prompt(self, payload: PromptPayload) -> bool:
        """Write one prompt and its aggregate increments atomically. False if already there
        (written before, or by a concurrent writer whose commit won the race). Raises
        :class:`PromptWriteError` when the store refuses this prompt's data, and
        :class:`TransactionMemoryError` when it would not fit the server's transaction memory
        (nothing is written then)."""
        self.check_fits(payload)
        try:
            with self._translate(), self._session() as session:
                return bool(session.execute_write(self._write_tx, payload))
        except ConstraintViolationError as exc:
            if self.existing_prompts([payload.prompt_id]):
                return False  # the same prompt, committed by another process meanwhile
            raise PromptWriteError(f"prompt {payload.prompt_id}: {exc}") from exc
        except SchemaError as exc:  # a statement the server rejected for this prompt's data
            raise PromptWriteError(f"prompt {payload.prompt_id}: {exc}") from exc

    def _shown(self) -> str:
        return display_uri(self.where or "the store")

    def _translate(self) -> AbstractContextManager[None]:
        return translate_errors(where=self.where)

    def _write_tx(self, tx: neo4j.ManagedTransaction, p: PromptPayload) -> bool:
        with _no_retry_on_memory(self._shown()):
            return self._write_rows(tx, p)

    def _write_rows(self, tx: neo4j.ManagedTransaction, p: PromptPayload) -> bool:
        if tx.run(cypher.EXISTING_PROMPTS, ids=[p.prompt_id]).single() is not None:
            return False
        tx.run(cypher.CREATE_PROMPT, props=p.prompt).consume()
        check = tx.run(cypher.CREATE_GRAPH, nodes=p.nodes, edges=p.edges).single()
        if check is None or not check["ordered"]:
            raise SchemaError("graph nodes came back out of order; nothing was written")
        for batch in _batches(p.features):
            tx.run(cypher.UPDATE_FEATURE_STATS, rows=batch).consume()
        for batch in _batches(p.drives):
            tx.run(cypher.MERGE_DRIVES, rows=batch).consume()
        for batch in _batches(p.top):
            tx.run(
                cypher.UPDATE_TOP_EXAMPLES, rows=batch, prompt=p.prompt_id, k=self.top_k
            ).consume()
        if p.qk:  # after the graph: the traces link its nodes
            tx.run(WRITE_QK_TRACES, prompt=p.prompt_id, rows=p.qk).consume()
        return True

    def _session(self, read: bool = False) -> neo4j.Session:
        mode = neo4j.READ_ACCESS if read else neo4j.WRITE_ACCESS
        return self.driver.session(database=self.database, default_access_mode=mode)


_MISSING = object()
# What the server lets one transaction hold: the smallest non-zero of these ("0B": no limit).
# `dbms.memory.transaction.total.max` (all open transactions together) is 70% of the heap
# unless set.
TRANSACTION_LIMITS = (
    "dbms.memory.transaction.total.max",
    "db.memory.transaction.total.max",
    "db.memory.transaction.max",
)
_UNITS = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}


@contextmanager
def _no_retry_on_memory(where: str) -> Iterator[None]:
    """Inside a transaction function: the server's "out of transaction memory" is a transient
    error that the driver would retry for its whole window, each time failing the same way.
    Raised as ours it ends the transaction (rolled back, nothing written) at once. (When the
    server refuses at commit instead, the driver retries first; `translate_errors` then gives
    the same line.)"""
    try:
        yield
    except neo4j.exceptions.TransientError as exc:
        if exc.code != MEMORY_CODE:
            raise
        raise memory_error(where, exc) from None


def _bytes(value: str) -> int:
    """Neo4j's rendering of a memory setting ("716.80MiB", "0B") in bytes."""
    number = value.rstrip("KMGTiB")
    return int(float(number) * _UNITS.get(value[len(number) :], 1))


def _difference(key: str, stored: dict[str, Any], here: dict[str, Any]) -> str:
    """One setting that differs, in option words; a store written by an older version lacks
    settings added since (a newer one, settings removed since)."""
    if key not in stored:
        return f"{_option(key)} not recorded there (an older version), {here[key]!r} here"
    if key not in here:
        return f"{_option(key)} {stored[key]!r} there, not a setting of this version"
    return f"{_option(key)} {stored[key]!r} there, {here[key]!r} here"


def _option(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def _run(tx: neo4j.ManagedTransaction, query: str, **params: Any) -> None:
    tx.run(query, params).consume()


def _rows(tx: neo4j.ManagedTransaction, query: str, **params: Any) -> list[dict[str, Any]]:
    return [r.data() for r in tx.run(query, params)]


def _batches(rows: Iterable[Any], size: int = BATCH_ROWS) -> Iterator[list[Any]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch
