"""Settings of the local Neo4j server and the neo4j.conf rendered from them.

Pure functions only (no Java, no Maven, no processes), so the unit tests can check every rule.
"""

from __future__ import annotations

import re
import socket
from dataclasses import dataclass
from pathlib import Path

from circuitstore.schema.errors import ConfigError
from circuitstore.schema.home import data_home

# Fitted to the 2-core / 24 GiB machines this project runs on: the model and the ingest need
# the rest of the memory.
DEFAULT_HEAP = "2g"
DEFAULT_PAGECACHE = "2g"
# `circuitstore demo`'s server, also the one the README's next step (GPT-2) writes into: its
# transactions may hold 70% of the heap, 1.4 GiB, and a 64-token GPT-2-scale prompt's write took
# about 430 MiB (benchmarks/bench_write_memory.py), twice that at 128 tokens.
DEMO_HEAP = "2g"
DEMO_PAGECACHE = "1g"
DEFAULT_BOLT_PORT = 7687
DEFAULT_HTTP_PORT = 7474
MIN_PASSWORD_LENGTH = 8  # Neo4j refuses shorter initial passwords.
PASSWORD_ENV = "NEO4J_PASSWORD"

# Flags Neo4j 5.26's launcher gives every server JVM (the defaults of its neo4j.conf, which
# CommunityEntryPoint does not read when it is started directly).
JVM_FLAGS: tuple[str, ...] = (
    "-XX:+UseG1GC",
    "-XX:-OmitStackTraceInFastThrow",
    "-XX:+UnlockExperimentalVMOptions",
    "-XX:+TrustFinalNonStaticFields",
    "-XX:+DisableExplicitGC",
    "-Djdk.nio.maxCachedBufferSize=1024",
    "-Dio.netty.tryReflectionSetAccessible=true",
    "-Djdk.tls.ephemeralDHKeySize=2048",
    "-Djdk.tls.rejectClientInitiatedRenegotiation=true",
    "--add-opens=java.base/java.nio=ALL-UNNAMED",
    "--add-opens=java.base/java.io=ALL-UNNAMED",
    "--add-opens=java.base/sun.nio.ch=ALL-UNNAMED",
    "--enable-native-access=ALL-UNNAMED",
    "-Dlog4j2.disable.jmx=true",
    "-Dfile.encoding=UTF-8",
)

_SIZE = re.compile(r"^(\d+)([kmg])$")


@dataclass(frozen=True)
class ServerSettings:
    """Everything `circuitstore server start` can change."""

    home: Path
    bolt_port: int = DEFAULT_BOLT_PORT
    http_port: int = DEFAULT_HTTP_PORT
    heap: str = DEFAULT_HEAP
    pagecache: str = DEFAULT_PAGECACHE

    def __post_init__(self) -> None:
        # Normalise once so that conf and JVM flags always agree.
        object.__setattr__(self, "heap", parse_size(self.heap, "--heap"))
        object.__setattr__(self, "pagecache", parse_size(self.pagecache, "--pagecache"))
        for name, port in (("--bolt-port", self.bolt_port), ("--http-port", self.http_port)):
            check_port_number(port, name)
        if self.bolt_port == self.http_port:
            raise ConfigError(
                f"--bolt-port and --http-port are both {self.bolt_port}; give them different ports"
            )

    @property
    def bolt_uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    @property
    def browser_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/browser/"


def default_home(env: dict[str, str] | None = None) -> Path:
    """The server home: `neo4j` in the data folder, beside the run catalog."""
    return data_home(env) / "neo4j"


def parse_size(value: str, option: str) -> str:
    """Normalise a memory size to the JVM's form ("512m", "2g"); Neo4j reads the same."""
    text = value.strip().lower().removesuffix("b").removesuffix("i")
    match = _SIZE.match(text)
    if not match or int(match.group(1)) == 0:
        raise ConfigError(f"{option} {value!r} is not a memory size; use e.g. 512m or 2g")
    return text


def check_port_number(port: int, option: str) -> None:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{option} {port} is out of range; use a port between 1 and 65535")


def validate_password(password: str | None) -> str:
    """The initial password from NEO4J_PASSWORD; the message never contains the value."""
    if not password:
        raise ConfigError(
            f"{PASSWORD_ENV} is not set; export {PASSWORD_ENV} with a password of at least "
            f"{MIN_PASSWORD_LENGTH} characters"
        )
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"{PASSWORD_ENV} is {len(password)} characters long; Neo4j needs at least "
            f"{MIN_PASSWORD_LENGTH}"
        )
    return password


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something already listens on host:port (a bind would fail)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # SO_REUSEADDR lets a port in TIME_WAIT count as free, as it will be for the JVM.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def check_ports_free(settings: ServerSettings) -> None:
    for option, port in (("--bolt-port", settings.bolt_port), ("--http-port", settings.http_port)):
        if port_in_use(port):
            raise ConfigError(
                f"port {port} on 127.0.0.1 is already in use; stop what listens there or "
                f"choose another with {option}"
            )


def conf_settings(settings: ServerSettings) -> dict[str, str]:
    """The neo4j.conf settings, in the order they are written."""
    home = settings.home
    return {
        # Loopback only: this server is for the local user, never the network.
        "server.default_listen_address": "127.0.0.1",
        "server.default_advertised_address": "127.0.0.1",
        "server.bolt.enabled": "true",
        "server.bolt.listen_address": f":{settings.bolt_port}",
        "server.bolt.advertised_address": f":{settings.bolt_port}",
        "server.http.enabled": "true",
        "server.http.listen_address": f":{settings.http_port}",
        "server.http.advertised_address": f":{settings.http_port}",
        "server.https.enabled": "false",
        "dbms.security.auth_enabled": "true",
        # Read by the DBMS itself. The heap lines are for the record: CommunityEntryPoint
        # ignores them, the same values go on the java command line.
        "server.memory.heap.initial_size": settings.heap,
        "server.memory.heap.max_size": settings.heap,
        "server.memory.pagecache.size": settings.pagecache,
        "server.directories.data": str(home / "data"),
        "server.directories.logs": str(home / "logs"),
        "server.directories.run": str(home / "run"),
        "server.directories.import": str(home / "import"),
        "server.directories.plugins": str(home / "plugins"),
        # Netty's default quiet period makes every stop wait 10 s doing nothing.
        "internal.dbms.bolt.netty_server_shutdown_quiet_period": "0",
        "internal.dbms.bolt.netty_server_shutdown_timeout": "2",
        # No traffic leaves the machine on the server's initiative.
        "dbms.usage_report.enabled": "false",
        "client.allow_telemetry": "false",
    }


def render_conf(settings: ServerSettings) -> str:
    lines = ["# Written by `circuitstore server start`; changes are overwritten on each start."]
    lines += [f"{key}={value}" for key, value in conf_settings(settings).items()]
    return "\n".join(lines) + "\n"


def jvm_command(settings: ServerSettings, java: str) -> list[str]:
    """The java command line that runs the server in the foreground."""
    home = settings.home
    return [
        java,
        f"-Xms{settings.heap}",
        f"-Xmx{settings.heap}",
        *JVM_FLAGS,
        "-cp",
        f"{home / 'lib'}/*:{home / 'conf'}/*",
        "org.neo4j.server.CommunityEntryPoint",
        f"--home-dir={home}",
        f"--config-dir={home / 'conf'}",
        "--console-mode",
    ]


def env_to_setting(name: str) -> str | None:
    """The neo4j.conf key of a NEO4J_* variable, as the official image maps it.

    The same rule as docker/entrypoint.sh: prefix dropped, ``__`` to ``_``, ``_`` to ``.``;
    all-capital names (NEO4J_AUTH, NEO4J_HOME...) are not settings.
    """
    if not name.startswith("NEO4J_"):
        return None
    rest = name.removeprefix("NEO4J_")
    if not any(ch.islower() for ch in rest):
        return None
    return ".".join(part.replace("\x01", "_") for part in rest.replace("__", "\x01").split("_"))
