"""Interventions on one prompt's forward pass: scale some features' activations (0 removes them)
and measure what changes, in two models.

- **The frozen replacement model**: attention patterns, every LayerNorm scale and every other
  feature (so every other MLP output, error terms included) held at their clean values. Then a
  feature's effect on each later feature's pre-activation and on each logit is linear, and it is
  exactly what an attribution edge claims: removing the source changes the target by minus the
  edge's weight. In lumped mode an edge counts the paths through at most one attention layer, so
  there the attention layers read only the intervention's direct part (`ln1.hook_normalized`
  pinned to clean + the direct change), which removes the longer paths.
- **The real model**: nothing frozen; the feature's decoder output is taken out of its layer's
  MLP output, and everything downstream responds (LayerNorms, attention, other features).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

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
    """The change of each readout against the clean run, and the top token at the last position
    after the intervention."""

    features: Float[Tensor, " n_features"]
    logits: Float[Tensor, " n_logits"]
    top_token: int


Hook = tuple[str, Callable[..., Tensor]]


class Intervener:
    """One prompt's clean forward pass, kept for interventions on it."""

    def __init__(self, model: LoadedModel, tcs: TranscoderSet, tokens: Int[Tensor, " pos"]):
        self.model, self.tcs = model, tcs
        self.tokens = tokens.to(model.device)[None]
        with torch.no_grad():
            logits, cache = model.bridge.run_with_cache(self.tokens, names_filter=_frozen_hook)
        self.clean = {name: t.detach() for name, t in cache.items()}
        self.clean_logits = logits[0].detach()

    def activation(self, site: Site) -> float:
        """The feature's activation in the clean run."""
        x = self.clean[f"blocks.{site.layer}.ln2.hook_normalized"][0, site.pos]
        return float(self.tcs[site.layer].encode(x)[site.index])

    def frozen(
        self, sites: Sequence[Site], scale: float, readout: Readout, lumped: bool = False
    ) -> Change:
        """Scale `sites` by `scale` in the frozen replacement model."""
        deltas = self._deltas(sites, scale)
        hooks = [(name, self._pin(name)) for name in self.clean if _pinned(name)]
        hooks += [self._mlp_out(layer, deltas.get(layer)) for layer in range(self.model.n_layers)]
        if lumped:
            hooks += self._direct_only(deltas)
        return self._measure(hooks, readout)

    def real(self, sites: Sequence[Site], scale: float, readout: Readout) -> Change:
        """Scale `sites` by `scale` in the real model, nothing frozen."""
        deltas = self._deltas(sites, scale)
        return self._measure(
            [self._mlp_out(layer, d, pin=False) for layer, d in deltas.items()], readout
        )

    def _deltas(self, sites: Sequence[Site], scale: float) -> dict[int, Tensor]:
        """Per layer, the change of its MLP output: (scale - 1) x activation x decoder row."""
        out: dict[int, Tensor] = {}
        for site in sites:
            tc = self.tcs[site.layer]
            delta = out.setdefault(site.layer, torch.zeros_like(self.clean_mlp_out(site.layer)))
            delta[site.pos] += (scale - 1.0) * self.activation(site) * tc.W_dec[site.index]
        return out

    def clean_mlp_out(self, layer: int) -> Float[Tensor, "pos d_model"]:
        """The clean run's MLP output of one layer, per position."""
        return self.clean[f"blocks.{layer}.hook_mlp_out"][0]

    def _pin(self, name: str) -> Callable[..., Tensor]:
        return _constant(self.clean[name])

    def _mlp_out(self, layer: int, delta: Tensor | None, pin: bool = True) -> Hook:
        def hook(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
            base = self.clean[f"blocks.{layer}.hook_mlp_out"] if pin else act
            return base if delta is None else base + delta[None].to(act.dtype)

        return f"blocks.{layer}.hook_mlp_out", hook

    def _direct_only(self, deltas: dict[int, Tensor]) -> list[Hook]:
        """Attention at layer k reads the clean input plus only the MLP changes of earlier layers
        (centred and divided by the frozen scale, as LayerNorm would): no path through two
        attention layers."""
        hooks: list[Hook] = []
        for k in range(self.model.n_layers):
            direct = [d for layer, d in deltas.items() if layer < k]
            if not direct:
                continue
            change = torch.stack(direct).sum(0)
            change = change - change.mean(-1, keepdim=True)
            scale = self.clean[f"blocks.{k}.ln1.hook_scale"][0]
            pinned = self.clean[f"blocks.{k}.ln1.hook_normalized"] + (change / scale)[None]
            hooks.append((f"blocks.{k}.ln1.hook_normalized", _constant(pinned)))
        return hooks

    def _measure(self, hooks: list[Hook], readout: Readout) -> Change:
        seen: dict[str, Tensor] = {}
        layers = {s.layer for s in readout.features}
        for layer in layers:
            hooks.append((f"blocks.{layer}.ln2.hook_normalized", _capture(seen)))
        with torch.no_grad():
            logits = self.model.bridge.run_with_hooks(self.tokens, fwd_hooks=hooks)[0]
        return Change(
            self._feature_change(seen, readout.features),
            torch.stack([logits[p, t] - self.clean_logits[p, t] for p, t in readout.logits])
            if readout.logits
            else torch.zeros(0),
            int(logits[-1].argmax()),
        )

    def _feature_change(self, seen: dict[str, Tensor], targets: Sequence[Site]) -> Tensor:
        changes = []
        for t in targets:
            name = f"blocks.{t.layer}.ln2.hook_normalized"
            tc = self.tcs[t.layer]
            after = tc.preactivation(seen[name][0, t.pos])[t.index]
            before = tc.preactivation(self.clean[name][0, t.pos])[t.index]
            changes.append(after - before)
        return torch.stack(changes) if changes else torch.zeros(0)


def _frozen_hook(name: str) -> bool:
    return _pinned(name) or name.endswith(
        ("hook_mlp_out", "ln1.hook_normalized", "ln2.hook_normalized")
    )


def _pinned(name: str) -> bool:
    """What the frozen replacement model holds at its clean value."""
    return name.endswith(("hook_scale", "attn.hook_pattern"))


def _constant(value: Tensor) -> Callable[..., Tensor]:
    return lambda act, hook: value.to(act.dtype)  # noqa: ARG005 (TransformerLens passes it)


def _capture(seen: dict[str, Tensor]) -> Callable[..., Tensor]:
    def fn(act: Tensor, hook: Any) -> Tensor:
        seen[hook.name] = act.detach()
        return act

    return fn
