"""The in-memory transcoder: five tensors per layer plus what the file said about itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from circuitstore.schema.model import content_hash

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
        return int(self.W_enc.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.W_enc.shape[0])

    def preactivation(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_tc"]:
        return (x - self.b_dec) @ self.W_enc + self.b_enc

    def encode(self, x: Float[Tensor, "*batch d_model"]) -> Float[Tensor, "*batch d_tc"]:
        return torch.relu(self.preactivation(x))

    def decode(self, z: Float[Tensor, "*batch d_tc"]) -> Float[Tensor, "*batch d_model"]:
        return z @ self.W_dec + self.b_dec_out

    def to(self, dtype: torch.dtype) -> Transcoder:
        params = {name: getattr(self, name).to(dtype) for name in PARAM_NAMES}
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
        return len(self.transcoders)

    @property
    def d_tc(self) -> int:
        return max(tc.d_tc for tc in self.transcoders)

    def __getitem__(self, layer: int) -> Transcoder:
        return self.transcoders[layer]

    def content_hash(self) -> str:
        """A stable hash of a strided sample of the weights (hashing 1.8 GB per run is waste)."""
        parts: list[bytes] = []
        for tc in self.transcoders:
            for name in PARAM_NAMES:
                t = getattr(tc, name).detach().to(torch.float32).flatten()
                step = max(1, t.numel() // 4096)
                parts.append(t[::step].numpy().tobytes())
        return content_hash(*parts)

    def to(self, dtype: torch.dtype) -> TranscoderSet:
        return TranscoderSet(
            tuple(tc.to(dtype) for tc in self.transcoders), self.source, self.model_name
        )
