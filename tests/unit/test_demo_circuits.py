"""The shipped demo model's planted circuits show up in its attribution graphs (engine only, no
database), and the real GPT-2 small with the published transcoders conserves input where a
local copy of both is named by environment variables."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from circuitstore.demo import WEIGHTS
from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine, AttributionGraph
from circuitstore.ingest.attribution.graph import Code
from circuitstore.ingest.model import LoadedModel, load_model, run_forward, tokenize
from circuitstore.ingest.transcoder import TranscoderSet, load_transcoders
from demo.make import corpus as dc
from demo.make.train import encode

FULL = AttributionConfig(prune=None, logit_top_k=5)
ALL_LOGITS = AttributionConfig(prune=None, logit_top_k=10_000)  # capped at the vocabulary
N_PROMPTS = 12  # per task


@pytest.fixture(scope="module")
def demo() -> tuple[LoadedModel, TranscoderSet, AttributionEngine]:
    model = load_model(WEIGHTS / "model", dtype=torch.float64)
    tcs = load_transcoders(WEIGHTS / "transcoders", dtype=torch.float64)
    return model, tcs, AttributionEngine(model, tcs)


@pytest.fixture(scope="module")
def held_out() -> list[dc.Example]:
    return dc.eval_split(0)


def _solved(
    model: LoadedModel, examples: list[dc.Example], task: str, n: int
) -> list[tuple[dc.Example, str]]:
    """The first n held-out prompts of a task that the model's top next token solves (for
    years: any later year), with that token."""
    out = []
    for ex in (e for e in examples if e.task == task):
        logits = run_forward(model, tokenize(model, ex.text)).logits[-1]
        top = model.bridge.tokenizer.decode([int(logits.argmax())])
        if dc.answer_is_correct(ex, top):
            out.append((ex, top))
        if len(out) == n:
            break
    return out


def _answer_row(graph: AttributionGraph, answer: str) -> int:
    nodes = graph.nodes
    for row in (nodes.kind == Code.LOGIT).nonzero(as_tuple=True)[0].tolist():
        if graph.logit_tokens[int(nodes.index[row])] == answer:
            return row
    raise AssertionError(f"no logit node for {answer!r}")


def strongest_token_path(graph: AttributionGraph, seeds: dict[int, float]) -> list[int]:
    """The strongest path from an input token into a target, in the target's own units.

    The target is a combination of logits (``seeds``: row -> coefficient; e.g. the answer's
    logit minus another one). Its input splits exactly into paths: a path's contribution is its
    first edge's weight times, at every feature it passes, the next edge's weight over that
    feature's pre-activation (the share of the feature that the path explains). The sum over all
    paths from all leaves is the target's value. Returns the rows of the path with the largest
    positive contribution among paths that start at a token embedding, from the token on."""
    nodes, edges = graph.nodes, graph.edges
    n = len(nodes)
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    combo = torch.zeros(n, dtype=torch.float64)
    final = torch.zeros(n, dtype=torch.bool)
    for row, coef in seeds.items():
        into = edges.target == row
        combo.index_add_(0, edges.source[into], coef * edges.weight[into].double())
        final[edges.source[into]] = True
    # best[0][s]: the largest path value from s to the target; best[1][s]: the most negative.
    best = [torch.where(final, combo, -inf), torch.where(final, combo, inf)]
    nxt = [torch.full((n,), -1, dtype=torch.long), torch.full((n,), -1, dtype=torch.long)]
    branch = [torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)]
    feats = nodes.kind == Code.FEATURE
    for layer in sorted({int(x) for x in nodes.layer[feats]}, reverse=True):
        sel = (feats & (nodes.layer == layer))[edges.target]
        src, tgt = edges.source[sel], edges.target[sel]
        frac = edges.weight[sel].double() / nodes.value[tgt].double()
        for side, reduce in ((0, "amax"), (1, "amin")):
            for b in (0, 1):
                cand = frac * best[b][tgt]
                ok = torch.isfinite(cand)
                s_ok, t_ok, c_ok = src[ok], tgt[ok], cand[ok]
                new = best[side].scatter_reduce(0, s_ok, c_ok, reduce=reduce, include_self=True)
                hit = (c_ok == new[s_ok]) & (new[s_ok] != best[side][s_ok])
                best[side] = new
                nxt[side][s_ok[hit]] = t_ok[hit]  # any edge reaching the optimum will do
                branch[side][s_ok[hit]] = b
    emb = (nodes.kind == Code.EMBEDDING).nonzero(as_tuple=True)[0]
    row, side = int(emb[best[0][emb].argmax()]), 0
    path = [row]
    while int(nxt[side][row]) >= 0:
        row, side = int(nxt[side][row]), int(branch[side][row])
        path.append(row)
    return [*path, *seeds]


def token_contributions(graph: AttributionGraph, seeds: dict[int, float]) -> torch.Tensor:
    """Per position, the sum of all paths from that token's embedding into the target (same
    decomposition as above; errors and constants take the rest)."""
    nodes, edges = graph.nodes, graph.edges
    contrib = torch.zeros(len(nodes), dtype=torch.float64)
    for row, coef in seeds.items():
        into = edges.target == row
        contrib.index_add_(0, edges.source[into], coef * edges.weight[into].double())
    feats = nodes.kind == Code.FEATURE
    for layer in sorted({int(x) for x in nodes.layer[feats]}, reverse=True):
        sel = (feats & (nodes.layer == layer))[edges.target]
        src, tgt = edges.source[sel], edges.target[sel]
        frac = edges.weight[sel].double() / nodes.value[tgt].double()
        contrib.index_add_(0, src, frac * contrib[tgt])
    emb = nodes.kind == Code.EMBEDDING
    out = torch.zeros(len(graph.tokens), dtype=torch.float64)
    return out.index_add_(0, nodes.pos[emb], contrib[emb])


def _positions(graph: AttributionGraph, path: list[int]) -> set[int]:
    return {int(graph.nodes.pos[r]) for r in path}


def _token_position(model: LoadedModel, text: str, token: str, occurrence: int = 0) -> int:
    ids = tokenize(model, text).tolist()
    strs = [model.bridge.tokenizer.decode([i]) for i in ids]
    hits = [i for i, s in enumerate(strs) if s == token]
    return hits[occurrence]


def test_shipped_model_solves_the_planted_tasks(demo, held_out):
    model = demo[0]
    for task in ("ioi", "years", "induction"):
        assert len(_solved(model, held_out[:], task, N_PROMPTS)) == N_PROMPTS, task


def _repeated_name(ex: dc.Example) -> str:
    words = ex.text.replace(",", " ").replace(".", " ").split()
    return " " + [w for w in words if w in dc.NAMES][2]


def test_ioi_strongest_path_runs_through_the_non_repeated_name(demo, held_out):
    """IOI's usual target: the answer's logit minus the repeated name's."""
    model, _, engine = demo
    through_io, through_name, first = 0, 0, 0
    solved = _solved(model, held_out, "ioi", N_PROMPTS)
    for ex, top in solved:
        graph = engine.attribute(ex.text, ALL_LOGITS)
        seeds = {_answer_row(graph, top): 1.0, _answer_row(graph, _repeated_name(ex)): -1.0}
        positions = _positions(graph, strongest_token_path(graph, seeds))
        io = _token_position(model, ex.text, ex.answer)
        s2 = _token_position(model, ex.text, _repeated_name(ex), occurrence=1)
        through_io += io in positions
        through_name += bool({io, s2} & positions)
        first += int(token_contributions(graph, seeds).argmax()) == io
    # Measured on the shipped model (12 prompts): the non-repeated name is the largest token
    # contribution in 9, the strongest path starts there in 6, and at the repeated name's
    # second occurrence (the subject-inhibition half of the circuit) in 4 more.
    assert first >= 2 / 3 * len(solved)
    assert through_io >= 1 / 2 * len(solved)
    assert through_name >= 3 / 4 * len(solved)


def test_years_strongest_path_runs_through_the_start_year(demo, held_out):
    model, _, engine = demo
    solved = _solved(model, held_out, "years", 2 * N_PROMPTS)
    through, first = 0, 0  # misses are early start years (1710 -> 94), which barely constrain
    for ex, top in solved:
        graph = engine.attribute(ex.text, FULL)
        seeds = {_answer_row(graph, top): 1.0}
        path = strongest_token_path(graph, seeds)
        start = _token_position(model, ex.text, ex.source)
        through += start in _positions(graph, path)
        contrib = token_contributions(graph, seeds)
        first += int(contrib.argmax()) == start
    assert through >= 0.75 * len(solved)
    assert first >= 0.75 * len(solved)


def test_conservation_on_the_demo_model(demo, held_out):
    _, _, engine = demo
    graph = engine.attribute(held_out[0].text, FULL)
    incoming = torch.zeros(len(graph.nodes), dtype=torch.float64).index_add_(
        0, graph.edges.target, graph.edges.weight.double()
    )
    targets = (graph.nodes.kind == Code.FEATURE) | (graph.nodes.kind == Code.LOGIT)
    assert torch.allclose(incoming[targets], graph.nodes.value[targets], rtol=1e-9, atol=1e-9)


def test_a_layer0_feature_fires_on_names(demo, held_out):
    """Some layer-0 feature responds to the planted names: it fires on a good share of name
    tokens, and its firings are names many times more often than tokens are names. (The shipped
    transcoders have no feature per name: the best single-name features are polysemantic.)"""
    model, tcs, _ = demo
    tok = model.bridge.tokenizer
    seqs = encode(tok, [ex.text for ex in held_out])
    ids = torch.cat([torch.tensor(s) for s in seqs])
    fires = torch.cat(
        [tcs[0].encode(run_forward(model, torch.tensor(s)).ln2_normalized[0]) > 0 for s in seqs]
    ).double()
    name_ids = torch.tensor([tok.convert_tokens_to_ids("Ġ" + n) for n in dc.NAMES])
    is_name = torch.isin(ids, name_ids)
    base_rate = float(is_name.double().mean())
    recall = fires[is_name].mean(0)
    precision = fires[is_name].sum(0) / fires.sum(0).clamp_min(1)
    good = (recall >= 0.35) & (precision >= 5 * base_rate)
    assert bool(good.any()), (base_rate, float(recall.max()), float(precision.max()))
    # ... and on the IOI prompts it fires at the non-repeated name's position.
    feature = int(torch.where(good, recall * precision, torch.zeros_like(recall)).argmax())
    hits = 0
    ioi = [ex for ex in held_out if ex.task == "ioi"][:50]
    for ex in ioi:
        cache = run_forward(model, tokenize(model, ex.text))
        io = _token_position(model, ex.text, ex.answer)
        hits += bool(tcs[0].encode(cache.ln2_normalized[0][io])[feature] > 0)
    assert hits >= 0.3 * len(ioi)


# ---------------------------------------------------------------- real GPT-2 small, when present

GPT2_DIR = os.environ.get("CIRCUITSTORE_GPT2_DIR")
GPT2_TC_DIR = os.environ.get("CIRCUITSTORE_GPT2_TRANSCODERS_DIR")


@pytest.mark.slow
@pytest.mark.skipif(
    not (GPT2_DIR and GPT2_TC_DIR and Path(GPT2_DIR).is_dir() and Path(GPT2_TC_DIR).is_dir()),
    reason="set CIRCUITSTORE_GPT2_DIR (a save_pretrained GPT-2 small folder with its tokenizer) "
    "and CIRCUITSTORE_GPT2_TRANSCODERS_DIR (the published transcoder files) to run",
)
def test_gpt2_small_with_published_transcoders_conserves_input():
    model = load_model(GPT2_DIR)
    tcs = load_transcoders(GPT2_TC_DIR)
    engine = AttributionEngine(model, tcs)
    config = AttributionConfig(prune=None, logit_top_k=3)
    state = engine.prepare("The war lasted from 1732 to 17", config)
    assert state.n_features > 0
    checked = Counter()
    for chunk in engine.chunks(state, config):
        value = state.nodes.value[chunk.targets].double()
        got = chunk.row_sums().double()
        scale = chunk.row_abs_sums().double()
        assert torch.all((got - value).abs() <= 1e-3 * scale + 1e-3), "input not conserved"
        checked["targets"] += int(chunk.targets.shape[0])
    n_targets = int(((state.nodes.kind == Code.FEATURE) | (state.nodes.kind == Code.LOGIT)).sum())
    assert checked["targets"] == n_targets
