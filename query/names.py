"""Names as users write them: features (`mlp8tc[355]`, `mlp8tc[355]@9`, `8:355`), logit targets
(`logit`, `logit[250]@31`) and per-prompt node ids (`embed0@3`, `mlp1err@4`). Pure parsing: no
database, so every malformed name fails before a query runs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from circuitstore.errors import QueryError

FEATURE_FORMS = "mlp<layer>tc[<index>], mlp<layer>tc[<index>]@<pos> or <layer>:<index>"

_MLP = re.compile(r"mlp(?P<layer>\d+)tc\[(?P<index>\d+)\](?:@(?P<pos>\d+))?")
_SHORT = re.compile(r"(?P<layer>\d+):(?P<index>\d+)(?:@(?P<pos>\d+))?")
_LOGIT = re.compile(r"logit(?:\[(?P<token>\d+)\]@(?P<pos>\d+))?")
_LOCAL = re.compile(r"(?:embed0|mlp\d+err|bias\[[a-z]+\d*\])@\d+|rem\[.+\]")


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
        raise QueryError(f"feature {text!r}: expected {FEATURE_FORMS}")
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
        f"node {text!r}: expected a feature ({FEATURE_FORMS}), logit, logit[<token id>]@<pos>, "
        "or a node id such as embed0@<pos> or mlp<layer>err@<pos>"
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
