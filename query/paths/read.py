"""The paths question, asked of a store: one prompt's stored graph read whole (its nodes made
readable: tokens and labels), the nodes a name picks out of it, the strongest paths into a
target and the circuit that carries most of the influence on it."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import replace
from typing import Any, Literal

from circuitstore.query import graphs, scores
from circuitstore.query.labels.search import feature_labels
from circuitstore.query.paths import cypher
from circuitstore.query.paths.records import CircuitResult, PathsResult, SubgraphScores
from circuitstore.query.prompts.read import prompt_info
from circuitstore.query.prompts.records import PromptInfo
from circuitstore.query.reader import StoreReader, check_choice, check_top
from circuitstore.query.subgraph import Edge, Node, Subgraph
from circuitstore.schema.errors import NotFoundError, QueryError
from circuitstore.schema.names import (
    TRANSCODER,
    FeatureRef,
    LogitRef,
    NodeKind,
    NodeRef,
    parse_node,
    respell,
    shown,
)

# The beam search's width and depth: beyond these it is the exact ranking's job.
MAX_BEAM = 100


def prompt_graph(store: StoreReader, prompt: str) -> tuple[PromptInfo, Subgraph]:
    """One prompt's whole stored graph (nodes by local id, each with the token a person reads
    it by and its feature's label)."""
    info = prompt_info(store, prompt)
    rows = store.values(cypher.PROMPT_GRAPH, prompt=info.id)
    nodes = readable(store, info, (_node(r) for r in rows))
    edges = tuple(Edge(s, r["id"], w, k) for r in rows for s, w, k in r["inputs"])
    return info, Subgraph(info.key, nodes, edges)


def _node(r: dict[str, Any]) -> Node:
    return Node(**{k: v for k, v in r.items() if k != "inputs"})


def readable(store: StoreReader, info: PromptInfo, nodes: Iterable[Node]) -> tuple[Node, ...]:
    """`nodes` with their tokens (a logit's own token, else the prompt's token at the node's
    position) and their features' labels."""
    nodes = tuple(nodes)
    features = [
        (n.layer, n.feature)
        for n in nodes
        if n.kind == NodeKind.FEATURE and n.layer is not None and n.feature is not None
    ]
    labels = feature_labels(store, info.transcoder_set, features)
    family = store.tset(info.transcoder_set).family
    out = []
    for n in nodes:
        if n.kind == NodeKind.LOGIT:
            token = n.token if n.token is not None else info.text_of(n.token_id)
        else:
            token = n.token if n.token is not None else info.token_at(n.pos)
        label = None
        if n.kind == NodeKind.FEATURE and n.layer is not None and n.feature is not None:
            label = labels.get(family.name(n.layer, n.feature))
        out.append(replace(n, token=token, label=label))
    return tuple(out)


def paths(
    store: StoreReader,
    prompt: str,
    to: str,
    source: str | None,
    top: int,
    method: Literal["exact", "beam"],
    beam_width: int,
    depth: int,
) -> PathsResult:
    """The `top` strongest paths into `to` (see `CircuitStore.paths`)."""
    check_top(top)
    check_choice("method", method, ("exact", "beam"))
    for what, value in (("beam width", beam_width), ("depth", depth)):
        if not 1 <= value <= MAX_BEAM:
            raise QueryError(f"{what} {value}: expected 1..{MAX_BEAM}")
    info, graph = prompt_graph(store, prompt)
    target = one_node(store, graph, parse_node(to), info, "target")
    sources = None if source is None else find_nodes(store, graph, parse_node(source), info)
    if method == "exact":
        found = graphs.strongest_paths(graph, target, top, sources)
    else:
        beam = graphs.beam_paths(graph, target, beam_width, depth)
        found = tuple(p for p in beam if sources is None or p.nodes[0] in sources)[:top]
    sub = graphs.induced(graph, {n for p in found for n in p.nodes})
    on_paths = {(a, b) for p in found for a, b in zip(p.nodes, p.nodes[1:], strict=False)}
    edges = tuple(e for e in sub.edges if (e.source, e.target) in on_paths)
    return PathsResult(info.key, target, found, Subgraph(sub.prompt, sub.nodes, edges))


def circuit(store: StoreReader, prompt: str, threshold: float, to: str) -> CircuitResult:
    """The nodes carrying `threshold` of the influence on the target."""
    info, graph = prompt_graph(store, prompt)
    target = one_node(store, graph, parse_node(to), info, "target")
    sub, total = graphs.circuit(graph, {target: 1.0}, threshold)
    return CircuitResult(info.key, (target,), threshold, sub, total)


def subgraph_scores(store: StoreReader, prompt: str, pinned: Sequence[str]) -> SubgraphScores:
    """The scores of the subgraph that keeps the `pinned` features of the prompt's stored graph
    (`scores.subgraph_scores`), each target normalised by its full |input|."""
    info, graph = prompt_graph(store, prompt)
    ids = pinned_nodes(graph, pinned, info)
    rows = store.rows(cypher.INPUT_EXPLAINED, prompt=info.id)
    full = scores.full_inputs(graph, {r["id"]: r["explained"] for r in rows})
    return scores.subgraph_scores(graph, ids, full)


def pinned_nodes(graph: Subgraph, pinned: Iterable[str], info: PromptInfo) -> tuple[str, ...]:
    """`pinned`, local ids of the prompt's stored graph (feature names in either family's
    spelling), once each in the order given, as the graph holds them; refuses a malformed id
    and one the graph lacks."""
    held = {respell(n.id, TRANSCODER): n.id for n in graph.nodes}
    out = []
    for local in (p.strip() for p in pinned):
        found = held.get(respell(local, TRANSCODER))
        if found is not None:
            out.append(found)
            continue
        try:
            parse_node(local)  # a malformed id: the message says what ids look like
        except QueryError as err:
            raise QueryError(f"{err} (pinned in prompt {info.key})") from None
        raise NotFoundError(f"node {shown(local)} is not in the stored graph of prompt {info.key}")
    return tuple(dict.fromkeys(out))


def one_node(store: StoreReader, graph: Subgraph, ref: NodeRef, info: PromptInfo, role: str) -> str:
    """The one node of the graph `ref` names; refuses a feature at several positions."""
    ids = find_nodes(store, graph, ref, info)
    if len(ids) > 1:
        raise QueryError(
            f"{role} {ref.name} occurs at several positions in prompt {info.key} "
            f"({', '.join(ids)}): add @<pos>"
        )
    return ids[0]


def find_nodes(store: StoreReader, graph: Subgraph, ref: NodeRef, info: PromptInfo) -> list[str]:
    """The ids of the nodes of a prompt's stored graph that `ref` names (a feature without a
    position names all its occurrences; any family's spelling names the set's); refuses a
    name the graph lacks."""
    if isinstance(ref, FeatureRef):
        ref = store.resolve(ref.name, info.transcoder_set)[0]  # in the set's spelling
    ids = [n.id for n in graph.nodes if _matches(n, ref)]
    if isinstance(ref, LogitRef) and ref.token_id is None:
        logits = [n for n in graph.nodes if n.kind == NodeKind.LOGIT]
        ids = [max(logits, key=lambda n: n.value or -math.inf).id] if logits else []
    if not ids:
        raise NotFoundError(f"{ref.name} is not in the stored graph of prompt {info.key}")
    return sorted(ids)


def _matches(node: Node, ref: NodeRef) -> bool:
    if isinstance(ref, FeatureRef):
        same = node.kind == NodeKind.FEATURE and (node.layer, node.feature) == (
            ref.layer,
            ref.index,
        )
        return same and (ref.pos is None or node.pos == ref.pos)
    if isinstance(ref, LogitRef):
        return node.kind == NodeKind.LOGIT and (node.token_id, node.pos) == (ref.token_id, ref.pos)
    # Another node by its local id, a feature in it (`rem[mlp1tc[3]@4]`) in either spelling.
    return respell(node.id, TRANSCODER) == respell(ref.local_id, TRANSCODER)
