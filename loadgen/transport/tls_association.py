"""TlsAssociation: one simulated TLS client, reporting exactly like DtlsAssociation.

It connects a TCP socket, handshakes (certificates or PSK, as the context says;
resuming the device's last session when resumption is on), then pings on the interval
over the stream: each ping is one newline-terminated line, and the server answers with
one line (the reference server echoes it). When to ping and how a reply is judged is the
:class:`~loadgen.traffic.tracker.RequestTracker`'s business, as for DTLS: this class moves
the lines. Everything goes to a :class:`~loadgen.stats.facts.Sink` as facts: Started/Finished
for each handshake and ping, Qt-style messages, and Ended once an established association
is over.

The handshake fact covers connection setup, TCP connect included: a refused connection
(TCP RST) fails it at once with ``connection-refused``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Hashable

import gevent

from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import (
    InternalError,
    LoadgenError,
    LocalProtocolError,
    PeerClosed,
    ProtocolViolation,
    SocketsExhausted,
)
from loadgen.protocol.openssl.tls import SessionCache
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.scenario.model import TlsConfig
from loadgen.stats.facts import HANDSHAKE, Ended, Finished, Sink, Started
from loadgen.traffic.tracker import DEFAULT_PLAN
from loadgen.traffic.workload import Workload, WorkloadPlan
from loadgen.transport.base import ERROR, INFO, WARNING, AssociationBase
from loadgen.transport.ssl_link import State
from loadgen.transport.ssl_socket import SslSocket

#: How long handshake_once waits for TLS 1.3 session tickets (sent after the handshake).
TICKET_WAIT = 1.0
#: Longest reply line buffered (bytes): the reference server takes lines of up to 64 KiB and its
#: "qt" reply adds the identity in front. A server that sends more without a newline fails the
#: ping with ``protocol-violation``, instead of growing the read buffer without bound.
MAX_REPLY_LINE = 128 * 1024


class _Wake(Exception):  # noqa: N818 - not an error: thrown into the ping loop's wait by wake()
    """Ends the ping loop's wait for a reply early: the workload has something to send."""


class TlsAssociation(AssociationBase):
    """A client association to one TLS server. ``run()`` in a greenlet; kill it to close."""

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
        self._context = context
        self._server_name = server_name
        self._sessions = sessions if context.options.resumption else None
        self._settings = settings
        self._sock: SslSocket | None = None
        self._greenlet: gevent.Greenlet | None = None
        self._established = False
        self._closed = False
        self.resumed = False
        self._bytes = (0, 0)  # sent, received: totals once the socket is gone
        # When the handshake under way started, and the pings once established: anything that
        # ends the association, a bug included, closes the attempt under way exactly once.
        self._handshake_at: float | None = None
        self._tracker: Workload | None = None
        self._sleeper: gevent.Greenlet | None = None  # the ping loop, while it waits for input (wake())
        self._wake_due = False

    @property
    def pings_sent(self) -> int:
        """Pings sent so far."""
        return self._tracker.requests_sent if self._tracker is not None else 0

    @property
    def session_key(self) -> Hashable:
        """Key of this association's session in the session cache."""
        host, port = self.address
        return host, port, self._server_name

    @property
    def bytes_sent(self) -> int:
        return self._sock.bytes_sent if self._sock is not None else self._bytes[0]

    @property
    def bytes_received(self) -> int:
        return self._sock.bytes_received if self._sock is not None else self._bytes[1]

    # -- public -------------------------------------------------------------

    def run(self) -> LoadgenError | None:
        """Connect, handshake, ping until failed or killed; returns the error that ended it.

        Killing the greenlet (``GreenletExit``) closes it with close_notify; attempts under
        way then stay "in flight" in the accounting.
        """
        try:
            self._establish()
            self._ping_loop()
        except LoadgenError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a bug ends this association, not its caller
            return self._internal_error(exc)
        finally:
            self.close()
        return None  # pragma: no cover - the ping loop only ends by an error or close()

    def handshake_once(self) -> LoadgenError | None:
        """Connect, handshake, close with close_notify: one handshake's worth of work.

        With resumption on and TLS 1.3, waits briefly for the server's session tickets
        first, so that the next association of this device can resume.
        """
        try:
            self._establish()
            sock = self._sock
            if self._sessions is not None and sock is not None and sock.protocol_version == "TLSv1.3":
                sock.wait_for_input(TICKET_WAIT)
        except LoadgenError as exc:
            return exc
        except Exception as exc:  # noqa: BLE001 - a bug ends this association, not its caller
            return self._internal_error(exc)
        finally:
            self.close()
        return None

    def start(self) -> None:
        """Run in a new greenlet; :meth:`wait` for the end."""
        if self._greenlet is not None:
            raise LocalProtocolError(f"{self.name}: association already started")
        self._greenlet = gevent.spawn(self.run)

    def wait(self) -> LoadgenError | None:
        """Block until the association started with :meth:`start` ends; closes it on the way out."""
        assert self._greenlet is not None, "start() first"
        try:
            result: LoadgenError | None = self._greenlet.get()
            return result
        finally:
            self.close()

    def wake(self) -> None:
        """Have the ping loop poll its workload now (from another greenlet: a caller queued a request)."""
        if self._sleeper is not None and not self._wake_due:
            self._wake_due = True
            gevent.get_hub().loop.run_callback(self._deliver_wake)

    def _deliver_wake(self) -> None:
        # Run by the hub: the ping loop is suspended, and it is in its wait exactly when _sleeper is
        # set (its only switch there is the read); if it woke meanwhile there is nothing to do.
        self._wake_due = False
        if self._sleeper is not None:
            self._sleeper.throw(_Wake)

    def close(self) -> None:
        """Close with close_notify, keep the session for resumption, report Ended. Idempotent."""
        if self._closed:
            return
        self._closed = True
        sock = self._sock
        if sock is not None:
            clean = sock.state is State.CONNECTED or sock.peer_closed
            try:
                sock.close()
            except Exception as exc:  # noqa: BLE001 - a bug saying goodbye must not reach the caller
                clean = False
                self._say(ERROR, f"close failed - {InternalError(f'unexpected {type(exc).__name__}')}")
                sock.abort()
            self._bytes = (sock.bytes_sent, sock.bytes_received)
            if self._sessions is not None:
                # A session is resumable only after a clean close; otherwise forget it.
                self._sessions.put(self.session_key, sock.session if clean else None)
            self._sock = None
        if self._established:
            self._sink.record(Ended(self.target))
        greenlet = self._greenlet
        if greenlet is not None and greenlet is not gevent.getcurrent() and not greenlet.ready():
            greenlet.kill(block=False)

    # -- phases ---------------------------------------------------------------

    def _establish(self) -> None:
        started = time.perf_counter()
        self._sink.record(Started(HANDSHAKE, self.target))
        self._handshake_at = started
        session = self._sessions.get(self.session_key) if self._sessions is not None else None
        sock = SslSocket(self._context, server_name=self._server_name, session=session,
                         choose=self._choose_psk if self._context.psk else None)
        self._sock = sock
        sock.state_changed.connect(self._on_state)
        sock.cert_check_failed.connect(
            lambda code, text: self._say(ERROR, f"certificate check failed (verify result {code}): {text}"))
        host, port = self.address
        self._say(INFO, "connecting TCP socket first ...")
        if not sock.connect_to_host(host, port, timeout=self._settings.handshake_timeout,
                                    source_address=self._source):
            error = sock.last_error or LocalProtocolError("handshake failed")
            # No socket: counted, and summed up in one line every 10 s (limits.ShortageLog), not one per device.
            self._say(INFO if isinstance(error, SocketsExhausted) else ERROR, f"handshake error - {error}")
            self._handshake_at = None
            self._sink.record(Finished(HANDSHAKE, self.target, time.perf_counter() - started, error,
                                       sent_bytes=sock.bytes_sent, received_bytes=sock.bytes_received))
            raise error
        self._established = True
        self.resumed = sock.session_reused
        self._say(INFO, "encrypted connection established!" + (" (session resumed)" if self.resumed else ""))
        self._handshake_at = None
        self._sink.record(Finished(HANDSHAKE, self.target, time.perf_counter() - started,
                                   sent_bytes=sock.bytes_sent, received_bytes=sock.bytes_received,
                                   resumed=self.resumed))

    def _ping_loop(self) -> None:
        sock = self._sock
        assert sock is not None
        tracker = self._tracker = self._ping.workload(self.name, self.target, self._sink, uniform=self._uniform)
        tracker.start(time.perf_counter())
        received_before = 0  # the bytes received before the last ping went out: its reply's come after
        while True:
            while (payload := tracker.poll(time.perf_counter())) is not None:
                received_before = self._send_line(sock, tracker, payload)
            self._sleeper = gevent.getcurrent()
            try:
                sock.wait_for_ready_read(max(tracker.get_timer() - time.perf_counter(), 0.0))
            except _Wake:
                pass  # a request is queued: poll
            finally:
                self._sleeper = None
            while sock.can_read_line():
                reply = sock.read_line()[:-1]
                if not tracker.receive(reply, sock.bytes_received - received_before, time.perf_counter()):
                    self._say(WARNING, f"unexpected or late reply of {len(reply)} bytes")
            if sock.bytes_available > MAX_REPLY_LINE:  # a line without an end: do not buffer it all
                raise self._protocol_violation(f"a reply line over {MAX_REPLY_LINE // 1024} KiB")
            if sock.state is not State.CONNECTED:
                self._ended(sock, tracker)

    @staticmethod
    def _send_line(sock: SslSocket, tracker: Workload, payload: bytes) -> int:
        """Write one ping as one line; returns the bytes received before it."""
        if b"\n" in payload:
            bad = LocalProtocolError("a TLS ping is one line: the payload must not contain a newline")
            tracker.abandon(bad)
            raise bad
        sent_before, received_before = sock.bytes_sent, sock.bytes_received
        sock.write(payload + b"\n")
        tracker.sent(sock.bytes_sent - sent_before)
        return received_before

    def _ended(self, sock: SslSocket, tracker: Workload) -> None:
        """The link went down under the ping loop: report and raise why."""
        if self._closed:  # close() from outside (wait() was killed): not an error
            raise gevent.GreenletExit
        if sock.peer_closed:
            self._say(ERROR, "shutdown alert received")
            error: LoadgenError = PeerClosed("shutdown alert received")
        else:
            error = sock.last_error or PeerClosed("connection lost")
        tracker.fail(error, time.perf_counter())
        raise error

    def _protocol_violation(self, what: str) -> ProtocolViolation:
        """The server broke the line protocol: the ping in flight (if any) fails with the error."""
        error = ProtocolViolation(what)
        self._say(ERROR, f"association ended - {error}")
        self._fail_attempt(error)
        return error

    def _internal_error(self, exc: Exception) -> InternalError:
        """A bug met while running this association (never its arguments: they may hold peer
        bytes): the attempt in flight fails once with ``internal-error``, one line says so."""
        error = InternalError(f"unexpected {type(exc).__name__}")
        handshake = self._handshake_at is not None
        self._say(ERROR, f"{'handshake error' if handshake else 'association ended'} - {error}")
        self._fail_attempt(error)
        return error

    def _fail_attempt(self, error: LoadgenError) -> None:
        """Close the attempt under way (handshake or pings), if any, as failed with ``error``."""
        started, self._handshake_at = self._handshake_at, None
        if started is not None:
            self._sink.record(Finished(HANDSHAKE, self.target, time.perf_counter() - started, error))
        elif self._tracker is not None:
            self._tracker.fail(error, time.perf_counter())

    # -- helpers ------------------------------------------------------------

    def _on_state(self, state: State) -> None:
        if state is State.HANDSHAKING:
            self._say(INFO, "starting a handshake")
