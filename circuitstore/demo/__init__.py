"""The demo model, its transcoders and its corpus, shipped inside the package (2.7 MB).

A 3-layer GPT-2 trained on generated text with planted dependencies (indirect objects, year
spans, induction), one transcoder per layer, and 800 held-out prompts whose `task`, `answer` and
`source` fields say what each prompt's answer hangs on. They load through the same loaders as
GPT-2 small and the published transcoders; `circuitstore demo` ingests them. The build tool
that trains them from a seed is `python -m demo.make` in a source checkout.

Torch-free: only paths, and the tokenizer's vocabulary read as JSON.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "weights"
MODEL = WEIGHTS / "model"
"""A folder saved with `save_pretrained`, its tokenizer beside it."""
TRANSCODERS = WEIGHTS / "transcoders"
"""One transcoder per layer, in the published per-layer pickle layout."""
FIDELITY = WEIGHTS / "fidelity.json"
"""The shipped model's figures (loss recovered, accuracies), which a rebuild is checked against."""
CORPUS = HERE / "corpus.jsonl"
"""The held-out prompts: {"id", "task", "text", "answer", "source"} a line."""
LABELS = HERE / "labels.jsonl"
"""Labels of the features, in Neuronpedia's explanation format (source set `demo`), derived by
`python -m demo.make.labels` from the corpus generator's token categories."""


def _byte_decoder() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins for bytes (GPT-2's table), mapped back to bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = [b for b in range(256) if b not in printable]
    chars = printable + [256 + i for i in range(len(extra))]
    return {chr(c): b for c, b in zip(chars, printable + extra, strict=True)}


@cache
def token_texts(model: Path = MODEL) -> dict[int, str]:
    """Every token id of a byte-level BPE tokenizer (`tokenizer.json` in `model`) with its text,
    as the tokenizer decodes it alone. Bytes that are not valid UTF-8 by themselves come out as
    replacement characters; special tokens as written (`<|endoftext|>`)."""
    data = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    decoder = _byte_decoder()
    texts = {
        int(i): bytes(decoder[ch] for ch in piece).decode("utf-8", errors="replace")
        for piece, i in data["model"]["vocab"].items()
    }
    texts.update({int(t["id"]): t["content"] for t in data.get("added_tokens", ())})
    return texts
