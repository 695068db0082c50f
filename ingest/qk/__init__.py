"""QK tracing: one head's attention score at (query, key) split into the bilinear terms of the
prompt's graph nodes (`decompose`), checked by removing nodes from the forward pass
(`removal`). Entry point: :func:`trace_head` (or `AttributionEngine.trace_qk`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from circuitstore.ingest.attribution.api import AttributionEngine
from circuitstore.ingest.config import AttributionConfig, Mode
from circuitstore.ingest.qk.decompose import RawTrace, Side, require_qk_tracing, trace
from circuitstore.ingest.qk.removal import Removal, Remover
from circuitstore.schema.errors import InputError
from circuitstore.schema.names import head_name

# The most terms a trace keeps per part (pairs, each side's marginals).
MAX_TOP = 1000


@dataclass(frozen=True)
class HeadTrace:
    """A trace, the sides it was computed from, and its removal checks (`check` strongest
    graph nodes by |marginal|, either side)."""

    trace: RawTrace
    query: Side
    key: Side
    removals: tuple[Removal, ...]


def check_head(
    n_layers: int, n_heads: int, layer: int, head: int, query: int, key: int, n_pos: int
) -> None:
    """Refuse a head the model lacks, or positions that are no (query, key) pair of the prompt."""
    name = head_name(layer, head)
    if not (0 <= layer < n_layers and 0 <= head < n_heads):
        raise InputError(
            f"head {name}: the model has layers 0..{n_layers - 1} and heads 0..{n_heads - 1} "
            "per layer"
        )
    if not (0 <= key <= query < n_pos):
        raise InputError(
            f"positions query {query}, key {key}: expected 0 <= key <= query <= {n_pos - 1} "
            f"(a query attends to itself and earlier positions; the prompt has {n_pos} tokens)"
        )


def trace_head(
    engine: AttributionEngine,
    tokens: Int[Tensor, " pos"] | Sequence[int],
    layer: int,
    head: int,
    query: int,
    key: int,
    *,
    mode: Mode = "exact",
    top: int = 10,
    check: int = 0,
) -> HeadTrace:
    """Head (layer, head)'s score at (query, key) on `tokens` (BOS first), decomposed as the
    graph's `mode` does; its `top` strongest terms of each part, and `check` removal checks.
    Raises InputError for a family without QK tracing (`decompose.require_qk_tracing`)."""
    require_qk_tracing(engine.model)
    tokens = torch.as_tensor(tokens, dtype=torch.long)
    if not 1 <= top <= MAX_TOP:
        raise InputError(f"top {top}: expected 1..{MAX_TOP}")
    if not 0 <= check <= MAX_TOP:
        raise InputError(f"check {check}: expected 0..{MAX_TOP}")
    model = engine.model
    check_head(model.n_layers, model.n_heads, layer, head, query, key, int(tokens.shape[0]))
    with torch.no_grad(), engine.on_device():
        state = engine.prepare_tokens(tokens, AttributionConfig(mode=mode, logit_top_k=1))
        raw, q, k = trace(state, layer, head, query, key, top)
        done: tuple[Removal, ...] = ()
        if check:
            remover = Remover(state, engine.transcoders, layer, head, q, k)
            done = tuple(remover.removal(row, name) for row, name in _strongest(q, k, check))
    return HeadTrace(raw, q, k, done)


def _strongest(q: Side, k: Side, n: int) -> list[tuple[int, str]]:
    """The `n` graph nodes with the largest |marginal| on either side (nodes on both sides
    count the larger), by node-table row."""
    scale = float(q.vectors.shape[1]) ** 0.5
    best: dict[int, tuple[float, str]] = {}
    for s, other in ((q, k), (k, q)):
        marginal = (s.vectors.double() @ other.total).abs() / scale
        for row, name, value in zip(s.rows.tolist(), s.names, marginal.tolist(), strict=True):
            if row >= 0 and value > best.get(row, (-1.0, ""))[0]:
                best[row] = (value, name)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[1][1]))[:n]
    return [(row, name) for row, (_, name) in ranked]


__all__ = [
    "HeadTrace",
    "RawTrace",
    "Removal",
    "Side",
    "check_head",
    "require_qk_tracing",
    "trace_head",
]
