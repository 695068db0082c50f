"""`circuitstore query export-graph`: one prompt's stored graph for the graph viewers."""

from __future__ import annotations

from pathlib import Path

import click

from circuitstore.clitools import HELP, CircuitStoreCommand, output_path
from circuitstore.commands.query_io import emit, open_store, store_options
from circuitstore.query.export import write_json, write_viewer_graph
from circuitstore.schema.connection import Neo4jSettings


@click.command("export-graph", cls=CircuitStoreCommand, context_settings=HELP)
@click.option("--prompt", required=True, help="The prompt's key.")
@click.option(
    "--out",
    required=True,
    type=click.Path(path_type=Path),
    callback=output_path,
    help="The JSON file to write; or an existing folder, to write <slug>.json there and list it "
    "in the folder's graph-metadata.json (circuit-tracer's local viewer serves such a folder).",
)
@click.option(
    "--scan",
    metavar="MODEL",
    help="Neuronpedia's id of the model (default: gpt2-small for the GPT-2 small transcoders, "
    "else the transcoder set's id).",
)
@click.option(
    "--source-set",
    metavar="NAME",
    help="Neuronpedia's source set of the transcoders, whose dashboards the graph opens "
    "(default: tres-dc for the GPT-2 small transcoders, else none).",
)
@click.option("--slug", help="The graph's slug (default: from the prompt's key).")
@click.option(
    "--node-threshold",
    default=0.8,
    show_default=True,
    type=click.FloatRange(0, 1),
    help="The viewers' default pruning threshold.",
)
@store_options
def export_graph_cmd(
    prompt: str,
    out: Path,
    scan: str | None,
    source_set: str | None,
    slug: str | None,
    node_threshold: float,
    settings: Neo4jSettings,
    fmt: str,
    tset: str | None,
) -> None:
    """Write one prompt's stored graph as attribution-graph JSON for Neuronpedia's graph page
    (its published schema; feature ids Cantor-encoded, so that it opens the features'
    dashboards) and circuit-tracer's local viewer. Bias and remainder mass, which the viewers
    have no node for, is folded into error nodes.

    Example: circuitstore query export-graph --prompt my-prompt --out my-prompt.json
    """
    with open_store(settings, tset) as store:
        data = store.export_graph(prompt, scan, source_set, node_threshold, slug)
    if out.is_dir():
        out = write_viewer_graph(data, out)
    else:
        write_json(data, out)
    meta = data["metadata"]
    summary = {
        "file": str(out),
        "nodes": len(data["nodes"]),
        "links": len(data["links"]),
        "scan": meta["scan"],
        "source_set": meta.get("feature_details", {}).get("neuronpedia_source_set"),
        "folded": ", ".join(f"{k} {v}" for k, v in meta["info"]["folded"].items()),
    }
    emit([summary], fmt)
