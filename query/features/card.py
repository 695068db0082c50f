"""A feature's examples and card, asked of a store."""

from __future__ import annotations

from typing import Any

from circuitstore.query.features import cypher
from circuitstore.query.features.links import links
from circuitstore.query.features.records import Example, FeatureCard
from circuitstore.query.labels.records import LabelInfo
from circuitstore.query.reader import StoreReader, check_top, unknown_feature
from circuitstore.query.tables import Records
from circuitstore.schema.names import FeatureFamily

STAT_KEYS = ("nActive", "nPrompts", "sumActivation", "maxActivation", "logFrequency")


def examples(store: StoreReader, feature: str, top: int, window: int) -> Records[Example]:
    """The prompts where `feature` fires most, with the token in context."""
    check_top(top)
    ref, key = store.resolve(feature)
    rows = store.rows(cypher.EXAMPLES, id=key.id, top=top, window=window)
    if not rows:
        raise unknown_feature(ref, key)
    columns = ("prompt", "pos", "activation", "context")
    return Records(map(Example.from_row, rows[0]["rows"]), columns)


def feature_card(store: StoreReader, feature: str, top: int) -> FeatureCard:
    """What `feature` is: statistics, views, neighbours, examples."""
    ref, key = store.resolve(feature)
    rows = store.rows(cypher.FEATURE_CARD, id=key.id, top=top)
    if not rows:
        raise unknown_feature(ref, key)
    props = rows[0]["props"]
    stats = {k: props.get(k) for k in STAT_KEYS}
    if stats["nActive"]:
        stats["meanActivation"] = (props.get("sumActivation") or 0.0) / stats["nActive"]
    virtual_in, virtual_out = rows[0]["virtualIn"], rows[0]["virtualOut"]
    return FeatureCard(
        name=ref.base_name,
        id=key.id,
        stats=stats,
        deembed_tokens=_tokens(props.get("deembedTokens")),
        logit_lens_tokens=_tokens(props.get("logitLensTokens")),
        virtual_in=tuple(_weighted(r, key.family) for r in virtual_in),
        virtual_out=tuple(_weighted(r, key.family) for r in virtual_out),
        drivers=links(store, "drivers", feature, None, top, "total", "abs").links,
        targets=links(store, "targets", feature, None, top, "total", "abs").links,
        examples=examples(store, feature, top, 8),
        label=LabelInfo.from_props(props),
        neighbour_labels={
            key.family.name(r["layer"], r["index"]): r["label"]
            for r in (*virtual_in, *virtual_out)
            if r["label"]
        },
    )


def _weighted(r: dict[str, Any], family: FeatureFamily) -> tuple[str, float]:
    return family.name(r["layer"], r["index"]), r["weight"]


def _tokens(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)
