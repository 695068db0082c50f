"""Showing a feature card: sections of small tables for people, flat rows for CSV."""

from __future__ import annotations

from typing import Any

from circuitstore.clitools import render_table
from circuitstore.query.results import FeatureCard, Link


def _link_rows(links: tuple[Link, ...]) -> list[dict[str, Any]]:
    return [{"name": x.name, "n": x.n, "total": x.total, "mean": x.mean} for x in links]


def card_table(card: FeatureCard) -> str:
    parts = [f"{card.name}  ({card.id})", ""]
    parts.append(
        render_table([{"stat": k, "value": v} for k, v in card.stats.items()], ("stat", "value"))
    )
    for title, tokens in (
        ("de-embedding tokens", card.deembed_tokens),
        ("logit-lens tokens", card.logit_lens_tokens),
    ):
        if tokens is not None:
            parts += ["", f"{title}: " + " | ".join(repr(t) for t in tokens)]
    for title, pairs in (
        ("virtual weight in", card.virtual_in),
        ("virtual weight out", card.virtual_out),
    ):
        if pairs:
            rows = [{"name": n, "weight": w} for n, w in pairs]
            parts += ["", f"{title}:", render_table(rows, ("name", "weight"))]
    for title, links in (("top drivers", card.drivers), ("top targets", card.targets)):
        parts += ["", f"{title} (corpus-wide, by |total|):"]
        parts.append(render_table(_link_rows(links), ("name", "n", "total", "mean")))
    parts += ["", "top examples:"]
    rows = [e.as_row() for e in card.examples]
    parts.append(render_table(rows, ("prompt", "activation", "context")))
    return "\n".join(parts)


def card_rows(card: FeatureCard) -> list[dict[str, Any]]:
    """section, name, value: one row per statistic, token, neighbour and example."""
    rows: list[dict[str, Any]] = [
        {"section": "stat", "name": k, "value": v} for k, v in card.stats.items()
    ]
    for section, tokens in (
        ("deembed", card.deembed_tokens),
        ("logitlens", card.logit_lens_tokens),
    ):
        rows += [
            {"section": section, "name": i + 1, "value": t} for i, t in enumerate(tokens or ())
        ]
    for section, pairs in (("virtual_in", card.virtual_in), ("virtual_out", card.virtual_out)):
        rows += [{"section": section, "name": n, "value": w} for n, w in pairs]
    for section, links in (("driver", card.drivers), ("target", card.targets)):
        rows += [{"section": section, "name": x.name, "value": x.total} for x in links]
    rows += [
        {"section": "example", "name": e.context, "value": e.activation} for e in card.examples
    ]
    return rows
