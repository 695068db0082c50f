"""Algorithms over one prompt's stored graph, in Python (the graph is fetched in one query).

- strongest paths: the K paths into a target with the largest |product of edge weights|,
  exactly, by dynamic programming over the DAG in topological order (a path's magnitude is a
  product of non-negative factors, so the K best paths into a node extend the K best into its
  predecessors);
- beam paths: the original transcoder work's greedy search (transcoder_circuits), which ranks
  paths by what their first node contributes to the target through them;
- influence: backward propagation from the targets over edges normalised by each node's
  absolute input (|w| / sum of |w| into the target), as in the attribution-graph work's pruning;
  a circuit keeps the most influential nodes up to a share of the total.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from circuitstore.query.paths.records import Path
from circuitstore.query.subgraph import Edge, Node, Subgraph
from circuitstore.schema.errors import QueryError


def inputs_of(edges: Iterable[Edge]) -> dict[str, list[Edge]]:
    """Each node's incoming edges."""
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
    """Every node with a path into `target` (and `target`)."""
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


def beam_paths(graph: Subgraph, target: str, width: int, depth: int) -> tuple[Path, ...]:
    """The greedy beam search of transcoder_circuits (Dunefsky et al. 2024): from `target`,
    extend every current path by its `width` strongest incoming contributions, keep the `width`
    paths whose last contribution is largest in magnitude, and repeat `depth` times. Every path
    kept at every step is returned, largest contribution first.

    A path's contribution is what its first node gives the target through it. Direct effects
    compose linearly through an active feature (an edge into it is a share of its activation),
    so extending a path whose last node is t by an edge s -> t of weight w gives
    contribution x w / activation(t); a one-edge path's contribution is its weight."""
    inputs = inputs_of(graph.edges)
    activation = {n.id: n.activation for n in graph.nodes}
    beam: list[Path] = [Path((target,), ())]
    kept: list[Path] = []
    for _ in range(depth):
        grown: list[Path] = []
        for path in beam:
            grown += heapq.nlargest(width, _extensions(path, inputs, activation), key=_size)
        beam = heapq.nlargest(width, grown, key=_size)
        kept += beam
        if not beam:
            break
    return tuple(sorted(kept, key=lambda p: (-_size(p), p.nodes)))


def _extensions(
    path: Path, inputs: Mapping[str, list[Edge]], activation: Mapping[str, float | None]
) -> Iterable[Path]:
    head = path.nodes[0]
    if path.weights:  # pulled back through `head`: its input edges are shares of its activation
        act = activation.get(head)
        if not act:
            return
        scale = (path.contribution or 0.0) / act
    else:
        scale = 1.0
    for e in inputs.get(head, ()):
        if e.source not in path.nodes:
            yield Path((e.source, *path.nodes), (e.weight, *path.weights), scale * e.weight)


def _size(path: Path) -> float:
    return abs(path.contribution or 0.0)


def propagated(graph: Subgraph, changes: Mapping[str, float]) -> dict[str, float]:
    """What the stored graph predicts when the nodes in `changes` change their activations by
    those amounts: every node's change through all stored paths. An edge s -> t carries the
    share w / activation(s) of each unit of change of s (direct effects are linear in the
    source's activation); a feature passes its whole input change on, so the prediction is
    the first-order one of the replacement model with attention and LayerNorm frozen."""
    inputs = inputs_of(graph.edges)
    activation = {n.id: n.activation for n in graph.nodes}
    out = dict.fromkeys((n.id for n in graph.nodes), 0.0)
    for node in topological(out, graph.edges):
        total = changes.get(node, 0.0)
        for e in inputs.get(node, ()):
            act = activation.get(e.source)
            if out.get(e.source) and act:
                total += e.weight * out[e.source] / act
        out[node] = total
    return out


def sensitivity(graph: Subgraph, targets: Mapping[str, float]) -> dict[str, float]:
    """The stored graph's derivative of the weighted sum of `targets` with respect to each
    node's activation: the sum over paths of the products of edge shares w / activation(source)
    (divided once more by the node's own activation, which starts each path). The change
    `propagated` predicts for the targets when one node's activation changes by d is
    d x sensitivity; this gives it for every node in one backward pass."""
    activation = {n.id: n.activation for n in graph.nodes}
    out = dict.fromkeys((n.id for n in graph.nodes), 0.0)
    out.update(targets)
    succ: dict[str, list[Edge]] = defaultdict(list)
    for e in graph.edges:
        succ[e.source].append(e)
    for node in reversed(topological(out, graph.edges)):
        act = activation.get(node)
        if node in targets or not act:
            continue
        out[node] = sum(out[e.target] * e.weight for e in succ[node]) / act
    return out


def influence(
    graph: Subgraph, targets: Mapping[str, float], norm: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Each node's influence on the weighted targets: the sum over paths of the products of
    normalised edge weights |w| / (sum of |w| into the edge's target), or |w| / `norm` of the
    target where given (its full |input|, stored edges or not: `scores.subgraph_scores`)."""
    inputs = inputs_of(graph.edges)
    if norm is None:
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
    """The part of `graph` on the nodes `ids`, with the edges among them."""
    keep = set(ids)
    return Subgraph(
        graph.prompt,
        tuple(n for n in graph.nodes if n.id in keep),
        tuple(e for e in graph.edges if e.source in keep and e.target in keep),
    )
