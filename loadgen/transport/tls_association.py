"""TlsAssociation: one simulated TLS client, reporting exactly like DtlsAssociation.

It connects a TCP socket, handshakes (certificates or PSK, as the context says;
resuming the device's last session when resumption is on), then pings on the interval
over the stream: each ping is one newline-terminated line, and the server answers with
one line (the reference server echoes it). When to ping and how a reply is judged is the
:class:`~loadgen.traffic.workload.Workload`'s business, as for DTLS: this class moves
the lines. Everything goes to a :class:`~loadgen.stats.facts.Sink` as facts: Started/Finished
for each handshake and ping, Qt-style messages, and Ended once an established association
is over.

The handshake fact covers connection setup, TCP connect included: a refused connection
(TCP RST) fails it at once with ``connection-refused``.

Like the DTLS association it is event driven: a read watcher, a write watcher (only while
connecting or while output waits for the kernel) and one timer on gevent's loop call back
into it over a non-blocking C ``_socket``, feeding a memory-BIO
:class:`~loadgen.protocol.openssl.tls.TlsEngine`: no greenlet per connection, no timeout
object per ping. :meth:`run` is the blocking face for a greenlet that waits for the end.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable

from gevent import get_hub

from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import (
    ConnectTimeout,
    HandshakeTimeout,
    InternalError,
    LoadgenError,
    LocalProtocolError,
    PeerClosed,
    ProtocolViolation,
    SocketsExhausted,
)
from loadgen.protocol.events import (
    CertCheckFailed,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    HandshakeCompleted,
)
from loadgen.protocol.openssl.tls import SessionCache, TlsEngine
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.scenario.model import TlsConfig
from loadgen.stats.facts import HANDSHAKE, Ended, Finished, Sink, Started
from loadgen.traffic.tracker import DEFAULT_PLAN
from loadgen.traffic.workload import Workload, WorkloadPlan
from loadgen.transport import ssl_socket
from loadgen.transport.base import (
    CONNECTING,
    DONE,
    ERROR,
    ESTABLISHED,
    HANDSHAKING,
    INFO,
    NEW,
    TICKETS,
    WARNING,
)
from loadgen.transport.tcp import resolve, take_lines, transfer_error
from loadgen.transport.tcp_close import DelayedClose
from loadgen.transport.tls_stream import TlsStreamIo

#: How long handshake_once waits for TLS 1.3 session tickets (sent after the handshake).
TICKET_WAIT = 1.0
#: Longest reply line buffered (bytes): the reference server takes lines of up to 64 KiB and its
#: "qt" reply adds the identity in front. A server that sends more without a newline fails the
#: ping with ``protocol-violation``, instead of growing the read buffer without bound.
MAX_REPLY_LINE = 128 * 1024
#: How long a delayed close (output still queued) may take to flush before the socket closes.
CLOSE_TIMEOUT = 30.0
_RECV_SIZE = 65536
_READ = 1  # libev EV_READ


class TlsAssociation(TlsStreamIo):
    """A client association to one TLS server.

    ``run()`` (or ``start()`` then ``wait()``) drives it until it fails or the waiting greenlet
    is killed, which closes it with close_notify; attempts under way then stay "in flight".
    """

    def __init__(
        self,
        name: str,
        target: str,
        address: tuple[str, int],
        context: TlsContext,
        sink: Sink,
        *,
        identity: bytes | None = None,
        key: Secret | None = None,
        server_name: str | None = None,
        sessions: SessionCache | None = None,
        settings: TlsConfig = TlsConfig(),
        ping: WorkloadPlan = DEFAULT_PLAN,
        source_address: str | None = None,
        rng: random.Random | None = None,
        message_level: int = INFO,
    ) -> None:
        """``identity``/``key``: the PSK, for a PSK context. ``server_name``: SNI and the
        name the certificate must carry (default: the address's host). ``sessions``: where
        the device keeps its session between associations (resumption). ``settings``: the
        scenario's ``tls`` section, of which an association uses ``handshake_timeout`` (TCP
        connect + TLS handshake); the context carries versions, ciphers and certificates."""
        if context.psk and (identity is None or key is None):
            raise LocalProtocolError(f"{name}: a PSK context needs an identity and a key")
        super().__init__(name, target, address, sink, identity=identity, key=key, ping=ping,
                         source_address=source_address, rng=rng, message_level=message_level)
        self._init_io()
        self._context = context
        self._server_name = server_name
        self._sessions = sessions if context.options.resumption else None
        self._settings = settings
        self._started_at = self._deadline = 0.0
        self._established = False
        self._clean = False  # the session may be resumed: the link ended by a close, not a failure
        self._in = bytearray()  # reply bytes short of a newline
        self._received_before = 0  # bytes received before the last ping went out: its reply's come after
        self.resumed = False

    @property
    def session_key(self) -> Hashable:
        """Key of this association's session in the session cache."""
        host, port = self.address
        return host, port, self._server_name

    # -- public -------------------------------------------------------------

    def handshake_once(self) -> LoadgenError | None:
        """Connect, handshake, close with close_notify: one handshake's worth of work.

        With resumption on and TLS 1.3, waits briefly for the server's session tickets
        first, so that the next association of this device can resume.
        """
        self._handshake_only = True
        return self.run()

    def start(self) -> None:
        """Resolve (an address literal at once) and begin connecting; returns without waiting."""
        if self._state != NEW:
            raise LocalProtocolError(f"{self.name}: association already started")
        self._state = CONNECTING
        self._started_at = time.perf_counter()
        self._deadline = self._started_at + self._settings.handshake_timeout
        self._sink.record(Started(HANDSHAKE, self.target))
        self._say(INFO, "connecting TCP socket first ...")
        host, port = self.address
        try:
            self._infos = list(resolve(host, port, self._settings.handshake_timeout))
        except LoadgenError as exc:
            self._fail(exc.with_traceback(None))  # no traceback kept: see AssociationBase._guarded
            return
        self._guarded(self._connect_next, None)
        if self._state != DONE:
            self._arm()

    def close(self) -> None:
        """Close with close_notify, keep the session for resumption, report Ended. Idempotent.

        Output still queued makes it a delayed close (:class:`~loadgen.transport.tcp_close.DelayedClose`,
        at most ``CLOSE_TIMEOUT``), as QtSSLSocket's is."""
        if self._sock is None:
            self._settle(None)
            return
        engine = self._engine
        if engine is not None and not engine.closed and self._sock is not None:
            try:
                engine.close()
                self._flush()
            except LoadgenError:
                self._out.clear()  # the peer is gone: nobody to say goodbye to
            except Exception as exc:  # noqa: BLE001 - a bug saying goodbye must not reach the caller
                self._clean = False
                self._out.clear()
                self._say(ERROR, f"close failed - {InternalError(f'unexpected {type(exc).__name__}')}")
        self._keep_session()
        self._settle(None)
        if self._out and self._sock is not None:
            # Output still queued: a delayed close, on its own watchers (this association is over).
            sock, self._sock, pending, self._out = self._sock, None, self._out, bytearray()
            self._release()
            DelayedClose(sock, pending, CLOSE_TIMEOUT)
        else:
            self._release()

    # -- phases -------------------------------------------------------------

    def _on_connected(self) -> None:
        self._state = HANDSHAKING
        self._say(INFO, "starting a handshake")
        host = self.address[0]
        session = self._sessions.get(self.session_key) if self._sessions is not None else None
        # Looked up at call time, through ssl_socket: one place makes client engines (tests patch it).
        engines: type[TlsEngine] = ssl_socket.TlsEngine  # type: ignore[attr-defined]
        self._engine = engines.client(self._context, server_name=self._server_name or host,
                                      session=session,
                                      choose=self._choose_psk if self._context.psk else None,
                                      # TLS 1.2 AEAD records then go through our record layer; a
                                      # handshake-only connection sends none, so it does not derive keys.
                                      light=not self._handshake_only)
        self._reader = get_hub().loop.io(self._sock.fileno(), _READ)
        self._reader.start(self._readable)
        self._engine.start()
        self._flush()

    def _handshake_completed(self) -> None:
        assert self._engine is not None
        self._established = self._clean = True
        self.resumed = self._engine.resumed
        self._say(INFO, "encrypted connection established!" + (" (session resumed)" if self.resumed else ""))
        self._sink.record(Finished(HANDSHAKE, self.target, time.perf_counter() - self._started_at,
                                   sent_bytes=self.bytes_sent, received_bytes=self.bytes_received,
                                   resumed=self.resumed))
        if self._handshake_only:
            if self._sessions is not None and self._engine.version == "TLSv1.3":
                self._state = TICKETS  # the next input (the tickets) or TICKET_WAIT ends it
                self._deadline = time.perf_counter() + TICKET_WAIT
            else:
                self._settle(None)
            return
        self._start_workload()

    def _send_due(self, tracker: Workload, now: float) -> None:
        """Time out what is overdue, send whatever the workload has due, one line each."""
        while (payload := tracker.poll(now)) is not None:
            if b"\n" in payload:
                bad = LocalProtocolError("a TLS ping is one line: the payload must not contain a newline")
                tracker.abandon(bad)
                raise bad
            assert self._engine is not None
            self._received_before = self.bytes_received
            self._engine.send(payload + b"\n")
            tracker.sent(self._flush())

    def _take_lines(self, data: bytes) -> None:
        """Hand each complete reply line to the workload; keep the rest (bounded)."""
        try:
            lines = take_lines(self._in, data, MAX_REPLY_LINE)
        except ProtocolViolation as error:
            self._say(ERROR, f"association ended - {error}")
            raise
        tracker = self._tracker
        for reply in lines:
            now = time.perf_counter()
            if tracker is None or not tracker.receive(reply, self.bytes_received - self._received_before, now):
                self._say(WARNING, f"unexpected or late reply of {len(reply)} bytes")
            elif self._state == ESTABLISHED:
                self._send_due(tracker, now)  # the reply may call for an answer or free the window

    # -- callbacks from the loop --------------------------------------------

    def _on_readable(self) -> None:
        engine = self._engine
        if self._state not in (HANDSHAKING, TICKETS, ESTABLISHED) or engine is None:
            return
        tickets = self._state == TICKETS
        # One recv per call: the watcher is level-triggered and calls again while more is
        # queued, and a second recv() would mostly raise BlockingIOError.
        try:
            data = self._sock.recv(_RECV_SIZE)
        except BlockingIOError:
            return
        except OSError as exc:
            raise transfer_error(exc, "read") from None
        self.bytes_received += len(data)
        if data:
            engine.receive_data(data)
        else:
            engine.receive_eof()
        try:
            self._flush()
        except LoadgenError:
            if not engine.peer_closed:
                raise
            self._out.clear()  # our close_notify in answer to the peer's: it may be gone already
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                self._take_lines(event.data)
            elif isinstance(event, HandshakeCompleted):
                self._handshake_completed()
            elif isinstance(event, CertCheckFailed):
                self._say(ERROR, f"certificate check failed (verify result {event.code}): {event.description}")
            elif isinstance(event, ConnectionClosed):
                self._say(ERROR, "shutdown alert received")
                raise PeerClosed("shutdown alert received")
            elif isinstance(event, ConnectionFailed):
                raise event.error
        if tickets and self._state == TICKETS:
            self._settle(None)  # one chunk of input after the handshake: the tickets
        elif self._state != DONE:
            self._arm()

    def _on_timer(self) -> None:
        self._timer = None  # spent: _arm() makes the next one
        now = time.perf_counter()
        if self._state in (CONNECTING, HANDSHAKING) and now >= self._deadline:
            host, port = self.address
            if self._state == CONNECTING:
                raise ConnectTimeout(f"{host}:{port}: no TCP connection in time")
            raise HandshakeTimeout("no TLS handshake in time")
        if self._state == TICKETS and now >= self._deadline:
            self._settle(None)
        elif self._state == ESTABLISHED and self._tracker is not None:
            self._send_due(self._tracker, now)
        self._arm()

    def _arm(self) -> None:
        """Re-arm the one timer for the next thing due (deadline, ping, ticket wait)."""
        if self._state in (CONNECTING, HANDSHAKING, TICKETS):
            self._set_timer(self._deadline)
        elif self._state == ESTABLISHED and self._tracker is not None:
            self._set_timer(self._tracker.get_timer())

    def _fail(self, error: LoadgenError) -> None:
        """End with ``error``, closing the attempt under way with the same error."""
        now = time.perf_counter()
        if self._state in (CONNECTING, HANDSHAKING):
            # No socket: counted, and summed up in one line every 10 s (limits.ShortageLog), not one per device.
            self._say(INFO if isinstance(error, SocketsExhausted) else ERROR, f"handshake error - {error}")
            self._sink.record(Finished(HANDSHAKE, self.target, now - self._started_at, error,
                                       sent_bytes=self.bytes_sent, received_bytes=self.bytes_received))
        elif self._state == ESTABLISHED and self._tracker is not None:
            self._tracker.fail(error, now)
        # A session stays resumable after the peer's close (close_notify or EOF), not after a failure.
        self._clean = self._engine is not None and self._engine.peer_closed and self._engine.error is None
        self._finish(error)

    def _finish(self, result: LoadgenError | None) -> None:
        """Send what OpenSSL queued (an alert, our close_notify) if the kernel takes it now, and tear down."""
        engine, sock = self._engine, self._sock
        if sock is not None:
            if engine is not None:
                self._out += engine.data_to_send()
            if self._out:
                try:
                    self.bytes_sent += sock.send(self._out)
                except OSError:
                    pass
                self._out.clear()
        self._keep_session()
        self._settle(result)
        self._release()

    def _settle(self, result: LoadgenError | None) -> None:
        """The association's outcome is known: report Ended once, stop reading, wake the waiter."""
        for watcher in (self._reader, self._timer):
            if watcher is not None:
                watcher.stop()
        self._reader = self._timer = None
        if self._established:
            self._established = False
            self._sink.record(Ended(self.target))  # active associations = handshakes - ended
        self._state = DONE
        if not self._done.ready():
            self._done.set(result)

    def _keep_session(self) -> None:
        if self._sessions is not None:
            engine = self._engine
            # A session is resumable only after a clean close; otherwise forget it.
            self._sessions.put(self.session_key, engine.session if self._clean and engine is not None else None)
            self._sessions = None  # once

