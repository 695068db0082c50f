"""The QK question, asked of a store: a prompt's stored traces, read back as computed, and the
features that drive one head's scores over all of them."""

from __future__ import annotations

from typing import Any

from circuitstore.query.labels.search import feature_labels
from circuitstore.query.prompts.read import prompt_info
from circuitstore.query.qk import cypher
from circuitstore.query.qk.records import TRACE_COLUMNS, QKTerm, QKTrace
from circuitstore.query.qk.stored import DRIVER_COLUMNS, QKDriver, TracedEdge
from circuitstore.query.reader import StoreReader, TranscoderSetInfo, check_choice, check_top
from circuitstore.query.tables import Records
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import KINDS, NodeKind, parse_feature
from circuitstore.schema.names import parse_head as parse_head_name

SIDES = tuple(cypher.SIDES)
SIGNS = tuple(cypher.SIGN_FILTERS)


def checked_head(text: str, tset: TranscoderSetInfo) -> tuple[int, int]:
    """(layer, head) of `attn2[3]`, checked against the transcoder set's layers and heads."""
    layer, head = parse_head_name(text)
    if not 0 <= layer < tset.n_layers:
        raise QueryError(
            f"head {text.strip()}: layer {layer} is out of range; transcoder set {tset.id} has "
            f"layers 0..{tset.n_layers - 1}"
        )
    if tset.n_heads is not None and not 0 <= head < tset.n_heads:
        raise QueryError(
            f"head {text.strip()}: head {head} is out of range; transcoder set {tset.id} has "
            f"heads 0..{tset.n_heads - 1} per layer"
        )
    return layer, head


def qk_traces(store: StoreReader, prompt: str, head: str | None) -> Records[QKTrace]:
    """The traces stored for `prompt` (key or id), of `head` where given (`attn2[3]`)."""
    return Records((e.trace for e in traced_edges(store, prompt, head)), TRACE_COLUMNS)


def traced_edges(store: StoreReader, prompt: str, head: str | None = None) -> list[TracedEdge]:
    """The traces stored for `prompt`, each with the edge it was made for where any."""
    info = prompt_info(store, prompt)
    layer, index = (
        (None, None) if head is None else checked_head(head, store.tset(info.transcoder_set))
    )
    rows = store.values(cypher.PROMPT_TRACES, prompt=info.id, layer=layer, head=index)
    return [_traced(r["trace"]) for r in rows]


def qk_drivers(store: StoreReader, head: str, side: str, top: int, sign: str) -> Records[QKDriver]:
    """The `top` features whose marginals on `side` most raise (`positive`), lower
    (`negative`) or move (`abs`) `head`'s scores, summed over its stored traces."""
    check_choice("side", side, SIDES)
    check_choice("sign", sign, SIGNS)
    check_top(top)
    tset = store.tset()
    layer, index = checked_head(head, tset)
    pattern = KINDS[NodeKind.FEATURE].local_id
    rows = store.values(
        cypher.head_drivers(side, sign),
        tset=tset.id,
        layer=layer,
        head=index,
        pattern=pattern,
        at="@",
        top=top,
    )
    traces, found = rows[0]["traces"], rows[0]["rows"]
    labels = store_labels(store, tset.id, [r["feature"] for r in found])
    return Records(
        (QKDriver(**r, traces=traces, label=labels.get(r["feature"])) for r in found),
        DRIVER_COLUMNS,
    )


def store_labels(store: StoreReader, tset: str, features: list[str]) -> dict[str, str]:
    """The labels of those of `features` (names, `mlp2tc[7]`) that have one."""
    refs = [parse_feature(f) for f in features]
    return feature_labels(store, tset, [(r.layer, r.index) for r in refs])


def _traced(p: dict[str, Any]) -> TracedEdge:
    trace = QKTrace(
        prompt=p["promptKey"],
        prompt_id=p["prompt"],
        transcoder_set=p["transcoderSet"],
        layer=p["layer"],
        head=p["head"],
        query_pos=p["queryPos"],
        key_pos=p["keyPos"],
        mode=p["mode"],
        score=p["score"],
        total=p["total"],
        probability=p["probability"],
        n_query=p["nQuery"],
        n_key=p["nKey"],
        pairs=tuple(
            QKTerm(q, k, v)
            for q, k, v in zip(p["pairsQuery"], p["pairsKey"], p["pairsValue"], strict=True)
        ),
        query_side=tuple(
            QKTerm(q, None, v) for q, v in zip(p["queryNodes"], p["queryValues"], strict=True)
        ),
        key_side=tuple(
            QKTerm(None, k, v) for k, v in zip(p["keyNodes"], p["keyValues"], strict=True)
        ),
    )
    return TracedEdge(trace, p.get("source"), p.get("target"), p.get("edgeWeight"))
