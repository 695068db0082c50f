"""Every query against a store filled by the real ingest job (tiny model), each answer checked
against an independent networkx/numpy computation over the same stored edges."""

from __future__ import annotations

import itertools
import json
import math
import re
from pathlib import Path

import jsonschema
import networkx as nx
import numpy as np
import pytest

from circuitstore.query import CircuitStore
from circuitstore.query.export import uncantor
from circuitstore.schema.errors import QueryError
from circuitstore.schema.model import PromptScore

from .helpers import N_PROMPTS, fill

pytestmark = pytest.mark.slow

COOKBOOK = Path(__file__).parents[2] / "query" / "cookbook.cypher"


@pytest.fixture(scope="module")
def store(driver, neo4j_settings, tiny_weights, tmp_path_factory) -> CircuitStore:  # type: ignore[no-untyped-def]
    fill(driver, neo4j_settings.database, tiny_weights, tmp_path_factory.mktemp("query"))
    return CircuitStore(driver, neo4j_settings.database)


@pytest.fixture(scope="module")
def stored(store):  # type: ignore[no-untyped-def]
    """The store's edges read back raw, as networkx graphs: the expected answers' only input."""
    rows = store.cypher
    drives = nx.DiGraph()
    for r in rows(
        "MATCH (a:Feature)-[d:DRIVES]->(b:Feature) RETURN a.name AS a, b.name AS b, properties(d) AS d",
        limit=10**6,
    ):
        drives.add_edge(r["a"], r["b"], **r["d"])
    prompts = {}
    for r in rows(
        "MATCH (p:Prompt) RETURN p.id AS id, p.key AS key, p.tokens AS tokens", limit=10**6
    ):
        prompts[r["key"]] = r
    per_prompt: dict[str, nx.DiGraph] = {k: nx.DiGraph() for k in prompts}
    n_heads = rows("MATCH (s:TranscoderSet) RETURN s.nHeads AS h")[0]["h"]

    def head(number: int) -> str:  # stored as layer * nHeads + head
        return f"attn{number // n_heads}[{number % n_heads}]"

    key_of = {p["id"]: k for k, p in prompts.items()}
    for r in rows("MATCH (n:GraphNode) RETURN n.prompt AS p, properties(n) AS n", limit=10**6):
        per_prompt[key_of[r["p"]]].add_node(r["n"]["localId"], **r["n"])
    for r in rows(
        "MATCH (a:GraphNode)-[e:ATTR]->(b:GraphNode) RETURN a.prompt AS p, a.localId AS a, b.localId AS b, e.weight AS w, e.kind AS k, e.heads AS h, e.headWeights AS hw, e.otherHeads AS o, e.residual AS r",
        limit=10**7,
    ):
        # A split edge has otherHeads; its lists are absent where it names no head.
        split = zip(map(head, r["h"] or []), r["hw"] or [], strict=True)
        heads = None if r["o"] is None else dict(split)
        per_prompt[key_of[r["p"]]].add_edge(
            r["a"], r["b"], weight=r["w"], kind=r["k"], heads=heads, other=r["o"], residual=r["r"]
        )
    return {"drives": drives, "prompts": prompts, "graphs": per_prompt}


def active_features(stored) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(stored["drives"].nodes)


def expected_corpus(
    stored, feature: str, direction: str, order: str, sign: str, top: int
) -> list[tuple[str, float]]:  # type: ignore[no-untyped-def]
    g = stored["drives"]
    edges = (
        g.in_edges(feature, data=True)
        if direction == "drivers"
        else g.out_edges(feature, data=True)
    )
    scored = []
    for a, b, d in edges:
        other = a if direction == "drivers" else b
        score = d["sum"] if order == "total" else d["sum"] / d["n"]
        scored.append((other, score))
    return rank(scored, sign)[:top]


def rank(scored: list[tuple[str, float]], sign: str) -> list[tuple[str, float]]:
    if sign == "positive":
        return sorted((x for x in scored if x[1] > 0), key=lambda x: (-x[1], x[0]))
    if sign == "negative":
        return sorted((x for x in scored if x[1] < 0), key=lambda x: (x[1], x[0]))
    return sorted(scored, key=lambda x: (-abs(x[1]), x[0]))


@pytest.mark.parametrize("direction", ["drivers", "targets"])
def test_corpus_links_equal_networkx(store, stored, direction):
    features = active_features(stored)
    assert len(features) > 5
    checked = 0
    for feature, order, sign in itertools.product(
        features, ("total", "mean"), ("positive", "negative", "abs")
    ):
        got = getattr(store, direction)(feature, top=4, order=order, sign=sign)
        want = expected_corpus(stored, feature, direction, order, sign, 4)
        assert [x.name for x in got.links] == [n for n, _ in want], (feature, order, sign)
        for link, (_, score) in zip(got.links, want, strict=True):
            assert (link.total if order == "total" else link.mean) == pytest.approx(score)
            d = stored["drives"].edges[
                (link.name, feature) if direction == "drivers" else (feature, link.name)
            ]
            assert (link.n, link.sum_abs, link.max_abs) == (
                d["n"],
                pytest.approx(d["sumAbs"]),
                pytest.approx(d["maxAbs"]),
            )
        checked += len(got.links)
    assert checked > 20


def occurrences(stored) -> list[tuple[str, str, int]]:  # type: ignore[no-untyped-def]
    out = []
    for key, g in stored["graphs"].items():
        for _, data in g.nodes(data=True):
            if data["kind"] == "feature":
                out.append((key, f"mlp{data['layer']}tc[{data['feature']}]", data["pos"]))
    return sorted(out)


@pytest.mark.parametrize("direction", ["drivers", "targets"])
def test_prompt_links_equal_networkx(store, stored, direction):
    occ = occurrences(stored)
    for key, name, pos in occ[:: max(1, len(occ) // 25)]:
        g = stored["graphs"][key]
        for with_pos in (True, False):
            targets = [
                n
                for n, d in g.nodes(data=True)
                if d["kind"] == "feature" and d["localId"].startswith(name + "@")
            ]
            if with_pos:
                targets = [f"{name}@{pos}"]
            groups: dict[str, list[float]] = {}
            for t in targets:
                edges = (
                    g.in_edges(t, data=True)
                    if direction == "drivers"
                    else g.out_edges(t, data=True)
                )
                for a, b, d in edges:
                    groups.setdefault(a if direction == "drivers" else b, []).append(d["weight"])
            want = rank([(n, sum(ws)) for n, ws in groups.items()], "abs")[:6]
            got = getattr(store, direction)(
                f"{name}@{pos}" if with_pos else name, prompt=key, top=6, sign="abs"
            )
            assert [x.name for x in got.links] == [n for n, _ in want]
            assert [x.total for x in got.links] == pytest.approx([s for _, s in want])
            assert [x.n for x in got.links] == [len(groups[n]) for n, _ in want]
            assert got.subgraph is not None
            for e in got.subgraph.edges:
                assert g.edges[e.source, e.target]["weight"] == e.weight


def test_prompt_links_by_head_equal_the_stored_split(store, stored):
    """--by-head: a link's heads are its edges' stored heads summed by name (the 3 strongest
    named, the rest added to the other heads); in lumped mode (ingest's default) residual,
    heads and other heads add up to the stored weight, so multi_layer is ~0."""
    occ = occurrences(stored)
    checked = 0
    for key, name, pos in occ[:: max(1, len(occ) // 25)]:
        g = stored["graphs"][key]
        for feature in (f"{name}@{pos}", name):
            got = store.drivers(feature, prompt=key, top=8, sign="abs", by_head=True)
            targets = [n for n in g if n == feature or n.startswith(name + "@")]
            targets = [feature] if "@" in feature else targets
            for link in got.links:
                edges = [g.edges[link.name, t] for t in targets if g.has_edge(link.name, t)]
                if any(e["heads"] is None for e in edges):
                    assert link.split is None
                    continue
                summed: dict[str, float] = {}
                for e in edges:
                    for head, w in e["heads"].items():
                        summed[head] = summed.get(head, 0.0) + w
                want = sorted(summed.items(), key=lambda kv: (-abs(kv[1]), kv[0]))[:3]
                split = link.split
                assert split is not None
                assert [h for h, _ in split.heads] == [h for h, _ in want]
                assert [w for _, w in split.heads] == pytest.approx([w for _, w in want])
                residual = sum(e["residual"] or 0.0 for e in edges)
                assert split.residual == pytest.approx(residual)
                parts = split.residual + sum(w for _, w in split.heads) + split.other_heads
                assert parts + split.multi_layer == pytest.approx(link.total)
                assert abs(split.multi_layer) <= 1e-4 * link.sum_abs + 1e-6
                checked += 1
    assert checked > 20


def test_heads_rank_equals_an_independent_sum(store, stored):
    for key in sorted(stored["prompts"])[:4]:
        g = stored["graphs"][key]
        edges, total, sum_abs, carried = {}, {}, {}, 0.0
        for _, _, d in g.edges(data=True):
            if d["heads"] is None:
                continue
            carried += abs(d["other"])
            for head, w in d["heads"].items():
                edges[head] = edges.get(head, 0) + 1
                total[head] = total.get(head, 0.0) + w
                sum_abs[head] = sum_abs.get(head, 0.0) + abs(w)
                carried += abs(w)
        want = sorted(sum_abs, key=lambda h: (-sum_abs[h], h))[:5]
        got = store.heads(key, top=5)
        assert [h.head for h in got] == want
        for h in got:
            assert (h.layer, h.index) == tuple(int(x) for x in re.findall(r"\d+", h.head))
            assert h.edges == edges[h.head]
            assert h.total == pytest.approx(total[h.head])
            assert h.sum_abs == pytest.approx(sum_abs[h.head])
            assert h.share == pytest.approx(sum_abs[h.head] / carried)


def test_by_head_needs_a_prompt_and_heads_a_known_one(store, stored):
    name = active_features(stored)[0]
    with pytest.raises(QueryError, match="needs a prompt"):
        store.drivers(name, by_head=True)
    with pytest.raises(QueryError, match="unknown prompt"):
        store.heads("no-such-prompt")


def test_examples_equal_the_stored_top_examples(store, stored):
    rows = store.cypher(
        "MATCH (f:Feature)-[t:TOP_EXAMPLE]->(p:Prompt) RETURN f.name AS f, p.key AS key, t.pos AS pos, t.activation AS a",
        limit=10**6,
    )
    by_feature: dict[str, list] = {}
    for r in rows:
        by_feature.setdefault(r["f"], []).append(r)
    assert by_feature
    for feature, ex in list(by_feature.items())[:15]:
        want = sorted(ex, key=lambda r: (-r["a"], r["key"]))[:3]
        got = store.examples(feature, top=3, window=2)
        assert [(e.prompt, e.pos, e.activation) for e in got] == [
            (r["key"], r["pos"], r["a"]) for r in want
        ]
        for e in got:
            tokens = stored["prompts"][e.prompt]["tokens"]
            assert e.token == tokens[e.pos]
            assert e.left == tuple(tokens[max(0, e.pos - 2) : e.pos])
            assert e.right == tuple(tokens[e.pos + 1 : e.pos + 3])
            assert f"[[{e.token}]]" in e.context


def test_feature_card(store, stored):
    feature = max(active_features(stored), key=lambda f: stored["drives"].degree(f))
    card = store.feature(feature, top=3)
    props = store.cypher("MATCH (f:Feature {name: $n}) RETURN properties(f) AS p", {"n": feature})[
        0
    ]["p"]
    for k in ("nActive", "nPrompts", "sumActivation", "maxActivation"):
        assert card.stats[k] == props[k]
    assert card.stats["meanActivation"] == pytest.approx(props["sumActivation"] / props["nActive"])
    assert card.deembed_tokens == (
        tuple(props["deembedTokens"]) if "deembedTokens" in props else None
    )
    assert [x.name for x in card.drivers] == [
        n for n, _ in expected_corpus(stored, feature, "drivers", "total", "abs", 3)
    ]
    assert [x.name for x in card.targets] == [
        n for n, _ in expected_corpus(stored, feature, "targets", "total", "abs", 3)
    ]
    vw = store.cypher(
        "MATCH (f:Feature {name: $n})-[v:VIRTUAL_WEIGHT]->(o) RETURN o.name AS o, v.weight AS w",
        {"n": feature},
    )
    want = sorted(vw, key=lambda r: -abs(r["w"]))[:3]
    assert [w for _, w in card.virtual_out] == pytest.approx([r["w"] for r in want])
    json.dumps(card.as_dict())


def brute_paths(g: nx.DiGraph, target: str) -> list[tuple[float, tuple[str, ...]]]:
    starts = [n for n in nx.ancestors(g, target) if g.in_degree(n) == 0]
    out = []
    for s in starts:
        for path in nx.all_simple_paths(g, s, target):
            w = [g.edges[a, b]["weight"] for a, b in itertools.pairwise(path)]
            out.append((abs(math.prod(w)), tuple(path)))
    return sorted(out, reverse=True)


def top_logit(g: nx.DiGraph) -> str:
    return max(
        (n for n, d in g.nodes(data=True) if d["kind"] == "logit"),
        key=lambda n: g.nodes[n]["value"],
    )


def test_paths_equal_brute_force(store, stored):
    for key in list(stored["graphs"])[:4]:
        g = stored["graphs"][key]
        target = top_logit(g)
        got = store.paths(key, top=5)
        assert got.target == target
        assert [p.nodes for p in got.paths] == [p for _, p in brute_paths(g, target)[:5]]
        feature = next(
            n for n in nx.ancestors(g, target) if g.nodes[n]["kind"] == "feature" and g.in_degree(n)
        )
        to_feature = store.paths(key, to=feature, top=3)
        assert [p.nodes for p in to_feature.paths] == [p for _, p in brute_paths(g, feature)[:3]]
        logit = store.paths(key, to=target, top=2)  # logit[ID]@POS names the same node
        assert logit.paths == store.paths(key, top=2).paths


def test_beam_paths_from_the_store(store, stored):
    """The beam search over a stored graph, against every path of up to 2 edges into the top
    logit enumerated here from the raw store, each with its contribution: the last edge's weight
    times each passed node's share (edge weight over the node's stored activation). A beam of
    100 keeps every one-edge path (no stored target has more than 64 inputs) and then the 100
    two-edge paths with the largest |contribution| among all of them."""
    for key in list(stored["graphs"])[:3]:
        g = stored["graphs"][key]
        target = top_logit(g)
        every = {}
        for s in set(g) - {target}:
            for path in nx.all_simple_paths(g, s, target, cutoff=2):
                w = [g[a][b]["weight"] for a, b in itertools.pairwise(path)]
                passed = zip(w[:-1], path[1:-1], strict=True)
                act = g.nodes
                every[tuple(path)] = w[-1] * math.prod(x / act[n]["activation"] for x, n in passed)
        got = store.paths(key, method="beam", beam_width=100, depth=2, top=10**4).paths
        for p in got:
            assert p.contribution == pytest.approx(every[p.nodes], rel=1e-9)
        one = {p.nodes for p in got if len(p.nodes) == 2}
        assert one == {q for q in every if len(q) == 2}
        two = sorted((abs(v) for q, v in every.items() if len(q) == 3), reverse=True)[:100]
        kept = sorted((abs(p.contribution) for p in got if len(p.nodes) == 3), reverse=True)
        assert kept == pytest.approx(two, rel=1e-9)
    with pytest.raises(QueryError, match=r"beam width 0: expected 1\.\.100"):
        store.paths(key, method="beam", beam_width=0)


def influence_numpy(g: nx.DiGraph, target: str) -> dict[str, float]:
    order = list(g)
    a = np.abs(nx.to_numpy_array(g, nodelist=order, weight="weight")).T
    rows = a.sum(axis=1, keepdims=True)
    a = np.divide(a, rows, out=np.zeros_like(a), where=rows > 0)
    e = np.zeros(len(order))
    e[order.index(target)] = 1.0
    return dict(zip(order, e @ np.linalg.inv(np.eye(len(order)) - a), strict=True))


@pytest.mark.parametrize("threshold", [0.5, 0.8])
def test_circuit_equals_linear_algebra(store, stored, threshold):
    for key in list(stored["graphs"])[:3]:
        g = stored["graphs"][key]
        target = top_logit(g)
        scores = influence_numpy(g, target)
        ranked = sorted(
            ((s, n) for n, s in scores.items() if n != target and s > 1e-15),
            key=lambda x: (-x[0], x[1]),
        )
        total = sum(s for s, _ in ranked)
        got = store.circuit(key, threshold)
        kept = {n.id for n in got.subgraph.nodes}
        assert target in kept
        got_sum = sum(scores[n] for n in kept if n != target)
        assert got_sum >= threshold * total * (1 - 1e-9)
        # minimal: dropping the weakest kept node falls below the share
        weakest = min(scores[n] for n in kept if n != target)
        assert got_sum - weakest < threshold * total
        assert all(scores[n] >= weakest - 1e-12 for n in kept if n != target)
        for n in got.subgraph.nodes:
            assert n.influence == pytest.approx(scores[n.id], rel=1e-6, abs=1e-12)
        assert {(e.source, e.target) for e in got.subgraph.edges} == {
            (a, b) for a, b in g.edges if a in kept and b in kept
        }


def test_prompts_with_equals_set_intersection(store, stored):
    where: dict[str, set[str]] = {}
    peaks: dict[tuple[str, str], float] = {}  # (prompt, feature) -> its largest activation
    for key, g in stored["graphs"].items():
        for _, d in g.nodes(data=True):
            if d["kind"] == "feature":
                name = f"mlp{d['layer']}tc[{d['feature']}]"
                where.setdefault(name, set()).add(key)
                peaks[key, name] = max(peaks.get((key, name), -math.inf), d["activation"])
    common = sorted(where, key=lambda n: (-len(where[n]), n))
    rare = sorted(where, key=lambda n: (len(where[n]), n))
    pairs = [
        (common[0], common[1]),
        (common[0], common[-1]),
        (common[2], common[5], common[7]),
        (common[3],),
        (rare[0], common[0]),
        (common[1], rare[0], common[4]),
    ]
    for names in pairs:
        want = set.intersection(*(where[n] for n in names))
        got = store.prompts_with(list(names), top=100)
        assert {m.key for m in got} == want
        score = {k: math.fsum(peaks[k, n] for n in names) for k in want}
        assert [m.key for m in got] == sorted(want, key=lambda k: (-score[k], k))
        for m in got:
            assert m.score == pytest.approx(score[m.key], rel=1e-9, abs=1e-12)
            g = stored["graphs"][m.key]
            assert set(m.positions) == set(names)
            for n in names:
                assert sorted(m.positions[n]) == sorted(
                    d["pos"] for _, d in g.nodes(data=True) if d["localId"].startswith(n + "@")
                )
        top = store.prompts_with(list(names), top=2)
        assert [m.key for m in top] == [m.key for m in got][:2]
    # The same feature twice (in two spellings) is one condition, its positions listed once.
    name = common[0]
    layer, index = re.fullmatch(r"mlp(\d+)tc\[(\d+)\]", name).groups()
    assert store.prompts_with([name, f"{layer}:{index}"], top=100) == store.prompts_with(
        [name], top=100
    )
    silent = [
        f"mlp{la}tc[{i}]" for la in (0, 1) for i in range(64) if f"mlp{la}tc[{i}]" not in where
    ]
    for other in silent[:2]:  # a feature that never fired: no prompt holds it
        assert store.prompts_with([name, other]) == ()
        assert store.prompts_with([other]) == ()


SCHEMA = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "neuronpedia" / "graph-schema.json").read_text()
)


def viewer_id(node_id: str, data: dict, n_layers: int) -> str:
    """The export's id of a stored node (the export's own convention, written out here)."""
    if m := re.fullmatch(r"mlp(\d+)tc\[(\d+)\]@(\d+)", node_id):
        return f"{m[1]}_{m[2]}_{m[3]}"
    if m := re.fullmatch(r"logit\[(\d+)\]@(\d+)", node_id):
        return f"{n_layers + 1}_{m[1]}_{m[2]}"
    raise AssertionError(node_id)


def test_export_graph_layout(store, stored):
    """The exported graph passes Neuronpedia's schema; features decode to their layer and
    index; every target keeps its whole stored input, bias and remainder mass folded into
    error nodes instead of dropped."""
    tset = store.tset()
    for key in list(stored["graphs"])[:3]:
        data = store.export_graph(key)
        jsonschema.Draft7Validator(SCHEMA).validate(data)
        g = stored["graphs"][key]
        ids = [n["node_id"] for n in data["nodes"]]
        assert len(ids) == len(set(ids))
        assert all(x["source"] in ids and x["target"] in ids for x in data["links"])
        assert data["metadata"]["prompt_tokens"] == stored["prompts"][key]["tokens"]
        assert data["metadata"]["schema_version"] == 1
        assert sum(n["is_target_logit"] for n in data["nodes"]) == 1
        folded = data["metadata"]["info"]["folded"]
        n_bias = sum(1 for _, d in g.nodes(data=True) if d["kind"] == "bias")
        n_rem = sum(1 for n in g if n.startswith("rem["))
        assert n_rem > 0  # the tiny store is ingested in lumped mode
        assert (folded["bias"], folded["remainder"]) == (n_bias, n_rem)
        assert len(data["nodes"]) == len(g) - n_bias - n_rem + folded["created_error_nodes"]
        inputs: dict[str, float] = {}
        for x in data["links"]:
            inputs[x["target"]] = inputs.get(x["target"], 0.0) + x["weight"]
        for node, d in g.nodes(data=True):
            if d["kind"] in ("feature", "logit") and g.in_degree(node):
                want = sum(w for _, _, w in g.in_edges(node, data="weight"))
                got = inputs[viewer_id(node, data, tset.n_layers)]
                assert got == pytest.approx(want, rel=1e-9, abs=1e-12), node
        for n in data["nodes"]:
            if n["feature_type"] == "cross layer transcoder":
                layer, index, _ = n["node_id"].split("_")
                assert uncantor(n["feature"]) == (int(layer), int(index))
            if n["feature_type"] == "logit":
                assert "(p=" in n["clerp"]


def test_nodes_carry_their_tokens(store, stored):
    for key in list(stored["graphs"])[:3]:
        info, graph = store.prompt_graph(key)
        tokens = stored["prompts"][key]["tokens"]
        assert len(info.token_ids) == len(tokens) > 0
        for n in graph.nodes:
            if n.kind == "logit":
                # The prompt's tokens name a logit's token where the prompt holds its id.
                if n.token_id in info.token_ids:
                    assert n.token == tokens[info.token_ids.index(n.token_id)]
            else:
                assert n.token == tokens[n.pos], n.id
        by_id = {n.id: n for n in graph.nodes}
        for row in store.paths(key, top=3).rows():
            shown = [
                f"{n} {by_id[n].token!r}" if by_id[n].token is not None else n
                for n in row["path"].split(" -> ")
            ]
            assert row["path_tokens"] == " -> ".join(shown)
            assert all(by_id[n].token is not None for n in row["path"].split(" -> ")[:-1])


def test_prompts_list_the_store(store, stored):
    listed = store.prompts(limit=1000)
    assert sorted(p.key for p in listed) == sorted(stored["prompts"])
    assert [p.key for p in store.prompts(limit=3, skip=2)] == sorted(stored["prompts"])[2:5]
    frame = listed.to_pandas()
    assert sorted(frame["prompt"]) == sorted(stored["prompts"])
    assert "tokens" not in frame.columns


@pytest.mark.parametrize("score", list(PromptScore))
def test_prompts_order_and_filter_by_score(store, score):
    raw = {
        r["key"]: r["s"]
        for r in store.cypher(
            f"MATCH (p:Prompt) RETURN p.key AS key, p.{score.value} AS s", limit=10**6
        )
    }
    assert raw
    assert all(0.0 <= v <= 1.0 for v in raw.values()), raw  # every prompt has it
    best = store.prompts(limit=1000, order=score)
    assert [p.key for p in best] == sorted(raw, key=lambda k: (-raw[k], k))
    assert [p.scores[score.field] for p in best] == sorted(raw.values(), reverse=True)
    worst = store.prompts(limit=1000, order=score, ascending=True)
    assert [p.key for p in worst] == sorted(raw, key=lambda k: (raw[k], k))
    cut = sorted(raw.values())[len(raw) // 2]
    kept = store.prompts(limit=1000, order=score, maximum=cut)
    assert sorted(p.key for p in kept) == sorted(k for k, v in raw.items() if v <= cut)
    kept = store.prompts(limit=1000, order=score, minimum=cut)
    assert sorted(p.key for p in kept) == sorted(k for k, v in raw.items() if v >= cut)
    key = next(iter(raw))
    assert store.prompt_summary(key).card()[score.field] == raw[key]


def test_prompt_summary_keeps_scores_apart_from_corpus_fields(store, stored):
    key = next(iter(stored["prompts"]))
    summary = store.prompt_summary(key)
    assert summary.key == key
    assert set(summary.scores) == {s.field for s in PromptScore}
    assert not set(summary.extra) & {s.value for s in PromptScore}
    card = summary.card()
    assert card["mode"] in {"exact", "lumped"}
    assert 0.0 < card["kept_influence"] <= 1.0
    # The stored graph keeps at most what the whole graph explains from the input.
    assert card["stored_replacement"] <= card["replacement"] + 1e-9
    with pytest.raises(QueryError, match="a score range needs a score"):
        store.prompts(minimum=0.5)


def test_errors_are_clear(store, stored):
    key = next(iter(stored["graphs"]))
    with pytest.raises(
        QueryError, match=r"index 64 is out of range; .* features 0\.\.63 per layer"
    ):
        store.drivers("mlp0tc[64]")
    with pytest.raises(QueryError, match=r"layer 7 is out of range; .* layers 0\.\.1"):
        store.examples("7:1")
    with pytest.raises(QueryError, match="unknown prompt 'no-such-prompt'"):
        store.paths("no-such-prompt")
    absent = next(
        f"mlp{layer}tc[{i}]"
        for layer in (1, 0)
        for i in range(64)
        if f"mlp{layer}tc[{i}]" not in {n for _, n, _ in occurrences(stored) if _ == key}
    )
    with pytest.raises(
        QueryError, match=re.escape(f"{absent} is not in the stored graph of prompt {key}")
    ):
        store.drivers(absent, prompt=key)
    with pytest.raises(QueryError, match="a position needs --prompt"):
        store.drivers("mlp0tc[1]@3")
    with pytest.raises(QueryError, match="unknown transcoder set"):
        CircuitStore(store.driver, store.database, "nope").drivers("0:1")


def test_cypher_is_read_only(store):
    assert store.cypher("MATCH (p:Prompt) RETURN count(p) AS n")[0]["n"] == N_PROMPTS
    with pytest.raises(Exception, match=r"(?i)write"):
        store.cypher("CREATE (:Feature {id: 'x'})")


def cookbook_blocks() -> list[tuple[dict[str, str], str]]:
    blocks = []
    for chunk in COOKBOOK.read_text().split("\n\n"):
        lines = [x for x in chunk.splitlines() if x.strip() and not x.startswith("//")]
        params = {}
        for line in lines:
            m = re.fullmatch(r":param (\w+) => (.+);", line)
            if m:
                params[m[1]] = m[2]
        body = "\n".join(x for x in lines if not x.startswith(":param")).rstrip(";")
        if body:
            blocks.append((params, body))
    return blocks


def test_every_cookbook_query_runs(store, stored):
    blocks = cookbook_blocks()
    assert len(blocks) >= 10
    key, name, _ = next(o for o in occurrences(stored) if o[1].startswith("mlp1"))
    layer, index = map(int, re.fullmatch(r"mlp(\d+)tc\[(\d+)\]", name).groups())
    real = {"prompt": key, "layer": layer, "index": index, "layer2": layer, "index2": index}
    # The interventions block reads what `verify` stores: store one run's checks first.
    from circuitstore.commands.verify import check_prompt
    from circuitstore.ingest.intervene.verify import VerifyConfig
    from circuitstore.ingest.intervene.write import write_report

    report = check_prompt(VerifyConfig(key, top=3, device="cpu", rank="effect"), store)
    assert write_report(store.driver, store.database, report) == len(report.checks) + 1
    # The QK block reads what `qk --store` stores: trace head attn<layer>[0] (the block's layer
    # is set to the feature's below) at the prompt's last position, and store it.
    from circuitstore.commands.qk import QKConfig, traced
    from circuitstore.ingest.qkstore.write import TracedPrompt, write_traces

    info = store.prompt(key)
    last = len(info.tokens) - 1
    done, _ = traced(QKConfig(key, f"attn{layer}[0]", last, last, check=0), store)
    owner = TracedPrompt(info.id, info.key, info.transcoder_set)
    assert write_traces(store.driver, store.database, owner, [(done.trace, None)]) == 1
    answered = 0
    for params, body in blocks:
        values = {k: store.cypher(f"RETURN {v} AS v")[0]["v"] for k, v in params.items()}
        store.cypher(body, values)  # as written in the file: must run
        values.update({k: v for k, v in real.items() if k in values})
        answered += bool(store.cypher(body, values))
    assert answered >= len(blocks) - 1


# -- subgraph scores, interventions and pinned exports (the viewer's questions) ---------------


def test_pinning_every_feature_gives_the_stored_scores(store, stored):
    """The scores of the subgraph that keeps every stored feature are the prompt's stored
    scores, which the engine computed (`edge_scores`) before writing: the store holds what the
    definition needs (edges, inputExplained, logit values). Pinning nothing scores lower."""
    for key, g in stored["graphs"].items():
        features = [n for n, d in g.nodes(data=True) if d["kind"] == "feature"]
        assert features
        every = store.subgraph_scores(key, features)
        scores = store.prompt_summary(key).scores
        assert every.replacement == pytest.approx(
            scores[PromptScore.STORED_REPLACEMENT.field], rel=1e-9
        ), key
        assert every.completeness == pytest.approx(
            scores[PromptScore.STORED_COMPLETENESS.field], rel=1e-9
        ), key
        assert every.pinned == tuple(features)
        none = store.subgraph_scores(key, [])
        assert none.replacement <= every.replacement + 1e-12
        half = store.subgraph_scores(key, features[::2])
        assert none.replacement - 1e-12 <= half.replacement <= every.replacement + 1e-12


def test_subgraph_scores_refuse_ids_the_graph_lacks(store, stored):
    key = next(iter(stored["graphs"]))
    with pytest.raises(QueryError, match=re.escape(f"is not in the stored graph of prompt {key}")):
        store.subgraph_scores(key, ["mlp0tc[63]@999"])
    with pytest.raises(QueryError, match=r"node 'mlp0tc\[\]'.*pinned in prompt"):
        store.subgraph_scores(key, ["mlp0tc[]"])
    with pytest.raises(QueryError, match="unknown prompt 'nope'"):
        store.subgraph_scores("nope", [])


def test_export_pins_exactly_the_pinned_nodes(store, stored):
    tset = store.tset()
    key, g = next(iter(stored["graphs"].items()))
    features = sorted(n for n, d in g.nodes(data=True) if d["kind"] == "feature")[:3]
    logit = next(n for n, d in g.nodes(data=True) if d["kind"] == "logit")
    pinned = [*features, logit]
    data = store.export_graph(key, pinned=pinned)
    jsonschema.Draft7Validator(SCHEMA).validate(data)
    want = [viewer_id(n, data, tset.n_layers) for n in pinned]
    assert data["qParams"]["pinnedIds"] == want
    assert set(want) <= {n["node_id"] for n in data["nodes"]}
    assert store.export_graph(key)["qParams"]["pinnedIds"] == []
    with pytest.raises(QueryError, match="is not in the stored graph"):
        store.export_graph(key, pinned=["mlp1tc[0]@999"])


def test_interventions_read_what_verify_wrote(store, stored):
    """`interventions` returns what `verify` stored, with the report's own numbers: by prompt
    (key or id), by feature (any position, or one) and both, ordered, capped at `top`."""
    from circuitstore.commands.verify import check_prompt
    from circuitstore.ingest.intervene.verify import VerifyConfig
    from circuitstore.ingest.intervene.write import write_report
    from circuitstore.query.results import InterventionInfo

    key = sorted(stored["graphs"])[1]
    scale = 0.25  # apart from any other test's checks of the prompt (verify's default is 0)
    report = check_prompt(VerifyConfig(key, top=3, scale=scale, device="cpu"), store)
    write_report(store.driver, store.database, report)
    checks = [("single", c) for c in report.checks] + [("together", report.circuit)]
    want = sorted(
        (
            InterventionInfo(
                key, kind, tuple(sorted(c.features)), scale, c.predicted_diff,
                c.observed_diff, c.flips, c.top_token,
            )
            for kind, c in checks
        ),
        key=lambda i: (i.kind, i.features),
    )  # fmt: skip
    got = store.interventions(prompt=key)
    assert [i for i in got if i.scale == scale] == want
    order = [(i.prompt, i.kind, i.features, i.scale) for i in got]
    assert order == sorted(order)
    assert store.interventions(prompt=store.prompt(key).id) == got
    assert store.interventions(prompt=key, top=2) == got[:2]
    assert set(want) <= set(store.interventions(top=1000))
    node = report.checks[0].features[0]
    name = node.split("@")[0]
    on = [i for i in want if any(f.split("@")[0] == name for f in i.features)]
    assert [i for i in store.interventions(name, prompt=key) if i.scale == scale] == on
    assert [i for i in store.interventions(node, top=1000) if i.prompt == key] == [
        i for i in store.interventions(name, top=1000) if i.prompt == key and node in i.features
    ]
    assert got.rows()[0]["features"] == ", ".join(got[0].features)
    # Every feature of the ingested set has its node: a set without them shows the refusal.
    probe = "probe-set-without-features"
    with store.driver.session(database=store.database) as s:
        s.run("CREATE (:TranscoderSet {id: $id, nLayers: 2, dTranscoder: 64})", id=probe).consume()
    try:
        refusal = f"unknown feature mlp0tc[1] in transcoder set {probe}"
        with pytest.raises(QueryError, match=re.escape(refusal)):
            CircuitStore(store.driver, store.database, probe).interventions("mlp0tc[1]")
    finally:
        with store.driver.session(database=store.database) as s:
            s.run("MATCH (t:TranscoderSet {id: $id}) DELETE t", id=probe).consume()
