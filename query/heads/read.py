"""The heads question, asked of a store: the heads that carry a prompt's stored weight."""

from __future__ import annotations

import math
from dataclasses import dataclass

from circuitstore.query.heads import cypher
from circuitstore.query.heads.records import HeadLoad
from circuitstore.query.prompts.read import prompt_info
from circuitstore.query.reader import StoreReader, check_top
from circuitstore.query.tables import Records
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import NodeId, head_name, in_family, parse_node

COLUMNS = ("head", "layer", "index", "edges", "total", "sum_abs", "share")


def heads(store: StoreReader, prompt: str, top: int) -> Records[HeadLoad]:
    """The `top` heads by absolute weight carried on the prompt's stored edges."""
    check_top(top)
    info = prompt_info(store, prompt)
    rows = store.rows(cypher.PROMPT_HEADS, prompt=info.id)
    if not rows:
        raise QueryError(
            f"prompt {info.key} has no edges split by head (ingested with --heads-per-edge 0)"
        )
    # All head-carried weight: the named heads' absolute weights and the rest's sums.
    carried = math.fsum(r["sumAbs"] for r in rows) + rows[0]["other"]
    tset = store.tset(info.transcoder_set)
    loads = []
    for r in rows[:top]:
        layer, index = tset.head(r["head"])
        share = r["sumAbs"] / carried if carried else 0.0
        name = head_name(layer, index)
        loads.append(HeadLoad(name, layer, index, r["edges"], r["total"], r["sumAbs"], share))
    return Records(loads, COLUMNS)


@dataclass(frozen=True)
class EdgeHead:
    """The head that carries the most of one stored ATTR edge (by |weight|), and the edge's
    positions: the head reads the source's position (its key) from the target's (its query)."""

    layer: int
    head: int
    weight: float  # the head's part of the edge
    query_pos: int
    key_pos: int
    edge_weight: float  # the whole edge's


def edge_head(store: StoreReader, prompt: str, source: str, target: str) -> EdgeHead:
    """The strongest head of the stored edge `source` -> `target` of `prompt` (local ids)."""
    info = prompt_info(store, prompt)
    family = store.tset(info.transcoder_set).family
    ends = {
        n: NodeId.qualified(info.id, in_family(parse_node(n), family)) for n in (source, target)
    }
    rows = store.rows(cypher.EDGE_HEADS, source=ends[source], target=ends[target])
    if not rows:
        raise QueryError(f"prompt {info.key} has no stored edge {source} -> {target}")
    named = [
        (abs(w), w, h, r)
        for r in rows
        for h, w in zip(r["heads"] or [], r["weights"] or [], strict=True)
    ]
    if not named:
        raise QueryError(
            f"edge {source} -> {target} of prompt {info.key} names no head (an edge within one "
            "position, or a store ingested with --heads-per-edge 0)"
        )
    _, weight, number, row = max(named, key=lambda x: (x[0], -x[2]))
    layer, head = store.tset(info.transcoder_set).head(number)
    return EdgeHead(
        layer, head, weight, int(row["target_pos"]), int(row["source_pos"]), row["edge_weight"]
    )
