"""What the prompts question answers: a stored prompt with its tokens, its summary (scores,
accounting, corpus fields), and a prompt that holds given features; each read from its row by
column name."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from circuitstore.query.tables import Tabular, clean
from circuitstore.schema.model import PROMPT_OWN, PromptScore, snake_case

# The prompt properties `query prompt` shows beside the scores, in this order.
ACCOUNTING = (
    *("mode", "truncated", "nTokensBeforeTruncation", "keptInfluence", "unexpandedInfluence"),
    *("logitInputExplained", "featureInputExplained", "run", "line"),
)


@dataclass(frozen=True)
class PromptInfo(Tabular):
    """A stored prompt: its global id, its key, its transcoder set, its text and tokens."""

    id: str
    key: str
    transcoder_set: str
    text: str
    tokens: tuple[str, ...]
    token_ids: tuple[int, ...] = ()

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PromptInfo:
        """From a `prompts/cypher.PROMPT` row."""
        return cls(
            id=r["id"],
            key=r["key"],
            transcoder_set=r["transcoder_set"],
            text=r["text"],
            tokens=tuple(r["tokens"]),
            token_ids=tuple(r["token_ids"] or ()),
        )

    def token_at(self, pos: int | None) -> str | None:
        """The prompt's token at `pos` (None out of range)."""
        return self.tokens[pos] if pos is not None and 0 <= pos < len(self.tokens) else None

    def text_of(self, token_id: int | None) -> str | None:
        """The text of a token id where the prompt holds that token (ids map to one text)."""
        if token_id is None:
            return None
        for tid, tok in zip(self.token_ids, self.tokens, strict=False):
            if tid == token_id:
                return tok
        return None

    def rows(self) -> list[dict[str, Any]]:
        """One row per token."""
        ids: Sequence[int | None] = self.token_ids or [None] * len(self.tokens)
        return [
            {"pos": i, "token": t, "token_id": tid}
            for i, (t, tid) in enumerate(zip(self.tokens, ids, strict=False))
        ]


@dataclass(frozen=True)
class PromptSummary(Tabular):
    """One stored prompt, without its graph: its scores (circuit-tracer's replacement and
    completeness, of the whole graph and of the stored one, by `PromptScore.field`; None where
    a store predates them), its accounting (mode, the influence its stored graph keeps...) and
    `extra`, the corpus's own fields (a demo prompt's `task` and `answer`)."""

    key: str
    transcoder_set: str
    text: str
    n_tokens: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, float | None] = field(default_factory=dict)
    accounting: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PromptSummary:
        """From a `prompts/cypher.PROMPT` or `PROMPTS` row (the prompt's properties in `props`)."""
        props = r["props"]
        return cls(
            key=r["key"],
            transcoder_set=r["transcoder_set"],
            text=r["text"],
            n_tokens=r["n_tokens"],
            extra={k: v for k, v in sorted(props.items()) if k not in PROMPT_OWN},
            scores={s.field: props.get(s.value) for s in PromptScore},
            accounting={snake_case(k): props.get(k) for k in ACCOUNTING if k in props},
        )

    def as_row(self) -> dict[str, Any]:
        """The prompt's key, set, size, scores and text, then its corpus fields."""
        row = {
            "prompt": self.key,
            "transcoder_set": self.transcoder_set,
            "n_tokens": self.n_tokens,
            **{k: clean(v) for k, v in self.scores.items()},
            "text": self.text,
        }
        return {**row, **{k: clean(v) for k, v in self.extra.items() if k not in row}}

    def card(self) -> dict[str, Any]:
        """Everything known of the prompt, as one flat record (`query prompt KEY`)."""
        row = self.as_row()
        text = row.pop("text")
        return {**row, **{k: clean(v) for k, v in self.accounting.items()}, "text": text}


@dataclass(frozen=True)
class PromptMatch(Tabular):
    """A prompt whose stored graph holds every feature asked for, with their positions."""

    key: str
    text: str
    score: float
    positions: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @classmethod
    def from_row(cls, r: dict[str, Any]) -> PromptMatch:
        """From a `prompts/cypher.PROMPTS_WITH` row."""
        positions = {p["feature"]: tuple(sorted(p["positions"])) for p in r["positions"]}
        return cls(r["key"], r["text"], r["score"], positions)

    def as_row(self) -> dict[str, Any]:
        """The prompt, its score, each feature's positions and the text."""
        where = "; ".join(f"{n}@{','.join(map(str, p))}" for n, p in self.positions.items())
        return {"prompt": self.key, "score": self.score, "positions": where, "text": self.text}
