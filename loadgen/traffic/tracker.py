"""RequestTracker: what a device sends once its association is up, and how each request ends.

The one request/response loop that both client transports (DTLS and TLS) drive. It is
sans-I/O, as aioquic's connection is: it never reads a clock, touches a socket or
sleeps. The transport passes ``now`` in, sends the payload :meth:`~RequestTracker.poll`
returns, hands every reply to :meth:`~RequestTracker.receive` and wakes up at
:meth:`~RequestTracker.get_timer`. The tracker decides when the next request is due
(interval and jitter), keeps the requests outstanding (keyed by their sequence number),
matches replies, times requests out, tells late replies apart, ends the association after
``max_missed`` unanswered requests in a row, and reports every request to the sink as
facts (``Started`` when it goes out, one ``Finished`` when it ends).

Today's pings are one at a time (``max_in_flight`` = 1), so a reply answers the oldest
request outstanding (with ``expect.seq_offset`` it must also carry that request's sequence
number). :class:`RequestBook` is what the ping and the request steps (:mod:`.steps`, several
steps, several requests in flight, replies matched by their echoed sequence number) share:
the requests outstanding and how each one ends.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Protocol

from loadgen.protocol.errors import BadReply, LoadgenError, PeerClosed, PingTimeout
from loadgen.scenario.model import PingConfig
from loadgen.stats.facts import PING, Finished, Sink, Started
from loadgen.traffic.payloads import PayloadMaker, ReplyRule, payload_maker, uses_device_fields
from loadgen.traffic.workload import Gate, Uniform


class Matcher(Protocol):
    """Judges a reply against the request it answers (:class:`~.payloads.ReplyRule` is one)."""

    def check(self, request: bytes, reply: bytes, seq: int) -> str | None:
        """None when ``reply`` validly answers ``request`` (number ``seq``), else why not (``bad-reply``'s text)."""
        ...

    def names(self, request: bytes, seq: int, reply: bytes) -> bool:
        """True when ``reply`` is recognisably ``request``'s (a late reply to a timed-out request, not a bad one)."""
        ...


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """The scenario's ``ping`` section with what it takes to run it: the payload maker and the
    reply matcher. Built by :func:`traffic_plan`; one plan serves every association of a run
    (or of a device, when the payload text names the device: see :meth:`for_device`)."""

    config: PingConfig
    payload: PayloadMaker
    matcher: Matcher
    device_fields: bool = False  # the payload text uses {n} or {target}
    gate: Gate = field(default_factory=Gate, compare=False, repr=False)  # closed: no request begins

    def for_device(self, *, n: int, target: str) -> TrafficPlan:
        """This plan for device ``n`` talking to ``target``: payloads of its own when the text
        names the device or its target, else this same plan (thousands share one)."""
        if not self.device_fields:
            return self
        return replace(self, payload=payload_maker(self.config.payload, n=n, target=target))

    def workload(self, name: str, target: str, sink: Sink, *, uniform: Uniform = random.uniform) -> RequestTracker:
        """A fresh :class:`RequestTracker` for association ``name`` (:class:`~.workload.WorkloadPlan`)."""
        return RequestTracker(name, target, self, sink, uniform=uniform)


def traffic_plan(ping: PingConfig, gate: Gate | None = None) -> TrafficPlan:
    """The one place the scenario's ``ping`` section becomes what a transport runs (``gate``: the
    run's, else one of its own that stays open)."""
    return TrafficPlan(ping, payload_maker(ping.payload), ReplyRule.expecting(ping.expect),
                       uses_device_fields(ping.payload), gate if gate is not None else Gate())


class Request:
    """One request awaiting its reply (``kind``: its stats row)."""

    __slots__ = ("seq", "payload", "sent_at", "deadline", "sent_bytes", "kind")

    def __init__(self, seq: int, payload: bytes, sent_at: float, deadline: float, kind: str) -> None:
        self.seq = seq
        self.payload = payload
        self.sent_at = sent_at
        self.deadline = deadline
        self.sent_bytes = 0
        self.kind = kind


class RequestBook:
    """What every plain workload shares: the requests outstanding (by sequence number, oldest
    first) and the facts that end them (a reply, a timeout, the association's end), with the
    count of unanswered requests in a row that ends the association at ``max_missed``.

    Subclasses decide what is sent when and which request a reply answers; they forget a
    request they end and implement :meth:`_clear` (everything outstanding is gone).
    """

    def __init__(self, target: str, sink: Sink, max_missed: int, noun: str) -> None:
        self._target = target
        self._sink = sink
        self._max_missed = max_missed
        self._noun = noun  # what the requests are called in messages ("ping", "request")
        self._in_flight: dict[int, Request] = {}  # by sequence number, oldest first
        self._missed = 0  # unanswered requests in a row
        #: Requests sent so far.
        self.requests_sent = 0

    @property
    def outstanding(self) -> int:
        """Requests awaiting their reply."""
        return len(self._in_flight)

    def fail(self, error: LoadgenError, now: float) -> None:
        """The association ended with ``error``: every request outstanding fails with it (with
        ``peer-closed`` saying a request was outstanding, when the peer closed)."""
        if not self._in_flight:
            return
        requests = list(self._in_flight.values())
        self._in_flight.clear()
        self._clear()
        closed = isinstance(error, PeerClosed)
        for request in requests:
            why = PeerClosed(f"peer closed with {self._a(request.kind)} outstanding") if closed else error
            self._sink.record(Finished(request.kind, self._target, now - request.sent_at, why,
                                       sent_bytes=request.sent_bytes))

    def _clear(self) -> None:
        """Everything outstanding was failed at once: reset what the subclass keeps about it."""
        raise NotImplementedError

    def _a(self, kind: str) -> str:
        """``kind`` in a message: "a ping", "request 'telemetry'"."""
        return f"a {kind}" if kind == self._noun else f"{self._noun} {kind!r}"

    def _answered(self, request: Request, problem: str | None, size: int, now: float) -> None:
        """``request`` (already forgotten) got its reply of ``size`` bytes; ``problem``: why it is bad."""
        self._missed = 0
        error = None if problem is None else BadReply(problem)
        # Positional: once per request, and keywords cost a dataclass __init__ ~1.4k instructions more.
        self._sink.record(Finished(request.kind, self._target, now - request.sent_at, error, request.sent_bytes, size))

    def _timed_out(self, request: Request, timeout: float, now: float) -> None:
        """``request`` (already forgotten) had no reply in ``timeout`` seconds; raises
        :class:`PingTimeout` when that makes ``max_missed`` in a row."""
        self._sink.record(Finished(request.kind, self._target, now - request.sent_at,
                                   PingTimeout(f"no reply in {timeout:g} s"), sent_bytes=request.sent_bytes))
        self._missed += 1
        if self._missed >= self._max_missed:
            raise PingTimeout(f"{self._missed} {self._noun}s in a row unanswered: the server is gone")

    def _abandoned(self, kind: str, error: LoadgenError) -> None:
        """A request of ``kind`` (already forgotten) could not be sent: it fails with ``error``."""
        self._sink.record(Finished(kind, self._target, 0.0, error))


class RequestTracker(RequestBook):
    """The requests of one association: when to send, what is outstanding, how each one ends.

    ``name`` is the association's (payloads may carry it), ``target`` the one its facts name.
    ``uniform(a, b)`` draws the jitter (pass a seeded ``Random``'s for a reproducible run).
    Nothing is due before :meth:`start`.
    """

    def __init__(self, name: str, target: str, plan: TrafficPlan, sink: Sink, *,
                 uniform: Uniform = random.uniform, max_in_flight: int = 1,
                 kind: str = PING) -> None:
        config = plan.config
        super().__init__(target, sink, config.max_missed, kind)
        self._name = name
        self._kind = kind
        self._make = plan.payload
        self._matcher = plan.matcher
        self._interval = config.interval
        self._spread = config.interval * config.jitter  # the jitter is a fraction of the interval, applied +-
        self._timeout = config.timeout if config.timeout is not None else config.interval
        self._max_in_flight = max_in_flight
        self._uniform = uniform
        self._gate = plan.gate
        self._started = Started(kind, target)  # the same (frozen) fact for every request: made once
        # The oldest outstanding request (None: none), kept apart so that the per-ping calls
        # (get_timer twice, receive, poll) read an attribute instead of iterating the dict.
        self._head: Request | None = None
        self._seq = 0
        self._late: Request | None = None  # the last timed-out request: its reply is late, not bad
        self._next = float("inf")  # when the next request is due

    def start(self, now: float) -> None:
        """The association is up: the first request is due at once (as Qt's client pings), then on the interval."""
        self._next = now

    def get_timer(self) -> float:
        """When :meth:`poll` has something to do next (a deadline or a request due); inf: nothing."""
        head = self._head
        if head is None:
            return self._next
        deadline = head.deadline
        if len(self._in_flight) >= self._max_in_flight:
            # While the window is full only a reply or a deadline matters: waking for the next
            # request instead would spin when the interval is shorter than a round trip.
            return deadline
        return min(deadline, self._next)

    def poll(self, now: float) -> bytes | None:
        """Time out what is overdue, then begin the next request if one is due and returns its
        payload: the transport sends it, then calls :meth:`sent` (or :meth:`abandon`). None: nothing to send.

        Raises :class:`~loadgen.protocol.errors.PingTimeout` when ``max_missed`` requests in a row went unanswered.
        """
        head = self._head
        if head is not None and now >= head.deadline:  # checked here: poll runs twice per request
            self._expire(now)
        if now < self._next or len(self._in_flight) >= self._max_in_flight:
            return None
        if not self._gate.open:  # checked once a request is due, so it costs nothing in between
            self._next = float("inf")  # nothing is due again: get_timer() must not wake for the request not begun
            return None
        self._seq += 1
        payload = self._make(self._name, self._seq)
        self._sink.record(self._started)
        request = self._in_flight[self._seq] = Request(self._seq, payload, now, now + self._timeout, self._kind)
        if self._head is None:
            self._head = request
        return payload

    def sent(self, size: int) -> None:
        """The payload :meth:`poll` returned went out as ``size`` bytes on the wire."""
        request = self._in_flight[self._seq]
        request.sent_bytes = size
        self.requests_sent += 1
        due = self._next + self._interval
        if self._spread:
            due += self._uniform(-self._spread, self._spread)
        # Never before this request went out (max() as a comparison: a builtin call costs ~1.3k instructions).
        self._next = due if due > request.sent_at else request.sent_at

    def abandon(self, error: LoadgenError) -> None:
        """The payload :meth:`poll` returned could not be sent (e.g. larger than the MTU): it fails with ``error``."""
        if self._head is not None and self._head.seq == self._seq:
            self._pop_head()
        else:
            self._in_flight.pop(self._seq, None)
        self._abandoned(self._kind, error)

    def receive(self, reply: bytes, size: int, now: float) -> bool:
        """A reply arrived (``size``: the bytes it took on the wire). False: it answers no request
        outstanding (unexpected, or the late reply to one that timed out and was counted then)."""
        # A reply answers the oldest request outstanding (requests in flight are answered in order).
        request = self._head
        if request is None:
            return False
        problem = self._matcher.check(request.payload, reply, request.seq)
        if problem is not None and (late := self._late) is not None \
                and self._matcher.names(late.payload, late.seq, reply):
            return False
        self._pop_head()
        self._answered(request, problem, size, now)
        return True

    def _clear(self) -> None:
        self._head = None

    def _expire(self, now: float) -> None:
        """Fail the requests whose deadline passed (oldest first: they share one timeout)."""
        while (request := self._head) is not None:
            if now < request.deadline:
                return
            self._pop_head()
            self._late = request
            self._timed_out(request, self._timeout, now)

    def _pop_head(self) -> None:
        """The oldest request is over: forget it; the next oldest (if any) is the head."""
        assert self._head is not None
        del self._in_flight[self._head.seq]
        self._head = next(iter(self._in_flight.values())) if self._in_flight else None


#: The scenario's default ``ping`` section, built: what a transport runs when given no plan.
DEFAULT_PLAN = traffic_plan(PingConfig())
