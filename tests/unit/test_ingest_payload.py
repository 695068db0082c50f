"""What the ingest job sends to Neo4j, checked without one: the write statements (closed labels,
parameters only) and one prompt's payload built from a real graph of the tiny model, against
the one grammar of names and node kinds in `schema.names`."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch

from circuitstore.ingest import cypher as ci
from circuitstore.ingest.aggregate import DrivesSink, feature_summary
from circuitstore.ingest.attribution import AttributionConfig, EdgeChunk, NodeTable
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.heads import strongest_heads
from circuitstore.ingest.corpus import PromptRecord
from circuitstore.ingest.payload import PromptPayload, build_payload
from circuitstore.schema.model import EdgeKind, Label, RelType
from circuitstore.schema.names import (
    CLT,
    KINDS,
    TRANSCODER,
    FeatureFamily,
    FeatureRef,
    LocalRef,
    LogitRef,
    NodeId,
    NodeKind,
    parse_node,
    respell,
)

from .conftest import Tiny

STATEMENTS = {
    name: value
    for name, value in vars(ci).items()
    if (name.isupper() and isinstance(value, str) and "\n" in value) or name == "CREATE_PROMPT"
}
KNOWN = {str(x) for x in Label} | {str(x) for x in RelType}
COMMON = {"id", "localId", "prompt", "kind", "pos", "layer", "inputExplained", "keptInput"}


def test_every_write_statement_is_checked() -> None:
    assert {"CREATE_GRAPH", "MERGE_DRIVES", "UPDATE_TOP_EXAMPLES", "CREATE_PROMPT"} <= set(
        STATEMENTS
    )


@pytest.mark.parametrize("name", sorted(STATEMENTS))
def test_statements_use_the_models_labels_and_parameters(name: str) -> None:
    statement = STATEMENTS[name]
    for label in re.findall(r"[:(]\s*:?([A-Z][A-Za-z_]+)\b", statement):
        if label not in {"WHERE", "RETURN", "MATCH", "CALL", "WITH", "UNWIND", "DELETE"}:
            assert label in KNOWN, (name, label)
    assert "'" not in statement
    assert '"' not in statement
    assert "$" in statement


@pytest.fixture(scope="module")
def built(tiny: Tiny) -> Callable[[FeatureFamily], PromptPayload]:
    """One lumped prompt's graph of the tiny model, as the payload of a set of each family."""
    engine, d_tc = tiny.engine, tiny.transcoders.d_tc
    record = PromptRecord("p1", "When Mary and John went", 3, {"topic": "ioi", "text": "dup"})
    config = AttributionConfig(mode="lumped")
    with torch.no_grad():
        state = engine.prepare(record.text, config)
        drives = DrivesSink(state.nodes, state.n_features, d_tc, tiny.model.n_layers, 0.01)
        graph = engine.graph(state, config, sinks=[drives])
        heads = strongest_heads(state, graph, 3)
    summary, sums = feature_summary(state.nodes, d_tc), drives.result()

    def build(family: FeatureFamily) -> PromptPayload:
        return build_payload(
            record,
            graph,
            summary,
            sums,
            heads,
            transcoder_set="tiny-0123",
            run="r",
            d_tc=d_tc,
            truncated_from=40,
            family=family,
        )

    return build


@pytest.fixture(scope="module")
def payload(built: Callable[[FeatureFamily], PromptPayload]) -> PromptPayload:
    return built(TRANSCODER)


def test_a_cross_layer_sets_payload_spells_its_features_clt(
    built: Callable[[FeatureFamily], PromptPayload], payload: PromptPayload
) -> None:
    """The same graph in a CLT set: its features' ids (alone and in a remainder's) spelled
    `clt<layer>[<index>]`, everything else (other ids, properties, edges, aggregates) as for a
    per-layer set."""
    clt = built(CLT)
    assert clt.edges == payload.edges
    assert (clt.features, clt.drives, clt.top) == (payload.features, payload.drives, payload.top)
    renamed = 0
    for (label, a), (label_clt, b) in zip(payload.nodes, clt.nodes, strict=True):
        assert label == label_clt
        assert b["localId"] == respell(a["localId"], CLT)
        assert b["id"] == NodeId.qualified(clt.prompt_id, b["localId"])
        rest = [{k: v for k, v in x.items() if k not in ("id", "localId")} for x in (a, b)]
        assert repr(rest[0]) == repr(rest[1])  # repr: a NaN (no kept input) equals itself
        if a["kind"] == NodeKind.FEATURE:
            assert b["localId"] == CLT.name(a["layer"], a["feature"], a["pos"])
            assert parse_node(b["localId"]) == parse_node(a["localId"])
        renamed += a["localId"] != b["localId"]
        if a["kind"] != NodeKind.FEATURE and not a["localId"].startswith("rem[mlp"):
            assert a["localId"] == b["localId"]
    assert renamed > 0
    assert any(b["localId"].startswith("rem[clt") for _, b in clt.nodes)  # a feature's remainder


def test_prompt_properties(payload: PromptPayload) -> None:
    props = payload.prompt
    assert payload.prompt_id == NodeId.prompt("tiny-0123", "p1") == props["id"]
    assert props["key"] == "p1"
    assert props["text"] == "When Mary and John went"  # the corpus's own "text" is the prompt
    assert props["x_text"] == "dup"  # a corpus field named like one of ours keeps an x_ prefix
    assert props["topic"] == "ioi"
    assert (props["truncated"], props["nTokensBeforeTruncation"]) == (True, 40)
    assert props["nTokens"] == len(props["tokens"]) == len(props["tokenIds"])


def test_nodes_follow_the_kind_table(payload: PromptPayload) -> None:
    seen: dict[NodeKind, set[str]] = {}
    for label, props in payload.nodes:
        kind = NodeKind(props["kind"])
        assert label == KINDS[kind].label
        assert props["id"] == NodeId.qualified(payload.prompt_id, props["localId"])
        assert set(props) <= COMMON | set(KINDS[kind].props), (kind, set(props) - COMMON)
        seen.setdefault(kind, set()).update(props)
        ref = parse_node(props["localId"])  # every stored local id is in the grammar
        expected = {NodeKind.FEATURE: FeatureRef, NodeKind.LOGIT: LogitRef}.get(kind, LocalRef)
        assert isinstance(ref, expected), props["localId"]
    assert set(seen) == set(NodeKind)
    for kind, keys in seen.items():  # and every property the table names is written
        assert set(KINDS[kind].props) <= keys, (kind, set(KINDS[kind].props) - keys)


def test_edges_refer_to_rows_of_the_same_payload(payload: PromptPayload) -> None:
    n = len(payload.nodes)
    assert payload.n_edges == len(payload.edges) > 0
    for source, target, weight, kind, *_ in payload.edges:
        assert 0 <= source < n
        assert 0 <= target < n
        assert source != target
        assert isinstance(weight, float)
        assert kind in {k.value for k in EdgeKind}


def test_edges_carry_their_strongest_heads(payload: PromptPayload) -> None:
    """Lumped edges: up to 3 heads (by number), strongest first, plus the other heads and the residual
    part add up to the weight; the residual part is stored only at the target's position."""
    pos = [props["pos"] for _, props in payload.nodes]
    split = [e for e in payload.edges if len(e) > 4]
    assert len(split) > 0.5 * len(payload.edges)
    for source, target, weight, _kind, named, named_weights, other, residual in split:
        assert (named is None) == (named_weights is None)  # no empty lists: absent when none
        assert named != []
        assert other is not None  # otherHeads marks a split edge
        heads, weights = named or [], named_weights or []
        assert all(0 <= h < 3 * 4 for h in heads)  # layer * n_heads + head, tiny: 3 x 4
        assert len(set(heads)) == len(heads) == len(weights) <= 3
        assert [abs(w) for w in weights] == sorted(map(abs, weights), reverse=True)
        if pos[source] != pos[target]:
            assert residual is None
        assert sum(weights) + other + (residual or 0.0) == pytest.approx(weight, abs=1e-5)
    assert any(e[7] is not None for e in split)
    unsplit = {payload.nodes[e[0]][1]["kind"] for e in payload.edges if len(e) == 4}
    assert unsplit <= {"bias", "error"}  # a target's constant, a remainder


def test_aggregate_rows(payload: PromptPayload) -> None:
    assert payload.drives == sorted(payload.drives, key=lambda r: (r["s"], r["t"]))
    for row in payload.drives:
        assert row["n"] >= 1
        assert row["sumAbs"] >= abs(row["sum"]) - 1e-9
        assert 0 < row["maxAbs"] <= row["sumAbs"] + 1e-9
        assert row["s"].startswith("tiny-0123/")
        assert row["t"].startswith("tiny-0123/")
    ids = [r["id"] for r in payload.features]
    assert ids == sorted(ids) == sorted({r["id"] for r in payload.top})
    for row in payload.features:
        assert row["n"] >= 1
        assert row["max"] > 0


@pytest.mark.parametrize("min_fraction", [0.0, 0.01, 0.05])
def test_drives_sums_every_feature_edge_over_the_floor(tiny: Tiny, min_fraction: float) -> None:
    """The DRIVES sink against the full edge list: per pair of global features, the count, sum,
    |sum| and max |weight| of the feature-to-feature edges carrying at least `min_fraction` of
    their target's |input| (all non-zero ones at 0)."""
    d_tc, n_layers = tiny.transcoders.d_tc, tiny.model.n_layers
    config = AttributionConfig(mode="lumped", prune=None)
    with torch.no_grad():
        state = tiny.engine.prepare("When Mary and John went to the store, John gave", config)
        drives = DrivesSink(state.nodes, state.n_features, d_tc, n_layers, min_fraction)
        edges = tiny.engine.graph(state, config, sinks=[drives]).edges
    nodes, w = state.nodes, edges.weight.double()
    total = torch.zeros(len(nodes), dtype=torch.float64).index_add_(0, edges.target, w.abs())
    keep = (edges.source < state.n_features) & (edges.target < state.n_features) & (w != 0)
    keep &= w.abs() >= min_fraction * total[edges.target]
    expected: dict[tuple[int, int], list[float]] = {}
    kept = (edges.source[keep].tolist(), edges.target[keep].tolist(), w[keep].tolist())
    for s, t, x in zip(*kept, strict=True):
        key = (nodes.layer[s] * d_tc + nodes.index[s], nodes.layer[t] * d_tc + nodes.index[t])
        expected.setdefault((int(key[0]), int(key[1])), []).append(x)
    got = drives.result()
    assert 0 < len(got) == len(expected)
    for i, (s, t) in enumerate(zip(got.source.tolist(), got.target.tolist(), strict=True)):
        xs = expected[(s, t)]
        assert int(got.n[i]) == len(xs)
        assert float(got.sum[i]) == pytest.approx(sum(xs), rel=1e-9, abs=1e-12)
        assert float(got.sum_abs[i]) == pytest.approx(sum(map(abs, xs)), rel=1e-9)
        assert float(got.max_abs[i]) == pytest.approx(max(map(abs, xs)), rel=1e-9)
    if min_fraction:
        assert len(got) < int(((edges.source < state.n_features) & (w != 0)).sum())


def test_drives_reduces_a_single_chunk() -> None:
    """Two occurrences of one feature (positions 0 and 1) driving another in one chunk: one
    DRIVES row for the pair, even when nothing else streams in."""
    nodes = NodeTable(
        kind=torch.tensor([Code.FEATURE] * 3),
        layer=torch.tensor([0, 0, 1]),
        pos=torch.tensor([0, 1, 1]),
        index=torch.tensor([5, 5, 7]),
        activation=torch.ones(3),
        value=torch.ones(3),
    )
    none, zero = torch.zeros(0, dtype=torch.long), torch.zeros(0)
    chunk = EdgeChunk(
        torch.tensor([2]), torch.tensor([1]), torch.tensor([0, 1]), torch.tensor([0, 1]),
        torch.tensor([[0.5, -0.25]]), none, none, zero,
    )  # fmt: skip
    sink = DrivesSink(nodes, n_features=3, d_tc=10, n_layers=2)
    sink.consume(chunk)
    got = sink.result()
    assert (got.source.tolist(), got.target.tolist(), got.n.tolist()) == ([5], [17], [2])
    assert (got.sum.tolist(), got.sum_abs.tolist(), got.max_abs.tolist()) == ([0.25], [0.75], [0.5])
