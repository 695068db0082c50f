"""The package as a user installs it: a wheel built from the repository, installed into new venvs
in a temporary folder outside the checkout.

- The full install (`circuitstore[ingest]`) runs `circuitstore server start` (its jars pinned by
  the pom that ships as package data) and `circuitstore demo` (the demo model, transcoders and
  corpus that ship inside the package) against a real Neo4j, and the demo shows each prompt's
  expected answer beside the logit that carries it, node ids with their tokens.
- The base install (no extra) answers `circuitstore query` against that store without torch,
  and `ingest`, `attribute` and `demo` say in one line which extra to install.

Installing torch again costs minutes and gigabytes, so the wheel goes in with `--no-deps` and
the dependencies come from the project's own venv through a `.pth` file: all of its
site-packages for the full install, and for the base install only the distributions the wheel's
base requirements pull in (resolved from its metadata), so that torch is not there to import. A
path a `.pth` line adds is not itself processed for `.pth` files, so the project venv's
editable-install hook stays off and `circuitstore` really comes from the wheel (checked).
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import sysconfig
import tempfile
import urllib.request
import zipfile
from collections.abc import Iterator
from email.parser import Parser
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from circuitstore.demo import CORPUS
from circuitstore.ingest.corpus import shard_of

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "wheel-test-pw 1"
SHARD = (0, 32)  # 25 prompts, every task among them: the ingest stays short
EXTRA_MESSAGE = (
    "Error: circuitstore {command} needs the ingest extra (torch is not installed); "
    "install it with: pip install 'circuitstore[ingest]'"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(cmd: list[str | Path], env: dict[str, str] | None = None, timeout: float = 600):
    """`cmd` run from outside the checkout (`python -c` would import the checkout's own
    `circuitstore` from the working folder)."""
    return subprocess.run(
        [str(c) for c in cmd],
        env=env,
        cwd=tempfile.gettempdir(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def source_tree(dest: Path) -> Path:
    """The checkout's files as a clean clone would hold them (tracked and new, not ignored),
    so that no stale build output of the working tree reaches the wheel."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (n.decode() for n in listed)):
        src = REPO / name
        if src.is_symlink() or src.is_file():  # a file deleted but not yet committed is skipped
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wheel")
    src = source_tree(root / "src")
    # No build isolation: the project venv's setuptools builds it, with no download.
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
    built = run([*cmd, "-w", root / "dist", src])
    assert built.returncode == 0, built.stderr
    (path,) = (root / "dist").glob("circuitstore-*.whl")
    return path


def new_venv(root: Path, wheel: Path, deps: Path) -> Path:
    """A venv at `root` holding the wheel, and `deps` on its path through a .pth file."""
    made = run([sys.executable, "-m", "venv", "--without-pip", root])
    assert made.returncode == 0, made.stderr
    python = root / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q"]
    installed = run([*pip, "--no-deps", "--no-index", wheel])
    assert installed.returncode == 0, installed.stderr
    site = Path(
        run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]
        ).stdout.strip()
    )
    (site / "zz_project_dependencies.pth").write_text(f"{deps}\n")
    return root


def base_requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        message = Parser().parsestr(zf.read(meta).decode())
    return message.get_all("Requires-Dist") or []


def closure(requirements: list[str]) -> set[str]:
    """The distributions (installed here) that `requirements` pull in, extras left out."""
    seen: set[str] = set()
    todo = [(Requirement(r), ("",)) for r in requirements]
    while todo:
        req, extras = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in extras):
            continue
        name = canonicalize_name(req.name)
        if name in seen:
            continue
        seen.add(name)
        dist = importlib.metadata.distribution(req.name)
        todo += [(Requirement(r), ("", *req.extras)) for r in dist.requires or []]
    return seen


def only_these(names: set[str], dest: Path) -> Path:
    """A folder of links to the top-level files and packages (metadata included) of `names`."""
    dest.mkdir()
    for name in names:
        dist = importlib.metadata.distribution(name)
        for top in {
            f.parts[0] for f in dist.files or () if f.parts[0] not in ("..", "__pycache__")
        }:
            target = Path(str(dist.locate_file(top)))
            if target.exists() and not (dest / top).exists():
                (dest / top).symlink_to(target)
    return dest


@pytest.fixture(scope="module")
def full(wheel, tmp_path_factory) -> Path:
    """The wheel with every package of the project's venv importable (as with [ingest])."""
    return new_venv(
        tmp_path_factory.mktemp("full") / "venv", wheel, Path(sysconfig.get_paths()["purelib"])
    )


@pytest.fixture(scope="module")
def base(wheel, tmp_path_factory) -> Path:
    """The wheel with only its base requirements importable: no torch."""
    root = tmp_path_factory.mktemp("base")
    names = closure([r for r in base_requirements(wheel) if "extra ==" not in r])
    assert "torch" not in names
    return new_venv(root / "venv", wheel, only_these(names, root / "site"))


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> dict[str, str]:
    """The users' environment: their data folder in the temporary folder, the password only
    in NEO4J_PASSWORD, no connection settings of the test session."""
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("NEO4J_", "CIRCUITSTORE_"))}
    keep.pop("PYTHONPATH", None)
    home = tmp_path_factory.mktemp("data")
    return {
        **keep,
        "CIRCUITSTORE_HOME": str(home),
        "NEO4J_PASSWORD": PASSWORD,
        "OMP_WAIT_POLICY": "PASSIVE",
    }


@pytest.fixture(scope="module")
def server(full, env) -> Iterator[tuple[int, int]]:
    if not shutil.which("java") or not shutil.which("mvn"):
        if os.environ.get("CI"):
            pytest.fail("the wheel test needs Java 17+ and Maven on PATH", pytrace=False)
        pytest.skip("needs Java 17+ and Maven on PATH")
    cs = full / "bin" / "circuitstore"
    bolt, http = free_port(), free_port()
    sizes = ["--heap", "1g", "--pagecache", "512m", "--timeout", "240"]
    try:
        started = run(
            [cs, "server", "start", "--bolt-port", str(bolt), "--http-port", str(http), *sizes], env
        )
        assert started.returncode == 0, started.stderr
        assert "started (pid " in started.stdout
        yield bolt, http
    finally:
        stopped = run([cs, "server", "stop"], env)
        assert stopped.returncode == 0, stopped.stderr


def first_of_each_task() -> dict[str, dict]:
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines()]
    mine = sorted(
        (r for r in rows if shard_of(r["id"], SHARD[1]) == SHARD[0]), key=lambda r: r["id"]
    )
    return {
        task: next(r for r in mine if r["task"] == task) for task in ("ioi", "years", "induction")
    }


@pytest.fixture(scope="module")
def demo_output(full, env, server) -> str:
    cs = full / "bin" / "circuitstore"
    done = run([cs, "demo", "--shard", f"{SHARD[0]}/{SHARD[1]}", "--no-progress"], env, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    return done.stdout


def test_the_wheel_ships_the_pom_and_the_demo_but_no_build_tool(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "circuitstore/server/pom.xml" in names
    assert "circuitstore/demo/corpus.jsonl" in names
    assert "circuitstore/demo/weights/model/model.safetensors" in names
    assert "circuitstore/demo/weights/model/tokenizer.json" in names
    assert sum(n.startswith("circuitstore/demo/weights/transcoders/") for n in names) == 6
    assert "circuitstore/query/cookbook.cypher" in names
    assert "circuitstore/view/static/vendor/d3.min.js" in names
    assert "circuitstore/view/static/prompt.js" in names
    assert "circuitstore/__main__.py" in names
    assert not [n for n in names if n.startswith(("demo/", "tests/", "benchmarks/", "docker/"))]
    requirements = base_requirements(wheel)
    base = {Requirement(r).name for r in requirements if "extra ==" not in r}
    ingest = {Requirement(r).name for r in requirements if 'extra == "ingest"' in r}
    assert not base & {"torch", "transformer-lens", "tokenizers", "safetensors"}
    assert {
        "torch",
        "transformer-lens",
        "jaxtyping",
        "safetensors",
        "huggingface-hub",
        "tokenizers",
    } <= ingest


def test_circuitstore_comes_from_the_wheel(full, base):
    for venv in (full, base):
        where = run(
            [venv / "bin" / "python", "-c", "import circuitstore; print(circuitstore.__file__)"]
        )
        assert where.returncode == 0, where.stderr
        assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
        assert not Path(where.stdout.strip()).is_relative_to(REPO)
    version = run([full / "bin" / "python", "-m", "circuitstore", "--version"])
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("circuitstore, version ")


def test_server_start_assembles_the_server_from_the_packaged_pom(full, env, server):
    bolt, _ = server
    home = Path(env["CIRCUITSTORE_HOME"]) / "neo4j"
    assert (home / "lib" / ".circuitstore-lib").read_text().startswith("neo4j=5.26.")
    status = run([full / "bin" / "circuitstore", "server", "status"], env)
    assert f"bolt://127.0.0.1:{bolt}" in status.stdout
    # Maven read the installed pom and wrote nothing beside it.
    package = next((full / "lib").glob("python3*/site-packages/circuitstore/server"))
    assert sorted(p.name for p in package.iterdir() if p.name != "__pycache__") == [
        "__init__.py",
        "admin.py",
        "assemble.py",
        "bulk.py",
        "config.py",
        "cypher.py",
        "pom.xml",
        "process.py",
    ]


def test_demo_shows_expected_answers_beside_the_logits_that_carry_them(demo_output, server):
    _, http = server
    out = demo_output
    rows = first_of_each_task()
    for row in rows.values():
        assert f"prompt {row['id']}: {row['text']!r}" in out
    ioi, years, induction = rows["ioi"], rows["years"], rows["induction"]
    # An indirect-object prompt: the non-repeated name decides it; the store reaches the answer
    # through the logit of that very name, and one of the five strongest paths into it starts
    # at that name.
    name = re.escape(repr(ioi["answer"]))
    decided = re.search(rf"expected answer: {name}, decided by (embed0@\d+) {name}\n", out)
    assert decided, out
    assert re.search(rf"reached through logit\[\d+\]@\d+ {name}: the model's top logit\n", out)
    assert re.search(rf"the deciding token {decided[1]} {name} starts path \d", out), out
    assert re.search(rf"\n\d +\S+ +{decided[1]} {name} -> .* -> logit\[\d+\]@\d+ {name}\n", out)
    # A year prompt: any later half is a right answer; the start year's half is in its circuit.
    half = years["source"]
    expected = f"a two-digit half above {half!r} (the corpus gives {years['answer']!r})"
    assert f"expected answer: {expected}, decided by embed0@" in out
    reached = re.search(r"reached through logit\[\d+\]@\d+ '(\d\d)': the model's top logit", out)
    assert reached, out
    assert int(reached[1]) > int(half)
    assert re.search(rf"the deciding token embed0@\d+ '{half}' is node \d+ of \d+ by influ", out)
    # An induction prompt: the word to copy decides it.
    word = re.escape(repr(induction["answer"]))
    assert re.search(rf"expected answer: {word}, decided by embed0@\d+ {word}\n", out), out
    assert re.search(rf"reached through logit\[\d+\]@\d+ {word}: the model's top logit", out)
    # Each question comes with the command that asks it, feature names quoted for the shell.
    assert f"$ circuitstore query paths --prompt {ioi['id']} --to 'logit[" in out
    assert re.search(r"\$ circuitstore query drivers 'mlp\dtc\[\d+\]' --top 5\n", out)
    assert f"Neo4j Browser: http://127.0.0.1:{http}/browser/" in out


def test_the_base_install_answers_queries_without_torch(base, env, server, demo_output):
    python = base / "bin" / "python"
    blocked = run([python, "-c", "import torch"])
    assert blocked.returncode != 0
    assert "No module named 'torch'" in blocked.stderr
    bolt, _ = server
    query_env = {**env, "NEO4J_URI": f"bolt://127.0.0.1:{bolt}"}
    ioi = first_of_each_task()["ioi"]
    paths = run(
        [
            base / "bin" / "circuitstore",
            "query",
            "paths",
            "--prompt",
            ioi["id"],
            "--top",
            "3",
            "--format",
            "json",
        ],
        query_env,
    )
    assert paths.returncode == 0, paths.stderr
    rows = json.loads(paths.stdout)
    assert len(rows) == 3
    assert all(row["path"].split(" -> ")[-1].startswith("logit[") for row in rows)
    # The same call in-process: no module of the ingest extra gets imported.
    code = (
        "import sys\nfrom circuitstore.__main__ import main\n"
        f"try:\n    main(['query', 'paths', '--prompt', {ioi['id']!r}, '--top', '1'])\n"
        "except SystemExit as exc:\n    assert exc.code in (0, None), exc.code\n"
        "heavy = {'torch', 'transformer_lens', 'transformers', 'sqlalchemy'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    inproc = run([python, "-c", code], query_env)
    assert inproc.returncode == 0, inproc.stderr


def test_the_base_install_serves_the_viewer_without_torch(base, env, server, demo_output):
    bolt, _ = server
    view_env = {**env, "NEO4J_URI": f"bolt://127.0.0.1:{bolt}"}
    cmd = [base / "bin" / "circuitstore", "view", "--port", "0", "--no-open"]
    proc = subprocess.Popen(cmd, env=view_env, stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()  # type: ignore[union-attr]
        assert url.startswith("http://127.0.0.1:"), url
        root, token = url.split("/?token=")
        ioi = first_of_each_task()["ioi"]
        for path, expected in [
            ("/", "prompts.js"),
            (f"/prompt/{ioi['id']}", f'"key":"{ioi["id"]}"'),
            ("/static/vendor/d3.min.js", "https://d3js.org v7"),
        ]:
            with urllib.request.urlopen(f"{root}{path}?token={token}", timeout=60) as r:
                assert r.status == 200
                assert expected in r.read().decode()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.parametrize(
    "args",
    [
        ["attribute", "--model", "m", "--transcoders", "t", "--prompt", "x"],
        ["ingest", "--model", "m", "--transcoders", "t", "--prompts", "p.txt"],
        ["demo"],
    ],
)
def test_the_base_install_names_the_extra_in_one_line(base, env, args):
    done = run([base / "bin" / "circuitstore", *args], env)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip() == EXTRA_MESSAGE.format(command=args[0])
