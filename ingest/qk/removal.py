"""A trace's contributors checked by removing them from the forward pass.

A graph node's vector (a feature's activation x decoder row, an error term, an embedding, a
bias) is subtracted wherever the model adds it (`hook_mlp_out`, `hook_attn_out`, the first
residual stream) and the head's score is read again, in two models:

- **frozen**: every norm scale and attention pattern and every MLP output but for a skip
  connection's response held at their clean values (the replacement model the trace
  decomposes, `intervene.frozen`; in lumped mode the attention layers below L and the skip
  connections read only the removal's direct part, so the change reaches layer L through at
  most one of them). The score then changes by exactly what the trace predicts: minus the
  node's marginals on both sides plus its own pair term (for a node on one side only, minus
  its marginal);
- **real**: nothing frozen, so norms, attention and the MLPs respond: the observed change
  beside the prediction, as `verify` reports.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from circuitstore.ingest.attribution.state import PromptState
from circuitstore.ingest.attribution.writes import source_writes
from circuitstore.ingest.intervene.frozen import FrozenRun, Hook
from circuitstore.ingest.qk.decompose import Side
from circuitstore.ingest.transcoder import TranscoderSet


@dataclass(frozen=True)
class Removal:
    """One node removed: the trace's prediction of the score's change, and the changes seen
    with LayerNorm (and patterns, and MLPs) frozen and in the real model."""

    node: str
    predicted: float
    frozen: float
    observed: float


class Remover:
    """Removals on one prompt's forward pass, for one head's score at (query, key); `tcs` the
    transcoders the prompt's graph was made with (their skip connections respond in the frozen
    model)."""

    def __init__(
        self, state: PromptState, tcs: TranscoderSet, layer: int, head: int, q: Side, k: Side
    ) -> None:
        self.state, self.layer, self.head, self.q, self.k = state, layer, head, q, k
        self.run = FrozenRun(state.model, tcs, state.cache.tokens)
        self.score = self._score([])

    def removal(self, row: int, name: str) -> Removal:
        """Remove node-table row `row` (called `name`) in both models."""
        adds = self._adds(row)
        lumped = self.state.mode == "lumped"
        frozen = self.run.frozen_hooks(adds, lumped=lumped, attention_below=self.layer)
        return Removal(
            name,
            self.predicted(row),
            self._score(frozen) - self.score,
            self._score(self.run.free_hooks(adds)) - self.score,
        )

    def predicted(self, row: int) -> float:
        """The trace's change of the score when row `row` leaves both sides."""
        q, k = self.q.total, self.k.total
        dq, dk = self.q.part(row).double(), self.k.part(row).double()
        scale = math.sqrt(int(q.shape[0]))
        return float(((q - dq) @ (k - dk) - q @ k) / scale)

    def _adds(self, row: int) -> dict[int, Tensor]:
        """Minus the node's vectors, at every point where the model adds them (a cross-layer
        feature writes into several MLP outputs)."""
        writes = source_writes(self.state, torch.tensor([row]))
        if not bool(writes.found[0]):
            raise ValueError(f"row {row}: a node of this kind is no source of a query or key")
        pos = int(self.state.nodes.pos[row])
        zeros = torch.zeros_like(self.run.input(0))
        adds: dict[int, Tensor] = {}
        for point, vector in zip(writes.point.tolist(), writes.vectors, strict=True):
            delta = adds.setdefault(point, zeros.clone())
            delta[pos] -= vector.to(delta.dtype)
        return adds

    def _score(self, hooks: list[Hook]) -> float:
        name = f"blocks.{self.layer}.attn.hook_attn_scores"
        _, seen = self.run.run(hooks, [name])
        return float(seen[name][self.head, self.q.pos, self.k.pos])
