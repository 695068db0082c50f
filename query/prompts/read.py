"""The prompts question, asked of a store: one prompt (its tokens, or its summary), the stored
prompts listed by key or by a score, and the prompts whose graphs hold given features."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import neo4j

from circuitstore.query.prompts import cypher
from circuitstore.query.prompts.records import PromptInfo, PromptMatch, PromptSummary
from circuitstore.query.reader import StoreReader, check_top, unknown_feature
from circuitstore.query.tables import Records
from circuitstore.schema.errors import NotFoundError, QueryError
from circuitstore.schema.model import PromptScore


def prompt_info(store: StoreReader, key: str) -> PromptInfo:
    """A stored prompt (by key, or by its global id) and its tokens."""
    return PromptInfo.from_row(_prompt_row(store, key))


def prompt_summary(store: StoreReader, key: str) -> PromptSummary:
    """A stored prompt's scores, accounting and corpus fields."""
    return PromptSummary.from_row(_prompt_row(store, key))


def _prompt_row(store: StoreReader, key: str) -> dict[str, Any]:
    rows = store.rows(cypher.PROMPT, key=key, tset=store.transcoder_set)
    if not rows:
        where = f" in transcoder set {store.transcoder_set}" if store.transcoder_set else ""
        raise NotFoundError(f"unknown prompt {key!r}{where}")
    if len(rows) > 1:
        sets = ", ".join(sorted(r["transcoder_set"] for r in rows))
        raise QueryError(
            f"prompt {key!r} is in several transcoder sets ({sets}): "
            "choose one with --transcoder-set"
        )
    return rows[0]


def prompts(
    store: StoreReader,
    limit: int,
    skip: int,
    order: PromptScore | None,
    minimum: float | None,
    maximum: float | None,
    ascending: bool,
) -> Records[PromptSummary]:
    """The stored prompts by key, or by the score `order` (see `CircuitStore.prompts`)."""
    check_top(limit)
    if skip < 0:
        raise QueryError(f"skip {skip}: expected 0 or more")
    if order is None and (minimum is not None or maximum is not None):
        raise QueryError("a score range needs a score to filter by: choose one with order")
    rows = store.rows(
        cypher.PROMPTS,
        tset=store.transcoder_set,
        skip=skip,
        limit=limit,
        order=None if order is None else order.value,
        min=minimum,
        max=maximum,
        ascending=ascending,
    )
    columns = ("prompt", "transcoder_set", "n_tokens", *(s.field for s in PromptScore))
    return Records(map(PromptSummary.from_row, rows), (*columns, "text"))


def prompts_with(store: StoreReader, features: Sequence[str], top: int) -> Records[PromptMatch]:
    """Prompts whose stored graphs hold every one of `features`, best first."""
    if not features:
        raise QueryError("prompts-with: name at least one feature")
    check_top(top)
    resolved = list({k.id: (r, k) for r, k in map(store.resolve, features)}.values())
    tset = resolved[0][1].transcoder_set

    def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
        ids = [k.id for _, k in resolved]
        found = {r["id"]: r.data() for r in tx.run(cypher.FEATURES, ids=ids)}
        for ref, key in resolved:
            if not found[key.id]["found"]:
                raise unknown_feature(ref, key)
        # Rarest first: its prompts bound the ones to look at (a stable sort, ties in order).
        order = sorted(resolved, key=lambda rk: found[rk[1].id]["nPrompts"] or 0)
        maps = [{"layer": r.layer, "index": r.index, "name": r.base_name} for r, _ in order]
        result = tx.run(cypher.PROMPTS_WITH, tset=tset, first=maps[0], rest=maps[1:], top=top)
        return [r.data() for r in result]

    columns = ("prompt", "score", "positions", "text")
    return Records(map(PromptMatch.from_row, store.read(work)), columns)
