"""Assemble a Neo4j server home from Maven Central: Java check, lib/ via Maven, folders, password.

There is no Neo4j package on PyPI or in Debian, and neo4j.com may be unreachable; Maven Central
holds every jar of the Community server, so lib/ is resolved from the pom.xml that ships beside
this module as package data (docker/pom.xml in a checkout links to it).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from circuitstore.schema.errors import ServerError
from circuitstore.server.config import PASSWORD_ENV

POM_ENV = "CIRCUITSTORE_NEO4J_POM"
MARKER = ".circuitstore-lib"
MIN_JAVA = 17
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}
_JAVA_VERSION = re.compile(r'version "(\d+)(?:\.(\d+))?')


@dataclass(frozen=True)
class Versions:
    neo4j: str
    browser: str

    def marker_text(self) -> str:
        return f"neo4j={self.neo4j}\nneo4j-browser={self.browser}\n"


PACKAGED_POM = Path(__file__).resolve().with_name("pom.xml")


def pom_path() -> Path:
    """The pom that pins the server's jars: package data beside this module, or the file
    $CIRCUITSTORE_NEO4J_POM names."""
    override = os.environ.get(POM_ENV)
    path = Path(override) if override else PACKAGED_POM
    if not path.is_file():
        where = f"{POM_ENV} names" if override else "this installation lacks"
        raise ServerError(
            f"{path} not found ({where} it); point {POM_ENV} at a pom.xml like the one in "
            "the source repository's circuitstore/server/, or reinstall circuitstore"
        )
    return path


def read_versions(pom: Path) -> Versions:
    props = ET.parse(pom).getroot().find("m:properties", _POM_NS)
    neo4j = props.findtext("m:neo4j.version", namespaces=_POM_NS) if props is not None else None
    browser = (
        props.findtext("m:neo4j-browser.version", namespaces=_POM_NS) if props is not None else None
    )
    if not neo4j or not browser:
        raise ServerError(f"{pom} lacks neo4j.version or neo4j-browser.version properties")
    return Versions(neo4j=neo4j.strip(), browser=browser.strip())


def find_java() -> str:
    """A Java 17+ binary: $JAVA_HOME/bin/java first, then PATH."""
    java_home = os.environ.get("JAVA_HOME")
    candidate = Path(java_home) / "bin" / "java" if java_home else None
    java = str(candidate) if candidate and candidate.is_file() else shutil.which("java")
    if not java:
        raise ServerError(
            "Java is not installed; install Java 17 or 21 (apt-get install openjdk-17-jre-headless)"
        )
    major = java_major_version(java)
    if major < MIN_JAVA:
        raise ServerError(
            f"{java} is Java {major}; Neo4j 5.26 needs Java 17 or 21 (set JAVA_HOME to one)"
        )
    return java


def java_major_version(java: str) -> int:
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise ServerError(f"{java} cannot be run ({exc.strerror}); install Java 17 or 21") from exc
    match = _JAVA_VERSION.search(proc.stderr + proc.stdout)
    if not match:
        raise ServerError(f"{java} -version printed no version; install Java 17 or 21")
    major = int(match.group(1))
    # Java 8 and older report "1.8.0_x".
    return int(match.group(2) or 0) if major == 1 else major


def ensure_writable(home: Path) -> None:
    """Create the home and prove it can be written, before anything slow happens."""
    probe = home / ".write-test"
    try:
        home.mkdir(parents=True, exist_ok=True)
        probe.write_text("ok")
        probe.unlink()
    except OSError as exc:
        raise ServerError(
            f"cannot write to the data directory {home} ({exc.strerror}); choose a writable one "
            f"with --home or $CIRCUITSTORE_HOME"
        ) from exc


def lib_ready(home: Path, versions: Versions) -> bool:
    marker = home / "lib" / MARKER
    return marker.is_file() and marker.read_text() == versions.marker_text()


def ensure_lib(home: Path, pom: Path, versions: Versions) -> bool:
    """Fill home/lib with the server jars unless the marker says they are already there.

    Returns True when Maven ran. Maven writes into a fresh folder that replaces lib/ only on
    success, so an interrupted download never leaves a half-filled lib/ behind a valid marker.
    """
    if lib_ready(home, versions):
        return False
    lib = home / "lib"
    staging = home / "lib.partial"
    shutil.rmtree(staging, ignore_errors=True)
    run_maven(pom, staging)
    (staging / MARKER).write_text(versions.marker_text())
    shutil.rmtree(lib, ignore_errors=True)
    staging.rename(lib)
    return True


def run_maven(pom: Path, output: Path) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise ServerError("Maven (mvn) is not installed; install it (apt-get install maven)")
    cmd = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    cmd.append(f"-DoutputDirectory={output}")
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ServerError(
            f"Maven could not download the Neo4j jars ({maven_reason(proc.stdout + proc.stderr)});"
            " check access to Maven Central (repo1.maven.org) and proxies in ~/.m2/settings.xml"
        )


def maven_reason(output: str) -> str:
    """The first [ERROR] line of Maven's output, shortened to fit one line."""
    for line in output.splitlines():
        if line.startswith("[ERROR]") and line.strip() != "[ERROR]":
            text = line.removeprefix("[ERROR]").strip()
            return text if len(text) <= 200 else text[:197] + "..."
    return "no error message; run mvn by hand to see it"


def ensure_folders(home: Path) -> None:
    for name in ("conf", "data", "logs", "run", "import", "plugins"):
        (home / name).mkdir(parents=True, exist_ok=True)


def store_exists(home: Path) -> bool:
    """True once the server has started on this data: the password is then in the store."""
    return (home / "data" / "databases" / "system").is_dir()


def set_initial_password(home: Path, java: str, password: str) -> None:
    """neo4j-admin dbms set-initial-password, run before the first start only.

    The password never appears on a command line (any local user can read those in /proc):
    the whole command goes in a Java argument file (`java @FILE`) that only the owner can read,
    in a private temporary folder removed at once. The admin tool gets a conf of its own holding
    only the data folder: it validates strictly against fewer declared settings than the server.
    """
    with tempfile.TemporaryDirectory(prefix="neo4j-admin-") as conf:  # created 0700
        data = home / "data"
        Path(conf, "neo4j.conf").write_text(f"server.directories.data={data}\n")
        argfile = Path(conf, "args")
        fd = os.open(argfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(admin_argfile(home, password))
        env = {k: v for k, v in os.environ.items() if k != PASSWORD_ENV}
        env.update(NEO4J_HOME=str(home), NEO4J_CONF=conf)
        proc = subprocess.run(
            [java, f"@{argfile}"], capture_output=True, text=True, env=env, check=False
        )
    if proc.returncode != 0:
        reason = admin_reason(proc.stdout + proc.stderr).replace(password, "<password>")
        raise ServerError(f"could not set the initial password ({reason})")


def admin_argfile(home: Path, password: str) -> str:
    """The admin tool's command as a Java argument file: one argument a line, each quoted, with
    backslash, quote and line breaks escaped as the launcher's argument-file syntax wants."""
    args = ["-cp", f"{home / 'lib'}/*", "org.neo4j.cli.AdminTool", "dbms"]
    args += ["set-initial-password", "--", password]  # `--`: a password may start with "-"
    return "".join(f'"{_argfile_escape(arg)}"\n' for arg in args)


def _argfile_escape(arg: str) -> str:
    table = {"\\": "\\\\", '"': '\\"', "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "".join(table.get(ch, ch) for ch in arg)


def admin_reason(output: str) -> str:
    """The first line that is not a stack frame; the tool never echoes the password."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reasons = [line for line in lines if not line.startswith("at ")]
    text = (reasons or ["no output"])[0]
    return text if len(text) <= 200 else text[:197] + "..."
