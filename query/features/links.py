"""Drivers and targets of a feature, asked of a store: corpus-wide over DRIVES, or in one
prompt over its ATTR edges (grouped by the node at the other end, optionally split by head)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal

from circuitstore.query.features import cypher
from circuitstore.query.features.records import Link, Neighbours
from circuitstore.query.heads.records import HeadSplit
from circuitstore.query.paths.read import readable
from circuitstore.query.prompts.read import prompt_info
from circuitstore.query.reader import StoreReader, check_choice, check_top, unknown_feature
from circuitstore.query.subgraph import Edge, Node, Subgraph
from circuitstore.schema.errors import NotFoundError, QueryError
from circuitstore.schema.names import FeatureRef, NodeKind

Order = Literal["total", "mean"]
Sign = Literal["positive", "negative", "abs"]
ORDERS = tuple(cypher.SCORES)
SIGNS = tuple(cypher.SIGN_FILTERS)


def links(
    store: StoreReader,
    direction: str,
    feature: str,
    prompt: str | None,
    top: int,
    order: str,
    sign: str,
    by_head: bool = False,
) -> Neighbours:
    """`feature`'s drivers or targets (`direction`), ranked by `order` and `sign`."""
    check_choice("order", order, ORDERS)
    check_choice("sign", sign, SIGNS)
    check_top(top)
    if prompt is not None:
        return _prompt_links(store, direction, feature, prompt, top, (order, sign), by_head)
    if by_head:
        raise QueryError("by head needs a prompt: heads are stored on one prompt's edges")
    ref, key = store.resolve(feature)
    if ref.pos is not None:
        raise QueryError(f"feature {ref.name}: a position needs --prompt")
    rows = store.rows(cypher.corpus_links(direction, order, sign), id=key.id, top=top)
    if not rows:
        raise unknown_feature(ref, key)
    found = tuple(Link.corpus(r, key.family) for r in rows[0]["rows"])
    return Neighbours(ref.name, direction, None, found)


def _prompt_links(
    store: StoreReader,
    direction: str,
    feature: str,
    prompt: str,
    top: int,
    ranking: tuple[str, str],
    by_head: bool,
) -> Neighbours:
    info = prompt_info(store, prompt)
    ref, _ = store.resolve(feature, info.transcoder_set)
    query = cypher.prompt_links(direction)
    rows = store.rows(query, prompt=info.id, layer=ref.layer, index=ref.index, pos=ref.pos)
    if not rows:
        raise NotFoundError(f"{ref.name} is not in the stored graph of prompt {info.key}")
    name_of = store.tset(info.transcoder_set).head_name
    edges, raw = _prompt_edges(direction, rows, ref, name_of)
    nodes = {n.id: n for n in readable(store, info, raw.values())}
    grouped = _group_links(edges, direction, nodes, by_head)
    ranked = tuple(_rank(grouped, *ranking)[:top])
    keep = {link.name for link in ranked} | {r["id"] for r in rows}
    kept_nodes = tuple(n for n in nodes.values() if n.id in keep)
    kept = tuple(e for e in edges if e.source in keep and e.target in keep)
    return Neighbours(ref.name, direction, info.key, ranked, Subgraph(info.key, kept_nodes, kept))


def _prompt_edges(
    direction: str, rows: list[dict[str, Any]], ref: FeatureRef, name_of: Callable[[int], str]
) -> tuple[list[Edge], dict[str, Node]]:
    """The edges of the feature's occurrences, and the nodes at both ends (not yet readable)."""
    edges: list[Edge] = []
    nodes: dict[str, Node] = {}
    for r in rows:
        nodes[r["id"]] = Node(
            r["id"],
            NodeKind.FEATURE,
            layer=ref.layer,
            pos=r["pos"],
            feature=ref.index,
            activation=r["activation"],
        )
        for x in r["edges"]:
            node = Node(
                x["id"],
                NodeKind(x["kind"]),
                layer=x["layer"],
                pos=x["pos"],
                feature=x["feature"],
                token=x["token"],
                token_id=x["token_id"],
            )
            nodes.setdefault(x["id"], node)
            pair = (x["id"], r["id"]) if direction == "drivers" else (r["id"], x["id"])
            split = HeadSplit.stored(x["weight"], x, name_of)
            edges.append(Edge(*pair, x["weight"], x["edge_kind"], split))
    return edges, nodes


def _group_links(
    edges: list[Edge], direction: str, nodes: dict[str, Node], by_head: bool = False
) -> list[Link]:
    groups: dict[str, list[Edge]] = {}
    for e in edges:
        groups.setdefault(e.source if direction == "drivers" else e.target, []).append(e)
    return [
        _link(name, [e.weight for e in g], nodes[name], _group_split(g) if by_head else None)
        for name, g in groups.items()
    ]


def _group_split(edges: list[Edge]) -> HeadSplit | None:
    """The edges' splits as one, the 3 strongest heads by name; None where one has none."""
    splits = [e.split for e in edges]
    if any(s is None for s in splits):
        return None
    return HeadSplit.of(math.fsum(e.weight for e in edges), splits, 3)  # type: ignore[arg-type]


def _link(name: str, ws: list[float], node: Node, split: HeadSplit | None) -> Link:
    return Link(
        name,
        node.kind,
        node.layer,
        node.pos,
        len(ws),
        math.fsum(ws),
        math.fsum(ws) / len(ws),
        math.fsum(abs(w) for w in ws),
        max(abs(w) for w in ws),
        token=node.token,
        label=node.label,
        split=split,
    )


def _rank(links: list[Link], order: str, sign: str) -> list[Link]:
    def score(link: Link) -> float:
        return link.total if order == "total" else link.mean

    if sign == "positive":
        return sorted((x for x in links if score(x) > 0), key=lambda x: (-score(x), x.name))
    if sign == "negative":
        return sorted((x for x in links if score(x) < 0), key=lambda x: (score(x), x.name))
    return sorted(links, key=lambda x: (-abs(score(x)), x.name))
