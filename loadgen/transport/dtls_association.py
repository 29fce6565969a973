"""DtlsAssociation: one simulated DTLS client, as in Qt's DTLS client example.

It connects a UDP socket to the server first (so the server sees one peer address
per client and ICMP errors reach us), handshakes with retransmission and an overall
timeout, then pings on an interval, decrypting each response: what to ping when and how
a reply is judged is the :class:`~loadgen.traffic.tracker.RequestTracker`'s business, this
class moves the bytes and re-arms the timer. Everything it learns goes to a
:class:`~loadgen.stats.facts.Sink` as facts.

Like Qt's class it is event driven: a read watcher and one timer on gevent's loop
call back into it, so thousands of associations cost no greenlet switches, no
per-ping timeout objects and no stacks. :meth:`run` is the blocking face for a
greenlet that wants to wait for the association to end.
"""

from __future__ import annotations

import _socket  # the C socket type: never monkey-patched, no wrapper on the hot path
import random
import time
from typing import Any

from gevent import get_hub

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import (
    ConnectionRefused,
    InternalError,
    LoadgenError,
    LocalProtocolError,
    PeerClosed,
    SocketsExhausted,
    socket_error,
)
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from loadgen.scenario.model import DtlsConfig
from loadgen.stats.facts import HANDSHAKE, Ended, Finished, Sink, Started
from loadgen.traffic.tracker import DEFAULT_PLAN
from loadgen.traffic.workload import Workload, WorkloadPlan
from loadgen.transport.base import DONE, ERROR, ESTABLISHED, HANDSHAKING, INFO, NEW, WARNING, AssociationBase
from loadgen.transport.fds import check_room

_READ = 1  # libev EV_READ

# Datagrams read after an ICMP error, looking for a close_notify (a socket queue holds a few hundred).
_DRAIN = 512


class DtlsAssociation(AssociationBase):
    """A client association to one DTLS server.

    ``run()`` (or ``start()`` then ``wait()``) drives it until it fails or the waiting
    greenlet is killed, which closes it with close_notify; attempts under way then
    stay "in flight" in the accounting.
    """

    _CALLBACKS = {"_on_readable": "datagram processing", "_on_timer": "a timer step",
                  "_begin_handshake": "the handshake start"}

    def __init__(
        self,
        name: str,
        target: str,
        address: tuple[str, int],
        context: dtls_contexts.ClientContext,
        sink: Sink,
        *,
        identity: bytes,
        key: Secret,
        settings: DtlsConfig = DtlsConfig(),
        ping: WorkloadPlan = DEFAULT_PLAN,
        source_address: str | None = None,
        rng: random.Random | None = None,
        message_level: int = INFO,
    ) -> None:
        super().__init__(name, target, address, sink, identity=identity, key=key, ping=ping,
                         source_address=source_address, rng=rng, message_level=message_level)
        self._context = context
        self._settings = settings
        self._sock: Any = None
        self._engine: dtls_factory.ClientEngine | None = None
        self._reader: Any = None
        self._started_at = self._deadline = 0.0
        # Whether a datagram received may leave the engine something to send (a handshake flight):
        # False once a client engine is light, whose reads queue nothing (its last flight is
        # answered: no final flight to repeat), so the flush after each reply is skipped.
        self._reads_send = True
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- public -------------------------------------------------------------

    def handshake_once(self) -> LoadgenError | None:
        """Connect, handshake, close with close_notify: one handshake's worth of work."""
        self._handshake_only = True
        return self.run()

    def start(self) -> None:
        """Connect the UDP socket and send the ClientHello; returns at once."""
        if self._state != NEW:
            raise LocalProtocolError(f"{self.name}: association already started")
        self._say(INFO, "connecting UDP socket first ...")
        # The attempt counts from here: a socket that cannot connect is a failed handshake
        # in the stats (e.g. a source address out of ports), never a silent no-show.
        self._state = HANDSHAKING
        self._started_at = time.perf_counter()
        self._sink.record(Started(HANDSHAKE, self.target))
        try:
            self._connect()
        except LoadgenError as exc:
            self._fail(exc.with_traceback(None))  # no traceback kept: see AssociationBase._guarded
            return
        self._reader = get_hub().loop.io(self._sock.fileno(), _READ)
        self._reader.start(self._readable)
        self._guarded(self._begin_handshake)

    def close(self) -> None:
        """Stop, send close_notify if established, close the socket. Idempotent."""
        self._stop_watchers()
        if self._sock is not None:
            if self._engine is not None and not self._engine.closed:
                try:
                    self._engine.close()
                    self._flush()
                except LoadgenError:
                    pass  # the peer is gone already: nobody to say goodbye to
                except Exception as exc:  # noqa: BLE001 - a bug saying goodbye must not reach the caller
                    self._say(ERROR, f"close failed - {InternalError(f'unexpected {type(exc).__name__}')}")
            self._sock.close()
            self._sock = None
        self._mark_done()
        if not self._done.ready():
            self._done.set(None)

    # -- phases -------------------------------------------------------------

    def _connect(self) -> None:
        host, port = self.address
        family = _socket.AF_INET6 if ":" in host else _socket.AF_INET
        sock = None
        try:
            # Inside the try: at the open-file limit socket() itself fails (EMFILE), and that is
            # this attempt's socket-error, not an exception for Locust to print and retry at once.
            # Non-blocking from socket() itself: setblocking() would be two fcntl calls per handshake.
            sock = _socket.socket(family, _socket.SOCK_DGRAM | _socket.SOCK_NONBLOCK)
            check_room(sock.fileno(), "cannot open a UDP socket", self.name)
            if self._source:
                sock.bind((self._source, 0))
            sock.connect((host, port))
        except SocketsExhausted:
            if sock is not None:
                sock.close()
            raise
        except OSError as exc:
            if sock is not None:
                sock.close()
            raise socket_error(exc, f"{self.name}: cannot connect UDP socket to {host}:{port}") from None
        self._sock = sock

    def _begin_handshake(self) -> None:
        self._deadline = self._started_at + self._settings.handshake_timeout
        self._engine = dtls_factory.client_engine(self._context, self._choose_psk, mtu=self._settings.mtu,
                                                  retransmit_cap=self._settings.retransmit_cap)
        self._say(INFO, "starting a handshake")
        self._engine.start(time.perf_counter())
        self._flush()
        self._arm()

    def _handshake_completed(self) -> None:
        assert self._engine is not None
        self._say(INFO, "encrypted connection established!")
        self._reads_send = not self._engine.light
        self._sink.record(
            Finished(HANDSHAKE, self.target, time.perf_counter() - self._started_at, sent_bytes=self.bytes_sent,
                     received_bytes=self.bytes_received, retransmits=self._engine.retransmits)
        )
        if self._handshake_only:
            self._finish(None)
            return
        self._start_workload()

    def _send_due(self, tracker: Workload, now: float) -> None:
        """Time out what is overdue, send whatever the workload has due (a ping, a CoAP ACK ...)."""
        while (payload := tracker.poll(now)) is not None:
            assert self._engine is not None
            try:
                self._engine.send(payload)
            except LoadgenError as exc:  # e.g. a payload larger than the MTU allows
                tracker.abandon(exc)
                raise
            tracker.sent(self._flush())

    def _on_reply(self, reply: bytes, size: int, now: float) -> None:
        tracker = self._tracker
        if tracker is None or not tracker.receive(reply, size, now):
            self._say(WARNING, f"unexpected or late reply of {len(reply)} bytes")
        elif self._state == ESTABLISHED:
            self._send_due(tracker, now)  # the reply may call for an answer (a CoAP ACK) or free the window

    # -- callbacks from the loop --------------------------------------------

    def _on_readable(self) -> None:
        engine = self._engine
        if self._state not in (HANDSHAKING, ESTABLISHED) or engine is None:
            return
        # One datagram per call: the watcher is level-triggered and calls again while
        # more are queued, and a second recv() would mostly raise BlockingIOError,
        # which costs more than the call it saves.
        try:
            data = self._sock.recv(65536)
        except BlockingIOError:
            return
        except ConnectionRefusedError:
            raise self._refused() from None
        if not data:
            self._say(WARNING, "zero-length datagram received?")
            return
        self.bytes_received += len(data)
        now = time.perf_counter()  # the reply's arrival: what its round trip counts to
        engine.receive_datagram(data, now)
        if self._reads_send:
            self._flush()
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                self._on_reply(event.data, len(data), now)
            elif isinstance(event, HandshakeCompleted):
                self._handshake_completed()
            elif isinstance(event, ConnectionClosed):
                self._say(ERROR, "shutdown alert received")
                raise PeerClosed("shutdown alert received")
            elif isinstance(event, ConnectionFailed):
                raise event.error
        if self._state != DONE:
            self._arm()

    def _on_timer(self) -> None:
        self._timer = None  # spent: _arm() makes the next one
        now = time.perf_counter()
        engine = self._engine
        assert engine is not None
        if self._state == HANDSHAKING:
            if now >= self._deadline or engine.retransmits > self._settings.max_retransmits:
                raise engine.timeout_error()
            engine.handle_timer(now)
            self._flush()
        elif self._state == ESTABLISHED and self._tracker is not None:
            self._send_due(self._tracker, now)
        self._arm()

    # -- helpers ------------------------------------------------------------

    def _arm(self) -> None:
        """Re-arm the one timer for the next thing due (retransmit, deadline, ping)."""
        if self._state == HANDSHAKING:
            assert self._engine is not None
            timer = self._engine.get_timer()
            self._set_timer(self._deadline if timer is None else min(self._deadline, timer))
        elif self._state == ESTABLISHED and self._tracker is not None:
            wake = self._tracker.get_timer()
            if self._timer is None or wake < self._timer_at:  # else _set_timer would keep the running one
                self._set_timer(wake)

    def _fail(self, error: LoadgenError) -> None:
        """End with ``error``, closing the attempt under way with the same error."""
        now = time.perf_counter()
        if self._state == HANDSHAKING:
            # No socket: counted, and summed up in one line every 10 s (limits.ShortageLog), not one per device.
            self._say(INFO if isinstance(error, SocketsExhausted) else ERROR, f"handshake error - {error}")
            retransmits = self._engine.retransmits if self._engine is not None else 0
            self._sink.record(Finished(HANDSHAKE, self.target, now - self._started_at, error,
                                       sent_bytes=self.bytes_sent, received_bytes=self.bytes_received,
                                       retransmits=retransmits))
        elif self._state == ESTABLISHED and self._tracker is not None:
            self._tracker.fail(error, now)
        self._finish(error)

    def _finish(self, result: LoadgenError | None) -> None:
        self._mark_done()
        self._stop_watchers()
        if not self._done.ready():
            self._done.set(result)

    def _mark_done(self) -> None:
        """Enter the final state, once; an association that was up reports that it ended; the
        engine lets go of our PSK callback (closed mid-handshake, the cycle engine <-> association
        would otherwise stay, and a frozen heap never collects it)."""
        if self._state != DONE and self._engine is not None and self._engine.handshake_done:
            self._sink.record(Ended(self.target))  # active associations = handshakes - ended
        if self._engine is not None:
            self._engine.forget_chooser()
        self._state = DONE

    def _stop_watchers(self) -> None:
        for watcher in (self._reader, self._timer):
            if watcher is not None:
                watcher.stop()
                watcher.close()
        self._reader = self._timer = None

    def _flush(self) -> int:
        """Send what the engine has queued; returns the bytes sent."""
        if self._engine is None or self._sock is None:
            return 0
        total = 0
        for datagram in self._engine.datagrams_to_send():
            try:
                total += self._sock.send(datagram)
            except BlockingIOError:
                pass  # socket buffer full: the datagram is lost, as on a congested network
            except ConnectionRefusedError:
                raise self._refused() from None
        self.bytes_sent += total
        return total

    def _refused(self) -> LoadgenError:
        """The error for an ICMP port unreachable, unless the server said goodbye first.

        A server that shuts down sends close_notify and closes its socket; our next ping
        then draws an ICMP error that the kernel may report before we read the
        close_notify waiting in the queue. Read the queue: a close_notify wins.
        """
        engine = self._engine
        # At most _DRAIN datagrams, their events taken as they come: a server that keeps the
        # queue full must not keep us reading (and queueing events) for ever.
        for read in range(_DRAIN + 1):
            while engine is not None and (event := engine.next_event()) is not None:
                if isinstance(event, ConnectionClosed):
                    self._say(ERROR, "shutdown alert received")
                    return PeerClosed("shutdown alert received")
            if read == _DRAIN or engine is None or engine.closed or self._sock is None:
                break
            try:
                data = self._sock.recv(65536)
            except (BlockingIOError, ConnectionRefusedError):
                break
            engine.receive_datagram(data, time.perf_counter())
        host, port = self.address
        return ConnectionRefused(f"{self.name}: {host}:{port} refused (ICMP port unreachable)")

