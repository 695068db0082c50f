"""The distribution maps the top-level folders under one namespace and ships every subpackage."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_every_package_folder_is_listed_for_the_wheel():
    cfg = _pyproject()["tool"]["setuptools"]
    mapping = cfg["package-dir"]
    listed = set(cfg["packages"])
    found = set()
    for package, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            found.add(".".join([package, *rel.parts]))
    assert found == listed, f"pyproject packages out of date: {sorted(found ^ listed)}"


def test_folders_do_not_shadow_pypi_names():
    import circuitstore.query
    import circuitstore.schema

    assert Path(circuitstore.schema.__file__).parent == ROOT / "schema"
    assert Path(circuitstore.query.__file__).parent == ROOT / "query"


def test_package_data_covers_every_file_the_installed_package_reads():
    """The demo's weights and corpus and the server's pom ship as package data: every file in
    those folders matches a package-data pattern, so none is silently left out of the wheel."""
    cfg = _pyproject()["tool"]["setuptools"]
    assert cfg["include-package-data"] is False  # exactly the patterns below, nothing implicit
    data = cfg["package-data"]
    demo = ROOT / "circuitstore" / "demo"
    shipped = [p for p in demo.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    data_files = [p for p in shipped if p.suffix != ".py"]
    assert len(data_files) >= 13  # corpus, fidelity, 5 model files, 6 transcoder files
    unmatched = [
        str(p.relative_to(demo))
        for p in data_files
        if not any(p.relative_to(demo).match(pattern) for pattern in data["circuitstore.demo"])
    ]
    assert unmatched == []
    assert data["circuitstore.server"] == ["pom.xml"]
    assert (ROOT / "circuitstore" / "server" / "pom.xml").is_file()


def test_the_server_reads_the_packaged_pom_and_docker_links_to_it(monkeypatch):
    from circuitstore.server import assemble

    monkeypatch.delenv(assemble.POM_ENV, raising=False)
    packaged = ROOT / "circuitstore" / "server" / "pom.xml"
    assert assemble.pom_path() == packaged
    assert (ROOT / "docker" / "pom.xml").resolve() == packaged  # build-image.sh reads it there


def test_the_demo_build_tool_is_not_in_the_wheel():
    packages = _pyproject()["tool"]["setuptools"]["packages"]
    assert not [p for p in packages if p == "demo" or p.startswith("demo.")]
    assert "circuitstore.demo" in packages


def test_the_ingest_extra_holds_what_the_query_side_never_imports():
    project = _pyproject()["project"]
    base = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    ingest = {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in extras["ingest"]}
    assert {"torch", "transformer-lens", "jaxtyping", "safetensors", "tokenizers"} <= ingest
    assert {"huggingface-hub"} <= ingest
    assert base.isdisjoint(ingest)
    # CI installs everything through dev, the ingest extra among them.
    ours = [r for r in extras["dev"] if r.startswith("circuitstore[")]
    assert any("ingest" in r.partition("[")[2].rstrip("]").split(",") for r in ours), ours
    assert project["scripts"]["circuitstore"] == "circuitstore.__main__:main"
