"""The interventions question, asked of a store: the interventions `verify` stored, on a feature
and/or of a prompt."""

from __future__ import annotations

from circuitstore.query.interventions import cypher
from circuitstore.query.interventions.records import COLUMNS, InterventionInfo
from circuitstore.query.prompts.read import prompt_info
from circuitstore.query.reader import StoreReader, check_top, unknown_feature
from circuitstore.query.tables import Records


def interventions(
    store: StoreReader, feature: str | None, prompt: str | None, top: int
) -> Records[InterventionInfo]:
    """The stored interventions on `feature` (any of its positions, or the one its name gives)
    and/or of `prompt` (key or id), at most `top` (see `CircuitStore.interventions`)."""
    check_top(top)
    info = None if prompt is None else prompt_info(store, prompt)
    pid = None if info is None else info.id
    if feature is None:
        rows = store.rows(cypher.INTERVENTIONS, prompt=pid, tset=store.transcoder_set, top=top)
        found = [r["row"] for r in rows]
    else:
        ref, key = store.resolve(feature, None if info is None else info.transcoder_set)
        node = None if ref.pos is None else ref.name
        rows = store.rows(
            cypher.FEATURE_INTERVENTIONS, feature=key.id, prompt=pid, node=node, top=top
        )
        if not rows:
            raise unknown_feature(ref, key)
        found = rows[0]["rows"]
    return Records(map(InterventionInfo.from_row, found), COLUMNS)
