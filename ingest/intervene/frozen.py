"""The local replacement model as forward hooks on the real one, for one prompt: what `verify`
(`effects`) and the QK removal checks (`ingest.qk.removal`) run.

An intervention adds vectors to the residual stream at write points (`attribution.writes`: the
embedding, attention outputs, MLP outputs). In the **frozen** model every norm scale (ln1,
ln2, ln_final and Gemma-2's post-attention and post-MLP norms) and every attention pattern
keeps its clean value, and so does every MLP output but for its linear part: a transcoder's
skip connection (out += x @ W_skip) responds to the change of its input x, as the engine's
edges through W_skip say it does. The features' activations stay frozen: only the added
vectors move them. A change then reaches every later point linearly, which is what the graph's
edges claim.

Lumped-mode edges count only the paths through at most one attention layer or skip
connection. There every attention layer reads the clean input plus only the direct change
(`ln1.hook_normalized` pinned to clean + readin(direct) / scale), and every skip connection
responds to the direct change alone, so the longer paths are cut.

In the **free** model nothing is frozen: the vectors are added where the model adds them and
everything downstream responds.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.api import paired
from circuitstore.ingest.attribution.writes import attn_point, mlp_point, point_hook
from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder import TranscoderSet

Hook = tuple[str, Callable[..., Tensor]]
# What the frozen model holds at its clean value, by hook name suffix: every norm's scale and
# every attention pattern.
PINNED = ("hook_scale", "attn.hook_pattern")
LOGITS = "unembed.hook_out"  # the logits before any soft-cap, as the graph's logit nodes hold

# Per write point, the change added there: (pos, d_model).
Additions = Mapping[int, Float[Tensor, "pos d_model"]]


class FrozenRun:
    """One prompt's clean forward pass, and the hooks that intervene on it. `tcs` is paired with
    the model here (every transcoder then reads ln2's normalised output or the raw residual)."""

    def __init__(self, model: LoadedModel, tcs: TranscoderSet, tokens: Int[Tensor, " pos"]):
        self.model = model
        self.tcs = paired(tcs, model).to(model.dtype, model.device)
        self.tokens = tokens.to(model.device)[None]
        wanted = {LOGITS}
        for layer, tc in enumerate(self.tcs.transcoders):
            wanted |= {f"blocks.{layer}.{h}" for h in ("hook_mlp_out", "ln1.hook_normalized")}
            wanted.add(tc.hook_point)
        with torch.no_grad():
            _, cache = model.bridge.run_with_cache(
                self.tokens, names_filter=lambda n: n in wanted or n.endswith(PINNED)
            )
        self.clean = {name: t.detach() for name, t in cache.items()}

    @property
    def logits(self) -> Float[Tensor, "pos d_vocab"]:
        """The clean logits, before any soft-cap."""
        return self.clean[LOGITS][0]

    def input(self, layer: int) -> Float[Tensor, "pos d_model"]:
        """What layer `layer`'s transcoder reads in the clean run."""
        return self.clean[self.tcs[layer].hook_point][0]

    def frozen_hooks(
        self, adds: Additions, *, lumped: bool = False, attention_below: int | None = None
    ) -> list[Hook]:
        """The frozen model with `adds` added; in lumped mode the attention layers below
        `attention_below` (default: all) and every skip connection read only the direct change."""
        hooks = [(name, _constant(t)) for name, t in self.clean.items() if name.endswith(PINNED)]
        hooks += [(point_hook(p), _add(d)) for p, d in adds.items() if not _is_mlp(p)]
        live: dict[int, Tensor] = {}  # exact mode: the skip connections' inputs as they run
        for layer, tc in enumerate(self.tcs.transcoders):
            out = self.clean[f"blocks.{layer}.hook_mlp_out"][0]
            if mlp_point(layer) in adds:
                out = out + adds[mlp_point(layer)]
            if tc.W_skip is None:
                hooks.append((point_hook(mlp_point(layer)), _constant(out[None])))
            elif lumped:
                direct = self.input_change(layer, _before(adds, mlp_point(layer), out))
                response = out + direct @ tc.W_skip
                hooks.append((point_hook(mlp_point(layer)), _constant(response[None])))
            else:
                hooks.append((tc.hook_point, _keep(live, layer)))
                hooks.append((point_hook(mlp_point(layer)), self._skip(layer, out, live)))
        if lumped:
            hooks += self._direct_attention(adds, attention_below)
        return hooks

    def free_hooks(self, adds: Additions) -> list[Hook]:
        """The real model with `adds` added where the model adds them, nothing frozen."""
        return [(point_hook(p), _add(d)) for p, d in adds.items()]

    def run(
        self, hooks: list[Hook], read: Iterable[str] = ()
    ) -> tuple[Float[Tensor, "pos d_vocab"], dict[str, Tensor]]:
        """The forward pass with `hooks`: its logits (after any soft-cap, as the model gives
        them) and the values of the hooks named in `read` (`LOGITS` always)."""
        seen: dict[str, Tensor] = {}
        reads = [(name, _capture(seen, name)) for name in {*read, LOGITS}]
        with torch.no_grad(), warnings.catch_warnings():
            # Pinning a norm's scale is the point here, not a numerical accident: the bridge's
            # warning that it rebuilt the norm from the edited scale says nothing to the user.
            warnings.filterwarnings("ignore", message="A forward hook edited hook_scale")
            logits = self.model.bridge.run_with_hooks(self.tokens, fwd_hooks=[*hooks, *reads])
        return logits[0], {name: t[0] for name, t in seen.items()}

    def input_change(
        self, layer: int, change: Float[Tensor, "pos d_model"]
    ) -> Float[Tensor, "pos d_model"]:
        """How layer `layer`'s transcoder input moves when its residual stream (`resid_mid`)
        moves by `change`, the norm's scale frozen."""
        if self.tcs[layer].reads_residual:
            return change
        scale = self.clean[f"blocks.{layer}.ln2.hook_scale"][0]
        return self.model.readin(change) / scale

    def _skip(self, layer: int, out: Tensor, live: dict[int, Tensor]) -> Callable[..., Tensor]:
        """The MLP output with its skip connection's response to the input's change so far."""
        W_skip = self.tcs[layer].W_skip
        assert W_skip is not None
        clean = self.input(layer)

        def hook(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
            return (out + (live[layer][0] - clean) @ W_skip)[None].to(act.dtype)

        return hook

    def _direct_attention(self, adds: Additions, below: int | None) -> list[Hook]:
        """Attention layers read the clean input plus only the direct change (readin and the
        frozen scale, as the norm would): no path through two attention layers."""
        hooks: list[Hook] = []
        for layer in range(self.model.n_layers if below is None else below):
            if not any(p < attn_point(layer) for p in adds):
                continue
            name = f"blocks.{layer}.ln1.hook_normalized"
            change = _before(adds, attn_point(layer), self.clean[name][0])
            scale = self.clean[f"blocks.{layer}.ln1.hook_scale"][0]
            pinned = self.clean[name][0] + self.model.readin(change) / scale
            hooks.append((name, _constant(pinned[None])))
        return hooks


def _is_mlp(point: int) -> bool:
    return point > 0 and point % 2 == 0


def _before(adds: Additions, point: int, like: Tensor) -> Tensor:
    """The direct change at a point: everything added at earlier points (zeros like `like`)."""
    parts = [d.to(like.dtype) for p, d in adds.items() if p < point]
    return torch.stack(parts).sum(0) if parts else torch.zeros_like(like)


def _constant(value: Tensor) -> Callable[..., Tensor]:
    return lambda act, hook: value.to(act.dtype)  # noqa: ARG005 (TransformerLens passes it)


def _add(delta: Tensor) -> Callable[..., Tensor]:
    return lambda act, hook: act + delta[None].to(act.dtype)  # noqa: ARG005


def _keep(live: dict[int, Tensor], layer: int) -> Callable[..., Tensor]:
    def fn(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
        live[layer] = act.detach()
        return act

    return fn


def _capture(seen: dict[str, Tensor], name: str) -> Callable[..., Tensor]:
    """Keeps the value under the name asked for (an alias's hook has another name)."""

    def fn(act: Tensor, hook: Any) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
        seen[name] = act.detach()
        return act

    return fn
