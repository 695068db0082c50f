"""One prompt's engine output as the parameter rows of the write statements (pure Python, no
database), so what lands in the store can be checked without one."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from circuitstore.ingest.aggregate import FeatureSummary, PairSums
from circuitstore.ingest.attribution import AttributionGraph
from circuitstore.ingest.attribution.graph import Code, Rows
from circuitstore.ingest.attribution.heads import StrongestHeads
from circuitstore.ingest.corpus import PromptRecord
from circuitstore.schema.model import PROMPT_OWN, PromptScore
from circuitstore.schema.names import TRANSCODER, FeatureFamily, FeatureKey, NodeId, respell


@dataclass(frozen=True)
class PromptPayload:
    """One prompt's rows for the store, written in one transaction (`StoreWriter.write_prompt`)."""

    prompt_id: str
    prompt: dict[str, Any]
    nodes: list[list[Any]]  # [label, props]
    edges: list[list[Any]]  # [source row, target row, weight, kind]
    features: list[dict[str, Any]]
    drives: list[dict[str, Any]]
    top: list[dict[str, Any]]
    qk: list[dict[str, Any]] = field(default_factory=list)  # QK traces (`ingest --qk-top`)

    @property
    def n_edges(self) -> int:
        """How many per-prompt edges the payload writes."""
        return len(self.edges)

    def write_bytes(self) -> int:
        """About how much transaction memory Neo4j needs to write this prompt in one
        transaction: per row, what a GPT-2-scale prompt took on Neo4j 5.26 (measured with
        `benchmarks/bench_write_memory.py`: graph nodes 7.2 KiB, ATTR edges 2.8, feature
        statistics 5.3, top examples 3.8, DRIVES 4.9), rounded up; a QK trace (a node, a few
        lists and about 20 links) is put at 20 KiB, unmeasured."""
        kib = (
            7.5 * len(self.nodes)
            + 3.0 * len(self.edges)
            + 5.5 * len(self.features)
            + 4.0 * len(self.top)
            + 5.0 * len(self.drives)
            + 20.0 * len(self.qk)
        )
        return int(kib * 1024)


def build_payload(
    record: PromptRecord,
    graph: AttributionGraph,
    summary: FeatureSummary,
    drives: PairSums,
    heads: StrongestHeads | None = None,
    *,
    transcoder_set: str,
    run: str,
    d_tc: int,
    truncated_from: int | None = None,
    family: FeatureFamily = TRANSCODER,
) -> PromptPayload:
    """One prompt's engine output as the parameter rows of the write statements, its nodes'
    ids spelled in the set's feature `family`."""
    prompt_id = NodeId.prompt(transcoder_set, record.key)
    props = _prompt_props(record, graph, prompt_id, transcoder_set, run)
    if truncated_from is not None:
        # The stored graph covers the kept tokens only; the text stays whole, flagged.
        props.update(truncated=True, nTokensBeforeTruncation=truncated_from)
    return PromptPayload(
        prompt_id=prompt_id,
        prompt=props,
        nodes=_node_rows(graph, prompt_id, transcoder_set, family),
        edges=_edge_rows(graph, heads),
        features=_feature_rows(summary, transcoder_set),
        drives=_drives_rows(drives, transcoder_set, d_tc),
        top=_top_rows(summary, transcoder_set),
    )


def _prompt_props(
    record: PromptRecord, graph: AttributionGraph, prompt_id: str, tset: str, run: str
) -> dict[str, Any]:
    props: dict[str, Any] = {
        (f"x_{k}" if k in PROMPT_OWN else k): v for k, v in record.extra.items()
    }
    props.update(
        id=prompt_id,
        key=record.key,
        transcoderSet=tset,
        text=record.text,
        tokens=list(graph.tokens),
        tokenIds=list(graph.token_ids),
        nTokens=len(graph.tokens),
        run=run,
        line=record.line,
        mode=str(graph.metadata.get("mode")),
    )
    props.update(_scores(graph))
    return props


def _scores(graph: AttributionGraph) -> dict[str, float]:
    """How much of each kind of target's input the stored (pruned) edges carry, on average."""
    acc = graph.accounting
    if acc is None:
        return {"logitInputExplained": 1.0, "featureInputExplained": 1.0}
    kinds = graph.nodes.kind
    # The share of the total feature influence on the chosen logits that the stored features
    # carry, and the share left unexpanded (see attribution.prune).
    meta = graph.metadata
    out = {
        "keptInfluence": float(meta.get("kept_influence", 1.0)),  # type: ignore[arg-type]
        "unexpandedInfluence": float(meta.get("unexpanded_influence", 0.0)),  # type: ignore[arg-type]
    }
    # circuit-tracer's scores of the whole graph and of the stored one (see attribution.scores).
    for score in PromptScore:
        if (key := score.field + "_score") in meta:
            out[score.value] = float(meta[key])  # type: ignore[arg-type]
    for name, code in (
        ("logitInputExplained", Code.LOGIT),
        ("featureInputExplained", Code.FEATURE),
    ):
        mask = kinds == code
        out[name] = float(acc.kept_abs_fraction[mask].mean()) if bool(mask.any()) else 1.0
    return out


def _node_rows(
    graph: AttributionGraph, prompt_id: str, tset: str, family: FeatureFamily
) -> list[list[Any]]:
    """[label, props] per node: the common properties, then those its form adds (the kind
    table's `Form.props`). Local ids in `family`'s spelling (the engine writes TRANSCODER's)."""
    acc = graph.accounting
    rows = Rows(graph.nodes, graph.tokens, tset)
    explained = acc.kept_abs_fraction.tolist() if acc is not None else None
    kept = acc.kept_sum.tolist() if acc is not None else None
    out = []
    for i in range(len(graph.nodes)):
        kind, local = rows.kind(i), respell(rows.local_id(i), family)
        props: dict[str, Any] = {
            "id": NodeId.qualified(prompt_id, local),
            "localId": local,
            "prompt": prompt_id,
            "kind": kind.value,
            "pos": rows.pos[i],
        }
        if rows.layer[i] >= 0:
            props["layer"] = rows.layer[i]
        props.update(rows.fields(i, rows.form(i).props))
        if explained is not None:
            props["inputExplained"] = explained[i]
            props["keptInput"] = kept[i]  # type: ignore[index]
        out.append([kind.label.value, props])
    return out


def _edge_rows(graph: AttributionGraph, heads: StrongestHeads | None) -> list[list[Any]]:
    """[source, target, weight, kind], and where the edge is split by head: its strongest
    heads' numbers and weights (None where none is named), the other heads' sum and the
    residual part (None where 0: off its target's position)."""
    edges = graph.edges
    kinds = [k.value for k in edges.kinds(graph.nodes)]
    rows = [
        [s, t, w, k]
        for s, t, w, k in zip(
            edges.source.tolist(), edges.target.tolist(), edges.weight.tolist(), kinds, strict=True
        )
    ]
    if heads is not None:
        for row, split in zip(rows, heads.rows(), strict=True):
            if split is not None:
                # An edge split with no head named (a constant's, or all in the residual part)
                # stores no lists: the bulk importer cannot write an empty one, and one store
                # must not depend on the path that built it. `otherHeads` marks the split.
                names, weights, other, residual = split
                row.extend([names or None, weights or None, other, residual or None])
    return rows


def _feature_ids(layer: torch.Tensor, index: torch.Tensor, tset: str) -> list[str]:
    return [
        FeatureKey(tset, lyr, idx).id
        for lyr, idx in zip(layer.tolist(), index.tolist(), strict=True)
    ]


def _feature_rows(summary: FeatureSummary, tset: str) -> list[dict[str, Any]]:
    ids = _feature_ids(summary.layer, summary.index, tset)
    rows = [
        {"id": fid, "n": n, "sum": s, "max": m}
        for fid, n, s, m in zip(
            ids, summary.n.tolist(), summary.sum.tolist(), summary.max.tolist(), strict=True
        )
    ]
    return sorted(rows, key=lambda r: r["id"])


def _top_rows(summary: FeatureSummary, tset: str) -> list[dict[str, Any]]:
    ids = _feature_ids(summary.layer, summary.index, tset)
    rows = [
        {"id": fid, "activation": m, "pos": p}
        for fid, m, p in zip(ids, summary.max.tolist(), summary.argmax_pos.tolist(), strict=True)
    ]
    return sorted(rows, key=lambda r: r["id"])


def _drives_rows(drives: PairSums, tset: str, d_tc: int) -> list[dict[str, Any]]:
    src = _feature_ids(drives.source // d_tc, drives.source % d_tc, tset)
    tgt = _feature_ids(drives.target // d_tc, drives.target % d_tc, tset)
    rows = [
        {"s": s, "t": t, "n": n, "sum": w, "sumAbs": a, "maxAbs": m}
        for s, t, n, w, a, m in zip(
            src,
            tgt,
            drives.n.tolist(),
            drives.sum.tolist(),
            drives.sum_abs.tolist(),
            drives.max_abs.tolist(),
            strict=True,
        )
    ]
    return sorted(rows, key=lambda r: (r["s"], r["t"]))
