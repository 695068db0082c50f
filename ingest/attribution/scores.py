"""How much of the model a graph explains: circuit-tracer's replacement and completeness scores.

With A the adjacency (rows targets, columns sources), Â = |A| with each row divided by its
target's total |input|, and w the chosen logits' probabilities (zero elsewhere), a node's
influence is I = w + wÂ + wÂ² + ... (the share of the output that flows through it, its own
seed included). Then

- replacement = Σ I over embeddings / (Σ I over embeddings + Σ I over error nodes): the share of
  the output reached from the input rather than from reconstruction error;
- completeness = Σ_i (1 - Σ_{j error} Â_ij) I_i / Σ_i I_i: the influence-weighted share of each
  node's input that does not come from error nodes.

Error nodes are the MLP error terms and lumped mode's remainders. Constant terms (biases) are
neither: they take no share of the replacement score, and count as explained input in the
completeness score. For a stored (pruned, budgeted) graph the rows are divided by each target's
*full* |input|: whatever the stored graph leaves out (dropped features, dropped edges) counts as
error at that target, as Neuronpedia counts the features a subgraph drops.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from circuitstore.ingest.attribution.graph import Code


@dataclass(frozen=True)
class GraphScores:
    """circuit-tracer's replacement and completeness scores of one graph."""

    replacement: float
    completeness: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        """The scores by their metadata names (`<prefix>replacement_score`, ...)."""
        return {
            f"{prefix}replacement_score": self.replacement,
            f"{prefix}completeness_score": self.completeness,
        }


def is_error(kind: Int[Tensor, " n"]) -> Tensor:
    """Which nodes are error terms: MLP errors and lumped mode's remainders."""
    return (kind == Code.ERROR) | (kind == Code.REMAINDER)


def scores(
    influence: Float[Tensor, " n"],
    kind: Int[Tensor, " n"],
    error_share: Float[Tensor, " n"],
) -> GraphScores:
    """Both scores from each node's influence (its seed included) and the share of its input
    (Σ_j Â_ij over error sources j; 0 for nodes without inputs)."""
    influence = influence.to(torch.float64)
    tokens = float(influence[kind == Code.EMBEDDING].sum())
    errors = float(influence[is_error(kind)].sum())
    total = float(influence.sum())
    explained = float(((1 - error_share.to(torch.float64)) * influence).sum())
    return GraphScores(
        replacement=tokens / (tokens + errors) if tokens + errors > 0 else 1.0,
        completeness=explained / total if total > 0 else 1.0,
    )


def edge_scores(
    kind: Int[Tensor, " n"],
    source: Int[Tensor, " k"],
    target: Int[Tensor, " k"],
    weight: Float[Tensor, " k"],
    abs_input: Float[Tensor, " n"],
    seeds: Float[Tensor, " n"],
) -> GraphScores:
    """The scores of a graph given as its edges. `abs_input` is each target's full |input|
    (the sum of |w| over all its edges, stored or not); what the edges given leave out of it
    counts as error. The influence is propagated over the edges until nothing changes (the
    graph is a DAG: at most its depth in steps)."""
    n = kind.shape[0]
    norm = abs_input.to(torch.float64).clamp_min(1e-30)
    share = weight.abs().to(torch.float64) / norm[target]
    influence = seeds.to(torch.float64).clone()
    for _ in range(n + 1):  # a DAG's depth bounds it; attribution graphs have ~n_layers + 2
        flow = torch.zeros(n, dtype=torch.float64).index_add_(0, source, influence[target] * share)
        updated = seeds.to(torch.float64) + flow
        if torch.equal(updated, influence):
            break
        influence = updated
    has_input = abs_input > 0
    given = torch.zeros(n, dtype=torch.float64).index_add_(0, target, share)
    error_in = torch.zeros(n, dtype=torch.float64)
    error_edges = is_error(kind)[source]
    error_in.index_add_(0, target[error_edges], share[error_edges])
    left_out = (1 - given).clamp_min(0) * has_input
    # What the edges leave out is error at its target: its influence joins the errors'.
    result = scores(influence, kind, torch.where(has_input, error_in + left_out, 0.0))
    tokens = float(influence[kind == Code.EMBEDDING].sum())
    errors = float(influence[is_error(kind)].sum()) + float((influence * left_out).sum())
    replacement = tokens / (tokens + errors) if tokens + errors > 0 else 1.0
    return GraphScores(replacement, result.completeness)
