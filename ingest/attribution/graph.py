"""The attribution graph's storage: a node table of tensors and edges streamed as chunks.

A full graph at GPT-2-small scale has 10^8-10^9 edges, so edges are never held as Python objects:
the engine yields one :class:`EdgeChunk` per batch of targets (a dense block over the sources they
can see, plus a few COO extras), and consumers (:class:`EdgeSink`) reduce them on the fly: the
pruner, a full COO collector for small graphs, the ingest writer's corpus aggregates.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.layout import BiasKind
from circuitstore.schema.model import EdgeKind
from circuitstore.schema.names import (
    TRANSCODER,
    FeatureFamily,
    Form,
    NodeKind,
    form,
    forms,
    respell,
)


class Code(IntEnum):
    """The engine's names for the kind table's forms (`schema.names.KINDS`): their numbers in
    the node table's `kind` column, which the table sets."""

    FEATURE = form("feature").code
    EMBEDDING = form("embedding").code
    ERROR = form("error").code
    BIAS = form("bias").code
    LOGIT = form("logit").code
    REMAINDER = form("remainder").code


@dataclass(frozen=True)
class NodeTable:
    """One row per node. `index` is the feature index (features), token id (logits, embeddings),
    bias name code (biases) or the target's row (remainders); `layer` is -1 where none."""

    kind: Int[Tensor, " n"]
    layer: Int[Tensor, " n"]
    pos: Int[Tensor, " n"]
    index: Int[Tensor, " n"]
    activation: Float[Tensor, " n"]
    value: Float[Tensor, " n"]  # features: pre-activation; logits: the logit; others: 0

    def __len__(self) -> int:
        return int(self.kind.shape[0])

    def node_id(self, i: int) -> str:
        """Row `i`'s local id, as the kind table writes it."""
        return Rows(self).local_id(i)

    def ids(self) -> list[str]:
        """Every row's local id."""
        rows = Rows(self)
        return [rows.local_id(i) for i in range(len(self))]


class Rows:
    """The node table's rows as the kind table reads them (`schema.names.Form`): each row's
    kind and form, and its fields by name, for local ids, stored properties and JSON fields."""

    def __init__(
        self,
        nodes: NodeTable,
        tokens: Sequence[str] = (),
        transcoder_set: str = "",
        family: FeatureFamily = TRANSCODER,
    ):
        self.family = family  # how feature names are spelled (`mlp8tc[355]`, `clt8[355]`)
        self.codes, self.layer, self.pos, self.index = (
            t.tolist() for t in (nodes.kind, nodes.layer, nodes.pos, nodes.index)
        )
        self.activation, self.value = nodes.activation.tolist(), nodes.value.tolist()
        self.tokens, self.transcoder_set = tokens, transcoder_set
        self._forms = forms()
        self._ids: dict[int, str] = {}

    def kind(self, i: int) -> NodeKind:
        """Row `i`'s stored kind."""
        return self._forms[self.codes[i]][0]

    def form(self, i: int) -> Form:
        """How row `i` was made."""
        return self._forms[self.codes[i]][1]

    def local_id(self, i: int) -> str:
        """Row `i`'s local id (`mlp8tc[355]@9`)."""
        if i not in self._ids:
            local = self.form(i).id_format.format_map(_Fields(self, i))
            self._ids[i] = local if self.family is TRANSCODER else respell(local, self.family)
        return self._ids[i]

    def fields(self, i: int, wanted: Mapping[str, str]) -> dict[str, Any]:
        """Each name of `wanted` with the row field it names (`{"feature": "index"}`)."""
        row = _Fields(self, i)
        return {name: row[source] for name, source in wanted.items()}


class _Fields(Mapping[str, Any]):
    """One row's fields by name, each computed when asked for (see `schema.names.Form`)."""

    def __init__(self, rows: Rows, i: int) -> None:
        self.rows, self.i = rows, i

    def __getitem__(self, name: str) -> Any:
        rows, i = self.rows, self.i
        if name == "layer":
            return "" if rows.layer[i] < 0 else rows.layer[i]
        if name in ("pos", "index", "activation", "value"):
            return getattr(rows, name)[i]
        if name == "token":
            return rows.tokens[rows.pos[i]]
        if name == "bias":
            return BiasKind(rows.index[i]).short
        if name == "target":
            return rows.local_id(rows.index[i])
        if name == "transcoderSet":
            return rows.transcoder_set
        if name == "true":
            return True
        raise KeyError(f"{name}: not a field of the node table's rows (see schema.names.Form)")

    def __iter__(self) -> Iterator[str]:
        return iter(FIELDS)

    def __len__(self) -> int:
        return len(FIELDS)


FIELDS = (
    *("layer", "pos", "index", "activation", "value"),
    *("token", "bias", "target", "transcoderSet", "true"),
)


@dataclass(frozen=True)
class EdgeChunk:
    """Edges into one batch of targets: a dense block over the sources they can see, plus COO
    extras (target constants, lumped remainders). `dense` may be a transposed view, and the
    engine's lives in a reused buffer: valid while the chunk is being consumed, so a sink copies
    what it keeps. Columns whose source is -1 (padding) or lies after the target hold exact zeros
    and are not edges."""

    targets: Int[Tensor, " b"]
    target_pos: Int[Tensor, " b"]
    sources: Int[Tensor, " s"]
    source_pos: Int[Tensor, " s"]
    dense: Float[Tensor, "b s"]
    extra_source: Int[Tensor, " e"]
    extra_target: Int[Tensor, " e"]
    extra_weight: Float[Tensor, " e"]

    def allowed(self) -> Bool[Tensor, "b s"]:
        """Which dense entries are edges: a real source at or before its target's position."""
        return (self.sources >= 0)[None, :] & (self.source_pos[None, :] <= self.target_pos[:, None])

    def n_edges(self) -> int:
        """How many edges the chunk holds (allowed dense entries plus extras), without the mask."""
        valid = self.sources >= 0
        width = int(self.target_pos.max()) + 1 if self.target_pos.numel() else 0
        pos = self.source_pos[valid].clamp_max(width)
        seen = torch.cumsum(torch.bincount(pos, minlength=width + 1), 0)
        return int(seen[self.target_pos].sum()) + int(self.extra_weight.shape[0])

    def extra_rows(self) -> Int[Tensor, " e"]:
        """The row of the block each extra edge's target is in."""
        return torch.searchsorted(self.targets, self.extra_target)

    def row_blocks(self, max_entries: int) -> Iterator[EdgeChunk]:
        """The chunk as consecutive runs of its targets, each with about `max_entries` entries
        of the dense block (at least one target): views of the block, with their extras."""
        rows = self.extra_rows()
        step = max(1, max_entries // max(1, int(self.sources.shape[0])))
        for lo in range(0, int(self.targets.shape[0]), step):
            extra = (rows >= lo) & (rows < lo + step)
            yield EdgeChunk(
                self.targets[lo : lo + step],
                self.target_pos[lo : lo + step],
                self.sources,
                self.source_pos,
                self.dense[lo : lo + step],
                self.extra_source[extra],
                self.extra_target[extra],
                self.extra_weight[extra],
            )

    def row_sums(self) -> Float[Tensor, " b"]:
        """Each target's total input (conservation: equals its value)."""
        return self.dense.sum(dim=1).index_add(0, self.extra_rows(), self.extra_weight)

    def row_abs_sums(self) -> Float[Tensor, " b"]:
        """Each target's total absolute input."""
        return self.dense.abs().sum(dim=1).index_add(0, self.extra_rows(), self.extra_weight.abs())

    def coo(self) -> tuple[Int[Tensor, " k"], Int[Tensor, " k"], Float[Tensor, " k"]]:
        """(source, target, weight) of every edge in the chunk."""
        rows, cols = self.allowed().nonzero(as_tuple=True)
        src = torch.cat([self.sources[cols], self.extra_source])
        tgt = torch.cat([self.targets[rows], self.extra_target])
        return src, tgt, torch.cat([self.dense[rows, cols], self.extra_weight])

    def feature_edges(
        self, n_features: int, min_fraction: float = 0.0
    ) -> tuple[Int[Tensor, " k"], Int[Tensor, " k"], Float[Tensor, " k"]]:
        """Non-zero feature-to-feature edges (features are nodes 0..n_features-1) carrying at
        least `min_fraction` of their target's absolute input: the input of the corpus-level
        DRIVES aggregate. The floor is applied on the block, then the few entries that pass are
        filtered by kind: entries that are not edges hold exact zeros, which never pass a
        positive floor. It works on the block source-major, the engine's layout: scanning
        across it made the aggregate several times dearer (README, `bench_aggregate.py`)."""
        abs_t = self.dense.T.abs()  # (sources, targets)
        if min_fraction > 0:
            total = (abs_t.new_ones(abs_t.shape[0]) @ abs_t).index_add(
                0, self.extra_rows(), self.extra_weight.abs()
            )
            floor = (min_fraction * total).clamp_min(torch.finfo(abs_t.dtype).tiny)
            cols, rows = (abs_t >= floor[None, :]).nonzero(as_tuple=True)
        else:
            cols, rows = (abs_t > 0).nonzero(as_tuple=True)
        src, tgt = self.sources[cols], self.targets[rows]
        ok = (src >= 0) & (src < n_features) & (tgt < n_features)
        return src[ok], tgt[ok], self.dense[rows[ok], cols[ok]]


class EdgeSink(Protocol):
    """Anything that reduces edge chunks as they stream out of the engine."""

    def consume(self, chunk: EdgeChunk) -> None: ...


@dataclass
class CollectSink:
    """Keeps every edge as COO tensors (small graphs and tests: the full graph in memory)."""

    source: list[Tensor] = field(default_factory=list)
    target: list[Tensor] = field(default_factory=list)
    weight: list[Tensor] = field(default_factory=list)

    def consume(self, chunk: EdgeChunk) -> None:
        """Keep the chunk's edges."""
        src, tgt, w = chunk.coo()
        self.source.append(src)
        self.target.append(tgt)
        self.weight.append(w)

    def edges(self) -> Edges:
        """Every edge kept, as one set."""
        if not self.source:
            empty = torch.zeros(0, dtype=torch.long)
            return Edges(empty, empty, torch.zeros(0))
        return Edges(torch.cat(self.source), torch.cat(self.target), torch.cat(self.weight))


@dataclass(frozen=True)
class Edges:
    """A set of edges as COO tensors of node rows."""

    source: Int[Tensor, " k"]
    target: Int[Tensor, " k"]
    weight: Float[Tensor, " k"]

    def __len__(self) -> int:
        return int(self.source.shape[0])

    def kinds(self, nodes: NodeTable) -> list[EdgeKind]:
        """Each edge's kind: residual (same position) or attention."""
        same = nodes.pos[self.source] == nodes.pos[self.target]
        return [EdgeKind.RESIDUAL if s else EdgeKind.ATTENTION for s in same.tolist()]


@dataclass(frozen=True)
class NodeAccounting:
    """Per kept target: its value, what the kept edges add up to, and the share of its absolute
    input they carry. value - kept_sum is the weight pruning removed."""

    value: Float[Tensor, " n"]
    kept_sum: Float[Tensor, " n"]
    kept_abs_fraction: Float[Tensor, " n"]


@dataclass(frozen=True)
class AttributionGraph:
    """One prompt's graph. `edges` is every edge (no pruning) or the kept ones; `accounting` is
    set when pruned. `nodes` only lists kept nodes when pruned."""

    tokens: tuple[str, ...]
    token_ids: tuple[int, ...]
    nodes: NodeTable
    edges: Edges
    metadata: dict[str, object]
    accounting: NodeAccounting | None = None
    influence: Float[Tensor, " n"] | None = None
    logit_tokens: dict[int, str] = field(default_factory=dict)  # token id -> text, for logits
    rows: Int[Tensor, " n"] | None = None  # pruned: each node's row in the full table
