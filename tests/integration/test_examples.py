"""examples/explore.py, the script a researcher starts from, run as they would run it (a
subprocess with NEO4J_* in its environment) against the store the ingest job fills; and its
notebook twin holds the same code."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from .helpers import fill

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "explore.py"
NOTEBOOK = ROOT / "examples" / "explore.ipynb"
SCHEMA = json.loads((ROOT / "tests" / "fixtures" / "neuronpedia" / "graph-schema.json").read_text())


def test_the_example_script_runs(driver, neo4j_settings, tiny_weights, tmp_path):
    fill(driver, neo4j_settings.database, tiny_weights, tmp_path)
    env = {
        **os.environ,
        "NEO4J_URI": neo4j_settings.uri,
        "NEO4J_USERNAME": neo4j_settings.username,
        "NEO4J_PASSWORD": neo4j_settings.password.get_secret_value(),
        "NEO4J_DATABASE": neo4j_settings.database,
    }
    out = tmp_path / "graphs"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(out)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    text = done.stdout
    assert "prompts, e.g.:" in text
    assert "circuit of" in text
    assert "as networkx:" in text
    assert "what drives mlp" in text
    assert "where mlp" in text
    listed = json.loads((out / "graph-metadata.json").read_text())["graphs"]
    assert len(listed) == 1
    graph = json.loads((out / f"{listed[0]['slug']}.json").read_text())
    jsonschema.Draft7Validator(SCHEMA).validate(graph)
    assert f"wrote {out / listed[0]['slug']}.json" in text
    assert neo4j_settings.password.get_secret_value() not in text + done.stderr


def test_the_notebook_is_the_scripts_twin():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    compile(code, str(NOTEBOOK), "exec")
    for call in (
        "CircuitStore.connect()",
        "store.prompts(",
        "store.circuit(",
        ".to_pandas()",
        ".to_networkx()",
        "store.drivers(",
        "store.examples(",
        "store.export_graph(",
        "write_viewer_graph(",
    ):
        assert call in code, call
        assert call in SCRIPT.read_text(), call
