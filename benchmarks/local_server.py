"""A throwaway Neo4j for the benchmarks: `circuitstore server` in a home of its own, on free
loopback ports, driven through the real CLI."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class LocalServer:
    home: Path
    password: str
    heap: str = "4g"
    pagecache: str = "4g"
    bolt: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt}"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "NEO4J_PASSWORD": self.password, "NEO4J_URI": self.uri}

    def start(self) -> None:
        self._cli(
            "start",
            "--bolt-port",
            str(self.bolt),
            "--http-port",
            str(self.http),
            "--heap",
            self.heap,
            "--pagecache",
            self.pagecache,
        )

    def stop(self) -> None:
        self._cli("stop")

    def _cli(self, command: str, *args: str) -> None:
        cmd = [
            sys.executable,
            "-m",
            "circuitstore.cli",
            "server",
            command,
            "--home",
            str(self.home),
        ]
        subprocess.run([*cmd, *args], check=True, env=self.env)
