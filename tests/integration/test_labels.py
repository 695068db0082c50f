"""Feature labels end to end against the store the ingest job fills: `labels import` of a file in
Neuronpedia's export format (its real field names), the full-text `query search`, the labels in
tables, in the feature card and in the viewers' export, and bad files refused with nothing
written."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from circuitstore.cli import cli
from circuitstore.query import CircuitStore
from circuitstore.query.labels import import_labels
from circuitstore.schema.errors import InputError

from .helpers import fill

pytestmark = pytest.mark.slow

LABEL_PROPS = ("label", "labels", "labelSource", "labelExplainer", "labelType", "labelScore")


def explanation(layer: int, index: int, description: str, **extra) -> dict:
    """One line of Neuronpedia's explanation export (`v1/<model>/<source>/explanations/
    batch-<n>.jsonl.gz`), every column it writes."""
    return {
        "id": f"clx{layer:02d}{index:06d}{len(description)}",
        "modelId": "gpt2-small",
        "layer": f"{layer}-tres-dc",
        "index": str(index),
        "authorId": "clkht01d40000jv08hvalcvly",
        "description": description,
        "embedding": None,
        "typeName": "oai_token-act-pair",
        "explanationModelName": "gpt-4o-mini",
        "umap_x": 0.1,
        "umap_y": -0.2,
        "umap_cluster": 3,
        "umap_log_feature_sparsity": -2.5,
        **extra,
    }


def write_gz(path: Path, rows: list[dict]) -> Path:
    path.write_bytes(gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode()))
    return path


def labelled(store: CircuitStore) -> dict[str, dict]:
    rows = store.cypher(
        "MATCH (f:Feature) WHERE f.label IS NOT NULL RETURN f.name AS name, "
        + ", ".join(f"f.{p} AS {p}" for p in LABEL_PROPS),
        limit=10**6,
    )
    return {r["name"]: {p: r[p] for p in LABEL_PROPS} for r in rows}


def unlabel(store: CircuitStore) -> None:
    with store.driver.session(database=store.database) as s:
        s.run(
            "MATCH (f:Feature) WHERE f.label IS NOT NULL REMOVE "
            + ", ".join(f"f.{p}" for p in (*LABEL_PROPS, "labelId"))
        ).consume()


@pytest.fixture(scope="module")
def store(driver, neo4j_settings, tiny_weights, tmp_path_factory):  # type: ignore[no-untyped-def]
    fill(driver, neo4j_settings.database, tiny_weights, tmp_path_factory.mktemp("labels"))
    s = CircuitStore(driver, neo4j_settings.database)
    unlabel(s)
    yield s
    unlabel(s)  # the next modules share this store


@pytest.fixture(scope="module")
def hub(store):  # type: ignore[no-untyped-def]
    """The layer-1 feature with the most stored inputs in one prompt, that prompt, and one of
    its layer-0 drivers there."""
    r = store.cypher(
        "MATCH (s:Occurrence {layer: 0})-[:ATTR]->(o:Occurrence {layer: 1}) "
        "WITH o, collect(s.feature) AS drivers, count(*) AS c "
        "MATCH (p:Prompt {id: o.prompt}) "
        "RETURN p.key AS key, o.localId AS occ, o.feature AS index, drivers ORDER BY c DESC LIMIT 1"
    )[0]
    return {
        "prompt": r["key"],
        "occurrence": r["occ"],
        "index": r["index"],
        "driver": r["drivers"][0],
    }


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def test_import_search_and_show(store, hub, neo4j_env, tmp_path):
    target, driver = hub["index"], hub["driver"]
    rows = [
        explanation(1, target, "names of people in a sentence"),
        explanation(1, target, "a weaker reading: proper nouns", scoreV1=0.2),
        explanation(1, target, "the indirect object of giving", scoreV1=0.7),
        explanation(0, driver, "the word 'went' after a subject"),
        explanation(0, 63, "   "),  # a blank explanation: skipped, counted
    ]
    path = write_gz(tmp_path / "batch-0.jsonl.gz", rows)
    code, out = run("labels", "import", str(path), "--source", "tres-dc", "--format", "json")
    assert code == 0, out
    summary = json.loads(out)[0]
    assert (summary["explanations"], summary["features"], summary["written"]) == (4, 2, 2)
    assert summary["skipped_blank"] == 1
    got = labelled(store)
    assert set(got) == {f"mlp1tc[{target}]", f"mlp0tc[{driver}]"}
    hub_label = got[f"mlp1tc[{target}]"]
    # The best scored explanation is the label; every explanation is kept.
    assert hub_label["label"] == "the indirect object of giving"
    assert sorted(hub_label["labels"]) == sorted(r["description"] for r in rows[:3])
    assert hub_label["labelSource"] == "neuronpedia:gpt2-small/1-tres-dc"
    assert hub_label["labelExplainer"] == "gpt-4o-mini"
    assert hub_label["labelType"] == "oai_token-act-pair"
    assert hub_label["labelScore"] == 0.7

    # Importing again changes nothing.
    code, out = run("labels", "import", str(path))
    assert code == 0, out
    assert labelled(store) == got

    # Search: by the label, and by another explanation of the same feature (the list).
    found = store.search("indirect object")
    assert [m.name for m in found][:1] == [f"mlp1tc[{target}]"]
    assert found[0].label == "the indirect object of giving"
    assert [m.name for m in store.search("proper nouns")][:1] == [f"mlp1tc[{target}]"]
    assert [m.name for m in store.search("'went' (subject)")] == [f"mlp0tc[{driver}]"]
    assert store.search("zebra") == ()
    assert [m.name for m in store.search("indir*", lucene=True)] == [f"mlp1tc[{target}]"]
    code, out = run("query", "search", "names of people", "--format", "csv")
    assert code == 0, out
    assert f"mlp1tc[{target}]" in out

    # Labels where features are named: corpus drivers, the prompt's drivers, the card, paths,
    # circuits, the export's clerp.
    corpus = store.drivers(f"mlp1tc[{target}]", top=64, sign="abs")
    by_name = {x.name: x.label for x in corpus.links}
    assert by_name[f"mlp0tc[{driver}]"] == "the word 'went' after a subject"
    local = store.drivers(hub["occurrence"], prompt=hub["prompt"], top=64, sign="abs")
    assert {x.label for x in local.links if x.name.startswith(f"mlp0tc[{driver}]@")} == {
        "the word 'went' after a subject"
    }
    code, out = run(
        "query",
        "drivers",
        hub["occurrence"],
        "--prompt",
        hub["prompt"],
        "--top",
        "64",
        "--sign",
        "abs",
    )
    assert code == 0, out
    assert "label" in out.splitlines()[0]
    assert "the word 'went' after a subject" in out
    card = store.feature(f"mlp1tc[{target}]")
    assert card.label is not None
    assert card.label.text == "the indirect object of giving"
    assert card.label.explainer == "gpt-4o-mini"
    code, out = run("query", "feature", f"mlp1tc[{target}]")
    assert code == 0, out
    assert "label: the indirect object of giving" in out
    assert "source neuronpedia:gpt2-small/1-tres-dc, explainer gpt-4o-mini" in out
    _, graph = store.prompt_graph(hub["prompt"])
    for n in graph.nodes:
        if n.kind == "feature" and (n.layer, n.feature) == (1, target):
            assert n.label == "the indirect object of giving"
    data = store.export_graph(hub["prompt"])
    clerps = {n["clerp"] for n in data["nodes"] if n["node_id"].startswith(f"1_{target}_")}
    assert clerps == {"the indirect object of giving"}
    circuit = store.circuit(hub["prompt"], threshold=1.0)
    assert any(r.get("label") for r in circuit.rows())


def test_a_bad_file_writes_nothing(store, hub, neo4j_env, tmp_path):
    before = labelled(store)
    good = write_gz(tmp_path / "batch-0.jsonl.gz", [explanation(0, 5, "fresh label")])
    out_of_range = write_gz(
        tmp_path / "batch-1.jsonl.gz",
        [explanation(0, 6, "fine"), explanation(0, 64, "beyond the set")],
    )
    code, out = run("labels", "import", str(good), str(out_of_range))
    assert code == 2
    assert out.strip() == (
        f"Error: {out_of_range} line 2: index 64 is out of range; transcoder set "
        f"{store.tset().id} has features 0..63 per layer"
    )
    bad_layer = write_gz(tmp_path / "batch-2.jsonl.gz", [explanation(2, 1, "no layer 2")])
    code, out = run("labels", "import", str(good), str(bad_layer))
    assert code == 2
    assert re.fullmatch(
        rf"Error: {re.escape(str(bad_layer))} line 1: layer 2 is out of range; .*\n", out
    )
    malformed = tmp_path / "batch-3.jsonl"
    malformed.write_text(json.dumps(explanation(0, 7, "ok")) + "\n" + '{"layer": "0-tres-dc"}\n')
    code, out = run("labels", "import", str(good), str(malformed))
    assert code == 2
    assert out.startswith(f"Error: {malformed} line 2: no 'index' field")
    other_set = write_gz(tmp_path / "batch-4.jsonl.gz", [explanation(0, 8, "x")])
    code, out = run("labels", "import", str(other_set), "--source", "res-jb")
    assert code == 2
    assert "source set 'tres-dc', not 'res-jb'" in out
    assert labelled(store) == before  # nothing of `good` either
    with pytest.raises(InputError, match="index 64 is out of range"):
        import_labels(store, [good, out_of_range])
    assert labelled(store) == before


def test_search_errors_are_clear(store, neo4j_settings):
    from circuitstore.schema.apply import apply_schema, read_schema
    from circuitstore.schema.ddl import FEATURE_LABEL_INDEX
    from circuitstore.schema.errors import QueryError

    with pytest.raises(QueryError, match="not a Lucene query"):
        store.search('"unclosed', lucene=True)
    store.search('"unclosed')  # plain words: the quote is a character
    # A store made before the index: search says what to run; `schema apply` adds the index.
    with store.driver.session(database=store.database) as s:
        s.run(f"DROP INDEX {FEATURE_LABEL_INDEX}").consume()
    assert FEATURE_LABEL_INDEX in read_schema(store.driver, store.database).missing
    with pytest.raises(QueryError, match=r"no label index: run `circuitstore schema apply`"):
        store.search("names")
    apply_schema(store.driver, neo4j_settings.database)
    assert store.search("zebra") == ()
