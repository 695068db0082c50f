"""Algorithms over one prompt's stored graph, in Python (the graph is fetched in one query).

- strongest paths: the K paths into a target with the largest |product of edge weights|,
  exactly, by dynamic programming over the DAG in topological order (a path's magnitude is a
  product of non-negative factors, so the K best paths into a node extend the K best into its
  predecessors);
- influence: backward propagation from the targets over edges normalised by each node's
  absolute input (|w| / sum of |w| into the target), as in the attribution-graph work's pruning;
  a circuit keeps the most influential nodes up to a share of the total.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from circuitstore.query.results import Edge, Node, Path, Subgraph
from circuitstore.schema.errors import QueryError


def inputs_of(edges: Iterable[Edge]) -> dict[str, list[Edge]]:
    out: dict[str, list[Edge]] = defaultdict(list)
    for edge in edges:
        out[edge.target].append(edge)
    return out


def topological(nodes: Iterable[str], edges: Iterable[Edge]) -> list[str]:
    """Kahn's order; refuses a cycle (attribution graphs never have one)."""
    order_in = dict.fromkeys(nodes, 0)
    succ: dict[str, list[str]] = defaultdict(list)
    for e in edges:
        succ[e.source].append(e.target)
        order_in[e.target] = order_in.get(e.target, 0) + 1
        order_in.setdefault(e.source, 0)
    ready = sorted(n for n, d in order_in.items() if d == 0)
    out: list[str] = []
    while ready:
        n = ready.pop()
        out.append(n)
        for m in succ[n]:
            order_in[m] -= 1
            if order_in[m] == 0:
                ready.append(m)
    if len(out) != len(order_in):
        raise QueryError("the prompt's stored graph has a cycle; it cannot be ranked")
    return out


def ancestors(target: str, inputs: Mapping[str, list[Edge]]) -> set[str]:
    seen, stack = {target}, [target]
    while stack:
        for e in inputs.get(stack.pop(), ()):
            if e.source not in seen:
                seen.add(e.source)
                stack.append(e.source)
    return seen


def strongest_paths(
    graph: Subgraph, target: str, top: int, sources: Iterable[str] | None = None
) -> tuple[Path, ...]:
    """The `top` paths into `target` with the largest |product of weights|, from `sources` (or
    from every node without stored inputs), strongest first."""
    inputs = inputs_of(graph.edges)
    keep = ancestors(target, inputs)
    starts = set(sources) if sources is not None else {n for n in keep if not inputs.get(n)}
    starts.discard(target)
    edges = [e for e in graph.edges if e.target in keep and e.source in keep]
    best: dict[str, list[tuple[float, tuple[str, ...], tuple[float, ...]]]] = {}
    for node in topological(keep, edges):
        cands: list[tuple[float, tuple[str, ...], tuple[float, ...]]] = []
        if node in starts:
            cands.append((1.0, (node,), ()))
        for e in inputs.get(node, ()):
            for mag, nodes, weights in best.get(e.source, ()):
                cands.append((mag * abs(e.weight), (*nodes, node), (*weights, e.weight)))
        best[node] = heapq.nlargest(top, cands, key=lambda c: (c[0], c[1]))
    found = [c for c in best.get(target, []) if c[2]]
    return tuple(Path(nodes, weights) for _, nodes, weights in found[:top])


def influence(graph: Subgraph, targets: Mapping[str, float]) -> dict[str, float]:
    """Each node's influence on the weighted targets: the sum over paths of the products of
    normalised edge weights |w| / (sum of |w| into the edge's target)."""
    inputs = inputs_of(graph.edges)
    norm = {t: sum(abs(e.weight) for e in es) for t, es in inputs.items()}
    score = dict.fromkeys((n.id for n in graph.nodes), 0.0)
    score.update(targets)
    for node in reversed(topological(score, graph.edges)):
        total, here = norm.get(node, 0.0), score.get(node, 0.0)
        if here == 0.0 or total == 0.0:
            continue
        for e in inputs[node]:
            score[e.source] = score.get(e.source, 0.0) + here * abs(e.weight) / total
    return score


def circuit(
    graph: Subgraph, targets: Mapping[str, float], threshold: float
) -> tuple[Subgraph, float]:
    """The smallest set of most influential nodes holding `threshold` of the total influence,
    plus the targets, with the edges among them; also the total influence."""
    if not 0.0 < threshold <= 1.0:
        raise QueryError(f"threshold {threshold}: expected 0 < threshold <= 1")
    scores = influence(graph, targets)
    ranked = sorted(
        ((s, n) for n, s in scores.items() if n not in targets and s > 0),
        key=lambda x: (-x[0], x[1]),
    )
    total = math.fsum(s for s, _ in ranked)
    kept, running = set(targets), 0.0
    for s, n in ranked:
        if running >= threshold * total * (1 - 1e-12):
            break
        kept.add(n)
        running += s
    nodes = tuple(_with_influence(n, scores) for n in graph.nodes if n.id in kept)
    edges = tuple(e for e in graph.edges if e.source in kept and e.target in kept)
    return Subgraph(graph.prompt, nodes, edges), total


def _with_influence(node: Node, scores: Mapping[str, float]) -> Node:
    return Node(**{**node.as_row(), "influence": scores.get(node.id, 0.0)})


def induced(graph: Subgraph, ids: Iterable[str]) -> Subgraph:
    keep = set(ids)
    return Subgraph(
        graph.prompt,
        tuple(n for n in graph.nodes if n.id in keep),
        tuple(e for e in graph.edges if e.source in keep and e.target in keep),
    )
