"""circuit-tracer's replacement and completeness scores of part of one prompt's stored graph, in
Python, as the ingest engine scores the stored graph (`ingest/attribution/scores.py`,
`edge_scores`): the same definition on fewer feature nodes.

A subgraph keeps the pinned feature nodes and every node that is not a feature (embeddings,
error terms and lumped mode's remainders, biases, logits), with the stored edges among them.
Each edge's share is |w| / its target's *full* |input| (stored edges or not); what the kept
edges leave out of a target's full input counts as error at that target. The seeds are the
logits' probabilities renormalised over the stored logits (the engine's seeds: the stored
logits are the chosen ones, all at the last position). Then, with I each node's influence:

- replacement = Σ I over embeddings / (Σ I over embeddings + Σ I over error nodes
  + Σ I x left-out share);
- completeness = Σ (1 - error share - left-out share) x I / Σ I.

Biases are neither tokens nor errors: they count as explained input.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping

from circuitstore.query import graphs
from circuitstore.query.paths.records import SubgraphScores
from circuitstore.query.subgraph import Node, Subgraph
from circuitstore.schema.names import NodeKind


def logit_seeds(nodes: Iterable[Node]) -> dict[str, float]:
    """The softmax over the logit nodes' values (a value of None counts as 0), by id."""
    values = {n.id: n.value or 0.0 for n in nodes if n.kind == NodeKind.LOGIT}
    if not values:
        return {}
    peak = max(values.values())
    exp = {k: math.exp(v - peak) for k, v in values.items()}
    total = math.fsum(exp.values())
    return {k: v / total for k, v in exp.items()}


def full_inputs(graph: Subgraph, explained: Mapping[str, float | None]) -> dict[str, float]:
    """Each target's full |input|, recovered from its stored edges: their Σ|w| divided by the
    share of its |input| they explain (`explained`, the nodes' `inputExplained`). Where that is
    unknown (None, NaN: a graph stored unpruned) the stored sum is the full input. A target whose
    stored edges explain none of its input (0) has input the graph left out entirely: infinity,
    so that every edge's share is 0 and all of it counts as left out, as in the engine."""
    stored: dict[str, float] = defaultdict(float)
    for e in graph.edges:
        stored[e.target] += abs(e.weight)
    out: dict[str, float] = {}
    for node in graph.nodes:
        share, total = explained.get(node.id), stored.get(node.id, 0.0)
        if share is None or math.isnan(share):
            if total > 0:
                out[node.id] = total
        elif share > 0:
            out[node.id] = total / share
        else:
            out[node.id] = math.inf
    return out


def subgraph_scores(
    graph: Subgraph, pinned: Iterable[str], full_input: Mapping[str, float]
) -> SubgraphScores:
    """The scores of the subgraph of `graph` that keeps the `pinned` features (see the module's
    docstring); `full_input` is each target's full |input| (`full_inputs`)."""
    pinned = tuple(dict.fromkeys(pinned))
    keep = {n.id for n in graph.nodes if n.kind != NodeKind.FEATURE} | set(pinned)
    sub = graphs.induced(graph, keep)
    norm = {n: v for n, v in full_input.items() if n in keep and v > 0}
    influence = graphs.influence(sub, logit_seeds(sub.nodes), norm)
    kind = {n.id: n.kind for n in sub.nodes}
    given: dict[str, float] = defaultdict(float)
    from_error: dict[str, float] = defaultdict(float)
    for e in sub.edges:
        share = abs(e.weight) / norm.get(e.target, math.inf)  # no known input: a zero edge
        given[e.target] += share
        if kind[e.source] == NodeKind.ERROR:
            from_error[e.target] += share
    left_out = {n: max(1.0 - given[n], 0.0) for n in norm}
    tokens = math.fsum(i for n, i in influence.items() if kind[n] == NodeKind.EMBEDDING)
    errors = math.fsum(
        [i for n, i in influence.items() if kind[n] == NodeKind.ERROR]
        + [influence[n] * share for n, share in left_out.items()]
    )
    explained = math.fsum(
        (1.0 - from_error.get(n, 0.0) - left_out.get(n, 0.0)) * i for n, i in influence.items()
    )
    total = math.fsum(influence.values())
    return SubgraphScores(
        prompt=graph.prompt,
        pinned=pinned,
        replacement=tokens / (tokens + errors) if tokens + errors > 0 else 1.0,
        completeness=explained / total if total > 0 else 1.0,
    )
