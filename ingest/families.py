"""The model families the engine traces, as one table: what differs between them is data.

With attention patterns and norm scales frozen, every family's forward pass is the same linear
map: rotary embeddings, grouped-query attention and Qwen3's QK-norm only shape the patterns,
which are frozen, so they change nothing in the attribution's linear algebra. What does differ
is listed here: whether the norm removes the mean (LayerNorm) or not (RMSNorm), how the stored
gain relates to the applied one (Gemma's RMSNorm multiplies by 1 + weight), and whether the
attention and MLP outputs pass through norms of their own before reaching the residual stream
(Gemma-2; their scales are frozen too). The embedding scale (Gemma's sqrt(d_model)) and learned
positions need no entry: the engine reads the embedding from the residual stream itself, and the
logit soft-cap is read from the model's config (targets are the logits before the cap).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelFamily:
    """One architecture, keyed by its HuggingFace ``model_type``."""

    model_type: str
    label: str
    centred: bool  # LayerNorm removes the mean over d_model; RMSNorm does not
    gain_offset: float  # the applied gain is offset + the stored weight
    post_norms: bool  # norms after attention (ln1_post) and the MLP (ln2_post)
    # Why `qk`'s split of a score into bilinear terms of the graph's nodes does not hold, or
    # None where it does (learned absolute positions, no QK-norm, no attention soft-cap).
    no_qk_tracing: str | None
    hub: tuple[str, ...]  # checkpoints of the family the docs name
    # HookedTransformer's weight processing (folded and centred LayerNorms), which the published
    # GPT-2 transcoders were trained on. Other families keep HF's weights: the engine folds the
    # norms' gains itself, in the run's dtype (TransformerLens processes in float32 and holds a
    # float32 copy of every weight while it does: 10.5 GB for Gemma-2-2B).
    processed: bool = False


_ROTARY = "rotary position embeddings make the score depend on the relative position"

MODEL_FAMILIES: dict[str, ModelFamily] = {
    f.model_type: f
    for f in (
        ModelFamily("gpt2", "GPT-2", True, 0.0, False, None, ("gpt2",), processed=True),
        ModelFamily("llama", "Llama", False, 0.0, False, _ROTARY, ("meta-llama/Llama-3.2-1B",)),
        ModelFamily(
            "qwen3",
            "Qwen3",
            False,
            0.0,
            False,
            f"{_ROTARY}, and its QK-norm is not linear",
            (
                "Qwen/Qwen3-0.6B",
                "Qwen/Qwen3-1.7B",
                "Qwen/Qwen3-4B",
                "Qwen/Qwen3-8B",
                "Qwen/Qwen3-14B",
            ),
        ),
        ModelFamily(
            "gemma2",
            "Gemma-2",
            False,
            1.0,
            True,
            f"{_ROTARY}, and its attention soft-cap is not linear",
            ("google/gemma-2-2b",),
        ),
    )
}


def family_of(model_type: str) -> ModelFamily | None:
    """The family of a HuggingFace ``model_type``, or None where the engine has none."""
    return MODEL_FAMILIES.get(model_type)
