"""QK traces as (:QKTrace) nodes: one per (prompt, head, query position, key position, mode),
a prompt's traces in one transaction. `rows` builds the parameter rows (pure Python, so what
lands in the store is checked without one); `write_traces` runs them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import neo4j

from circuitstore.ingest.qkstore.cypher import WRITE_QK_TRACES
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.errors import ConfigError
from circuitstore.schema.model import content_hash
from circuitstore.schema.names import NodeId


class QKTerm(Protocol):
    """One term of a trace, as `query.qk.records.QKTerm` holds it (ingest sits below query:
    what is written is described here by shape only)."""

    @property
    def query(self) -> str | None: ...
    @property
    def key(self) -> str | None: ...
    @property
    def value(self) -> float: ...


class QKTrace(Protocol):
    """A trace, as `query.qk.records.QKTrace` holds it: what the writer reads of one."""

    @property
    def prompt(self) -> str: ...
    @property
    def prompt_id(self) -> str: ...
    @property
    def transcoder_set(self) -> str: ...
    @property
    def layer(self) -> int: ...
    @property
    def head(self) -> int: ...
    @property
    def query_pos(self) -> int: ...
    @property
    def key_pos(self) -> int: ...
    @property
    def mode(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def total(self) -> float: ...
    @property
    def probability(self) -> float: ...
    @property
    def n_query(self) -> int: ...
    @property
    def n_key(self) -> int: ...
    @property
    def pairs(self) -> Sequence[QKTerm]: ...
    @property
    def query_side(self) -> Sequence[QKTerm]: ...
    @property
    def key_side(self) -> Sequence[QKTerm]: ...


@dataclass(frozen=True)
class TracedEdge:
    """The stored ATTR edge a trace was made for (`ingest --qk-top`, `qk --edge`): its source
    and target (local ids) and weight. The trace's query position is the target's, its key
    position the source's; exports show the trace on the target."""

    source: str
    target: str
    weight: float


def trace_id(prompt_id: str, layer: int, head: int, query_pos: int, key_pos: int, mode: str) -> str:
    """A trace's id: what it traces, so that tracing it again replaces it."""
    return content_hash(prompt_id, str(layer), str(head), str(query_pos), str(key_pos), mode)


def trace_row(trace: QKTrace, edge: TracedEdge | None = None) -> dict[str, Any]:
    """The write row of one trace: its properties (every term in lists, in rank order), and
    its kept marginal contributors by qualified node id, which the statement links where the
    prompt's stored graph holds them."""
    t = trace
    props: dict[str, Any] = {
        "prompt": t.prompt_id,
        "promptKey": t.prompt,
        "transcoderSet": t.transcoder_set,
        "layer": t.layer,
        "head": t.head,
        "queryPos": t.query_pos,
        "keyPos": t.key_pos,
        "mode": t.mode,
        "score": float(t.score),
        "total": float(t.total),
        "probability": float(t.probability),
        "nQuery": t.n_query,
        "nKey": t.n_key,
        "pairsQuery": [_named(p.query) for p in t.pairs],
        "pairsKey": [_named(p.key) for p in t.pairs],
        "pairsValue": [float(p.value) for p in t.pairs],
        "queryNodes": [_named(c.query) for c in t.query_side],
        "queryValues": [float(c.value) for c in t.query_side],
        "keyNodes": [_named(c.key) for c in t.key_side],
        "keyValues": [float(c.value) for c in t.key_side],
    }
    if edge is not None:
        props.update(source=edge.source, target=edge.target, edgeWeight=float(edge.weight))
    return {
        "id": trace_id(t.prompt_id, t.layer, t.head, t.query_pos, t.key_pos, t.mode),
        "props": props,
        "query": _links(t.prompt_id, [c.query for c in t.query_side], t.query_side),
        "key": _links(t.prompt_id, [c.key for c in t.key_side], t.key_side),
    }


def trace_rows(traces: Sequence[tuple[QKTrace, TracedEdge | None]]) -> list[dict[str, Any]]:
    """One prompt's traces as write rows, each id once (the last of a repeated one wins, as a
    rerun's would)."""
    rows = {}
    for trace, edge in traces:
        row = trace_row(trace, edge)
        rows[row["id"]] = row
    return list(rows.values())


def write_traces(
    driver: neo4j.Driver, database: str, traces: Sequence[tuple[QKTrace, TracedEdge | None]]
) -> int:
    """Write one prompt's traces (with the edges they were made for, where any) in one
    transaction, replacing earlier traces of the same (head, positions, mode); returns how
    many. Refuses traces of several prompts."""
    prompts = {t.prompt_id for t, _ in traces}
    if len(prompts) > 1:
        raise ConfigError(f"traces of {len(prompts)} prompts: write one prompt's at a time")
    if not prompts:
        return 0
    rows = trace_rows(traces)
    prompt = prompts.pop()
    with translate_errors(), driver.session(database=database) as session:
        session.execute_write(
            lambda tx: tx.run(WRITE_QK_TRACES, prompt=prompt, rows=rows).consume()
        )
    return len(rows)


def _named(local_id: str | None) -> str:
    if local_id is None:  # a pair names both sides and a marginal its own
        raise ConfigError("a QK term without the contributor it is kept for")
    return local_id


def _links(prompt_id: str, ids: list[str | None], terms: Sequence[QKTerm]) -> list[dict[str, Any]]:
    return [
        {"node": NodeId.qualified(prompt_id, _named(i)), "value": float(c.value), "rank": r + 1}
        for r, (i, c) in enumerate(zip(ids, terms, strict=True))
    ]
