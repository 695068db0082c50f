"""Names as users write them: features (`mlp8tc[355]`, `mlp8tc[355]@9`, `8:355`), logit targets
(`logit`, `logit[250]@31`) and per-prompt node ids (`embed0@3`, `mlp1err@4`). Pure parsing: no
database, so every malformed name fails before a query runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from circuitstore.errors import QueryError

FEATURE_FORMS = "mlp<layer>tc[<index>], mlp<layer>tc[<index>]@<pos> or <layer>:<index>"

# Numbers have at most 9 digits: every layer, index, position and token id fits, and a name of
# 10,000 digits is refused by the pattern instead of reaching int().
_N = r"\d{1,9}"
_MLP = re.compile(rf"mlp(?P<layer>{_N})tc\[(?P<index>{_N})\](?:@(?P<pos>{_N}))?")
_SHORT = re.compile(rf"(?P<layer>{_N}):(?P<index>{_N})(?:@(?P<pos>{_N}))?")
_LOGIT = re.compile(rf"logit(?:\[(?P<token>{_N})\]@(?P<pos>{_N}))?")
_LOCAL = re.compile(rf"(?:embed0|mlp{_N}err|bias\[[a-z]+{_N}?\])@{_N}|rem\[.{{1,200}}\]")


@dataclass(frozen=True)
class FeatureRef:
    """A feature named by a user: layer and index, and a position where one was given."""

    layer: int
    index: int
    pos: int | None = None

    @property
    def name(self) -> str:
        base = f"mlp{self.layer}tc[{self.index}]"
        return base if self.pos is None else f"{base}@{self.pos}"

    @property
    def base_name(self) -> str:
        return f"mlp{self.layer}tc[{self.index}]"


@dataclass(frozen=True)
class LogitRef:
    """A logit target: a token id at a position, or (both None) the prompt's top logit."""

    token_id: int | None = None
    pos: int | None = None

    @property
    def name(self) -> str:
        return "logit" if self.token_id is None else f"logit[{self.token_id}]@{self.pos}"


@dataclass(frozen=True)
class LocalRef:
    """Any other per-prompt node, by its local id (`embed0@3`, `mlp1err@4`, `bias[attn0]@2`)."""

    local_id: str

    @property
    def name(self) -> str:
        return self.local_id


NodeRef = FeatureRef | LogitRef | LocalRef


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
