"""The heads question, asked of a store: the heads that carry a prompt's stored weight."""

from __future__ import annotations

import math

from circuitstore.query.heads import cypher
from circuitstore.query.heads.records import HeadLoad
from circuitstore.query.prompts.read import prompt_info
from circuitstore.query.reader import StoreReader, check_top
from circuitstore.query.tables import Records
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import head_name

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
