"""`CircuitStore`: the questions the store answers, as Python calls returning frozen records.

Every read runs in a managed read transaction. Names are parsed before anything runs; the
transcoder set is inferred when the store holds one (or from the prompt), and must be named when
the store holds several.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

import neo4j

from circuitstore.query import cypher as cq
from circuitstore.query import graphs
from circuitstore.query.export import neuronpedia_graph
from circuitstore.query.readonly import run_read
from circuitstore.query.results import (
    CircuitResult,
    Edge,
    Example,
    FeatureCard,
    HeadLoad,
    HeadSplit,
    LabelInfo,
    LabelMatch,
    Link,
    Neighbours,
    Node,
    PathsResult,
    PromptInfo,
    PromptMatch,
    PromptSummary,
    Records,
    Subgraph,
    TranscoderSetInfo,
)
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.ddl import FEATURE_LABEL_INDEX
from circuitstore.schema.errors import QueryError, SchemaError
from circuitstore.schema.model import PROMPT_OWN, PromptScore, snake_case
from circuitstore.schema.names import (
    FeatureKey,
    FeatureRef,
    LocalRef,
    LogitRef,
    NodeKind,
    NodeRef,
    check_range,
    feature_name,
    head_name,
    parse_feature,
    parse_node,
    shown,
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
        self._owns_driver = False

    @classmethod
    def connect(
        cls,
        env_file: Path | None = None,
        transcoder_set: str | None = None,
        **settings: Any,
    ) -> CircuitStore:
        """A store on its own driver, from the NEO4J_* environment (or `env_file`) with
        `settings` (uri, username, database) on top; close it with `close()` or a `with` block.
        The password comes only from the environment or the file."""
        loaded = Neo4jSettings.load(env_file=env_file, **settings)
        store = cls(open_driver(loaded), loaded.database, transcoder_set, loaded.uri)
        store._owns_driver = True
        return store

    def close(self) -> None:
        """Close the driver if `connect` opened it."""
        if self._owns_driver:
            self.driver.close()

    def __enter__(self) -> CircuitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

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
                r["id"]: TranscoderSetInfo(
                    r["id"],
                    r["nLayers"],
                    r["dTranscoder"],
                    r["model"],
                    r["transcoders"],
                    r["modelHash"],
                    r["hash"],
                    r["nHeads"],
                )
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
        """A stored prompt (by key, or by its global id) and its tokens."""
        r = self._prompt_row(key)
        return PromptInfo(
            r["id"],
            r["key"],
            r["transcoderSet"],
            r["text"],
            tuple(r["tokens"]),
            tuple(r["tokenIds"] or ()),
        )

    def prompt_summary(self, key: str) -> PromptSummary:
        """A stored prompt's scores, accounting and corpus fields (`query prompt KEY`)."""
        return _summary(self._prompt_row(key))

    def _prompt_row(self, key: str) -> dict[str, Any]:
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
        return rows[0]

    def prompts(
        self,
        limit: int = 100,
        skip: int = 0,
        order: PromptScore | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        ascending: bool = False,
    ) -> Records[PromptSummary]:
        """The stored prompts (of the chosen transcoder set, else all) with their scores and the
        corpus's own fields (a demo prompt's `task` and `answer`): by key, or by the score
        `order` (best first unless `ascending`), keeping those whose score lies in
        [`minimum`, `maximum`]."""
        _check_top(limit)
        if skip < 0:
            raise QueryError(f"skip {skip}: expected 0 or more")
        if order is None and (minimum is not None or maximum is not None):
            raise QueryError("a score range needs a score to filter by: choose one with order")
        rows = self._rows(
            cq.PROMPTS,
            tset=self.transcoder_set,
            skip=skip,
            limit=limit,
            order=None if order is None else order.value,
            min=minimum,
            max=maximum,
            ascending=ascending,
        )
        columns = ("prompt", "transcoder_set", "n_tokens", *(s.field for s in PromptScore))
        return Records(map(_summary, rows), (*columns, "text"))

    def feature_labels(self, tset: str, features: Iterable[tuple[int, int]]) -> dict[str, str]:
        """The labels of the labelled ones among `features` ((layer, index) pairs), by name."""
        keys = {FeatureKey(tset, layer, index) for layer, index in features}
        if not keys:
            return {}
        by_id = {k.id: k.name for k in keys}
        rows = self._rows(cq.FEATURE_LABELS, ids=sorted(by_id))
        return {by_id[r["id"]]: r["label"] for r in rows}

    def search(self, text: str, top: int = 20, lucene: bool = False) -> Records[LabelMatch]:
        """Features whose label matches `text`, best first (the full-text index over the
        labels `circuitstore labels import` wrote). The words are matched as words; `lucene`
        passes `text` as a Lucene query instead (`name*`, `"exact phrase"`, `a AND b`)."""
        _check_top(top)
        query = text.strip()
        if not query:
            raise QueryError("search: give some words to look for")
        info = self.tset()
        try:
            rows = self._rows(
                cq.SEARCH_LABELS,
                index=FEATURE_LABEL_INDEX,
                text=query if lucene else _lucene_words(query),
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
        return Records(
            (
                LabelMatch(
                    feature_name(r["layer"], r["index"]),
                    r["layer"],
                    r["index"],
                    r["score"],
                    r["label"],
                    r["source"],
                    r["explainer"],
                )
                for r in rows
            ),
            ("name", "layer", "index", "score", "label"),
        )

    # -- one hop -----------------------------------------------------------------------------

    def drivers(
        self,
        feature: str,
        prompt: str | None = None,
        top: int = 10,
        order: Order = "total",
        sign: Sign = "positive",
        by_head: bool = False,
    ) -> Neighbours:
        """Which features drive `feature`: corpus-wide over DRIVES, or in one prompt over ATTR;
        `by_head` splits each link by attention head (`Link.split`), in one prompt only."""
        return self._links("drivers", feature, prompt, top, order, sign, by_head)

    def targets(
        self,
        feature: str,
        prompt: str | None = None,
        top: int = 10,
        order: Order = "total",
        sign: Sign = "positive",
        by_head: bool = False,
    ) -> Neighbours:
        """What `feature` drives: corpus-wide over DRIVES, or in one prompt over ATTR;
        `by_head` splits each link by attention head (`Link.split`), in one prompt only."""
        return self._links("targets", feature, prompt, top, order, sign, by_head)

    def _links(
        self,
        direction: str,
        feature: str,
        prompt: str | None,
        top: int,
        order: str,
        sign: str,
        by_head: bool = False,
    ) -> Neighbours:
        _check_choice("order", order, ORDERS)
        _check_choice("sign", sign, SIGNS)
        _check_top(top)
        if prompt is not None:
            return self._prompt_links(direction, feature, prompt, top, (order, sign), by_head)
        if by_head:
            raise QueryError("by head needs a prompt: heads are stored on one prompt's edges")
        ref, key = self.resolve(feature)
        if ref.pos is not None:
            raise QueryError(f"feature {ref.name}: a position needs --prompt")
        rows = self._rows(cq.corpus_links(direction, order, sign), id=key.id, top=top)
        if not rows:
            raise QueryError(f"unknown feature {ref.name} in transcoder set {key.transcoder_set}")
        links = tuple(_corpus_link(r) for r in rows[0]["rows"])
        return Neighbours(ref.name, direction, None, links)

    def _prompt_links(
        self,
        direction: str,
        feature: str,
        prompt: str,
        top: int,
        ranking: tuple[str, str],
        by_head: bool,
    ) -> Neighbours:
        info = self.prompt(prompt)
        ref, _ = self.resolve(feature, info.transcoder_set)
        query = cq.prompt_links(direction)
        rows = self._rows(query, prompt=info.id, layer=ref.layer, index=ref.index, pos=ref.pos)
        if not rows:
            raise QueryError(f"{ref.name} is not in the stored graph of prompt {info.key}")
        edges, raw = _prompt_edges(direction, rows, ref, self.tset(info.transcoder_set).head_name)
        nodes = {n.id: n for n in self._readable(info, raw.values())}
        grouped = _group_links(edges, direction, nodes, by_head)
        links = tuple(_rank(grouped, *ranking)[:top])
        keep = {link.name for link in links} | {r["id"] for r in rows}
        sub = Subgraph(info.key, tuple(n for n in nodes.values() if n.id in keep), ())
        kept = tuple(e for e in edges if e.source in keep and e.target in keep)
        return Neighbours(
            ref.name, direction, info.key, links, Subgraph(sub.prompt, sub.nodes, kept)
        )

    def heads(self, prompt: str, top: int = 10) -> Records[HeadLoad]:
        """The attention heads that carry the most stored weight in one prompt's graph: each
        ATTR edge names its strongest heads (`ingest --heads-per-edge`)."""
        _check_top(top)
        info = self.prompt(prompt)
        rows = self._rows(cq.PROMPT_HEADS, prompt=info.id)
        if not rows:
            raise QueryError(
                f"prompt {info.key} has no edges split by head (ingested with --heads-per-edge 0)"
            )
        # All head-carried weight: the named heads' absolute weights and the rest's sums.
        carried = math.fsum(r["sumAbs"] for r in rows) + rows[0]["other"]
        tset = self.tset(info.transcoder_set)
        loads = []
        for r in rows[:top]:
            layer, index = tset.head(r["head"])
            share = r["sumAbs"] / carried if carried else 0.0
            name = head_name(layer, index)
            loads.append(HeadLoad(name, layer, index, r["edges"], r["total"], r["sumAbs"], share))
        return Records(loads, ("head", "layer", "index", "edges", "total", "sum_abs", "share"))

    # -- features ----------------------------------------------------------------------------

    def examples(self, feature: str, top: int = 10, window: int = 8) -> Records[Example]:
        """The prompts where `feature` fires most, with the token in context."""
        _check_top(top)
        ref, key = self.resolve(feature)
        rows = self._rows(cq.EXAMPLES, id=key.id, top=top, window=window)
        if not rows:
            raise QueryError(f"unknown feature {ref.name} in transcoder set {key.transcoder_set}")
        return Records(
            (_example(r) for r in rows[0]["rows"]), ("prompt", "pos", "activation", "context")
        )

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
        virtual = [*rows[0]["virtualIn"], *rows[0]["virtualOut"]]
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
            label=LabelInfo.from_props(props),
            neighbour_labels={feature_name(r[0], r[1]): r[3] for r in virtual if r[3]},
        )

    def prompts_with(self, features: Sequence[str], top: int = 20) -> Records[PromptMatch]:
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

        return Records(
            (
                PromptMatch(
                    r["key"],
                    r["text"],
                    r["score"],
                    {n: tuple(sorted(p)) for n, p in r["positions"]},
                )
                for r in self._read(work)
            ),
            ("prompt", "score", "positions", "text"),
        )

    # -- one prompt's graph ------------------------------------------------------------------

    def prompt_graph(self, prompt: str) -> tuple[PromptInfo, Subgraph]:
        """One prompt's whole stored graph (nodes by local id, each with the token a person
        reads it by and its feature's label)."""
        info = self.prompt(prompt)
        rows = self._rows(cq.PROMPT_GRAPH, prompt=info.id)
        nodes = self._readable(info, (_node(r) for r in rows))
        edges = tuple(Edge(s, r["id"], w, k) for r in rows for s, w, k in r["inputs"])
        return info, Subgraph(info.key, nodes, edges)

    def _readable(self, info: PromptInfo, nodes: Iterable[Node]) -> tuple[Node, ...]:
        """`nodes` with their tokens (a logit's own token, else the prompt's token at the
        node's position) and their features' labels."""
        nodes = tuple(nodes)
        features = [
            (n.layer, n.feature)
            for n in nodes
            if n.kind == NodeKind.FEATURE and n.layer is not None and n.feature is not None
        ]
        labels = self.feature_labels(info.transcoder_set, features)
        out = []
        for n in nodes:
            if n.kind == NodeKind.LOGIT:
                token = n.token if n.token is not None else info.text_of(n.token_id)
            else:
                token = n.token if n.token is not None else info.token_at(n.pos)
            label = None
            if n.kind == NodeKind.FEATURE and n.layer is not None and n.feature is not None:
                label = labels.get(feature_name(n.layer, n.feature))
            out.append(replace(n, token=token, label=label))
        return tuple(out)

    def paths(
        self,
        prompt: str,
        to: str = "logit",
        source: str | None = None,
        top: int = 10,
        method: Literal["exact", "beam"] = "exact",
        beam_width: int = 5,
        depth: int = 3,
    ) -> PathsResult:
        """The `top` strongest paths into a logit or feature: exactly, by |product of edge
        weights| (`exact`), or by the original transcoder work's greedy beam search (`beam`,
        `graphs.beam_paths`: `beam_width` paths kept per step, `depth` steps)."""
        _check_top(top)
        _check_choice("method", method, ("exact", "beam"))
        for what, value in (("beam width", beam_width), ("depth", depth)):
            if not 1 <= value <= MAX_BEAM:
                raise QueryError(f"{what} {value}: expected 1..{MAX_BEAM}")
        info, graph = self.prompt_graph(prompt)
        target = self._one_node(graph, parse_node(to), info, "target")
        sources = None if source is None else self.find_nodes(graph, parse_node(source), info)
        if method == "exact":
            found = graphs.strongest_paths(graph, target, top, sources)
        else:
            beam = graphs.beam_paths(graph, target, beam_width, depth)
            found = tuple(p for p in beam if sources is None or p.nodes[0] in sources)[:top]
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

    def export_graph(
        self,
        prompt: str,
        scan: str | None = None,
        source_set: str | None = None,
        node_threshold: float = 0.8,
        slug: str | None = None,
    ) -> dict[str, Any]:
        """One prompt's stored graph as the attribution-graph JSON that Neuronpedia and
        circuit-tracer's viewer load (see `export.neuronpedia_graph`); write it with
        `export.write_json` or, into a viewer folder, `export.write_viewer_graph`."""
        info, graph = self.prompt_graph(prompt)
        return neuronpedia_graph(
            info,
            graph,
            self.tset(info.transcoder_set),
            node_threshold=node_threshold,
            scan=scan,
            source_set=source_set,
            slug=slug,
        )

    def _one_node(self, graph: Subgraph, ref: NodeRef, info: PromptInfo, role: str) -> str:
        ids = self.find_nodes(graph, ref, info)
        if len(ids) > 1:
            raise QueryError(
                f"{role} {ref.name} occurs at several positions in prompt {info.key} "
                f"({', '.join(ids)}): add @<pos>"
            )
        return ids[0]

    def find_nodes(self, graph: Subgraph, ref: NodeRef, info: PromptInfo) -> list[str]:
        """The ids of the nodes of a prompt's stored graph that `ref` names (a feature without a
        position names all its occurrences); refuses a name the graph lacks."""
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


# The beam search's width and depth: beyond these it is the exact ranking's job.
MAX_BEAM = 100


def _check_top(top: int) -> None:
    if top < 1:
        raise QueryError(f"top {top}: expected a positive number")


def _tokens(value: Any) -> tuple[str, ...] | None:
    return None if value is None else tuple(value)


def _corpus_link(r: list[Any]) -> Link:
    layer, index, n, total, sum_abs, max_abs, label = r
    name = feature_name(layer, index)
    return Link(
        name, NodeKind.FEATURE, layer, None, n, total, total / n, sum_abs, max_abs, label=label
    )


def _summary(r: dict[str, Any]) -> PromptSummary:
    props = r["props"]
    return PromptSummary(
        r["key"],
        r["transcoderSet"],
        r["text"],
        r["nTokens"],
        {k: v for k, v in sorted(props.items()) if k not in PROMPT_OWN},
        {s.field: props.get(s.value) for s in PromptScore},
        {snake_case(k): props.get(k) for k in _ACCOUNTING if k in props},
    )


# The prompt properties `query prompt` shows beside the scores, in this order.
_ACCOUNTING = (
    *("mode", "truncated", "nTokensBeforeTruncation", "keptInfluence", "unexpandedInfluence"),
    *("logitInputExplained", "featureInputExplained", "run", "line"),
)


# Characters Lucene's query syntax gives a meaning to.
_LUCENE_SPECIAL = re.compile(r'([+\-!(){}\[\]^"~*?:\\/]|&&|\|\|)')


def _lucene_words(text: str) -> str:
    """`text` as plain words for the full-text index: every special character escaped, the
    words' operators (AND, OR, NOT) written in lower case so that they are words too."""
    escaped = _LUCENE_SPECIAL.sub(r"\\\1", text)
    return " ".join(w.lower() if w in ("AND", "OR", "NOT") else w for w in escaped.split())


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


def _prompt_edges(
    direction: str, rows: list[dict[str, Any]], ref: FeatureRef, name_of: Callable[[int], str]
) -> tuple[list[Edge], dict[str, Node]]:
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
        for other, kind, layer, pos, weight, ekind, feature, token_id, token, *heads in r["edges"]:
            node = Node(
                other,
                NodeKind(kind),
                layer=layer,
                pos=pos,
                feature=feature,
                token=token,
                token_id=token_id,
            )
            nodes.setdefault(other, node)
            pair = (other, r["id"]) if direction == "drivers" else (r["id"], other)
            edges.append(Edge(*pair, weight, ekind, _stored_split(weight, heads, name_of)))
    return edges, nodes


def _stored_split(
    weight: float, stored: list[Any], name_of: Callable[[int], str]
) -> HeadSplit | None:
    """An ATTR edge's stored split by head from its [heads, headWeights, otherHeads, residual]
    (None where it has none: a constant's edge, a store ingested with --heads-per-edge 0)."""
    numbers, weights, other, residual = stored
    if numbers is None or weights is None or other is None:
        return None
    heads = tuple((name_of(h), w) for h, w in zip(numbers, weights, strict=True))
    residual = residual or 0.0
    return HeadSplit(residual, heads, other, weight - residual - math.fsum(weights) - other)


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


def _example(r: list[Any]) -> Example:
    key, pos, activation, start, window = r
    at = pos - start
    token = window[at] if 0 <= at < len(window) else ""
    return Example(key, pos, token, activation, tuple(window[:at]), tuple(window[at + 1 :]))
