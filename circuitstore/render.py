"""Showing answers to people: the feature card as sections of small tables, the examples as
keyword-in-context rows, and rows that put each node's token (and each feature's label) beside
its name. Flat rows for JSON and CSV come from the records themselves."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from circuitstore.clitools import render_table
from circuitstore.query.results import Example, FeatureCard, Link
from circuitstore.query.tables import readable_token

# The examples table: the left context right-aligned against the token, so that the tokens a
# feature fires on stand in one column whatever the context starts with.
EXAMPLE_COLUMNS = ("prompt", "pos", "activation", "left", "token", "right")
EXAMPLE_RIGHT = ("left",)


def example_rows(examples: Sequence[Example]) -> list[dict[str, Any]]:
    return [
        {
            "prompt": e.prompt,
            "pos": e.pos,
            "activation": e.activation,
            "left": "".join(e.left),
            "token": f"[[{e.token}]]",
            "right": "".join(e.right),
        }
        for e in examples
    ]


def with_label_column(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """`columns`, with `label` added when some row has one (a store without labels keeps its
    tables narrow)."""
    cols = tuple(c for c in columns if c != "label")
    return (*cols, "label") if any(r.get("label") for r in rows) else cols


def _link_rows(links: tuple[Link, ...]) -> list[dict[str, Any]]:
    return [
        {"name": x.shown, "n": x.n, "total": x.total, "mean": x.mean, "label": x.label}
        for x in links
    ]


def card_table(card: FeatureCard) -> str:
    parts = [f"{card.name}  ({card.id})"]
    if card.label is not None:
        parts.append(f"label: {card.label.text}")
        if card.label.provenance:
            parts.append(f"       ({card.label.provenance})")
        for other in card.label.others:
            parts.append(f"  also: {other}")
    parts.append("")
    parts.append(
        render_table([{"stat": k, "value": v} for k, v in card.stats.items()], ("stat", "value"))
    )
    for title, tokens in (
        ("de-embedding tokens", card.deembed_tokens),
        ("logit-lens tokens", card.logit_lens_tokens),
    ):
        if tokens is not None:
            parts += ["", f"{title}: " + " | ".join(map(readable_token, tokens))]
    for title, pairs in (
        ("virtual weight in", card.virtual_in),
        ("virtual weight out", card.virtual_out),
    ):
        if pairs:
            rows = [
                {"name": n, "weight": w, "label": card.neighbour_labels.get(n)} for n, w in pairs
            ]
            parts += [
                "",
                f"{title}:",
                render_table(rows, with_label_column(("name", "weight"), rows)),
            ]
    for title, links in (("top drivers", card.drivers), ("top targets", card.targets)):
        parts += ["", f"{title} (corpus-wide, by |total|):"]
        rows = _link_rows(links)
        parts.append(render_table(rows, with_label_column(("name", "n", "total", "mean"), rows)))
    parts += ["", "top examples:"]
    parts.append(
        render_table(
            example_rows(card.examples),
            ("prompt", "activation", "left", "token", "right"),
            EXAMPLE_RIGHT,
        )
    )
    return "\n".join(parts)


def card_rows(card: FeatureCard) -> list[dict[str, Any]]:
    """section, name, value, label: one row per label, statistic, token, neighbour and
    example."""
    return card.rows()
