"""DtlsAssociation: one simulated DTLS client, as in Qt's DTLS client example.

It connects a UDP socket to the server first (so the server sees one peer address
per client and ICMP errors reach us), handshakes with retransmission and an overall
timeout, then pings on an interval, decrypting and checking each response. Everything
it learns goes to a :class:`~loadgen.recorder.Sink` as facts.
"""

from __future__ import annotations

import logging
import random
import socket as _stdsocket
import time
from dataclasses import dataclass, field

from gevent import socket

from ..credentials import Secret
from ..errors import (
    BadReply,
    ConnectionRefused,
    LoadgenError,
    LocalProtocolError,
    PeerClosed,
    PingTimeout,
)
from ..payloads import PayloadMaker, ReplyRule, text_payload
from ..protocol import dtls
from ..protocol.events import ConnectionFailed, DataReceived, HandshakeCompleted
from ..protocol.events import PeerClosed as PeerClosedEvent
from ..recorder import HANDSHAKE, PING, Finished, Message, Sink, Started

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


@dataclass(frozen=True)
class PingPlan:
    """When and what to ping once the association is encrypted."""

    interval: float = 5.0
    jitter: float = 0.0  # fraction of the interval, applied +-
    timeout: float | None = None  # default: the interval
    payload: PayloadMaker = field(default_factory=text_payload)
    reply: ReplyRule = field(default_factory=ReplyRule)


@dataclass(frozen=True)
class DtlsSettings:
    """Per-association DTLS knobs (the context carries ciphers and PSK callbacks)."""

    mtu: int = dtls.DEFAULT_MTU
    handshake_timeout: float = 30.0
    max_retransmits: int = 8


class DtlsAssociation:
    """A client association to one DTLS server. Call :meth:`run` in its own greenlet."""

    def __init__(
        self,
        name: str,
        target: str,
        address: tuple[str, int],
        context: dtls.SSL.Context,
        sink: Sink,
        *,
        identity: bytes,
        key: Secret,
        settings: DtlsSettings = DtlsSettings(),
        ping: PingPlan = PingPlan(),
        source_address: str | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self.target = target
        self.address = address
        self._context = context
        self._sink = sink
        self._identity = identity
        self._key = key
        self._settings = settings
        self._ping = ping
        self._source = source_address
        self._rng = rng or random.Random()
        self._sock: socket.socket | None = None
        self._engine: dtls.DtlsEngine | None = None
        self.pings_sent = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    # -- public -------------------------------------------------------------

    def run(self) -> LoadgenError | None:
        """Connect, handshake, ping until killed or failed.

        Returns the error that ended the association. Killing the greenlet
        (``GreenletExit``) closes it with close_notify; attempts under way stay
        "in flight" in the accounting.
        """
        try:
            self._connect()
            self._handshake()
            self._ping_loop()
        except LoadgenError as exc:
            return exc
        finally:
            self._close()
        return None  # pragma: no cover - the ping loop only ends by an error

    def handshake_once(self) -> LoadgenError | None:
        """Connect, handshake, close with close_notify: one handshake's worth of work."""
        try:
            self._connect()
            self._handshake()
        except LoadgenError as exc:
            return exc
        finally:
            self._close()
        return None

    # -- phases -------------------------------------------------------------

    def _connect(self) -> None:
        self._say(INFO, "connecting UDP socket first ...")
        host, port = self.address
        family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
        sock = socket.socket(family, _stdsocket.SOCK_DGRAM)
        try:
            if self._source:
                sock.bind((self._source, 0))
            sock.connect((host, port))
        except OSError as exc:
            sock.close()
            raise LocalProtocolError(f"{self.name}: cannot connect UDP socket to {host}:{port}: {exc}") from None
        self._sock = sock

    def _handshake(self) -> None:
        started = time.perf_counter()
        deadline = started + self._settings.handshake_timeout
        self._sink.record(Started(HANDSHAKE, self.target))
        engine = dtls.DtlsEngine.client(self._context, self._choose_psk, mtu=self._settings.mtu)
        self._engine = engine
        try:
            self._say(INFO, "starting a handshake")
            engine.start()
            self._flush()
            while not engine.handshake_done:
                now = time.perf_counter()
                if now >= deadline or engine.retransmits > self._settings.max_retransmits:
                    raise engine.timeout_error()
                timer = engine.get_timer()
                wait = deadline - now if timer is None else min(timer, deadline - now)
                data = self._recv(wait)
                if data is None:
                    engine.handle_timer()
                else:
                    engine.receive_datagram(data)
                    self._handle_events()
                self._flush()
        except LoadgenError as exc:
            self._say(ERROR, f"handshake error - {exc}")
            self._sink.record(
                Finished(HANDSHAKE, self.target, time.perf_counter() - started, exc,
                         sent_bytes=self.bytes_sent, received_bytes=self.bytes_received,
                         retransmits=engine.retransmits)
            )
            raise
        self._say(INFO, "encrypted connection established!")
        self._sink.record(
            Finished(HANDSHAKE, self.target, time.perf_counter() - started, sent_bytes=self.bytes_sent,
                     received_bytes=self.bytes_received, retransmits=engine.retransmits)
        )

    def _ping_loop(self) -> None:
        plan = self._ping
        timeout = plan.timeout if plan.timeout is not None else plan.interval
        engine = self._engine
        assert engine is not None
        next_ping = time.perf_counter()  # Qt pings at once, then on the timer
        pending: bytes | None = None  # payload of the ping awaiting its reply
        sent_at = deadline = 0.0
        sent_bytes = 0
        late: bytes | None = None  # the last timed-out payload: its reply is not "bad"
        seq = 0
        while True:
            now = time.perf_counter()
            if pending is not None and now >= deadline:
                self._sink.record(
                    Finished(PING, self.target, now - sent_at, PingTimeout(f"no reply in {timeout:g} s"),
                             sent_bytes=sent_bytes)
                )
                late, pending = pending, None
            if pending is None and now >= next_ping:
                seq += 1
                pending = plan.payload(self.name, seq)
                self._sink.record(Started(PING, self.target))
                sent_at = now
                deadline = now + timeout
                try:
                    engine.send(pending)
                except LoadgenError as exc:  # e.g. a payload larger than the MTU allows
                    self._sink.record(Finished(PING, self.target, 0.0, exc))
                    raise
                sent_bytes = self._flush()
                self.pings_sent += 1
                spread = plan.interval * plan.jitter
                next_ping = max(next_ping + plan.interval + self._rng.uniform(-spread, spread), now)
            wake = min(deadline, next_ping) if pending is not None else next_ping
            data = self._recv(max(0.0, wake - time.perf_counter()))
            if data is None:
                continue
            engine.receive_datagram(data)
            self._flush()
            for reply in self._handle_events():
                if pending is None or (reply == late and not plan.reply.accepts(pending, reply)):
                    self._say(WARNING, f"unexpected or late reply of {len(reply)} bytes")
                    continue
                elapsed = time.perf_counter() - sent_at
                error = None
                if not plan.reply.accepts(pending, reply):
                    error = BadReply(f"reply of {len(reply)} bytes does not match rule {plan.reply.kind}")
                self._sink.record(
                    Finished(PING, self.target, elapsed, error, sent_bytes=sent_bytes,
                             received_bytes=len(data))
                )
                pending = None
            if engine.closed:
                if pending is not None:
                    self._sink.record(
                        Finished(PING, self.target, time.perf_counter() - sent_at,
                                 PeerClosed("peer closed with a ping outstanding"), sent_bytes=sent_bytes)
                    )
                raise engine.error or PeerClosed("shutdown alert received")

    # -- helpers ------------------------------------------------------------

    def _choose_psk(self, hint: bytes | None) -> tuple[bytes, Secret]:
        self._say(INFO, "providing pre-shared key ...")
        return self._identity, self._key

    def _handle_events(self) -> list[bytes]:
        """Drain engine events; return application data, raise on failure."""
        engine = self._engine
        assert engine is not None
        received: list[bytes] = []
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                received.append(event.data)
            elif isinstance(event, PeerClosedEvent):
                self._say(ERROR, "shutdown alert received")
            elif isinstance(event, ConnectionFailed):
                raise event.error
            elif isinstance(event, HandshakeCompleted):
                pass
        return received

    def _recv(self, timeout: float) -> bytes | None:
        """One datagram, or None when ``timeout`` passes first."""
        assert self._sock is not None
        # A zero timeout would make the socket non-blocking (EAGAIN): wait a tick instead.
        self._sock.settimeout(max(timeout, 0.0005))
        try:
            data = self._sock.recv(65536)
        except (TimeoutError, BlockingIOError):
            return None
        except ConnectionRefusedError:
            raise self._refused() from None
        if not data:
            self._say(WARNING, "zero-length datagram received?")
            return None
        self.bytes_received += len(data)
        return data

    def _flush(self) -> int:
        """Send what the engine has queued; returns the bytes sent."""
        assert self._sock is not None and self._engine is not None
        total = 0
        for datagram in self._engine.datagrams_to_send():
            try:
                total += self._sock.send(datagram)
            except ConnectionRefusedError:
                raise self._refused() from None
        self.bytes_sent += total
        return total

    def _refused(self) -> ConnectionRefused:
        host, port = self.address
        return ConnectionRefused(f"{self.name}: {host}:{port} refused (ICMP port unreachable)")

    def _close(self) -> None:
        if self._engine is not None and self._sock is not None and not self._engine.closed:
            self._engine.close()
            try:
                self._flush()
            except (OSError, LoadgenError):
                pass
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _say(self, level: int, text: str) -> None:
        self._sink.record(Message(level, self.name, f"{self.name}: {text}"))
