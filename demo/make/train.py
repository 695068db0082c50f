"""Train the demo's tokenizer, model and transcoders on CPU, and measure their fidelity.

Everything is deterministic from the seed: the corpus (string-seeded ``random.Random``), the
tokenizer (BPE on that corpus), the model and the transcoders (``torch.manual_seed`` and one
thread). The transcoders are trained on activations of the model booted exactly as the engine
boots it (:func:`circuitstore.ingest.model.load_model`: TransformerBridge in compatibility mode),
reading ``blocks.L.ln2.hook_normalized`` and predicting ``blocks.L.hook_mlp_out``.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from circuitstore.ingest.model import LoadedModel
from circuitstore.ingest.transcoder.types import Transcoder, TranscoderSet, expected_hook_point
from demo.make.corpus import Example, answer_is_correct

BOS = "<|endoftext|>"
MODEL_NAME = "circuitstore-demo"
# Two-digit groups are split off before byte-level BPE (a leading space stays attached, as in
# GPT-2's " 17" "32"), so every year is a century token followed by a two-digit token.
DIGIT_PAIRS = r" ?\d\d"


@dataclass(frozen=True)
class DemoSpec:
    n_layers: int = 3
    d_model: int = 96
    n_heads: int = 4
    n_ctx: int = 64
    vocab_size: int = 1024  # an upper bound: BPE stops once every word is one token
    train_examples: int = 60_000
    steps: int = 3000
    batch: int = 48
    lr: float = 4e-3
    d_tc: int = 384
    tc_tokens: int = 150_000
    tc_steps: int = 1500
    tc_batch: int = 1024
    tc_lr: float = 2e-3
    tc_l1: float = 0.05

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def log(msg: str) -> None:
    print(msg, flush=True)


# ---------------------------------------------------------------- tokenizer


def train_tokenizer(texts: Sequence[str], vocab_size: int):  # type: ignore[no-untyped-def]
    """Byte-level BPE (GPT-2's scheme) with ``<|endoftext|>`` as BOS, EOS and UNK."""
    from tokenizers import ByteLevelBPETokenizer, Regex, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe._tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(DIGIT_PAIRS), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    bpe.train_from_iterator(
        list(texts),
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[BOS],
        show_progress=False,
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=BOS, eos_token=BOS, unk_token=BOS
    )


def encode(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    """Token ids with BOS at position 0, as every training context (and the engine) has."""
    bos = int(tokenizer.bos_token_id)
    return [[bos, *tokenizer(t, add_special_tokens=False)["input_ids"]] for t in texts]


def pad_batch(seqs: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Right-padded ids and a mask of real tokens (causal attention never sees the padding)."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.bool)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = True
    return ids, mask


# ---------------------------------------------------------------- model


def train_model(tokenizer: Any, examples: Sequence[Example], spec: DemoSpec, seed: int) -> Any:
    """A GPT-2 trained with next-token loss on BOS + one example per context."""
    from transformers import GPT2Config, GPT2LMHeadModel

    seqs = encode(tokenizer, [ex.training_text() for ex in examples])
    longest = max(len(s) for s in seqs)
    if longest > spec.n_ctx:
        raise ValueError(f"a training example is {longest} tokens; n_ctx is {spec.n_ctx}")
    cfg = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=spec.n_ctx,
        n_embd=spec.d_model,
        n_layer=spec.n_layers,
        n_head=spec.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    model.train()
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )
    warmup = max(1, spec.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return spec.lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, spec.steps - warmup)
        return spec.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))

    gen = torch.Generator().manual_seed(seed)
    pad = int(tokenizer.bos_token_id)
    start, running = time.perf_counter(), 0.0
    for step in range(spec.steps):
        rows = torch.randint(len(seqs), (spec.batch,), generator=gen).tolist()
        ids, mask = pad_batch([seqs[r] for r in rows], pad)
        logits = model(input_ids=ids).logits[:, :-1]
        target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
        )
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        running = loss.item() if step == 0 else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % max(1, spec.steps // 10) == 0:
            log(
                f"  model step {step + 1}/{spec.steps}: loss {running:.3f} "
                f"({time.perf_counter() - start:.0f} s)"
            )
    model.eval()
    return model


def save_model_folder(model: Any, tokenizer: Any, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)
    return folder


# ---------------------------------------------------------------- activations through the bridge


def bridge_batches(
    model: LoadedModel, seqs: Sequence[Sequence[int]], batch: int = 256
) -> list[tuple[Tensor, Tensor]]:
    pad = int(model.bridge.tokenizer.bos_token_id)
    return [pad_batch(seqs[i : i + batch], pad) for i in range(0, len(seqs), batch)]


def collect_mlp_io(
    model: LoadedModel, seqs: Sequence[Sequence[int]], max_tokens: int
) -> tuple[Tensor, Tensor]:
    """(n_layers, tokens, d_model) inputs (ln2.hook_normalized) and targets (hook_mlp_out) at
    every real position, BOS included, of the first sequences up to ``max_tokens`` tokens."""
    names = [
        f"blocks.{layer}.{h}"
        for layer in range(model.n_layers)
        for h in ("ln2.hook_normalized", "hook_mlp_out")
    ]
    xs: list[list[Tensor]] = [[] for _ in range(model.n_layers)]
    ys: list[list[Tensor]] = [[] for _ in range(model.n_layers)]
    total = 0
    with torch.no_grad():
        for ids, mask in bridge_batches(model, seqs):
            _, cache = model.bridge.run_with_cache(ids, names_filter=lambda n: n in names)
            for layer in range(model.n_layers):
                xs[layer].append(cache[f"blocks.{layer}.ln2.hook_normalized"][mask].float())
                ys[layer].append(cache[f"blocks.{layer}.hook_mlp_out"][mask].float())
            total += int(mask.sum())
            if total >= max_tokens:
                break
    x = torch.stack([torch.cat(parts)[:max_tokens] for parts in xs])
    y = torch.stack([torch.cat(parts)[:max_tokens] for parts in ys])
    return x, y


# ---------------------------------------------------------------- transcoders


def train_transcoder(
    layer: int, x: Tensor, y: Tensor, spec: DemoSpec, seed: int
) -> tuple[Transcoder, dict[str, float]]:
    """pre = (x - b_dec) @ W_enc + b_enc; z = ReLU(pre); out = z @ W_dec + b_dec_out.
    Loss: squared error over the output's variance plus L1 of z over the output's RMS norm
    (decoder rows are kept unit-norm, so that L1 is the usual one). Features that stop firing
    are re-initialised towards the worst-reconstructed inputs a few times early on."""
    gen = torch.Generator().manual_seed(seed * 1000 + layer)
    n, d = x.shape
    d_tc = spec.d_tc
    y_mean = y.mean(0)
    var = float(((y - y_mean) ** 2).sum(1).mean())
    rms = math.sqrt(var)
    W_dec = torch.randn(d_tc, d, generator=gen)
    W_dec /= W_dec.norm(dim=1, keepdim=True)
    params = {
        "W_enc": (W_dec.T.clone() * 0.5).requires_grad_(),
        "b_enc": torch.zeros(d_tc, requires_grad=True),
        "W_dec": W_dec.requires_grad_(),
        "b_dec": x.mean(0).clone().requires_grad_(),
        "b_dec_out": y_mean.clone().requires_grad_(),
    }
    opt = torch.optim.Adam(list(params.values()), lr=spec.tc_lr, betas=(0.9, 0.999))
    fired = torch.zeros(d_tc)
    resample_at = {spec.tc_steps // 8, spec.tc_steps // 4, spec.tc_steps * 3 // 8}

    def forward(xb: Tensor) -> tuple[Tensor, Tensor]:
        z = torch.relu((xb - params["b_dec"]) @ params["W_enc"] + params["b_enc"])
        return z, z @ params["W_dec"] + params["b_dec_out"]

    for step in range(spec.tc_steps):
        rows = torch.randint(n, (spec.tc_batch,), generator=gen)
        xb, yb = x[rows], y[rows]
        z, out = forward(xb)
        mse = ((out - yb) ** 2).sum(1).mean() / var
        l1 = z.sum(1).mean() / rms
        loss = mse + spec.tc_l1 * l1
        lr = spec.tc_lr * min(1.0, 5 * (spec.tc_steps - step) / spec.tc_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():  # keep rows unit-norm: drop the gradient along each row
            W, g = params["W_dec"], params["W_dec"].grad
            assert g is not None
            g -= (g * W).sum(1, keepdim=True) * W
        opt.step()
        with torch.no_grad():
            params["W_dec"] /= params["W_dec"].norm(dim=1, keepdim=True)
            fired += (z > 0).sum(0)
            if step + 1 in resample_at:
                _resample(params, fired, x, y, forward, gen, opt)
                fired.zero_()
    tc = Transcoder(
        layer=layer,
        hook_point=expected_hook_point(layer),
        source=f"{MODEL_NAME} layer {layer}",
        cfg={"model_name": MODEL_NAME, "hook_point": expected_hook_point(layer)},
        **{k: v.detach().clone() for k, v in params.items()},
    )
    with torch.no_grad():
        z_all = tc.encode(x)
        freq = (z_all > 0).float().mean(0)
        fvu = float(((tc.decode(z_all) - y) ** 2).sum(1).mean() / var)
    tc = dataclasses.replace(tc, log_feature_sparsity=torch.log10(freq + 1e-10))
    stats = {
        "fvu": fvu,
        "l0": float((z_all > 0).sum(1).float().mean()),
        "dead": int((freq == 0).sum()),
    }
    return tc, stats


def _resample(
    params: dict[str, Tensor],
    fired: Tensor,
    x: Tensor,
    y: Tensor,
    forward: Callable[[Tensor], tuple[Tensor, Tensor]],
    gen: torch.Generator,
    opt: torch.optim.Optimizer,
) -> None:
    dead = (fired == 0).nonzero(as_tuple=True)[0]
    if dead.numel() == 0:
        return
    probe = torch.randint(x.shape[0], (8192,), generator=gen)
    _, out = forward(x[probe])
    err = y[probe] - out
    weight = (err**2).sum(1)
    pick = probe[torch.multinomial(weight, dead.numel(), replacement=True, generator=gen)]
    direction = y[pick] - forward(x[pick])[1]
    direction /= direction.norm(dim=1, keepdim=True).clamp_min(1e-8)
    x_dir = x[pick] - params["b_dec"]
    alive = fired > 0
    enc_norm = params["W_enc"][:, alive].norm(dim=0).mean() if alive.any() else 1.0
    params["W_dec"][dead] = direction
    params["W_enc"][:, dead] = (x_dir / x_dir.norm(dim=1, keepdim=True) * enc_norm * 0.2).T
    params["b_enc"][dead] = 0.0
    for p in (params["W_dec"], params["W_enc"], params["b_enc"]):  # reset Adam's moments
        state = opt.state.get(p)
        if not state:
            continue
        for key in ("exp_avg", "exp_avg_sq"):
            if p is params["W_enc"]:
                state[key][:, dead] = 0.0
            else:
                state[key][dead] = 0.0


def train_transcoders(
    model: LoadedModel, seqs: Sequence[Sequence[int]], spec: DemoSpec, seed: int
) -> tuple[TranscoderSet, list[dict[str, float]]]:
    x, y = collect_mlp_io(model, seqs, spec.tc_tokens)
    log(f"  collected {x.shape[1]} tokens of MLP inputs and outputs per layer")
    tcs, stats = [], []
    for layer in range(model.n_layers):
        torch.manual_seed(seed * 1000 + layer)
        tc, s = train_transcoder(layer, x[layer], y[layer], spec, seed)
        log(f"  transcoder {layer}: FVU {s['fvu']:.3f}, L0 {s['l0']:.1f}, dead {s['dead']}")
        tcs.append(tc)
        stats.append(s)
    return TranscoderSet(tuple(tcs), "demo", MODEL_NAME), stats


# ---------------------------------------------------------------- fidelity


def _splice_hooks(tcs: TranscoderSet, layers: Sequence[int]) -> list[tuple[str, Callable]]:
    store: dict[int, Tensor] = {}
    hooks: list[tuple[str, Callable]] = []
    for layer in layers:

        def keep(x: Tensor, hook: Any, layer: int = layer) -> Tensor:  # noqa: ARG001 (hook API)
            store[layer] = x
            return x

        def replace(out: Tensor, hook: Any, layer: int = layer) -> Tensor:  # noqa: ARG001
            tc = tcs[layer]
            return tc.decode(tc.encode(store[layer].to(tc.W_enc.dtype))).to(out.dtype)

        hooks.append((f"blocks.{layer}.ln2.hook_normalized", keep))
        hooks.append((f"blocks.{layer}.hook_mlp_out", replace))
    return hooks


def _zero_hooks(n_layers: int) -> list[tuple[str, Callable]]:
    return [
        (f"blocks.{layer}.hook_mlp_out", lambda out, hook: torch.zeros_like(out))  # noqa: ARG005
        for layer in range(n_layers)
    ]


def mean_ce(model: LoadedModel, seqs: Sequence[Sequence[int]], hooks: list) -> float:
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, mask in bridge_batches(model, seqs):
            logits = model.bridge.run_with_hooks(ids, fwd_hooks=hooks)[:, :-1]
            target = ids[:, 1:].masked_fill(~mask[:, 1:], -100)
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]).double(),
                target.reshape(-1),
                ignore_index=-100,
                reduction="sum",
            )
            total += float(ce)
            count += int(mask[:, 1:].sum())
    return total / count


def task_accuracy(model: LoadedModel, examples: Sequence[Example], hooks: list) -> dict[str, float]:
    """Share of prompts whose top next token solves them, per task with an answer."""
    tok = model.bridge.tokenizer
    tasks = sorted({ex.task for ex in examples if ex.answer is not None})
    out: dict[str, float] = {}
    with torch.no_grad():
        for task in tasks:
            group = [ex for ex in examples if ex.task == task]
            seqs = encode(tok, [ex.text for ex in group])
            right = 0
            for start in range(0, len(group), 256):
                part = seqs[start : start + 256]
                ids, mask = pad_batch(part, int(tok.bos_token_id))
                logits = model.bridge.run_with_hooks(ids, fwd_hooks=hooks)
                last = mask.sum(1) - 1
                top = logits[torch.arange(len(part)), last].argmax(-1).tolist()
                for ex, t in zip(group[start : start + 256], top, strict=True):
                    right += answer_is_correct(ex, tok.decode([t]))
            out[task] = right / len(group)
    return out


def feature_l0(
    model: LoadedModel, tcs: TranscoderSet, seqs: Sequence[Sequence[int]]
) -> list[float]:
    x, _ = collect_mlp_io(model, seqs, 10**9)
    return [
        float((tcs[layer].encode(x[layer]) > 0).sum(1).float().mean())
        for layer in range(model.n_layers)
    ]


def fidelity(model: LoadedModel, tcs: TranscoderSet, held_out: Sequence[Example]) -> dict[str, Any]:
    """The figures ``fidelity.json`` records: CE of the clean model, with every MLP
    zero-ablated, and with every MLP replaced by its transcoder (and one layer at a time);
    the fraction of the ablation's loss the transcoders recover; L0 per layer; task accuracy
    of the clean and the spliced model on the held-out prompts."""
    seqs = encode(model.bridge.tokenizer, [ex.training_text() for ex in held_out])
    layers = list(range(model.n_layers))
    clean = mean_ce(model, seqs, [])
    zero = mean_ce(model, seqs, _zero_hooks(model.n_layers))
    spliced = mean_ce(model, seqs, _splice_hooks(tcs, layers))
    per_layer = []
    for layer in layers:
        one = mean_ce(model, seqs, _splice_hooks(tcs, [layer]))
        ablate = mean_ce(model, seqs, [_zero_hooks(model.n_layers)[layer]])
        per_layer.append((ablate - one) / (ablate - clean))
    return {
        "ce_clean": clean,
        "ce_mlp_zero_ablated": zero,
        "ce_transcoders_spliced": spliced,
        "fraction_loss_recovered": (zero - spliced) / (zero - clean),
        "fraction_loss_recovered_per_layer": per_layer,
        "l0_per_layer": feature_l0(model, tcs, seqs),
        "accuracy": task_accuracy(model, held_out, []),
        "accuracy_spliced": task_accuracy(model, held_out, _splice_hooks(tcs, layers)),
        "n_held_out_tokens": sum(len(s) - 1 for s in seqs),
    }
