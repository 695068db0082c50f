"""What the viewer's pages and calls show, as JSON-ready dicts built from the query layer's
answers (`CircuitStore`): the prompt list, one prompt's graph laid out for drawing, a node's card
and a feature's page. Nothing here knows of HTTP; `app.py` serves these."""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from circuitstore.query import CircuitStore
from circuitstore.query.export.neuronpedia import neuronpedia_names
from circuitstore.query.features.records import Link
from circuitstore.query.prompts.records import PromptInfo, PromptSummary
from circuitstore.query.subgraph import Node, Subgraph
from circuitstore.query.tables import clean, readable_token
from circuitstore.schema.errors import CircuitStoreError, NotFoundError, QueryError
from circuitstore.schema.names import (
    FeatureFamily,
    NodeKind,
    parse_feature,
    parse_node,
    respell,
)

# Rows a list or card shows: the card is a glance (the CLI's defaults), the feature page the
# full length.
CARD_TOP = 10
PAGE_TOP = 25
EXAMPLE_WINDOW = 8


@dataclass
class PromptGraph:
    """One prompt's stored graph with each node's influence on its top logit, as `query
    circuit` ranks them, and its page's data, serialised once (a GPT-2-scale prompt's is
    ~2 MB: built and serialised again on every visit it took ~90 ms, bench_view.py)."""

    info: PromptInfo
    summary: PromptSummary
    graph: Subgraph
    target: str
    influence: dict[str, float]
    n_layers: int
    family: FeatureFamily  # spells the set's feature names

    @cached_property
    def nodes(self) -> dict[str, Node]:
        return {n.id: n for n in self.graph.nodes}

    @cached_property
    def page(self) -> str:
        """The page's data (`graph_payload`) as JSON to embed in it."""
        return embedded(graph_payload(self))


class GraphCache:
    """The last few prompts' graphs, so that a page's cards and score calls do not read the
    whole graph again (a GPT-2-scale prompt holds ~50,000 edges). The store is read-only here;
    a prompt ingested again while the viewer runs is seen after it falls out of the cache."""

    def __init__(self, store: CircuitStore, size: int = 8) -> None:
        self.store, self.size = store, size
        self._items: OrderedDict[str, PromptGraph] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> PromptGraph:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        found = self._read(key)
        with self._lock:
            self._items[key] = found
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return found

    def _read(self, key: str) -> PromptGraph:
        summary = self.store.prompt_summary(key)
        info, graph = self.store.prompt_graph(key)
        logits = [n for n in graph.nodes if n.kind == NodeKind.LOGIT]
        if not logits:
            raise QueryError(f"prompt {info.key} has no stored logit: its graph cannot be ranked")
        target = max(logits, key=lambda n: (n.value or -math.inf, n.id)).id
        tset = self.store.tset(info.transcoder_set)
        influence = graph.influence({target: 1.0})
        return PromptGraph(info, summary, graph, target, influence, tset.n_layers, tset.family)


def dumps(value: Any) -> str:
    """JSON without NaN (`clean` turns it to null upstream; this refuses any left over)."""
    return json.dumps(value, allow_nan=False, separators=(",", ":"))


def embedded(value: Any) -> str:
    """JSON safe inside a <script> element: no `<` that could close it."""
    return dumps(value).replace("<", "\\u003c")


def warm(store: CircuitStore, cache: GraphCache) -> None:
    """Read one prompt's page and one feature's, so that the server plans their statements
    before a user waits on them: the first reads after a server starts took up to 3.7 s for a
    feature page and ~0.4 s more for a prompt page, against ~0.2 s after (bench_view.py). A
    store that cannot answer is left for the pages to report."""
    try:
        first = store.prompts(limit=1)
        if not first:
            return
        pg = cache.get(first[0].key)
        _ = pg.page
        feature = next((n for n in pg.graph.nodes if n.kind == NodeKind.FEATURE), None)
        if feature is not None:
            node_card(store, pg, feature.id)
            feature_page(store, feature.id.split("@", 1)[0])
    except CircuitStoreError:
        return


# -- the prompt list --------------------------------------------------------------------------


def prompt_list(store: CircuitStore, limit: int) -> dict[str, Any]:
    """The stored prompts by key (at most `limit`), with their scores and corpus fields."""
    rows = store.prompts(limit=limit)
    return {
        "limit": limit,
        "prompts": [
            {
                "key": p.key,
                "text": p.text,
                "nTokens": p.n_tokens,
                "scores": {k: clean(v) for k, v in p.scores.items()},
                "extra": {k: clean(v) for k, v in p.extra.items() if _scalar(v)},
            }
            for p in rows
        ],
    }


def _scalar(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


# -- one prompt's graph -----------------------------------------------------------------------


def graph_payload(pg: PromptGraph) -> dict[str, Any]:
    """The prompt, its nodes (columns) and edges (node indices), and the influence ranking the
    page's threshold cuts: nodes by influence, largest first (ties by id), as `graphs.circuit`
    ranks them, and their total."""
    nodes = pg.graph.nodes
    index = {n.id: i for i, n in enumerate(nodes)}
    score = pg.influence
    ranked = sorted(
        (n.id for n in nodes if n.id != pg.target and score.get(n.id, 0.0) > 0),
        key=lambda i: (-score[i], i),
    )
    edges = pg.graph.edges
    return {
        "prompt": _prompt(pg),
        "nLayers": pg.n_layers,
        "target": index[pg.target],
        "nodes": {
            "id": [n.id for n in nodes],
            "kind": [n.kind.value for n in nodes],
            "layer": [n.layer for n in nodes],
            "pos": [n.pos for n in nodes],
            "name": [_feature(n, pg.family) for n in nodes],
            "token": [n.token for n in nodes],
            "label": [n.label for n in nodes],
            "activation": [clean(n.activation) for n in nodes],
            "influence": [score.get(n.id, 0.0) for n in nodes],
        },
        "edges": {
            "source": [index[e.source] for e in edges],
            "target": [index[e.target] for e in edges],
            "weight": [e.weight for e in edges],
        },
        "ranked": [index[i] for i in ranked],
        "total": math.fsum(score[i] for i in ranked),
    }


def _prompt(pg: PromptGraph) -> dict[str, Any]:
    s = pg.summary
    return {
        "key": s.key,
        "id": pg.info.id,
        "text": s.text,
        "tokens": list(pg.info.tokens),
        "transcoderSet": s.transcoder_set,
        "scores": {k: clean(v) for k, v in s.scores.items()},
        "extra": {k: clean(v) for k, v in s.extra.items() if _scalar(v)},
    }


def _feature(node: Node, family: FeatureFamily) -> str | None:
    if node.kind != NodeKind.FEATURE or node.layer is None or node.feature is None:
        return None
    return family.name(node.layer, node.feature)


# -- a node's card ----------------------------------------------------------------------------


def node_card(store: CircuitStore, pg: PromptGraph, node_id: str) -> dict[str, Any]:
    """What the side card shows for one node of the prompt's graph."""
    parse_node(node_id)  # a malformed id is refused as such, before it is looked up
    node = pg.nodes.get(respell(node_id, pg.family))  # either family's spelling
    if node is None:
        raise NotFoundError(f"{node_id} is not in the stored graph of prompt {pg.info.key}")
    card: dict[str, Any] = {
        "node": _node(node, pg),
        "inputs": _inputs(store, pg, node),
        "outputs": _neighbours(pg, node, "outputs"),
    }
    name = _feature(node, pg.family)
    if name is not None:
        card.update(feature_sections(store, name, CARD_TOP, CARD_TOP))
    return card


def _node(node: Node, pg: PromptGraph) -> dict[str, Any]:
    return {
        "id": node.id,
        "kind": node.kind.value,
        "layer": node.layer,
        "pos": node.pos,
        "name": _feature(node, pg.family),
        "token": node.token,
        "label": node.label,
        "activation": clean(node.activation),
        "value": clean(node.value),
        "influence": pg.influence.get(node.id, 0.0),
    }


def _inputs(store: CircuitStore, pg: PromptGraph, node: Node) -> list[dict[str, Any]]:
    """The node's strongest inputs in this prompt: for a feature, split by attention head
    where the store holds the split (`query drivers --prompt --by-head`)."""
    if node.kind != NodeKind.FEATURE:
        return _neighbours(pg, node, "inputs")
    answer = store.drivers(node.id, prompt=pg.info.key, top=CARD_TOP, sign="abs", by_head=True)
    return [_link(link) for link in answer.links]


def _neighbours(pg: PromptGraph, node: Node, side: str) -> list[dict[str, Any]]:
    """The node's strongest stored edges in or out, by |weight|."""
    weights: dict[str, float] = defaultdict(float)
    for e in pg.graph.edges:
        if side == "inputs" and e.target == node.id:
            weights[e.source] += e.weight
        elif side == "outputs" and e.source == node.id:
            weights[e.target] += e.weight
    ranked = sorted(weights.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:CARD_TOP]
    nodes = pg.nodes
    return [
        {
            "name": other,
            "kind": nodes[other].kind.value,
            "feature": _feature(nodes[other], pg.family),
            "token": nodes[other].token,
            "label": nodes[other].label,
            "total": w,
        }
        for other, w in ranked
    ]


def _link(link: Link) -> dict[str, Any]:
    row: dict[str, Any] = {
        "name": link.name,
        "kind": link.kind.value,
        "feature": link.name.split("@", 1)[0] if link.kind == NodeKind.FEATURE else None,
        "token": link.token,
        "label": link.label,
        "n": link.n,
        "total": link.total,
    }
    if link.split is not None:
        row["split"] = {
            "residual": link.split.residual,
            "heads": [[h, w] for h, w in link.split.heads],
            "otherHeads": link.split.other_heads,
            "multiLayer": link.split.multi_layer,
        }
    return row


def feature_sections(store: CircuitStore, name: str, top: int, examples: int) -> dict[str, Any]:
    """A feature's corpus-wide sections: label, statistics, views, drivers and targets over
    DRIVES (as `query drivers` / `query targets` rank them), top examples and interventions."""
    card = store.feature(name, top=top)
    return {
        "feature": card.name,
        "label": None if card.label is None else card.label.text,
        "stats": {k: clean(v) for k, v in card.stats.items()},
        "logitLens": _tokens(card.logit_lens_tokens),
        "deembed": _tokens(card.deembed_tokens),
        "drivers": [_link(x) for x in store.drivers(name, top=top).links],
        "targets": [_link(x) for x in store.targets(name, top=top).links],
        "examples": [e.as_row() for e in store.examples(name, top=examples)],
        "interventions": [
            {**i.as_row(), "features": list(i.features)} for i in store.interventions(feature=name)
        ],
        "virtualIn": [
            {"name": n, "weight": w, "label": card.neighbour_labels.get(n)}
            for n, w in card.virtual_in
        ],
        "virtualOut": [
            {"name": n, "weight": w, "label": card.neighbour_labels.get(n)}
            for n, w in card.virtual_out
        ],
    }


def _tokens(tokens: tuple[str, ...] | None) -> list[str] | None:
    return None if tokens is None else [readable_token(t) for t in tokens]


# -- a feature's page -------------------------------------------------------------------------


def feature_page(store: CircuitStore, name: str) -> dict[str, Any]:
    """Everything the card shows at full length, plus the feature's virtual-weight neighbours,
    its Neuronpedia dashboard where the set has a known source set, and the prompts where it
    fires most."""
    ref = parse_feature(name)
    tset = store.tset()
    base = tset.family.name(ref.layer, ref.index)
    page = feature_sections(store, base, PAGE_TOP, PAGE_TOP)
    names = neuronpedia_names(tset)
    page["transcoderSet"] = tset.id
    page["neuronpedia"] = (
        f"https://www.neuronpedia.org/{names.scan}/{ref.layer}-{names.source_set}/{ref.index}"
        if names.source_set
        else None
    )
    page["prompts"] = [
        {"key": m.key, "text": m.text, "score": m.score, "positions": list(m.positions[base])}
        for m in store.prompts_with([base], top=PAGE_TOP)
    ]
    return page
