"""The reference TLS server: a line echo over TLS, one greenlet per connection.

Certificate and key, pre-shared keys, or both (see
:func:`loadgen.protocol.openssl.tls_contexts.server_context`); optionally requires client
certificates. Each received line is answered at once, either echoed or in the style of
Qt's DTLS server example ("to IDENTITY: LINE").

Limits: at most ``max_connections`` open connections (a newcomer over it is accepted and
reset at once, counted ``server-full``: a client sees a refusal, not a hang); the handshake
must complete within ``handshake_timeout``; each line must complete within
``idle_timeout`` of the previous one (or of the handshake): bytes that never make a line
do not keep a connection open. Accept errors (e.g. EMFILE) back off up to a second and
are logged at most once a second. One connection's unexpected exception ends that
connection (``internal-error``), never the accept loop.
"""

from __future__ import annotations

import logging
import resource
import socket as _stdsocket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

import gevent
from gevent import socket

from loadgen.protocol.errors import InternalError, LoadgenError, ServerFull
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.stats.throttle import ThrottledLog, exception_summary
from loadgen.transport.ssl_link import State
from loadgen.transport.ssl_socket import SslSocket

log = logging.getLogger("loadgen.server")

#: File descriptors kept free under the open-file limit by the default connection cap: the
#: listener, stdio, log files, and the one a refused newcomer needs to be accepted and reset.
FD_HEADROOM = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 60.0
#: Accept errors back off from this, doubling, up to a second.
_ACCEPT_BACKOFF = (0.01, 1.0)


def default_max_connections() -> int:
    """The open-file limit (soft) minus :data:`FD_HEADROOM` (a quarter of a small limit),
    at least 1, at most 100,000."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 100_000
    return max(1, min(100_000, soft - min(FD_HEADROOM, soft // 4)))


@dataclass
class TlsServerStats:
    """What the server has seen; ``failures`` is keyed by error code."""

    connections: int = 0
    handshakes: int = 0
    resumed: int = 0
    lines: int = 0  # lines received
    pings: int = 0  # lines answered
    closed_by_peer: int = 0
    expired: int = 0  # closed for being idle
    failures: Counter[str] = field(default_factory=Counter)


class TlsServer:
    """Reference TLS server. ``start()`` binds and accepts in a background greenlet."""

    def __init__(
        self,
        context: TlsContext,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        reply: str = "echo",
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        max_line: int = 65536,
        backlog: int = 4096,
        max_connections: int | None = None,
    ) -> None:
        """``idle_timeout``: each line must complete within this long of the previous one.
        ``max_connections``: default :func:`default_max_connections`."""
        if reply not in ("echo", "qt"):
            raise ValueError(f"reply must be 'echo' or 'qt', not {reply!r}")
        if not context.is_server:
            raise ValueError("TlsServer needs a server context")
        self._context = context
        self._host, self._port = host, port
        self._reply = reply
        if handshake_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("handshake_timeout and idle_timeout must be > 0")
        self.handshake_timeout = handshake_timeout
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections if max_connections is not None else default_max_connections()
        if self.max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._max_line = max_line
        self._backlog = backlog
        self._listener: socket.socket | None = None
        self._acceptor: gevent.Greenlet | None = None
        self._connections: dict[SslSocket, gevent.Greenlet] = {}
        self.stats = TlsServerStats()
        self._log = ThrottledLog(log)
        self._accept_log = ThrottledLog(log, interval=1.0, burst=1)  # at most a line a second, with counts

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "server not started"
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

    def describe_limits(self) -> str:
        """The limits in force, for the listening line."""
        return (f"max {self.max_connections} connections, handshake timeout {self.handshake_timeout:g}s, "
                f"idle timeout {self.idle_timeout:g}s")

    def start(self) -> TlsServer:
        family = _stdsocket.AF_INET6 if ":" in self._host else _stdsocket.AF_INET
        listener = socket.socket(family, _stdsocket.SOCK_STREAM)
        listener.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        try:
            listener.bind((self._host, self._port))
            listener.listen(self._backlog)  # bursts of thousands of connects
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._acceptor = gevent.spawn(self._accept_loop)
        return self

    def serve_forever(self) -> None:
        if self._listener is None:
            self.start()
        assert self._acceptor is not None
        self._acceptor.join()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, close every connection with close_notify, wait for their greenlets.
        Never raises for one connection."""
        if self._acceptor is not None:
            self._acceptor.kill()
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        connections = list(self._connections.items())
        for conn, _ in connections:
            self._close(conn)  # a broken one must not keep the others from their goodbye
        greenlets = [g for _, g in connections]
        gevent.joinall(greenlets, timeout=timeout)
        gevent.killall(greenlets, block=True, timeout=1.0)
        self._connections.clear()

    # -- per connection --------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        backoff = 0.0
        while True:
            try:
                sock, _ = listener.accept()
            except OSError as exc:  # e.g. EMFILE: keep serving the others, and let them close some
                backoff = min(max(backoff * 2, _ACCEPT_BACKOFF[0]), _ACCEPT_BACKOFF[1])
                self._accept_log.log(logging.WARNING, "accept", "accept failed: %s (retrying in %g s)",
                                     exc.strerror or type(exc).__name__, backoff)
                gevent.sleep(backoff)
                continue
            except Exception as exc:  # a bug, not the peer's doing: the loop goes on
                self._internal_error(exc)
                gevent.sleep(_ACCEPT_BACKOFF[0])
                continue
            backoff = 0.0
            try:
                self._admit(sock)
            except Exception as exc:
                self._internal_error(exc)
                _reset(sock)

    def _admit(self, sock: socket.socket) -> None:
        if len(self._connections) >= self.max_connections:
            # Full: refuse at once (a reset), so the client sees a refusal rather than a hang.
            self.stats.failures[ServerFull.code] += 1
            _reset(sock)
            return
        self.stats.connections += 1
        conn = SslSocket(self._context, sock, light=True)  # a TLS 1.2 AEAD ping: loadgen's record layer
        self._connections[conn] = gevent.spawn(self._serve, conn)

    def _serve(self, conn: SslSocket) -> None:
        stats = self.stats
        try:
            if not conn.start_server_handshake(self.handshake_timeout):
                if conn.error is not None:
                    stats.failures[conn.error] += 1
                    log.debug("handshake failed: %s", conn.error_string)
                return
            stats.handshakes += 1
            stats.resumed += conn.session_reused
            # Each line must complete within the idle timeout: bytes that make no line do not count.
            deadline = time.monotonic() + self.idle_timeout
            while True:
                while conn.can_read_line():
                    line = conn.read_line()
                    stats.lines += 1
                    deadline = time.monotonic() + self.idle_timeout
                    if conn.state is State.CONNECTED:  # lines that came with the peer's close stay unanswered
                        conn.write(self._answer(conn, line))
                        stats.pings += 1
                if conn.state is not State.CONNECTED:
                    break
                if conn.bytes_available > self._max_line:
                    stats.failures["line-too-long"] += 1
                    break
                remaining = deadline - time.monotonic()
                if (remaining <= 0 or not conn.wait_for_ready_read(remaining)) and conn.state is State.CONNECTED:
                    stats.expired += 1
                    break
            if conn.peer_closed:
                stats.closed_by_peer += 1
            elif conn.error is not None:
                stats.failures[conn.error] += 1
        except LoadgenError as exc:  # e.g. a write after the peer vanished
            stats.failures[exc.code] += 1
        except Exception as exc:  # one connection's bug never reaches the others
            self._internal_error(exc)
        finally:
            self._close(conn)
            self._connections.pop(conn, None)

    def _close(self, conn: SslSocket) -> None:
        """Close with close_notify; a connection whose close raises is counted and aborted."""
        try:
            conn.close()
        except Exception as exc:
            self._internal_error(exc)
            try:
                conn.abort()
            except Exception:  # noqa: S110 - nothing more to do for this one
                pass

    def _internal_error(self, exc: Exception) -> None:
        """Count and log (rate-limited, the exception's type only) a bug met while serving one connection."""
        try:
            self.stats.failures[InternalError.code] += 1
            self._log.log(logging.ERROR, InternalError.code, "internal error, connection closed: %s",
                          exception_summary(exc))
        except Exception:  # noqa: S110 - e.g. MemoryError again: the loop must go on regardless
            pass

    def _answer(self, conn: SslSocket, line: bytes) -> bytes:
        if self._reply == "echo":
            return line
        engine = conn.engine
        who: bytes | str = "?"
        if engine is not None and engine.psk_identity:
            who = engine.psk_identity
        elif (cert := conn.peer_certificate()) is not None:
            who = cert.subject.rsplit("/CN=", 1)[-1] if "/CN=" in cert.subject else cert.subject
        name = who.decode("utf-8", "replace") if isinstance(who, bytes) else who
        return f"to {name}: ".encode() + line


def _reset(sock: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): immediate for the peer, no TIME_WAIT here."""
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
