"""The master's listening sockets: the workbench port, and the engine-content port when engine
content is served on its own port (settings engine_origin=port, sessions/engine_origin.py)."""

from __future__ import annotations

import socket
from typing import Any, List


def engine_listener_port(settings: Any) -> int:
    """The second port to listen on, or 0 for none."""
    if settings.engine_origin != "port" or not settings.engine_port \
            or settings.engine_port == settings.http_port:
        return 0
    return int(settings.engine_port)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError("cannot listen on %s:%d (%s); free the port or change it in the settings"
                      % (host, port, e.strerror or e)) from None
    sock.set_inheritable(True)
    return sock


def sockets(settings: Any, host: str, port: int) -> List[socket.socket]:
    out = [bind(host, port)]
    extra = engine_listener_port(settings)
    if extra:
        out.append(bind(host, extra))
    return out


def serve(app: Any, settings: Any, host: str, port: int, **uvicorn_options: Any) -> None:
    """uvicorn.run on every listening socket the settings ask for, in the foreground."""
    import uvicorn

    config = uvicorn.Config(app, host=host, port=port, **uvicorn_options)
    uvicorn.Server(config).run(sockets=sockets(settings, host, port))
