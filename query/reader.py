"""The store a question reads: its driver and database, managed read transactions, the
transcoder sets it holds, and feature names resolved against them. Every question module
(features, prompts, paths, heads, labels) takes a :class:`StoreReader`; `CircuitStore` is one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import neo4j

from circuitstore.query import cypher
from circuitstore.query.tables import Tabular
from circuitstore.schema.connection import translate_errors
from circuitstore.schema.errors import NotFoundError, QueryError
from circuitstore.schema.model import MODEL_FAMILY_BEFORE
from circuitstore.schema.names import (
    TRANSCODER,
    FeatureFamily,
    FeatureKey,
    FeatureRef,
    check_range,
    feature_family,
    head_name,
    numbered_head,
    parse_feature,
)

T = TypeVar("T")


@dataclass(frozen=True)
class TranscoderSetInfo(Tabular):
    """A stored transcoder set: its size, and the weights it was ingested from."""

    id: str
    n_layers: int
    d_transcoder: int
    model: str | None = None
    transcoders: str | None = None
    model_hash: str | None = None  # every weight's hash (what `verify` checks a model against)
    transcoders_hash: str | None = None
    n_heads: int | None = None  # stored edges number their heads layer * n_heads + head
    # What the set is ("transcoder" or "clt", `schema.names.FEATURE_FAMILIES`) and what model
    # it reads (HF's model_type); a set stored before they were recorded is GPT-2's transcoder.
    feature_family: str | None = None
    model_family: str | None = None

    def __post_init__(self) -> None:
        # Checked where used (`family`): one set of a family this version lacks leaves the
        # store's other sets readable.
        object.__setattr__(self, "feature_family", self.feature_family or TRANSCODER.key)
        object.__setattr__(self, "model_family", self.model_family or MODEL_FAMILY_BEFORE)

    @property
    def family(self) -> FeatureFamily:
        """The feature family, which spells the set's feature names (`clt8[355]`)."""
        return feature_family(self.feature_family)

    def head(self, number: int) -> tuple[int, int]:
        """(layer, head) of a head number stored on an ATTR edge."""
        if not self.n_heads:
            raise QueryError(f"transcoder set {self.id} does not record its heads per layer")
        return numbered_head(number, self.n_heads)

    def head_name(self, number: int) -> str:
        """`attn2[3]` for a head number stored on an ATTR edge."""
        return head_name(*self.head(number))


class StoreReader:
    """One store's connection, as the questions read it. `where` names the store in messages
    (its URI); `transcoder_set` is the set asked about (None: the store's only one)."""

    def __init__(
        self,
        driver: neo4j.Driver,
        database: str = "neo4j",
        transcoder_set: str | None = None,
        where: str | None = None,
    ) -> None:
        self.driver = driver
        self.database = database
        self.transcoder_set = transcoder_set
        self.where = where
        self._sets: dict[str, TranscoderSetInfo] | None = None

    def read(self, work: Callable[[neo4j.ManagedTransaction], T]) -> T:
        """`work` in one managed read transaction, the server's errors as ours."""
        with (
            translate_errors(where=self.where),
            self.driver.session(
                database=self.database, notifications_min_severity="OFF"
            ) as session,
        ):
            return session.execute_read(work)

    def rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """The rows of one statement, each as a dict by column name."""
        return self.read(lambda tx: [r.data() for r in tx.run(query, params)])

    def values(self, query: str, **params: Any) -> list[dict[str, Any]]:
        """`rows` for a statement that returns only values (no nodes or relationships), without
        the driver's deep copy of each into plain dicts: a third faster for large lists."""
        return self.read(lambda tx: [dict(r) for r in tx.run(query, params)])

    def transcoder_sets(self) -> dict[str, TranscoderSetInfo]:
        """Every transcoder set in the store, by id (read once)."""
        if self._sets is None:
            rows = self.rows(cypher.TRANSCODER_SETS)
            self._sets = {r["id"]: TranscoderSetInfo(**r) for r in rows}
        return self._sets

    def tset(self, name: str | None = None) -> TranscoderSetInfo:
        """The named set, or the only one in the store."""
        sets, wanted = self.transcoder_sets(), name or self.transcoder_set
        if wanted is not None:
            if wanted not in sets:
                known = ", ".join(sets) or "none"
                raise NotFoundError(f"unknown transcoder set {wanted!r} (the store holds: {known})")
            return sets[wanted]
        if not sets:
            raise QueryError("the store holds no transcoder set: ingest a corpus first")
        if len(sets) > 1:
            raise QueryError(
                f"the store holds several transcoder sets ({', '.join(sets)}): "
                "choose one with --transcoder-set"
            )
        return next(iter(sets.values()))

    def resolve(self, name: str, tset: str | None = None) -> tuple[FeatureRef, FeatureKey]:
        """A feature's name (in any family's spelling) parsed and checked against its
        transcoder set's size; both come back spelled in the set's family."""
        ref = parse_feature(name)
        info = self.tset(tset)
        ref = replace(ref, family=info.family)  # spelled as the set spells it
        check_range(ref, info.n_layers, info.d_transcoder, info.id)
        return ref, ref.key(info.id)


def check_top(top: int) -> None:
    """Refuse a row count below 1."""
    if top < 1:
        raise QueryError(f"top {top}: expected a positive number")


def check_choice(what: str, value: str, allowed: Sequence[str]) -> None:
    """Refuse a value outside a closed list of choices."""
    if value not in allowed:
        raise QueryError(f"{what} {value!r}: expected one of {', '.join(allowed)}")


def unknown_feature(ref: FeatureRef, key: FeatureKey) -> NotFoundError:
    """The error for a feature the store has no node for."""
    return NotFoundError(f"unknown feature {ref.name} in transcoder set {key.transcoder_set}")
