"""An in-memory "wire" between one DTLS client engine and the server side.

No sockets: datagrams move between a client :class:`DtlsEngine` and the server,
which is :func:`loadgen.protocol.dtls_factory.accept` until a ClientHello with a valid
cookie creates the server engine, and that engine afterwards. Chosen datagrams can
be dropped (by direction and per-direction index, counted from 0 and including
dropped ones), and retransmission timers are driven by the wire's clock: it moves to
the earliest ``get_timer()`` deadline (and any other due within :data:`TIMER_TICK` of
it), then calls ``handle_timer(now)`` on both engines.

The wire's clock is the real one plus the time it skipped. While every running timer is
one the engines keep themselves, the clock jumps (no sleep). While an OpenSSL engine's
own DTLS timer runs, it sleeps for real instead: OpenSSL reads its own clock, which no
binding lets a test move.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from OpenSSL import SSL

from loadgen.protocol import dtls_factory
from loadgen.protocol.events import ConnectionFailed, Event, HandshakeCompleted
from loadgen.protocol.openssl import dtls

#: Timers that expire within this many seconds of each other are handled together.
TIMER_TICK = 0.1

C2S = "c2s"
S2C = "s2c"


@dataclass
class Sent:
    direction: str
    index: int
    datagram: bytes
    dropped: bool


class Wire:
    def __init__(
        self,
        server_context: SSL.Context,
        client: dtls.DtlsEngine,
        *,
        peer: bytes = b"192.0.2.1:40000",
        drop: set[tuple[str, int]] | frozenset[tuple[str, int]] = frozenset(),
        server_mtu: int = dtls.DEFAULT_MTU,
        server_light: bool = True,
    ) -> None:
        self.server_context = server_context
        self.client = client
        self.server: dtls.DtlsEngine | None = None
        self.peer = peer
        self.drop = set(drop)
        self.server_mtu = server_mtu
        self.server_light = server_light
        self.log: list[Sent] = []
        self.client_events: list[Event] = []
        self.server_events: list[Event] = []
        self._queues: dict[str, deque[bytes]] = {C2S: deque(), S2C: deque()}
        self.timer_sleeps = 0  # timer steps taken (slept or skipped)
        self.skipped = 0.0  # seconds the clock jumped instead of sleeping

    def now(self) -> float:
        """The wire's clock, which the engines get as ``now``."""
        return time.monotonic() + self.skipped

    # -- bookkeeping ----------------------------------------------------------

    def count(self, direction: str, *, include_dropped: bool = True) -> int:
        return sum(1 for s in self.log if s.direction == direction and (include_dropped or not s.dropped))

    def datagrams(self, direction: str) -> list[bytes]:
        return [s.datagram for s in self.log if s.direction == direction]

    def _collect(self) -> None:
        for d in self.client.datagrams_to_send():
            self._queues[C2S].append(d)
        if self.server is not None:
            for d in self.server.datagrams_to_send():
                self._queues[S2C].append(d)
        self.client_events.extend(iter(self.client.next_event, None))
        if self.server is not None:
            self.server_events.extend(iter(self.server.next_event, None))

    # -- moving datagrams -----------------------------------------------------

    def _transmit(self, direction: str, datagram: bytes) -> None:
        index = self.count(direction)
        dropped = (direction, index) in self.drop
        self.log.append(Sent(direction, index, datagram, dropped))
        if dropped:
            return
        if direction == S2C:
            self.client.receive_datagram(datagram, self.now())
        elif self.server is None:
            engine, replies = dtls_factory.accept(self.server_context, datagram, self.peer, self.now(),
                                                  mtu=self.server_mtu, light=self.server_light)
            self.server = engine
            self._queues[S2C].extend(replies)
        else:
            self.server.receive_datagram(datagram, self.now())

    def pump(self) -> None:
        """Deliver datagrams, one at a time, until neither side has anything to send."""
        self._collect()
        while self._queues[C2S] or self._queues[S2C]:
            for direction in (C2S, S2C):
                if self._queues[direction]:
                    self._transmit(direction, self._queues[direction].popleft())
                    self._collect()

    # -- driving a handshake --------------------------------------------------

    def _engines(self) -> list[dtls.DtlsEngine]:
        return [e for e in (self.client, self.server) if e is not None]

    @staticmethod
    def _settled(engine: dtls.DtlsEngine | None) -> bool:
        return engine is not None and (engine.handshake_done or engine.closed)

    def handshake(self, *, budget: float = 8.0) -> None:
        """Start the client and run until both sides have finished or failed.

        Raises AssertionError when the sides are still unsettled after ``budget``
        seconds of the wire's clock, or when no timer is left to make progress.
        """
        self.client.start(self.now())
        self.run_until_settled(budget=budget)

    def run_until_settled(self, *, budget: float = 8.0) -> None:
        deadline = self.now() + budget
        while True:
            self.pump()
            if self._settled(self.client) and self._settled(self.server):
                return
            if self.client.closed and self.server is None:
                return
            timers = [t for t in (e.get_timer() for e in self._engines()) if t is not None]
            if not timers:
                raise AssertionError(f"handshake stalled with no timer running: {self.describe()}")
            # Timers due within one tick of the earliest fire in the same step: two
            # engines that armed their timers microseconds apart retransmit together,
            # whatever the scheduling jitter of the machine running the tests.
            wait = max(t for t in timers if t <= min(timers) + TIMER_TICK) - self.now()
            if self.now() + wait > deadline:
                raise AssertionError(f"handshake not settled within {budget}s: {self.describe()}")
            self.timer_sleeps += 1
            if self._openssl_timer_running():
                time.sleep(max(wait, 0.0) + 0.002)
            else:
                self.skipped += max(wait, 0.0) + 0.002
            for engine in self._engines():
                engine.handle_timer(self.now())

    def _openssl_timer_running(self) -> bool:
        """True while an OpenSSL engine's own DTLS timer runs (it retransmits by OpenSSL's clock)."""
        return any(isinstance(e, dtls.DtlsEngine) and e.get_timer() is not None and e._openssl_due is not None
                   for e in self._engines())

    def describe(self) -> str:
        return ", ".join(f"{s.direction}#{s.index}{'(dropped)' if s.dropped else ''}" for s in self.log)

    # -- event helpers --------------------------------------------------------

    @staticmethod
    def only(events: list[Event], kind: type) -> list[Event]:
        return [e for e in events if isinstance(e, kind)]

    def completed(self) -> tuple[HandshakeCompleted, HandshakeCompleted]:
        (c,) = self.only(self.client_events, HandshakeCompleted)
        (s,) = self.only(self.server_events, HandshakeCompleted)
        return c, s

    def failures(self) -> tuple[list[ConnectionFailed], list[ConnectionFailed]]:
        client = self.only(self.client_events, ConnectionFailed)
        return client, self.only(self.server_events, ConnectionFailed)
