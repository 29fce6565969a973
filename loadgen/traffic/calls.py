"""CallWorkload: a workload whose requests are a caller's calls, not an interval's pings.

The blocking clients of the Python API (:mod:`loadgen.locust.client`) run on the same
transports as scenario devices; what differs is who decides what goes out: a Locust task
calls ``client.request(payload)``, which :meth:`CallWorkload.submit` queues, and the
transport sends it at its next :meth:`~CallWorkload.poll` (the client wakes it). Like
:class:`~.tracker.RequestTracker` it is sans-I/O (time passed in, no clock, no socket, no
gevent) and reports every call as facts: ``Started`` when submitted, one ``Finished`` when
it ends. Each :class:`Call` learns its end through its ``notify`` callback.

Replies carry no id, so a reply answers the oldest call awaiting one (a TLS stream and one
call at a time keep that exact). A call that times out leaves its reply free to arrive late,
where it would be taken for the next call's: so a timeout ends the association
(:meth:`~CallWorkload.poll` raises once the timed-out call is counted), and the next call
gets a fresh one.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.protocol.errors import BadReply, LoadgenError, LocalProtocolError, PeerClosed, PingTimeout
from loadgen.stats.facts import Finished, Sink, Started
from loadgen.traffic.workload import Uniform, Workload

#: What a caller may pass as ``expect``: None (any reply), ``"echo"`` (the reply equals the
#: request), bytes (the reply starts with them), a compiled bytes regex (searched, so anchor it
#: with ``\A`` to match from the start) or ``check(reply) -> bool``.
Expectation = None | str | bytes | re.Pattern[bytes] | Callable[[bytes], bool]

#: Calls queued or awaiting a reply at once, per association: a bound on the queue.
MAX_OUTSTANDING = 256


@dataclass(frozen=True, slots=True)
class ReplyCheck:
    """A reply judged against its request, as ``expect`` asks (see :data:`Expectation`)."""

    kind: str
    test: Callable[[bytes, bytes], bool]

    def accepts(self, request: bytes, reply: bytes) -> bool:
        return self.test(request, reply)


def reply_check(expect: Expectation) -> ReplyCheck | None:
    """The check for ``expect``; None when any reply will do. Raises ValueError for what it cannot be."""
    if expect is None:
        return None
    if isinstance(expect, str):
        if expect != "echo":
            raise ValueError(f"expect={expect!r}: give 'echo', bytes (a prefix), a bytes regex or a function")
        return ReplyCheck("echo", lambda request, reply: reply == request)
    if isinstance(expect, bytes):
        return ReplyCheck(f"prefix {expect[:16]!r}", lambda _, reply: reply.startswith(expect))
    if isinstance(expect, re.Pattern):
        if not isinstance(expect.pattern, bytes):
            raise ValueError("expect: a regex must be compiled from bytes (re.compile(rb'...'))")
        return ReplyCheck(f"regex {expect.pattern[:32]!r}", lambda _, reply: expect.search(reply) is not None)
    if callable(expect):
        name = getattr(expect, "__name__", "check")
        return ReplyCheck(f"check {name}", lambda _, reply: bool(expect(reply)))
    raise ValueError(f"expect: cannot judge a reply by a {type(expect).__name__}")


class Call:
    """One call: what goes out, whether a reply is awaited, and (once over) how it ended."""

    __slots__ = ("kind", "payload", "wants_reply", "check", "timeout", "notify", "submitted_at", "deadline",
                 "sent_bytes", "reply", "error", "elapsed", "done")

    def __init__(self, kind: str, payload: bytes, *, wants_reply: bool = True, check: ReplyCheck | None = None,
                 timeout: float = 5.0, notify: Callable[[Call], None] = lambda call: None) -> None:
        self.kind = kind  # the stats row and the Locust name's second half
        self.payload = payload
        self.wants_reply = wants_reply
        self.check = check
        self.timeout = timeout
        self.notify = notify  # called once, when the call is over
        self.submitted_at = self.deadline = 0.0
        self.sent_bytes = 0
        self.reply: bytes | None = None
        self.error: LoadgenError | None = None
        self.elapsed = 0.0
        self.done = False


class CallWorkload:
    """The calls of one association (the :class:`~.workload.Workload` protocol, and :meth:`submit`).

    ``on_start`` is called when the association is up (the client waits for it).
    """

    def __init__(self, target: str, sink: Sink, *, on_start: Callable[[], None] = lambda: None,
                 max_outstanding: int = MAX_OUTSTANDING) -> None:
        self._target = target
        self._sink = sink
        self._on_start = on_start
        self._max = max_outstanding
        self._queued: deque[Call] = deque()  # submitted, not yet sent
        self._waiting: deque[Call] = deque()  # sent, awaiting a reply, oldest first
        self._sending: Call | None = None  # returned by poll, not yet sent()
        self._sending_at = 0.0
        self._timed_out: Call | None = None  # counted: ends the association at the next poll
        self.started = False
        self.closed = False
        #: Calls sent so far.
        self.requests_sent = 0

    @property
    def outstanding(self) -> int:
        """Calls submitted and not over yet (queued or awaiting a reply)."""
        return len(self._queued) + len(self._waiting) + (self._sending is not None)

    def submit(self, call: Call, now: float) -> None:
        """Queue ``call`` (the attempt starts now); the transport sends it at its next poll.

        Raises :class:`LocalProtocolError` (nothing counted) when the association is over or
        ``max_outstanding`` calls are already outstanding."""
        if self.closed or not self.started:
            raise LocalProtocolError("the association is not up")
        if self.outstanding >= self._max:
            raise LocalProtocolError(f"{self._max} calls outstanding on one association already")
        call.submitted_at = now
        call.deadline = now + call.timeout
        self._sink.record(Started(call.kind, self._target))
        self._queued.append(call)

    # -- the Workload protocol ----------------------------------------------------

    def start(self, now: float) -> None:
        self.started = True
        self._on_start()

    def get_timer(self) -> float:
        """Now when a call is queued, else the earliest deadline of those awaiting a reply (inf: none)."""
        if self._queued or self._timed_out is not None:
            return 0.0
        return min((call.deadline for call in self._waiting), default=float("inf"))

    def poll(self, now: float) -> bytes | None:
        """Time out what is overdue, then hand the next queued call's payload to the transport.

        Raises :class:`PingTimeout` (ending the association) once a call timed out: its reply may
        still come, and would be taken for the next call's."""
        self._expire(now)
        if self._timed_out is not None:
            call, self._timed_out = self._timed_out, None
            error = PingTimeout(f"{call.kind}: no reply in {call.timeout:g} s; the association is closed so that "
                                "a late reply is not taken for the next call's")
            self.fail(error, now)  # the calls after it end with it (the transport may not call fail)
            raise error
        if not self._queued:
            return None
        call = self._sending = self._queued.popleft()
        self._sending_at = now
        return call.payload

    def sent(self, size: int) -> None:
        call, self._sending = self._sending, None
        assert call is not None, "sent() without a payload from poll()"
        call.sent_bytes = size
        self.requests_sent += 1
        if call.wants_reply:
            self._waiting.append(call)
        else:
            self._finish(call, self._sending_at, None)

    def abandon(self, error: LoadgenError) -> None:
        call, self._sending = self._sending, None
        if call is not None:
            self._finish(call, self._sending_at, error)

    def receive(self, reply: bytes, size: int, now: float) -> bool:
        """The reply answers the oldest call awaiting one; False: none is."""
        if not self._waiting:
            return False
        call = self._waiting.popleft()
        call.reply = reply
        error = None
        if call.check is not None and not call.check.accepts(call.payload, reply):
            error = BadReply(f"reply of {len(reply)} bytes does not match rule {call.check.kind}")
        self._finish(call, now, error, received=size)
        return True

    def fail(self, error: LoadgenError, now: float) -> None:
        """The association ended with ``error``: every call not over fails with it."""
        self.closed = True
        if isinstance(error, PeerClosed):
            error = PeerClosed("peer closed with a call outstanding")
        for call in self._take_all():
            self._finish(call, now, error)

    def detach(self, error: LoadgenError) -> list[Call]:
        """The association ended without :meth:`fail` (closed from outside): the calls not over are
        released with ``error`` but not counted (they stay in flight, as attempts under way at a
        stop do). Returns them."""
        self.closed = True
        calls = self._take_all()
        for call in calls:
            call.error, call.done = error, True
            call.notify(call)
        return calls

    # -- helpers ------------------------------------------------------------------

    def _take_all(self) -> list[Call]:
        calls = [*self._waiting, *([self._sending] if self._sending is not None else []), *self._queued]
        self._waiting.clear()
        self._queued.clear()
        self._sending = None
        return calls

    def _expire(self, now: float) -> None:
        for call in [c for c in self._waiting if now >= c.deadline]:
            self._waiting.remove(call)
            self._finish(call, now, PingTimeout(f"{call.kind}: no reply in {call.timeout:g} s"))
            self._timed_out = call

    def _finish(self, call: Call, now: float, error: LoadgenError | None, *, received: int = 0) -> None:
        call.elapsed = max(now - call.submitted_at, 0.0)
        call.error, call.done = error, True
        self._sink.record(Finished(call.kind, self._target, call.elapsed, error, sent_bytes=call.sent_bytes,
                                   received_bytes=received))
        call.notify(call)


class CallPlan:
    """The :class:`~.workload.WorkloadPlan` of one client connection: it hands the association the
    client's workload (one plan, one association: a reconnect makes a new plan)."""

    def __init__(self, workload: Workload) -> None:
        self._workload = workload

    def for_device(self, *, n: int, target: str) -> CallPlan:
        return self

    def workload(self, name: str, target: str, sink: Sink, *, uniform: Uniform) -> Workload:
        return self._workload
