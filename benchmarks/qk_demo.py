"""The demo model's circuits traced with QK tracing (`ingest.qk`): which heads the indirect-object
and induction prompts use, and what makes their attention scores.

    python benchmarks/qk_demo.py [--prompts 20] [--write-docs]

No store or server: the shipped demo model and transcoders, the shipped corpus.

1. **Heads, from the attention patterns** over every induction and indirect-object prompt of the
   corpus: at the last position, the attention to the answer's first occurrence (induction; the
   token after the current token's earlier occurrence) and to the indirect object (IO) against
   the subject's first mention (S1) and its repeat (S2); at every position, the attention to the
   previous token. The traced induction head is the layer >= 1 head with the most attention to
   the answer's first occurrence (a layer-0 head sees only token and position, so it cannot be
   one); the traced indirect-object head is the layer >= 1 head with the most attention on the
   two names.
2. **Traces** of those heads on the first `--prompts` prompts of each task, in exact and lumped
   mode, every contributor kept: each key-side contributor's marginal (its key part against the
   whole query) grouped by role (kind, and position relative to the key), medians over prompts.
   In lumped mode a contributor at another position reaches the key through one attention layer,
   so its marginal splits exactly over that layer's heads (A[a, h, key, pos] / ln1_scale x
   (W_O[a, h] r) . (centred W_V[a, h] v), r the key's readout against the query): that split
   gives the part each earlier head carries (K-composition), checked to add up to the marginal.
   For the indirect-object head, the score at (last, IO) minus at (last, S1): the query side is
   shared, so the difference is the key-side marginals' difference, grouped by role.

`--write-docs` writes the tables to docs/performance/qk_demo.md, which docs/qk.md includes.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from results import Results  # noqa: E402

from circuitstore.demo import CORPUS, WEIGHTS  # noqa: E402
from circuitstore.ingest.attribution import AttributionEngine  # noqa: E402
from circuitstore.ingest.attribution.graph import Code  # noqa: E402
from circuitstore.ingest.attribution.layout import BiasKind  # noqa: E402
from circuitstore.ingest.attribution.state import PromptState, centre  # noqa: E402
from circuitstore.ingest.config import AttributionConfig, Mode  # noqa: E402
from circuitstore.ingest.model import load_model, run_forward, tokenize  # noqa: E402
from circuitstore.ingest.qk.decompose import RawTrace, Side, trace  # noqa: E402
from circuitstore.ingest.transcoder import load_transcoders  # noqa: E402
from circuitstore.schema.names import head_name  # noqa: E402

NAMES = frozenset(
    ("Mary", "John", "Anna", "Tom", "Paul", "Kate", "Mark", "Lucy", "James", "Emma"),
) | frozenset(("Sam", "Jane", "Peter", "Alice", "David", "Sarah", "Max", "Laura", "Ben", "Rose"))
MODES: tuple[Mode, ...] = ("exact", "lumped")
# A per-head split must add up to the marginal it splits to this (float32 products).
SPLIT_TOL = 1e-4


@dataclass(frozen=True)
class Prompt:
    """One corpus prompt, tokenized, with the positions its task names."""

    id: str
    tokens: Tensor
    text: list[str]
    last: int
    target: int  # induction: the answer's first occurrence; ioi: the indirect object
    subject: int = -1  # ioi: the subject's first mention (S1)
    repeat: int = -1  # ioi: the subject's repeat (S2)


def prompts(engine: AttributionEngine, task: str) -> list[Prompt]:
    """Every prompt of `task` in the corpus, with its positions found from its tokens."""
    tok = engine.model.bridge.tokenizer
    out = []
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        if record["task"] != task:
            continue
        ids = tokenize(engine.model, record["text"])
        text = [tok.decode([i]) for i in ids.tolist()]
        last = len(text) - 1
        if task == "induction":  # the answer follows the current token's first occurrence
            out.append(Prompt(record["id"], ids, text, last, text.index(text[last]) + 1))
            continue
        a, b, s2 = [i for i, t in enumerate(text) if t.strip() in NAMES]
        s1, io = (a, b) if text[a] == text[s2] else (b, a)
        out.append(Prompt(record["id"], ids, text, last, io, s1, s2))
    return out


# ---------------------------------------------------------------- 1. heads from the patterns


def survey(engine: AttributionEngine, groups: dict[str, list[Prompt]], out: Results) -> dict:
    """Mean attention per head over the corpus; returns the means by measure."""
    model = engine.model
    shape = (model.n_layers, model.n_heads)
    sums: dict[str, Tensor] = defaultdict(lambda: torch.zeros(shape, dtype=torch.float64))
    counts: dict[str, int] = defaultdict(int)
    uniform = 0.0

    def add(name: str, value: Tensor) -> None:
        sums[name] += value.double()
        counts[name] += 1

    for task, group in groups.items():
        for p in group:
            with torch.no_grad():
                pattern = run_forward(model, p.tokens).pattern  # (layer, head, query, key)
            at = pattern[:, :, p.last]
            for pos in range(1, p.last + 1):
                add("previous", pattern[:, :, pos, pos - 1])
            if task == "induction":
                add("induction", at[:, :, p.target])
                uniform += 1 / (p.last + 1)
            else:
                add("io", at[:, :, p.target])
                add("s1", at[:, :, p.subject])
                add("s2", at[:, :, p.repeat])
                add("io_wins", (at[:, :, p.target] > at[:, :, p.subject]).double())
                first, second = sorted((p.target, p.subject))
                add("second_wins", (at[:, :, second] > at[:, :, first]).double())
    mean = {k: sums[k] / counts[k] for k in sums}
    n_ind, n_ioi = len(groups["induction"]), len(groups["ioi"])
    out.print(
        f"Mean attention per head over the corpus's {n_ind} induction and {n_ioi} "
        "indirect-object prompts, from the last position (the query) unless said: to the "
        "answer's first occurrence (induction; uniform attention over the prompt would give "
        f"{uniform / n_ind:.3f}), to the indirect object (IO), the subject's first mention (S1) "
        "and its repeat (S2), the share of prompts with more on IO than on S1 and with more on "
        "the second-mentioned name (the one after 'and') than on the first, and the "
        "previous-token score (every position's attention to the one before it).\n"
    )
    out.table("head", "induction", "IO", "S1", "S2", "IO > S1", "second > first", "previous token")
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            measures = ("induction", "io", "s1", "s2", "io_wins", "second_wins")
            cells = [mean[k][layer, head] for k in measures]
            out.row(
                f"`{head_name(layer, head)}`",
                *(f"{float(c):.3f}" for c in cells),
                f"{float(mean['previous'][layer, head]):.3f}",
            )
    out.print()
    return mean


def ablations(engine: AttributionEngine, groups: dict[str, list[Prompt]], out: Results) -> None:
    """Each head's output zeroed in turn: the share of prompts whose top token is the answer."""
    model = engine.model
    answers = {
        task: [int(p.tokens[p.target]) for p in group] for task, group in groups.items()
    }  # induction: the answer's first occurrence; ioi: the indirect object (the answer)

    def accuracy(task: str, hooks: list) -> float:
        right = 0
        for p, answer in zip(groups[task], answers[task], strict=True):
            with torch.no_grad():
                logits = model.bridge.run_with_hooks(p.tokens[None], fwd_hooks=hooks)
            right += int(logits[0, -1].argmax()) == answer
        return right / len(groups[task])

    def zero(layer: int, head: int) -> list:
        def hook(z: Tensor, hook: object) -> Tensor:  # noqa: ARG001 (TransformerLens passes it)
            z = z.clone()
            z[:, :, head] = 0
            return z

        return [(f"blocks.{layer}.attn.hook_z", hook)]

    tasks = tuple(groups)
    out.print(
        "Accuracy (the answer is the top token) with one head's output zeroed, on the same "
        "prompts; the intact model first:\n"
    )
    out.table("zeroed", *tasks)
    out.row("none", *(f"{accuracy(t, []):.2f}" for t in tasks))
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            hooks = zero(layer, head)
            out.row(f"`{head_name(layer, head)}`", *(f"{accuracy(t, hooks):.2f}" for t in tasks))
    out.print()


def best(score: Tensor, min_layer: int = 0) -> tuple[int, int]:
    """The (layer, head) of the largest value at or above `min_layer`."""
    masked = score.clone()
    masked[:min_layer] = -math.inf
    layer, head = divmod(int(masked.argmax()), score.shape[1])
    return layer, head


# ---------------------------------------------------------------- 2. traces


@dataclass(frozen=True)
class Traced:
    """One trace, its sides, the prompt state, and each key-side contributor's marginal."""

    state: PromptState
    raw: RawTrace
    q: Side
    k: Side
    marginals: Tensor  # float64, one per key-side contributor

    @property
    def error(self) -> float:
        """|sum of every term - the model's score|."""
        return abs(self.raw.total - self.raw.score)


def run_trace(state: PromptState, layer: int, head: int, query: int, key: int) -> Traced:
    """A trace with every contributor (only the marginals are read here)."""
    with torch.no_grad():
        raw, q, k = trace(state, layer, head, query, key, 1)
    scale = math.sqrt(int(q.vectors.shape[1]))
    return Traced(state, raw, q, k, (k.vectors.double() @ q.total) / scale)


def prepare(engine: AttributionEngine, p: Prompt, mode: Mode) -> PromptState:
    with torch.no_grad(), engine.on_device():
        return engine.prepare_tokens(p.tokens, AttributionConfig(mode=mode, logit_top_k=1))


def role(t: Traced, side: Side, i: int, named: Callable[[int], str]) -> str:
    """What contributor `i` of `side` is: its kind, and its position as `named` calls it."""
    row = int(side.rows[i])
    if row < 0:
        what = "b_K" if side is t.k else "b_Q"
        return f"the head's bias {what}" if side.names[i].startswith("bias[") else "remainder"
    nodes = t.state.nodes
    kind = {
        int(Code.EMBEDDING): "embedding",
        int(Code.FEATURE): "features",
        int(Code.ERROR): "error terms",
        int(Code.BIAS): "biases",
    }[int(nodes.kind[row])]
    return f"{kind} at {named(int(nodes.pos[row]))}"


def by_role(t: Traced, named: Callable[[int], str]) -> dict[str, float]:
    """The key-side marginals summed by role."""
    return grouped(t, t.k, t.marginals, named)


def grouped(t: Traced, side: Side, values: Tensor, named: Callable[[int], str]) -> dict[str, float]:
    """`values` (one per contributor of `side`) summed by role."""
    out: dict[str, float] = defaultdict(float)
    for i, value in enumerate(values.tolist()):
        out[role(t, side, i, named)] += value
    return out


def source_vectors(state: PromptState, rows: Iterable[int]) -> dict[int, Tensor]:
    """The vectors the model adds for node-table `rows` (embeddings, features, errors, biases)."""
    wanted, found = set(rows), {}
    for slab in (*state.layer_slabs, state.embed_slab):
        for part in slab.parts():
            for i, row in enumerate(part.idx.tolist()):
                if row in wanted:
                    found[row] = part.vectors[i]
    return found


def first_reader(state: PromptState, row: int) -> int:
    """The first attention layer that reads node `row`'s vector."""
    nodes = state.nodes
    code, layer = int(nodes.kind[row]), int(nodes.layer[row])
    if code == Code.EMBEDDING:
        return 0
    if code == Code.BIAS and int(nodes.index[row]) == BiasKind.ATTN:
        return layer + 1
    return layer + 1


def head_split(t: Traced) -> dict[tuple[int, int, int], float]:
    """Lumped mode: each key-side contributor's marginal through each earlier head, keyed by
    (contributor's position, layer, head); checked to add up to the marginals of the
    contributors at other positions (which arrive through one attention layer only)."""
    state, layer, key = t.state, t.raw.layer, t.raw.key_pos
    bridge, model = state.model.bridge, state.model
    W_K = bridge.W_K[layer, t.raw.head].detach().to(model.dtype)  # (d_model, d_head)
    scale = math.sqrt(int(W_K.shape[1]))
    readout = centre(W_K @ t.q.total.to(model.dtype)) / state.cache.ln1_scale[layer, key] / scale
    rows = [int(r) for r in t.k.rows.tolist()]
    vectors = source_vectors(state, [r for r in rows if r >= 0])
    out: dict[tuple[int, int, int], float] = defaultdict(float)
    for i, row in enumerate(rows):
        pos = int(state.nodes.pos[row]) if row >= 0 else key
        if row < 0 or pos == key:
            continue
        v, total = vectors[row], 0.0
        for a in range(first_reader(state, row), layer):
            op = state.attention[a]
            o = model.weights.W_O[a] @ readout  # (head, d_head)
            vv = op.W_V_centred_heads @ v  # (head, d_head)
            parts = op.pattern_scaled[:, key, pos] * (o * vv).sum(-1)
            for h, value in enumerate(parts.tolist()):
                out[(pos, a, h)] += value
                total += value
        gap = abs(total - float(t.marginals[i]))
        assert gap <= SPLIT_TOL * max(1.0, abs(t.raw.score)), (t.k.names[i], total, gap)
    return out


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def summary_rows(out: Results, traces: list[Traced], head: str) -> None:
    for mode in MODES:
        got = [t for t in traces if t.raw.mode == mode]
        out.row(
            f"`{head}`",
            mode,
            len(got),
            f"{median(t.raw.score for t in got):.3f}",
            f"{median(t.raw.probability for t in got):.3f}",
            f"{median(t.error for t in got):.1e}",
            f"{max(t.error for t in got):.1e}",
        )


def role_table(
    out: Results, per_mode: dict[str, list[dict[str, float]]], scores: dict, side: str = "key"
) -> None:
    """Roles by median share of the score (per prompt: the role's sum / the score), both modes."""
    roles = sorted(
        {r for rows in per_mode.values() for row in rows for r in row},
        key=lambda r: -abs(median(row.get(r, 0.0) for row in per_mode["exact"])),
    )
    out.table(f"{side}-side contributor", "exact: median", "share", "lumped: median", "share")
    for r in roles:
        cells = []
        for mode in MODES:
            rows = per_mode[mode]
            cells.append(f"{median(row.get(r, 0.0) for row in rows):+.3f}")
            shares = (row.get(r, 0.0) / s for row, s in zip(rows, scores[mode], strict=True))
            cells.append(f"{median(shares):+.0%}")
        out.row(r, *cells)
    out.print()


# ---------------------------------------------------------------- induction


def induction(engine: AttributionEngine, group: list[Prompt], mean: dict, out: Results) -> None:
    layer, head = best(mean["induction"], min_layer=1)
    prev_layer, prev_head = best(mean["previous"][:layer].clone())
    name, prev_name = head_name(layer, head), head_name(prev_layer, prev_head)
    out.print(
        f"### Induction: `{name}` at (last position, the answer's first occurrence)\n\n"
        f"`{name}` is the layer >= 1 head with the most attention there "
        f"({float(mean['induction'][layer, head]):.3f}); `{prev_name}` is the strongest "
        f"previous-token head below it ({float(mean['previous'][prev_layer, prev_head]):.3f}). "
        f"The first {len(group)} induction prompts:\n"
    )
    traces: list[Traced] = []
    splits: list[dict[tuple[int, int, int], float]] = []
    for p in group:
        for mode in MODES:
            t = run_trace(prepare(engine, p, mode), layer, head, p.last, p.target)
            traces.append(t)
            if mode == "lumped":
                splits.append(head_split(t))
    out.table(
        "head", "mode", "prompts", "median score", "median probability", "median error", "max error"
    )
    summary_rows(out, traces, name)
    out.print()

    def named(pos: int, t: Traced) -> str:
        key = t.raw.key_pos
        if pos == key:
            return "the answer's first occurrence (the key)"
        if pos == key - 1:
            return "the current token's earlier occurrence (key - 1)"
        return "BOS" if pos == 0 else "other positions"

    per_mode = {
        m: [by_role(t, lambda s, t=t: named(s, t)) for t in traces if t.raw.mode == m]
        for m in MODES
    }
    scores = {m: [t.raw.score for t in traces if t.raw.mode == m] for m in MODES}
    out.print(
        "The key side by role: each role's marginals summed (score units), medians over the "
        "prompts, and the median of the role's share of the score:\n"
    )
    role_table(out, per_mode, scores)
    lumped = [t for t in traces if t.raw.mode == "lumped"]
    heads = sorted({(a, h) for s in splits for (_, a, h) in s})
    out.print(
        "Lumped mode, the key-side marginals of contributors at other positions split by the "
        "earlier head that carries them (each arrives through exactly one attention layer, so "
        "the split is exact), medians over the prompts and of the share of the score:\n"
    )
    out.table("carried by", "from key - 1", "share", "from elsewhere", "share")
    for a, h in heads:
        prev = [
            sum(
                v
                for (pos, la, lh), v in s.items()
                if (la, lh) == (a, h) and pos == t.raw.key_pos - 1
            )
            for s, t in zip(splits, lumped, strict=True)
        ]
        rest = [
            sum(
                v
                for (pos, la, lh), v in s.items()
                if (la, lh) == (a, h) and pos != t.raw.key_pos - 1
            )
            for s, t in zip(splits, lumped, strict=True)
        ]
        out.row(
            f"`{head_name(a, h)}`",
            f"{median(prev):+.3f}",
            f"{median(x / t.raw.score for x, t in zip(prev, lumped, strict=True)):+.0%}",
            f"{median(rest):+.3f}",
            f"{median(x / t.raw.score for x, t in zip(rest, lumped, strict=True)):+.0%}",
        )
    out.print()


# ---------------------------------------------------------------- indirect object


def indirect_object(
    engine: AttributionEngine, group: list[Prompt], mean: dict, out: Results
) -> None:
    layer, head = best(mean["io"] + mean["s1"], min_layer=1)
    name = head_name(layer, head)
    out.print(
        f"### Indirect object: `{name}`, the score at (last, IO) minus at (last, S1)\n\n"
        f"`{name}` is the layer >= 1 head with the most attention on the two names from the "
        f"last position (IO {float(mean['io'][layer, head]):.3f}, S1 "
        f"{float(mean['s1'][layer, head]):.3f}). The first {len(group)} indirect-object "
        "prompts, traced at both names:\n"
    )
    traces: list[Traced] = []
    diffs: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    by_query: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    gaps: dict[str, list[float]] = {m: [] for m in MODES}
    follows = dict.fromkeys(MODES, 0)  # prompts where IO is ahead exactly when it comes second
    for p in group:
        for mode in MODES:
            state = prepare(engine, p, mode)
            io = run_trace(state, layer, head, p.last, p.target)
            s1 = run_trace(state, layer, head, p.last, p.subject)
            traces += [io, s1]

            def named(pos: int, key: int) -> str:
                if pos == key:
                    return "the name (the key)"
                if pos == key - 1:
                    return "the token before the name"
                return "BOS" if pos == 0 else "other positions"

            a = by_role(io, lambda s, k=p.target: named(s, k))
            b = by_role(s1, lambda s, k=p.subject: named(s, k))
            diffs[mode].append({r: a.get(r, 0.0) - b.get(r, 0.0) for r in {*a, *b}})
            # The query side is the same in both traces: its terms against the keys' difference.
            scale = math.sqrt(int(io.q.vectors.shape[1]))
            towards = io.q.vectors.double() @ (io.k.total - s1.k.total) / scale
            by_query[mode].append(grouped(io, io.q, towards, lambda s, p=p: query_named(s, p)))
            gaps[mode].append(io.raw.score - s1.raw.score)
            follows[mode] += (io.raw.score > s1.raw.score) == (p.target > p.subject)
    out.table(
        "head", "mode", "traces", "median score", "median probability", "median error", "max error"
    )
    summary_rows(out, traces, name)
    out.print()
    for mode in MODES:
        g = gaps[mode]
        out.print(
            f"{mode}: score(IO) - score(S1) median {median(g):+.3f}, median |difference| "
            f"{median(abs(x) for x in g):.3f}, IO ahead on {sum(x > 0 for x in g)} of {len(g)}; "
            f"IO ahead exactly when it is the second-mentioned name on {follows[mode]} of {len(g)}."
        )
    out.print(
        "\nThe difference by key-side role (query side shared): each role's marginal at IO "
        "minus at S1, medians over the prompts, and the median of its share of the difference:\n"
    )
    role_table(out, diffs, gaps)
    out.print(
        "The same difference by query-side role: each query contributor's terms against the "
        "key's difference (k(IO) - k(S1)), medians and median shares:\n"
    )
    role_table(out, by_query, gaps, "query")


def query_named(pos: int, p: Prompt) -> str:
    """A query-side contributor's position in an indirect-object prompt."""
    names = {
        p.last: "the last position (the query)",
        p.repeat: "the subject's repeat (S2)",
        p.subject: "the subject's first mention (S1)",
        p.target: "the indirect object (IO)",
        0: "BOS",
    }
    return names.get(pos, "other positions")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/qk_demo.py")
    parser.add_argument("--prompts", type=int, default=20, help="prompts traced per task")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    model = load_model(WEIGHTS / "model")
    engine = AttributionEngine(model, load_transcoders(WEIGHTS / "transcoders"))
    groups = {task: prompts(engine, task) for task in ("induction", "ioi")}
    with Results("qk_demo", enabled=args.write_docs) as out:
        mean = survey(engine, groups, out)
        ablations(engine, groups, out)
        induction(engine, groups["induction"][: args.prompts], mean, out)
        indirect_object(engine, groups["ioi"][: args.prompts], mean, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
