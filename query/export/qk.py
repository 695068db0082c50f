"""QK traces in the exported graph: Neuronpedia's `qk_tracing_results` on the node whose input
a traced head carries, and `qk_only_nodes` for the contributors the exported nodes do not show.

A trace made for a stored edge (`ingest --qk-top`, `qk --edge`) goes on that edge's target: the
head's score at (the target's position, the source's) decides how much of the source reaches
it. A node keeps one trace (the viewers show one): that of its strongest traced edge. Traces
made for no edge name no node, and are left out.

Contributor ids are the viewers' node ids where the exported graph shows the contributor as a
node. Every other contributor is described in `qk_only_nodes`: a feature, token or MLP error
the stored graph pruned away under the id the viewers would give it; a constant or lumped
remainder (which the export folds into error nodes, and which the viewers have no type for)
and a head's own q/k bias and remainder under its local id."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from circuitstore.query.prompts.records import PromptInfo
from circuitstore.query.qk.stored import TracedEdge
from circuitstore.query.subgraph import Node
from circuitstore.schema.names import (
    KINDS,
    FeatureRef,
    NodeId,
    NodeKind,
    QKPart,
    parse_qk_contributor,
)

# A node's viewer fields (node_id, feature, layer, feature_type, clerp), from the exporter.
Describe = Callable[[Node], dict[str, Any]]
_LAYER = re.compile(r"^mlp(\d+)err@")
_POS = re.compile(r"@(\d+)$")


def qk_tracing(
    traced: Sequence[TracedEdge], ids: dict[str, str], info: PromptInfo, describe: Describe
) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """Per exported node id, its `qk_tracing_results`; and the `qk_only_nodes` they need.
    `ids` maps the exported nodes' local ids to their node ids."""
    best: dict[str, TracedEdge] = {}
    for t in traced:
        if t.target is None or t.target not in ids:
            continue
        held = best.get(t.target)
        if held is None or abs(t.weight or 0.0) > abs(held.weight or 0.0):
            best[t.target] = t
    only: dict[str, dict[str, Any]] = {}

    def named(local: str | None) -> str:
        if local is None:  # a stored term always names its contributors
            raise ValueError("a QK term without its contributor")
        if local in ids:
            return ids[local]
        entry = only_node(local, info, describe)
        return str(only.setdefault(entry["node_id"], entry)["node_id"])

    results = {}
    for target, t in sorted(best.items()):
        trace = t.trace
        results[ids[target]] = {
            "pair_wise_contributors": [
                [named(p.query), named(p.key), p.value] for p in trace.pairs
            ],
            "top_q_marginal_contributors": [[named(c.query), c.value] for c in trace.query_side],
            "top_k_marginal_contributors": [[named(c.key), c.value] for c in trace.key_side],
        }
    return results, only


def only_node(local: str, info: PromptInfo, describe: Describe) -> dict[str, Any]:
    """A contributor outside the exported nodes, as a `qk_only_nodes` entry."""
    ref = parse_qk_contributor(local)
    if isinstance(ref, QKPart):
        return _plain(local, f"qk {ref.what}", ref.layer, ref.pos)
    match = _POS.search(local)
    pos = int(match[1]) if match else 0
    node = _node(local, ref, pos, info)
    if node is None:
        return _plain(local, _kind_name(local), None, pos)
    fields = describe(node)
    return {**fields, "jsNodeId": fields["node_id"], "ctx_idx": pos, "activation": None}


def _node(local: str, ref: Any, pos: int, info: PromptInfo) -> Node | None:
    """The contributor as a node the viewers have a type for, None where they have none."""
    if isinstance(ref, FeatureRef):
        return Node(local, NodeKind.FEATURE, layer=ref.layer, pos=pos, feature=ref.index)
    token = info.tokens[pos] if pos < len(info.tokens) else None
    if re.fullmatch(KINDS[NodeKind.EMBEDDING].local_id, local):
        token_id = info.token_ids[pos] if pos < len(info.token_ids) else None
        return Node(local, NodeKind.EMBEDDING, pos=pos, token=token, token_id=token_id)
    layer = _LAYER.match(local)
    if layer is not None and not NodeId.is_remainder(local):
        return Node(local, NodeKind.ERROR, layer=int(layer[1]), pos=pos)
    return None


def _kind_name(local: str) -> str:
    if NodeId.is_remainder(local):
        return "remainder"
    kinds = [k for k, spec in KINDS.items() if re.fullmatch(spec.local_id, local)]
    return kinds[0] if kinds else "other"


def _plain(local: str, kind: str, layer: int | None, pos: int) -> dict[str, Any]:
    """An entry for what the viewers have no node type for, under its local id."""
    return {
        "node_id": local,
        "jsNodeId": local,
        "feature": None,
        "layer": "" if layer is None else str(layer),
        "ctx_idx": pos,
        "feature_type": kind,
        "clerp": local,
        "activation": None,
    }
