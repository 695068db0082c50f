"""Pruning accounting, the JSON contract and the CLI."""

from __future__ import annotations

import io
import json
import re
from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner

from circuitstore.commands.attribute import attribute
from circuitstore.ingest.attribution import (
    AttributionConfig,
    EdgeChunk,
    PruneConfig,
    export,
    graph_to_json,
)
from circuitstore.ingest.attribution.export import count_edges, stream_prompt_json
from circuitstore.ingest.attribution.graph import Code

from .conftest import PROMPT, Tiny


def test_pruned_graph_accounts_for_what_it_drops(tiny: Tiny) -> None:
    config = AttributionConfig(
        mode="lumped", prune=PruneConfig(node_threshold=0.6, edge_threshold=0.9)
    )
    graph = tiny.engine.attribute(PROMPT, config)
    full = tiny.engine.attribute(PROMPT, AttributionConfig(mode="lumped", prune=None))
    nodes, edges, acc = graph.nodes, graph.edges, graph.accounting
    assert acc is not None
    assert (
        0 < int((nodes.kind == Code.FEATURE).sum()) < int((full.nodes.kind == Code.FEATURE).sum())
    )
    assert int((nodes.kind == Code.LOGIT).sum()) == 5
    kept_sum = torch.zeros(len(nodes), dtype=torch.float64).index_add_(
        0, edges.target, edges.weight.double()
    )
    targets = (nodes.kind == Code.FEATURE) | (nodes.kind == Code.LOGIT)
    assert torch.allclose(acc.kept_sum[targets], kept_sum[targets])
    assert torch.allclose(acc.value[targets], nodes.value[targets].double())
    frac = acc.kept_abs_fraction[targets]
    assert bool(((frac > 0) & (frac <= 1 + 1e-9)).all())
    assert int(edges.source.max()) < len(nodes)


def test_skipped_targets_are_reported_and_never_kept(tiny: Tiny) -> None:
    """Targets holding the smallest share of their layer's influence are not expanded. The pruned
    graph is the same whether other sinks force every row to be computed (ingest) or not."""
    skip = PruneConfig(node_threshold=0.95, skip_fraction=0.2)
    config = AttributionConfig(mode="lumped", prune=skip)
    state = tiny.engine.prepare(PROMPT, config)
    seen: list[int] = []

    class Rows:
        def consume(self, chunk: EdgeChunk) -> None:
            seen.append(int(chunk.targets.shape[0]))

    alone = tiny.engine.graph(state, config)
    with_sink = tiny.engine.graph(state, config, sinks=[Rows()])
    assert sum(seen) == state.n_features + 5  # the extra sink saw every target
    assert torch.equal(alone.edges.source, with_sink.edges.source)
    assert torch.equal(alone.edges.target, with_sink.edges.target)
    # Chunks hold other rows, so sums round differently (remainders are ~1e-16 in float64).
    assert torch.allclose(alone.edges.weight, with_sink.edges.weight, rtol=0, atol=1e-12)
    unexpanded = alone.metadata["unexpanded_influence"]
    assert isinstance(unexpanded, float)
    assert 0 < unexpanded <= 0.2
    none = tiny.engine.graph(
        state, AttributionConfig(mode="lumped", prune=replace(skip, skip_fraction=0))
    )
    assert none.metadata["unexpanded_influence"] == 0
    assert len(none.nodes) > len(alone.nodes)
    # Every kept feature was expanded: it has in-edges.
    kept_feats = (alone.nodes.kind == Code.FEATURE).nonzero(as_tuple=True)[0]
    assert set(kept_feats.tolist()) <= set(alone.edges.target.tolist())


def test_json_contract_and_conservation(tiny: Tiny) -> None:
    graph = tiny.engine.attribute(PROMPT, AttributionConfig(prune=None, logit_top_k=2))
    doc = json.loads(json.dumps(graph_to_json(graph)))
    assert doc["tokens"][0] == "<|endoftext|>"
    assert {"mode", "dtype", "model", "transcoders", "pruning"} <= doc["metadata"].keys()
    by_id = {n["id"]: n for n in doc["nodes"]}
    assert len(by_id) == len(doc["nodes"])
    types = {n["type"] for n in doc["nodes"]}
    assert types == {"feature", "embedding", "error", "bias", "logit"}
    total = dict.fromkeys(by_id, 0.0)
    for e in doc["edges"]:
        assert e["source"] in by_id
        total[e["target"]] += e["weight"]
    for node in doc["nodes"]:
        if node["type"] == "feature":
            assert {"layer", "pos", "feature", "activation", "preactivation"} <= node.keys()
            assert node["id"] == f"mlp{node['layer']}tc[{node['feature']}]@{node['pos']}"
        if node["type"] in ("feature", "logit"):
            assert abs(total[node["id"]] - node["preactivation"]) <= 1e-4 * max(
                1.0, abs(node["preactivation"])
            )
        if node["type"] == "logit":
            assert node["layer"] is None


def test_cli_json_table_and_errors(tiny: Tiny) -> None:
    runner = CliRunner()
    base = ["--model", str(tiny.model_dir), "--transcoders", str(tiny.tc_dir)]
    result = runner.invoke(
        attribute, [*base, "--prompt", "Mary went", "--no-prune", "--dtype", "float64"]
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["metadata"]["dtype"] == "float64"
    assert doc["metadata"]["pruning"] is None
    result = runner.invoke(
        attribute, [*base, "--prompt", "Mary went", "--format", "table", "--mode", "lumped"]
    )
    assert result.exit_code == 0, result.output
    assert "mode: lumped" in result.output
    result = runner.invoke(attribute, [*base, "--prompt", ""])
    assert result.exit_code == 2
    assert "prompt is empty" in result.output
    result = runner.invoke(
        attribute, ["--model", str(tiny.tc_dir), "--transcoders", str(tiny.tc_dir), "--prompt", "x"]
    )
    assert result.exit_code == 2
    assert "cannot load model" in result.output


def test_cli_by_head(tiny: Tiny) -> None:
    """`--by-head` gives each edge its `parts` in JSON (heads named attn<layer>[<head>], the
    parts summing to the weight in exact mode) and the strongest heads in the table."""
    base = ["--model", str(tiny.model_dir), "--transcoders", str(tiny.tc_dir), "--by-head"]
    result = CliRunner().invoke(attribute, [*base, "--prompt", "Mary went to", "--mode", "exact"])
    assert result.exit_code == 0, result.output
    edges = json.loads(result.output)["edges"]
    split = [e for e in edges if "parts" in e]
    assert len(split) > len(edges) / 2
    for e in split:
        parts = e["parts"]
        assert all(re.fullmatch(r"attn\d+\[\d+\]", h) for h in parts["heads"])
        total = parts["residual"] + sum(parts["heads"].values()) + parts["multi_layer"]
        assert total == pytest.approx(e["weight"], rel=1e-4, abs=1e-5)
    table = CliRunner().invoke(attribute, [*base, "--prompt", "Mary went to", "--format", "table"])
    assert table.exit_code == 0, table.output
    assert "heads" in table.output
    assert re.search(r"attn\d+\[\d+\] -?\d", table.output)


@pytest.mark.parametrize("mode", ["exact", "lumped"])
def test_edge_count_from_the_node_table(tiny: Tiny, mode: str) -> None:
    config = AttributionConfig(mode=mode, prune=None, logit_top_k=3)  # type: ignore[arg-type]
    with torch.no_grad():
        state = tiny.engine.prepare(PROMPT, config)
        graph = tiny.engine.graph(state, config)
    assert count_edges(state) == len(graph.edges)


@pytest.mark.parametrize("edge_slice", [7, export.EDGE_SLICE])
def test_streamed_json_equals_the_in_memory_graph(
    tiny: Tiny, edge_slice: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`attribute --no-prune --format json` streams edges as the engine computes them, a slice
    at a time; the document is the one `graph_to_json` builds in memory."""
    monkeypatch.setattr(export, "EDGE_SLICE", edge_slice)
    config = AttributionConfig(mode="lumped", prune=None, logit_top_k=2)
    whole = json.loads(json.dumps(graph_to_json(tiny.engine.attribute(PROMPT, config))))
    out = io.StringIO()
    n = stream_prompt_json(tiny.engine, PROMPT, config, out)
    streamed = json.loads(out.getvalue())
    assert n == len(whole["edges"]) == streamed["metadata"]["n_edges"]
    assert streamed["tokens"] == whole["tokens"]
    assert streamed["nodes"] == whole["nodes"]
    key = lambda e: (e["source"], e["target"])  # noqa: E731
    assert sorted(map(key, streamed["edges"])) == sorted(map(key, whole["edges"]))
    by_key = {key(e): e for e in whole["edges"]}
    for e in streamed["edges"]:
        assert e["weight"] == pytest.approx(by_key[key(e)]["weight"], rel=1e-6, abs=1e-9)
        assert e["kind"] == by_key[key(e)]["kind"]
    assert {e["kind"] for e in streamed["edges"]} == {"residual", "attention"}
    scores = {"replacement_score", "completeness_score"}
    assert {k: v for k, v in streamed["metadata"].items() if k not in scores} == {
        k: v for k, v in whole["metadata"].items() if k not in scores
    }
    for key in scores:  # from the stream, and from every edge in memory: two summation orders
        assert streamed["metadata"][key] == pytest.approx(whole["metadata"][key], rel=1e-9)
