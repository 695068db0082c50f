"""QK traces in the store: written (`ingest.qkstore`), read back equal (`CircuitStore.qk_traces`),
linked to the graph nodes they name, replaced on a rerun, summed across the corpus
(`qk_drivers`), and shown by `query qk` / `query qk-drivers`."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict

import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.ingest.qkstore.write import TracedEdge, trace_id, write_traces
from circuitstore.query import CircuitStore
from circuitstore.query.qk.records import QKTerm, QKTrace
from circuitstore.schema.errors import QueryError

from .helpers import fill

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(driver, neo4j_settings, tiny_weights, tmp_path_factory) -> CircuitStore:  # type: ignore[no-untyped-def]
    fill(driver, neo4j_settings.database, tiny_weights, tmp_path_factory.mktemp("qk"))
    s = CircuitStore(driver, neo4j_settings.database)
    s.cypher("MATCH (t:QKTrace) RETURN count(t) AS n")  # the label may be new: plans either way
    with driver.session(database=neo4j_settings.database) as session:
        session.run("MATCH (t:QKTrace) DETACH DELETE t").consume()
    return s


def graph_nodes(store: CircuitStore, key: str) -> list[dict]:
    return store.cypher(
        "MATCH (p:Prompt {key: $k}) MATCH (n:GraphNode {prompt: p.id}) "
        "RETURN n.localId AS id, n.pos AS pos, n.kind AS kind ORDER BY n.localId",
        {"k": key},
        limit=10**6,
    )


def made_trace(store: CircuitStore, key: str, layer: int, head: int, scale: float) -> QKTrace:
    """A trace over real node ids of the prompt's stored graph (and two it lacks), its values
    arbitrary but distinct: what the store must keep, not what the model computes."""
    info = store.prompt(key)
    nodes = graph_nodes(store, key)
    features = [n["id"] for n in nodes if n["kind"] == "feature"][:3]
    t = max(n["pos"] for n in nodes if n["kind"] == "feature")
    outside_q, outside_k = "mlp0tc[63]@1", "mlp1err@0"
    assert outside_q not in {n["id"] for n in nodes}
    queries = [*features, outside_q, "embed0@1"]
    keys = [outside_k, *features[:2]]
    q_side = tuple(QKTerm(q, None, scale * (0.5 - i) / 3) for i, q in enumerate(queries))
    k_side = tuple(QKTerm(None, k, scale * (i + 1) / 7) for i, k in enumerate(keys))
    pairs = tuple(
        QKTerm(q, k, scale * 0.1 * (i + 1))
        for i, (q, k) in enumerate(zip(queries, keys, strict=False))
    )
    return QKTrace(
        prompt=info.key,
        prompt_id=info.id,
        transcoder_set=info.transcoder_set,
        layer=layer,
        head=head,
        query_pos=t,
        key_pos=0,
        mode="lumped",
        score=scale * 1.2345678901234567,
        total=scale * 1.2345678901234566,
        probability=0.3141592653589793,
        n_query=17,
        n_key=11,
        pairs=pairs,
        query_side=q_side,
        key_side=k_side,
    )


def keys(store: CircuitStore) -> list[str]:
    return [p.key for p in store.prompts(limit=100)]


def test_a_stored_trace_reads_back_equal_field_by_field(store):
    key = keys(store)[0]
    trace = made_trace(store, key, 1, 0, 1.0)
    assert write_traces(store.driver, store.database, [(trace, None)]) == 1
    (back,) = store.qk_traces(key)
    assert back == trace  # every field, floats exactly
    assert store.qk_traces(key, head="attn1[0]") == (trace,)
    assert store.qk_traces(key, head="attn0[0]") == ()


def test_kept_marginals_link_the_graph_nodes_they_name(store):
    key = keys(store)[0]
    trace = made_trace(store, key, 1, 1, 2.0)
    write_traces(store.driver, store.database, [(trace, None)])
    tid = trace_id(trace.prompt_id, 1, 1, trace.query_pos, trace.key_pos, trace.mode)
    stored = {n["id"] for n in graph_nodes(store, key)}
    for side, terms, rel in (
        ("query", trace.query_side, "QK_QUERY"),
        ("key", trace.key_side, "QK_KEY"),
    ):
        links = store.cypher(
            f"MATCH (t:QKTrace {{id: $id}})-[r:{rel}]->(n:GraphNode) "
            "RETURN n.localId AS id, r.value AS value, r.rank AS rank ORDER BY r.rank",
            {"id": tid},
        )
        want = [
            {"id": getattr(c, side), "value": c.value, "rank": i + 1}
            for i, c in enumerate(terms)
            if getattr(c, side) in stored
        ]
        assert links == want
        assert 0 < len(want) < len(terms)
    (of,) = store.cypher(
        "MATCH (t:QKTrace {id: $id})-[:OF_PROMPT]->(p:Prompt) RETURN p.key AS key", {"id": tid}
    )
    assert of["key"] == key


def test_a_rerun_replaces_the_trace_and_its_links(store):
    key = keys(store)[1]
    first = made_trace(store, key, 0, 1, 1.0)
    write_traces(store.driver, store.database, [(first, None)])
    second = made_trace(store, key, 0, 1, -3.0)
    fewer = QKTrace(**{**second.__dict__, "key_side": second.key_side[:1]})
    edge = TracedEdge("embed0@0", "mlp1tc[2]@3", 0.25)
    write_traces(store.driver, store.database, [(fewer, edge)])
    assert store.qk_traces(key, head="attn0[1]") == (fewer,)
    n = store.cypher(
        "MATCH (t:QKTrace {promptKey: $k, layer: 0, head: 1}) "
        "RETURN count(t) AS traces, COUNT { (t)-[:QK_KEY]->() } AS keyLinks, "
        "t.target AS target, t.edgeWeight AS w",
        {"k": key},
    )
    assert n == [{"traces": 1, "keyLinks": 0, "target": "mlp1tc[2]@3", "w": 0.25}]


def test_drivers_sum_feature_marginals_over_the_heads_traces(store):
    written = []
    for i, key in enumerate(keys(store)[:4]):
        trace = made_trace(store, key, 1, 2, 1.0 + i)
        write_traces(store.driver, store.database, [(trace, None)])
        written.append(trace)
    for side in ("query", "key"):
        sums: dict[str, list[float]] = defaultdict(list)
        for t in written:
            terms = t.query_side if side == "query" else t.key_side
            per_trace: dict[str, float] = defaultdict(float)
            for c in terms:
                local = c.query if side == "query" else c.key
                if re.fullmatch(r"mlp\d+tc\[\d+\]@\d+", local):
                    per_trace[local.split("@")[0]] += c.value
            for f, v in per_trace.items():
                sums[f].append(v)
        for sign in ("positive", "negative", "abs"):
            got = store.qk_drivers("attn1[2]", side, top=50, sign=sign)
            ranked = sorted(sums.items(), key=lambda kv: (-math.fsum(kv[1]), kv[0]))
            if sign == "negative":
                ranked = [kv for kv in reversed(ranked) if math.fsum(kv[1]) < 0]
            elif sign == "positive":
                ranked = [kv for kv in ranked if math.fsum(kv[1]) > 0]
            else:
                ranked = sorted(sums.items(), key=lambda kv: (-abs(math.fsum(kv[1])), kv[0]))
            assert [d.feature for d in got] == [f for f, _ in ranked]
            for d, (_, vs) in zip(got, ranked, strict=True):
                assert d.total == pytest.approx(math.fsum(vs), rel=1e-12)
                assert d.traces == len(written)
                assert d.n == len(vs)
                assert d.mean == pytest.approx(d.total / d.n, rel=1e-12)


def test_bad_questions_are_refused(store):
    key = keys(store)[0]
    for head in ("attn9[0]", "attn0[99]", "attention0"):
        with pytest.raises(QueryError, match="head"):
            store.qk_traces(key, head=head)
        with pytest.raises(QueryError, match="head"):
            store.qk_drivers(head)
    with pytest.raises(QueryError, match="unknown prompt"):
        store.qk_traces("no-such-prompt")
    with pytest.raises(QueryError, match="side"):
        store.qk_drivers("attn0[0]", side="value")


def test_query_commands_show_traces_and_drivers(store, neo4j_env):
    key = keys(store)[2]
    trace = made_trace(store, key, 1, 3, 1.5)
    write_traces(store.driver, store.database, [(trace, None)])
    runner = CliRunner()
    done = runner.invoke(
        cli, ["query", "qk", "--prompt", key, "--head", "attn1[3]", "--format", "json"]
    )
    assert done.exit_code == 0, done.output
    (row,) = json.loads(done.output)
    assert row["head"] == "attn1[3]"
    assert row["score"] == trace.score
    terms = ["query", "qk", "--prompt", key, "--head", "attn1[3]", "--terms"]
    done = runner.invoke(cli, [*terms, "--format", "csv"])
    assert done.exit_code == 0, done.output
    n_terms = len(trace.pairs) + len(trace.query_side) + len(trace.key_side)
    assert len(done.output.strip().splitlines()) == 1 + n_terms
    done = runner.invoke(cli, terms)
    assert done.exit_code == 0
    assert "embed0@1 '" in done.output
    done = runner.invoke(cli, ["query", "qk-drivers", "attn1[3]", "--format", "json"])
    assert done.exit_code == 0, done.output
    assert [r["feature"] for r in json.loads(done.output)] == [
        d.feature for d in store.qk_drivers("attn1[3]")
    ]
    done = runner.invoke(cli, ["query", "qk-drivers", "attn1[99]"])
    assert done.exit_code != 0
    assert len(done.output.strip().splitlines()) == 1
