"""The distribution maps the top-level folders under one namespace and ships every subpackage."""

from __future__ import annotations

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
