"""The query builders: closed choices only, parameterised values, labels from schema.model."""

from __future__ import annotations

import re

import pytest

from circuitstore.query import cypher as cq
from circuitstore.query.features import cypher as fq
from circuitstore.query.heads import cypher as hq
from circuitstore.query.interventions import cypher as iq
from circuitstore.query.labels import cypher as lq
from circuitstore.query.paths import cypher as gq
from circuitstore.query.prompts import cypher as pq
from circuitstore.query.qk import cypher as qq
from circuitstore.schema.model import Label, RelType

ALL_STATIC = [
    cq.TRANSCODER_SETS,
    pq.PROMPT,
    pq.FEATURES,
    fq.EXAMPLES,
    fq.FEATURE_CARD,
    gq.PROMPT_GRAPH,
    pq.PROMPTS_WITH,
    lq.FEATURE_LABELS,
    pq.PROMPTS,
    lq.SEARCH_LABELS,
    lq.MISSING_FEATURE,
    lq.SET_LABELS,
    hq.PROMPT_HEADS,
    gq.INPUT_EXPLAINED,
    iq.INTERVENTIONS,
    iq.FEATURE_INTERVENTIONS,
    qq.PROMPT_TRACES,
]
BUILT = (
    [fq.corpus_links(d, o, s) for d in fq.HOPS for o in fq.SCORES for s in fq.SIGN_FILTERS]
    + [fq.prompt_links(d) for d in fq.PROMPT_HOPS]
    + [qq.head_drivers(side, sign) for side in qq.SIDES for sign in qq.SIGN_FILTERS]
)

KNOWN = {str(x) for x in Label} | {str(x) for x in RelType}


@pytest.mark.parametrize("statement", ALL_STATIC + BUILT)
def test_labels_and_types_come_from_the_model(statement):
    for name in re.findall(r"[:(]\s*:?([A-Z][A-Za-z_]+)\b", statement):
        if name in {"WHERE", "RETURN", "MATCH", "COLLECT"}:
            continue
        assert name in KNOWN, name


@pytest.mark.parametrize("statement", ALL_STATIC + BUILT)
def test_values_are_parameters_not_literals(statement):
    # No quoted literal anywhere: every value arrives as $param.
    assert "'" not in statement
    assert '"' not in statement
    assert "$" in statement or statement is cq.TRANSCODER_SETS


def test_builders_choose_direction_and_ranking():
    drivers = fq.corpus_links("drivers", "mean", "negative")
    assert "(f)<-[d:DRIVES]-(o:Feature)" in drivers
    assert "d.sum / d.n AS score" in drivers
    assert "WHERE score < 0" in drivers
    assert "ORDER BY score ASC" in drivers
    targets = fq.corpus_links("targets", "total", "abs")
    assert "(f)-[d:DRIVES]->(o:Feature)" in targets
    assert "abs(score) DESC" in targets
    assert "(o)<-[a:ATTR]-(x:GraphNode)" in fq.prompt_links("drivers")
    assert "(o)-[a:ATTR]->(x:GraphNode)" in fq.prompt_links("targets")


def test_unknown_choice_is_refused():
    with pytest.raises(KeyError):
        fq.corpus_links("drivers", "median; DROP", "abs")


def test_label_writes_set_every_property_outright():
    """A batch written twice leaves the same store: every label property is assigned from the
    row, none accumulated."""
    sets = re.findall(r"f\.(\w+) = (\S+?)[,\n]", lq.SET_LABELS)
    assert {name for name, _ in sets} == {
        "label",
        "labels",
        "labelSource",
        "labelExplainer",
        "labelType",
        "labelScore",
        "labelId",
    }
    assert all(value.startswith("r.") for _, value in sets)
