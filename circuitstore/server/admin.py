"""`neo4j-admin database import full` on a server home's database (the server stopped)."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from circuitstore.ingest.parts.build import ImportFiles
from circuitstore.schema.errors import ServerError
from circuitstore.server import assemble

ADMIN_CLASS = "org.neo4j.cli.AdminTool"


def import_command(
    files: ImportFiles, database: str, threads: int | None = None, root: str | None = None
) -> list[str]:
    """The admin tool's arguments (after its class) for these files, replacing `database`;
    `root` names the files' folder as the tool will see it (a container's mount point)."""

    def at(path: Path) -> str:
        return f"{root.rstrip('/')}/{path.name}" if root else str(path)

    args = ["database", "import", "full", database, "--id-type=string"]
    args += [f"--threads={threads}"] if threads else []
    args += [f"--array-delimiter=U+{ord(files.delimiter):04X}"]
    args += [f"--report-file={at(files.folder / 'import.report')}"]
    if files.multiline:
        args += ["--multiline-fields-format=v2"]
        args += ["--multiline-fields=" + ",".join(at(p) for p in files.multiline)]
    args += [f"--nodes={lab}={at(path)}" for lab, path in files.nodes if lab != "GraphNode"]
    args += [f"--nodes={at(path)}" for lab, path in files.nodes if lab == "GraphNode"]
    args += [f"--relationships={rel}={at(path)}" for rel, path in files.relationships]
    return args


def write_args_file(files: ImportFiles, root: str, database: str = "neo4j") -> Path:
    """`neo4j-admin.args` beside the files: the import's arguments, one a line, for
    `neo4j-admin @ROOT/neo4j-admin.args` where the files are mounted at `root` (it replaces
    the database: the operator asked for it by running it)."""
    args = [*import_command(files, database, root=root), "--overwrite-destination=true"]
    path = files.folder / "neo4j-admin.args"
    path.write_text("".join(f"{a}\n" for a in args))
    return path


def import_full(
    home: Path,
    files: ImportFiles,
    database: str = "neo4j",
    heap: str = "1g",
    on_line: Callable[[str], None] = lambda _: None,
) -> None:
    """Replace `database` of the (stopped) server in `home` with the import of `files`.
    `on_line` hears the tool's output lines; a failure raises ServerError with its last, and
    leaves the database as it was: the import goes to a data folder of its own, which replaces
    the database's only once complete (an importer stopped half-way leaves a store that cannot
    start)."""
    java = assemble.find_java()
    threads = max(1, os.cpu_count() or 1)
    staging = files.folder / "data"
    with tempfile.TemporaryDirectory(prefix="neo4j-admin-") as conf:
        # The admin tool's own conf, holding only the data folder (as for the password).
        Path(conf, "neo4j.conf").write_text(f"server.directories.data={staging}\n")
        env = {**os.environ, "NEO4J_HOME": str(home), "NEO4J_CONF": conf}
        cmd = [java, f"-Xmx{heap}", "-cp", f"{home / 'lib'}/*", ADMIN_CLASS]
        cmd += import_command(files, database, threads)
        proc = subprocess.Popen(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        said = ""
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.strip()
            if line:
                on_line(line)
            if line and not line.startswith(("at ", "Run with", "...")):
                said = line  # the tool's last own words, not a stack frame
        if proc.wait() != 0:
            raise ServerError(f"neo4j-admin database import failed: {said[:300]}")
    _swap(home / "data", staging, database)


def _swap(data: Path, staging: Path, database: str) -> None:
    """Put the imported store files in place of the database's (same filesystem: renames)."""
    for sub in ("databases", "transactions"):
        old, new = data / sub / database, staging / sub / database
        if old.exists():
            old.rename(staging / sub / f"{database}.replaced")
        old.parent.mkdir(parents=True, exist_ok=True)
        new.rename(old)
