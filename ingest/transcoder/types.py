"""The in-memory transcoder: five tensors per layer, how its features fire, and the optional
linear parts of the newer families (a skip connection; cross-layer decoders).

Every layout is read into this one form. A transcoder that reads the MLP's real input (the norm's
output with its gain and bias, ``mlp.hook_in``) is turned into one that reads the normalised
input (``ln2.hook_normalized``) when paired with a model (`Transcoder.reading_normalized`), so
the engine sees a single convention."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from circuitstore.ingest.safeload import weights_digest

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")


def expected_hook_point(layer: int) -> str:
    """The hook the published transcoders read: ln2's output before its (folded) gain and bias."""
    return f"blocks.{layer}.ln2.hook_normalized"


def mlp_input_hook(layer: int) -> str:
    """The MLP's real input: ln2's output with its gain and bias (circuit-tracer's sets)."""
    return f"blocks.{layer}.mlp.hook_in"


def residual_input_hook(layer: int) -> str:
    """The residual stream before the MLP, no norm at all (circuit-tracer's Llama set, CLTs)."""
    return f"blocks.{layer}.hook_resid_mid"


# What a transcoder can read, by circuit-tracer's (TransformerLens's) name, each a function of the
# layer: after pairing with a model only the first and the last remain
# (`Transcoder.reading_normalized` rewrites the middle one).
INPUT_HOOKS: dict[str, Callable[[int], str]] = {
    "ln2.hook_normalized": expected_hook_point,
    "mlp.hook_in": mlp_input_hook,
    "hook_resid_mid": residual_input_hook,
}


def _relu(act: Activation, pre: Tensor) -> Tensor:  # noqa: ARG001 (one signature for the table)
    return pre > 0


def _jumprelu(act: Activation, pre: Tensor) -> Tensor:
    assert act.threshold is not None
    return pre > act.threshold.to(pre.dtype)


def _topk(act: Activation, pre: Tensor) -> Tensor:
    """The k largest pre-activations of each position, whatever their sign: circuit-tracer's
    TopK (`transcoder/activation_functions.py`) keeps them without a ReLU, so a selected negative
    pre-activation is an active feature with a negative value. The selection is then frozen like
    the attention patterns, so an active feature's value is its pre-activation."""
    assert act.k is not None
    k = min(act.k, pre.shape[-1])
    return torch.zeros_like(pre, dtype=torch.bool).scatter_(-1, pre.topk(k, dim=-1).indices, True)


# Activation functions by name: each gives the mask of active features from the pre-activations.
# An active feature's value is its pre-activation (ReLU and JumpReLU by definition; TopK keeps
# the selected values), so the graph's linear algebra is the same for all three.
ACTIVATIONS: dict[str, Callable[[Activation, Tensor], Tensor]] = {
    "relu": _relu,
    "jumprelu": _jumprelu,
    "topk": _topk,
}


@dataclass(frozen=True)
class Activation:
    """How features fire: a key of `ACTIVATIONS`, with JumpReLU's per-feature threshold or
    TopK's k."""

    kind: str = "relu"
    threshold: Float[Tensor, " d_tc"] | None = None
    k: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ACTIVATIONS:
            raise ValueError(f"activation {self.kind!r}: expected one of {', '.join(ACTIVATIONS)}")

    def active(self, pre: Float[Tensor, "*batch d_tc"]) -> Bool[Tensor, "*batch d_tc"]:
        """Which features fire, given their pre-activations."""
        return ACTIVATIONS[self.kind](self, pre)

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> Activation:
        """The same activation with its threshold in `dtype` (on `device`)."""
        if self.threshold is None:
            return self
        return replace(self, threshold=self.threshold.to(device=device, dtype=dtype))


RELU = Activation()


@dataclass(frozen=True)
class Transcoder:
    """One layer's transcoder.

    pre = (x - b_dec) @ W_enc + b_enc; z = pre where `activation` says a feature fires, else 0;
    out = z @ W_dec + b_dec_out (+ x @ W_skip). A cross-layer transcoder's layer-L features also
    write z @ W_dec_ahead[:, i] to the MLP output of layer L + 1 + i.
    """

    layer: int
    hook_point: str
    W_enc: Float[Tensor, "d_model d_tc"]
    b_enc: Float[Tensor, " d_tc"]
    W_dec: Float[Tensor, "d_tc d_model"]
    b_dec: Float[Tensor, " d_model"]
    b_dec_out: Float[Tensor, " d_model"]
    source: str
    cfg: dict[str, Any] = field(default_factory=dict)
    log_feature_sparsity: Float[Tensor, " d_tc"] | None = None
    activation: Activation = RELU
    W_skip: Float[Tensor, "d_model d_model"] | None = None
    W_dec_ahead: Float[Tensor, "d_tc n_ahead d_model"] | None = None

    @property
    def d_tc(self) -> int:
        """Features per layer."""
        return int(self.W_enc.shape[1])

    @property
    def d_model(self) -> int:
        """The model's width."""
        return int(self.W_enc.shape[0])

    def preactivation(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_tc"]:
        """The features' pre-activations on MLP inputs `x`, in x's dtype (weights held narrower,
        in bfloat16, are widened for the product)."""
        dt = x.dtype
        return (x - self.b_dec.to(dt)) @ self.W_enc.to(dt) + self.b_enc.to(dt)

    def encode(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_tc"]:
        """The features' activations on MLP inputs `x`."""
        pre = self.preactivation(x)
        return pre * self.activation.active(pre)

    def decode(self, z: Float[Tensor, "*batch d_tc"]) -> Float[Tensor, "*batch d_model"]:
        """The own layer's MLP output the activations `z` reconstruct (without the skip)."""
        return z @ self.W_dec + self.b_dec_out

    @property
    def reads_residual(self) -> bool:
        """Whether the input is the raw residual stream (no norm between it and the encoder)."""
        return self.hook_point == residual_input_hook(self.layer)

    @property
    def n_ahead(self) -> int:
        """How many later layers this layer's features also write to (0: per-layer)."""
        return 0 if self.W_dec_ahead is None else int(self.W_dec_ahead.shape[1])

    def decoder_to(self, layer: int) -> Float[Tensor, "d_tc d_model"]:
        """The decoder into `layer`'s MLP output (this layer's own or a later one's)."""
        ahead = layer - self.layer
        if ahead == 0:
            return self.W_dec
        assert self.W_dec_ahead is not None
        assert 0 < ahead <= self.n_ahead
        return self.W_dec_ahead[:, ahead - 1]

    def reading_normalized(
        self, gain: Float[Tensor, " d_model"], bias: Float[Tensor, " d_model"]
    ) -> Transcoder:
        """The same transcoder reading ln2's normalised output n instead of the MLP's input
        x = n * gain + bias, exactly: the gain goes into W_enc and W_skip, the constants into
        b_enc and b_dec_out. A transcoder reading anything else is returned as it is."""
        if self.hook_point != mlp_input_hook(self.layer):
            return self
        dt = self.W_enc.dtype
        gain, bias = gain.to(dt), bias.to(dt)
        skip_const = bias @ self.W_skip.to(dt) if self.W_skip is not None else 0.0
        return replace(
            self,
            hook_point=expected_hook_point(self.layer),
            W_enc=gain[:, None] * self.W_enc,
            b_enc=self.b_enc + (bias - self.b_dec) @ self.W_enc,
            b_dec=torch.zeros_like(self.b_dec),
            b_dec_out=self.b_dec_out + skip_const,
            W_skip=None if self.W_skip is None else gain[:, None] * self.W_skip,
        )

    def named_tensors(self) -> list[tuple[str, Tensor]]:
        """Every tensor that defines the transcoder (its identity in the store), and the log
        feature sparsity where known."""
        named = [(name, getattr(self, name)) for name in PARAM_NAMES]
        for name in OPTIONAL_NAMES:
            value = getattr(self, name)
            if value is not None:
                named.append((name, value))
        if self.activation.threshold is not None:
            named.append(("threshold", self.activation.threshold))
        if self.log_feature_sparsity is not None:
            named.append(("log_feature_sparsity", self.log_feature_sparsity))
        return named

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> Transcoder:
        """The transcoder in `dtype` (on `device`)."""
        params: dict[str, Any] = {
            name: getattr(self, name).to(device=device, dtype=dtype) for name in PARAM_NAMES
        }
        for name in OPTIONAL_NAMES:
            value = getattr(self, name)
            params[name] = None if value is None else value.to(device=device, dtype=dtype)
        return replace(self, activation=self.activation.to(dtype, device), **params)


OPTIONAL_NAMES = ("W_skip", "W_dec_ahead")


@dataclass(frozen=True)
class TranscoderSet:
    """One transcoder per layer, index = layer."""

    transcoders: tuple[Transcoder, ...]
    source: str
    model_name: str

    @property
    def n_layers(self) -> int:
        """How many layers have a transcoder."""
        return len(self.transcoders)

    @property
    def d_tc(self) -> int:
        """Features per layer (the widest layer's)."""
        return max(tc.d_tc for tc in self.transcoders)

    @property
    def cross_layer(self) -> bool:
        """Whether features write to later layers' MLP outputs too (a cross-layer transcoder)."""
        return any(tc.n_ahead for tc in self.transcoders)

    @property
    def has_skip(self) -> bool:
        """Whether any layer has a linear skip connection (W_skip)."""
        return any(tc.W_skip is not None for tc in self.transcoders)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.transcoders[layer]

    @cached_property
    def content_hash(self) -> str:
        """sha256 of every tensor of every layer (in float32): computed once per set, 1.3 s for
        GPT-2 small's 12 transcoders. A sample would let two sets that differ elsewhere share an
        id, and with it their data in the store."""
        named = [
            (f"{tc.layer}.{name}", t) for tc in self.transcoders for name, t in tc.named_tensors()
        ]
        return weights_digest(named, as_dtype=torch.float32)

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> TranscoderSet:
        """The set in `dtype` (on `device`), its hash kept."""
        moved = TranscoderSet(
            tuple(tc.to(dtype, device) for tc in self.transcoders), self.source, self.model_name
        )
        if "content_hash" in self.__dict__:  # the hash is taken in float32: the same weights
            moved.__dict__["content_hash"] = self.__dict__["content_hash"]
        return moved
