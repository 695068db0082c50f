"""The attribution graph as JSON (the contract other tools read) and as a text table."""

from __future__ import annotations

import math
from typing import Any

from circuitstore.ingest.attribution.graph import NODE_KIND, AttributionGraph, Code, NodeTable
from circuitstore.schema.names import NodeKind


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _node_json(nodes: NodeTable, i: int, ids: list[str]) -> dict[str, Any]:
    kind = Code(int(nodes.kind[i]))
    layer = int(nodes.layer[i])
    node: dict[str, Any] = {
        "id": ids[i],
        "type": NODE_KIND[kind].value,
        "layer": None if layer < 0 else layer,
        "pos": int(nodes.pos[i]),
    }
    if kind == Code.FEATURE:
        node["feature"] = int(nodes.index[i])
        node["activation"] = float(nodes.activation[i])
        node["preactivation"] = float(nodes.value[i])
    elif kind == Code.LOGIT:
        node["token_id"] = int(nodes.index[i])
        node["preactivation"] = float(nodes.value[i])
    elif kind == Code.EMBEDDING:
        node["token_id"] = int(nodes.index[i])
    elif kind == Code.REMAINDER:
        node["remainder_of"] = ids[int(nodes.index[i])]
    return node


def graph_to_json(graph: AttributionGraph) -> dict[str, Any]:
    """{tokens, nodes, edges, metadata}; pruned graphs add per-target `input_kept` (sum of the kept
    in-edges), `input_kept_abs_fraction` and `influence` to each node."""
    nodes = graph.nodes
    ids = nodes.ids()
    out_nodes = [_node_json(nodes, i, ids) for i in range(len(nodes))]
    if nodes.kind.numel():
        logit_rows = (nodes.kind == Code.LOGIT).nonzero(as_tuple=True)[0].tolist()
        for i in logit_rows:
            out_nodes[i]["token"] = _token_text(graph, int(nodes.index[i]))
    if graph.accounting is not None and graph.influence is not None:
        acc = graph.accounting
        for i, node in enumerate(out_nodes):
            node["influence"] = float(graph.influence[i])
            if node["type"] in (NodeKind.FEATURE.value, NodeKind.LOGIT.value) and not node.get(
                "remainder_of"
            ):
                node["input_kept"] = _num(float(acc.kept_sum[i]))
                node["input_kept_abs_fraction"] = _num(float(acc.kept_abs_fraction[i]))
    edges = graph.edges
    same = (nodes.pos[edges.source] == nodes.pos[edges.target]).tolist()
    out_edges = [
        {"source": ids[s], "target": ids[t], "weight": w, "kind": "residual" if k else "attention"}
        for s, t, w, k in zip(
            edges.source.tolist(), edges.target.tolist(), edges.weight.tolist(), same, strict=True
        )
    ]
    meta = dict(graph.metadata)
    meta.update(n_nodes=len(out_nodes), n_edges=len(out_edges), token_ids=list(graph.token_ids))
    return {"tokens": list(graph.tokens), "nodes": out_nodes, "edges": out_edges, "metadata": meta}


def _token_text(graph: AttributionGraph, token_id: int) -> str | None:
    return graph.logit_tokens.get(token_id)


def graph_to_table(graph: AttributionGraph, *, top: int = 20) -> str:
    """Human-readable summary: tokens, node counts, and the strongest edges."""
    nodes, edges = graph.nodes, graph.edges
    # repr() escapes control characters: token text never reaches a terminal raw.
    tokens = " ".join(repr(t) for t in graph.tokens)
    lines = [f"tokens: {tokens}", f"mode: {graph.metadata.get('mode')}"]
    counts: dict[str, int] = {}
    for k in nodes.kind.tolist():
        name = "remainder" if k == Code.REMAINDER else NODE_KIND[Code(k)].value
        counts[name] = counts.get(name, 0) + 1
    lines.append(
        "nodes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; edges: {len(edges)}"
    )
    order = edges.weight.abs().argsort(descending=True)[:top].tolist()
    lines.append(f"{'source':<28} {'target':<28} {'weight':>12}")
    for e in order:
        s, t = int(edges.source[e]), int(edges.target[e])
        lines.append(
            f"{nodes.node_id(s):<28} {nodes.node_id(t):<28} {float(edges.weight[e]):>12.5g}"
        )
    return "\n".join(lines)
