"""QK traces as (:QKTrace) nodes: one per (prompt, head, query position, key position, mode),
a prompt's traces in one transaction. `trace_rows` builds the parameter rows (pure Python, so what
lands in the store is checked without one); `write_traces` runs them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import neo4j

from circuitstore.ingest.qkstore.cypher import WRITE_QK_TRACES
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.model import content_hash
from circuitstore.schema.names import TRANSCODER, FeatureFamily, NodeId, respell

if TYPE_CHECKING:  # the writer itself needs no torch
    from circuitstore.ingest.qk.decompose import RawTrace


@dataclass(frozen=True)
class TracedPrompt:
    """The stored prompt a trace belongs to: its id, key and transcoder set, and the set's
    feature family, which spells the node ids the trace names as the store holds them."""

    id: str
    key: str
    transcoder_set: str
    family: FeatureFamily = TRANSCODER


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


def trace_row(
    prompt: TracedPrompt, trace: RawTrace, edge: TracedEdge | None = None
) -> dict[str, Any]:
    """The write row of one trace: its properties (every kept term in lists, in rank order;
    read back as `query.qk.records.QKTrace`), and its kept marginal contributors by qualified
    node id, which the statement links where the prompt's stored graph holds them. The names
    the engine wrote (TRANSCODER's spelling) are spelled in the prompt's family."""
    t = spelled(trace, prompt.family)
    props: dict[str, Any] = {
        "prompt": prompt.id,
        "promptKey": prompt.key,
        "transcoderSet": prompt.transcoder_set,
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
        "pairsQuery": [q for q, _, _ in t.pairs],
        "pairsKey": [k for _, k, _ in t.pairs],
        "pairsValue": [float(v) for _, _, v in t.pairs],
        "queryNodes": [q for q, _ in t.query_side],
        "queryValues": [float(v) for _, v in t.query_side],
        "keyNodes": [k for k, _ in t.key_side],
        "keyValues": [float(v) for _, v in t.key_side],
    }
    if edge is not None:
        source, target = (respell(x, prompt.family) for x in (edge.source, edge.target))
        props.update(source=source, target=target, edgeWeight=float(edge.weight))
    return {
        "id": trace_id(prompt.id, t.layer, t.head, t.query_pos, t.key_pos, t.mode),
        "props": props,
        "query": _links(prompt.id, t.query_side),
        "key": _links(prompt.id, t.key_side),
    }


def spelled(trace: RawTrace, family: FeatureFamily) -> RawTrace:
    """`trace` with every contributor it names spelled in `family` (`schema.names.respell`)."""

    def name(x: str) -> str:
        return respell(x, family)

    return replace(
        trace,
        pairs=tuple((name(q), name(k), v) for q, k, v in trace.pairs),
        query_side=tuple((name(q), v) for q, v in trace.query_side),
        key_side=tuple((name(k), v) for k, v in trace.key_side),
    )


def trace_rows(
    prompt: TracedPrompt, traces: Sequence[tuple[RawTrace, TracedEdge | None]]
) -> list[dict[str, Any]]:
    """One prompt's traces as write rows, each id once (the last of a repeated one wins, as a
    rerun's would)."""
    rows = {}
    for trace, edge in traces:
        row = trace_row(prompt, trace, edge)
        rows[row["id"]] = row
    return list(rows.values())


def write_traces(
    driver: neo4j.Driver,
    database: str,
    prompt: TracedPrompt,
    traces: Sequence[tuple[RawTrace, TracedEdge | None]],
) -> int:
    """Write one prompt's traces (with the edges they were made for, where any) in one
    transaction, replacing earlier traces of the same (head, positions, mode); returns how
    many. A prompt the store lacks gets none."""
    rows = trace_rows(prompt, traces)
    with translate_errors(), driver.session(database=database) as session:
        session.execute_write(
            lambda tx: tx.run(WRITE_QK_TRACES, prompt=prompt.id, rows=rows).consume()
        )
    return len(rows)


def _links(prompt_id: str, side: Sequence[tuple[str, float]]) -> list[dict[str, Any]]:
    return [
        {"node": NodeId.qualified(prompt_id, name), "value": float(v), "rank": r + 1}
        for r, (name, v) in enumerate(side)
    ]
