"""QK traces in the store, computed by the real engine (`ingest.qk`) on the tiny model: stored
by `ingest --qk-top` with each prompt and by `ingest.qkstore.write_traces`, read back equal
(`CircuitStore.qk_traces`), linked to the graph nodes they name, replaced on a rerun, summed
across the corpus (`qk_drivers`), and shown by `query qk` / `query qk-drivers`."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from pathlib import Path

import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.commands.qk import as_record
from circuitstore.ingest.attribution.api import load_engine
from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.model import all_tokens
from circuitstore.ingest.qk import trace_head
from circuitstore.ingest.qkstore.select import TRACE_TERMS
from circuitstore.ingest.qkstore.write import TracedEdge, TracedPrompt, trace_id, write_traces
from circuitstore.ingest.runner import IngestRunner
from circuitstore.query import CircuitStore
from circuitstore.query.qk.read import traced_edges
from circuitstore.schema.apply import apply_schema
from circuitstore.schema.errors import QueryError
from tests.docs_examples import cookbook_blocks

from .helpers import make_corpus, wipe_data

pytestmark = pytest.mark.slow

K = 3
FEATURE = re.compile(r"mlp\d+tc\[\d+\]@\d+")


@pytest.fixture(scope="module")
def ingest_cfg(tiny_weights, tmp_path_factory) -> IngestConfig:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("qk")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(6, seed=7)) + "\n")
    model, tcs = tiny_weights
    return IngestConfig.from_flat(
        model=str(model),
        transcoders=str(tcs),
        prompts=str(corpus),
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        progress=False,
        qk_top=K,
    )


@pytest.fixture(scope="module")
def store(driver, neo4j_settings, ingest_cfg) -> CircuitStore:  # type: ignore[no-untyped-def]
    wipe_data(driver)
    apply_schema(driver, neo4j_settings.database)
    summary = IngestRunner(ingest_cfg, driver, neo4j_settings.database).run()
    assert summary.written == 6
    assert summary.qk_traces == 6 * K
    return CircuitStore(driver, neo4j_settings.database)


@pytest.fixture(scope="module")
def engine(ingest_cfg):  # type: ignore[no-untyped-def]
    return load_engine(ingest_cfg.model, ingest_cfg.transcoders, device="cpu")


def prompts(store: CircuitStore) -> list[TracedPrompt]:
    infos = (store.prompt(p.key) for p in store.prompts(limit=100))
    return [TracedPrompt(p.id, p.key, p.transcoder_set) for p in infos]


def stored_edges(store: CircuitStore, key: str) -> list[dict]:
    return store.cypher(
        "MATCH (p:Prompt {key: $k}) MATCH (a:GraphNode {prompt: p.id})-[e:ATTR]->(b) "
        "RETURN a.localId AS source, b.localId AS target, e.weight AS weight, e.kind AS kind, "
        "a.pos AS sp, b.pos AS tp",
        {"k": key},
        limit=10**6,
    )


def test_ingest_traces_each_prompts_strongest_attention_edges(store, engine):
    for prompt in prompts(store):
        edges = stored_edges(store, prompt.key)
        found = {(e["source"], e["target"]): e for e in edges}
        traced = traced_edges(store, prompt.key)
        assert len(traced) == K
        strongest = sorted(abs(e["weight"]) for e in edges if e["kind"] == "attention")[-K:]
        # Attention edges from a constant have no head: the traced ones are the strongest of
        # the rest, so at most as strong as the K strongest overall.
        for t in traced:
            e = found[t.source, t.target]
            assert e["kind"] == "attention"
            assert (t.trace.query_pos, t.trace.key_pos) == (e["tp"], e["sp"])
            assert t.weight == e["weight"]
            assert abs(t.weight) <= strongest[-1]
        tokens = all_tokens(engine.model, store.prompt(prompt.key).text)
        for t in traced[:1]:  # the stored trace is the engine's, recomputed from scratch
            raw = trace_head(
                engine,
                tokens,
                t.trace.layer,
                t.trace.head,
                t.trace.query_pos,
                t.trace.key_pos,
                mode=t.trace.mode,
                top=TRACE_TERMS,
            ).trace
            want = as_record(raw, prompt)
            assert [c.query for c in t.trace.query_side] == [c.query for c in want.query_side]
            assert t.trace.score == pytest.approx(want.score, rel=1e-5)
            assert t.trace.total == pytest.approx(t.trace.score, rel=1e-4, abs=1e-5)


def test_an_ingest_rerun_adds_no_trace(store, ingest_cfg):
    before = store.cypher("MATCH (t:QKTrace) RETURN count(t) AS n")[0]["n"]
    IngestRunner(ingest_cfg, store.driver, store.database).run()
    assert store.cypher("MATCH (t:QKTrace) RETURN count(t) AS n")[0]["n"] == before == 6 * K


def test_a_computed_trace_reads_back_equal_field_by_field(store, engine):
    prompt = prompts(store)[0]
    tokens = all_tokens(engine.model, store.prompt(prompt.key).text)
    last = int(tokens.shape[0]) - 1
    raw = trace_head(engine, tokens, 1, 1, last, 1, mode="lumped", top=7).trace
    assert write_traces(store.driver, store.database, prompt, [(raw, None)]) == 1
    back = [t for t in store.qk_traces(prompt.key, head="attn1[1]") if t.key_pos == 1]
    assert back == [as_record(raw, prompt)]  # every field, floats exactly


def test_kept_marginals_link_the_graph_nodes_they_name(store, engine):
    prompt = prompts(store)[1]
    tokens = all_tokens(engine.model, store.prompt(prompt.key).text)
    last = int(tokens.shape[0]) - 1
    raw = trace_head(engine, tokens, 1, 0, last, 2, mode="lumped", top=50).trace
    write_traces(store.driver, store.database, prompt, [(raw, None)])
    tid = trace_id(prompt.id, 1, 0, last, 2, "lumped")
    stored = {
        r["id"]
        for r in store.cypher(
            "MATCH (n:GraphNode {prompt: $p}) RETURN n.localId AS id", {"p": prompt.id}, 10**6
        )
    }
    for side, rel in ((raw.query_side, "QK_QUERY"), (raw.key_side, "QK_KEY")):
        links = store.cypher(
            f"MATCH (t:QKTrace {{id: $id}})-[r:{rel}]->(n:GraphNode) "
            "RETURN n.localId AS id, r.value AS value, r.rank AS rank ORDER BY r.rank",
            {"id": tid},
        )
        want = [
            {"id": name, "value": v, "rank": i + 1}
            for i, (name, v) in enumerate(side)
            if name in stored
        ]
        assert links == want
        assert len(want) < len(side)  # the q/k biases (and others) are in the lists only
    (of,) = store.cypher(
        "MATCH (t:QKTrace {id: $id})-[:OF_PROMPT]->(p:Prompt) RETURN p.key AS key", {"id": tid}
    )
    assert of["key"] == prompt.key


def test_a_rerun_replaces_the_trace_and_its_links(store, engine):
    prompt = prompts(store)[2]
    tokens = all_tokens(engine.model, store.prompt(prompt.key).text)
    last = int(tokens.shape[0]) - 1
    wide = trace_head(engine, tokens, 0, 1, last, 0, mode="lumped", top=40).trace
    write_traces(store.driver, store.database, prompt, [(wide, None)])
    narrow = trace_head(engine, tokens, 0, 1, last, 0, mode="lumped", top=1).trace
    edge = TracedEdge("embed0@0", f"mlp1tc[2]@{last}", 0.25)
    write_traces(store.driver, store.database, prompt, [(narrow, edge)])
    back = [t for t in store.qk_traces(prompt.key, head="attn0[1]") if t.query_pos == last]
    assert back == [as_record(narrow, prompt)]
    (row,) = store.cypher(
        "MATCH (t:QKTrace {prompt: $p, layer: 0, head: 1, queryPos: $q, keyPos: 0}) "
        "RETURN count(t) AS traces, sum(COUNT { (t)-[:QK_QUERY|QK_KEY]->() }) AS links, "
        "collect(t.target) AS target",
        {"p": prompt.id, "q": last},
    )
    assert row["traces"] == 1
    assert row["links"] <= 2
    assert row["target"] == [f"mlp1tc[2]@{last}"]


def expected_drivers(store: CircuitStore, head: str, side: str) -> dict[str, list[float]]:
    """Per feature, its marginals on `side` (its positions in one trace summed), over every
    stored trace of `head`: from the traces read back, not from the store's aggregation."""
    sums: dict[str, list[float]] = defaultdict(list)
    for prompt in prompts(store):
        for t in store.qk_traces(prompt.key, head=head):
            per_trace: dict[str, float] = defaultdict(float)
            for c in t.query_side if side == "query" else t.key_side:
                name = c.query if side == "query" else c.key
                if FEATURE.fullmatch(name):
                    per_trace[name.split("@")[0]] += c.value
            for f, v in per_trace.items():
                sums[f].append(v)
    return sums


def test_drivers_sum_feature_marginals_over_the_heads_traces(store):
    heads = store.cypher(
        "MATCH (t:QKTrace) RETURN DISTINCT 'attn' + t.layer + '[' + t.head + ']' AS h ORDER BY h"
    )
    checked = 0
    for head in (r["h"] for r in heads):
        n_traces = sum(len(store.qk_traces(p.key, head=head)) for p in prompts(store))
        for side in ("query", "key"):
            sums = expected_drivers(store, head, side)
            totals = {f: math.fsum(vs) for f, vs in sums.items()}
            for sign in ("positive", "negative", "abs"):
                got = store.qk_drivers(head, side, top=1000, sign=sign)
                if sign == "positive":
                    want = sorted(
                        (f for f in totals if totals[f] > 0), key=lambda f: (-totals[f], f)
                    )
                elif sign == "negative":
                    want = sorted(
                        (f for f in totals if totals[f] < 0), key=lambda f: (totals[f], f)
                    )
                else:
                    want = sorted(totals, key=lambda f: (-abs(totals[f]), f))
                assert [d.feature for d in got] == want
                for d in got:
                    assert d.total == pytest.approx(totals[d.feature], rel=1e-9, abs=1e-12)
                    assert d.n == len(sums[d.feature])
                    assert d.traces == n_traces
                    assert d.mean == pytest.approx(d.total / d.n, rel=1e-12)
                checked += len(got)
    assert checked > 0


def test_bad_questions_are_refused(store):
    key = prompts(store)[0].key
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
    key = prompts(store)[3].key
    traces = store.qk_traces(key)
    trace = traces[0]
    runner = CliRunner()
    done = runner.invoke(cli, ["query", "qk", "--prompt", key, "--format", "json"])
    assert done.exit_code == 0, done.output
    rows = json.loads(done.output)
    assert len(rows) == len(traces)
    assert rows[0]["head"] == trace.head_name
    assert rows[0]["score"] == trace.score
    terms = ["query", "qk", "--prompt", key, "--head", trace.head_name, "--terms"]
    done = runner.invoke(cli, [*terms, "--format", "csv"])
    assert done.exit_code == 0, done.output
    mine = [t for t in traces if t.head_name == trace.head_name]
    n_terms = sum(len(t.pairs) + len(t.query_side) + len(t.key_side) for t in mine)
    assert len(done.output.strip().splitlines()) == 1 + n_terms
    done = runner.invoke(cli, terms)
    assert done.exit_code == 0
    assert re.search(r"@\d+ '", done.output)  # tokens beside the contributors
    done = runner.invoke(
        cli, ["query", "qk-drivers", trace.head_name, "--sign", "abs", "--format", "json"]
    )
    assert done.exit_code == 0, done.output
    assert [r["feature"] for r in json.loads(done.output)] == [
        d.feature for d in store.qk_drivers(trace.head_name, sign="abs")
    ]
    done = runner.invoke(cli, ["query", "qk-drivers", "attn1[99]"])
    assert done.exit_code != 0
    assert len(done.output.strip().splitlines()) == 1


def test_the_cookbook_block_answers_as_qk_drivers(store):
    (block,) = [b for b in cookbook_blocks() if "QKTrace" in b.statement]
    (first,) = store.cypher("MATCH (t:QKTrace) RETURN t.layer AS layer, t.head AS head LIMIT 1")
    head = f"attn{first['layer']}[{first['head']}]"
    for side in ("key", "query"):
        rows = store.cypher(block.statement, {**first, "side": side, "top": 1000})
        want = [d for d in store.qk_drivers(head, side, top=1000) if d.total > 0]
        assert [r["feature"] for r in rows[: len(want)]] == [d.feature for d in want]
        for r, d in zip(rows, want, strict=False):
            assert (r["traces"], r["total"]) == (d.n, pytest.approx(d.total, rel=1e-12))


def test_an_export_carries_the_stored_traces_and_passes_the_schema(store):
    import jsonschema

    schema_file = Path(__file__).parents[1] / "fixtures" / "neuronpedia" / "graph-schema.json"
    schema = json.loads(schema_file.read_text())
    key = prompts(store)[4].key
    traced = traced_edges(store, key)
    data = store.export_graph(key, node_threshold=1.0)
    jsonschema.Draft7Validator(schema).validate(json.loads(json.dumps(data)))
    shown = {n["node_id"]: n for n in data["nodes"]}
    with_qk = [n for n in data["nodes"] if "qk_tracing_results" in n]
    assert 0 < len(with_qk) <= len({t.target for t in traced})
    only = data["qk_only_nodes"]
    for n in with_qk:
        r = n["qk_tracing_results"]
        for c in r["top_q_marginal_contributors"] + r["top_k_marginal_contributors"]:
            assert c[0] in shown or c[0] in only
