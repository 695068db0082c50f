"""Two transcoder sets of different families side by side in one store: the tiny GPT-2's
per-layer transcoders and a cross-layer transcoder of the same model. Each set records its
families, names its features in its own spelling everywhere (the store's names and ids, the
answers, the export), questions name their set, and either spelling of a feature finds it.

The cross-layer set is the tiny per-layer set with decoders into the later layers added,
written in circuit-tracer's CLT layout and read back by the loader."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from .helpers import make_corpus

N_PROMPTS = 6


@pytest.fixture(scope="module")
def two_sets(driver, neo4j_settings, tiny_weights, tmp_path_factory) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """An emptied store holding both sets, each over the same corpus: their ids by family."""
    import torch

    from circuitstore.ingest import runner
    from circuitstore.ingest.config import IngestConfig
    from circuitstore.ingest.synthetic import save_transcoders
    from circuitstore.ingest.transcoder import TranscoderSet, load_transcoders
    from circuitstore.schema.apply import apply_schema

    driver, database = driver, neo4j_settings.database
    with driver.session(database=database) as session:
        session.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    apply_schema(driver, database)
    folder = tmp_path_factory.mktemp("families")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(make_corpus(N_PROMPTS, seed=3)) + "\n")
    model_dir, tcs_dir = tiny_weights

    def ingest(transcoders: str, catalog: str, qk_top: int = 0) -> None:
        cfg = IngestConfig.from_flat(
            model=str(model_dir),
            transcoders=transcoders,
            prompts=str(corpus),
            catalog=f"sqlite:///{folder / catalog}",
            progress=False,
            qk_top=qk_top,
        )
        runner.IngestRunner(cfg, driver, database).run()

    ingest(str(tcs_dir), "per-layer.sqlite")
    per_layer = load_transcoders(str(tcs_dir))
    gen = torch.Generator().manual_seed(5)
    n = per_layer.n_layers
    clt = TranscoderSet(
        tuple(
            dataclasses.replace(
                tc,
                W_dec_ahead=None
                if tc.layer == n - 1
                else torch.randn(tc.d_tc, n - 1 - tc.layer, tc.d_model, generator=gen) * 0.3,
            )
            for tc in per_layer.transcoders
        ),
        per_layer.source,
        per_layer.model_name,
    )
    assert clt.cross_layer
    clt_dir = folder / "clt"
    save_transcoders(clt, clt_dir, layout="clt")
    ingest(str(clt_dir), "clt.sqlite", qk_top=8)
    with driver.session(database=database) as session:
        rows = session.run(
            "MATCH (s:TranscoderSet) RETURN s.id AS id, s.featureFamily AS family"
        ).data()
    return {r["family"]: r["id"] for r in rows}


def _store(driver, neo4j_settings, tset: str | None = None):  # type: ignore[no-untyped-def]
    from circuitstore.query import CircuitStore

    return CircuitStore(driver, neo4j_settings.database, tset)


def test_each_set_records_its_families(two_sets, driver, neo4j_settings) -> None:  # type: ignore[no-untyped-def]
    assert set(two_sets) == {"transcoder", "clt"}
    with _store(driver, neo4j_settings) as store:
        sets = store.transcoder_sets()
    assert {(s.feature_family, s.model_family) for s in sets.values()} == {
        ("transcoder", "gpt2"),
        ("clt", "gpt2"),
    }
    assert sets[two_sets["clt"]].family.key == "clt"


def test_the_store_spells_each_sets_features_in_its_family(two_sets, driver) -> None:  # type: ignore[no-untyped-def]
    pattern = {"transcoder": r"mlp\d+tc\[\d+\]", "clt": r"clt\d+\[\d+\]"}
    with driver.session() as session:
        for family, tset in two_sets.items():
            other = pattern["clt" if family == "transcoder" else "transcoder"]
            names = session.run(
                "MATCH (f:Feature {transcoderSet: $t}) RETURN collect(f.name) AS n", t=tset
            ).single()["n"]
            assert names
            assert all(re.fullmatch(pattern[family], x) for x in names)
            rows = session.run(
                "MATCH (n:GraphNode) WHERE n.prompt STARTS WITH $t "
                "RETURN n.kind AS kind, n.localId AS id, n.id AS global",
                t=tset + "/",
            ).data()
            ids = [r["id"] for r in rows if r["kind"] == "feature"]
            assert ids
            assert all(re.fullmatch(pattern[family] + r"@\d+", x) for x in ids)
            assert all(r["global"].endswith("/" + r["id"]) for r in rows)
            # No id holds the other family's spelling (a remainder's names its target).
            assert not any(re.search(other, r["id"]) for r in rows)


def test_questions_name_their_set(two_sets, driver, neo4j_settings) -> None:  # type: ignore[no-untyped-def]
    from circuitstore.schema.errors import QueryError

    with (
        _store(driver, neo4j_settings) as store,
        pytest.raises(QueryError, match="several transcoder"),
    ):
        store.drivers("0:1")


def _busy_feature(store: Any, layer: int) -> str:
    """The feature of `layer` with the most DRIVES in, by its stored name."""
    rows = store.cypher(
        "MATCH (:Feature)-[d:DRIVES]->(f:Feature {transcoderSet: $t, layer: $l}) "
        "WITH f, count(d) AS n RETURN f.name AS name ORDER BY n DESC, f.index LIMIT 1",
        {"t": store.tset().id, "l": layer},
    )
    return str(rows[0]["name"])


def test_answers_spell_features_in_the_sets_family(two_sets, driver, neo4j_settings) -> None:  # type: ignore[no-untyped-def]
    from circuitstore.schema.names import CLT, TRANSCODER, parse_feature

    for family in (TRANSCODER, CLT):
        other = CLT if family is TRANSCODER else TRANSCODER
        with _store(driver, neo4j_settings, two_sets[family.key]) as store:
            name = _busy_feature(store, 1)
            ref = parse_feature(name)
            assert name == family.name(ref.layer, ref.index)
            drivers = store.drivers(name, top=5)
            assert drivers.feature == name
            assert drivers.links
            assert all(x.name.startswith(family.prefix) for x in drivers.links)
            # The other family's spelling and the short form name the same feature.
            for typed in (other.name(ref.layer, ref.index), f"{ref.layer}:{ref.index}"):
                again = store.drivers(typed, top=5)
                assert (again.feature, again.links) == (drivers.feature, drivers.links)
            card = store.feature(other.name(ref.layer, ref.index), top=5)
            assert card.name == name
            assert all(n.startswith(family.prefix) for n, _ in card.virtual_in)
            match = store.prompts_with([name], top=3)[0]
            assert list(match.positions) == [name]
            info, graph = store.prompt_graph(match.key)
            pos = match.positions[name][0]
            at = family.name(ref.layer, ref.index, pos)
            assert at in {n.id for n in graph.nodes}
            in_prompt = store.drivers(other.name(ref.layer, ref.index, pos), prompt=info.key)
            assert in_prompt.feature == at
            assert store.find_nodes(
                graph, parse_feature(f"{ref.layer}:{ref.index}@{pos}"), info
            ) == [at]
            circuit = store.circuit(info.key, threshold=0.8)
            features = [n.id for n in circuit.subgraph.nodes if n.kind == "feature"]
            assert features
            assert all(x.startswith(family.prefix) for x in features)
            paths = store.paths(info.key, to=other.name(ref.layer, ref.index, pos), top=2)
            assert paths.target == at
            # Pinning every feature, in the other spelling, gives the stored scores.
            pinned = [
                other.name(n.layer, n.feature, n.pos) for n in graph.nodes if n.kind == "feature"
            ]
            scores = store.subgraph_scores(info.key, pinned)
            summary = store.prompt_summary(info.key)
            assert scores.replacement == pytest.approx(
                summary.scores["stored_replacement"], rel=1e-6, abs=1e-9
            )


def test_the_export_names_the_sets_features(
    two_sets, driver, neo4j_settings, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    import json

    import jsonschema

    schema = json.loads(
        (Path(__file__).parents[1] / "fixtures" / "neuronpedia" / "graph-schema.json").read_text()
    )
    exports = {}
    for family, tset in two_sets.items():
        with _store(driver, neo4j_settings, tset) as store:
            key = store.prompts(limit=1)[0].key
            exports[family] = store.export_graph(key)
        jsonschema.Draft7Validator(schema).validate(exports[family])
    for family, prefix in (("transcoder", "mlp"), ("clt", "clt")):
        features = [
            n for n in exports[family]["nodes"] if n["feature_type"] == "cross layer transcoder"
        ]
        assert features
        assert all(n["clerp"].startswith(prefix) for n in features)
        assert exports[family]["metadata"]["info"]["transcoder_set"] == two_sets[family]


def test_qk_traces_link_the_cross_layer_sets_nodes(two_sets, driver, neo4j_settings) -> None:  # type: ignore[no-untyped-def]
    """`ingest --qk-top` on the CLT set: the traces name its features `clt...`, and every
    contributor the stored graph holds is linked."""
    from circuitstore.schema.names import head_name

    with _store(driver, neo4j_settings, two_sets["clt"]) as store:
        rows = store.cypher(
            "MATCH (t:QKTrace {transcoderSet: $t}) "
            "OPTIONAL MATCH (t)-[:QK_QUERY|QK_KEY]->(n:GraphNode) "
            "WITH t, collect(n.localId) AS linked "
            "RETURN t.queryNodes + t.keyNodes AS named, linked, t.prompt AS prompt, "
            "t.layer AS layer, t.head AS head",
            {"t": two_sets["clt"]},
        )
        assert rows
        for r in rows:
            held = {
                x["id"]
                for x in store.cypher(
                    "MATCH (n:GraphNode {prompt: $p}) RETURN n.localId AS id", {"p": r["prompt"]}
                )
            }
            assert not any(re.search(r"mlp\d+tc\[", x) for x in r["named"])
            assert set(r["linked"]) == {x for x in r["named"] if x in held}
        with_features = [r for r in rows if any(x.startswith("clt") for x in r["named"])]
        assert with_features
        head = head_name(with_features[0]["layer"], with_features[0]["head"])
        drivers = [
            d.feature
            for side in ("query", "key")
            for d in store.qk_drivers(head, side=side, top=20, sign="abs")
        ]
        assert drivers
        assert all(re.fullmatch(r"clt\d+\[\d+\]", d) for d in drivers)
