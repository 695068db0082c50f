"""The query builders: closed choices only, parameterised values, labels from schema.model."""

from __future__ import annotations

import re

import pytest

from circuitstore.query import cypher as cq
from circuitstore.schema.model import Label, RelType

ALL_STATIC = [
    cq.TRANSCODER_SETS,
    cq.PROMPT,
    cq.FEATURES,
    cq.EXAMPLES,
    cq.FEATURE_CARD,
    cq.PROMPT_GRAPH,
    cq.PROMPTS_WITH,
    cq.FEATURE_LABELS,
    cq.PROMPTS,
    cq.SEARCH_LABELS,
    cq.MISSING_FEATURE,
    cq.SET_LABELS,
]
BUILT = [cq.corpus_links(d, o, s) for d in cq.HOPS for o in cq.SCORES for s in cq.SIGN_FILTERS] + [
    cq.prompt_links(d) for d in cq.PROMPT_HOPS
]

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
    drivers = cq.corpus_links("drivers", "mean", "negative")
    assert "(f)<-[d:DRIVES]-(o:Feature)" in drivers
    assert "d.sum / d.n AS score" in drivers
    assert "WHERE score < 0" in drivers
    assert "ORDER BY score ASC" in drivers
    targets = cq.corpus_links("targets", "total", "abs")
    assert "(f)-[d:DRIVES]->(o:Feature)" in targets
    assert "abs(score) DESC" in targets
    assert "(o)<-[a:ATTR]-(x:GraphNode)" in cq.prompt_links("drivers")
    assert "(o)-[a:ATTR]->(x:GraphNode)" in cq.prompt_links("targets")


def test_unknown_choice_is_refused():
    with pytest.raises(KeyError):
        cq.corpus_links("drivers", "median; DROP", "abs")


def test_label_writes_set_every_property_outright():
    """A batch written twice leaves the same store: every label property is assigned from the
    row, none accumulated."""
    sets = re.findall(r"f\.(\w+) = (\S+?)[,\n]", cq.SET_LABELS)
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
