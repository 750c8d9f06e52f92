"""Small network helpers shared by the roles and the checks."""

from __future__ import annotations

import socket


def port_free(address: str, port: int) -> bool:
    """True when a TCP listener could bind address:port now (IPv4 or IPv6)."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError:
            return False
    return True
