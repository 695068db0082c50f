"""The one grammar of names and node kinds: how features, per-prompt nodes and prompts are
written, parsed and stored. Ingest (writing), query (reading), exports and the CLI all use it, so
they can never disagree. Pure functions and records: no database, no torch, so every malformed
name fails before a query runs.

Names follow the original transcoder work: `mlp8tc[355]` is feature 355 of layer 8's
per-layer transcoder and `mlp8tc[355]@9` the same feature at token position 9; a cross-layer
transcoder's feature read at layer 8 (writing to the MLP outputs of layers 8 and on) is
`clt8[355]`, `clt8[355]@9` (the family table `FEATURE_FAMILIES`); either is also written `8:355`,
`8:355@9`. `embed0@9` is the token-plus-position embedding at 9; `mlp8err@9` layer 8's error
term there (in either family: the error of layer 8's MLP output); `bias[attn3]@9` a constant
term; `logit[250]@31` a logit; `rem[<target>]` lumped mode's remainder of one target's input.

Parsing accepts every family's spelling and yields the same reference, so a user may type
either; rendering takes the family of the set the name belongs to.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import ClassVar

from circuitstore.schema.errors import QueryError
from circuitstore.schema.model import Label

# Numbers have at most 9 digits: every layer, index, position and token id fits, and a name of
# 10,000 digits is refused by the pattern instead of reaching int().
_N = r"\d{1,9}"


@dataclass(frozen=True)
class FeatureFamily:
    """A kind of transcoder set, as its features are named: `<prefix><layer><suffix>[<index>]`.
    `key` is what the TranscoderSet node stores as `featureFamily`."""

    key: str
    prefix: str
    suffix: str

    def stem(self, layer: int) -> str:
        """A name's part before `[<index>]`: `mlp8tc`, `clt8`."""
        return f"{self.prefix}{layer}{self.suffix}"

    def name(self, layer: int, index: int, pos: int | None = None) -> str:
        """`mlp8tc[355]` (`clt8[355]`), or at a position `mlp8tc[355]@9`."""
        base = f"{self.stem(layer)}[{index}]"
        return base if pos is None else f"{base}@{pos}"

    @property
    def form(self) -> str:
        """The family's names as a message writes them: `mlp<layer>tc[<index>]`."""
        return f"{self.prefix}<layer>{self.suffix}[<index>]"

    @property
    def head(self) -> str:
        """Regex of a name's part before `[<index>]`, the layer captured (`mlp(8)tc`)."""
        return f"{re.escape(self.prefix)}({_N}){re.escape(self.suffix)}"


# The feature families: adding one is a row here (and its `featureFamily` at ingest). Each
# prefix-suffix pair must differ from every other kind's local ids (`KINDS`).
FEATURE_FAMILIES: dict[str, FeatureFamily] = {
    f.key: f
    for f in (
        FeatureFamily("transcoder", "mlp", "tc"),  # one transcoder per layer
        FeatureFamily("clt", "clt", ""),  # a cross-layer transcoder
    )
}
TRANSCODER = FEATURE_FAMILIES["transcoder"]
CLT = FEATURE_FAMILIES["clt"]


def feature_family(key: str | None) -> FeatureFamily:
    """The family stored as `key`; None (a set stored before families were recorded, when
    every set was a per-layer transcoder) is `TRANSCODER`."""
    if key is None:
        return TRANSCODER
    if key not in FEATURE_FAMILIES:
        known = ", ".join(FEATURE_FAMILIES)
        raise QueryError(f"feature family {shown(key)}: expected one of {known}")
    return FEATURE_FAMILIES[key]


FEATURE_FORMS = (
    ", ".join(f"{f.form}, {f.form}@<pos>" for f in FEATURE_FAMILIES.values())
    + " or <layer>:<index>"
)
# Any family's feature name before its index (`mlp8tc[`, `clt8[`), the layer captured once per
# family: what `respell` rewrites inside any local id.
_HEADS = re.compile("(?:" + "|".join(f.head for f in FEATURE_FAMILIES.values()) + r")\[")


def respell(local_id: str, family: FeatureFamily) -> str:
    """`local_id` with every feature name in it spelled in `family` (`mlp8tc[355]@9` ->
    `clt8[355]@9`; `rem[mlp8tc[355]@9]` -> `rem[clt8[355]@9]`); the rest as it was. Only a
    feature name holds `<prefix><digits><suffix>[`, so nothing else changes."""
    return _HEADS.sub(lambda m: family.stem(int(next(g for g in m.groups() if g))) + "[", local_id)


class _KindTable(type):
    """Iterating `NodeKind` gives the kinds of the table, in its order."""

    def __iter__(cls) -> Iterator[NodeKind]:
        return (NodeKind(name) for name in KINDS)

    def __len__(cls) -> int:
        return len(KINDS)


class NodeKind(str, metaclass=_KindTable):
    """A kind of per-prompt graph node, by its stored name (`kind`, and `type` in the attribution
    JSON): a key of the kind table `KINDS`, which says everything else about it.
    `NodeKind("feature")` refuses a name the table lacks."""

    __slots__ = ()

    FEATURE: ClassVar[NodeKind]
    EMBEDDING: ClassVar[NodeKind]
    ERROR: ClassVar[NodeKind]
    BIAS: ClassVar[NodeKind]
    LOGIT: ClassVar[NodeKind]

    def __new__(cls, value: str) -> NodeKind:
        if value not in KINDS:
            raise ValueError(f"{value!r} is not a node kind (expected one of {', '.join(KINDS)})")
        return super().__new__(cls, value)

    def __repr__(self) -> str:
        return f"NodeKind({self.value!r})"

    @property
    def value(self) -> str:
        """The stored name, as a plain string."""
        return str.__str__(self)

    @property
    def spec(self) -> KindSpec:
        """The kind's row of the table."""
        return KINDS[self]

    @property
    def label(self) -> Label:
        """The Neo4j label its stored nodes carry."""
        return KINDS[self].label


@dataclass(frozen=True)
class Form:
    """How the attribution engine makes nodes of one kind: their number in its node table (the
    `kind` column), their local id, and what is stored of them and written to the attribution
    JSON, each read off one row of the node table.

    A row's fields, by name: `layer` (blank where the node has none), `pos`, `index` (what the
    kind puts there: a feature index, a token id, a bias name's code, a target's row),
    `activation` and `value` (the node table's columns); `token` (the prompt's token at `pos`),
    `bias` (the bias name `index` codes), `target` (the local id of row `index`),
    `transcoderSet` (the set's id) and `true`."""

    name: str
    code: int
    id_format: str
    """The local id, as a format of the row's fields (`mlp{layer}tc[{index}]@{pos}`)."""
    props: Mapping[str, str] = field(default_factory=dict)
    """Each stored property the form adds (besides id, localId, prompt, kind, pos, layer and
    the pruning accounting, inputExplained and keptInput), by the row field it holds."""
    json: Mapping[str, str] = field(default_factory=dict)
    """Each attribution-JSON field the form adds (besides id, type, layer, pos), by row field."""


@dataclass(frozen=True)
class Viewer:
    """How circuit-tracer's and Neuronpedia's graph viewers show a kind: its `feature_type`,
    and its node's `node_id`, `feature` (a number), `layer` and `clerp` as formats of the stored
    node's fields (`layer`, `pos`, `feature`, `token_id`) and the exporter's (`logit_layer`,
    one past the last layer; `cantor`, the feature's Cantor-paired layer and index; `name`, its
    label or else its name; `token`, the node's token as the viewers quote it, `<token ID>`
    where unknown; `prob`, a logit's probability)."""

    type: str
    node_id: str
    feature: str
    layer: str
    clerp: str = ""


@dataclass(frozen=True)
class KindSpec:
    """Everything the store, the engine and the readers know of one node kind."""

    label: Label
    local_id: str
    """Regex of the kind's local ids (`embed0@3`), as the node parser accepts them."""
    forms: tuple[Form, ...]
    """How the engine makes the kind (an error term: an MLP error, or lumped mode's remainder
    of one target's input)."""
    viewer: Viewer | None
    """How the viewers show it; None where they have no node for it: an exported graph folds
    it into the error node of its layer (else the last layer's) and position."""

    @property
    def props(self) -> tuple[str, ...]:
        """Properties a stored node of the kind may hold besides id, localId, prompt, kind,
        pos, layer (and the pruning accounting, inputExplained and keptInput)."""
        return tuple(dict.fromkeys(p for f in self.forms for p in f.props))

    @property
    def viewer_type(self) -> str | None:
        """The circuit-tracer / Neuronpedia `feature_type`, None where the viewers have none."""
        return None if self.viewer is None else self.viewer.type


# Every family's stem as a regex without groups (the kind table's local ids, and Cypher's `=~`).
_FEATURE_STEMS = "|".join(
    f"{re.escape(f.prefix)}{_N}{re.escape(f.suffix)}" for f in FEATURE_FAMILIES.values()
)

# The kind table: adding a node kind is a row here, a place in the engine's row layout and its
# producer; every writer, reader and exporter works from this table.
KINDS: dict[str, KindSpec] = {
    "feature": KindSpec(
        Label.OCCURRENCE,
        # Every family's spelling; the engine writes the per-layer one, which the store's
        # writers respell in the set's family (`respell`).
        rf"(?:{_FEATURE_STEMS})\[{_N}\]@{_N}",
        (
            Form(
                "feature",
                0,
                "mlp{layer}tc[{index}]@{pos}",  # TRANSCODER's spelling: see `respell`
                {
                    "transcoderSet": "transcoderSet",
                    "feature": "index",
                    "activation": "activation",
                    "preactivation": "value",
                },
                {"feature": "index", "activation": "activation", "preactivation": "value"},
            ),
        ),
        Viewer(
            "cross layer transcoder", "{layer}_{feature}_{pos}", "{cantor}", "{layer}", "{name}"
        ),
    ),
    "embedding": KindSpec(
        Label.EMBEDDING,
        rf"embed0@{_N}",
        (
            Form(
                "embedding",
                1,
                "embed0@{pos}",
                {"tokenId": "index", "token": "token"},
                {"token_id": "index"},
            ),
        ),
        Viewer("embedding", "E_{token_id}_{pos}", "{pos}", "E", 'Emb: "{token}"'),
    ),
    "error": KindSpec(
        Label.ERROR_TERM,
        rf"mlp{_N}err@{_N}|rem\[.{{1,200}}\]",
        (
            Form("error", 2, "mlp{layer}err@{pos}"),
            # Lumped mode: the part of one target's input through two or more attention layers,
            # which the graph does not itemise (what error nodes stand for); its id names it.
            Form(
                "remainder", 5, "rem[{target}]", {"remainder": "true"}, {"remainder_of": "target"}
            ),
        ),
        Viewer("mlp reconstruction error", "{layer}_error_mlp_{pos}", "-1", "{layer}"),
    ),
    "bias": KindSpec(
        Label.BIAS,
        rf"bias\[[a-z]+(?:{_N})?\]@{_N}",
        (Form("bias", 3, "bias[{bias}{layer}]@{pos}", {"name": "bias"}),),
        None,
    ),
    "logit": KindSpec(
        Label.LOGIT,
        rf"logit\[{_N}\]@{_N}",
        (
            Form(
                "logit",
                4,
                "logit[{index}]@{pos}",
                {"tokenId": "index", "value": "value"},
                {"token_id": "index", "preactivation": "value"},
            ),
        ),
        Viewer(
            "logit",
            "{logit_layer}_{token_id}_{pos}",
            "{token_id}",
            "{logit_layer}",
            'Output "{token}" (p={prob:.3f})',
        ),
    ),
}
NodeKind.FEATURE = NodeKind("feature")
NodeKind.EMBEDDING = NodeKind("embedding")
NodeKind.ERROR = NodeKind("error")
NodeKind.BIAS = NodeKind("bias")
NodeKind.LOGIT = NodeKind("logit")


def forms() -> dict[int, tuple[NodeKind, Form]]:
    """Every form of the table by its number in the engine's node table, with its kind."""
    return {f.code: (NodeKind(kind), f) for kind, spec in KINDS.items() for f in spec.forms}


def form(name: str) -> Form:
    """The table's form of that name (`remainder`)."""
    return next(f for spec in KINDS.values() for f in spec.forms if f.name == name)


def feature_name(
    layer: int, index: int, pos: int | None = None, family: FeatureFamily = TRANSCODER
) -> str:
    """`mlp8tc[355]`, or `mlp8tc[355]@9` at a position; in `family`'s spelling (`clt8[355]`)."""
    return family.name(layer, index, pos)


@dataclass(frozen=True)
class FeatureKey:
    """A global transcoder feature: layer and index within one transcoder set, named in the
    set's family (which its identity does not include)."""

    transcoder_set: str
    layer: int
    index: int
    family: FeatureFamily = field(default=TRANSCODER, compare=False)

    @property
    def id(self) -> str:
        """The global Feature id: `<set>/<layer>/<index>`."""
        return f"{self.transcoder_set}/{self.layer}/{self.index}"

    @property
    def name(self) -> str:
        """The feature's name: `mlp8tc[355]` (`clt8[355]`)."""
        return self.family.name(self.layer, self.index)


class NodeId:
    """Named constructors for per-prompt graph node ids, in the original work's notation.

    Ids are local to one prompt (``mlp8tc[355]@9``); the store qualifies them with the prompt's id
    (``<prompt id>/mlp8tc[355]@9``) so they are unique across the database.
    """

    @staticmethod
    def feature(layer: int, pos: int, index: int, family: FeatureFamily = TRANSCODER) -> str:
        """A feature at a position: `mlp8tc[355]@9` (`clt8[355]@9`)."""
        return family.name(layer, index, pos)

    @staticmethod
    def embedding(pos: int) -> str:
        """The token-plus-position embedding: `embed0@9`."""
        return f"embed0@{pos}"

    @staticmethod
    def error(layer: int, pos: int) -> str:
        """A layer's MLP error term at a position: `mlp8err@9`."""
        return f"mlp{layer}err@{pos}"

    @staticmethod
    def bias(name: str, layer: int | None, pos: int) -> str:
        """A constant term, e.g. ``bias[attn3]@9`` (layer 3's attention output bias), or
        ``bias[unembed]@9`` for one of no layer."""
        return f"bias[{name}{'' if layer is None else layer}]@{pos}"

    @staticmethod
    def logit(pos: int, token_id: int) -> str:
        """A logit: `logit[250]@31`."""
        return f"logit[{token_id}]@{pos}"

    @staticmethod
    def remainder(target_local_id: str) -> str:
        """Lumped mode: the part of one target's input through two or more attention layers."""
        return f"rem[{target_local_id}]"

    @staticmethod
    def qk_bias(layer: int, head: int, side: str, pos: int) -> str:
        """A head's query or key bias in a QK trace: `bias[attn2[3].q]@5` (b_Q of head attn2[3],
        at query position 5), `bias[attn2[3].k]@2`."""
        return f"bias[{qk_side_id(layer, head, side, pos).replace('@', ']@')}"

    @staticmethod
    def is_remainder(local_id: str) -> bool:
        """Whether a local id is lumped mode's remainder of a target."""
        return local_id.startswith("rem[")

    @staticmethod
    def prompt(transcoder_set: str, key: str) -> str:
        """A prompt's global id: `<set>/<key>`."""
        return f"{transcoder_set}/{key}"

    @staticmethod
    def qualified(prompt_id: str, local_id: str) -> str:
        """A node's global id: `<prompt id>/<local id>`."""
        return f"{prompt_id}/{local_id}"


def head_name(layer: int, head: int) -> str:
    """An attention head as the original transcoder work writes it: `attn2[3]`."""
    return f"attn{layer}[{head}]"


_HEAD = re.compile(rf"attn(?P<layer>{_N})\[(?P<head>{_N})\]")
HEAD_FORM = "attn<layer>[<head>]"


def parse_head(text: str) -> tuple[int, int]:
    """(layer, head) of `attn2[3]`."""
    match = _HEAD.fullmatch(text.strip())
    if not match:
        raise QueryError(f"head {shown(text)}: expected {HEAD_FORM}, e.g. attn2[3]")
    return int(match["layer"]), int(match["head"])


# A QK trace's sides: the head's query (at the query position) and its key (at the key position).
QK_SIDES = ("q", "k")


def qk_side_id(layer: int, head: int, side: str, pos: int) -> str:
    """One side of a QK trace, named like a node: `attn2[3].q@5` is head attn2[3]'s query at
    position 5, `attn2[3].k@2` its key at 2 (what a q/k bias and a lumped remainder belong to)."""
    if side not in QK_SIDES:
        raise ValueError(f"side {side!r}: expected q or k")
    return f"{head_name(layer, head)}.{side}@{pos}"


@dataclass(frozen=True)
class QKPart:
    """A QK trace's contributor that is no node of the graph: a side's own bias (`b_Q`, `b_K`
    of the head: `bias[attn2[3].q]@5`) or, in lumped mode, its remainder (the paths through two
    or more attention layers: `rem[attn2[3].q@5]`)."""

    what: str  # "bias" or "remainder"
    layer: int
    head: int
    side: str  # "q" or "k"
    pos: int

    @property
    def name(self) -> str:
        """The contributor's id."""
        if self.what == "bias":
            return NodeId.qk_bias(self.layer, self.head, self.side, self.pos)
        return NodeId.remainder(qk_side_id(self.layer, self.head, self.side, self.pos))


_QK_SIDE = rf"attn({_N})\[({_N})\]\.([qk])"
_QK_BIAS = re.compile(rf"bias\[{_QK_SIDE}\]@({_N})")
_QK_REMAINDER = re.compile(rf"rem\[{_QK_SIDE}@({_N})\]")


def parse_qk_contributor(text: str) -> NodeRef | QKPart:
    """A QK trace's contributor: a node of the prompt's graph (`parse_node`) or a side's own
    bias or remainder (:class:`QKPart`)."""
    cleaned = text.strip()
    for what, pattern in (("bias", _QK_BIAS), ("remainder", _QK_REMAINDER)):
        match = pattern.fullmatch(cleaned)
        if match is not None:
            layer, head, side, pos = match.groups()
            return QKPart(what, int(layer), int(head), side, int(pos))
    return parse_node(cleaned)


def numbered_head(number: int, n_heads: int) -> tuple[int, int]:
    """(layer, head) of a head as ATTR edges store it, by number: layer * n_heads + head."""
    layer, head = divmod(number, n_heads)
    return layer, head


@dataclass(frozen=True)
class FeatureRef:
    """A feature named by a user: layer and index, and a position where one was given. Its
    `family` spells it (the one it was written in; the short form's is `TRANSCODER`, and a
    reader resolving it against a set gives it the set's); two spellings of one feature are
    the same reference."""

    layer: int
    index: int
    pos: int | None = None
    family: FeatureFamily = field(default=TRANSCODER, compare=False)

    @property
    def name(self) -> str:
        """The name in its family, with its position where given."""
        return self.family.name(self.layer, self.index, self.pos)

    @property
    def base_name(self) -> str:
        """The name without a position."""
        return self.family.name(self.layer, self.index)

    def key(self, transcoder_set: str) -> FeatureKey:
        """The global feature of `transcoder_set` it names, in the same family."""
        return FeatureKey(transcoder_set, self.layer, self.index, self.family)


@dataclass(frozen=True)
class LogitRef:
    """A logit target: a token id at a position, or (both None) the prompt's top logit."""

    token_id: int | None = None
    pos: int | None = None

    @property
    def name(self) -> str:
        """`logit`, or the logit's local id."""
        return "logit" if self.token_id is None else NodeId.logit(self.pos or 0, self.token_id)


@dataclass(frozen=True)
class LocalRef:
    """Any other per-prompt node, by its local id (`embed0@3`, `mlp1err@4`, `bias[attn0]@2`)."""

    local_id: str

    @property
    def name(self) -> str:
        """The local id."""
        return self.local_id


NodeRef = FeatureRef | LogitRef | LocalRef


def in_family(ref: NodeRef, family: FeatureFamily) -> str:
    """The local id `ref` names in a set of `family`: what the store holds it as, whichever
    spelling the user typed (`8:355@9` -> `clt8[355]@9`)."""
    if isinstance(ref, FeatureRef):
        return family.name(ref.layer, ref.index, ref.pos)
    return ref.name if isinstance(ref, LogitRef) else respell(ref.local_id, family)


# One pattern per family, so each match says which family it was written in.
_FEATURES = tuple(
    (f, re.compile(rf"{f.head}\[({_N})\](?:@({_N}))?")) for f in FEATURE_FAMILIES.values()
)
_SHORT = re.compile(rf"(?P<layer>{_N}):(?P<index>{_N})(?:@(?P<pos>{_N}))?")
_LOGIT = re.compile(rf"logit(?:\[(?P<token>{_N})\]@(?P<pos>{_N}))?")


def _local_ids() -> str:
    """Every kind's local ids but features' and logits' (these two have their own refs)."""
    return "|".join(
        f"(?:{spec.local_id})"
        for kind, spec in KINDS.items()
        if kind not in (NodeKind.FEATURE, NodeKind.LOGIT)
    )


def parse_feature(text: str) -> FeatureRef:
    """`mlp8tc[355]`, `mlp8tc[355]@9`, `clt8[355]`, `clt8[355]@9`, `8:355` (or `8:355@9`)
    as a :class:`FeatureRef`, in the family it was written in."""
    ref = _feature(text.strip())
    if ref is None:
        raise QueryError(f"feature {shown(text)}: expected {FEATURE_FORMS}")
    return ref


def _feature(cleaned: str) -> FeatureRef | None:
    for family, pattern in _FEATURES:
        match = pattern.fullmatch(cleaned)
        if match:
            layer, index, pos = match.groups()
            return FeatureRef(int(layer), int(index), None if pos is None else int(pos), family)
    short = _SHORT.fullmatch(cleaned)
    if short is None:
        return None
    pos = short["pos"]
    return FeatureRef(int(short["layer"]), int(short["index"]), None if pos is None else int(pos))


def parse_node(text: str) -> NodeRef:
    """A path end or start: a feature name, a logit target or another per-prompt local id."""
    cleaned = text.strip()
    logit = _LOGIT.fullmatch(cleaned)
    if logit:
        if logit["token"] is None:
            return LogitRef()
        return LogitRef(int(logit["token"]), int(logit["pos"]))
    if re.fullmatch(_local_ids(), cleaned):  # re caches the compiled table
        return LocalRef(cleaned)
    feature = _feature(cleaned)
    if feature is not None:
        return feature
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
