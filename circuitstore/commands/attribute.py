"""`circuitstore attribute`: one prompt's attribution graph as JSON or a table."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from circuitstore.clitools import (
    HELP,
    CircuitStoreCommand,
    attribution_options,
    pruning_options,
)
from circuitstore.ingest.config import (
    AttributionConfig,
    DtypeName,
    Mode,
    PruneConfig,
    WeightsDtypeName,
)


@click.command("attribute", cls=CircuitStoreCommand, context_settings=HELP)
@click.option(
    "--model", "model_name", required=True, help="HF model name (gpt2) or a saved model folder."
)
@click.option("--transcoders", required=True, help="Transcoder folder or HF repo id.")
@click.option("--prompt", required=True, help="Text; a BOS token is put in front.")
@click.option(
    "--format", "fmt", type=click.Choice(["json", "table"]), default="json", show_default=True
)
@click.option("--no-prune", is_flag=True, help="Every edge (conservation holds exactly).")
@click.option("--truncate", is_flag=True, help="Cut prompts longer than the model's context.")
@click.option(
    "--all-positions", is_flag=True, help="Logit targets at every position, not only the last."
)
@click.option(
    "--by-head",
    is_flag=True,
    help="Break each edge down by path: same position, each attention head (attn2[3]), and "
    "two or more attention layers (JSON: each edge's `parts`; table: its strongest heads).",
)
@attribution_options(AttributionConfig())
@pruning_options
def attribute(
    model_name: str,
    transcoders: str,
    prompt: str,
    fmt: str,
    no_prune: bool,
    truncate: bool,
    all_positions: bool,
    by_head: bool,
    mode: Mode,
    logit_top_k: int,
    dtype: DtypeName,
    weights_dtype: WeightsDtypeName | None,
    device: str,
    tf32: bool,
    node_threshold: float,
    edge_threshold: float,
    skip_fraction: float,
    max_feature_nodes: int | None,
    max_edges: int | None,
) -> None:
    """Compute the attribution graph of PROMPT in the transcoders' local replacement model.

    \b
    Example:
      circuitstore attribute --model gpt2 --transcoders pchlenski/gpt2-transcoders \\
        --prompt "When Mary and John went to the store, John gave a drink to" --format table
    """
    from circuitstore.ingest.attribution.api import load_engine
    from circuitstore.ingest.attribution.export import graph_to_json, graph_to_table

    prune = PruneConfig(
        node_threshold,
        edge_threshold,
        skip_fraction=skip_fraction,
        max_feature_nodes=max_feature_nodes,
        max_edges=max_edges,
    )
    config = AttributionConfig(
        mode=mode,
        logit_top_k=logit_top_k,
        logit_positions="all" if all_positions else "last",
        prune=None if no_prune else prune,
    )
    engine = load_engine(
        model_name, transcoders, device=device, dtype=dtype, weights_dtype=weights_dtype, tf32=tf32
    )
    if no_prune and fmt == "json" and not by_head:
        _stream_json(engine, prompt, config, truncate)
        return
    parts = None
    if by_head:
        graph, parts = engine.attribute_by_head(prompt, config, truncate=truncate)
    else:
        graph = engine.attribute(prompt, config, truncate=truncate)
    if fmt == "json":
        click.echo(json.dumps(graph_to_json(graph, parts)))
    else:
        click.echo(graph_to_table(graph, parts=parts))


def _stream_json(engine: Any, prompt: str, config: AttributionConfig, truncate: bool) -> None:
    """Every edge, streamed as the engine computes it (a full GPT-2-scale graph holds 10^8 to
    10^9 edges: as Python objects they would not fit in memory); large outputs are announced."""
    from circuitstore.ingest.attribution.export import EDGE_BYTES, stream_prompt_json

    def announce(edges: int) -> None:
        if edges * EDGE_BYTES > 1e9:
            size = edges * EDGE_BYTES / 1e9
            click.echo(f"writing {edges:,} edges, about {size:.1f} GB of JSON", err=True)

    stream = sys.stdout
    stream_prompt_json(engine, prompt, config, stream, truncate=truncate, announce=announce)
    stream.write("\n")
