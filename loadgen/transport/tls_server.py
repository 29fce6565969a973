"""The reference TLS server: a line echo over TLS, one greenlet per connection.

Certificate and key, pre-shared keys, or both (see
:func:`loadgen.protocol.tls.server_context`); optionally requires client
certificates. Each received line is answered at once, either echoed or in the style of
Qt's DTLS server example ("to IDENTITY: LINE"). Idle connections are closed.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
from collections import Counter
from dataclasses import dataclass, field

import gevent
from gevent import socket

from ..errors import LoadgenError
from ..protocol.tls import TlsContext
from .ssl_socket import SslSocket, State

log = logging.getLogger("loadgen.server")


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
        handshake_timeout: float = 30.0,
        idle_timeout: float = 60.0,
        max_line: int = 65536,
        backlog: int = 4096,
    ) -> None:
        if reply not in ("echo", "qt"):
            raise ValueError(f"reply must be 'echo' or 'qt', not {reply!r}")
        if not context.is_server:
            raise ValueError("TlsServer needs a server context")
        self._context = context
        self._host, self._port = host, port
        self._reply = reply
        self._handshake_timeout = handshake_timeout
        self._idle_timeout = idle_timeout
        self._max_line = max_line
        self._backlog = backlog
        self._listener: socket.socket | None = None
        self._acceptor: gevent.Greenlet | None = None
        self._connections: dict[SslSocket, gevent.Greenlet] = {}
        self.stats = TlsServerStats()

    @property
    def address(self) -> tuple[str, int]:
        assert self._listener is not None, "server not started"
        host, port = self._listener.getsockname()[:2]
        return host, port

    @property
    def connection_count(self) -> int:
        return len(self._connections)

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
        """Stop accepting, close every connection with close_notify, wait for their greenlets."""
        if self._acceptor is not None:
            self._acceptor.kill()
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        connections = list(self._connections.items())
        for conn, _ in connections:
            conn.close()
        greenlets = [g for _, g in connections]
        gevent.joinall(greenlets, timeout=timeout)
        gevent.killall(greenlets, block=True, timeout=1.0)
        self._connections.clear()

    # -- per connection --------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        listener = self._listener
        while True:
            try:
                sock, _ = listener.accept()
            except OSError as exc:  # e.g. EMFILE: keep serving the others
                log.warning("accept failed: %s", exc)
                gevent.sleep(0.05)
                continue
            self.stats.connections += 1
            conn = SslSocket(self._context, sock)
            self._connections[conn] = gevent.spawn(self._serve, conn)

    def _serve(self, conn: SslSocket) -> None:
        stats = self.stats
        try:
            if not conn.start_server_handshake(self._handshake_timeout):
                if conn.error is not None:
                    stats.failures[conn.error] += 1
                    log.debug("handshake failed: %s", conn.error_string)
                return
            stats.handshakes += 1
            stats.resumed += conn.session_reused
            while True:
                while conn.can_read_line():
                    line = conn.read_line()
                    stats.lines += 1
                    if conn.state is State.CONNECTED:  # lines that came with the peer's close stay unanswered
                        conn.write(self._answer(conn, line))
                        stats.pings += 1
                if conn.state is not State.CONNECTED:
                    break
                if conn.bytes_available > self._max_line:
                    stats.failures["line-too-long"] += 1
                    break
                if not conn.wait_for_ready_read(self._idle_timeout) and conn.state is State.CONNECTED:
                    stats.expired += 1
                    break
            if conn.peer_closed:
                stats.closed_by_peer += 1
            elif conn.error is not None:
                stats.failures[conn.error] += 1
        except LoadgenError as exc:  # e.g. a write after the peer vanished
            stats.failures[exc.code] += 1
        finally:
            conn.close()
            self._connections.pop(conn, None)

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
