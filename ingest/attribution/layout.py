"""Where each node of one prompt's graph sits in the node table: the row layout.

Rows, in order: the active features (by layer, then position, then index), one error term per
layer and position, one embedding per position, the constant terms (attention, transcoder-output
and encoder biases per layer and position, then the unembedding bias per position), the logit
targets, and in lumped mode one remainder per target (the features' first, then the logits').
Every row number the engine uses comes from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TypeVar

from torch import Tensor

Pos = TypeVar("Pos", int, Tensor)


class BiasKind(IntEnum):
    """The constant terms, each a node per (layer,) position."""

    ATTN = 0  # attention output bias: b_O plus the folded b_V @ W_O
    MLP = 1  # the transcoder's output bias b_dec_out
    ENC = 2  # a feature's own constant b_enc - b_dec @ W_enc
    UNEMBED = 3  # b_U, per position only

    @property
    def short(self) -> str:
        """The name in node ids: `bias[attn3]@9`."""
        return self.name.lower()


LAYERED_BIASES = (BiasKind.ATTN, BiasKind.MLP, BiasKind.ENC)


@dataclass(frozen=True)
class RowLayout:
    """Where each kind of node sits in the node table, by layer and position."""

    n_layers: int
    n_pos: int
    features_per_layer: tuple[int, ...]
    n_logits: int
    lumped: bool

    @property
    def n_features(self) -> int:
        """How many feature rows (all layers)."""
        return sum(self.features_per_layer)

    def features(self, layer: int) -> int:
        """The first row of the layer's features."""
        return sum(self.features_per_layer[:layer])

    def error(self, layer: int, pos: Pos) -> Pos:
        """The error row of one layer and position."""
        return self.n_features + layer * self.n_pos + pos

    def embedding(self, pos: Pos) -> Pos:
        """The embedding row of one position."""
        return self.n_features + self.n_layers * self.n_pos + pos

    def bias(self, kind: BiasKind, layer: int, pos: Pos) -> Pos:
        """A constant term's row; `layer` is ignored for the unembedding bias."""
        base = self.embedding(self.n_pos)
        step = 0 if kind == BiasKind.UNEMBED else layer
        return base + (kind * self.n_layers + step) * self.n_pos + pos

    def logit(self, i: Pos) -> Pos:
        """The row of the i-th logit."""
        return self.bias(BiasKind.UNEMBED, 0, self.n_pos) + i

    @property
    def n_targets(self) -> int:
        """How many rows are attribution targets (features and logits)."""
        return self.n_features + self.n_logits

    def remainder(self, target_rows: Tensor) -> Tensor:
        """Lumped mode: the remainder row of each target row (a feature or a logit)."""
        first_logit = self.logit(0)
        rank = target_rows.where(
            target_rows < self.n_features, target_rows - first_logit + self.n_features
        )
        return self.logit(self.n_logits) + rank

    @property
    def size(self) -> int:
        """How many rows in all (remainders included in lumped mode)."""
        return self.logit(self.n_logits) + (self.n_targets if self.lumped else 0)
