"""How answers show themselves: as flat rows (for the table, JSON and CSV outputs), as a pandas
DataFrame (`.to_pandas()`, for notebooks; pandas is the optional `notebook` extra, imported only
when asked for), and how a token is written beside a node's name."""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from enum import Enum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from circuitstore.schema.errors import ConfigError
from circuitstore.schema.names import NodeKind

if TYPE_CHECKING:
    import pandas as pd

NOTEBOOK_EXTRA = "pip install 'circuitstore[notebook]'"


def clean(value: Any) -> Any:
    """NaN (stored for 'not a target') as None, so JSON stays valid; enum members and node
    kinds as their plain values, which every output format (GraphML among them) can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Enum | NodeKind):
        return value.value
    return value


def to_frame(rows: Sequence[dict[str, Any]], columns: Sequence[str] = ()) -> pd.DataFrame:
    """Rows as a pandas DataFrame (columns in the rows' order, or `columns` for no rows)."""
    try:
        import pandas as pd
    except ImportError:  # the optional extra
        raise ConfigError(f"pandas is not installed: {NOTEBOOK_EXTRA}") from None
    if not rows:
        return pd.DataFrame(columns=list(columns))
    return pd.DataFrame.from_records(list(rows))


class Tabular:
    """A record that shows itself as rows: one row (`as_row`) unless it says otherwise."""

    def as_row(self) -> dict[str, Any]:
        """The record as one flat row."""
        return {k: clean(v) for k, v in asdict(self).items()}  # type: ignore[call-overload]

    def rows(self) -> list[dict[str, Any]]:
        """The record as flat rows (one, unless the record says otherwise)."""
        return [self.as_row()]

    def to_pandas(self) -> pd.DataFrame:
        """This answer as a pandas DataFrame, one row per row of `rows()`."""
        return to_frame(self.rows())


class HasRow(Protocol):
    """Anything that shows itself as one row."""

    def as_row(self) -> dict[str, Any]: ...


R = TypeVar("R", bound=HasRow)


class Records(tuple[R, ...], Generic[R]):
    """A tuple of records (what `examples`, `prompts_with`, `search`... return) that also shows
    itself as rows and as a DataFrame; equal to the plain tuple of the same records."""

    columns: tuple[str, ...]

    def __new__(cls, items: Iterable[R] = (), columns: Sequence[str] = ()) -> Records[R]:
        self = super().__new__(cls, items)
        self.columns = tuple(columns)
        return self

    def rows(self) -> list[dict[str, Any]]:
        """One row per record."""
        return [r.as_row() for r in self]

    def to_pandas(self) -> pd.DataFrame:
        """The records as a DataFrame (the `columns` alone where there are none)."""
        return to_frame(self.rows(), self.columns)


def token_text(token: str | None) -> str:
    """A token as a person reads it beside an id: quoted, so that spaces show (`' Kate'`), and
    every control or invisible character escaped (repr's rules)."""
    return "" if token is None else repr(token)


def node_text(name: str, token: str | None) -> str:
    """A node's name with its token where it has one: `embed0@4 ' Kate'`, `mlp0tc[70]@14 ' to'`,
    `logit[458]@14 ' Kate'`. The one way every answer and command writes a node for people."""
    return name if token is None else f"{name} {token_text(token)}"


# What a terminal cannot show as itself: controls, format characters, surrogates, private use,
# unassigned code points, line and paragraph separators.
_HIDDEN = frozenset(("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"))
_REPLACEMENT = "\ufffd"


def readable_token(token: str) -> str:
    """A token in a list of tokens (a feature's logit-lens tokens): quoted (`' Kate'`), and
    where it is not text a person can read, its escapes and why (`'\\x05' (not printable)`,
    `'\\ufffd' (a byte that is not UTF-8 alone)`, `'' (empty)`)."""
    if token == "":
        return "'' (empty)"
    if any(unicodedata.category(ch) in _HIDDEN for ch in token):
        return f"{token!r} (not printable)"
    if _REPLACEMENT in token:
        return f"{token!r} (a byte that is not UTF-8 alone)"
    return repr(token)
