"""The shipped demo model through the whole store: ingest a slice of the demo corpus, then the
query layer finds what was planted.

- A layer-0 feature that responds to names (chosen from the transcoder's activations, not from
  the store) is found by `examples` firing on name tokens.
- For year prompts the strongest stored path into the answer logit starts at the start year.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from circuitstore.ingest.config import IngestConfig
from circuitstore.ingest.model import load_model, run_forward, tokenize
from circuitstore.ingest.runner import IngestRunner
from circuitstore.ingest.transcoder import load_transcoders
from circuitstore.query import CircuitStore
from circuitstore.schema.apply import apply_schema
from demo.make import corpus as dc

ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = ROOT / "demo" / "weights"
PER_TASK = 10
NAME_TOKENS = {" " + name for name in dc.NAMES}


@pytest.fixture(scope="module")
def demo_slice(tmp_path_factory) -> list[dict]:
    rows = [json.loads(line) for line in (ROOT / "demo" / "corpus.jsonl").read_text().splitlines()]
    return [r for task in dc.TASKS for r in [x for x in rows if x["task"] == task][:PER_TASK]]


@pytest.fixture(scope="module")
def demo_store(demo_slice, driver, neo4j_settings, tmp_path_factory):  # type: ignore[no-untyped-def]
    with driver.session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS").consume()
    apply_schema(driver, neo4j_settings.database)
    folder = tmp_path_factory.mktemp("demo")
    corpus = folder / "slice.jsonl"
    corpus.write_text("\n".join(json.dumps(r) for r in demo_slice) + "\n")
    cfg = IngestConfig.from_flat(
        model=str(WEIGHTS / "model"),
        transcoders=str(WEIGHTS / "transcoders"),
        prompts=str(corpus),
        catalog=f"sqlite:///{folder / 'catalog.sqlite'}",
        progress=False,
    )
    summary = IngestRunner(cfg, driver, neo4j_settings.database).run()
    assert summary.written == len(demo_slice)
    return CircuitStore(driver, neo4j_settings.database)


def _name_feature(demo_slice: list[dict]) -> int:
    """The layer-0 feature whose mean activation on name tokens most exceeds its mean elsewhere,
    from the model and transcoder alone."""
    model = load_model(WEIGHTS / "model")
    tc = load_transcoders(WEIGHTS / "transcoders")[0]
    on, off = [], []
    for row in demo_slice:
        cache = run_forward(model, tokenize(model, row["text"]))
        acts = tc.encode(cache.ln2_normalized[0])
        is_name = torch.tensor([t in NAME_TOKENS for t in cache.str_tokens])
        on.append(acts[is_name])
        off.append(acts[~is_name])
    score = torch.cat(on).mean(0) - torch.cat(off).mean(0)
    return int(score.argmax())


def test_examples_of_a_name_feature_fire_on_names(demo_store, demo_slice):
    index = _name_feature(demo_slice)
    examples = demo_store.examples(f"mlp0tc[{index}]", top=10)
    assert len(examples) >= 5
    on_names = [e.token in NAME_TOKENS for e in examples]
    assert sum(on_names) >= 0.8 * len(examples), [e.context for e in examples]


def test_year_answers_are_reached_from_the_start_year(demo_store, demo_slice):
    hits, tried = 0, 0
    for row in (r for r in demo_slice if r["task"] == "years"):
        result = demo_store.paths(row["id"], to="logit", top=1)
        if not result.paths:
            continue
        tried += 1
        source = result.paths[0].nodes[0]
        pos = int(source.rsplit("@", 1)[1])
        tokens = demo_store.cypher(
            "MATCH (p:Prompt {key: $k}) RETURN p.tokens AS t", {"k": row["id"]}
        )[0]["t"]
        # The start year is written as a century token then a two-digit half (" 17", "32").
        start_half = row["source"].strip() if row.get("source") else None
        hits += tokens[pos].strip() == start_half
    assert tried == PER_TASK
    assert hits >= 0.7 * tried
