"""One prompt's graph in the attribution-graph JSON that Neuronpedia's graph page and
circuit-tracer's local viewer load (`files.write_viewer_graph` writes it where the viewer finds
it).

That format (Neuronpedia's published JSON schema, `graph-schema.json`, and circuit-tracer's
`frontend/graph_models.py`): `metadata` (slug, scan, prompt, prompt_tokens, schema_version,
feature_details, node_threshold, info...), `qParams`, `nodes` (node_id, feature, layer, ctx_idx,
feature_type, jsNodeId, clerp, influence, activation, token_prob, is_target_logit) and `links`
(source, target, weight). How the viewers read it, and so how it is written here:

- `feature` of a transcoder feature is the Cantor pairing of its layer and index
  (`metadata.schema_version` 1); Neuronpedia decodes it to fetch the dashboard
  `<scan>/<layer>-<source set>/<index>`, so `scan` must be Neuronpedia's model id and
  `feature_details.neuronpedia_source_set` its source set. The sets Neuronpedia hosts are
  recognised here (`HUB_SETS`: GPT-2 small's, Gemma-2-2B's per-layer and cross-layer ones,
  Qwen3-4B's); other sets name theirs with `scan`/`source_set`, else the scan is the
  transcoder set's id and the graph names no source set.
- `feature_type` of every transcoder feature is "cross layer transcoder", whichever the set's
  family: circuit-tracer writes it for per-layer and cross-layer sets alike
  (`frontend/graph_models.py`), and both viewers style any other type as no feature.
- Node ids, unique by construction: a feature `<layer>_<index>_<pos>`, an MLP error
  `<layer>_error_mlp_<pos>` (circuit-tracer's own `0_<layer>_<pos>` can equal a layer-0
  feature's), a token `E_<token id>_<pos>`, a logit `<n_layers + 1>_<token id>_<pos>`.
- A logit's `clerp` must hold `(p=`: the viewers parse its probability from there.
- `influence` is each node's cumulative share of the influence on the logits, weighted by their
  probabilities (lower is more important): the viewers prune by it.

The viewers have no node type for constant terms (biases) or for lumped mode's remainders, so
their mass is folded into an error node instead of dropped: a bias into the error node of its
layer and position (the unembedding bias, of no layer, into the last layer's), a remainder (the
unitemised input of one target) into the error node at its target's layer and position. Error
nodes are created where the stored graph has none there, and edges that come to share a source
and a target are summed. `metadata.info.folded` counts what was folded.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from circuitstore.query import graphs
from circuitstore.query.export.qk import qk_tracing
from circuitstore.query.prompts.records import PromptInfo
from circuitstore.query.qk.stored import TracedEdge
from circuitstore.query.reader import TranscoderSetInfo
from circuitstore.query.scores import logit_seeds
from circuitstore.query.subgraph import Edge, Node, Subgraph
from circuitstore.schema.errors import NotFoundError, QueryError
from circuitstore.schema.names import NodeId, NodeKind, Viewer

# The version of the feature-id convention the viewers decode (1: Cantor pairing).
GRAPH_SCHEMA_VERSION = 1

_SLUG = re.compile(r"[^A-Za-z0-9_.-]+")


@dataclass(frozen=True)
class NeuronpediaSet:
    """How Neuronpedia names a transcoder set: its model id (`scan`) and source set."""

    scan: str
    source_set: str | None = None


@dataclass(frozen=True)
class HubSet:
    """A transcoder set Neuronpedia hosts dashboards for, as a stored set is recognised: its
    model (by hub name or the last part of a folder's path, any case), the set's model and
    feature families, its layers and features per layer; where its width is not known, the
    transcoders' own names (repo, or a folder's last part) instead."""

    models: frozenset[str]
    model_family: str
    feature_family: str
    n_layers: int
    d_transcoder: int | None
    names: NeuronpediaSet
    transcoders: frozenset[str] | None = None

    def matches(self, tset: TranscoderSetInfo) -> bool:
        """Whether `tset` is this set."""
        shape = (tset.model_family, tset.feature_family, tset.n_layers)
        return (
            _named(tset.model, self.models)
            and shape == (self.model_family, self.feature_family, self.n_layers)
            and self.d_transcoder in (None, tset.d_transcoder)
            and (self.transcoders is None or _named(tset.transcoders, self.transcoders))
        )


def _named(given: str | None, names: frozenset[str]) -> bool:
    """Whether a hub name or folder path names one of `names` (whole, or its last part)."""
    name = (given or "").rstrip("/").lower()
    return name in names or name.rsplit("/", 1)[-1] in names


_GEMMA_2_2B = frozenset({"google/gemma-2-2b", "gemma-2-2b"})

# The sets Neuronpedia hosts, by the names its graph server gives them (hijohnnylin/neuronpedia
# apps/graph/neuronpedia_graph/server.py, TRANSCODER_SET_TO_SOURCE_URL_ARRAYS, at ebb8426):
# dashboards at neuronpedia.org/<scan>/<layer>-<source set>/<index>. It hosts none for
# Llama-3.2-1B's sets (its graph server has no source set for them).
HUB_SETS: tuple[HubSet, ...] = (
    # GPT-2 small's transcoders (Dunefsky, Chlenski, Nanda 2024; pchlenski/gpt2-transcoders).
    HubSet(
        frozenset({"gpt2", "gpt2-small", "openai-community/gpt2"}),
        "gpt2",
        "transcoder",
        12,
        24576,
        NeuronpediaSet("gpt2-small", "tres-dc"),
    ),
    # GemmaScope's transcoders, 16k features a layer (mntss/gemma-scope-transcoders).
    HubSet(
        _GEMMA_2_2B,
        "gemma2",
        "transcoder",
        26,
        16384,
        NeuronpediaSet("gemma-2-2b", "gemmascope-transcoder-16k"),
    ),
    # The 2.5M-feature cross-layer transcoder (mntss/clt-gemma-2-2b-2.5M: 26 layers x 98,304);
    # the 426k one (26 x 16,384) has no dashboards.
    HubSet(_GEMMA_2_2B, "gemma2", "clt", 26, 98304, NeuronpediaSet("gemma-2-2b", "clt-hp")),
    # Qwen3-4B's transcoders: no source here gives their width, so the set is known by name.
    HubSet(
        frozenset({"qwen/qwen3-4b", "qwen3-4b"}),
        "qwen3",
        "transcoder",
        36,
        None,
        NeuronpediaSet("qwen3-4b", "transcoder-hp"),
        frozenset({"mwhanna/qwen3-4b-transcoders", "qwen3-4b-transcoders"}),
    ),
)


def neuronpedia_names(
    tset: TranscoderSetInfo, scan: str | None = None, source_set: str | None = None
) -> NeuronpediaSet:
    """Neuronpedia's model id and source set for `tset`: those given, else the known ones
    (`HUB_SETS`), else the transcoder set's id as the scan (what circuit-tracer's viewer keys
    its local labels by) and no source set (no dashboards)."""
    known = next((hub.names for hub in HUB_SETS if hub.matches(tset)), None)
    if known is None:
        known = NeuronpediaSet(_SLUG.sub("-", tset.id).strip("-") or "model")
    return NeuronpediaSet(scan or known.scan, source_set or known.source_set)


def cantor(x: int, y: int) -> int:
    """The Cantor pairing the viewers decode a feature's (layer, index) from."""
    return (x + y) * (x + y + 1) // 2 + y


def uncantor(z: int) -> tuple[int, int]:
    """The inverse of :func:`cantor` (Neuronpedia's `inverseCantorIndex`)."""
    w = math.floor((math.sqrt(8 * z + 1) - 1) / 2)
    while w * (w + 1) // 2 > z:  # float rounding, for very large z
        w -= 1
    while (w + 1) * (w + 2) // 2 <= z:
        w += 1
    y = z - w * (w + 1) // 2
    return w - y, y


def neuronpedia_graph(
    info: PromptInfo,
    graph: Subgraph,
    tset: TranscoderSetInfo,
    node_threshold: float = 0.8,
    scan: str | None = None,
    source_set: str | None = None,
    slug: str | None = None,
    pinned: Sequence[str] = (),
    traced: Sequence[TracedEdge] = (),
) -> dict[str, Any]:
    """One prompt's stored graph in the viewers' format (see the module's docstring), with the
    nodes `pinned` (local ids of `graph`) pinned in the viewers (`qParams.pinnedIds`): a node
    the viewers cannot show by the error node it is folded into. The stored QK traces
    `traced` fill `qk_tracing_results` and `qk_only_nodes` (see `export.qk`)."""
    names = neuronpedia_names(tset, scan, source_set)
    folded, counts = fold_constants(graph, tset.n_layers)
    logits = [n for n in folded.nodes if n.kind == NodeKind.LOGIT]
    top = max(logits, key=lambda n: n.value or -math.inf).id if logits else None
    probs = logit_seeds(logits)
    cumulative = _cumulative(folded, probs)
    ids = {n.id: _node_id(n, tset) for n in folded.nodes}
    nodes = [
        _node_json(n, ids[n.id], tset, cumulative.get(n.id), probs, n.id == top)
        for n in folded.nodes
    ]
    links = [
        {"source": ids[e.source], "target": ids[e.target], "weight": e.weight} for e in folded.edges
    ]
    qk, qk_only = qk_tracing(traced, ids, info, lambda n: _described(n, tset))
    for node in nodes:
        if node["node_id"] in qk:
            node["qk_tracing_results"] = qk[node["node_id"]]
    metadata: dict[str, Any] = {
        "slug": slug or _slug(info.key),
        "scan": names.scan,
        "prompt": info.text,
        "prompt_tokens": list(info.tokens),
        "schema_version": GRAPH_SCHEMA_VERSION,
        "transcoder_list": [],
        "node_threshold": node_threshold,
        "info": {
            "description": f"circuitstore: prompt {info.key} of transcoder set {tset.id}",
            "generator": {"name": "circuitstore", "version": _version()},
            "source_urls": [],
            "transcoder_set": tset.id,
            "prompt_id": info.id,
            "folded": counts,
            "token_prob": "softmax over the stored logits only",
        },
    }
    if names.source_set:
        metadata["feature_details"] = {"neuronpedia_source_set": names.source_set}
    extra = {"qk_only_nodes": qk_only} if qk else {}
    return {
        "metadata": metadata,
        "qParams": {
            "pinnedIds": _pinned_ids(graph, tset, pinned, ids),
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
        **extra,
    }


def fold_constants(graph: Subgraph, n_layers: int) -> tuple[Subgraph, dict[str, int]]:
    """`graph` with the nodes the viewers cannot show (biases, any kind the kind table gives no
    viewer, lumped mode's remainders) folded into error nodes (the module's docstring says
    where), and how many of each kind were folded and how many error nodes made."""
    into, counts = _fold_targets(graph, n_layers)
    if not into:
        return graph, counts
    errors = {
        (n.layer, n.pos): n.id
        for n in graph.nodes
        if n.kind == NodeKind.ERROR and not NodeId.is_remainder(n.id)
    }
    nodes = [n for n in graph.nodes if n.id not in into]
    for layer, pos in sorted(set(into.values()) - set(errors)):
        errors[layer, pos] = NodeId.error(layer, pos)
        nodes.append(Node(errors[layer, pos], NodeKind.ERROR, layer=layer, pos=pos))
        counts["created_error_nodes"] += 1
    weights: dict[tuple[str, str], float] = defaultdict(float)
    kinds: dict[tuple[str, str], str | None] = {}
    for e in graph.edges:
        if e.target in into:  # nothing stored feeds a constant
            continue
        pair = (errors[into[e.source]] if e.source in into else e.source, e.target)
        weights[pair] += e.weight
        kinds.setdefault(pair, e.kind)
    edges = tuple(Edge(s, t, w, kinds[s, t]) for (s, t), w in weights.items())
    return Subgraph(graph.prompt, tuple(nodes), edges), counts


def _fold_targets(
    graph: Subgraph, n_layers: int
) -> tuple[dict[str, tuple[int, int]], dict[str, int]]:
    """Each node to fold -> (layer, pos) of the error node it is folded into, and the counts
    `fold_constants` reports (no error node created yet)."""
    into: dict[str, tuple[int, int]] = {}
    by_id = {n.id: n for n in graph.nodes}
    unshown = [kind for kind in NodeKind if kind.spec.viewer is None]
    counts = {**{kind.value: 0 for kind in unshown}, "remainder": 0, "created_error_nodes": 0}
    last = max(n_layers - 1, 0)
    for n in graph.nodes:
        if n.kind in unshown:  # the viewers have no node for it (the kind table says)
            into[n.id] = (last if n.layer is None else n.layer, n.pos or 0)
            counts[n.kind.value] += 1
        elif NodeId.is_remainder(n.id):
            target = _remainder_target(n, graph, by_id)
            layer = target.layer if target is not None and target.layer is not None else n.layer
            if target is not None and target.kind == NodeKind.LOGIT:
                layer = last
            pos = target.pos if target is not None and target.pos is not None else n.pos
            into[n.id] = (last if layer is None else layer, pos or 0)
            counts["remainder"] += 1
    return into, counts


def _pinned_ids(
    graph: Subgraph, tset: TranscoderSetInfo, pinned: Sequence[str], ids: dict[str, str]
) -> list[str]:
    """The viewer ids of the `pinned` nodes, once each: a folded node's is its error node's
    (error nodes are keyed by layer and position, so `NodeId.error` names it)."""
    into = _fold_targets(graph, tset.n_layers)[0] if pinned else {}
    local = [NodeId.error(*into[p]) if p in into else p for p in pinned]
    missing = [p for p, x in zip(pinned, local, strict=True) if x not in ids]
    if missing:
        raise NotFoundError(
            f"node {missing[0]} is not in the stored graph of prompt {graph.prompt}"
        )
    return list(dict.fromkeys(ids[p] for p in local))


def _remainder_target(n: Node, graph: Subgraph, by_id: dict[str, Node]) -> Node | None:
    """The node whose input a remainder stands for: named in its id (`rem[<target>]`)."""
    inner = n.id[len("rem[") : -1]
    if inner in by_id:
        return by_id[inner]
    targets = [by_id[e.target] for e in graph.edges if e.source == n.id and e.target in by_id]
    return targets[0] if targets else None


def _version() -> str:
    try:
        return version("circuitstore")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0+unknown"


def _slug(key: str) -> str:
    """Neuronpedia accepts slugs of `[a-zA-Z0-9_.-]` only."""
    return _SLUG.sub("-", key).strip("-") or "graph"


def _cumulative(graph: Subgraph, weights: dict[str, float]) -> dict[str, float]:
    """circuit-tracer's cumulative scores: nodes ranked by influence on the weighted logits,
    each given the running share of the total at its rank (the most influential near 0)."""
    if not weights:
        return {}
    scores = graphs.influence(graph, weights)
    ranked = sorted(
        ((n, 0.0 if n in weights else s) for n, s in scores.items()), key=lambda kv: (-kv[1], kv[0])
    )
    total = math.fsum(s for _, s in ranked) or 1.0
    out, running = {}, 0.0
    for node, score in ranked:
        running += score
        out[node] = min(running / total, 1.0)
    return out


def _node_id(n: Node, tset: TranscoderSetInfo) -> str:
    """The node's id in the viewers' graph: unique per node (see the module's docstring)."""
    return _viewer(n).node_id.format_map(_fields(n, tset))


def _viewer(n: Node) -> Viewer:
    viewer = n.kind.spec.viewer
    if viewer is None:  # fold_constants folds these first
        raise QueryError(f"node {n.id}: the viewers have no node type for kind {n.kind}")
    return viewer


def _fields(n: Node, tset: TranscoderSetInfo, prob: float = 0.0) -> dict[str, Any]:
    """What the kind table's viewer formats name (`schema.names.Viewer`)."""
    token = n.token if n.token is not None or n.token_id is None else f"<token {n.token_id}>"
    return {
        "layer": n.layer,
        "pos": n.pos,
        "feature": n.feature,
        "token_id": n.token_id,
        "logit_layer": tset.n_layers + 1,
        "cantor": cantor(n.layer or 0, n.feature or 0),
        "name": n.label or tset.family.name(n.layer or 0, n.feature or 0),
        "token": _quoted(token),
        "prob": prob,
    }


def _node_json(
    n: Node,
    node_id: str,
    tset: TranscoderSetInfo,
    influence: float | None,
    probs: dict[str, float],
    is_top: bool,
) -> dict[str, Any]:
    viewer, prob = _viewer(n), probs.get(n.id, 0.0)
    fields = _fields(n, tset, prob)
    return {
        "node_id": node_id,
        "jsNodeId": node_id,
        "ctx_idx": n.pos or 0,
        "influence": influence,
        "activation": n.activation,
        "clerp": viewer.clerp.format_map(fields),
        "token_prob": prob,
        "is_target_logit": is_top,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
        "feature_type": viewer.type,
        "feature": int(viewer.feature.format_map(fields)),
        "layer": viewer.layer.format_map(fields),
    }


def _described(n: Node, tset: TranscoderSetInfo) -> dict[str, Any]:
    """What a QK-only node shows of a node the viewers have a type for."""
    full = _node_json(n, _node_id(n, tset), tset, None, {}, False)
    return {k: full[k] for k in ("node_id", "feature", "layer", "feature_type", "clerp")}


def _quoted(token: str | None) -> str:
    """A token inside the viewers' `"..."` (they take the first quoted part as the token)."""
    return (token or "").replace('"', "'")
