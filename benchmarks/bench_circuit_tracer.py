"""circuitstore's graphs against circuit-tracer's, on the same tiny models and transcoder files.

    python benchmarks/bench_circuit_tracer.py [--ct-python CT_ENV/bin/python] [--write-docs]

For each family (Llama, Qwen3, Gemma-2) it saves a tiny random model (`ingest.synthetic`) and
transcoders written by our writers in each layout that family's published sets use:

- circuit-tracer's per-layer layout with JumpReLU thresholds and W_skip, reading the published
  set's input (Llama: hook_resid_mid, Qwen3: mlp.hook_in, Gemma-2: ln2.hook_normalized) and
  writing its output (mlp.hook_out; Gemma-2: hook_mlp_out, after the post-MLP norm);
- the same layout with TopK (facebook/crv-8b-instruct-transcoders' activation);
- circuit-tracer's cross-layer layout, JumpReLU, hook_resid_mid -> hook_mlp_out;
- Gemma-2 only: Gemma Scope's params.npz, read by us from its own folder layout and by
  circuit-tracer through a config.yaml that lists the files (as mntss/gemma-scope-transcoders
  does); we also read that config folder. Gemma-2's norm weights are adjusted so that
  TransformerLens's float32 conversion of its gains rounds nothing (`exact_gemma_gains`); one
  more Gemma-2 row keeps them as drawn.

Then on the same files, the same token ids (BOS first) and every vocabulary id as a logit
target it runs our engine (float64, exact mode, no pruning) and circuit-tracer's `attribute`
(float64, no pruning), the latter in its own environment through circuit_tracer_reference.py,
and compares every edge between nodes both graphs have. The conventions that differ, and how
each is handled, are in NOTES below (printed with the table).

--ct-python is the interpreter of an environment with circuit-tracer (default: the
CIRCUIT_TRACER_PYTHON environment variable); without one the benchmark says how to build it and
stops. `--write-docs` writes docs/performance/bench_circuit_tracer.md.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from results import Results  # noqa: E402  (a sibling script)

REFERENCE = REPO / "benchmarks" / "circuit_tracer_reference.py"
PROMPT = "The quick brown fox jumps over the lazy dog. When Mary and John went to the store"
D_TC = 64
N_LAYERS = 3
BUILD_ENV = (
    "python3.11 -m venv ct-env && ct-env/bin/pip install "
    "'circuit-tracer @ git+https://github.com/decoderesearch/circuit-tracer@v0.5.0' "
    "transformer-lens==2.18.0 transformers==4.57.3 'datasets>=3,<4' 'pyarrow<21'"
)
NO_ENV = (
    f"no circuit-tracer environment: build one with `{BUILD_ENV}` and pass "
    "--ct-python ct-env/bin/python (or set CIRCUIT_TRACER_PYTHON)"
)

# What each published set reads and writes (circuit-tracer's hook names, relative to blocks.L).
PLT_HOOKS = {
    "llama": ("hook_resid_mid", "mlp.hook_out"),  # mntss/transcoder-Llama-3.2-1B
    "qwen3": ("mlp.hook_in", "mlp.hook_out"),  # mwhanna/qwen3-*-transcoders
    "gemma2": ("ln2.hook_normalized", "hook_mlp_out"),  # mntss/gemma-scope-transcoders
}
CLT_HOOKS = ("hook_resid_mid", "hook_mlp_out")  # mntss/clt-*


@dataclass(frozen=True)
class Case:
    """One transcoder set: how it is drawn and which layout it is written in."""

    label: str
    layout: str  # our writer's layout name
    activation: str
    hooks: tuple[str, str]  # circuit-tracer's feature_input_hook, feature_output_hook
    skip: bool = False
    cross_layer: bool = False

    @property
    def folder(self) -> str:
        return self.label.lower().replace(",", "").replace(" + ", "-").replace(" ", "-")


def cases(family: str) -> list[Case]:
    hooks = PLT_HOOKS[family]
    out = [
        Case("per-layer, JumpReLU + W_skip", "circuit-tracer", "jumprelu", hooks, skip=True),
        Case("per-layer, TopK", "circuit-tracer", "topk", hooks),
        Case("cross-layer, JumpReLU", "clt", "jumprelu", CLT_HOOKS, cross_layer=True),
    ]
    if family == "gemma2":
        gemma_scope = ("ln2.hook_normalized", "hook_mlp_out")
        out.append(Case("Gemma Scope npz", "gemma-scope", "jumprelu", gemma_scope))
    return out


# ----------------------------------------------------------------------------- building


def exact_gemma_gains(model_dir: Path) -> None:
    """Gemma's norms multiply by 1 + weight, and TransformerLens 2.18 adds the 1 in float32
    (`pretrained/weight_conversions/gemma.py`), which rounds the gains of circuit-tracer's
    float64 model by up to 6e-8. Weights with 1 + weight exact in float32 make that
    rounding a no-op, so the comparison measures the attribution, not the conversion."""
    from safetensors.torch import load_file, save_file

    path = model_dir / "model.safetensors"
    weights = load_file(path)
    for name, w in weights.items():
        if name.endswith("norm.weight"):
            weights[name] = ((1.0 + w.double()).float().double() - 1.0).to(w.dtype)
            assert bool(((1.0 + weights[name]) == (1.0 + weights[name].double())).all())
    save_file(weights, path, metadata={"format": "pt"})


def token_ids(model: Any, prompt: str) -> list[int]:
    """BOS, then the prompt without special tokens: circuit-tracer zeroes position 0, so it must
    hold a special token (for Qwen3 too, which prepends none of its own)."""
    tok = model.bridge.tokenizer
    return [int(tok.bos_token_id), *tok(prompt, add_special_tokens=False)["input_ids"]]


def input_rms(model: Any, tokens: Any, hook: str) -> list[float]:
    """Per layer, the rms of what a transcoder reading `hook` sees (positions after BOS)."""
    from circuitstore.ingest.model import run_forward

    cache = run_forward(model, tokens)
    w = model.weights
    out = []
    for layer in range(model.n_layers):
        if hook == "hook_resid_mid":
            x = cache.resid_mid[layer]
        elif hook == "mlp.hook_in":
            x = cache.ln2_normalized[layer] * w.mlp_in_gain[layer] + w.mlp_in_bias[layer]
        else:
            x = cache.ln2_normalized[layer]
        out.append(float(x[1:].pow(2).mean().sqrt()))
    return out


def draw(case: Case, model: Any, tokens: Any, seed: int) -> Any:
    """A random set for `case`, its encoders scaled to the input's rms on this prompt, so that
    about a tenth of the features fire whatever the hook (the raw residual stream of a tiny
    random model is far from unit scale)."""
    import torch

    from circuitstore.ingest.synthetic import random_transcoders

    tcs = random_transcoders(
        model.n_layers,
        model.d_model,
        D_TC,
        seed=seed,
        activation=case.activation,
        skip=case.skip,
        cross_layer=case.cross_layer,
        input_hook=case.hooks[0],
    )
    scaled = []
    for tc, rms in zip(tcs.transcoders, input_rms(model, tokens, case.hooks[0]), strict=True):
        scaled.append(
            dataclasses.replace(
                tc,
                W_enc=tc.W_enc / rms,
                b_dec=tc.b_dec * rms,
                W_skip=None if tc.W_skip is None else tc.W_skip / rms,
                cfg={**tc.cfg, "feature_output_hook": case.hooks[1]},
            ).to(torch.float32)
        )
    return dataclasses.replace(tcs, transcoders=tuple(scaled))


@dataclass(frozen=True)
class Reading:
    """One way we read a written set (Gemma Scope's files are read two ways)."""

    label: str
    folder: Path
    width: str | None = None  # Gemma Scope's width option


def write_set(case: Case, tcs: Any, root: Path) -> tuple[list[Reading], Path]:
    """Write the set under `root`: how we read it, and the folder circuit-tracer reads."""
    from circuitstore.ingest.synthetic import save_transcoders

    folder = root / case.folder
    if case.layout != "gemma-scope":
        save_transcoders(tcs, folder, layout=case.layout)
        return [Reading(case.label, folder)], folder
    width = str(D_TC)
    paths = save_transcoders(tcs, folder, layout="gemma-scope", width=width, l0=6)
    listed = root / f"{case.folder}-config"
    listed.mkdir(parents=True, exist_ok=True)
    config = {  # as mntss/gemma-scope-transcoders lists Google's files
        "model_name": tcs.model_name,
        "model_kind": "transcoder_set",
        "feature_input_hook": case.hooks[0],
        "feature_output_hook": case.hooks[1],
        "transcoders": [f"../{folder.name}/{p.relative_to(folder).as_posix()}" for p in paths],
    }
    import yaml

    (listed / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    readings = [
        Reading(f"{case.label} (its own layout)", folder, width),
        Reading(f"{case.label} (listed in a circuit-tracer config.yaml)", listed),
    ]
    return readings, listed


# ----------------------------------------------------------------------------- the two graphs


def demeaned(model: Any) -> Any:
    """The model with W_U's mean over the vocabulary removed from every row: circuit-tracer's
    logit targets are the logits minus their mean (targets.py). W_U enters only the logit rows'
    vectors, so every other edge is the plain model's."""
    w = model.weights
    W_U = w.W_U - w.W_U.mean(dim=1, keepdim=True)
    return dataclasses.replace(model, weights=dataclasses.replace(w, W_U=W_U))


@contextlib.contextmanager
def float64_attention(families: list[str]) -> Iterator[None]:
    """For a diagnostic only: the two steps of a float64 forward pass that our dependencies run
    in float32, here in float64 (transformers' rotary embeddings compute their angles in float32
    whatever the model's dtype; TransformerLens's bridge takes the attention softmax in
    float32). circuit-tracer's TransformerLens 2.x model does both in float64."""
    import importlib

    import torch
    from transformer_lens.model_bridge.generalized_components.attention import AttentionBridge

    def rotary_forward(self: Any, x: Any, position_ids: Any) -> tuple[Any, Any]:
        params = self.config.rope_parameters
        assert params.get("rope_type", "default") == "default", params
        dim = 2 * int(self.inv_freq.shape[0])
        exponent = torch.arange(0, dim, 2, dtype=torch.float64, device=x.device) / dim
        angles = position_ids[..., None].double() * (1.0 / params["rope_theta"] ** exponent)
        emb = torch.cat((angles, angles), dim=-1)
        scaling = self.attention_scaling
        return (emb.cos() * scaling).to(x.dtype), (emb.sin() * scaling).to(x.dtype)

    masked_softmax = AttentionBridge._masked_softmax

    def softmax(self: Any, scores: Any, dtype: Any = None) -> Any:
        return masked_softmax(self, scores, None if scores.dtype == torch.float64 else dtype)

    rotary = []
    for family in families:
        module = importlib.import_module(f"transformers.models.{family}.modeling_{family}")
        rotary += [getattr(module, n) for n in dir(module) if n.endswith("RotaryEmbedding")]
    saved = [(cls, cls.forward) for cls in rotary]
    try:
        for cls in rotary:
            cls.forward = rotary_forward
        AttentionBridge._masked_softmax = softmax  # type: ignore[method-assign]
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward
        AttentionBridge._masked_softmax = masked_softmax  # type: ignore[method-assign]


def our_graph(model: Any, reading: Reading, tokens: Any) -> tuple[Any, float]:
    """Our graph of the tokens: float64, exact, unpruned, every vocabulary id a logit target."""
    import torch

    from circuitstore.ingest.attribution import AttributionConfig, AttributionEngine
    from circuitstore.ingest.transcoder import load_transcoders

    tcs = load_transcoders(reading.folder, dtype=torch.float64, width=reading.width)
    engine = AttributionEngine(demeaned(model), tcs)
    config = AttributionConfig(prune=None, mode="exact", logit_top_k=model.d_vocab)
    began = time.perf_counter()
    with torch.no_grad():
        graph = engine.graph(engine.prepare_tokens(tokens, config), config)
    return graph, time.perf_counter() - began


def ct_graph(
    ct_python: str, model_dir: Path, folder: Path, ids: list[int], out: Path
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """circuit-tracer's graph of the same files and tokens, from its own environment."""
    cmd = [
        ct_python, str(REFERENCE), "--model", str(model_dir), "--transcoders", str(folder),
        "--tokens", ",".join(map(str, ids)), "--out", str(out), "--dtype", "float64",
        "--logits", "all",
    ]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"circuit-tracer failed on {folder}:\n{done.stderr[-3000:]}")
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    with np.load(out) as npz:
        return {k: npz[k] for k in npz.files}, summary


# ----------------------------------------------------------------------------- comparison

CT_FEATURE, CT_ERROR, CT_TOKEN, CT_LOGIT = range(4)
Key = tuple[Any, ...]


def our_keys(graph: Any) -> list[Key | None]:
    """Each of our rows' identity in circuit-tracer's terms (None: no counterpart)."""
    from circuitstore.ingest.attribution.graph import Code

    n = graph.nodes
    kind, layer, pos, index = (t.tolist() for t in (n.kind, n.layer, n.pos, n.index))
    keys: list[Key | None] = []
    for k, lay, p, i in zip(kind, layer, pos, index, strict=True):
        if k == Code.FEATURE:
            keys.append(("feature", lay, p, i))
        elif k == Code.ERROR:
            keys.append(("error", lay, p))
        elif k == Code.EMBEDDING:
            keys.append(("token", p))
        elif k == Code.LOGIT:
            keys.append(("logit", i))
        else:  # bias nodes: circuit-tracer leaves these constants unattributed
            keys.append(None)
    return keys


def ct_keys(ct: dict[str, np.ndarray]) -> list[Key | None]:
    """circuit-tracer's rows' identities (None: its all-zero error nodes at position 0)."""
    columns = (ct[f"node_{c}"].tolist() for c in ("kind", "layer", "pos", "index"))
    keys: list[Key | None] = []
    for k, lay, p, i in zip(*columns, strict=True):
        if k == CT_FEATURE:
            keys.append(("feature", lay, p, i))
        elif k == CT_ERROR:
            keys.append(None if p == 0 else ("error", lay, p))
        elif k == CT_TOKEN:
            keys.append(("token", p))
        else:
            keys.append(("logit", i))
    return keys


@dataclass(frozen=True)
class Agreement:
    """One comparison's figures; rel_* are max |ours - theirs| / max |edge| over a group."""

    features: int
    features_at_0: int
    ct_features: int
    max_activation_diff: float
    compared: int
    rel_all: float
    rel_ff: float
    rel_logits: float
    ours_ff: int
    ours_ff_at_0: int  # of ours_ff, those with an end at position 0
    shared_ff: int
    ct_ff: int


def dense_edges(graph: Any) -> np.ndarray:
    """Our edges as a (target, source) matrix over our rows."""
    n = len(graph.nodes)
    dense = np.zeros((n, n))
    e = graph.edges
    np.add.at(dense, (e.target.numpy(), e.source.numpy()), e.weight.numpy())
    return dense


def compare(graph: Any, ct: dict[str, np.ndarray]) -> Agreement:
    """Match the nodes, then compare every (target, source) pair where either graph holds a
    non-zero edge."""
    mine, theirs = our_keys(graph), ct_keys(ct)
    where = {key: row for row, key in enumerate(theirs) if key is not None}
    rows = np.array([r for r, key in enumerate(mine) if key in where])
    ct_rows = np.array([where[mine[r]] for r in rows])
    kind = np.array([mine[r][0] for r in rows])  # type: ignore[index]
    dense = dense_edges(graph)
    ours = dense[np.ix_(rows, rows)]
    adj = ct["adjacency"][np.ix_(ct_rows, ct_rows)]
    held = (ours != 0) | (adj != 0)
    diff = np.abs(ours - adj)
    f = kind == "feature"
    ff = f[:, None] & f[None, :]
    into_logits = np.broadcast_to((kind == "logit")[:, None], held.shape)

    def rel(mask: np.ndarray) -> float:
        m = held & mask
        return float(diff[m].max() / np.abs(ours[m]).max()) if m.any() else float("nan")

    our_f = [r for r, key in enumerate(mine) if key is not None and key[0] == "feature"]
    our_f_pos = graph.nodes.pos.numpy()[our_f]
    our_ff = dense[np.ix_(our_f, our_f)] != 0
    touches_0 = (our_f_pos[:, None] == 0) | (our_f_pos[None, :] == 0)
    ct_f = ct["node_kind"] == CT_FEATURE
    ours_act = graph.nodes.activation.numpy()[rows[f]]
    return Agreement(
        features=len(our_f),
        features_at_0=int((our_f_pos == 0).sum()),
        ct_features=int(ct_f.sum()),
        max_activation_diff=float(np.abs(ours_act - ct["activation_values"][ct_rows[f]]).max()),
        compared=int(held.sum()),
        rel_all=rel(np.ones_like(held)),
        rel_ff=rel(ff),
        rel_logits=rel(into_logits),
        ours_ff=int(our_ff.sum()),
        ours_ff_at_0=int((our_ff & touches_0).sum()),
        shared_ff=int(((ours != 0) & (adj != 0) & ff).sum()),
        ct_ff=int((ct["adjacency"][np.ix_(ct_f, ct_f)] != 0).sum()),
    )


# ----------------------------------------------------------------------------- report


def setup_text(prompt_tokens: int) -> str:
    return (
        f"Tiny random models ({N_LAYERS} layers, d_model 32, 4 query and 2 key-value heads, "
        f"vocabulary 320, `ingest.synthetic.save_model`) and random transcoders ({D_TC} "
        "features per layer, encoders scaled to the input's size so that about a tenth fire; "
        "TopK keeps 6), written by circuitstore's writers in float32. One prompt of "
        f"{prompt_tokens} tokens with BOS. Both graphs in float64, exact (every path through "
        "attention), unpruned, every vocabulary id a logit target. *Edges compared*: (target, "
        "source) pairs of nodes both graphs have where either holds a non-zero edge. *Max diff "
        "/ max edge*: the largest |ours − circuit-tracer's| over the largest |edge| of the same "
        "group. *With float64 attention*: our graph again, with the two steps of the forward "
        "pass that our dependencies run in float32 (transformers' rotary angles, "
        "TransformerLens's attention softmax) run in float64, as circuit-tracer's "
        "TransformerLens 2 model runs them."
    )


ENV_TEXT = (
    "**The reference environment.** circuit-tracer runs in its own virtual environment "
    "(Python 3.11): upstream decoderesearch/circuit-tracer at tag v0.5.0 (commit 4bb8c0e; its "
    "pyproject still says 0.4.1; the `circuit-tracer 0.5.0` wheel on PyPI is a third-party "
    "build without TopK and is not used), TransformerLens 2.18.0, transformers 4.57.3 "
    "(circuit-tracer pins <= 4.57.3), numpy 1.26, torch 2.15 on the CPU. Built with "
    f"`{BUILD_ENV}`; "
    "`benchmarks/circuit_tracer_reference.py` then runs circuit-tracer's own "
    "`ReplacementModel.from_pretrained_and_transcoders` and `attribute` on a local folder "
    "(TransformerLens 2 only knows official model names, so the script maps a local "
    "config.json to TransformerLens's config the way TransformerLens maps the official "
    "Llama, Qwen3 and Gemma-2 checkpoints) and saves the adjacency matrix with each node's "
    "identity. This benchmark calls it with `--ct-python ct-env/bin/python` (or "
    "CIRCUIT_TRACER_PYTHON)."
)

NOTES = (
    "What differs between the two graphs, and how the comparison handles it:",
    "",
    "- **Logit nodes.** circuit-tracer's logit target is the logit minus its mean over the "
    "vocabulary, before any soft-cap, without b_U (`attribution/targets.py`); ours is the "
    "logit before the soft-cap, b_U a bias node. The logit edges are compared against our "
    "engine run with W_U's mean over the vocabulary taken out of each of its rows "
    "(`dataclasses.replace` of the loaded model's weights). W_U enters only the logit rows, "
    "so every other edge is the plain model's.",
    "- **Position 0.** circuit-tracer zeroes the features and the error at position 0 (the "
    "special token's MLP output is a constant there), so our position-0 features and errors "
    "have no counterpart, nor do circuit-tracer's all-zero position-0 error nodes. Its "
    "position-0 token node is compared. Every one of our feature→feature edges that "
    "circuit-tracer lacks has an end at position 0.",
    "- **Bias nodes.** circuit-tracer has none (the transcoders' output and encoder biases, "
    "the attention biases and b_U are unattributed constants there): our bias nodes and their "
    "edges are left out, and so are row sums, which differ by those constants.",
    "- **Error nodes** are compared as they are: in both, a layer's error is the MLP's real "
    "output minus the transcoder's reconstruction with its output bias and skip connection "
    "(and, for a cross-layer set, the lower layers' decoders into that layer).",
    "- **Tokens.** Both see the same ids, BOS (id 0) first. circuit-tracer's own "
    "tokenisation would skip a special token with id 0 (`next(filter(None, ...))`), so the "
    "ids are passed to it.",
    "- **Precision.** As shipped, our float64 forward pass computes the rotary angles "
    "(transformers' rotary embedding casts to float32) and the attention softmax "
    "(TransformerLens's bridge) in float32, so the frozen attention patterns carry float32 "
    "rounding (6e-8 at most on these models), and with them every edge that crosses "
    "attention: 1e-8 to 2e-7 of the largest edge above. With those two steps in float64 the "
    "graphs agree to float64 rounding.",
    "- **Gemma-2's norm gains.** Gemma's RMSNorms multiply by 1 + weight, and TransformerLens "
    "2.18 adds the 1 in float32 when it converts the weights "
    "(`pretrained/weight_conversions/gemma.py`), so circuit-tracer's float64 Gemma-2 holds "
    "gains rounded to float32. The Gemma-2 models above are saved with weights whose 1 + "
    "weight is exact in float32, which makes that rounding a no-op; the last row keeps the "
    "weights as drawn, and then even with float64 attention the graphs differ by about 1e-7 "
    "of the largest edge, which is that rounding on circuit-tracer's side.",
)


def report(out: Results, rows: list[tuple[str, str, Agreement, float]], n_tokens: int) -> None:
    out.print(setup_text(n_tokens))
    out.print()
    out.table(
        "family", "transcoders", "features: ours (at pos 0); circuit-tracer's",
        "edges compared", "max diff / max edge", "feature→feature", "→ logits",
        "with float64 attention", "our f→f edges it has",
        "its f→f edges we have",
    )  # fmt: skip
    for family, label, a, exact in rows:
        out.row(
            family, label, f"{a.features} ({a.features_at_0}); {a.ct_features}",
            f"{a.compared:,}", f"{a.rel_all:.1e}", f"{a.rel_ff:.1e}", f"{a.rel_logits:.1e}",
            f"{exact:.1e}", _ours_in_theirs(a), f"{a.shared_ff:,} / {a.ct_ff:,}",
        )  # fmt: skip
    out.print()
    for line in NOTES:
        out.print(line)
    out.print()
    out.print(ENV_TEXT)


def _ours_in_theirs(a: Agreement) -> str:
    """How many of our feature-to-feature edges circuit-tracer has, and where the rest sit."""
    cell, missing = f"{a.shared_ff:,} / {a.ours_ff:,}", a.ours_ff - a.shared_ff
    if missing == 0:
        return cell
    if missing == a.ours_ff_at_0:
        return f"{cell} (the other {missing:,} touch pos 0)"
    return f"{cell} ({missing:,} missing, {a.ours_ff_at_0:,} touching pos 0)"


def run_family(
    family: str, seed: int, root: Path, args: argparse.Namespace, *, as_drawn: bool = False
) -> tuple[list[tuple[str, str, Agreement, float]], int]:
    """The cases of one family (`as_drawn`: Gemma-2's norm weights as drawn, first case only):
    their rows of the table, and the prompt's length."""
    import torch

    from circuitstore.ingest.model import load_model
    from circuitstore.ingest.synthetic import ModelSpec, save_model

    spec = ModelSpec(family=family, n_layers=N_LAYERS, seed=seed)
    name = f"{family} (norm weights as drawn)" if as_drawn else family
    root = root / name.replace(" ", "-").replace("(", "").replace(")", "")
    model_dir = save_model(root / "model", spec)
    if family == "gemma2" and not as_drawn:
        exact_gemma_gains(model_dir)
    model = load_model(model_dir, dtype=torch.float64)
    ids = token_ids(model, args.prompt)
    tokens = torch.tensor(ids)
    rows = []
    for n, case in enumerate(cases(family)[:1] if as_drawn else cases(family)):
        readings, ct_dir = write_set(case, draw(case, model, tokens, 100 * seed + n), root)
        ct, summary = ct_graph(args.ct_python, model_dir, ct_dir, ids, ct_dir.with_suffix(".npz"))
        for reading in readings:
            graph, seconds = our_graph(model, reading, tokens)
            agreement = compare(graph, ct)
            with float64_attention([family]):
                exact = compare(our_graph(model, reading, tokens)[0], ct)
            rows.append((name, reading.label, agreement, exact.rel_all))
            timing = {"ours_s": round(seconds, 2), "ct_s": summary["seconds_attribute"]}
            print(json.dumps({"family": name, "case": reading.label, **vars(agreement)}))
            print(json.dumps({"float64 attention": vars(exact), **timing}))
    return rows, len(ids)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--ct-python",
        default=os.environ.get("CIRCUIT_TRACER_PYTHON"),
        help="python of circuit-tracer's environment (default: $CIRCUIT_TRACER_PYTHON)",
    )
    parser.add_argument("--families", nargs="+", default=list(PLT_HOOKS))
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--keep", type=Path, help="write the models, files and graphs here")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    if not args.ct_python:
        sys.exit(NO_ENV)
    rows, n_tokens = [], 0
    with tempfile.TemporaryDirectory(prefix="bench-ct-") as name:
        root = args.keep or Path(name)
        for seed, family in enumerate(args.families):
            family_rows, n_tokens = run_family(family, seed, root, args)
            rows += family_rows
            if family == "gemma2":
                rows += run_family(family, seed, root, args, as_drawn=True)[0]
    with Results("bench_circuit_tracer", enabled=args.write_docs) as out:
        report(out, rows, n_tokens)


if __name__ == "__main__":
    main()
