"""Labels for the demo's features, from what the corpus generator knows: its token categories.

    python -m demo.make.labels            # writes circuitstore/demo/labels.jsonl
    python -m demo.make.labels --check    # exits 1 when the shipped file differs from a rebuild

The generator (:mod:`demo.make.corpus`) plants every answer on tokens of known categories:
names of people, places, objects, the centuries and the last two digits of years, and the words
of the repeated lists. Each feature of the shipped transcoders is run over the shipped held-out
corpus; a feature whose activation mass (summed over every position it fires at) lies at least
:data:`SHARE` on the tokens of one category, and on at least :data:`MIN_TOKENS` distinct tokens
of it, is labelled with that category; failing that, a feature with that share on one token is
labelled with the token. Every other feature stays unlabelled. The file is Neuronpedia's
explanation export format (one JSON object a line), source set ``demo``, so that
``circuitstore labels import`` reads it as it reads Neuronpedia's; its ``score`` is the share.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

from demo.make import corpus as gen

SHARE = 0.8
MIN_TOKENS = 3
SOURCE_SET = "demo"
EXPLAINER = "demo.make.labels (token categories)"
OUT = Path(__file__).resolve().parents[2] / "circuitstore" / "demo" / "labels.jsonl"

CATEGORIES: dict[str, frozenset[str]] = {
    "names of people": frozenset(f" {n}" for n in gen.NAMES),
    "places": frozenset(f" {p}" for p in gen.PLACES),
    "objects handed over": frozenset(f" {o}" for o in gen.OBJECTS),
    "centuries of years": frozenset(f" {c}" for c in gen.CENTURIES),
    "last two digits of years": frozenset(f"{x:02d}" for x in range(100)),
    "words of the repeated lists": frozenset(f" {w}" for w in gen.INDUCTION_WORDS),
}


def activation_mass() -> list[dict[int, Counter[str]]]:
    """Per layer, per feature: its summed activation on each token text over the corpus."""
    from circuitstore.demo import CORPUS, MODEL, TRANSCODERS
    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.transcoder import load_transcoders

    torch.set_num_threads(1)
    model, tcs = load_model(MODEL), load_transcoders(TRANSCODERS)
    tokenizer = model.bridge.tokenizer
    hooks = [f"blocks.{layer}.ln2.hook_normalized" for layer in range(model.n_layers)]
    mass: list[dict[int, Counter[str]]] = [{} for _ in hooks]
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        ids = tokenizer(json.loads(line)["text"])["input_ids"]
        texts = [tokenizer.decode([i]) for i in ids]
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(torch.tensor([ids]), names_filter=hooks)
        for layer, hook in enumerate(hooks):
            acts = tcs[layer].encode(cache[hook][0])
            for pos, feature in (acts > 0).nonzero().tolist():
                counts = mass[layer].setdefault(feature, Counter())
                counts[texts[pos]] += float(acts[pos, feature])
    return mass


def label(counts: Counter[str]) -> tuple[str, float] | None:
    """A feature's label and its share of the activation mass, or None."""
    total = sum(counts.values())
    for name, tokens in CATEGORIES.items():
        on = [t for t in counts if t in tokens]
        share = sum(counts[t] for t in on) / total
        if share >= SHARE and len(on) >= MIN_TOKENS:
            return name, share
    token, top = counts.most_common(1)[0]
    if top / total >= SHARE:
        return f"the token {token!r}", top / total
    return None


def rows() -> list[dict[str, object]]:
    """The explanation rows, in layer and index order."""
    out: list[dict[str, object]] = []
    for layer, features in enumerate(activation_mass()):
        for index, counts in sorted(features.items()):
            found = label(counts)
            if found is None:
                continue
            out.append(
                {
                    "modelId": "circuitstore-demo",
                    "layer": f"{layer}-{SOURCE_SET}",
                    "index": str(index),
                    "description": found[0],
                    "explanationModelName": EXPLAINER,
                    "typeName": "token-category",
                    "score": round(found[1], 4),
                    "id": f"demo-{layer}-{index}",
                }
            )
    return out


def render() -> str:
    return "".join(json.dumps(r) + "\n" for r in rows())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m demo.make.labels")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--check", action="store_true", help="compare with --out, write nothing")
    args = parser.parse_args(argv)
    text = render()
    if not args.check:
        args.out.write_text(text, encoding="utf-8")
        print(f"wrote {text.count(chr(10))} labels to {args.out}")
        return 0
    if args.out.read_text(encoding="utf-8") != text:
        print(f"--check: {args.out} differs from a rebuild", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
