"""The in-memory transcoder: five tensors per layer plus what the file said about itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuitstore.ingest.safeload import weights_digest

PARAM_NAMES = ("W_enc", "b_enc", "W_dec", "b_dec", "b_dec_out")


def expected_hook_point(layer: int) -> str:
    """The hook the published transcoders read: ln2's output before its (folded) gain and bias."""
    return f"blocks.{layer}.ln2.hook_normalized"


@dataclass(frozen=True)
class Transcoder:
    """One layer's transcoder.

    pre = (x - b_dec) @ W_enc + b_enc; z = ReLU(pre); out = z @ W_dec + b_dec_out.
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

    @property
    def d_tc(self) -> int:
        """Features per layer."""
        return int(self.W_enc.shape[1])

    @property
    def d_model(self) -> int:
        """The model's width."""
        return int(self.W_enc.shape[0])

    def preactivation(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_tc"]:
        """The features' pre-activations on MLP inputs `x`."""
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_tc"]:
        """The features' activations on MLP inputs `x`."""
        return torch.relu(self.preactivation(x))

    def decode(self, z: Float[Tensor, "*batch d_tc"]) -> Float[Tensor, "*batch d_model"]:
        """The MLP output the activations `z` reconstruct."""
        return z @ self.W_dec + self.b_dec_out

    def named_tensors(self) -> list[tuple[str, Tensor]]:
        """The five parameters, and the log feature sparsity where known."""
        named = [(name, getattr(self, name)) for name in PARAM_NAMES]
        if self.log_feature_sparsity is not None:
            named.append(("log_feature_sparsity", self.log_feature_sparsity))
        return named

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> Transcoder:
        """The transcoder in `dtype` (on `device`)."""
        params = {name: getattr(self, name).to(device=device, dtype=dtype) for name in PARAM_NAMES}
        return Transcoder(
            layer=self.layer,
            hook_point=self.hook_point,
            source=self.source,
            cfg=self.cfg,
            log_feature_sparsity=self.log_feature_sparsity,
            **params,
        )


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

    def __getitem__(self, layer: int) -> Transcoder:
        return self.transcoders[layer]

    @cached_property
    def content_hash(self) -> str:
        """sha256 of every tensor of every layer (in float32): computed once per set, 1.3 s for
        GPT-2 small's 12 transcoders. A sample would let two sets that differ elsewhere share an
        id, and with it their data in the store."""
        named = [
            (f"{tc.layer}.{name}", t.float())
            for tc in self.transcoders
            for name, t in tc.named_tensors()
        ]
        return weights_digest(named)

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> TranscoderSet:
        """The set in `dtype` (on `device`), its hash kept."""
        moved = TranscoderSet(
            tuple(tc.to(dtype, device) for tc in self.transcoders), self.source, self.model_name
        )
        if "content_hash" in self.__dict__:  # the hash is taken in float32: the same weights
            moved.__dict__["content_hash"] = self.__dict__["content_hash"]
        return moved
