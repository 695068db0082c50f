"""`CircuitStore`: the questions the store answers, as Python calls returning frozen records.

Every read runs in a managed read transaction. Names are parsed before anything runs; the
transcoder set is inferred when the store holds one (or from the prompt), and must be named when
the store holds several.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, Literal, TypeVar

import neo4j

from circuitstore.query import cypher as cq
from circuitstore.query import graphs
from circuitstore.query.readonly import run_read
from circuitstore.query.results import (
    CircuitResult,
    Edge,
    Example,
    FeatureCard,
    Link,
    Neighbours,
    Node,
    PathsResult,
    PromptInfo,
    PromptMatch,
    Subgraph,
    TranscoderSetInfo,
)
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import (
    FeatureKey,
    FeatureRef,
    LocalRef,
    LogitRef,
    NodeKind,
    NodeRef,
    check_range,
    feature_name,
    parse_feature,
    parse_node,
)

T = TypeVar("T")
Order = Literal["total", "mean"]
Sign = Literal["positive", "negative", "abs"]
ORDERS = tuple(cq.SCORES)
SIGNS = tuple(cq.SIGN_FILTERS)


class CircuitStore:
    """The store's questions as Python calls. Every method raises only the project's errors:
    :class:`QueryError` for a question that cannot be answered as asked (an unknown or malformed
    name, a prompt not in the store), :class:`StoreUnavailableError` when Neo4j cannot be
    reached or refuses the credentials, :class:`SchemaError` for anything else the server
    refuses. `where` names the store in messages (its URI)."""

    def __init__(
        self,
        driver: neo4j.Driver,
        database: str = "neo4j",
        transcoder_set: str | None = None,
        where: str | None = None,
    ) -> None:
        self.driver = driver
        self.database = database
        self.transcoder_set = transcoder_set
        self.where = where
        self._sets: dict[str, TranscoderSetInfo] | None = None

    # -- plumbing ---------------------------------------------------------------------------

    def _read(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        with (
            translate_errors(where=self.where),
            self.driver.session(
                database=self.database, notifications_min_severity="OFF"
            ) as session,
        ):
            return session.execute_read(work)

    def _rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        return self._read(lambda tx: [r.data() for r in tx.run(query, params)])

    def transcoder_sets(self) -> dict[str, TranscoderSetInfo]:
        if self._sets is None:
            self._sets = {
                r["id"]: TranscoderSetInfo(r["id"], r["nLayers"], r["dTranscoder"], r["model"])
                for r in self._rows(cq.TRANSCODER_SETS)
            }
        return self._sets

    def tset(self, name: str | None = None) -> TranscoderSetInfo:
        """The named set, or the only one in the store."""
        sets, wanted = self.transcoder_sets(), name or self.transcoder_set
        if wanted is not None:
            if wanted not in sets:
                known = ", ".join(sets) or "none"
                raise QueryError(f"unknown transcoder set {wanted!r} (the store holds: {known})")
            return sets[wanted]
        if not sets:
            raise QueryError("the store holds no transcoder set: ingest a corpus first")
        if len(sets) > 1:
            raise QueryError(
                f"the store holds several transcoder sets ({', '.join(sets)}): "
                "choose one with --transcoder-set"
            )
        return next(iter(sets.values()))

    def resolve(self, name: str, tset: str | None = None) -> tuple[FeatureRef, FeatureKey]:
        ref = parse_feature(name)
        info = self.tset(tset)
        check_range(ref, info.n_layers, info.d_transcoder, info.id)
        return ref, FeatureKey(info.id, ref.layer, ref.index)

    def prompt(self, key: str) -> PromptInfo:
        rows = self._rows(cq.PROMPT, key=key, tset=self.transcoder_set)
        if not rows:
            where = f" in transcoder set {self.transcoder_set}" if self.transcoder_set else ""
            raise QueryError(f"unknown prompt {key!r}{where}")
        if len(rows) > 1:
            sets = ", ".join(sorted(r["transcoderSet"] for r in rows))
            raise QueryError(
                f"prompt {key!r} is in several transcoder sets ({sets}): "
                "choose one with --transcoder-set"
            )
        r = rows[0]
        return PromptInfo(r["id"], r["key"], r["transcoderSet"], r["text"], tuple(r["tokens"]))

    # -- one hop -----------------------------------------------------------------------------

    def drivers(
        self,
        feature: str,
        prompt: str | None = None,
        top: int = 10,
        order: Order = "total",
        sign: Sign = "positive",
    ) -> Neighbours:
        """Which features drive `feature`: corpus-wide over DRIVES, or in one prompt over ATTR."""
        return self._links("drivers", feature, prompt, top, order, sign)

    def targets(
        self,
        feature: str,
        prompt: str | None = None,
        top: int = 10,
        order: Order = "total",
        sign: Sign = "positive",
    ) -> Neighbours:
        """What `feature` drives: corpus-wide over DRIVES, or in one prompt over ATTR."""
        return self._links("targets", feature, prompt, top, order, sign)

    def _links(
        self, direction: str, feature: str, prompt: str | None, top: int, order: str, sign: str
    ) -> Neighbours:
        _check_choice("order", order, ORDERS)
        _check_choice("sign", sign, SIGNS)
        _check_top(top)
        if prompt is not None:
            return self._prompt_links(direction, feature, prompt, top, order, sign)
        ref, key = self.resolve(feature)
        if ref.pos is not None:
            raise QueryError(f"feature {ref.name}: a position needs --prompt")
        rows = self._rows(cq.corpus_links(direction, order, sign), id=key.id, top=top)
        if not rows:
            raise QueryError(f"unknown feature {ref.name} in transcoder set {key.transcoder_set}")
        links = tuple(_corpus_link(r) for r in rows[0]["rows"])
        return Neighbours(ref.name, direction, None, links)

    def _prompt_links(
        self, direction: str, feature: str, prompt: str, top: int, order: str, sign: str
    ) -> Neighbours:
        info = self.prompt(prompt)
        ref, _ = self.resolve(feature, info.transcoder_set)
        query = cq.prompt_links(direction)
        rows = self._rows(query, prompt=info.id, layer=ref.layer, index=ref.index, pos=ref.pos)
        if not rows:
            raise QueryError(f"{ref.name} is not in the stored graph of prompt {info.key}")
        edges, nodes = _prompt_edges(direction, rows)
        links = tuple(_rank(_group_links(edges, direction, nodes), order, sign)[:top])
        keep = {link.name for link in links} | {r["id"] for r in rows}
        sub = Subgraph(info.key, tuple(n for n in nodes.values() if n.id in keep), ())
        kept = tuple(e for e in edges if e.source in keep and e.target in keep)
        return Neighbours(
            ref.name, direction, info.key, links, Subgraph(sub.prompt, sub.nodes, kept)
        )

    # -- features ----------------------------------------------------------------------------

    def examples(self, feature: str, top: int = 10, window: int = 8) -> tuple[Example, ...]:
        """The prompts where `feature` fires most, with the token in context."""
        _check_top(top)
        ref, key = self.resolve(feature)
        rows = self._rows(cq.EXAMPLES, id=key.id, top=top, window=window)
        if not rows:
            raise QueryError(f"unknown feature {ref.name} in transcoder set {key.transcoder_set}")
        return tuple(_example(r) for r in rows[0]["rows"])

    def feature(self, feature: str, top: int = 5) -> FeatureCard:
        """What `feature` is: statistics, views, neighbours, examples."""
        ref, key = self.resolve(feature)
        rows = self._rows(cq.FEATURE_CARD, id=key.id, top=top)
        if not rows:
            raise QueryError(f"unknown feature {ref.name} in transcoder set {key.transcoder_set}")
        props = rows[0]["props"]
        stats = {k: props.get(k) for k in STAT_KEYS}
        if stats["nActive"]:
            stats["meanActivation"] = (props.get("sumActivation") or 0.0) / stats["nActive"]
        return FeatureCard(
            name=ref.base_name,
            id=key.id,
            stats=stats,
            deembed_tokens=_tokens(props.get("deembedTokens")),
            logit_lens_tokens=_tokens(props.get("logitLensTokens")),
            virtual_in=tuple((feature_name(r[0], r[1]), r[2]) for r in rows[0]["virtualIn"]),
            virtual_out=tuple((feature_name(r[0], r[1]), r[2]) for r in rows[0]["virtualOut"]),
            drivers=self.drivers(feature, top=top, sign="abs").links,
            targets=self.targets(feature, top=top, sign="abs").links,
            examples=self.examples(feature, top=top),
        )

    def prompts_with(self, features: Sequence[str], top: int = 20) -> tuple[PromptMatch, ...]:
        """Prompts whose stored graphs hold every one of `features`."""
        if not features:
            raise QueryError("prompts-with: name at least one feature")
        _check_top(top)
        resolved = list({k.id: (r, k) for r, k in map(self.resolve, features)}.values())
        tset = resolved[0][1].transcoder_set

        def work(tx: neo4j.ManagedTransaction) -> list[dict[str, Any]]:
            ids = [k.id for _, k in resolved]
            found = {r["id"]: r.data() for r in tx.run(cq.FEATURES, ids=ids)}
            for ref, key in resolved:
                if not found[key.id]["found"]:
                    raise QueryError(
                        f"unknown feature {ref.name} in transcoder set {key.transcoder_set}"
                    )
            # Rarest first: its prompts bound the ones to look at (a stable sort, ties in order).
            order = sorted(resolved, key=lambda rk: found[rk[1].id]["nPrompts"] or 0)
            maps = [{"layer": r.layer, "index": r.index, "name": r.base_name} for r, _ in order]
            result = tx.run(cq.PROMPTS_WITH, tset=tset, first=maps[0], rest=maps[1:], top=top)
            return [r.data() for r in result]

        return tuple(
            PromptMatch(
                r["key"], r["text"], r["score"], {n: tuple(sorted(p)) for n, p in r["positions"]}
            )
            for r in self._read(work)
        )

    # -- one prompt's graph ------------------------------------------------------------------

    def prompt_graph(self, prompt: str) -> tuple[PromptInfo, Subgraph]:
        """One prompt's whole stored graph (nodes by local id)."""
        info = self.prompt(prompt)
        rows = self._rows(cq.PROMPT_GRAPH, prompt=info.id)
        nodes = tuple(_node(r) for r in rows)
        edges = tuple(Edge(s, r["id"], w, k) for r in rows for s, w, k in r["inputs"])
        return info, Subgraph(info.key, nodes, edges)

    def paths(
        self, prompt: str, to: str = "logit", source: str | None = None, top: int = 10
    ) -> PathsResult:
        """The `top` strongest paths (|product of edge weights|) into a logit or feature."""
        _check_top(top)
        info, graph = self.prompt_graph(prompt)
        target = self._one_node(graph, parse_node(to), info, "target")
        sources = None if source is None else self._nodes(graph, parse_node(source), info)
        found = graphs.strongest_paths(graph, target, top, sources)
        sub = graphs.induced(graph, {n for p in found for n in p.nodes})
        on_paths = {(a, b) for p in found for a, b in zip(p.nodes, p.nodes[1:], strict=False)}
        edges = tuple(e for e in sub.edges if (e.source, e.target) in on_paths)
        return PathsResult(info.key, target, found, Subgraph(sub.prompt, sub.nodes, edges))

    def circuit(self, prompt: str, threshold: float = 0.8, to: str = "logit") -> CircuitResult:
        """The nodes carrying `threshold` of the influence on the target (default: top logit)."""
        info, graph = self.prompt_graph(prompt)
        target = self._one_node(graph, parse_node(to), info, "target")
        sub, total = graphs.circuit(graph, {target: 1.0}, threshold)
        return CircuitResult(info.key, (target,), threshold, sub, total)

    def _one_node(self, graph: Subgraph, ref: NodeRef, info: PromptInfo, role: str) -> str:
        ids = self._nodes(graph, ref, info)
        if len(ids) > 1:
            raise QueryError(
                f"{role} {ref.name} occurs at several positions in prompt {info.key} "
                f"({', '.join(ids)}): add @<pos>"
            )
        return ids[0]

    def _nodes(self, graph: Subgraph, ref: NodeRef, info: PromptInfo) -> list[str]:
        if isinstance(ref, FeatureRef):
            self.resolve(ref.name, info.transcoder_set)
        ids = [n.id for n in graph.nodes if _matches(n, ref)]
        if isinstance(ref, LogitRef) and ref.token_id is None:
            logits = [n for n in graph.nodes if n.kind == NodeKind.LOGIT]
            ids = [max(logits, key=lambda n: n.value or -math.inf).id] if logits else []
        if not ids:
            raise QueryError(f"{ref.name} is not in the stored graph of prompt {info.key}")
        return sorted(ids)

    def cypher(
        self, statement: str, params: dict[str, Any] | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Any read-only statement (see `readonly.run_read`: it must plan as a read)."""
        with translate_errors(where=self.where):
            return run_read(self.driver, self.database, statement, params or {}, limit)


STAT_KEYS = ("nActive", "nPrompts", "sumActivation", "maxActivation", "logFrequency")


def _check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    if value not in allowed:
        raise QueryError(f"{what} {value!r}: expected one of {', '.join(allowed)}")


def _check_top(top: int) -> None:
    if top < 1:
        raise QueryError(f"top {top}: expected a positive number")


def _tokens(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _corpus_link(r: list[Any]) -> Link:
    layer, index, n, total, sum_abs, max_abs = r
    name = feature_name(layer, index)
    return Link(name, NodeKind.FEATURE, layer, None, n, total, total / n, sum_abs, max_abs)


def _matches(node: Node, ref: NodeRef) -> bool:
    if isinstance(ref, FeatureRef):
        same = node.kind == NodeKind.FEATURE and (node.layer, node.feature) == (
            ref.layer,
            ref.index,
        )
        return same and (ref.pos is None or node.pos == ref.pos)
    if isinstance(ref, LogitRef):
        return node.kind == NodeKind.LOGIT and (node.token_id, node.pos) == (ref.token_id, ref.pos)
    return isinstance(ref, LocalRef) and node.id == ref.local_id


def _node(r: dict[str, Any]) -> Node:
    return Node(
        id=r["id"],
        kind=NodeKind(r["kind"]),
        layer=r["layer"],
        pos=r["pos"],
        feature=r["feature"],
        activation=r["activation"],
        token=r["token"],
        token_id=r["tokenId"],
        value=r["value"],
    )


def _prompt_edges(direction: str, rows: list[dict[str, Any]]) -> tuple[list[Edge], dict[str, Node]]:
    edges: list[Edge] = []
    nodes: dict[str, Node] = {}
    for r in rows:
        nodes[r["id"]] = Node(r["id"], NodeKind.FEATURE, pos=r["pos"], activation=r["activation"])
        for other, kind, layer, pos, weight, ekind, feature in r["edges"]:
            node = Node(other, NodeKind(kind), layer=layer, pos=pos, feature=feature)
            nodes.setdefault(other, node)
            pair = (other, r["id"]) if direction == "drivers" else (r["id"], other)
            edges.append(Edge(*pair, weight, ekind))
    return edges, nodes


def _group_links(edges: list[Edge], direction: str, nodes: dict[str, Node]) -> list[Link]:
    groups: dict[str, list[float]] = {}
    for e in edges:
        groups.setdefault(e.source if direction == "drivers" else e.target, []).append(e.weight)
    return [
        Link(
            name,
            nodes[name].kind,
            nodes[name].layer,
            nodes[name].pos,
            len(ws),
            math.fsum(ws),
            math.fsum(ws) / len(ws),
            math.fsum(abs(w) for w in ws),
            max(abs(w) for w in ws),
        )
        for name, ws in groups.items()
    ]


def _rank(links: list[Link], order: str, sign: str) -> list[Link]:
    def score(link: Link) -> float:
        return link.total if order == "total" else link.mean

    if sign == "positive":
        return sorted((x for x in links if score(x) > 0), key=lambda x: (-score(x), x.name))
    if sign == "negative":
        return sorted((x for x in links if score(x) < 0), key=lambda x: (score(x), x.name))
    return sorted(links, key=lambda x: (-abs(score(x)), x.name))


def _example(r: list[Any]) -> Example:
    key, pos, activation, start, window = r
    at = pos - start
    token = window[at] if 0 <= at < len(window) else ""
    return Example(key, pos, token, activation, tuple(window[:at]), tuple(window[at + 1 :]))
