"""Which QK traces `ingest --qk-top K` makes for a prompt: the K attention edges of its stored
(pruned) graph with the largest |weight|, each traced at the head that carries the most of it,
its query at the edge's target position and its key at the source's."""

from __future__ import annotations

import torch

from circuitstore.ingest.attribution.graph import AttributionGraph, Rows
from circuitstore.ingest.attribution.heads import head_parts
from circuitstore.ingest.attribution.state import PromptState
from circuitstore.ingest.qk.decompose import RawTrace, require_qk_tracing, trace
from circuitstore.ingest.qkstore.write import TracedEdge
from circuitstore.schema.model import EdgeKind

# The terms a stored trace keeps per part (pairs, each side's marginals).
TRACE_TERMS = 10


def edge_traces(
    state: PromptState, graph: AttributionGraph, k: int, terms: int = TRACE_TERMS
) -> list[tuple[RawTrace, TracedEdge]]:
    """The traces of the `k` strongest attention edges of `graph` (computed from `state`) that
    some head carries (edges from a constant or into a remainder have no head split), strongest
    first; fewer where the graph has fewer. Raises InputError for a family without QK tracing."""
    if k > 0:
        require_qk_tracing(state.model)
    chosen = _strongest_heads(state, graph, k)
    rows = Rows(graph.nodes, graph.tokens)
    pos = graph.nodes.pos.tolist()
    weights = graph.edges.weight.tolist()
    out = []
    for edge, layer, head in chosen:
        s, t = int(graph.edges.source[edge]), int(graph.edges.target[edge])
        raw, _, _ = trace(state, layer, head, pos[t], pos[s], terms)
        out.append((raw, TracedEdge(rows.local_id(s), rows.local_id(t), weights[edge])))
    return out


def _strongest_heads(
    state: PromptState, graph: AttributionGraph, k: int
) -> list[tuple[int, int, int]]:
    """(edge, layer, head) of the `k` strongest attention edges with a head split: candidates
    by |weight|, split by head a batch at a time until `k` have one."""
    if k < 1:
        return []
    kinds = graph.edges.kinds(graph.nodes)
    attention = [i for i, kind in enumerate(kinds) if kind == EdgeKind.ATTENTION]
    order = sorted(attention, key=lambda i: -abs(float(graph.edges.weight[i])))
    full = graph.rows if graph.rows is not None else torch.arange(len(graph.nodes))
    n_heads = state.model.n_heads
    found: list[tuple[int, int, int]] = []
    for start in range(0, len(order), 4 * k):
        batch = torch.tensor(order[start : start + 4 * k], dtype=torch.long)
        sources, targets = full[graph.edges.source[batch]], full[graph.edges.target[batch]]
        parts = head_parts(state, sources, targets)
        flat = parts.heads.flatten(1).abs()
        best = flat.argmax(1).tolist()
        for i, edge in enumerate(batch.tolist()):
            if bool(parts.valid[i]) and float(flat[i, best[i]]) > 0:
                found.append((edge, *divmod(best[i], n_heads)))
                if len(found) == k:
                    return found
    return found
