"""The reference TLS server: a line echo over TLS, event driven (no greenlet per connection).

Certificate and key, pre-shared keys, or both (see
:func:`loadgen.protocol.openssl.tls_contexts.server_context`); optionally requires client
certificates. Each received line is answered at once, either echoed or in the style of
Qt's DTLS server example ("to IDENTITY: LINE"); lines that came with the peer's close_notify
are counted but not answered.

Limits: at most ``max_connections`` open connections (a newcomer over it is accepted and
reset at once, counted ``server-full``: a client sees a refusal, not a hang); the handshake
must complete within ``handshake_timeout``; each line must complete within
``idle_timeout`` of the previous one (or of the handshake): bytes that never make a line
do not keep a connection open. More than ``max_line`` bytes without a newline close the
connection (``line-too-long``), and so does more than ``max_queued`` bytes of answers the
client does not read (``not-reading``). Accept errors (e.g. EMFILE) back off up to a second
and are logged at most once a second. One connection's unexpected exception ends that
connection (``internal-error``), never the accept loop nor the others.

Shaped like the DTLS server and loadgen's TLS client: after the accept (a greenlet: accepts
are rare), each connection is a non-blocking C ``_socket`` with one read watcher on gevent's
loop, a write watcher only while answers wait for the kernel, and a sans-IO
:class:`~loadgen.protocol.openssl.tls.TlsEngine` (light: a TLS 1.2 AEAD connection's records go
through loadgen's record layer once handshaken). The watcher's callback reads once, feeds the
engine, answers every complete line and flushes once. Deadlines (handshake, idle) live in one
heap with lazy invalidation, served by one timer greenlet, as the DTLS server's
(:mod:`loadgen.servers.deadlines`): a ping moves its connection's deadline (an attribute), never
a timer.
"""

from __future__ import annotations

import _socket  # the C socket type: never monkey-patched, no wrapper on the hot path
import logging
import math
import resource
import socket as _stdsocket
import struct
import time
import weakref
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import gevent
from gevent import get_hub, socket

from loadgen.protocol.errors import HandshakeTimeout, InternalError, LoadgenError, ServerFull
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from loadgen.protocol.openssl.tls import TlsEngine
from loadgen.protocol.openssl.tls_certificates import CertificateInfo
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.servers.deadlines import Deadlines
from loadgen.stats.throttle import ThrottledLog, exception_summary
from loadgen.transport.heap import freeze_while_growing
from loadgen.transport.tcp import transfer_error
from loadgen.transport.tcp_close import DelayedClose

log = logging.getLogger("loadgen.server")

#: File descriptors kept free under the open-file limit by the default connection cap: the
#: listener, stdio, log files, and the one a refused newcomer needs to be accepted and reset.
FD_HEADROOM = 256
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 60.0
#: Answers queued for one client that does not read them, beyond what the kernel holds (its
#: socket buffers take megabytes first): over it the connection is closed, ``not-reading``.
MAX_QUEUED = 1024 * 1024
#: How long a close that still has output queued may take to flush (the peer reads) and end.
CLOSE_TIMEOUT = 30.0
#: Accept errors back off from this, doubling, up to a second.
_ACCEPT_BACKOFF = (0.01, 1.0)
_RECV_SIZE = 65536
#: Answers made before the output is flushed (and its bound checked) while one read's lines are answered.
_FLUSH_LINES = 256
_READ, _WRITE = 1, 2  # libev EV_READ, EV_WRITE


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


@dataclass(slots=True, eq=False, weakref_slot=True)
class _Connection:
    """One connection's state: small, since a server holds thousands (slots, no dict). Hashed by
    identity (a key of the server's ``_connections``); the deadline heap holds weak references,
    so a closed connection is freed at once, engine and all, not when its entry pops."""

    sock: Any  # a non-blocking C _socket; None once closed
    engine: TlsEngine
    deadline: float  # the handshake's, then the next line's (monotonic)
    serial: int  # orders heap entries due at the same time (connections do not compare)
    established: bool = False
    reader: Any = None  # the read watcher
    writer: Any = None  # the write watcher, only while ``out`` holds bytes the kernel did not take
    out: bytearray = field(default_factory=bytearray)
    partial: bytearray = field(default_factory=bytearray)  # received bytes short of a newline
    # The due time of this connection's live heap entry (inf: none). An entry whose time
    # differs is stale (lazy invalidation): rescheduled or closed since.
    wake: float = math.inf

    def peer_certificate(self) -> CertificateInfo | None:
        """The client's certificate (as SslSocket shows it), if it sent one."""
        cert = self.engine.peer_certificate
        return CertificateInfo.from_x509(cert) if cert is not None else None


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
        max_queued: int = MAX_QUEUED,
    ) -> None:
        """``idle_timeout``: each line must complete within this long of the previous one.
        ``max_connections``: default :func:`default_max_connections`. ``max_queued``: answers
        held for a client that does not read them (at least twice ``max_line``)."""
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
        # One answer to the longest line must always fit, whatever the client reads meanwhile.
        self._max_queued = max(max_queued, 2 * max_line)
        self._backlog = backlog
        self._listener: socket.socket | None = None
        self._acceptor: gevent.Greenlet | None = None
        self._timer: gevent.Greenlet | None = None
        self._freezer: gevent.Greenlet | None = None
        self._connections: dict[_Connection, None] = {}  # insertion-ordered set
        self._closing: set[DelayedClose] = set()  # closes still flushing what was queued
        # Keyed by a serial (orders entries due at once) and a weak reference: a closed connection
        # is freed at once, not when its entry pops.
        self._deadlines: Deadlines[tuple[int, weakref.ref[_Connection]], _Connection] = Deadlines(
            find=lambda key: key[1](), due=self._on_due, failed=self._deadline_failed,
            live=lambda: (((c.serial, weakref.ref(c)), c) for c in self._connections),
            count=self._connections.__len__)
        self._serial = 0
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
        self._timer = gevent.spawn(self._deadlines.run)
        # Connections are long-lived: keep them out of full garbage collections, which otherwise
        # walk every one. They hold no reference cycles (a frozen cycle is never freed):
        # tests/test_tls_server.py checks that a closed connection goes by reference counting alone.
        self._freezer = freeze_while_growing(self._connections.__len__)
        return self

    def serve_forever(self) -> None:
        if self._listener is None:
            self.start()
        assert self._acceptor is not None
        self._acceptor.join()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, send close_notify to every connection, give the closes that still have
        output queued up to ``timeout`` seconds to flush it and see the peer close, then close
        every socket. Never raises for one connection."""
        deadline = time.monotonic() + timeout
        for greenlet in (self._acceptor, self._timer, self._freezer):
            if greenlet is not None:
                greenlet.kill()
        self._acceptor = self._timer = self._freezer = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        for conn in list(self._connections):
            self._close(conn)  # a broken one must not keep the others from their goodbye
        self._deadlines.clear()
        while self._closing and time.monotonic() < deadline:  # each leaves when done (on_release)
            gevent.sleep(0.01)
        for closing in list(self._closing):
            closing.release()
        self._closing.clear()

    # -- accepting ------------------------------------------------------------

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
        # A TLS 1.2 AEAD ping goes through loadgen's record layer (light); made before the
        # socket changes hands, so that a failure here leaves the gevent socket to reset.
        engine = TlsEngine.server(self._context, light=True)
        self.stats.connections += 1
        # Read from a watcher's callback (see the module docstring): the C socket type, which
        # gevent never patches, so no wrapper, no greenlet switch, no Timeout per read.
        raw = _socket.socket(fileno=sock.detach())
        self._serial += 1
        conn = _Connection(raw, engine, time.monotonic() + self.handshake_timeout, self._serial)
        try:
            raw.setblocking(False)
            try:
                # Pings are small request/response exchanges: Nagle plus delayed ACKs would add ~40 ms.
                raw.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            except OSError:
                pass
            self._connections[conn] = None
            conn.reader = get_hub().loop.io(raw.fileno(), _READ)
            conn.reader.start(self._on_readable, conn)
            self._schedule(conn)
        except BaseException:
            _reset(raw)  # the caller's reset of the (detached) gevent socket does nothing
            self._release(conn)
            raise

    # -- per connection: reading and answering --------------------------------------

    def _on_readable(self, conn: _Connection) -> None:
        """The read watcher's callback, on the event loop: it must not block and never raises
        (a raise would print a traceback in the hub); what goes wrong ends this connection only."""
        try:
            self._receive(conn)
        except LoadgenError as exc:  # e.g. a reset, a client that does not read
            self.stats.failures[exc.code] += 1
            self._abort(conn)
        except Exception as exc:  # one connection's bug never reaches the others
            self._internal_error(exc)
            self._close(conn)

    def _receive(self, conn: _Connection) -> None:
        """One recv (the watcher is level-triggered: it calls again while more is queued), its
        events, every complete line answered in order, then one flush."""
        sock = conn.sock
        if sock is None:
            return  # closed meanwhile
        try:
            data = sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            raise transfer_error(exc, "read") from None
        engine, stats = conn.engine, self.stats
        if data:
            engine.receive_data(data)
        else:
            engine.receive_eof()  # before the handshake is done: a ConnectionFailed (peer-closed)
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                self._take_lines(conn, event.data)
            elif isinstance(event, HandshakeCompleted):
                stats.handshakes += 1
                stats.resumed += event.resumed
                conn.established = True
                # Each line must complete within the idle timeout: bytes that make no line do not count.
                conn.deadline = time.monotonic() + self.idle_timeout
                self._schedule(conn)  # earlier than the handshake's if the idle timeout is shorter
            elif isinstance(event, ConnectionClosed):
                stats.closed_by_peer += 1
            elif isinstance(event, ConnectionFailed):
                stats.failures[event.error.code] += 1
                log.debug("connection failed: %s", event.error)
            # CertCheckFailed: its ConnectionFailed follows.
        if engine.closed:  # the peer's close (ours answers it) or a failure (an alert): no more reads
            self._abort(conn)
            return
        if len(conn.partial) > self._max_line:
            stats.failures["line-too-long"] += 1
            self._close(conn)
            return
        self._flush(conn)

    def _take_lines(self, conn: _Connection, data: bytes) -> None:
        """Count and answer each complete line (unless the engine closed: lines that came with the
        peer's close_notify stay unanswered); keep the rest in ``conn.partial``."""
        partial = conn.partial
        if not partial and data.find(b"\n") == len(data) - 1:
            lines = [data]  # the usual case: one whole line in one record, no copy
        else:
            partial += data
            lines = []
            start = 0
            while (end := partial.find(b"\n", start)) >= 0:
                lines.append(bytes(partial[start:end + 1]))
                start = end + 1
            del partial[:start]
            if not lines:
                return
        stats, engine = self.stats, conn.engine
        stats.lines += len(lines)
        conn.deadline = time.monotonic() + self.idle_timeout  # the heap entry catches up when it pops
        # One read holds up to 64 KiB of lines: 65,536 empty ones are 65,536 records to answer, ~2 MB
        # (30 bytes each), all in memory before the output bound saw any. Flushed between chunks, the
        # bound holds within them: past it (the client does not read) the rest goes unanswered.
        for start in range(0, len(lines), _FLUSH_LINES):
            if start:
                self._flush(conn)  # raises not-reading past max_queued
            for line in lines[start : start + _FLUSH_LINES]:
                if engine.closed:
                    continue
                engine.send(self._answer(conn, line))
                stats.pings += 1

    def _answer(self, conn: _Connection, line: bytes) -> bytes:
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

    # -- per connection: writing and closing -----------------------------------------

    def _flush(self, conn: _Connection) -> None:
        """Send what the engine produced, queueing what the kernel does not take (bounded)."""
        data = conn.engine.data_to_send()
        if not data:
            return
        if conn.writer is None:  # nothing queued before it: straight to the kernel
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise transfer_error(exc, "write") from None
            if sent == len(data):
                return
            conn.writer = get_hub().loop.io(conn.sock.fileno(), _WRITE)
            conn.writer.start(self._on_writable, conn)
            data = data[sent:]
        conn.out += data
        if len(conn.out) > self._max_queued:
            raise LoadgenError(f"the client does not read: over {self._max_queued // 1024} KiB queued for it",
                               code="not-reading")

    def _on_writable(self, conn: _Connection) -> None:
        """The kernel takes more: write what is queued; stop watching once it is all out."""
        try:
            try:
                sent = conn.sock.send(conn.out)
            except BlockingIOError:
                return
            except OSError as exc:
                raise transfer_error(exc, "write") from None
            del conn.out[:sent]
            if not conn.out:
                conn.writer.stop()
                conn.writer = None
        except LoadgenError as exc:
            self.stats.failures[exc.code] += 1
            self._abort(conn)
        except Exception as exc:  # as in _on_readable
            self._internal_error(exc)
            self._abort(conn)

    def _close(self, conn: _Connection) -> None:
        """Our close (expired, a line too long, stop, a bug): close_notify, and what is still queued
        flushed by a :class:`~loadgen.transport.tcp_close.DelayedClose`. Never raises: a connection
        whose close raises is counted and aborted."""
        if conn.sock is None:
            return
        try:
            conn.engine.close()
            conn.out += conn.engine.data_to_send()
            if conn.out and conn.writer is None:
                try:
                    del conn.out[:conn.sock.send(conn.out)]
                except BlockingIOError:
                    pass
                except OSError:
                    conn.out.clear()  # the peer is gone: nobody to say goodbye to
            if conn.out:
                sock, pending = conn.sock, conn.out
                conn.sock, conn.out = None, bytearray()
                self._release(conn)
                self._closing.add(DelayedClose(sock, pending, CLOSE_TIMEOUT, on_release=self._closing.discard))
                return
        except Exception as exc:
            self._internal_error(exc)
        self._release(conn)

    def _abort(self, conn: _Connection) -> None:
        """End after the peer's close or a failure: send what the kernel takes now (our
        close_notify in answer, an alert), drop the rest, close."""
        sock = conn.sock
        if sock is None:
            return
        try:
            conn.out += conn.engine.data_to_send()
            if conn.out and conn.writer is None:
                sock.send(conn.out)
        except Exception:  # noqa: S110 - OSError (the peer is gone) or worse: closing regardless
            pass
        self._release(conn)

    def _release(self, conn: _Connection) -> None:
        """Stop the watchers (they hold the connection: a cycle), close the socket, forget it."""
        for watcher in (conn.reader, conn.writer):
            if watcher is not None:
                watcher.stop()
        conn.reader = conn.writer = None
        conn.out.clear()
        conn.partial.clear()
        conn.wake = math.inf  # its heap entry, if any, is stale
        sock, conn.sock = conn.sock, None
        if sock is not None:
            sock.close()
        self._connections.pop(conn, None)

    def _internal_error(self, exc: Exception) -> None:
        """Count and log (rate-limited, the exception's type only) a bug met while serving one connection."""
        try:
            self.stats.failures[InternalError.code] += 1
            self._log.log(logging.ERROR, InternalError.code, "internal error, connection closed: %s",
                          exception_summary(exc))
        except Exception:  # noqa: S110 - e.g. MemoryError again: the loop must go on regardless
            pass

    # -- deadlines ------------------------------------------------------------------

    def _deadline_failed(self, _: object, conn: _Connection | None, exc: Exception) -> None:
        """A bug in one connection's deadline step ends that connection (``conn`` None: the loop's own)."""
        self._internal_error(exc)
        if conn is not None:
            self._close(conn)

    def _on_due(self, conn: _Connection, _: object, now: float) -> None:
        if now < conn.deadline:
            self._schedule(conn)  # a line came since: its deadline moved on
        elif not conn.established:
            self.stats.failures[HandshakeTimeout.code] += 1
            self._abort(conn)
        else:
            self.stats.expired += 1
            self._close(conn)

    def _schedule(self, conn: _Connection) -> None:
        """Make sure the deadlines hold an entry for ``conn`` no later than its deadline."""
        self._deadlines.schedule((conn.serial, weakref.ref(conn)), conn, conn.deadline)

def _reset(sock: socket.socket | _socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0): immediate for the peer, no TIME_WAIT here."""
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()
