"""Serving the viewer: a socket bound on 127.0.0.1 before anything starts (so a port in use is
one clear error), a fresh random token, and uvicorn on that socket until interrupted."""

from __future__ import annotations

import errno
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass

from circuitstore.query import CircuitStore
from circuitstore.schema.errors import ConfigError

HOST = "127.0.0.1"  # never another interface: the viewer reads the whole store
DEFAULT_PORT = 8765


@dataclass(frozen=True)
class Viewer:
    """A bound socket and the token its URLs need."""

    sock: socket.socket
    token: str

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    @property
    def url(self) -> str:
        """The full URL, token included: the one line `circuitstore view` prints."""
        return f"http://{HOST}:{self.port}/?token={self.token}"


def bind(port: int) -> Viewer:
    """A socket listening on 127.0.0.1:`port` (0: any free port) and a new token."""
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port}: expected 0..65535 (0 picks a free one)")
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigError(
                f"port {port} on {HOST} is in use: choose another with --port (0 picks a free one)"
            ) from None
        raise ConfigError(f"cannot listen on {HOST}:{port}: {exc.strerror}") from None
    return Viewer(sock, secrets.token_urlsafe(32))


def run(viewer: Viewer, store: CircuitStore, ready: Callable[[], None] | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM); `ready` runs once the server listens, after
    a warm-up read (`payloads.warm`)."""
    import uvicorn

    from circuitstore.view.app import create_app
    from circuitstore.view.payloads import warm

    app = create_app(store, viewer.token, viewer.port)
    # Before the URL is printed: a user's first page should not wait for the server to plan
    # the statements (requests made meanwhile queue on the bound socket).
    warm(store, app.state.cache)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    if ready is not None:
        startup = server.startup

        async def started(sockets: list[socket.socket] | None = None) -> None:
            await startup(sockets)
            ready()

        server.startup = started  # type: ignore[method-assign]
    server.run(sockets=[viewer.sock])
