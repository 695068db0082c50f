"""Interventions on one prompt's forward pass: scale some features' activations (0 removes them)
and measure what changes, in two models (`frozen` builds both).

- **The frozen replacement model**: attention patterns, every norm scale and every other
  feature (so every other MLP output, error terms included, but for a transcoder's skip
  connection, which responds to its input) held at their clean values. Then a feature's effect
  on each later feature's pre-activation and on each logit (before any soft-cap) is linear, and
  it is exactly what an attribution edge claims: removing the source changes the target by
  minus the edge's weight. A cross-layer transcoder's feature leaves every MLP output it writes
  to. In lumped mode an edge counts the paths through at most one attention layer or skip
  connection, so there those read only the intervention's direct part, which removes the longer
  paths.
- **The real model**: nothing frozen; the feature's decoder outputs are taken out of the MLP
  outputs, and everything downstream responds (norms, attention, other features).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.writes import mlp_point
from circuitstore.ingest.intervene.frozen import LOGITS, FrozenRun, Hook
from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder import TranscoderSet


@dataclass(frozen=True)
class Site:
    """One feature occurrence: layer, position, index."""

    layer: int
    pos: int
    index: int


@dataclass(frozen=True)
class Readout:
    """What to measure: target features' pre-activations and logits (position, token id)."""

    features: tuple[Site, ...] = ()
    logits: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Change:
    """The change of each readout against the clean run (logits before any soft-cap), and the
    top token at the last position after the intervention."""

    features: Float[Tensor, " n_features"]
    logits: Float[Tensor, " n_logits"]
    top_token: int


class Intervener:
    """One prompt's clean forward pass, kept for interventions on it."""

    def __init__(self, model: LoadedModel, tcs: TranscoderSet, tokens: Int[Tensor, " pos"]):
        self.run = FrozenRun(model, tcs, tokens)
        self.model, self.tcs, self.tokens = model, self.run.tcs, self.run.tokens
        self.clean_logits = self.run.logits

    def activation(self, site: Site) -> float:
        """The feature's activation in the clean run."""
        x = self.run.input(site.layer)[site.pos]
        return float(self.tcs[site.layer].encode(x)[site.index])

    def frozen(
        self, sites: Sequence[Site], scale: float, readout: Readout, lumped: bool = False
    ) -> Change:
        """Scale `sites` by `scale` in the frozen replacement model."""
        hooks = self.run.frozen_hooks(self._adds(sites, scale), lumped=lumped)
        return self._measure(hooks, readout)

    def real(self, sites: Sequence[Site], scale: float, readout: Readout) -> Change:
        """Scale `sites` by `scale` in the real model, nothing frozen."""
        return self._measure(self.run.free_hooks(self._adds(sites, scale)), readout)

    def _adds(self, sites: Sequence[Site], scale: float) -> dict[int, Tensor]:
        """Per MLP output the sites write to, its change: (scale - 1) x activation x the
        decoder row into that layer (a cross-layer feature's own layer and each later one)."""
        out: dict[int, Tensor] = {}
        zeros = torch.zeros_like(self.run.input(0))
        for site in sites:
            tc = self.tcs[site.layer]
            change = (scale - 1.0) * self.activation(site)
            for layer in range(site.layer, site.layer + tc.n_ahead + 1):
                delta = out.setdefault(mlp_point(layer), zeros.clone())
                delta[site.pos] += change * tc.decoder_to(layer)[site.index].to(delta.dtype)
        return out

    def _measure(self, hooks: list[Hook], readout: Readout) -> Change:
        inputs = {self.tcs[s.layer].hook_point for s in readout.features}
        logits, seen = self.run.run(hooks, inputs)
        raw = seen[LOGITS]
        return Change(
            self._feature_change(seen, readout.features),
            torch.stack([raw[p, t] - self.clean_logits[p, t] for p, t in readout.logits])
            if readout.logits
            else torch.zeros(0),
            int(logits[-1].argmax()),
        )

    def _feature_change(self, seen: dict[str, Tensor], targets: Sequence[Site]) -> Tensor:
        changes = []
        for t in targets:
            tc = self.tcs[t.layer]
            after = tc.preactivation(seen[tc.hook_point][t.pos])[t.index]
            before = tc.preactivation(self.run.input(t.layer)[t.pos])[t.index]
            changes.append(after - before)
        return torch.stack(changes) if changes else torch.zeros(0)
