"""`CircuitStore`: the questions the store answers, as Python calls returning frozen records.

The one entry point: each method delegates to the module of its question (`features`,
`prompts`, `paths`, `heads`, `labels`, `interventions`, `export`), which owns its Cypher, its
records and the mapping from rows to records. Every read runs in a managed read transaction.
Names are parsed before anything runs; the transcoder set is inferred when the store holds one
(or from the prompt), and must be named when the store holds several.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

import neo4j

from circuitstore.query.export.neuronpedia import neuronpedia_graph
from circuitstore.query.features import card, links
from circuitstore.query.features.links import Order, Sign
from circuitstore.query.features.records import Example, FeatureCard, Neighbours
from circuitstore.query.heads import read as heads_read
from circuitstore.query.heads.records import HeadLoad
from circuitstore.query.interventions import read as interventions_read
from circuitstore.query.interventions.records import InterventionInfo
from circuitstore.query.labels import search as label_search
from circuitstore.query.labels.records import LabelMatch
from circuitstore.query.paths import read as paths_read
from circuitstore.query.paths.records import CircuitResult, PathsResult, SubgraphScores
from circuitstore.query.prompts import read as prompts_read
from circuitstore.query.prompts.records import PromptInfo, PromptMatch, PromptSummary
from circuitstore.query.qk import read as qk_read
from circuitstore.query.qk.records import QKTrace
from circuitstore.query.qk.stored import QKDriver
from circuitstore.query.reader import StoreReader
from circuitstore.query.readonly import run_read
from circuitstore.query.subgraph import Subgraph
from circuitstore.query.tables import Records
from circuitstore.schema.connection import Neo4jSettings, open_driver, translate_errors
from circuitstore.schema.model import PromptScore
from circuitstore.schema.names import NodeRef


class CircuitStore(StoreReader):
    """The store's questions as Python calls. Every method raises only the project's errors:
    :class:`QueryError` for a question that cannot be answered as asked (a malformed name;
    its subclass :class:`NotFoundError` for a name the store does not hold),
    :class:`StoreUnavailableError` when Neo4j cannot be reached or refuses the credentials,
    :class:`SchemaError` for anything else the server refuses. `where` names the store in
    messages (its URI)."""

    def __init__(
        self,
        driver: neo4j.Driver,
        database: str = "neo4j",
        transcoder_set: str | None = None,
        where: str | None = None,
    ) -> None:
        super().__init__(driver, database, transcoder_set, where)
        self._owns_driver = False

    @classmethod
    def connect(
        cls,
        env_file: Path | None = None,
        transcoder_set: str | None = None,
        **settings: Any,
    ) -> CircuitStore:
        """A store on its own driver, from the NEO4J_* environment (or `env_file`) with
        `settings` (uri, username, database) on top; close it with `close()` or a `with` block.
        The password comes only from the environment or the file."""
        loaded = Neo4jSettings.load(env_file=env_file, **settings)
        store = cls(open_driver(loaded), loaded.database, transcoder_set, loaded.uri)
        store._owns_driver = True
        return store

    def close(self) -> None:
        """Close the driver if `connect` opened it."""
        if self._owns_driver:
            self.driver.close()

    def __enter__(self) -> CircuitStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- prompts -----------------------------------------------------------------------------

    def prompt(self, key: str) -> PromptInfo:
        """A stored prompt (by key, or by its global id) and its tokens."""
        return prompts_read.prompt_info(self, key)

    def prompt_summary(self, key: str) -> PromptSummary:
        """A stored prompt's scores, accounting and corpus fields (`query prompt KEY`)."""
        return prompts_read.prompt_summary(self, key)

    def prompts(
        self,
        limit: int = 100,
        skip: int = 0,
        order: PromptScore | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        ascending: bool = False,
    ) -> Records[PromptSummary]:
        """The stored prompts (of the chosen transcoder set, else all) with their scores and the
        corpus's own fields (a demo prompt's `task` and `answer`): by key, or by the score
        `order` (best first unless `ascending`), keeping those whose score lies in
        [`minimum`, `maximum`]."""
        return prompts_read.prompts(self, limit, skip, order, minimum, maximum, ascending)

    def prompts_with(self, features: Sequence[str], top: int = 20) -> Records[PromptMatch]:
        """Prompts whose stored graphs hold every one of `features`."""
        return prompts_read.prompts_with(self, features, top)

    # -- labels ------------------------------------------------------------------------------

    def feature_labels(self, tset: str, features: Iterable[tuple[int, int]]) -> dict[str, str]:
        """The labels of the labelled ones among `features` ((layer, index) pairs), by name."""
        return label_search.feature_labels(self, tset, features)

    def search(self, text: str, top: int = 20, lucene: bool = False) -> Records[LabelMatch]:
        """Features whose label matches `text`, best first (the full-text index over the
        labels `circuitstore labels import` wrote). The words are matched as words; `lucene`
        passes `text` as a Lucene query instead (`name*`, `"exact phrase"`, `a AND b`)."""
        return label_search.search(self, text, top, lucene)

    # -- features ----------------------------------------------------------------------------

    def drivers(
        self,
        feature: str,
        prompt: str | None = None,
        top: int = 10,
        order: Order = "total",
        sign: Sign = "positive",
        by_head: bool = False,
    ) -> Neighbours:
        """Which features drive `feature`: corpus-wide over DRIVES, or in one prompt over ATTR;
        `by_head` splits each link by attention head (`Link.split`), in one prompt only."""
        return links.links(self, "drivers", feature, prompt, top, order, sign, by_head)

    def targets(
        self,
        feature: str,
        prompt: str | None = None,
        top: int = 10,
        order: Order = "total",
        sign: Sign = "positive",
        by_head: bool = False,
    ) -> Neighbours:
        """What `feature` drives: corpus-wide over DRIVES, or in one prompt over ATTR;
        `by_head` splits each link by attention head (`Link.split`), in one prompt only."""
        return links.links(self, "targets", feature, prompt, top, order, sign, by_head)

    def examples(self, feature: str, top: int = 10, window: int = 8) -> Records[Example]:
        """The prompts where `feature` fires most, with the token in context."""
        return card.examples(self, feature, top, window)

    def feature(self, feature: str, top: int = 5) -> FeatureCard:
        """What `feature` is: statistics, views, neighbours, examples."""
        return card.feature_card(self, feature, top)

    # -- heads -------------------------------------------------------------------------------

    def heads(self, prompt: str, top: int = 10) -> Records[HeadLoad]:
        """The attention heads that carry the most stored weight in one prompt's graph: each
        ATTR edge names its strongest heads (`ingest --heads-per-edge`)."""
        return heads_read.heads(self, prompt, top)

    # -- one prompt's graph: paths and circuits ----------------------------------------------

    def prompt_graph(self, prompt: str) -> tuple[PromptInfo, Subgraph]:
        """One prompt's whole stored graph (nodes by local id, each with the token a person
        reads it by and its feature's label)."""
        return paths_read.prompt_graph(self, prompt)

    def find_nodes(self, graph: Subgraph, ref: NodeRef, info: PromptInfo) -> list[str]:
        """The ids of the nodes of a prompt's stored graph that `ref` names (a feature without a
        position names all its occurrences); refuses a name the graph lacks."""
        return paths_read.find_nodes(self, graph, ref, info)

    def paths(
        self,
        prompt: str,
        to: str = "logit",
        source: str | None = None,
        top: int = 10,
        method: Literal["exact", "beam"] = "exact",
        beam_width: int = 5,
        depth: int = 3,
    ) -> PathsResult:
        """The `top` strongest paths into a logit or feature: exactly, by |product of edge
        weights| (`exact`), or by the original transcoder work's greedy beam search (`beam`,
        `graphs.beam_paths`: `beam_width` paths kept per step, `depth` steps)."""
        return paths_read.paths(self, prompt, to, source, top, method, beam_width, depth)

    def circuit(self, prompt: str, threshold: float = 0.8, to: str = "logit") -> CircuitResult:
        """The nodes carrying `threshold` of the influence on the target (default: top logit)."""
        return paths_read.circuit(self, prompt, threshold, to)

    def subgraph_scores(self, prompt: str, pinned: Sequence[str]) -> SubgraphScores:
        """circuit-tracer's replacement and completeness scores of the subgraph of the prompt's
        stored graph that keeps the `pinned` features (local ids, `mlp0tc[70]@14`) and every
        node that is not a feature (see `query.scores`): pinning every stored feature gives
        the prompt's stored scores. Refuses an id the stored graph lacks."""
        return paths_read.subgraph_scores(self, prompt, pinned)

    # -- interventions -----------------------------------------------------------------------

    def interventions(
        self, feature: str | None = None, prompt: str | None = None, top: int = 50
    ) -> Records[InterventionInfo]:
        """The interventions `circuitstore verify` stored: those on `feature` (any of its
        positions, or the one named), of `prompt` (key or id), or both; by prompt key, kind,
        features and scale."""
        return interventions_read.interventions(self, feature, prompt, top)

    # -- QK traces ---------------------------------------------------------------------------

    def qk_traces(self, prompt: str, head: str | None = None) -> Records[QKTrace]:
        """The QK traces stored for `prompt` (key or id): each head's score at one (query, key)
        pair split into its contributors' terms (`circuitstore qk --store`, `ingest
        --qk-top`), of `head` (`attn2[3]`) where given; by head and positions."""
        return qk_read.qk_traces(self, prompt, head)

    def qk_drivers(
        self, head: str, side: str = "key", top: int = 10, sign: str = "positive"
    ) -> Records[QKDriver]:
        """Which features most raise (`sign` positive), lower (negative) or move (abs) the
        scores of `head` (`attn2[3]`) from its `side` (key or query), summed over its stored
        traces: a feature occurrence's kept marginals, by the feature."""
        return qk_read.qk_drivers(self, head, side, top, sign)

    # -- exports and Cypher ------------------------------------------------------------------

    def export_graph(
        self,
        prompt: str,
        scan: str | None = None,
        source_set: str | None = None,
        node_threshold: float = 0.8,
        slug: str | None = None,
        pinned: Sequence[str] | None = None,
    ) -> dict[str, Any]:
        """One prompt's stored graph as the attribution-graph JSON that Neuronpedia and
        circuit-tracer's viewer load (see `export.neuronpedia_graph`); write it with
        `export.write_json` or, into a viewer folder, `export.write_viewer_graph`. `pinned`
        (local ids of the stored graph, checked as in `subgraph_scores`) are pinned in the
        viewers (`qParams.pinnedIds`). Stored QK traces made for an edge fill its target's
        `qk_tracing_results` (see `export.qk`)."""
        info, graph = self.prompt_graph(prompt)
        tset = self.tset(info.transcoder_set)
        ids = paths_read.pinned_nodes(graph, pinned or (), info)
        traced = qk_read.traced_edges(self, info.id)
        return neuronpedia_graph(
            info, graph, tset, node_threshold, scan, source_set, slug, ids, traced
        )

    def cypher(
        self, statement: str, params: dict[str, Any] | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Any read-only statement (see `readonly.run_read`: it must plan as a read)."""
        with translate_errors(where=self.where):
            return run_read(self.driver, self.database, statement, params or {}, limit)
