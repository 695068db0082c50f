"""Every configuration of the ingest side, as validated, frozen, torch-free records (as SAELens
does): the command line builds them, library calls take them, and a bad value fails at
construction with one line naming the field, the value and what is allowed.

- :class:`PruneConfig`: how a graph is pruned for storage;
- :class:`ChunkPlan`: how much memory one batch of targets may take;
- :class:`AttributionConfig`: one prompt's graph (mode, logit targets, pruning, chunks);
- :class:`IngestConfig`: a corpus into the store; holds an :class:`AttributionConfig`.

`IngestConfig`'s fields split in two. The *graph* fields decide what lands in the store (model,
transcoders, dtype, attribution, aggregation, token limits); changing any of them makes a
different run, and a store refuses to mix two graph configurations for one transcoder set. The
other fields only decide how the work is done (batch size, shard, catalog, progress) and may
change between resumes.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from circuitstore.schema.errors import ConfigError
from circuitstore.schema.home import data_home
from circuitstore.schema.inputs import url_port_problem

Mode = Literal["exact", "lumped"]
LogitPositions = Literal["last", "all"]
DtypeName = Literal["float32", "float64"]
WeightsDtypeName = Literal["bfloat16", "float32", "float64"]
MODES: tuple[str, ...] = get_args(Mode)
DTYPES: tuple[str, ...] = get_args(DtypeName)
WEIGHTS_DTYPES: tuple[str, ...] = get_args(WeightsDtypeName)
DEVICE_FORMS = "auto, cpu, cuda or cuda:N"


def check_device(spec: str) -> None:
    """The form of a `--device` value (whether this machine has it is `device.resolve_device`'s
    question, which needs torch)."""
    if not isinstance(spec, str) or not re.fullmatch(r"auto|cpu|cuda(:\d{1,2})?", spec):
        raise ConfigError(f"--device {spec!r}: allowed {DEVICE_FORMS}")


@dataclass(frozen=True)
class PruneConfig:
    """How a prompt's graph is pruned for storage (see `attribution.prune`)."""

    node_threshold: float = 0.8
    """Keep the fewest features that carry this share of the influence on the logits (0, 1]."""
    edge_threshold: float = 0.98
    """Per target, keep the strongest in-edges that carry this share of its |input| (0, 1]."""
    max_edges_per_target: int = 64
    """At most this many in-edges per target are candidates (>= 1)."""
    skip_fraction: float = 0.01
    """Per layer, leave unexpanded the targets that hold this smallest share of its influence
    [0, 1): 0.01 saves 40% of the time at GPT-2 scale and keeps 99.8% of the features."""
    max_feature_nodes: int | None = 4096
    """The storage budget's features: at most this many, the most influential (>= 1; None: no
    cap). See the README's budget table for what it keeps."""
    max_edges: int | None = 50_000
    """The storage budget's edges: at most this many per prompt, by influence-weighted strength
    (>= 1; None: no cap). 50,000 is ~1 s of writing at the measured write rate."""

    def __post_init__(self) -> None:
        _check(0 < self.node_threshold <= 1, "node_threshold", self.node_threshold, "0 < x <= 1")
        _check(0 < self.edge_threshold <= 1, "edge_threshold", self.edge_threshold, "0 < x <= 1")
        _check_int(self.max_edges_per_target, "max_edges_per_target", 1)
        _check(0 <= self.skip_fraction < 1, "skip_fraction", self.skip_fraction, "0 <= x < 1")
        for name in ("max_feature_nodes", "max_edges"):
            if getattr(self, name) is not None:
                _check_int(getattr(self, name), name, 1)

    def as_dict(self) -> dict[str, float | int]:
        """The pruning settings as plain values."""
        return asdict(self)


@dataclass(frozen=True)
class ChunkPlan:
    """How many residual-stream floats one chunk of targets' gradients may hold."""

    max_elements: int | None = None
    """None: 2^23 on a CPU (32 MiB in float32: as fast as bigger chunks, less memory), 2^27 on
    a GPU (fewer, larger kernels); else >= 1 (small values only shrink chunks, to a floor of 8
    targets)."""

    def __post_init__(self) -> None:
        if self.max_elements is not None:
            _check_int(self.max_elements, "max_elements", 1)


@dataclass(frozen=True)
class AttributionConfig:
    """One prompt's attribution graph."""

    mode: Mode = "exact"
    """exact: every path through attention; lumped: paths through at most one attention layer,
    the rest of each target's input in one remainder node."""
    logit_top_k: int = 5
    """Logit targets: the k highest logits (at the last position, or at every one) (>= 1)."""
    logit_positions: LogitPositions = "last"
    """Where the logit targets sit: the last position, or all of them."""
    prune: PruneConfig | None = field(default_factory=PruneConfig)
    """Pruning for storage, or None for every edge."""
    chunk: ChunkPlan = field(default_factory=ChunkPlan)
    """Memory per chunk of targets."""

    def __post_init__(self) -> None:
        _check(self.mode in MODES, "mode", self.mode, " or ".join(MODES))
        _check_int(self.logit_top_k, "logit_top_k", 1)
        _check(
            self.logit_positions in get_args(LogitPositions),
            "logit_positions",
            self.logit_positions,
            "last or all",
        )


# IngestConfig fields that decide what lands in the store, by the names the catalog and the
# stored graph configuration use (flat, the attribution's among them).
GRAPH_FIELDS = (
    "model",
    "transcoders",
    "dtype",
    "tf32",
    "mode",
    "logit_top_k",
    "node_threshold",
    "edge_threshold",
    "max_edges_per_target",
    "skip_fraction",
    "max_feature_nodes",
    "max_edges",
    "aggregate_min_fraction",
    "top_examples",
    "heads_per_edge",
    "max_tokens",
    "truncate",
    "weights_dtype",
)
# Graph fields added after stores were written: left out of the graph settings (and the run's
# hash) while they hold their default, so those stores' runs keep their names.
LATER_GRAPH_FIELDS = {"weights_dtype": None}


@dataclass(frozen=True)
class IngestConfig:
    """A corpus through the model and transcoders into the store: `IngestRunner(cfg).run()`."""

    model: str
    """HF model name (gpt2) or a folder saved with save_pretrained (with its tokenizer)."""
    transcoders: str
    """HF repo id or a folder of transcoder files."""
    prompts: str
    """Corpus: .txt (a prompt a line), .jsonl ({"id", "text", ...}) or hf:NAME[:SPLIT[:COLUMN]]."""
    run: str | None = None
    """Run name; default: the corpus file's stem and a hash of settings, weights and corpus."""
    catalog: str | None = None
    """SQLAlchemy URL of the run catalog; default: SQLite in the data folder."""
    dtype: DtypeName = "float32"
    """Engine dtype."""
    weights_dtype: WeightsDtypeName | None = None
    """The dtype the model's and transcoders' weights are held in (None: the engine dtype).
    bfloat16 halves their memory; products still accumulate in `dtype`."""
    device: str = "auto"
    """auto (a CUDA GPU when torch sees one), cpu, cuda or cuda:N."""
    tf32: bool = False
    """On a CUDA GPU, TF32 matrix products: faster, with the error the README states."""
    attribution: AttributionConfig = field(default_factory=lambda: AttributionConfig(mode="lumped"))
    """Each prompt's graph; ingest always prunes (prune must be set). Lumped by default: at
    GPT-2 scale on a CPU exact mode takes ~8x longer (see the README's benchmarks)."""
    aggregate_min_fraction: float = 0.01
    """DRIVES keeps a feature edge carrying at least this share of its target's |input| [0, 1)."""
    top_examples: int = 20
    """Top activating prompts kept per feature (>= 1)."""
    heads_per_edge: int = 3
    """Attention heads stored on each ATTR edge, strongest first, the rest summed (>= 0)."""
    max_tokens: int | None = None
    """Skip (or with truncate, cut) prompts longer than this, BOS counted (>= 2)."""
    truncate: bool = False
    """Cut over-long prompts instead of skipping them."""
    batch_size: int = 16
    """Prompts between catalog updates (>= 1)."""
    shard_index: int = 0
    """This worker's shard, 0 <= shard_index < shard_count."""
    shard_count: int = 1
    """How many shards the corpus is split into (by a hash of each prompt's key)."""
    views_top_k: int = 10
    """Tokens and virtual-weight neighbours kept per feature (>= 1)."""
    progress: bool | None = None
    """A progress bar: None shows it on a terminal only."""
    qk_top: int = 0
    """QK traces per prompt, stored with it: its K strongest stored attention edges, each traced
    at the head that carries the most of it (>= 0; 0: none; not with `parts`)."""
    parts: str | None = None
    """Write Parquet parts to this folder or URL (any pyarrow filesystem) instead of to Neo4j;
    `circuitstore load` builds a store from them."""

    def __post_init__(self) -> None:
        _check(self.dtype in DTYPES, "dtype", self.dtype, " or ".join(DTYPES))
        weights = self.weights_dtype
        _check(
            weights is None or weights in WEIGHTS_DTYPES,
            "weights_dtype",
            weights,
            ", ".join(WEIGHTS_DTYPES),
        )
        check_device(self.device)
        _check(self.attribution.prune is not None, "attribution.prune", None, "a PruneConfig")
        positions = self.attribution.logit_positions
        _check(positions == "last", "attribution.logit_positions", positions, "last (ingest)")
        fraction = self.aggregate_min_fraction
        _check(0 <= fraction < 1, "aggregate_min_fraction", fraction, "0 <= x < 1")
        _check_int(self.top_examples, "top_examples", 1)
        _check_int(self.heads_per_edge, "heads_per_edge", 0)
        if self.max_tokens is not None:
            _check_int(self.max_tokens, "max_tokens", 2)
        _check_int(self.batch_size, "batch_size", 1)
        _check_int(self.views_top_k, "views_top_k", 1)
        _check_int(self.qk_top, "qk_top", 0)
        _check(not (self.qk_top and self.parts), "qk_top", self.qk_top, "0 with parts")
        shard = f"{self.shard_index}/{self.shard_count}"
        _check(0 <= self.shard_index < self.shard_count, "shard", shard, "I/N with 0 <= I < N")
        problem = url_port_problem(self.catalog) if self.catalog else None
        if problem:  # the URL itself is not shown: it may hold a password
            raise ConfigError(f"--catalog is not a database URL ({problem})")

    @classmethod
    def from_flat(cls, **settings: Any) -> IngestConfig:
        """Build from one flat set of names (the command line's, `flat_dict`'s): the pruning and
        attribution ones go to their own records."""
        prune_names = set(PruneConfig.__dataclass_fields__)
        attribution_names = set(AttributionConfig.__dataclass_fields__) - {"prune", "chunk"}
        prune = {k: settings.pop(k) for k in list(settings) if k in prune_names}
        attribution = {k: settings.pop(k) for k in list(settings) if k in attribution_names}
        attribution.setdefault("mode", "lumped")
        return cls(
            attribution=AttributionConfig(prune=PruneConfig(**prune), **attribution), **settings
        )

    @property
    def prune(self) -> PruneConfig:
        """The pruning settings (ingest always prunes)."""
        assert self.attribution.prune is not None  # checked at construction
        return self.attribution.prune

    def flat_dict(self) -> dict[str, Any]:
        """Every setting by one flat name (the attribution's and pruning's inlined)."""
        data = {k: v for k, v in asdict(self).items() if k != "attribution"}
        data.update(mode=self.attribution.mode, logit_top_k=self.attribution.logit_top_k)
        data.update(self.prune.as_dict())
        return data

    def public_dict(self) -> dict[str, Any]:
        """As `flat_dict`, with any password in the catalog URL masked: this is what the
        catalog records and may show."""
        import sqlalchemy as sa  # only where a catalog is used

        data = self.flat_dict()
        if self.catalog:
            data["catalog"] = sa.make_url(self.catalog).render_as_string(hide_password=True)
        return data

    def graph_dict(self) -> dict[str, Any]:
        """The settings that shape the stored graphs (their hash keys the run)."""
        flat = self.flat_dict()
        return {
            name: flat[name]
            for name in GRAPH_FIELDS
            if name not in LATER_GRAPH_FIELDS or flat[name] != LATER_GRAPH_FIELDS[name]
        }

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
        """The catalog's URL: the one given, else a SQLite file in the data home."""
        return self.catalog or f"sqlite:///{data_home() / 'catalog.sqlite'}"


def _check(ok: bool, name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{name} = {value!r}: allowed {allowed}")


def _check_int(value: object, name: str, minimum: int) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
    _check(ok, name, value, f"an integer >= {minimum}")
