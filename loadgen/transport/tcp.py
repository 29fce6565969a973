"""TCP for :class:`~loadgen.transport.ssl_socket.SslSocket`: resolving a host, connecting to
the first of its addresses that accepts within a deadline, the socket option pings want, and
socket errors met while reading or writing as loadgen errors."""

from __future__ import annotations

import _socket  # the C functions: never monkey-patched, so a numeric host needs no resolver thread
import socket as _stdsocket
import time
from typing import Any

import gevent
from gevent import socket

from loadgen.protocol.errors import (
    ConnectionRefused,
    ConnectionReset,
    ConnectTimeout,
    HostNotFound,
    LoadgenError,
    SocketError,
    SocketsExhausted,
    socket_error,
)
from loadgen.transport.fds import check_room

#: What :func:`resolve` returns: ``getaddrinfo``'s (family, type, proto, canonname, address) tuples.
AddressInfo = list[tuple[Any, ...]]


def resolve(host: str, port: int, timeout: float) -> AddressInfo:
    """The TCP addresses of ``host``; raises HostNotFound, or ConnectTimeout after ``timeout`` seconds."""
    try:
        # An address literal (the usual target) resolves without a lookup: C's getaddrinfo with
        # AI_NUMERICHOST returns at once, where gevent's resolver hands every call to a thread
        # (about a third of a loopback handshake's client CPU went to that thread pool).
        numeric: AddressInfo = _socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM, 0, _socket.AI_NUMERICHOST)
        return numeric
    except (OSError, UnicodeError):
        pass  # a name (or no address at all): ask the resolver
    try:
        with gevent.Timeout(timeout, ConnectTimeout(f"cannot resolve {host} in {timeout:g} s")):
            infos: AddressInfo = socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise HostNotFound(f"{host}: {exc}") from None
    return infos


def connect(infos: AddressInfo, host: str, port: int, deadline: float, source: str | None) -> socket.socket:
    """Connect to the first address that accepts, within the deadline."""
    error: LoadgenError = HostNotFound(f"{host}: no address")
    for family, kind, proto, _, address in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = None
        try:
            # Inside the try: at the open-file limit socket() itself fails (EMFILE): a socket-error.
            sock = socket.socket(family, kind, proto)
            check_room(sock.fileno(), "cannot open a TCP socket")
            if source:
                sock.bind((source, 0))
            with gevent.Timeout(remaining, ConnectTimeout(f"{host}:{port}: no TCP connection in time")):
                sock.connect(address)
        except ConnectionRefusedError:
            if sock is not None:
                sock.close()
            error = ConnectionRefused(f"{host}:{port} refused the connection (TCP RST)")
            continue
        except (ConnectTimeout, SocketsExhausted) as exc:
            if sock is not None:
                sock.close()
            error = exc
            break
        except OSError as exc:
            if sock is not None:
                sock.close()
            error = socket_error(exc, f"cannot connect to {host}:{port}")
            continue
        tune(sock)
        return sock
    raise error


def tune(sock: socket.socket) -> None:
    """Set what a request/response stream wants on a connected TCP socket."""
    # Pings are small request/response exchanges: Nagle plus delayed ACKs would add ~40 ms.
    try:
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    except OSError:
        pass


def transfer_error(exc: OSError, during: str) -> LoadgenError:
    """The error for a socket failing ``during`` a read or a write of an established connection."""
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ConnectionReset(f"connection reset during {during}")
    return SocketError(f"{during} failed: {exc}")
