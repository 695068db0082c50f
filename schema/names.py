"""The one grammar of names and node kinds: how features, per-prompt nodes and prompts are
written, parsed and stored. Ingest (writing), query (reading), exports and the CLI all use it, so
they can never disagree. Pure functions and records: no database, no torch, so every malformed
name fails before a query runs.

Names follow the original transcoder work: `mlp8tc[355]` is feature 355 of layer 8 and
`mlp8tc[355]@9` the same feature at token position 9 (also written `8:355`, `8:355@9`);
`embed0@9` the token-plus-position embedding at 9; `mlp8err@9` layer 8's error term there;
`bias[attn3]@9` a constant term; `logit[250]@31` a logit; `rem[<target>]` lumped mode's
remainder of one target's input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

from circuitstore.schema.errors import QueryError
from circuitstore.schema.model import Label

FEATURE_FORMS = "mlp<layer>tc[<index>], mlp<layer>tc[<index>]@<pos> or <layer>:<index>"

# Numbers have at most 9 digits: every layer, index, position and token id fits, and a name of
# 10,000 digits is refused by the pattern instead of reaching int().
_N = r"\d{1,9}"


class NodeKind(StrEnum):
    """Kinds of per-prompt graph node, as stored (`kind`) and in the attribution JSON (`type`)."""

    FEATURE = "feature"
    EMBEDDING = "embedding"
    ERROR = "error"
    BIAS = "bias"
    LOGIT = "logit"

    @property
    def spec(self) -> KindSpec:
        return KINDS[self]

    @property
    def label(self) -> Label:
        return KINDS[self].label


@dataclass(frozen=True)
class KindSpec:
    """Everything the store and its readers know of one node kind."""

    label: Label
    local_id: str
    """Regex of the kind's local ids (`embed0@3`), as the node parser accepts them."""
    props: tuple[str, ...]
    """Properties a stored node of the kind holds besides id, localId, prompt, kind, pos, layer
    (and the pruning accounting, inputExplained and keptInput)."""
    viewer_type: str | None
    """The circuit-tracer / Neuronpedia `feature_type`, None where the viewers have none."""


# The kind table: adding a node kind is a row here, a place in the engine's row layout and its
# producer; every reader works from this table.
KINDS: dict[NodeKind, KindSpec] = {
    NodeKind.FEATURE: KindSpec(
        Label.OCCURRENCE,
        rf"mlp{_N}tc\[{_N}\]@{_N}",
        ("transcoderSet", "feature", "activation", "preactivation"),
        "cross layer transcoder",
    ),
    NodeKind.EMBEDDING: KindSpec(
        Label.EMBEDDING, rf"embed0@{_N}", ("tokenId", "token"), "embedding"
    ),
    NodeKind.ERROR: KindSpec(
        Label.ERROR_TERM,
        rf"mlp{_N}err@{_N}|rem\[.{{1,200}}\]",
        ("remainder",),
        "mlp reconstruction error",
    ),
    NodeKind.BIAS: KindSpec(Label.BIAS, rf"bias\[[a-z]+(?:{_N})?\]@{_N}", ("name",), None),
    NodeKind.LOGIT: KindSpec(Label.LOGIT, rf"logit\[{_N}\]@{_N}", ("tokenId", "value"), "logit"),
}


def feature_name(layer: int, index: int, pos: int | None = None) -> str:
    """`mlp8tc[355]`, or `mlp8tc[355]@9` at a position."""
    base = f"mlp{layer}tc[{index}]"
    return base if pos is None else f"{base}@{pos}"


@dataclass(frozen=True)
class FeatureKey:
    """A global transcoder feature: layer and index within one transcoder set."""

    transcoder_set: str
    layer: int
    index: int

    @property
    def id(self) -> str:
        return f"{self.transcoder_set}/{self.layer}/{self.index}"

    @property
    def name(self) -> str:
        return feature_name(self.layer, self.index)


class NodeId:
    """Named constructors for per-prompt graph node ids, in the original work's notation.

    Ids are local to one prompt (``mlp8tc[355]@9``); the store qualifies them with the prompt's id
    (``<prompt id>/mlp8tc[355]@9``) so they are unique across the database.
    """

    @staticmethod
    def feature(layer: int, pos: int, index: int) -> str:
        return feature_name(layer, index, pos)

    @staticmethod
    def embedding(pos: int) -> str:
        return f"embed0@{pos}"

    @staticmethod
    def error(layer: int, pos: int) -> str:
        return f"mlp{layer}err@{pos}"

    @staticmethod
    def bias(name: str, layer: int | None, pos: int) -> str:
        """A constant term, e.g. ``bias[attn3]@9`` (layer 3's attention output bias), or
        ``bias[unembed]@9`` for one of no layer."""
        return f"bias[{name}{'' if layer is None else layer}]@{pos}"

    @staticmethod
    def logit(pos: int, token_id: int) -> str:
        return f"logit[{token_id}]@{pos}"

    @staticmethod
    def remainder(target_local_id: str) -> str:
        """Lumped mode: the part of one target's input through two or more attention layers."""
        return f"rem[{target_local_id}]"

    @staticmethod
    def is_remainder(local_id: str) -> bool:
        return local_id.startswith("rem[")

    @staticmethod
    def prompt(transcoder_set: str, key: str) -> str:
        return f"{transcoder_set}/{key}"

    @staticmethod
    def qualified(prompt_id: str, local_id: str) -> str:
        return f"{prompt_id}/{local_id}"


def head_name(layer: int, head: int) -> str:
    """An attention head as the original transcoder work writes it: `attn2[3]`."""
    return f"attn{layer}[{head}]"


def numbered_head(number: int, n_heads: int) -> tuple[int, int]:
    """(layer, head) of a head as ATTR edges store it, by number: layer * n_heads + head."""
    layer, head = divmod(number, n_heads)
    return layer, head


@dataclass(frozen=True)
class FeatureRef:
    """A feature named by a user: layer and index, and a position where one was given."""

    layer: int
    index: int
    pos: int | None = None

    @property
    def name(self) -> str:
        return feature_name(self.layer, self.index, self.pos)

    @property
    def base_name(self) -> str:
        return feature_name(self.layer, self.index)


@dataclass(frozen=True)
class LogitRef:
    """A logit target: a token id at a position, or (both None) the prompt's top logit."""

    token_id: int | None = None
    pos: int | None = None

    @property
    def name(self) -> str:
        return "logit" if self.token_id is None else NodeId.logit(self.pos or 0, self.token_id)


@dataclass(frozen=True)
class LocalRef:
    """Any other per-prompt node, by its local id (`embed0@3`, `mlp1err@4`, `bias[attn0]@2`)."""

    local_id: str

    @property
    def name(self) -> str:
        return self.local_id


NodeRef = FeatureRef | LogitRef | LocalRef

_MLP = re.compile(rf"mlp(?P<layer>{_N})tc\[(?P<index>{_N})\](?:@(?P<pos>{_N}))?")
_SHORT = re.compile(rf"(?P<layer>{_N}):(?P<index>{_N})(?:@(?P<pos>{_N}))?")
_LOGIT = re.compile(rf"logit(?:\[(?P<token>{_N})\]@(?P<pos>{_N}))?")
_LOCAL = re.compile(
    "|".join(
        f"(?:{spec.local_id})"
        for kind, spec in KINDS.items()
        if kind not in (NodeKind.FEATURE, NodeKind.LOGIT)  # these two have their own refs
    )
)


def parse_feature(text: str) -> FeatureRef:
    """`mlp8tc[355]`, `mlp8tc[355]@9`, `8:355` (or `8:355@9`) as a :class:`FeatureRef`."""
    cleaned = text.strip()
    match = _MLP.fullmatch(cleaned) or _SHORT.fullmatch(cleaned)
    if not match:
        raise QueryError(f"feature {shown(text)}: expected {FEATURE_FORMS}")
    pos = match["pos"]
    return FeatureRef(int(match["layer"]), int(match["index"]), None if pos is None else int(pos))


def parse_node(text: str) -> NodeRef:
    """A path end or start: a feature name, a logit target or another per-prompt local id."""
    cleaned = text.strip()
    logit = _LOGIT.fullmatch(cleaned)
    if logit:
        if logit["token"] is None:
            return LogitRef()
        return LogitRef(int(logit["token"]), int(logit["pos"]))
    if _LOCAL.fullmatch(cleaned):
        return LocalRef(cleaned)
    if _MLP.fullmatch(cleaned) or _SHORT.fullmatch(cleaned):
        return parse_feature(cleaned)
    raise QueryError(
        f"node {shown(text)}: expected a feature ({FEATURE_FORMS}), logit, "
        "logit[<token id>]@<pos>, or a node id such as embed0@<pos> or mlp<layer>err@<pos>"
    )


def shown(text: str, limit: int = 60) -> str:
    """A user's input quoted for a message, cut so that a 10 KB argument stays one short line."""
    return (
        repr(text) if len(text) <= limit else repr(text[: limit - 3]) + f"... ({len(text)} chars)"
    )


def check_range(ref: FeatureRef, n_layers: int, d_transcoder: int, tset: str) -> None:
    """Fail with the allowed range when a name lies outside the transcoder set."""
    if not 0 <= ref.layer < n_layers:
        raise QueryError(
            f"feature {ref.name}: layer {ref.layer} is out of range; transcoder set {tset} has "
            f"layers 0..{n_layers - 1}"
        )
    if not 0 <= ref.index < d_transcoder:
        raise QueryError(
            f"feature {ref.name}: index {ref.index} is out of range; transcoder set {tset} has "
            f"features 0..{d_transcoder - 1} per layer"
        )
