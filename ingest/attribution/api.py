"""The engine's front door: one prompt (or several) in, an :class:`AttributionGraph` out."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext

import torch
from jaxtyping import Bool, Int
from torch import Tensor

from circuitstore.ingest.attribution.engine import TargetFilter, iter_chunks
from circuitstore.ingest.attribution.graph import (
    AttributionGraph,
    Code,
    CollectSink,
    EdgeChunk,
    Edges,
    EdgeSink,
    NodeTable,
)
from circuitstore.ingest.attribution.heads import EdgeBreakdown, graph_by_head
from circuitstore.ingest.attribution.prune import PruneSink
from circuitstore.ingest.attribution.scores import GraphScores, edge_scores
from circuitstore.ingest.attribution.state import PromptState, build_state, logit_seeds
from circuitstore.ingest.config import AttributionConfig, DtypeName, WeightsDtypeName
from circuitstore.ingest.device import resolve_device, use_tf32
from circuitstore.ingest.model import LoadedModel, load_model, run_forward, tokenize, torch_dtype
from circuitstore.ingest.transcoder import TranscoderSet, load_transcoders, validate_against
from circuitstore.ingest.transcoder.common import output_hook
from circuitstore.schema.errors import TranscoderLoadError


def load_engine(
    model: str,
    transcoders: str,
    *,
    device: str = "auto",
    dtype: DtypeName = "float32",
    weights_dtype: WeightsDtypeName | None = None,
    tf32: bool = False,
    check_model: Callable[[LoadedModel], None] | None = None,
    check_transcoders: Callable[[TranscoderSet], None] | None = None,
) -> AttributionEngine:
    """The engine that ingest, `attribute` and `verify` run: the model (hub name or folder) on
    `device` (a `--device` value) computing in `dtype` with its weights and the transcoders' held
    in `weights_dtype` (default: `dtype`), the transcoders checked against it and moved there;
    TF32 products on CUDA only where asked for. `check_model` and `check_transcoders` see each as
    it loads (verify's hash checks), before the two are checked against each other."""
    where = resolve_device(device)
    use_tf32(tf32)
    held = torch_dtype(weights_dtype or dtype)
    loaded = load_model(model, dtype=torch_dtype(dtype), device=where, weights_dtype=held)
    if check_model is not None:
        check_model(loaded)
    tcs = load_transcoders(transcoders, dtype=held)
    if check_transcoders is not None:
        check_transcoders(tcs)
    return AttributionEngine(loaded, tcs)


def paired(transcoders: TranscoderSet, model: LoadedModel) -> TranscoderSet:
    """The set with every transcoder reading ln2's normalised output, the one input the engine
    knows: a set reading the MLP's real input takes the model's ln2 gain and bias into its
    weights (`Transcoder.reading_normalized`). The set's identity (hash) is unchanged."""
    w = model.weights
    for tc in transcoders.transcoders:
        if model.family.post_norms and output_hook(tc) == "mlp.hook_out":
            raise TranscoderLoadError(
                f"{tc.source}: writes mlp.hook_out, before {model.family.label}'s post-MLP norm; "
                "the engine needs the MLP output as the residual stream gets it (hook_mlp_out)"
            )
    moved = dataclasses.replace(
        transcoders,
        transcoders=tuple(
            tc.reading_normalized(w.mlp_in_gain[tc.layer], w.mlp_in_bias[tc.layer])
            for tc in transcoders.transcoders
        ),
    )
    if any(a is not b for a, b in zip(moved.transcoders, transcoders.transcoders, strict=True)):
        # The set's identity stays the files' tensors, not the rewritten ones.
        moved.__dict__["content_hash"] = transcoders.content_hash
    return moved


class AttributionEngine:
    """A model and its transcoders, checked against each other once, on the model's device.
    Every tensor the engine makes lives there; only what a caller reads back (`.tolist()`)
    comes to the host."""

    def __init__(self, model: LoadedModel, transcoders: TranscoderSet) -> None:
        validate_against(transcoders, n_layers=model.n_layers, d_model=model.d_model)
        self.model = model
        self.transcoders = paired(transcoders, model).to(model.weights_dtype, model.device)

    def on_device(self) -> AbstractContextManager[object]:
        """Makes the device the default for new tensors: the engine's buffers, the pruner's
        and any sink's. A no-op on the CPU, where torch's default already is the CPU."""
        if self.model.device.type == "cpu":
            return nullcontext()
        return self.model.device

    def prepare(
        self, prompt: str, config: AttributionConfig, *, truncate: bool = False
    ) -> PromptState:
        """Tokenise, run the real model once, and freeze what the replacement model needs."""
        return self.prepare_tokens(tokenize(self.model, prompt, truncate=truncate), config)

    def prepare_tokens(self, tokens: Int[Tensor, " pos"], config: AttributionConfig) -> PromptState:
        """As `prepare`, from token ids that already start with BOS."""
        with self.on_device():
            cache = run_forward(self.model, tokens)
            return build_state(
                self.model,
                self.transcoders,
                cache,
                mode=config.mode,
                logit_top_k=config.logit_top_k,
                logit_positions=config.logit_positions,
            )

    def chunks(
        self, state: PromptState, config: AttributionConfig, select: TargetFilter | None = None
    ) -> Iterator[EdgeChunk]:
        """Edge chunks, top layer first. Each chunk's `dense` block is only valid until the next
        one is requested (buffers are reused): copy what you keep."""
        return iter_chunks(state, config.chunk, select)

    def attribute(
        self,
        prompt: str,
        config: AttributionConfig | None = None,
        *,
        truncate: bool = False,
        sinks: Sequence[EdgeSink] = (),
    ) -> AttributionGraph:
        """The graph of one prompt; `sinks` also see every unpruned chunk (corpus aggregates).
        Raises InputError for an empty prompt or one over the model's context (unless
        `truncate`)."""
        config = config or AttributionConfig()
        with torch.no_grad():
            state = self.prepare(prompt, config, truncate=truncate)
            return self.graph(state, config, sinks=sinks)

    def attribute_by_head(
        self, prompt: str, config: AttributionConfig | None = None, *, truncate: bool = False
    ) -> tuple[AttributionGraph, list[EdgeBreakdown | None]]:
        """The graph of one prompt and each of its edges broken down by path: same position,
        each single attention head, and two or more attention layers (`heads.edge_by_head`)."""
        config = config or AttributionConfig()
        with torch.no_grad():
            state = self.prepare(prompt, config, truncate=truncate)
            graph = self.graph(state, config)
            with self.on_device():
                return graph, graph_by_head(state, graph)

    def attribute_batch(
        self,
        prompts: Iterable[str],
        config: AttributionConfig | None = None,
        *,
        truncate: bool = False,
    ) -> list[AttributionGraph]:
        """Several prompts, each run on its own (no padding): results equal single-prompt runs."""
        return [self.attribute(p, config, truncate=truncate) for p in prompts]

    def graph(
        self, state: PromptState, config: AttributionConfig, *, sinks: Sequence[EdgeSink] = ()
    ) -> AttributionGraph:
        """The graph of a prepared prompt: every edge (no pruning), or the pruned one; `sinks`
        also see every chunk as it is computed."""
        with self.on_device():
            return self._graph(state, config, sinks)

    def _graph(
        self, state: PromptState, config: AttributionConfig, sinks: Sequence[EdgeSink]
    ) -> AttributionGraph:
        main: CollectSink | PruneSink
        if config.prune is None:
            main = CollectSink()
        else:
            # Other sinks need every edge: then the pruner still decides, but expands all.
            main = PruneSink(state.nodes, config.prune, logit_seeds(state), expand_all=bool(sinks))
        select = main.wanted if isinstance(main, PruneSink) else None
        for chunk in self.chunks(state, config, select):
            main.consume(chunk)
            for sink in sinks:
                sink.consume(chunk)
        meta = self.metadata(state, config)
        tokens = tuple(state.cache.str_tokens)
        ids = tuple(int(t) for t in state.cache.tokens.tolist())
        logit_ids = state.nodes.index[state.targets[-1].nodes].tolist()
        names = {int(t): self.model.bridge.tokenizer.decode([int(t)]) for t in logit_ids}
        if isinstance(main, CollectSink):
            edges = main.edges()
            meta.update(_full_scores(state, edges).as_dict())
            return AttributionGraph(tokens, ids, state.nodes, edges, meta, logit_tokens=names)
        kept, edges, accounting = main.finish()
        meta["unexpanded_influence"] = main.unexpanded_influence()
        meta["kept_influence"] = main.kept_influence(kept)
        meta.update(main.full_scores().as_dict())
        meta.update(main.stored_scores(edges.source, edges.target, edges.weight).as_dict("stored_"))
        nodes, new_row = subset(state.nodes, kept)
        edges = Edges(new_row[edges.source], new_row[edges.target], edges.weight)
        influence = main.influence[kept]
        rows = kept.nonzero(as_tuple=True)[0]
        return AttributionGraph(
            tokens, ids, nodes, edges, meta, accounting, influence, names, rows=rows
        )

    def metadata(self, state: PromptState, config: AttributionConfig) -> dict[str, object]:
        """What a graph's JSON says about how it was made."""
        return {
            "mode": config.mode,
            "mode_note": (
                "exact: edges are full direct effects through any number of attention layers"
                if config.mode == "exact"
                else "lumped: edges carry paths through at most one attention layer; "
                "each target's remaining input is one remainder node (type error, id rem[...])"
            ),
            "dtype": str(self.model.dtype).removeprefix("torch."),
            "model": self.model.name,
            "transcoders": self.transcoders.source,
            "transcoders_hash": self.transcoders.content_hash,
            "feature_family": "clt" if self.transcoders.cross_layer else "transcoder",
            "logit_top_k": config.logit_top_k,
            "logit_positions": config.logit_positions,
            "pruning": None if config.prune is None else config.prune.as_dict(),
            "n_features_active": state.n_features,
        }


def _full_scores(state: PromptState, edges: Edges) -> GraphScores:
    """Scores of a whole graph held in memory: every target's |input| is its edges'."""
    n = len(state.nodes)
    abs_input = torch.zeros(n, dtype=torch.float64)
    abs_input.index_add_(0, edges.target, edges.weight.abs().to(torch.float64))
    kind = state.nodes.kind
    return edge_scores(
        kind, edges.source, edges.target, edges.weight, abs_input, logit_seeds(state)
    )


def subset(nodes: NodeTable, keep: Bool[Tensor, " n"]) -> tuple[NodeTable, Int[Tensor, " n"]]:
    """The kept rows, and the map old row -> new row (-1 for dropped)."""
    new_row = torch.full((len(nodes),), -1, dtype=torch.long)
    rows = keep.nonzero(as_tuple=True)[0]
    new_row[rows] = torch.arange(rows.shape[0])
    index = nodes.index[rows].clone()
    is_rem = nodes.kind[rows] == Code.REMAINDER
    index[is_rem] = new_row[index[is_rem]]  # a remainder points at its target's row
    table = NodeTable(
        kind=nodes.kind[rows],
        layer=nodes.layer[rows],
        pos=nodes.pos[rows],
        index=index,
        activation=nodes.activation[rows],
        value=nodes.value[rows],
    )
    return table, new_row
