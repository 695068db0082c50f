"""The viewers' graph JSON without a database: Neuronpedia's published JSON schema (vendored in
tests/fixtures/neuronpedia, checked with `jsonschema`), the Cantor feature ids its graph page
decodes (checked against its own decoding formula), the folding of bias and remainder mass into
error nodes (every target keeps its whole input), and circuit-tracer's viewer folder."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import jsonschema
import pytest

from circuitstore.query.export import (
    HUB_SETS,
    VIEWER_INDEX,
    cantor,
    fold_constants,
    neuronpedia_graph,
    neuronpedia_names,
    uncantor,
    write_viewer_graph,
)
from circuitstore.query.qk.records import QKTerm, QKTrace
from circuitstore.query.qk.stored import TracedEdge
from circuitstore.query.results import Edge, Node, PromptInfo, Subgraph, TranscoderSetInfo
from circuitstore.schema.errors import QueryError
from circuitstore.schema.names import CLT, respell

SCHEMA = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "neuronpedia" / "graph-schema.json").read_text()
)
GPT2 = TranscoderSetInfo("gpt2-abc", 12, 24576, "gpt2", "pchlenski/gpt2-transcoders")


def validate(data: dict) -> None:
    """What Neuronpedia's upload and validator page run (Ajv over the same schema), plus the
    checks its graph page makes while loading."""
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    jsonschema.Draft7Validator(SCHEMA).validate(json.loads(json.dumps(data)))
    nodes = data["nodes"]
    ids = [n["node_id"] for n in nodes]
    assert len(ids) == len(set(ids)), "node ids collide"
    assert all(link["source"] in ids and link["target"] in ids for link in data["links"])
    max_layer = max(
        int(n["layer"]) for n in nodes if n["feature_type"] not in ("logit",) if n["layer"] != "E"
    )
    assert max_layer > 0, "Neuronpedia's page throws 'No layer found' at 0"
    for n in nodes:
        if n["feature_type"] == "logit":
            float(n["clerp"].split("(p=")[1].split(")")[0])  # how the viewers read it


def neuronpedia_decode(feature: int) -> tuple[int, int]:
    """Neuronpedia's inverseCantorIndex (utils.ts), as written there."""
    w = math.floor((math.sqrt(8 * feature + 1) - 1) / 2)
    t = (w * w + w) / 2
    index = int(feature - t)
    return int(w - index), index


@pytest.mark.parametrize("pair", [(0, 0), (0, 24575), (11, 0), (11, 24575), (5, 1234), (3, 7)])
def test_cantor_ids_decode_as_neuronpedia_decodes_them(pair):
    assert uncantor(cantor(*pair)) == pair
    assert neuronpedia_decode(cantor(*pair)) == pair


def test_cantor_round_trips_at_random():
    rng = random.Random(0)
    for _ in range(2000):
        pair = (rng.randrange(100), rng.randrange(10**6))
        assert uncantor(cantor(*pair)) == pair


def lumped_graph() -> tuple[PromptInfo, Subgraph]:
    """Two layers, three positions, with every kind: biases (one of no layer), a remainder of a
    feature and of a logit, an error term stored and one not."""
    tokens = ("<|endoftext|>", " Kate", " to")
    nodes = [
        Node("embed0@0", "embedding", pos=0, token=tokens[0], token_id=0),
        Node("embed0@1", "embedding", pos=1, token=tokens[1], token_id=458),
        Node("embed0@2", "embedding", pos=2, token=tokens[2], token_id=7),
        Node("mlp0tc[70]@2", "feature", layer=0, pos=2, feature=70, activation=1.5),
        Node("mlp1tc[4]@2", "feature", layer=1, pos=2, feature=4, activation=0.7),
        Node("mlp0err@2", "error", layer=0, pos=2),
        Node("bias[attn1]@2", "bias", layer=1, pos=2),
        Node("bias[unembed]@2", "bias", pos=2),
        Node("rem[mlp1tc[4]@2]", "error", layer=1, pos=2),
        Node("rem[logit[458]@2]", "error", pos=2),
        Node("logit[458]@2", "logit", pos=2, token=" Kate", token_id=458, value=4.0),
        Node("logit[9]@2", "logit", pos=2, token_id=9, value=1.0),
    ]
    edges = [
        Edge("embed0@1", "mlp0tc[70]@2", 0.8, "attention"),
        Edge("embed0@2", "mlp0tc[70]@2", 0.3),
        Edge("mlp0tc[70]@2", "mlp1tc[4]@2", 0.9),
        Edge("mlp0err@2", "mlp1tc[4]@2", 0.1),
        Edge("bias[attn1]@2", "mlp1tc[4]@2", -0.2),
        Edge("rem[mlp1tc[4]@2]", "mlp1tc[4]@2", 0.05),
        Edge("mlp1tc[4]@2", "logit[458]@2", 2.0),
        Edge("mlp0tc[70]@2", "logit[458]@2", 1.0),
        Edge("bias[unembed]@2", "logit[458]@2", 0.25),
        Edge("rem[logit[458]@2]", "logit[458]@2", 0.75),
        Edge("embed0@2", "logit[9]@2", 1.0),
    ]
    info = PromptInfo("s/k", "k", "s", "".join(tokens), tokens, (0, 458, 7))
    return info, Subgraph("k", tuple(nodes), tuple(edges))


def input_sums(sub: Subgraph) -> dict[str, float]:
    out: dict[str, float] = {}
    for e in sub.edges:
        out[e.target] = out.get(e.target, 0.0) + e.weight
    return out


def test_folding_keeps_every_targets_input():
    _, sub = lumped_graph()
    folded, counts = fold_constants(sub, 2)
    assert counts == {"bias": 2, "remainder": 2, "created_error_nodes": 1}
    kinds = {n.kind for n in folded.nodes}
    assert "bias" not in kinds
    assert not any(n.id.startswith("rem[") for n in folded.nodes)
    assert input_sums(folded) == pytest.approx(input_sums(sub))
    by_pair = {(e.source, e.target): e.weight for e in folded.edges}
    # The feature's bias and its remainder both sit at its layer (1) and position (2).
    assert by_pair["mlp1err@2", "mlp1tc[4]@2"] == pytest.approx(-0.2 + 0.05)
    # The logit's remainder and the unembedding bias: the last layer's error node.
    assert by_pair["mlp1err@2", "logit[458]@2"] == pytest.approx(0.25 + 0.75)
    assert by_pair["mlp0err@2", "mlp1tc[4]@2"] == pytest.approx(0.1)  # untouched


def test_export_passes_the_schema_and_names_neuronpedias_set():
    info, sub = lumped_graph()
    tset = TranscoderSetInfo("gpt2-abc", 2, 64, "gpt2")
    data = neuronpedia_graph(info, sub, tset, scan="gpt2-small", source_set="tres-dc")
    validate(data)
    meta = data["metadata"]
    assert meta["scan"] == "gpt2-small"
    assert meta["feature_details"] == {"neuronpedia_source_set": "tres-dc"}
    assert meta["schema_version"] == 1
    assert meta["prompt_tokens"] == list(info.tokens)
    nodes = {n["node_id"]: n for n in data["nodes"]}
    feature = nodes["1_4_2"]
    assert neuronpedia_decode(feature["feature"]) == (1, 4)
    assert feature["clerp"] == "mlp1tc[4]"  # no label: its name
    logit = nodes["3_458_2"]
    assert logit["clerp"].startswith('Output " Kate" (p=')
    assert logit["is_target_logit"]
    assert nodes["3_9_2"]["clerp"].startswith('Output "<token 9>" (p=')
    # Influence: cumulative shares in [0, 1], the viewers' pruning key.
    assert all(0.0 <= n["influence"] <= 1.0 for n in data["nodes"])
    assert nodes["1_4_2"]["influence"] < nodes["E_0_0"]["influence"]
    total_in = {
        t: sum(x["weight"] for x in data["links"] if x["target"] == t) for t in ("3_458_2", "1_4_2")
    }
    assert total_in == pytest.approx({"3_458_2": 4.0, "1_4_2": 0.85})


def test_labels_become_clerps():
    info, sub = lumped_graph()
    labelled = Subgraph(
        sub.prompt,
        tuple(
            Node(**{**n.as_row(), "label": "names of people"}) if n.id == "mlp0tc[70]@2" else n
            for n in sub.nodes
        ),
        sub.edges,
    )
    data = neuronpedia_graph(info, labelled, TranscoderSetInfo("s", 2, 128))
    validate(data)
    assert {n["clerp"] for n in data["nodes"] if n["node_id"] == "0_70_2"} == {"names of people"}


def test_neuronpedias_names_for_the_gpt2_transcoders():
    assert neuronpedia_names(GPT2) == neuronpedia_names(
        TranscoderSetInfo("x", 12, 24576, "openai-community/gpt2")
    )
    assert neuronpedia_names(GPT2).scan == "gpt2-small"
    assert neuronpedia_names(GPT2).source_set == "tres-dc"
    other = neuronpedia_names(TranscoderSetInfo("model-3dd9", 3, 384, "circuitstore demo/model"))
    assert other.scan == "model-3dd9"
    assert other.source_set is None
    chosen = neuronpedia_names(GPT2, scan="gpt2-small", source_set="res-jb")
    assert chosen.source_set == "res-jb"


def hub(model, families, shape, transcoders=None):
    return TranscoderSetInfo("x", *shape, model, transcoders, None, None, None, *families)


@pytest.mark.parametrize(
    ("tset", "names"),
    [
        (hub("gpt2", ("transcoder", "gpt2"), (12, 24576)), ("gpt2-small", "tres-dc")),
        # A set stored before families were recorded: GPT-2's per-layer transcoder.
        (hub("openai-community/gpt2", (None, None), (12, 24576)), ("gpt2-small", "tres-dc")),
        (hub("gpt2", ("clt", "gpt2"), (12, 24576)), None),
        (
            hub("google/gemma-2-2b", ("transcoder", "gemma2"), (26, 16384)),
            ("gemma-2-2b", "gemmascope-transcoder-16k"),
        ),
        # A local folder of the model, by its last part, any case.
        (
            hub("/models/Gemma-2-2B/", ("transcoder", "gemma2"), (26, 16384)),
            ("gemma-2-2b", "gemmascope-transcoder-16k"),
        ),
        (hub("google/gemma-2-2b", ("clt", "gemma2"), (26, 98304)), ("gemma-2-2b", "clt-hp")),
        (hub("google/gemma-2-2b", ("clt", "gemma2"), (26, 16384)), None),  # the 426k CLT
        (hub("google/gemma-2-2b", ("transcoder", "gemma2"), (26, 98304)), None),
        (hub("google/gemma-2-2b-it", ("clt", "gemma2"), (26, 98304)), None),
        (hub("google/gemma-2-2b", ("clt", "llama"), (26, 98304)), None),
        (
            hub(
                "Qwen/Qwen3-4B",
                ("transcoder", "qwen3"),
                (36, 163840),
                "mwhanna/qwen3-4b-transcoders",
            ),
            ("qwen3-4b", "transcoder-hp"),
        ),
        (
            hub("/m/qwen3-4b", ("transcoder", "qwen3"), (36, 81920), "/w/qwen3-4b-transcoders"),
            ("qwen3-4b", "transcoder-hp"),
        ),
        (hub("Qwen/Qwen3-4B", ("transcoder", "qwen3"), (36, 163840), "me/my-transcoders"), None),
        (
            hub("Qwen/Qwen3-4B", ("clt", "qwen3"), (36, 163840), "mwhanna/qwen3-4b-transcoders"),
            None,
        ),
        (hub("meta-llama/Llama-3.2-1B", ("transcoder", "llama"), (16, 131072)), None),
        (hub("meta-llama/Llama-3.2-1B", ("clt", "llama"), (16, 32768)), None),
    ],
)
def test_neuronpedias_hub_sets_are_known_by_model_families_and_size(tset, names):
    got = neuronpedia_names(tset)
    if names is None:
        assert (got.scan, got.source_set) == ("x", None)  # the set's id, no dashboards
    else:
        assert (got.scan, got.source_set) == names
        assert sum(h.matches(tset) for h in HUB_SETS) == 1


def clt_graph() -> tuple[PromptInfo, Subgraph]:
    """`lumped_graph` as a cross-layer transcoder's store holds it: its features (alone, and
    inside a remainder's id) spelled `clt<layer>[<index>]`."""
    info, sub = lumped_graph()
    nodes = tuple(Node(**{**n.as_row(), "id": respell(n.id, CLT)}) for n in sub.nodes)
    edges = tuple(
        Edge(respell(e.source, CLT), respell(e.target, CLT), e.weight, e.kind) for e in sub.edges
    )
    return info, Subgraph(sub.prompt, nodes, edges)


def test_a_cross_layer_export_differs_only_in_its_feature_names():
    """A CLT's graph exports as the same graph: node ids, Cantor features, types, influence,
    links and folding as for a per-layer set; only a feature's clerp (its name) says `clt`."""
    info, sub = lumped_graph()
    clt_info, clt_sub = clt_graph()
    assert {n.id for n in clt_sub.nodes} >= {"clt0[70]@2", "clt1[4]@2", "rem[clt1[4]@2]"}
    per_layer = neuronpedia_graph(
        info, sub, hub("google/gemma-2-2b", ("transcoder", "gemma2"), (2, 64))
    )
    cross = neuronpedia_graph(
        clt_info, clt_sub, hub("google/gemma-2-2b", ("clt", "gemma2"), (2, 64))
    )
    validate(cross)
    assert cross["links"] == per_layer["links"]
    assert cross["metadata"] == per_layer["metadata"]
    clerps = {}
    for a, b in zip(per_layer["nodes"], cross["nodes"], strict=True):
        assert {k: v for k, v in a.items() if k != "clerp"} == {
            k: v for k, v in b.items() if k != "clerp"
        }
        clerps[a["clerp"]] = b["clerp"]
    assert clerps["mlp1tc[4]"] == "clt1[4]"
    assert clerps["mlp0tc[70]"] == "clt0[70]"
    types = {n["node_id"]: n["feature_type"] for n in cross["nodes"]}
    assert types["1_4_2"] == types["0_70_2"] == "cross layer transcoder"
    assert types["1_error_mlp_2"] == "mlp reconstruction error"


def test_a_hub_clt_export_opens_its_dashboards():
    info, sub = clt_graph()
    tset = hub("google/gemma-2-2b", ("clt", "gemma2"), (26, 98304))
    data = neuronpedia_graph(info, sub, tset, pinned=("clt1[4]@2", "rem[clt1[4]@2]"))
    validate(data)
    assert data["metadata"]["scan"] == "gemma-2-2b"
    assert data["metadata"]["feature_details"] == {"neuronpedia_source_set": "clt-hp"}
    feature = next(n for n in data["nodes"] if n["node_id"] == "1_4_2")
    assert neuronpedia_decode(feature["feature"]) == (1, 4)
    assert data["qParams"]["pinnedIds"] == ["1_4_2", "1_error_mlp_2"]


def test_without_a_source_set_no_feature_details():
    info, sub = lumped_graph()
    data = neuronpedia_graph(info, sub, TranscoderSetInfo("x", 2, 64, "tiny"))
    validate(data)
    assert "feature_details" not in data["metadata"]
    assert data["metadata"]["scan"] == "x"


def test_slug_is_what_neuronpedia_accepts():
    info, sub = lumped_graph()
    info = PromptInfo("s/a b/c", "a b/c:é", "s", info.text, info.tokens, info.token_ids)
    data = neuronpedia_graph(info, sub, TranscoderSetInfo("x", 2, 64, "tiny"))
    assert data["metadata"]["slug"] == "a-b-c"


def test_viewer_folder_lists_each_slug_once(tmp_path):
    info, sub = lumped_graph()
    tset = TranscoderSetInfo("x", 2, 64, "tiny")
    first = write_viewer_graph(neuronpedia_graph(info, sub, tset), tmp_path)
    again = write_viewer_graph(neuronpedia_graph(info, sub, tset), tmp_path)
    write_viewer_graph(neuronpedia_graph(info, sub, tset, slug="other"), tmp_path)
    assert first == again == tmp_path / "k.json"
    listed = json.loads((tmp_path / VIEWER_INDEX).read_text())["graphs"]
    assert [g["slug"] for g in listed] == ["k", "other"]
    assert json.loads(first.read_text())["metadata"]["slug"] == "k"
    (tmp_path / VIEWER_INDEX).write_text("[1, 2]")
    with pytest.raises(QueryError, match="not a viewer index"):
        write_viewer_graph(neuronpedia_graph(info, sub, tset), tmp_path)


def test_pinned_nodes_are_pinned_by_their_viewer_ids():
    """`qParams.pinnedIds` (circuit-tracer's viewer loads qParams into its state and pins the
    nodes whose `node_id` is listed) holds the viewer ids of exactly the pinned nodes; a bias
    or remainder, which the viewers cannot show, by the error node it is folded into."""
    info, sub = lumped_graph()
    tset = TranscoderSetInfo("x", 2, 64, "tiny")
    assert neuronpedia_graph(info, sub, tset)["qParams"]["pinnedIds"] == []
    pinned = ["mlp0tc[70]@2", "logit[458]@2", "embed0@1", "bias[unembed]@2", "rem[logit[458]@2]"]
    data = neuronpedia_graph(info, sub, tset, pinned=pinned)
    validate(data)
    assert data["qParams"]["pinnedIds"] == ["0_70_2", "3_458_2", "E_458_1", "1_error_mlp_2"]
    assert set(data["qParams"]["pinnedIds"]) <= {n["node_id"] for n in data["nodes"]}
    assert {k: data["qParams"][k] for k in ("supernodes", "linkType", "clickedId")} == {
        "supernodes": [],
        "linkType": "both",
        "clickedId": "",
    }
    with pytest.raises(QueryError, match=r"node mlp0tc\[71\]@2 is not in the stored graph"):
        neuronpedia_graph(info, sub, tset, pinned=["mlp0tc[71]@2"])


def qk_edge(target: str, weight: float, layer: int = 1, pairs_value: float = 0.5) -> TracedEdge:
    """A trace made for the stored edge embed0@1 -> `target`, its contributors of every sort:
    exported nodes, a feature and a token the graph lacks, a folded bias, a q/k bias."""
    q_bias, k_bias = f"bias[attn{layer}[0].q]@2", f"bias[attn{layer}[0].k]@1"
    trace = QKTrace(
        prompt="k",
        prompt_id="s/k",
        transcoder_set="s",
        layer=layer,
        head=0,
        query_pos=2,
        key_pos=1,
        mode="lumped",
        score=1.0,
        total=1.0,
        probability=0.5,
        n_query=5,
        n_key=4,
        pairs=(QKTerm("mlp0tc[70]@2", "embed0@1", pairs_value), QKTerm(q_bias, k_bias, 0.1)),
        query_side=(
            QKTerm("mlp0tc[70]@2", None, 0.6),
            QKTerm("mlp0tc[33]@2", None, -0.2),
            QKTerm("bias[attn1]@2", None, 0.1),
            QKTerm(q_bias, None, 0.05),
            QKTerm(f"rem[attn{layer}[0].q@2]", None, 0.01),
        ),
        key_side=(QKTerm(None, "embed0@1", 0.7), QKTerm(None, k_bias, 0.3)),
    )
    return TracedEdge(trace, "embed0@1", target, weight)


def test_qk_traces_fill_their_targets_results_and_pass_the_schema():
    info, sub = lumped_graph()
    tset = TranscoderSetInfo("gpt2-abc", 2, 64, "gpt2")
    traced = [
        qk_edge("mlp0tc[70]@2", 0.8),
        qk_edge("mlp0tc[70]@2", -0.1, pairs_value=9.0),  # weaker: not the one shown
        qk_edge("mlp1tc[99]@2", 0.5),  # not in the graph: no node to go on
    ]
    data = neuronpedia_graph(info, sub, tset, traced=traced)
    validate(data)
    with_qk = [n for n in data["nodes"] if "qk_tracing_results" in n]
    assert [n["node_id"] for n in with_qk] == ["0_70_2"]
    results = with_qk[0]["qk_tracing_results"]
    assert results["pair_wise_contributors"][0] == ["0_70_2", "E_458_1", 0.5]
    only = data["qk_only_nodes"]
    shown = {n["node_id"] for n in data["nodes"]}
    named = [
        *(x for p in results["pair_wise_contributors"] for x in p[:2]),
        *(c[0] for c in results["top_q_marginal_contributors"]),
        *(c[0] for c in results["top_k_marginal_contributors"]),
    ]
    assert all(x in shown or x in only for x in named)  # each id resolves, as the schema asks
    assert set(only) == {
        "0_33_2",  # a feature the stored graph lacks, by the viewers' id
        "bias[attn1]@2",  # folded into an error node by the export: by its own id
        "bias[attn1[0].q]@2",
        "bias[attn1[0].k]@1",
        "rem[attn1[0].q@2]",
    }
    assert neuronpedia_decode(only["0_33_2"]["feature"]) == (0, 33)
    assert only["bias[attn1[0].q]@2"]["feature_type"] == "qk bias"
    assert only["0_33_2"]["ctx_idx"] == 2


def test_without_traces_no_qk_fields():
    info, sub = lumped_graph()
    data = neuronpedia_graph(info, sub, TranscoderSetInfo("gpt2-abc", 2, 64, "gpt2"))
    assert "qk_only_nodes" not in data
    assert not any("qk_tracing_results" in n for n in data["nodes"])
