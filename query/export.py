"""Subgraph answers as files: GraphML or node-link JSON through networkx, and one prompt's graph
in the graph-JSON layout the circuit-tracer / Neuronpedia viewers read.

That layout (as those tools document it): `metadata` (slug, scan, prompt, prompt_tokens,
transcoder_list, node_threshold), `qParams` (pinned ids, supernodes...), `nodes` (node_id,
feature, layer as a string, ctx_idx, feature_type, jsNodeId, clerp, influence, activation,
token_prob, is_target_logit) and `links` (source, target, weight). Node ids: a feature is
`<layer>_<index>_<pos>`, an MLP error `<layer>_-1_<pos>`, a token `E_<token id>_<pos>`, a logit
`<n_layers + 1>_<token id>_<pos>`. Constant (bias) nodes have no counterpart there and are left
out, with their links; the metadata says how many.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import networkx as nx

from circuitstore.query import graphs
from circuitstore.query.results import Node, PromptInfo, Subgraph, TranscoderSetInfo
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import NodeId, NodeKind, feature_name

EXPORT_FORMATS = ("graphml", "json")


def write_subgraph(graph: nx.DiGraph, fmt: str, path: Path) -> None:
    """GraphML or networkx node-link JSON (`nodes`, `links`)."""
    if fmt not in EXPORT_FORMATS:
        raise QueryError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    try:
        if fmt == "graphml":
            nx.write_graphml(graph, path)
        else:
            data = nx.node_link_data(graph, edges="links")
            path.write_text(json.dumps(data, indent=1, default=str))
    except OSError as exc:
        raise QueryError(f"cannot write {path} ({exc.strerror or exc})") from None


def write_json(data: Any, path: Path) -> None:
    """`data` as JSON in `path`; a file that cannot be written is one line naming it."""
    try:
        path.write_text(json.dumps(data))
    except OSError as exc:
        raise QueryError(f"cannot write {path} ({exc.strerror or exc})") from None


def neuronpedia_graph(
    info: PromptInfo, graph: Subgraph, tset: TranscoderSetInfo, node_threshold: float = 0.8
) -> dict[str, Any]:
    """One prompt's stored graph in the viewers' layout; influence is each node's cumulative
    share of the influence on the top logit (lower is more important), as those viewers expect."""
    logits = [n for n in graph.nodes if n.kind == NodeKind.LOGIT]
    top = max(logits, key=lambda n: n.value or -math.inf).id if logits else None
    probs = _softmax({n.id: n.value or 0.0 for n in logits})
    cumulative = _cumulative(graph, top)
    ids = {n.id: _node_id(n, tset) for n in graph.nodes}
    nodes = [
        _node_json(n, ids[n.id], tset, cumulative.get(n.id), probs, n.id == top)
        for n in graph.nodes
        if ids[n.id] is not None
    ]
    links = [
        {"source": ids[e.source], "target": ids[e.target], "weight": e.weight}
        for e in graph.edges
        if ids.get(e.source) and ids.get(e.target)
    ]
    return {
        "metadata": {
            "slug": _slug(info.key),
            "scan": tset.id,
            "prompt": info.text,
            "prompt_tokens": list(info.tokens),
            "transcoder_list": [],
            "node_threshold": node_threshold,
            "info": {
                "source": "circuitstore",
                "prompt_id": info.id,
                "omitted_nodes": sum(1 for v in ids.values() if v is None),
                "omitted_links": len(graph.edges) - len(links),
                "token_prob": "softmax over the stored logits only",
            },
        },
        "qParams": {
            "pinnedIds": [],
            "supernodes": [],
            "linkType": "both",
            "clickedId": "",
            "sg_pos": "",
        },
        "nodes": nodes,
        "links": links,
    }


def _slug(key: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in key)


def _softmax(values: dict[str, float]) -> dict[str, float]:
    if not values:
        return {}
    peak = max(values.values())
    exp = {k: math.exp(v - peak) for k, v in values.items()}
    total = sum(exp.values())
    return {k: v / total for k, v in exp.items()}


def _cumulative(graph: Subgraph, target: str | None) -> dict[str, float]:
    if target is None:
        return {}
    scores = graphs.influence(graph, {target: 1.0})
    ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
    total = math.fsum(s for _, s in ranked) or 1.0
    out, running = {}, 0.0
    for node, score in ranked:
        running += score
        out[node] = running / total
    return out


def _node_id(n: Node, tset: TranscoderSetInfo) -> str | None:
    """The viewers' id of a node; None for kinds they have no node type for (the kind table's
    viewer_type)."""
    # Lumped mode's remainders are error terms of one target, not of a layer and position: the
    # viewers have no node for them.
    if n.kind.spec.viewer_type is None or NodeId.is_remainder(n.id):
        return None
    ids = {
        NodeKind.FEATURE: f"{n.layer}_{n.feature}_{n.pos}",
        NodeKind.ERROR: f"{n.layer}_-1_{n.pos}",
        NodeKind.EMBEDDING: f"E_{n.token_id}_{n.pos}",
        NodeKind.LOGIT: f"{tset.n_layers + 1}_{n.token_id}_{n.pos}",
    }
    return ids.get(n.kind)


def _node_json(
    n: Node,
    node_id: str | None,
    tset: TranscoderSetInfo,
    influence: float | None,
    probs: dict[str, float],
    is_top: bool,
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "node_id": node_id,
        "jsNodeId": node_id,
        "ctx_idx": n.pos,
        "influence": influence,
        "activation": n.activation,
        "clerp": "",
        "token_prob": 0.0,
        "is_target_logit": False,
        "run_idx": 0,
        "reverse_ctx_idx": 0,
    }
    out["feature_type"] = n.kind.spec.viewer_type
    if n.kind == NodeKind.FEATURE:
        offset = 10 ** math.ceil(math.log10(tset.d_transcoder)) if tset.d_transcoder > 1 else 1
        layer = n.layer or 0
        feature = (n.feature or 0) + offset * layer
        out.update(feature=feature, layer=str(layer), clerp=feature_name(layer, n.feature or 0))
    elif n.kind == NodeKind.ERROR:
        out.update(feature=-1, layer=str(n.layer))
    elif n.kind == NodeKind.EMBEDDING:
        out.update(feature=n.pos, layer="E", clerp=f"Emb: {n.token!r}")
    else:
        prob = probs.get(n.id, 0.0)
        out.update(
            feature=n.token_id,
            layer=str(tset.n_layers + 1),
            token_prob=prob,
            is_target_logit=is_top,
            clerp=f'Output "{n.token or n.token_id}" (p={prob:.3f})',
        )
    return out
