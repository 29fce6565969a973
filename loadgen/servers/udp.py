"""The DTLS server's UDP socket: bound once, then shared by the workers of one port or served alone."""

from __future__ import annotations

import socket as _stdsocket


def bind_udp(host: str, port: int, *, reuse_port: bool) -> _stdsocket.socket:
    """A UDP socket bound to ``host:port`` (``reuse_port``: one of several workers' on one port)."""
    family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
    sock = _stdsocket.socket(family, _stdsocket.SOCK_DGRAM)
    try:
        if reuse_port:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
        # Thousands of clients send at once: a bigger receive buffer rides out bursts.
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock
