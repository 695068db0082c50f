"""The house rules, read off the source (imports inside functions included):

1. click only in the application layer, circuitstore/;
2. torch (and the other packages of the ingest extra) only in ingest/;
3. Cypher only in */cypher.py and schema/ddl.py;
4. schema/ imports nothing of ours but itself;
5. one way down: ingest/ imports nothing from query/ (schema < ingest < query); the viewer
   (circuitstore/view/) is click-free and reads the store through query/ only;
6. every public class and function of the libraries (ingest/, query/, schema/), methods of public
   classes included, says in its docstring what it is for (protocol members, whose bodies are
   `...`, are described by their class).

ruff enforces 1, 2 and 5 for module-level imports as you type (5 through ingest/ruff.toml); this
test also sees the imports that functions make lazily, and checks 3, 4 and 6.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LAYERS = ("circuitstore", "ingest", "query", "schema")
INGEST_ONLY = {
    "torch",
    "transformer_lens",
    "transformers",
    "jaxtyping",
    "safetensors",
    "tokenizers",
    "huggingface_hub",
}
# A clause keyword as Cypher writes it, followed by what follows it in a statement.
CYPHER = re.compile(
    r"\b(?:OPTIONAL MATCH|MATCH|MERGE|CREATE|DETACH DELETE)\s*[(:]"
    r"|\bUNWIND\s+\$|\bRETURN\s+[\w($*]|\bCALL\s*\(|\bCALL\s+[a-z]+\.\w"
    r"|\bSET\s+[a-z]\w*\s*[.+=]|\bSHOW\s+[A-Z]{3,}"
)


def modules(*layers: str) -> Iterator[Path]:
    for layer in layers:
        yield from sorted((ROOT / layer).rglob("*.py"))


def imported(path: Path) -> set[str]:
    """Every module a file imports, anywhere in it, as absolute dotted names."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def strings(path: Path) -> Iterator[tuple[int, str]]:
    """String constants and f-string parts, docstrings left out (prose may name a clause)."""
    tree = ast.parse(path.read_text(), str(path))
    docstrings = {
        id(body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and (body := node.body)
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
    }
    for node in ast.walk(tree):
        is_text = isinstance(node, ast.Constant) and isinstance(node.value, str)
        if is_text and id(node) not in docstrings:
            yield node.lineno, node.value


def where(path: Path, line: int | None = None) -> str:
    rel = str(path.relative_to(ROOT))
    return rel if line is None else f"{rel}:{line}"


def test_click_only_in_the_application_layer() -> None:
    found = [
        where(p) for p in modules("ingest", "query", "schema") if "click" in map(top, imported(p))
    ]
    assert found == [], "click outside circuitstore/"


def test_the_viewer_is_a_click_free_library_over_the_query_layer() -> None:
    """circuitstore/view/ knows nothing of click (commands/view.py is its thin command) and
    reads the store only through `circuitstore.query`."""
    found = [
        f"{where(p)} imports {name}"
        for p in modules("circuitstore/view")
        for name in sorted(imported(p))
        if top(name) == "click"
        or name.startswith(("circuitstore.ingest", "circuitstore.commands", "neo4j"))
    ]
    assert found == []


def test_torch_only_on_the_ingest_side() -> None:
    found = [
        f"{where(p)} imports {sorted(INGEST_ONLY & set(map(top, imported(p))))}"
        for p in modules("circuitstore", "query", "schema")
        if INGEST_ONLY & set(map(top, imported(p)))
    ]
    assert found == [], "packages of the ingest extra outside ingest/"


def test_schema_imports_nothing_of_ours() -> None:
    found = [
        f"{where(p)} imports {name}"
        for p in modules("schema")
        for name in sorted(imported(p))
        if top(name) == "circuitstore" and not name.startswith("circuitstore.schema")
    ]
    assert found == []


def test_ingest_imports_nothing_from_query() -> None:
    found = [
        f"{where(p)} imports {name}"
        for p in modules("ingest")
        for name in sorted(imported(p))
        if name == "circuitstore.query" or name.startswith("circuitstore.query.")
    ]
    assert found == [], "ingest/ sits below query/: the caller hands down what it needs"


def public_definitions(path: Path) -> Iterator[ast.FunctionDef | ast.ClassDef]:
    """A module's public classes and functions, and the public methods of its public classes."""
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and not node.name.startswith("_"):
            yield node
            if isinstance(node, ast.ClassDef):
                yield from (
                    m
                    for m in node.body
                    if isinstance(m, ast.FunctionDef) and not m.name.startswith("_")
                )


def is_stub(node: ast.FunctionDef | ast.ClassDef) -> bool:
    """A protocol member: a function whose body is `...`."""
    body = node.body
    return (
        isinstance(node, ast.FunctionDef)
        and len(body) == 1
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and body[0].value.value is Ellipsis
    )


def test_public_definitions_say_what_they_are_for() -> None:
    found = [
        f"{where(p, node.lineno)} {node.name}"
        for p in modules("ingest", "query", "schema")
        for node in public_definitions(p)
        if not ast.get_docstring(node) and not is_stub(node)
    ]
    assert found == [], "public classes and functions without a docstring"


def cypher_homes(path: Path) -> bool:
    return path.name == "cypher.py" or path.relative_to(ROOT).as_posix() == "schema/ddl.py"


def test_cypher_only_in_cypher_modules() -> None:
    found = [
        f"{where(p, line)}: {text.strip()[:60]!r}"
        for p in modules(*LAYERS)
        if not cypher_homes(p)
        for line, text in strings(p)
        if CYPHER.search(text)
    ]
    assert found == [], "Cypher outside */cypher.py and schema/ddl.py"


@pytest.mark.parametrize(
    "text",
    [
        "MATCH (n:Feature) RETURN n",
        "UNWIND $rows AS r MERGE (f:Feature {id: r.id})",
        "CREATE (p:Prompt) SET p = $props",
        "OPTIONAL MATCH (a)-[r]->(b) RETURN a.id",
        "CALL () { MATCH (x) RETURN x }",
        "RETURN 1",
        "RETURN $x AS x",
        "CALL db.labels()",
        "SHOW INDEXES",
    ],
)
def test_the_cypher_detector_sees_statements(text: str) -> None:
    assert CYPHER.search(text)


@pytest.mark.parametrize(
    "text",
    [
        "Match the feature by name",
        "return the rows",
        "SET",
        "the CREATE verb",
        "MATCH",
        "RETURN",
        "SHOW me",
    ],
)
def test_the_cypher_detector_ignores_prose(text: str) -> None:
    assert not CYPHER.search(text)
