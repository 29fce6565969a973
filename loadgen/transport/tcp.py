"""TCP for :class:`~loadgen.transport.ssl_socket.SslSocket`: resolving a host, connecting to
the first of its addresses that accepts within a deadline, the socket option pings want, and
socket errors met while reading or writing as loadgen errors."""

from __future__ import annotations

import _socket  # the C functions: never monkey-patched, so a numeric host needs no resolver thread
import errno
import functools
import os
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
    ProtocolViolation,
    SocketError,
    SocketsExhausted,
    socket_error,
)
from loadgen.transport.fds import check_room

#: What :func:`resolve` returns: ``getaddrinfo``'s (family, type, proto, canonname, address) tuples.
AddressInfo = list[tuple[Any, ...]]


def resolve(host: str, port: int, timeout: float) -> AddressInfo:
    """The TCP addresses of ``host``; raises HostNotFound, or ConnectTimeout after ``timeout`` seconds."""
    if (numeric := _numeric(host, port)) is not None:
        return list(numeric)
    try:
        with gevent.Timeout(timeout, ConnectTimeout(f"cannot resolve {host} in {timeout:g} s")):
            infos: AddressInfo = socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise HostNotFound(f"{host}: {exc}") from None
    return infos


@functools.lru_cache(maxsize=1024)
def _numeric(host: str, port: int) -> tuple[Any, ...] | None:
    """The addresses of an address literal (the usual target), or None for a name. C's getaddrinfo
    with AI_NUMERICHOST returns at once, where gevent's resolver hands every call to a thread (about a
    third of a loopback handshake's client CPU went to that thread pool). Cached, as a literal's
    addresses never change: the call also ran the host through Python's IDNA codec every time."""
    try:
        return tuple(_socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM, 0, _socket.AI_NUMERICHOST))
    except (OSError, UnicodeError):
        return None  # a name (or no address at all): the resolver's, uncached (its answers change)


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


def open_stream(family: int, kind: int, proto: int, address: Any, source: str | None) -> tuple[Any, int]:
    """A non-blocking C TCP socket (never monkey-patched: an event-driven client's hot path) whose
    connect to ``address`` has begun; returns it with ``connect_ex``'s code (0 or EINPROGRESS: in
    progress or done; anything else: failed). Raises OSError (SocketsExhausted at the file limit)."""
    sock = None
    try:
        # Inside the try: at the open-file limit socket() itself fails (EMFILE): a socket-error.
        # Non-blocking from socket() itself: setblocking() would be two fcntl calls per connection.
        sock = _socket.socket(family, kind | _socket.SOCK_NONBLOCK, proto)
        check_room(sock.fileno(), "cannot open a TCP socket")
        if source:
            sock.bind((source, 0))
        # Pings are small request/response exchanges: Nagle plus delayed ACKs would add ~40 ms.
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        return sock, sock.connect_ex(address)
    except OSError:
        if sock is not None:
            sock.close()
        raise


def is_connected(sock: Any) -> bool:
    """Whether the TCP connection whose non-blocking connect began is up already (Linux answers
    ENOTCONN while the SYN is out, and for a connect that failed)."""
    try:
        sock.getpeername()
    except OSError:
        return False
    return True


def connect_failure(code: int, host: str, port: int) -> LoadgenError:
    """The error for a non-blocking connect that ended with errno ``code``."""
    if code == errno.ECONNREFUSED:
        return ConnectionRefused(f"{host}:{port} refused the connection (TCP RST)")
    return socket_error(OSError(code, os.strerror(code)), f"cannot connect to {host}:{port}")


def take_lines(buffer: bytearray, data: bytes, cap: int) -> list[bytes]:
    """The complete lines (without their ``\\n``) of what ``buffer`` held plus ``data``; the rest stays
    in ``buffer``. More than ``cap`` bytes without a newline raise ProtocolViolation (a bounded buffer)."""
    if not buffer and data and data.find(b"\n") == len(data) - 1:
        return [data[:-1]]  # the usual case: one whole reply in one record, no copy
    buffer += data
    lines = []
    while (end := buffer.find(b"\n")) >= 0:
        lines.append(bytes(buffer[:end]))
        del buffer[: end + 1]
    if len(buffer) > cap:  # a line without an end: do not buffer it all
        raise ProtocolViolation(f"a reply line over {cap // 1024} KiB")
    return lines
