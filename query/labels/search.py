"""The labels question, asked of a store: features by the words of their labels, and the
labels of given features."""

from __future__ import annotations

import re
from collections.abc import Iterable

from circuitstore.query.labels import cypher
from circuitstore.query.labels.records import LabelMatch
from circuitstore.query.reader import StoreReader, check_top
from circuitstore.query.tables import Records
from circuitstore.schema.ddl import FEATURE_LABEL_INDEX
from circuitstore.schema.errors import QueryError, SchemaError
from circuitstore.schema.names import FeatureKey, shown

# Characters Lucene's query syntax gives a meaning to.
_LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/]|&&|\|\|)')


def search(store: StoreReader, text: str, top: int, lucene: bool) -> Records[LabelMatch]:
    """Features whose label matches `text`, best first (see `CircuitStore.search`)."""
    check_top(top)
    query = text.strip()
    if not query:
        raise QueryError("search: give some words to look for")
    info = store.tset()
    try:
        rows = store.rows(
            cypher.SEARCH_LABELS,
            index=FEATURE_LABEL_INDEX,
            text=query if lucene else lucene_words(query),
            tset=info.id,
            top=top,
        )
    except SchemaError as exc:
        if "no such fulltext" in str(exc).lower():
            raise QueryError(
                "the store has no label index: run `circuitstore schema apply`"
            ) from None
        if lucene:
            raise QueryError(f"search {shown(query)}: not a Lucene query ({exc})") from None
        raise
    matches = (LabelMatch.from_row(r, info.family) for r in rows)
    return Records(matches, ("name", "layer", "index", "score", "label"))


def lucene_words(text: str) -> str:
    """`text` as plain words for the full-text index: every special character escaped, the
    words' operators (AND, OR, NOT) written in lower case so that they are words too."""
    escaped = _LUCENE_SPECIAL.sub(r"\\\1", text)
    return " ".join(w.lower() if w in ("AND", "OR", "NOT") else w for w in escaped.split())


def feature_labels(
    store: StoreReader, tset: str, features: Iterable[tuple[int, int]]
) -> dict[str, str]:
    """The labels of the labelled ones among `features` ((layer, index) pairs), by name (in
    the set's family)."""
    family = store.tset(tset).family
    keys = {FeatureKey(tset, layer, index, family) for layer, index in features}
    if not keys:
        return {}
    by_id = {k.id: k.name for k in keys}
    rows = store.rows(cypher.FEATURE_LABELS, ids=sorted(by_id))
    return {by_id[r["id"]]: r["label"] for r in rows}
