"""Tiny random GPT-2-architecture models and transcoders, saved in the real file formats.

The tests and the benchmark cannot download GPT-2 or the published transcoders, so they build
stand-ins here and load them back through the same loaders users run on the real thing:
a ``save_pretrained`` folder (model plus a trained byte-level BPE tokenizer) that TransformerLens
boots offline, and transcoders in the published per-layer pickle layout (or safetensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from circuitstore.ingest.transcoder.files import save_published, save_safetensors
from circuitstore.ingest.transcoder.types import Transcoder, TranscoderSet, expected_hook_point

BOS = "<|endoftext|>"
_CORPUS = (
    "The quick brown fox jumps over the lazy dog. When Mary and John went to the store, John gave "
    "a drink to Mary. Transcoders replace each MLP with a wide sparse layer whose features can be "
    "read. Attention moves information between positions; the residual stream carries it upward. "
    "In 1984 the cat sat on the mat, and 42 birds flew over 7 green hills near the river bank."
)


@dataclass(frozen=True)
class ModelSpec:
    """The sizes of a small random GPT-2 built for tests."""

    n_layers: int = 2
    d_model: int = 32
    n_heads: int = 4
    n_ctx: int = 64
    vocab_size: int = 320  # tokenizer size; the model's d_vocab is max(this, d_vocab)
    d_vocab: int = 0
    seed: int = 0


def train_tokenizer(vocab_size: int):  # type: ignore[no-untyped-def]
    """A byte-level BPE tokenizer trained offline on a fixed paragraph (GPT-2's scheme, tiny)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    lines = [s.strip() + "." for s in _CORPUS.split(".") if s.strip()]
    bpe.train_from_iterator(
        lines * 20, vocab_size=vocab_size, min_frequency=1, special_tokens=[BOS]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, bos_token=BOS, eos_token=BOS, unk_token=BOS
    )


def save_model(folder: Path, spec: ModelSpec) -> Path:
    """A random GPT-2 with non-trivial LayerNorm gains/biases (so folding them matters) and
    attention that is far from uniform, saved with its tokenizer."""
    from transformers import GPT2Config, GPT2LMHeadModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(spec.vocab_size)
    cfg = GPT2Config(
        vocab_size=max(len(tokenizer), spec.d_vocab),
        n_positions=spec.n_ctx,
        n_embd=spec.d_model,
        n_layer=spec.n_layers,
        n_head=spec.n_heads,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    torch.manual_seed(spec.seed)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "attn.c_attn.weight" in name:
                p.mul_(8.0)  # sharper, uneven attention patterns
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def random_transcoders(
    n_layers: int,
    d_model: int,
    d_tc: int,
    *,
    active_fraction: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> TranscoderSet:
    """Unit-norm decoder rows, unit-norm encoder columns, and an encoder bias that lets about
    ``active_fraction`` of features fire on unit-variance inputs."""
    gen = torch.Generator().manual_seed(seed)
    threshold = float(
        torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(1.0 - active_fraction))
    )
    tcs = []
    for layer in range(n_layers):
        W_enc = torch.randn(d_model, d_tc, generator=gen)
        W_enc /= W_enc.norm(dim=0, keepdim=True)
        W_dec = torch.randn(d_tc, d_model, generator=gen)
        W_dec /= W_dec.norm(dim=1, keepdim=True)
        tcs.append(
            Transcoder(
                layer=layer,
                hook_point=expected_hook_point(layer),
                W_enc=W_enc.to(dtype),
                b_enc=(-threshold + 0.1 * torch.randn(d_tc, generator=gen)).to(dtype),
                W_dec=W_dec.to(dtype),
                b_dec=(0.1 * torch.randn(d_model, generator=gen)).to(dtype),
                b_dec_out=(0.1 * torch.randn(d_model, generator=gen)).to(dtype),
                source=f"synthetic layer {layer}",
                cfg={"model_name": "synthetic", "hook_point": expected_hook_point(layer)},
                log_feature_sparsity=torch.full(
                    (d_tc,), float(torch.log10(torch.tensor(active_fraction)))
                ),
            )
        )
    return TranscoderSet(tuple(tcs), "synthetic", "synthetic")


def save_transcoders(tcs: TranscoderSet, folder: Path, *, layout: str = "published") -> list[Path]:
    """Write every layer in the published pickle layout or the safetensors layout."""
    folder.mkdir(parents=True, exist_ok=True)
    write = save_published if layout == "published" else save_safetensors
    return [write(tc, folder, tcs.model_name or "synthetic") for tc in tcs.transcoders]
