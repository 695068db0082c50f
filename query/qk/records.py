"""What a QK trace says (`circuitstore qk`, `ingest --qk-top`): one head's attention score at
one (query, key) pair of positions, split into the bilinear terms of the contributors on each
side. The ingest side computes it (torch); the query side reads it back; both use these
records, which import nothing heavy.

With LayerNorm's scale frozen, the head's query at position T and key at position S are sums
over contributors (graph nodes: embeddings, features, error terms, biases, lumped remainders,
and the q/k biases), so the score q . k / sqrt(d_head) is the sum of one term per (query
contributor, key contributor) pair. A side's marginal of a contributor is its terms summed over
the whole other side; each side's marginals sum to the score."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from circuitstore.query.tables import Tabular

TRACE_COLUMNS = (
    *("prompt", "head", "query_pos", "key_pos", "mode", "score", "total", "probability"),
    *("n_query", "n_key"),
)
TERM_COLUMNS = ("part", "rank", "query", "key", "value")
CHECK_COLUMNS = ("node", "predicted", "frozen", "observed")


@dataclass(frozen=True)
class QKTerm(Tabular):
    """One term of a trace: a pair (both contributors named) or a marginal (one side None).
    Contributors are local node ids of the prompt's graph (`schema.names`)."""

    query: str | None
    key: str | None
    value: float


@dataclass(frozen=True)
class QKCheck(Tabular):
    """One graph node removed from the forward pass: the trace's prediction of the score's
    change (minus its marginals on both sides plus its own pair term; on one side only, minus
    its marginal), the change with LayerNorm, patterns and MLPs frozen (equal to it up to float
    error) and the real model's change, nothing frozen."""

    node: str
    predicted: float
    frozen: float
    observed: float


@dataclass(frozen=True)
class QKTrace(Tabular):
    """One head's score at (query_pos, key_pos) in one prompt, decomposed.

    `score` is the model's own (TransformerLens's `hook_attn_scores`), `total` the sum of every
    pairwise term (equal to it up to float error), `probability` the head's attention weight at
    the pair. `pairs`, `query_side` and `key_side` hold the strongest terms (by |value|), of
    the `n_query` x `n_key` there are."""

    prompt: str
    prompt_id: str
    transcoder_set: str
    layer: int
    head: int
    query_pos: int
    key_pos: int
    mode: str
    score: float
    total: float
    probability: float
    n_query: int
    n_key: int
    pairs: tuple[QKTerm, ...]
    query_side: tuple[QKTerm, ...]
    key_side: tuple[QKTerm, ...]
    checks: tuple[QKCheck, ...] = ()  # removal checks, where computed (`circuitstore qk`)

    @property
    def head_name(self) -> str:
        """`attn2[3]`."""
        from circuitstore.schema.names import head_name

        return head_name(self.layer, self.head)

    def as_row(self) -> dict[str, Any]:
        """The trace's summary as one row (its terms: `rows()`)."""
        return {
            "prompt": self.prompt,
            "head": self.head_name,
            "query_pos": self.query_pos,
            "key_pos": self.key_pos,
            "mode": self.mode,
            "score": self.score,
            "total": self.total,
            "probability": self.probability,
            "n_query": self.n_query,
            "n_key": self.n_key,
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per kept term: the pairs, then each side's marginals, ranked."""
        out: list[dict[str, Any]] = []
        for part, terms in (
            ("pair", self.pairs),
            ("query", self.query_side),
            ("key", self.key_side),
        ):
            out += [{"part": part, "rank": i + 1, **t.as_row()} for i, t in enumerate(terms)]
        return out
