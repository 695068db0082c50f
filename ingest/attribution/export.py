"""The attribution graph as JSON (the contract other tools read), in memory or streamed, and as
a text table."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TextIO

import torch
from torch import Tensor

from circuitstore.ingest.attribution.graph import AttributionGraph, Code, Rows
from circuitstore.ingest.attribution.heads import EdgeBreakdown
from circuitstore.ingest.attribution.prune import PruneSink
from circuitstore.ingest.attribution.state import PromptState, logit_seeds
from circuitstore.ingest.config import AttributionConfig, PruneConfig

if TYPE_CHECKING:  # the engine imports this module's siblings; only its type is needed here
    from circuitstore.ingest.attribution.api import AttributionEngine


from circuitstore.schema.names import CLT, TRANSCODER, FeatureFamily, NodeKind


def _num(x: float) -> float | None:
    return None if math.isnan(x) else x


def _node_json(rows: Rows, i: int) -> dict[str, Any]:
    """One node: its id, kind, layer and position, then the fields its form adds (the kind
    table's `Form.json`)."""
    layer = rows.layer[i]
    node: dict[str, Any] = {
        "id": rows.local_id(i),
        "type": rows.kind(i).value,
        "layer": None if layer < 0 else layer,
        "pos": rows.pos[i],
    }
    return node | rows.fields(i, rows.form(i).json)


def _family(graph: AttributionGraph) -> FeatureFamily:
    """How the graph's feature names are spelled: its transcoders' family."""
    return CLT if graph.metadata.get("feature_family") == "clt" else TRANSCODER


def graph_to_json(
    graph: AttributionGraph, parts: Sequence[EdgeBreakdown | None] | None = None
) -> dict[str, Any]:
    """{tokens, nodes, edges, metadata}; pruned graphs add per-target `input_kept` (sum of the kept
    in-edges), `input_kept_abs_fraction` and `influence` to each node; with `parts` (one per
    edge, `heads.graph_by_head`), each edge that has one carries its breakdown by path."""
    nodes = graph.nodes
    rows = Rows(nodes, graph.tokens, family=_family(graph))
    out_nodes = [_node_json(rows, i) for i in range(len(nodes))]
    ids = [node["id"] for node in out_nodes]
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
    for edge, part in zip(out_edges, parts or (), strict=False):
        if part is not None:
            edge["parts"] = part.as_dict()
    meta = dict(graph.metadata)
    meta.update(n_nodes=len(out_nodes), n_edges=len(out_edges), token_ids=list(graph.token_ids))
    return {"tokens": list(graph.tokens), "nodes": out_nodes, "edges": out_edges, "metadata": meta}


def _token_text(graph: AttributionGraph, token_id: int) -> str | None:
    return graph.logit_tokens.get(token_id)


def graph_to_table(
    graph: AttributionGraph,
    *,
    top: int = 20,
    parts: Sequence[EdgeBreakdown | None] | None = None,
) -> str:
    """Human-readable summary: tokens, node counts, and the strongest edges (with `parts`, each
    with its three strongest heads)."""
    nodes, edges = graph.nodes, graph.edges
    # repr() escapes control characters: token text never reaches a terminal raw.
    tokens = " ".join(repr(t) for t in graph.tokens)
    lines = [f"tokens: {tokens}", f"mode: {graph.metadata.get('mode')}"]
    counts: dict[str, int] = {}
    rows = Rows(nodes, graph.tokens, family=_family(graph))
    for i in range(len(nodes)):
        name = rows.form(i).name
        counts[name] = counts.get(name, 0) + 1
    lines.append(
        "nodes: "
        + ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        + f"; edges: {len(edges)}"
    )
    order = edges.weight.abs().argsort(descending=True)[:top].tolist()
    lines.append(f"{'source':<28} {'target':<28} {'weight':>12}" + ("  heads" if parts else ""))
    for e in order:
        s, t = int(edges.source[e]), int(edges.target[e])
        line = f"{rows.local_id(s):<28} {rows.local_id(t):<28} {float(edges.weight[e]):>12.5g}"
        part = parts[e] if parts else None
        if part is not None:
            line += "  " + ", ".join(f"{name} {w:.3g}" for name, w in part.strongest(3))
        lines.append(line)
    return "\n".join(lines)


# Dense entries formatted at once when streaming: their COO tensors and Python objects stay a
# few MB whatever the chunk's size. Formatting a whole CPU chunk (2^23 entries) at once took
# the process past 4.3 GiB at GPT-2 scale, against 3.7 GiB (README, "One prompt's graph").
EDGE_SLICE = 1 << 16
# A streamed edge's JSON is ~115 bytes ({"source": "mlp3tc[1234]@12", "target": ..., ...}):
# 67.4 GB for the 583 M edges of a 64-token graph at GPT-2 scale.
EDGE_BYTES = 115


def count_edges(state: PromptState) -> int:
    """How many edges the full graph of `state` has, from the node table alone: each feature or
    logit target sees every source of an earlier layer at its own or an earlier position, plus
    its constant (and, lumped, its remainder)."""
    nodes, layout = state.nodes, state.layout
    L, T = layout.n_layers, layout.n_pos
    # Sources per (layer they feed, position): features and the 3 extras of each layer below,
    # the layer's own attention bias, the embedding.
    per = torch.zeros(L + 1, T, dtype=torch.long)
    feats = nodes.kind == Code.FEATURE
    for layer in range(L):
        at = torch.bincount(nodes.pos[feats & (nodes.layer == layer)], minlength=T).cpu()
        per[layer + 1 :] += at + 3  # features, error, b_dec_out, attention bias of `layer`
    per += 1  # the embedding
    below = torch.cumsum(per, dim=1)  # sources at positions <= p
    edges = 0
    for targets in state.targets:
        own_attn = 1 if targets.layer < L else 0  # a feature's own layer's attention bias
        counts = below[targets.layer, targets.pos.cpu()] + own_attn * (targets.pos.cpu() + 1)
        edges += int(counts.sum()) + (2 if layout.lumped else 1) * int(targets.nodes.numel())
    return edges


def stream_prompt_json(
    engine: AttributionEngine,
    prompt: str,
    config: AttributionConfig,
    out: TextIO,
    *,
    truncate: bool = False,
    announce: Callable[[int], None] = lambda _: None,
) -> int:
    """`prompt`'s full graph streamed to `out` (`write_graph_json`); `announce` hears the edge
    count first. Returns the number of edges written."""
    with torch.no_grad():
        state = engine.prepare(prompt, config, truncate=truncate)
        announce(count_edges(state))
        return write_graph_json(engine, state, config, out)


def write_graph_json(
    engine: AttributionEngine, state: PromptState, config: AttributionConfig, out: TextIO
) -> int:
    """The full (unpruned) graph as `graph_to_json` writes it, streamed: nodes, then edges chunk
    by chunk as the engine computes them, so memory stays that of one chunk whatever the
    graph's size. Returns the number of edges written."""
    nodes = state.nodes
    tokens = list(state.cache.str_tokens)
    rows = Rows(nodes, tokens, family=CLT if state.cross_layer else TRANSCODER)
    ids = [rows.local_id(i) for i in range(len(nodes))]
    out.write('{"tokens": ' + json.dumps(tokens) + ', "nodes": [')
    logit_rows = set((nodes.kind == Code.LOGIT).nonzero(as_tuple=True)[0].tolist())
    decode = engine.model.bridge.tokenizer.decode
    for i in range(len(nodes)):
        node = _node_json(rows, i)
        if i in logit_rows:
            node["token"] = decode([int(nodes.index[i])])
        out.write(("" if i == 0 else ", ") + json.dumps(node))
    out.write('], "edges": [')
    quoted = [json.dumps(i) for i in ids]
    n = 0
    with engine.on_device():
        # The whole graph's scores, from the same stream (no candidate edges are kept).
        scorer = PruneSink(
            nodes, PruneConfig(skip_fraction=0.0), logit_seeds(state), keep_edges=False
        )
        for chunk in engine.chunks(state, config):
            scorer.consume(chunk)
            for block in chunk.row_blocks(EDGE_SLICE):
                src, tgt, w = block.coo()
                if src.numel():
                    text = _edges_text(quoted, src, tgt, w, nodes.pos[src] == nodes.pos[tgt])
                    out.write((", " if n else "") + text)
                    n += int(src.shape[0])
    meta = engine.metadata(state, config)
    meta.update(scorer.full_scores().as_dict())
    meta.update(n_nodes=len(nodes), n_edges=n, token_ids=state.cache.tokens.tolist())
    out.write('], "metadata": ' + json.dumps(meta) + "}")
    return n


def _edges_text(quoted: list[str], src: Tensor, tgt: Tensor, w: Tensor, same: Tensor) -> str:
    """Edges as `graph_to_json` writes them, joined. Formatted directly: json.dumps per edge
    dict took most of the time of a stream of 10^8 edges. Ids come quoted, and a finite
    float's repr is its JSON (json.dumps spells the others NaN and Infinity)."""
    fmt = repr if bool(torch.isfinite(w).all()) else json.dumps
    kinds = ('"residual"' if k else '"attention"' for k in same.tolist())
    return ", ".join(
        f'{{"source": {quoted[s]}, "target": {quoted[t]}, "weight": {fmt(x)}, "kind": {k}}}'
        for s, t, x, k in zip(src.tolist(), tgt.tolist(), w.tolist(), kinds, strict=True)
    )
