"""`circuitstore verify`: one prompt's stored graph checked against the model it describes.

For each chosen feature (by default the `top` most influential on the model's answer in the
stored graph), and then for all of them together, the feature is scaled (removed by default)
and two things are compared (see `effects`):

- in the frozen replacement model, the change of every target of the feature's stored edges
  against the edge itself: this checks the stored edges;
- in the real model, the change of the answer's logit and of its difference to the runner-up
  (the second most likely token, clean) against what the stored graph predicts through all its
  paths (`StoredGraph.propagated`): this checks what the graph says the model does.

The stored graph comes from the caller (the `verify` command reads it through the query side,
`stored.StoredPrompt`): ingest sits below query and imports nothing from it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from circuitstore.ingest.attribution.api import AttributionEngine, load_engine
from circuitstore.ingest.intervene.effects import Intervener, Readout, Site
from circuitstore.ingest.intervene.stored import (
    RecordedWeights,
    StoredGraph,
    StoredNode,
    StoredPrompt,
    StoredPromptInfo,
)
from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder import TranscoderSet
from circuitstore.schema.errors import ConfigError, InputError, QueryError
from circuitstore.schema.names import NodeId, NodeKind

MAX_TOP = 1000
# How the default features are chosen, from the stored graph alone: `support`, the features that
# most lift the answer's logit over the runner-up's through their stored paths (the answer's
# circuit); `effect`, the largest predicted change of that difference either way; `influence`,
# circuit-tracer's node influence on the answer's logit (unsigned: it also picks features that
# lift every candidate token alike).
RANKS = ("support", "effect", "influence")


# Past a thousandfold, an activation times its decoder row leaves float32's useful range in the
# real forward pass (1e308 overflowed to inf, then NaN logits): no first-order reading survives.
MAX_SCALE = 1000.0


@dataclass(frozen=True)
class VerifyConfig:
    """What to check. `model` and `transcoders` default to the ones the transcoder set was
    ingested from (as recorded on it); either way their weights must hash to the recorded ones."""

    prompt: str
    features: tuple[str, ...] = ()
    top: int = 10
    scale: float = 0.0
    model: str | None = None
    transcoders: str | None = None
    device: str = "auto"
    rank: str = "support"

    def __post_init__(self) -> None:
        if self.rank not in RANKS:
            raise ConfigError(f"rank {self.rank!r}: expected one of {', '.join(RANKS)}")
        if not 1 <= self.top <= MAX_TOP:
            raise ConfigError(f"top {self.top}: expected 1..{MAX_TOP}")
        if not (-MAX_SCALE <= self.scale <= MAX_SCALE) or self.scale == 1.0:
            raise ConfigError(
                f"scale {self.scale}: expected a finite number other than 1, from "
                f"{-MAX_SCALE:g} to {MAX_SCALE:g} (0 removes the feature, 2 doubles it)"
            )


@dataclass(frozen=True)
class Check:
    """One intervention: the features (node ids) scaled together and what it showed."""

    features: tuple[str, ...]
    influence: float  # their summed influence on the answer in the stored graph
    targets: int  # stored edges' targets checked in the frozen model
    frozen_error: float  # max |observed - edge x (scale - 1)| / the target's stored |input|
    predicted_logit: float
    observed_logit: float
    predicted_diff: float
    observed_diff: float
    flips: bool  # the real model's top token is no longer the answer
    top_token: str  # the real model's top token after the intervention (the answer unless flips)

    def as_row(self) -> dict[str, Any]:
        """The check as one flat row."""
        return {
            "features": ", ".join(self.features),
            "influence": self.influence,
            "targets": self.targets,
            "frozen_error": self.frozen_error,
            "predicted_logit": self.predicted_logit,
            "observed_logit": self.observed_logit,
            "predicted_diff": self.predicted_diff,
            "observed_diff": self.observed_diff,
            "flips": self.flips,
            "top_token": self.top_token,
        }


@dataclass(frozen=True)
class VerifyReport:
    """The checks of one prompt, and how the graph's predictions agree with the real model."""

    prompt: StoredPromptInfo
    mode: str
    scale: float
    answer: tuple[int, str]  # token id, text
    runner_up: tuple[int, str]
    checks: tuple[Check, ...]
    circuit: Check  # every checked feature at once
    agreement: dict[str, float | None] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        """One row per check, the single features first, then all together."""
        return [{"check": "single", **c.as_row()} for c in self.checks] + [
            {"check": "together", **self.circuit.as_row()}
        ]


def agreement(checks: Sequence[Check]) -> dict[str, float | None]:
    """How the graph's predictions of the answer's logit difference agree with the real model,
    over the single-feature checks: Pearson correlation, median relative error
    (|observed - predicted| / |observed|) and the share with the same sign."""
    pred = [c.predicted_diff for c in checks]
    obs = [c.observed_diff for c in checks]
    corr = None
    if len(checks) >= 2 and statistics.pstdev(pred) > 0 and statistics.pstdev(obs) > 0:
        corr = statistics.correlation(pred, obs)
    rel = [abs(o - p) / abs(o) for p, o in zip(pred, obs, strict=True) if o != 0]
    signs = [(p > 0) == (o > 0) for p, o in zip(pred, obs, strict=True) if p != 0 and o != 0]
    return {
        "correlation": corr,
        "median_relative_error": statistics.median(rel) if rel else None,
        "sign_agreement": sum(signs) / len(signs) if signs else None,
    }


class Verifier:
    """`Verifier(cfg, stored).run()`: the checks of one prompt (nothing is written here; see
    `write.write_report`)."""

    def __init__(self, cfg: VerifyConfig, stored: StoredPrompt) -> None:
        self.cfg, self.stored = cfg, stored

    def run(self) -> VerifyReport:
        """Load the recorded weights, intervene, and compare with the stored graph."""
        cfg, stored = self.cfg, self.stored
        info, graph, mode = stored.prompt, stored.graph, stored.mode
        groups = list(stored.groups)
        model, tcs = self._load(stored.weights, info)
        model_run = Intervener(model, tcs, torch.tensor(info.token_ids))
        last = len(info.token_ids) - 1
        top2 = model_run.clean_logits[last].topk(2).indices.tolist()
        answer = _logit_node(graph, last, top2[0], info)
        runner = NodeId.logit(last, top2[1])
        influence = graph.influence({answer: 1.0})
        if not groups:
            groups = _top_features(graph, _scores(graph, answer, runner, influence, cfg), cfg.top)
        if not groups:
            raise QueryError(
                f"no stored feature of prompt {info.key} scores above 0 by {cfg.rank}: "
                "name features with --feature, or choose another --rank"
            )
        text = model.bridge.tokenizer.decode
        check = _Checker(model_run, graph, cfg.scale, mode == "lumped", answer, runner, top2)
        check.decode = lambda token: str(text([token]))  # names the token that took the top
        checks = tuple(check(g, sum(influence.get(n, 0.0) for n in g)) for g in groups)
        together = tuple(dict.fromkeys(n for g in groups for n in g))
        circuit = check(together, sum(influence.get(n, 0.0) for n in together))
        return VerifyReport(
            info,
            mode,
            cfg.scale,
            (top2[0], text([top2[0]])),
            (top2[1], text([top2[1]])),
            checks,
            circuit,
            agreement(checks),
        )

    def _load(
        self, tset: RecordedWeights, info: StoredPromptInfo
    ) -> tuple[LoadedModel, TranscoderSet]:
        cfg = self.cfg
        engine = load_recorded(tset, info, cfg.model, cfg.transcoders, cfg.device)
        return engine.model, engine.transcoders


def load_recorded(
    tset: RecordedWeights,
    info: StoredPromptInfo,
    model: str | None = None,
    transcoders: str | None = None,
    device: str = "auto",
) -> AttributionEngine:
    """The engine of the weights prompt `info` was ingested with (`model` and `transcoders`
    default to those its transcoder set records); refuses weights whose hashes differ from the
    recorded ones, in one line, as each loads."""
    model_path = model or tset.model
    tc_path = transcoders or tset.transcoders
    if not model_path or not tc_path:
        raise ConfigError(f"transcoder set {tset.id} records no model: name it with --model")
    model_is = f"model {model_path}"
    tcs_are = f"transcoders {tc_path}"
    return load_engine(
        model_path,
        tc_path,
        device=device,
        check_model=lambda m: _same(m.weights_hash, tset.model_hash, model_is, info),
        check_transcoders=lambda t: _same(t.content_hash, tset.transcoders_hash, tcs_are, info),
    )


def _same(found: str, recorded: str | None, what: str, info: StoredPromptInfo) -> None:
    if recorded is not None and found != recorded:
        raise InputError(
            f"{what}: its weights (hash {found[:12]}) are not those prompt {info.key} was "
            f"ingested with (hash {recorded[:12]})"
        )


def _logit_node(graph: StoredGraph, pos: int, token: int, info: StoredPromptInfo) -> str:
    node = NodeId.logit(pos, token)
    if not any(n.id == node for n in graph.nodes):
        raise QueryError(
            f"the stored graph of prompt {info.key} has no logit for the model's answer "
            f"({node}): was it ingested from these weights?"
        )
    return node


def _scores(
    graph: StoredGraph, answer: str, runner: str, influence: dict[str, float], cfg: VerifyConfig
) -> dict[str, float]:
    """Per node, what `cfg.rank` chooses by (see RANKS). A node's support is its activation x
    the stored graph's sensitivity of the answer's logit difference to the runner-up (of the
    answer's logit alone where the runner-up has no stored logit): what removing it would take
    away."""
    if cfg.rank == "influence":
        return influence
    ids = {n.id for n in graph.nodes}
    sens = graph.sensitivity({answer: 1.0, **({runner: -1.0} if runner in ids else {})})
    support = {n.id: (n.activation or 0.0) * sens[n.id] for n in graph.nodes}
    if cfg.rank == "support":
        return support
    return {n: abs((cfg.scale - 1.0) * v) for n, v in support.items()}


def _top_features(graph: StoredGraph, score: dict[str, float], top: int) -> list[tuple[str, ...]]:
    """The `top` stored features with the largest positive score, one group each."""
    features = [n.id for n in graph.nodes if n.kind == NodeKind.FEATURE]
    ranked = sorted(features, key=lambda n: (-score.get(n, 0.0), n))
    return [(n,) for n in ranked[:top] if score.get(n, 0.0) > 0.0]


class _Checker:
    """The checks of one verify run, on one prompt's clean forward pass and stored graph."""

    def __init__(
        self,
        model: Intervener,
        graph: StoredGraph,
        scale: float,
        lumped: bool,
        answer: str,
        runner_up: str,
        top2: list[int],
    ) -> None:
        self.model, self.graph, self.scale, self.lumped = model, graph, scale, lumped
        self.answer, self.runner_up, self.top2 = answer, runner_up, top2
        self._nodes = {n.id: n for n in graph.nodes}
        self._frozen_seen: dict[str, tuple[int, float]] = {}
        self.decode: Callable[[int], str] = str  # a token id's text (the tokenizer's)

    def __call__(self, group: tuple[str, ...], influence: float) -> Check:
        nodes = self._nodes
        sites = [_site(nodes[n]) for n in group]
        frozen = [self._frozen(n) for n in group]
        pos, (answer, runner) = len(self.model.tokens[0]) - 1, self.top2
        real = self.model.real(sites, self.scale, Readout((), ((pos, answer), (pos, runner))))
        change = {n: (self.scale - 1.0) * (nodes[n].activation or 0.0) for n in group}
        graph = self.graph.propagated(change)
        on_answer, on_runner = graph[self.answer], graph.get(self.runner_up, 0.0)
        return Check(
            group,
            influence,
            sum(n for n, _ in frozen),
            max(e for _, e in frozen),
            on_answer,
            float(real.logits[0]),
            on_answer - on_runner,
            float(real.logits[0] - real.logits[1]),
            real.top_token != answer,
            self.decode(real.top_token),
        )

    def _frozen(self, node: str) -> tuple[int, float]:
        if node not in self._frozen_seen:  # a feature in several groups is checked once
            self._frozen_seen[node] = self._frozen_alone(node)
        return self._frozen_seen[node]

    def _frozen_alone(self, node: str) -> tuple[int, float]:
        """One feature alone in the frozen model: how many targets of its stored edges, and the
        largest deviation from an edge, relative to its target's stored |input|. (Alone: with
        several features scaled at once, a target also moves by the edges pruning dropped.)"""
        targets, predicted = self._edge_targets({node}, self._nodes)
        site = _site(self._nodes[node])
        frozen = self.model.frozen([site], self.scale, _readout(targets, self._nodes), self.lumped)
        observed = torch.cat([frozen.features, frozen.logits]).tolist()
        size = self._input_sizes
        gaps = (abs(o - p) / size[t] for o, p, t in zip(observed, predicted, targets, strict=True))
        return len(targets), max(gaps, default=0.0)

    @cached_property
    def _input_sizes(self) -> dict[str, float]:
        """Each node's stored |input| (the sum of its stored in-edges' |weights|): the scale a
        deviation is measured against (float32 rounding is relative to it)."""
        sizes: dict[str, float] = {}
        for e in self.graph.edges:
            sizes[e.target] = sizes.get(e.target, 0.0) + abs(e.weight)
        return sizes

    def _edge_targets(
        self, group: set[str], nodes: dict[str, StoredNode]
    ) -> tuple[list[str], list[float]]:
        """The feature and logit targets of the group's stored edges (features first, as the
        readout orders them) and each one's expected change: the edges' sum x (scale - 1)."""
        sums: dict[str, float] = {}
        for e in self.graph.edges:
            if e.source in group and nodes[e.target].kind in (NodeKind.FEATURE, NodeKind.LOGIT):
                sums[e.target] = sums.get(e.target, 0.0) + e.weight
        order = sorted(sums, key=lambda t: (nodes[t].kind != NodeKind.FEATURE, t))
        return order, [(self.scale - 1.0) * sums[t] for t in order]


def _site(node: StoredNode) -> Site:
    assert node.layer is not None
    assert node.pos is not None
    assert node.feature is not None
    return Site(node.layer, node.pos, node.feature)


def _readout(targets: list[str], nodes: dict[str, StoredNode]) -> Readout:
    features = tuple(_site(nodes[t]) for t in targets if nodes[t].kind == NodeKind.FEATURE)
    logits = tuple(
        (int(nodes[t].pos or 0), int(nodes[t].token_id or 0))
        for t in targets
        if nodes[t].kind == NodeKind.LOGIT
    )
    return Readout(features, logits)
