"""Where a researcher starts: a filled store, from Python, as DataFrames and networkx graphs.

    export NEO4J_PASSWORD=...            # and NEO4J_URI etc. where the store is not local
    python examples/explore.py [--prompt KEY] [--out FOLDER]

It connects, lists the prompts, takes one prompt's circuit (the nodes carrying 80% of the
influence on its top logit) as a DataFrame and as a networkx graph, asks what drives the
circuit's strongest feature across the whole corpus and where that feature fires most, and
exports the prompt's graph for Neuronpedia and circuit-tracer's viewer. Needs pandas
(`pip install 'circuitstore[notebook]'`). `explore.ipynb` beside it is the same, cell by cell.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from circuitstore.query import CircuitStore
from circuitstore.query.export import write_viewer_graph
from circuitstore.schema.errors import CircuitStoreError


def say(*parts: object) -> None:
    print(*parts)  # noqa: T201 (a script talks to its reader)


pd.set_option("display.width", 160)
pd.set_option("display.max_columns", 12)
pd.set_option("display.max_colwidth", 60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--prompt", help="a prompt's key (default: the first stored)")
    parser.add_argument("--out", type=Path, default=Path("circuitstore-graphs"))
    args = parser.parse_args()
    try:
        explore(args.prompt, args.out)
    except CircuitStoreError as exc:  # one line, as the CLI says it
        sys.exit(f"Error: {exc}")


def explore(prompt: str | None, out: Path) -> None:
    with CircuitStore.connect() as store:  # NEO4J_* from the environment
        # 1. What is stored: prompts (a DataFrame; the corpus's own fields are columns).
        prompts = store.prompts(limit=20).to_pandas()
        say(f"{len(prompts)} prompts, e.g.:\n{prompts.head()}\n")
        if prompts.empty:
            raise CircuitStoreError("the store holds no prompt: run `circuitstore demo` first")
        key = prompt or prompts["prompt"].iloc[0]

        # 2. One prompt's circuit: nodes with their tokens, labels and influence...
        circuit = store.circuit(key, threshold=0.8)
        nodes = circuit.to_pandas()
        say(f"circuit of {key!r}:\n{nodes.head(10)}\n")
        # ... and the same subgraph for networkx.
        graph = circuit.to_networkx()
        say(f"as networkx: {graph.number_of_nodes()} nodes, {graph.number_of_edges()} edges\n")

        # 3. The circuit's strongest feature, corpus-wide: what drives it, where it fires.
        features = nodes[nodes["kind"] == "feature"]
        if features.empty:
            say("the circuit holds no feature")
        else:
            feature = features["id"].iloc[0].split("@")[0]
            drivers = store.drivers(feature, top=5, sign="abs").to_pandas()
            say(f"what drives {feature} across the corpus:\n{drivers}\n")
            examples = store.examples(feature, top=5).to_pandas()
            say(f"where {feature} fires most:\n{examples[['prompt', 'activation', 'context']]}\n")

        # 4. The prompt's graph for the viewers (Neuronpedia's graph page, circuit-tracer's).
        out.mkdir(parents=True, exist_ok=True)
        path = write_viewer_graph(store.export_graph(key), out)
        say(f"wrote {path}")


if __name__ == "__main__":
    main()
