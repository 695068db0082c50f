"""The demo corpus: generated text with planted dependencies, deterministic from a seed.

Four tasks, each answer decided by one identifiable earlier token:

- ``ioi``: indirect-object sentences. Two names are introduced, one of them (the subject) is
  repeated, and the sentence ends where the *other* name belongs:
  "When Mary and John went to the store, John gave a drink to" -> " Mary". The repeated name
  is the first or the second one at random, so the answer is never a fixed position.
- ``years``: a span of years within one century, cut after the end year's century:
  "The war lasted from 1732 to 17" -> a two-digit half above 32 (the answer is one of them).
- ``induction``: a sequence of random words repeated; the prompt stops inside the repeat and
  the answer is the word that followed the current one the first time.
- ``filler``: plain sentences from a small grammar (no answer).

The tokenizer trained on this corpus (see :mod:`demo.make.train`) keeps names,
words and two-digit year halves as single tokens, so every planted token is one position.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

TASKS = ("ioi", "years", "induction", "filler")

NAMES = (
    "Mary",
    "John",
    "Anna",
    "Tom",
    "Paul",
    "Kate",
    "Mark",
    "Lucy",
    "James",
    "Emma",
    "Sam",
    "Jane",
    "Peter",
    "Alice",
    "David",
    "Sarah",
    "Max",
    "Laura",
    "Ben",
    "Rose",
)
PLACES = ("store", "park", "school", "beach", "market", "library", "garden", "station")
OBJECTS = ("drink", "book", "ball", "letter", "gift", "key", "apple", "ring")
IOI_TEMPLATES = (
    "When {A} and {B} went to the {place}, {S} gave a {obj} to",
    "Then, {A} and {B} had a long day at the {place}. {S} gave a {obj} to",
    "After {A} and {B} arrived at the {place}, {S} handed the {obj} to",
    "While {A} and {B} were working at the {place}, {S} threw a {obj} to",
)

YEAR_NOUNS = ("war", "reign", "drought", "project", "famine", "journey", "trial", "festival")
YEAR_TEMPLATES = (
    "The {noun} lasted from {C}{X:02d} to {C}",
    "The {noun} started in {C}{X:02d} and ended in {C}",
)
CENTURIES = tuple(range(11, 20))

INDUCTION_WORDS = (
    "red",
    "blue",
    "green",
    "cat",
    "dog",
    "bird",
    "fish",
    "tree",
    "stone",
    "river",
    "cloud",
    "lamp",
    "door",
    "chair",
    "table",
    "cup",
    "hat",
    "shoe",
    "coat",
    "bell",
    "moon",
    "star",
    "sun",
    "rain",
    "snow",
    "wind",
    "fire",
    "sand",
    "salt",
    "milk",
)
INDUCTION_LENGTH = (5, 10)  # words in the sequence before it repeats

FILLER_SUBJECTS = ("The cat", "The dog", "A bird", "The old man", "The child", "A farmer")
FILLER_VERBS = ("saw", "liked", "found", "carried", "painted", "watched")
FILLER_ADJS = ("small", "green", "quiet", "heavy", "bright", "old")
FILLER_NOUNS = ("house", "boat", "field", "road", "bridge", "hill", "window", "garden")
FILLER_ENDINGS = (
    " in the morning",
    " near the river",
    " after the rain",
    " on the hill",
    " at night",
    "",
)

# Mix of the training split; the eval split has the same number of prompts for every task.
TRAIN_MIX = {"ioi": 0.3, "years": 0.25, "induction": 0.3, "filler": 0.15}


@dataclass(frozen=True)
class Example:
    """One record. ``text`` is the prompt (the whole sentence for filler); ``answer`` is the
    continuation the planted dependency decides (None for filler). ``source`` is the deciding
    earlier token, as text: the non-repeated name, the start year's two-digit half, or the word
    to copy (its first occurrence)."""

    id: str
    task: str
    text: str
    answer: str | None
    source: str | None = None

    def training_text(self) -> str:
        """What the model trains on: the prompt, its answer and the sentence's end."""
        if self.answer is None:
            return self.text
        if self.task == "induction":  # the whole repeat: every word of it is an induction target
            words = self.text.split(" ")[1:]
            first = list(dict.fromkeys(words))
            return "".join(" " + w for w in first + first)
        return self.text + self.answer + "."

    def to_json(self) -> str:
        obj = {k: v for k, v in asdict(self).items() if v is not None}
        return json.dumps(obj, ensure_ascii=False)


def ioi(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(NAMES, 2)
    repeated_first = rng.random() < 0.5
    subject, answer = (a, b) if repeated_first else (b, a)
    template = rng.choice(IOI_TEMPLATES)
    text = template.format(A=a, B=b, S=subject, place=rng.choice(PLACES), obj=rng.choice(OBJECTS))
    return text, " " + answer, " " + answer


def years(rng: random.Random) -> tuple[str, str, str]:
    start = rng.randint(1, 97)
    end = rng.randint(start + 1, 99)
    century = rng.choice(CENTURIES)
    template = rng.choice(YEAR_TEMPLATES)
    text = template.format(noun=rng.choice(YEAR_NOUNS), C=century, X=start)
    return text, f"{end:02d}", f"{start:02d}"


def induction(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(*INDUCTION_LENGTH)
    words = [" " + w for w in rng.sample(INDUCTION_WORDS, n)]
    cut = rng.randint(1, n - 1)  # words of the repeat already given
    text = "".join(words + words[:cut])
    # The deciding token is the answer's first occurrence (the word after the current one).
    return text, words[cut], words[cut]


def filler(rng: random.Random) -> tuple[str, None, None]:
    sentences: list[str] = []
    for _ in range(rng.randint(1, 2)):
        subject = rng.choice(FILLER_SUBJECTS) if rng.random() < 0.7 else rng.choice(NAMES)
        if sentences:
            subject = " " + subject
        adj, noun = rng.choice(FILLER_ADJS), rng.choice(FILLER_NOUNS)
        sentences.append(
            f"{subject} {rng.choice(FILLER_VERBS)} the {adj} {noun}{rng.choice(FILLER_ENDINGS)}."
        )
    return "".join(sentences), None, None


_MAKERS = {"ioi": ioi, "years": years, "induction": induction, "filler": filler}


def make(task: str, rng: random.Random, index: int, split: str) -> Example:
    text, answer, source = _MAKERS[task](rng)
    return Example(f"{split}-{task}-{index:06d}", task, text, answer, source)


def eval_split(seed: int, per_task: int = 200) -> list[Example]:
    """The held-out prompts: ``per_task`` of each task, distinct texts."""
    rng = random.Random(f"circuitstore-demo-eval-{seed}")
    out: list[Example] = []
    for task in TASKS:
        seen: set[str] = set()
        while len(seen) < per_task:
            ex = make(task, rng, len(seen), "eval")
            if ex.text not in seen:
                seen.add(ex.text)
                out.append(ex)
    return out


def train_split(seed: int, n: int, *, exclude: set[str] | None = None) -> list[Example]:
    """``n`` training examples in the TRAIN_MIX proportions (shuffled), never repeating a prompt
    of ``exclude`` (the eval split's prompts, by default)."""
    exclude = {e.text for e in eval_split(seed)} if exclude is None else exclude
    rng = random.Random(f"circuitstore-demo-train-{seed}")
    tasks = list(TASKS)
    weights = [TRAIN_MIX[t] for t in tasks]
    out: list[Example] = []
    while len(out) < n:
        task = rng.choices(tasks, weights)[0]
        ex = make(task, rng, len(out), "train")
        if ex.text not in exclude:
            out.append(ex)
    return out


def tokenizer_text(seed: int, n: int = 20_000) -> Iterator[str]:
    """Text the tokenizer is trained on: the training split's first ``n`` examples."""
    for ex in train_split(seed, n):
        yield ex.training_text()


def write_jsonl(examples: list[Example], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ex.to_json() + "\n" for ex in examples), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[Example]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        obj = json.loads(line)
        out.append(
            Example(obj["id"], obj["task"], obj["text"], obj.get("answer"), obj.get("source"))
        )
    return out


def answer_is_correct(ex: Example, completion: str) -> bool:
    """Whether a one-token completion solves the prompt (for years: any half above the start)."""
    if ex.task == "years":
        digits = completion.strip()
        return (
            len(digits) == 2
            and digits.isdigit()
            and ex.source is not None
            and (int(digits) > int(ex.source))
        )
    return ex.answer is not None and completion == ex.answer


def main(argv: list[str] | None = None) -> int:
    """Write a split as JSONL: ``python -m demo.make.corpus --split train``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m demo.make.corpus")
    parser.add_argument("--split", choices=("train", "eval"), default="eval")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-n", type=int, default=60_000, help="training examples")
    parser.add_argument("--per-task", type=int, default=200, help="eval prompts per task")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    if args.split == "eval":
        examples = eval_split(args.seed, args.per_task)
    else:
        held_out = {e.text for e in eval_split(args.seed, args.per_task)}
        examples = train_split(args.seed, args.n, exclude=held_out)
    write_jsonl(examples, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
