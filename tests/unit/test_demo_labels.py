"""The demo's shipped labels: Neuronpedia's explanation format, derived honestly (rebuilt from the
shipped weights and corpus, they come out the same), and a name feature among them."""

from __future__ import annotations

from collections import Counter

import pytest

from circuitstore.demo import LABELS
from circuitstore.query.labels import read_files
from demo.make.labels import CATEGORIES, MIN_TOKENS, SOURCE_SET, label, render


def test_the_shipped_labels_read_as_a_neuronpedia_export_of_the_demo_source_set() -> None:
    found = read_files([LABELS], SOURCE_SET)
    assert found.blank == 0
    described = Counter(r.description for r in found.rows)
    assert described["names of people"] >= 1
    assert described["centuries of years"] >= 1
    assert all(r.source_set == SOURCE_SET and r.score is not None for r in found.rows)
    assert {r.layer for r in found.rows} == {0, 1, 2}


def test_a_feature_is_labelled_by_the_category_that_holds_its_activation() -> None:
    names = sorted(CATEGORIES["names of people"])
    assert label(Counter(dict.fromkeys(names[:MIN_TOKENS], 1.0))) == ("names of people", 1.0)
    # Too few distinct tokens of the category: the token itself, where it holds the share.
    assert label(Counter({names[0]: 9.0, " the": 1.0})) == (f"the token {names[0]!r}", 0.9)
    assert label(Counter({names[0]: 1.0, " the": 1.0, " a": 1.0})) is None


@pytest.mark.slow
def test_a_rebuild_of_the_labels_matches_the_shipped_file() -> None:
    assert render() == LABELS.read_text(encoding="utf-8")
