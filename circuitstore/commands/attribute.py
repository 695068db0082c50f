"""`circuitstore attribute`: one prompt's attribution graph as JSON or a table."""

from __future__ import annotations

import json

import click

from circuitstore.clitools import (
    HELP,
    CircuitStoreCommand,
    attribution_options,
    pruning_options,
)
from circuitstore.ingest.config import AttributionConfig, DtypeName, Mode, PruneConfig


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
@attribution_options
@pruning_options
def attribute(
    model_name: str,
    transcoders: str,
    prompt: str,
    fmt: str,
    no_prune: bool,
    truncate: bool,
    all_positions: bool,
    mode: Mode,
    logit_top_k: int,
    dtype: DtypeName,
    node_threshold: float,
    edge_threshold: float,
    skip_fraction: float,
) -> None:
    """Compute the attribution graph of PROMPT in the transcoders' local replacement model.

    \b
    Example:
      circuitstore attribute --model gpt2 --transcoders pchlenski/gpt2-transcoders \\
        --prompt "When Mary and John went to the store, John gave a drink to" --format table
    """
    from circuitstore.ingest.attribution import AttributionEngine
    from circuitstore.ingest.attribution.export import graph_to_json, graph_to_table
    from circuitstore.ingest.model import load_model, torch_dtype
    from circuitstore.ingest.transcoder import load_transcoders

    prune = PruneConfig(node_threshold, edge_threshold, skip_fraction=skip_fraction)
    config = AttributionConfig(
        mode=mode,
        logit_top_k=logit_top_k,
        logit_positions="all" if all_positions else "last",
        prune=None if no_prune else prune,
    )
    model = load_model(model_name, dtype=torch_dtype(dtype))
    tcs = load_transcoders(transcoders, dtype=torch_dtype(dtype))
    graph = AttributionEngine(model, tcs).attribute(prompt, config, truncate=truncate)
    if fmt == "json":
        click.echo(json.dumps(graph_to_json(graph)))
    else:
        click.echo(graph_to_table(graph))
