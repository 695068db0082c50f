"""The ingest job's configuration: a validated, frozen record that round-trips through JSON.

Fields split in two. The *graph* fields decide what lands in the store (model, transcoders,
attribution mode, pruning, aggregation); changing any of them makes a different run, and a store
refuses to mix two graph configurations for one transcoder set. The other fields only decide how
the work is done (batch size, shard, catalog, progress) and may change between resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from circuitstore.errors import ConfigError

GRAPH_FIELDS = (
    "model",
    "transcoders",
    "dtype",
    "mode",
    "logit_top_k",
    "node_threshold",
    "edge_threshold",
    "max_edges_per_target",
    "skip_fraction",
    "aggregate_min_fraction",
    "top_examples",
    "max_tokens",
    "truncate",
)


def data_home() -> Path:
    """Where circuitstore keeps state outside the repository ($CIRCUITSTORE_HOME); refused in
    one line when it cannot be a folder (a file at that path, or a file above it)."""
    default = Path.home() / ".local" / "share" / "circuitstore"
    home = Path(os.environ.get("CIRCUITSTORE_HOME", default)).expanduser()
    for path in (home, *home.parents):
        if path.exists() and not path.is_dir():
            what = "is" if path == home else f"lies below {path}, which is"
            raise ConfigError(f"CIRCUITSTORE_HOME {home} {what} a file; point it at a folder")
    return home


@dataclass(frozen=True)
class IngestConfig:
    model: str
    transcoders: str
    prompts: str
    run: str | None = None
    catalog: str | None = None
    dtype: str = "float32"
    mode: str = "exact"
    logit_top_k: int = 5
    node_threshold: float = 0.8
    edge_threshold: float = 0.98
    max_edges_per_target: int = 64
    skip_fraction: float = 0.01
    aggregate_min_fraction: float = 0.01
    top_examples: int = 20
    max_tokens: int | None = None
    truncate: bool = False
    batch_size: int = 16
    shard_index: int = 0
    shard_count: int = 1
    views_top_k: int = 10
    progress: bool | None = None  # None: a bar on a terminal, quiet in a pipe

    def __post_init__(self) -> None:
        _check(self.dtype in ("float32", "float64"), "dtype", self.dtype, "float32 or float64")
        _check(self.mode in ("exact", "lumped"), "mode", self.mode, "exact or lumped")
        _check(self.logit_top_k >= 1, "logit_top_k", self.logit_top_k, ">= 1")
        for name in ("node_threshold", "edge_threshold"):
            value = getattr(self, name)
            _check(0.0 < value <= 1.0, name, value, "0 < x <= 1")
        _check(
            self.max_edges_per_target >= 1,
            "max_edges_per_target",
            self.max_edges_per_target,
            ">= 1",
        )
        _check(0 <= self.skip_fraction < 1, "skip_fraction", self.skip_fraction, "0 <= x < 1")
        _check(
            0 <= self.aggregate_min_fraction < 1,
            "aggregate_min_fraction",
            self.aggregate_min_fraction,
            "0 <= x < 1",
        )
        _check(self.top_examples >= 1, "top_examples", self.top_examples, ">= 1")
        _check(
            self.max_tokens is None or self.max_tokens >= 2, "max_tokens", self.max_tokens, ">= 2"
        )
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(
            0 <= self.shard_index < self.shard_count,
            "shard",
            f"{self.shard_index}/{self.shard_count}",
            "I/N with 0 <= I < N",
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def public_dict(self) -> dict[str, Any]:
        """As `to_dict`, with any password in the catalog URL masked: this is what the catalog
        records and may show."""
        data = self.to_dict()
        if self.catalog:
            data["catalog"] = sa.make_url(self.catalog).render_as_string(hide_password=True)
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> IngestConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown ingest settings: {', '.join(unknown)}")
        return cls(**data)

    def graph_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in GRAPH_FIELDS}

    def graph_hash(self, provenance: dict[str, Any]) -> str:
        """Identity of what lands in the store: graph settings plus the weights' hashes."""
        ident = {
            **self.graph_dict(),
            "model": provenance["model_hash"],
            "transcoders": provenance["transcoders_hash"],
        }
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def run_name(self, graph_hash: str, corpus_digest: str) -> str:
        """--run, or `<corpus file stem>-<8 hex>`, the hex a hash of the graph settings and
        weights and of the corpus's contents."""
        if self.run:
            return self.run
        stem = Path(self.prompts).stem or "corpus"
        return f"{stem}-{hashlib.sha256((graph_hash + corpus_digest).encode()).hexdigest()[:8]}"

    def catalog_url(self) -> str:
        return self.catalog or f"sqlite:///{data_home() / 'catalog.sqlite'}"


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name} = {value!r}: allowed {allowed}")
