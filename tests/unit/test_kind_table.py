"""Adding a node kind is a row of the kind table in `schema.names` (and, for the engine, a place
in its row layout and a producer): a throw-away kind, added to the table here and nowhere else,
goes through the ingest payload, the attribution JSON and table, and the query side (parsing,
records, networkx, GraphML, circuits and the viewers' export, which folds a kind they have no
node type for into an error node)."""

from __future__ import annotations

import networkx as nx
import pytest
import torch

from circuitstore.ingest.aggregate import PairSums, feature_summary
from circuitstore.ingest.attribution import AttributionGraph, Edges, NodeTable
from circuitstore.ingest.attribution.export import graph_to_json, graph_to_table
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.corpus import PromptRecord
from circuitstore.ingest.payload import build_payload
from circuitstore.query import graphs
from circuitstore.query.export import neuronpedia_graph, write_subgraph
from circuitstore.query.paths.read import find_nodes
from circuitstore.query.reader import TranscoderSetInfo
from circuitstore.query.results import CircuitResult, Edge, Node, PromptInfo, Subgraph
from circuitstore.query.store import CircuitStore
from circuitstore.schema.model import Label
from circuitstore.schema.names import KINDS, Form, KindSpec, LocalRef, NodeKind, parse_node

PROBE = 9  # the throw-away kind's number in the engine's node table


@pytest.fixture
def probe(monkeypatch: pytest.MonkeyPatch) -> NodeKind:
    """A kind the viewers have no node type for, holding the node table's value column."""
    spec = KindSpec(
        Label.BIAS,  # a real kind would bring its own label to schema.model
        r"probe\[\d{1,9}\]@\d{1,9}",
        (
            Form(
                "probe",
                PROBE,
                "probe[{index}]@{pos}",
                {"probeValue": "value", "transcoderSet": "transcoderSet"},
                {"probe_value": "value"},
            ),
        ),
        None,
    )
    monkeypatch.setitem(KINDS, "probe", spec)
    return NodeKind("probe")


def engine_graph() -> AttributionGraph:
    """embed0@0 and probe[4]@1 into mlp0tc[3]@1, which with the probe feeds logit[7]@1."""
    codes = [Code.EMBEDDING, Code.FEATURE, PROBE, Code.LOGIT]
    nodes = NodeTable(
        kind=torch.tensor(codes),
        layer=torch.tensor([-1, 0, 0, -1]),
        pos=torch.tensor([0, 1, 1, 1]),
        index=torch.tensor([7, 3, 4, 7]),
        activation=torch.tensor([0.0, 1.5, 0.0, 0.0]),
        value=torch.tensor([0.0, 1.25, 0.5, 2.0]),
    )
    edges = Edges(
        torch.tensor([0, 2, 1, 2]), torch.tensor([1, 1, 3, 3]), torch.tensor([1.0, 0.25, 2.0, -0.5])
    )
    return AttributionGraph(("a", "b"), (7, 8), nodes, edges, {"mode": "exact"})


def test_a_new_kind_is_stored_as_its_row_says(probe: NodeKind) -> None:
    graph = engine_graph()
    none = torch.zeros(0, dtype=torch.long)
    payload = build_payload(
        PromptRecord("k", "a b", 1, {}),
        graph,
        feature_summary(graph.nodes, 10),
        PairSums(none, none, none, torch.zeros(0), torch.zeros(0), torch.zeros(0)),
        transcoder_set="t",
        run="r",
        d_tc=10,
    )
    (label, props) = next(n for n in payload.nodes if n[1]["kind"] == probe)
    assert label == "Bias"
    assert props == {
        "id": "t/k/probe[4]@1",
        "localId": "probe[4]@1",
        "prompt": "t/k",
        "kind": "probe",
        "pos": 1,
        "layer": 0,
        "probeValue": 0.5,
        "transcoderSet": "t",
    }
    assert isinstance(parse_node(props["localId"]), LocalRef)  # the grammar knows it


def test_a_new_kind_is_in_the_attribution_json_and_table(probe: NodeKind) -> None:
    graph = engine_graph()
    data = graph_to_json(graph)
    node = next(n for n in data["nodes"] if n["type"] == probe)
    assert node == {"id": "probe[4]@1", "type": "probe", "layer": 0, "pos": 1, "probe_value": 0.5}
    assert {"source": "probe[4]@1", "target": "mlp0tc[3]@1"}.items() <= data["edges"][1].items()
    assert "probe 1" in graph_to_table(graph)


def query_graph() -> Subgraph:
    """The engine graph as the store returns it."""
    nodes = (
        Node("embed0@0", "embedding", pos=0, token="a", token_id=7),
        Node("mlp0tc[3]@1", "feature", layer=0, pos=1, feature=3, activation=1.5, token="b"),
        Node("probe[4]@1", "probe", layer=0, pos=1, token="b"),
        Node("logit[7]@1", "logit", pos=1, token="a", token_id=7, value=2.0),
    )
    edges = (
        Edge("embed0@0", "mlp0tc[3]@1", 1.0),
        Edge("probe[4]@1", "mlp0tc[3]@1", 0.25),
        Edge("mlp0tc[3]@1", "logit[7]@1", 2.0),
        Edge("probe[4]@1", "logit[7]@1", -0.5),
    )
    return Subgraph("k", nodes, edges)


def test_a_new_kind_is_read_asked_and_exported(probe: NodeKind, tmp_path) -> None:
    graph = query_graph()
    node = graph.nodes[2]
    assert (node.kind, node.shown) == (probe, "probe[4]@1 'b'")
    info = PromptInfo("t/k", "k", "t", "a b", ("a", "b"), (7, 8))
    store = CircuitStore(driver=None)  # type: ignore[arg-type]  # a LocalRef needs no store
    assert find_nodes(store, graph, parse_node("probe[4]@1"), info) == ["probe[4]@1"]
    sub, _ = graphs.circuit(graph, {"logit[7]@1": 1.0}, 1.0)
    rows = CircuitResult("k", ("logit[7]@1",), 1.0, sub).rows()
    assert {"id": "probe[4]@1", "kind": "probe"}.items() <= next(
        r for r in rows if r["id"] == "probe[4]@1"
    ).items()
    write_subgraph(graph.to_networkx(), "graphml", tmp_path / "g.graphml")
    assert nx.read_graphml(tmp_path / "g.graphml").nodes["probe[4]@1"]["kind"] == "probe"
    # The viewers have no node type for it: folded into the error node of its layer and position.
    data = neuronpedia_graph(info, graph, TranscoderSetInfo("t", 2, 64))
    assert data["metadata"]["info"]["folded"] == {
        "bias": 0,
        "probe": 1,
        "remainder": 0,
        "created_error_nodes": 1,
    }
    links = {(x["source"], x["target"]): x["weight"] for x in data["links"]}
    assert links[("0_error_mlp_1", "0_3_1")] == 0.25
    assert links[("0_error_mlp_1", "3_7_1")] == -0.5
