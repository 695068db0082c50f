"""A trace's contributors checked by removing them from the forward pass.

A graph node's vector (a feature's activation x decoder row, an error term, an embedding, a
bias) is subtracted where the model adds it (`hook_mlp_out`, `hook_attn_out`, the first
residual stream) and the head's score is read again, in two models:

- **frozen**: every LayerNorm scale and attention pattern and every MLP output held at their
  clean values (the replacement model the trace decomposes; in lumped mode the attention
  layers below L read only the removal's direct part, as `intervene.effects` does, so the
  change reaches layer L through at most one attention layer). The score then changes by
  exactly what the trace predicts: minus the node's marginals on both sides plus its own pair
  term (for a node on one side only, minus its marginal);
- **real**: nothing frozen, so LayerNorms, attention and the MLPs respond: the observed change
  beside the prediction, as `verify` reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.attribution.layout import BiasKind
from circuitstore.ingest.attribution.state import PromptState, centre
from circuitstore.ingest.qk.decompose import Side

Hook = tuple[str, Callable[..., Tensor]]
# What the frozen model holds at its clean value (besides the MLP outputs).
PINNED = ("hook_scale", "attn.hook_pattern")


@dataclass(frozen=True)
class Removal:
    """One node removed: the trace's prediction of the score's change, and the changes seen
    with LayerNorm (and patterns, and MLPs) frozen and in the real model."""

    node: str
    predicted: float
    frozen: float
    observed: float


@dataclass(frozen=True)
class _Site:
    """Where the model adds a node's vector: a hook, the first attention layer that reads it,
    a position and the vector."""

    hook: str
    reader: int
    pos: int
    vector: Float[Tensor, " d_model"]


class Remover:
    """Removals on one prompt's forward pass, for one head's score at (query, key)."""

    def __init__(self, state: PromptState, layer: int, head: int, q: Side, k: Side) -> None:
        self.state, self.layer, self.head, self.q, self.k = state, layer, head, q, k
        wanted = (*PINNED, "hook_mlp_out", "ln1.hook_normalized")
        with torch.no_grad():
            _, cache = state.model.bridge.run_with_cache(
                state.cache.tokens[None], names_filter=lambda n: n.endswith(wanted)
            )
        self.clean = {name: t.detach() for name, t in cache.items()}
        self.score = self._score([])

    def removal(self, row: int, name: str) -> Removal:
        """Remove node-table row `row` (called `name`) in both models."""
        site = _site(self.state, row)
        return Removal(
            name,
            self.predicted(row),
            self._score(self._frozen(site)) - self.score,
            self._score([_add(site)]) - self.score,
        )

    def predicted(self, row: int) -> float:
        """The trace's change of the score when row `row` leaves both sides."""
        q, k = self.q.total, self.k.total
        dq, dk = self.q.part(row).double(), self.k.part(row).double()
        scale = math.sqrt(int(q.shape[0]))
        return float(((q - dq) @ (k - dk) - q @ k) / scale)

    def _frozen(self, site: _Site) -> list[Hook]:
        hooks = [(n, _constant(t)) for n, t in self.clean.items() if n.endswith(PINNED)]
        for layer in range(self.state.model.n_layers):
            name = f"blocks.{layer}.hook_mlp_out"
            clean = self.clean[name]
            if site.hook == name:
                clean = clean.clone()
                clean[0, site.pos] -= site.vector.to(clean.dtype)
            hooks.append((name, _constant(clean)))
        if not site.hook.endswith("hook_mlp_out"):
            hooks.append(_add(site))
        if self.state.mode == "lumped":
            hooks += self._direct_only(site)
        return hooks

    def _direct_only(self, site: _Site) -> list[Hook]:
        """Attention layers below L read the clean input less only the removal's direct part
        (centred and divided by the frozen scale, as LayerNorm would)."""
        hooks = []
        for layer in range(site.reader, self.layer):
            name = f"blocks.{layer}.ln1.hook_normalized"
            pinned = self.clean[name].clone()
            scale = self.clean[f"blocks.{layer}.ln1.hook_scale"][0, site.pos]
            pinned[0, site.pos] -= (centre(site.vector) / scale).to(pinned.dtype)
            hooks.append((name, _constant(pinned)))
        return hooks

    def _score(self, hooks: list[Hook]) -> float:
        seen: dict[str, Tensor] = {}
        name = f"blocks.{self.layer}.attn.hook_attn_scores"

        def capture(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
            seen[name] = act.detach()
            return act

        with torch.no_grad():
            self.state.model.bridge.run_with_hooks(
                self.state.cache.tokens[None], fwd_hooks=[*hooks, (name, capture)]
            )
        return float(seen[name][0, self.head, self.q.pos, self.k.pos])


def _site(state: PromptState, row: int) -> _Site:
    """Where the model adds node-table row `row`'s vector."""
    nodes = state.nodes
    code, layer, pos = int(nodes.kind[row]), int(nodes.layer[row]), int(nodes.pos[row])
    if code == Code.EMBEDDING:
        return _Site("blocks.0.hook_resid_pre", 0, pos, _vector(state, row))
    if code == Code.BIAS and int(nodes.index[row]) == BiasKind.ATTN:
        return _Site(f"blocks.{layer}.hook_attn_out", layer + 1, pos, _vector(state, row))
    if code in (Code.FEATURE, Code.ERROR, Code.BIAS):
        return _Site(f"blocks.{layer}.hook_mlp_out", layer + 1, pos, _vector(state, row))
    raise ValueError(f"row {row}: a node of kind code {code} is no source of a query or key")


def _vector(state: PromptState, row: int) -> Float[Tensor, " d_model"]:
    """A source node's vector, as the engine's slabs hold it."""
    for slab in (*state.layer_slabs, state.embed_slab):
        for part in slab.parts():
            hit = (part.idx == row).nonzero(as_tuple=True)[0]
            if hit.shape[0]:
                return part.vectors[int(hit[0])]
    raise ValueError(f"row {row}: no source vector")


def _add(site: _Site) -> Hook:
    """Subtract the site's vector where the model adds it (nothing else frozen)."""

    def hook(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
        out = act.clone()
        out[0, site.pos] -= site.vector.to(act.dtype)
        return out

    return site.hook, hook


def _constant(value: Tensor) -> Callable[..., Tensor]:
    return lambda act, hook: value.to(act.dtype)  # noqa: ARG005 (TransformerLens passes it)
