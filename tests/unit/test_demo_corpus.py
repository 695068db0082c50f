"""The demo corpus generator: deterministic from its seed, the planned task mix, right answers."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest

from circuitstore.demo import CORPUS
from circuitstore.ingest.corpus import read_corpus
from demo.make import corpus as dc

SHIPPED_CORPUS = CORPUS


@pytest.fixture(scope="module")
def train() -> list[dc.Example]:
    return dc.train_split(0, 4000)


@pytest.fixture(scope="module")
def held_out() -> list[dc.Example]:
    return dc.eval_split(0)


def test_same_seed_same_corpus_other_seed_other_corpus(train, held_out):
    assert dc.train_split(0, 4000) == train
    assert dc.eval_split(0) == held_out
    assert dc.train_split(1, 200) != train[:200]
    assert dc.eval_split(1) != held_out
    # The seed alone decides: the global random state does not leak in.
    random.seed(12345)
    assert dc.train_split(0, 300) == train[:300]


def test_training_mix_follows_the_plan(train):
    counts = Counter(ex.task for ex in train)
    assert set(counts) == set(dc.TASKS)
    for task, share in dc.TRAIN_MIX.items():
        assert abs(counts[task] / len(train) - share) < 0.03, (task, counts)


def test_held_out_split_is_balanced_distinct_and_unseen(train, held_out):
    counts = Counter(ex.task for ex in held_out)
    assert counts == dict.fromkeys(dc.TASKS, 200)
    texts = [ex.text for ex in held_out]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & {ex.text for ex in train}
    assert len({ex.id for ex in held_out}) == len(held_out)


def _names(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Z][a-z]+", text) if w in dc.NAMES]


def test_ioi_answer_is_the_name_that_is_not_repeated(train):
    ioi = [ex for ex in train if ex.task == "ioi"]
    positions = Counter()
    for ex in ioi:
        names = _names(ex.text)
        assert len(names) == 3, ex.text
        first, second, subject = names
        assert first != second
        assert subject in (first, second)
        other = second if subject == first else first
        assert ex.answer == ex.source == " " + other
        assert ex.text.endswith(" to")
        positions[names.index(other)] += 1
    # The answer is the first name about half the time: no fixed position solves the task.
    assert 0.4 < positions[0] / len(ioi) < 0.6


def test_year_answer_is_a_later_year_of_the_same_century(train):
    years = [ex for ex in train if ex.task == "years"]
    for ex in years:
        m = re.fullmatch(
            r"The \w+ (?:lasted from|started in) (\d\d)(\d\d) (?:to|and ended in) (\d\d)", ex.text
        )
        assert m, ex.text
        century, start, end_century = m.groups()
        assert century == end_century
        assert ex.source == start
        assert len(ex.answer) == 2
        assert int(ex.answer) > int(start)
        assert dc.answer_is_correct(ex, ex.answer)
        assert dc.answer_is_correct(ex, f"{int(start) + 1:02d}")
        assert not dc.answer_is_correct(ex, start)
        assert not dc.answer_is_correct(ex, f"{int(start) - 1:02d}")


def test_induction_answer_follows_the_current_word_earlier(train):
    for ex in (ex for ex in train if ex.task == "induction"):
        words = ex.text.split(" ")[1:]
        n = len(set(words))
        assert dc.INDUCTION_LENGTH[0] <= n <= dc.INDUCTION_LENGTH[1]
        assert words[:n] == list(dict.fromkeys(words))  # the first n words are all distinct
        cut = len(words) - n
        assert 1 <= cut < n
        assert words[n:] == words[:cut]
        assert ex.answer == ex.source == " " + words[cut]
        assert words[words.index(words[-1]) + 1] == words[cut]


def test_filler_has_no_answer(train):
    filler = [ex for ex in train if ex.task == "filler"]
    assert filler
    for ex in filler:
        assert ex.answer is None
        assert ex.source is None
        assert ex.text.endswith(".")
        assert ex.training_text() == ex.text


def test_training_text_appends_the_answer():
    rng = random.Random("x")
    ex = dc.make("ioi", rng, 0, "t")
    assert ex.training_text() == ex.text + ex.answer + "."
    ex = dc.make("induction", rng, 1, "t")
    assert ex.training_text().startswith(ex.text + ex.answer)  # the whole repeat
    words = ex.training_text().split(" ")[1:]
    assert words[: len(words) // 2] == words[len(words) // 2 :]


def test_jsonl_round_trip_and_the_project_reader(tmp_path, held_out):
    path = dc.write_jsonl(held_out[:50] + held_out[-50:], tmp_path / "c.jsonl")
    assert dc.read_jsonl(path) == held_out[:50] + held_out[-50:]
    corpus = read_corpus(str(path))
    assert len(corpus.prompts) == 100
    first = corpus.prompts[0]
    assert first.key == held_out[0].id
    assert first.text == held_out[0].text
    assert first.extra["task"] == held_out[0].task
    assert first.extra["answer"] == held_out[0].answer
    assert "answer" not in corpus.prompts[-1].extra  # filler: no answer field at all


@pytest.mark.skipif(not SHIPPED_CORPUS.is_file(), reason="circuitstore/demo/corpus.jsonl not built")
def test_shipped_corpus_is_the_seed_0_held_out_split(held_out):
    assert dc.read_jsonl(SHIPPED_CORPUS) == held_out
