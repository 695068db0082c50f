"""What `verify` needs of a prompt's stored graph, as protocols that the query side's records
(`query.results`) satisfy: ingest sits below query and imports nothing from it, so the caller (the
`verify` command) reads the store and hands the graph down as a :class:`StoredPrompt`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from circuitstore.schema.names import NodeKind


class StoredNode(Protocol):
    """A node of the stored graph, as verify reads it (`query.results.Node` is one)."""

    @property
    def id(self) -> str: ...
    @property
    def kind(self) -> NodeKind: ...
    @property
    def layer(self) -> int | None: ...
    @property
    def pos(self) -> int | None: ...
    @property
    def feature(self) -> int | None: ...
    @property
    def activation(self) -> float | None: ...
    @property
    def token_id(self) -> int | None: ...


class StoredEdge(Protocol):
    """An ATTR edge of the stored graph (`query.results.Edge` is one)."""

    @property
    def source(self) -> str: ...
    @property
    def target(self) -> str: ...
    @property
    def weight(self) -> float: ...


class StoredGraph(Protocol):
    """One prompt's stored graph and the predictions it makes (`query.results.Subgraph`)."""

    @property
    def nodes(self) -> Sequence[StoredNode]: ...
    @property
    def edges(self) -> Sequence[StoredEdge]: ...
    def influence(self, targets: Mapping[str, float]) -> dict[str, float]: ...
    def sensitivity(self, targets: Mapping[str, float]) -> dict[str, float]: ...
    def propagated(self, changes: Mapping[str, float]) -> dict[str, float]: ...


class StoredPromptInfo(Protocol):
    """The stored prompt (`query.results.PromptInfo`)."""

    @property
    def id(self) -> str: ...
    @property
    def key(self) -> str: ...
    @property
    def transcoder_set(self) -> str: ...
    @property
    def token_ids(self) -> tuple[int, ...]: ...


class RecordedWeights(Protocol):
    """What the transcoder set records of the weights it was ingested from
    (`query.results.TranscoderSetInfo`)."""

    @property
    def id(self) -> str: ...
    @property
    def model(self) -> str | None: ...
    @property
    def transcoders(self) -> str | None: ...
    @property
    def model_hash(self) -> str | None: ...
    @property
    def transcoders_hash(self) -> str | None: ...


@dataclass(frozen=True)
class StoredPrompt:
    """What verify checks, as its caller read it from the store: the prompt, its stored graph,
    its mode, the weights its transcoder set records, and the node ids of each feature the user
    named (empty: verify chooses by `VerifyConfig.rank`)."""

    prompt: StoredPromptInfo
    graph: StoredGraph
    mode: str
    weights: RecordedWeights
    groups: tuple[tuple[str, ...], ...] = ()
