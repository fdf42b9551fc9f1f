"""Serving an ASGI app on loopback for one local user (``securepacs view``).

One responsibility: bind 127.0.0.1 on the given or a free port (never another interface:
the viewer shows patient data and is for the person at this computer), run uvicorn on that
socket until interrupted, and say where it listens once it does.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

import uvicorn
from starlette.applications import Starlette

from securepacs.errors import ConfigError

__all__ = ["HOST", "bind", "run"]

HOST = "127.0.0.1"


def bind(port: int = 0) -> socket.socket:
    """A listening socket on 127.0.0.1:`port` (0: a free port).

    Raises
    ------
    ConfigError
        The port is taken or not allowed.
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.bind((HOST, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {HOST}:{port}: {exc.strerror or exc}") from None
    sock.listen(64)
    return sock


def run(app: Starlette, sock: socket.socket, on_ready: Callable[[int], None]) -> None:
    """Serve `app` on `sock` until Ctrl-C; `on_ready(port)` is called once it accepts."""
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                           lifespan="on", timeout_graceful_shutdown=2))

    def announce() -> None:
        for _ in range(200):
            if server.started:
                on_ready(port)
                return
            threading.Event().wait(0.05)

    threading.Thread(target=announce, name="viewer-ready", daemon=True).start()
    server.run(sockets=[sock])
