"""Answers as files: a subgraph as GraphML or networkx node-link JSON, any JSON (a viewer graph)
in a file, and a viewer graph in a folder that circuit-tracer's local viewer serves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import networkx as nx

from circuitstore.schema.errors import QueryError

EXPORT_FORMATS = ("graphml", "json")

# What circuit-tracer's local viewer lists (`<folder>/graph-metadata.json`).
VIEWER_INDEX = "graph-metadata.json"


def write_subgraph(graph: nx.DiGraph, fmt: str, path: Path) -> None:
    """GraphML or networkx node-link JSON (`nodes`, `links`)."""
    if fmt not in EXPORT_FORMATS:
        raise QueryError(f"export format {fmt!r}: expected one of {', '.join(EXPORT_FORMATS)}")
    try:
        if fmt == "graphml":
            nx.write_graphml(graph, path)
        else:
            data = nx.node_link_data(graph, edges="links")
            path.write_text(json.dumps(data, indent=1, default=str))
    except OSError as exc:
        raise QueryError(f"cannot write {path} ({exc.strerror or exc})") from None


def write_json(data: Any, path: Path) -> None:
    """`data` as JSON in `path`; a file that cannot be written is one line naming it."""
    try:
        path.write_text(json.dumps(data))
    except OSError as exc:
        raise QueryError(f"cannot write {path} ({exc.strerror or exc})") from None


def write_viewer_graph(data: dict[str, Any], folder: Path) -> Path:
    """Write `data` where circuit-tracer's local viewer finds it: `<folder>/<slug>.json`, listed
    in `<folder>/graph-metadata.json` (replacing an entry of the same slug). The viewer serves
    the folder with `circuit_tracer.frontend.local_server.serve(data_dir=folder)`."""
    slug = data["metadata"]["slug"]
    path = folder / f"{slug}.json"
    index = folder / VIEWER_INDEX
    try:
        listed = json.loads(index.read_text()) if index.exists() else {"graphs": []}
    except (OSError, json.JSONDecodeError) as exc:
        raise QueryError(f"cannot read {index} ({exc})") from None
    if not isinstance(listed, dict) or not isinstance(listed.get("graphs"), list):
        raise QueryError(f"{index} is not a viewer index (expected an object with `graphs`)")
    graphs_ = [g for g in listed["graphs"] if not (isinstance(g, dict) and g.get("slug") == slug)]
    write_json(data, path)
    write_json({"graphs": [*graphs_, data["metadata"]]}, index)
    return path
