"""Request steps: a device's plain (non-CoAP) workload of several requests, sans-I/O.

The scenario's ``requests:`` list, when its steps carry payloads, becomes a :class:`StepsPlan`
and, per association, a :class:`StepsWorkload` (a :class:`~.workload.Workload`):

- ``once`` steps go first, right after the handshake (one request each); the other steps
  begin when every once step has ended (answered, failed or timed out): "register, then report";
- then every other step runs on its own interval (``interval``, by default the ping section's),
  and the ``weight`` steps share the ping section's interval: at each tick one of them is picked
  by weight (as Locust picks tasks); :class:`~.schedule.StepSchedule` (CoAP's too) says when;
- a step has up to ``in_flight`` requests outstanding; while its window is full it waits.

One sequence number counts the requests of an association across all its steps (1, 2, 3 ...):
the ``{seq}`` of a text payload, the number a binary payload carries at its ``seq_offset``, and
the number a reply must echo at ``expect.seq_offset`` are the same. A reply is matched by that
echoed number when a step expects one (several in flight, answered in any order), else it
answers the oldest request outstanding of the steps that expect none (FIFO, as the ping).
Every request is reported as ``Started`` and exactly one ``Finished`` named after its step.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field, replace

from loadgen.protocol.errors import LoadgenError
from loadgen.scenario.model import PingConfig, RequestStep
from loadgen.stats.facts import Sink, Started
from loadgen.traffic.payloads import PayloadMaker, ReplyRule, payload_maker, uses_device_fields
from loadgen.traffic.schedule import StepSchedule
from loadgen.traffic.tracker import Request, RequestBook
from loadgen.traffic.workload import Gate, Uniform

#: Timed-out requests remembered so that their late replies are told from bad ones.
LATE_KEPT = 16
_INF = float("inf")


@dataclass(frozen=True, slots=True)
class PlainStep:
    """One request step, built: what it sends, when, and how its replies are judged."""

    name: str
    step: RequestStep  # as the scenario gave it (for the schedule and per-device payloads)
    make: PayloadMaker
    rule: ReplyRule
    timeout: float

    @property
    def echo(self) -> tuple[int, int] | None:
        """Where its replies echo the sequence number: (offset, width), or None (matched FIFO)."""
        offset = self.rule.seq_offset
        return None if offset is None else (offset, self.rule.seq_width)


def plain_step(step: RequestStep, ping: PingConfig) -> PlainStep:
    """``step`` built; its timeout is by default its own interval, else the ping section's timeout."""
    assert step.payload is not None, "a plain step carries a payload"
    timeout = step.timeout if step.timeout is not None else step.interval or ping.timeout
    assert timeout is not None  # PingConfig fills its timeout in
    return PlainStep(step.name, step, payload_maker(step.payload), ReplyRule.expecting(step.expect), timeout)


@dataclass(frozen=True, slots=True)
class StepsPlan:
    """The ``requests:`` list of plain steps, built once for every association of a run (or of a
    device, when a payload text names the device: see :meth:`for_device`)."""

    steps: tuple[PlainStep, ...]
    interval: float  # the ping section's: the weighted steps' and the default interval
    jitter: float  # the ping section's: a fraction of each interval, applied +-
    max_missed: int
    gate: Gate = field(default_factory=Gate, compare=False, repr=False)  # closed: no request begins

    def for_device(self, *, n: int, target: str) -> StepsPlan:
        """This plan for device ``n`` talking to ``target``: payloads of its own for the steps whose text
        names the device or its target, else this same plan (thousands share one)."""
        if not any(s.step.payload is not None and uses_device_fields(s.step.payload) for s in self.steps):
            return self
        steps = tuple(replace(s, make=payload_maker(s.step.payload, n=n, target=target))
                      if s.step.payload is not None and uses_device_fields(s.step.payload) else s
                      for s in self.steps)
        return replace(self, steps=steps)

    def workload(self, name: str, target: str, sink: Sink, *, uniform: Uniform = random.uniform) -> StepsWorkload:
        """A fresh :class:`StepsWorkload` for association ``name`` (:class:`~.workload.WorkloadPlan`)."""
        return StepsWorkload(name, target, self, sink, uniform=uniform)


def steps_plan(ping: PingConfig, requests: tuple[RequestStep, ...], gate: Gate | None = None) -> StepsPlan:
    """The plan for plain request steps; the ping section gives the shared interval, the jitter,
    the default timeout and ``max_missed`` (``gate``: the run's, else one of its own)."""
    return StepsPlan(tuple(plain_step(step, ping) for step in requests), ping.interval, ping.jitter, ping.max_missed,
                     gate if gate is not None else Gate())


class _Step:
    """One step's state in one association."""

    __slots__ = ("index", "spec", "started")

    def __init__(self, index: int, spec: PlainStep, target: str) -> None:
        self.index = index  # in the plan and the schedule (whose ``busy`` counts its requests outstanding)
        self.spec = spec
        self.started = Started(spec.name, target)  # the same (frozen) fact for every request: made once


class _StepRequest(Request):
    __slots__ = ("state", "key")

    def __init__(self, seq: int, payload: bytes, sent_at: float, state: _Step, key: bytes | None) -> None:
        super().__init__(seq, payload, sent_at, sent_at + state.spec.timeout, state.spec.name)
        self.state = state
        self.key = key  # the sequence-number bytes its reply must echo (None: matched FIFO)


class StepsWorkload(RequestBook):
    """The request steps of one association (see the module's docstring for the rules).

    ``uniform(a, b)`` draws the jitter and the weighted picks (a seeded ``Random``'s for a
    reproducible run). Nothing is due before :meth:`start`.
    """

    def __init__(self, name: str, target: str, plan: StepsPlan, sink: Sink, *,
                 uniform: Uniform = random.uniform) -> None:
        super().__init__(target, sink, plan.max_missed, "request")
        self._name = name
        self._gate = plan.gate
        self._states = states = [_Step(i, spec, target) for i, spec in enumerate(plan.steps)]
        self._schedule = StepSchedule([spec.step for spec in plan.steps], shared_interval=plan.interval,
                                      jitter=plan.jitter, uniform=uniform)
        # Distinct places where replies echo the sequence number (usually one, often none).
        self._layouts = sorted({s.spec.echo for s in states if s.spec.echo is not None})
        self._by_echo: dict[tuple[int, int, bytes], _StepRequest] = {}
        self._fifo = 0  # outstanding requests matched in order (their steps expect no echo)
        self._late: deque[_StepRequest] = deque(maxlen=LATE_KEPT)
        self._seq = 0
        self._last: _StepRequest | None = None  # what the last poll returned
        self._deadline = _INF  # the earliest deadline outstanding

    # -- the Workload protocol ------------------------------------------------

    def start(self, now: float) -> None:
        """The association is up: the once steps are due at once, else the others."""
        self._schedule.start(now)

    def get_timer(self) -> float:
        """When :meth:`poll` has something to do next (a deadline or a request due); inf: nothing."""
        return min(self._deadline, self._schedule.next_time())

    def poll(self, now: float) -> bytes | None:
        """Time out what is overdue, then begin the next request due and return its payload (None: nothing to send).

        Raises :class:`~loadgen.protocol.errors.PingTimeout` when ``max_missed`` requests in a row went unanswered.
        """
        if now >= self._deadline:
            self._expire(now)
        index = self._schedule.due(now)
        if index is None:
            return None
        if not self._gate.open:  # checked once a step is due, so it costs nothing in between
            self._schedule.halt()  # and get_timer() does not keep waking for the step not begun
            return None
        request = self._begin(self._states[index], now)
        self._schedule.sent(index, now)
        return request.payload

    def sent(self, size: int) -> None:
        """The payload :meth:`poll` returned went out as ``size`` bytes on the wire."""
        assert self._last is not None
        self._last.sent_bytes = size
        self.requests_sent += 1

    def abandon(self, error: LoadgenError) -> None:
        """The payload :meth:`poll` returned could not be sent: it fails with ``error``."""
        request = self._last
        if request is None or request.seq not in self._in_flight:
            return
        self._forget(request, request.sent_at)
        self._abandoned(request.kind, error)

    def receive(self, reply: bytes, size: int, now: float) -> bool:
        """A reply arrived (``size``: the bytes it took on the wire). False: it answers no request
        outstanding (unexpected, or the late reply to one that timed out and was counted then)."""
        request = self._match(reply)
        if request is None:
            return False
        rule = request.state.spec.rule
        problem = rule.check(request.payload, reply, request.seq)
        if problem is not None and self._is_late(reply):
            return False
        self._forget(request, now)
        self._answered(request, problem, size, now)
        return True

    # -- helpers --------------------------------------------------------------

    def _begin(self, state: _Step, now: float) -> _StepRequest:
        """A new request of ``state``'s step: numbered, reported as started, outstanding."""
        self._seq = seq = self._seq + 1
        spec = state.spec
        echo = spec.echo
        key = None if echo is None else (seq % (1 << (8 * echo[1]))).to_bytes(echo[1], "big")
        request = _StepRequest(seq, spec.make(self._name, seq), now, state, key)
        self._sink.record(state.started)
        self._in_flight[seq] = request
        self._schedule.busy[state.index] += 1
        if echo is None:
            self._fifo += 1
        else:
            assert key is not None
            self._by_echo[(*echo, key)] = request
        self._deadline = min(self._deadline, request.deadline)
        self._last = request
        return request

    def _match(self, reply: bytes) -> _StepRequest | None:
        """The request ``reply`` answers: by its echoed sequence number, else the oldest matched in
        order; failing both, the oldest outstanding (it is then judged bad), unless the reply is late."""
        if not self._in_flight:
            return None
        for offset, width in self._layouts:
            request = self._by_echo.get((offset, width, reply[offset : offset + width]))
            if request is not None:
                return request
        oldest: _StepRequest | None = None
        for candidate in self._in_flight.values():
            assert isinstance(candidate, _StepRequest)
            if candidate.key is None:
                return candidate
            if oldest is None:
                oldest = candidate
            if not self._fifo:
                break
        return None if self._is_late(reply) else oldest

    def _is_late(self, reply: bytes) -> bool:
        """True when ``reply`` is recognisably the answer to a request that timed out."""
        return any(r.state.spec.rule.names(r.payload, r.seq, reply) for r in self._late)

    def _forget(self, request: _StepRequest, now: float) -> None:
        """``request`` is over: it is no longer outstanding (a once step's end counts toward the others' start)."""
        del self._in_flight[request.seq]
        state = request.state
        self._schedule.busy[state.index] -= 1
        if request.key is None:
            self._fifo -= 1
        else:
            echo = state.spec.echo
            assert echo is not None
            self._by_echo.pop((*echo, request.key), None)
        if request.deadline <= self._deadline:
            self._deadline = min((r.deadline for r in self._in_flight.values()), default=_INF)
        if state.spec.step.once:
            self._schedule.once_ended(now)

    def _expire(self, now: float) -> None:
        """Fail the requests whose deadline passed, earliest first (the steps' timeouts differ)."""
        overdue = sorted((r for r in self._in_flight.values() if r.deadline <= now), key=lambda r: r.deadline)
        for request in overdue:
            assert isinstance(request, _StepRequest)
            self._forget(request, now)
            self._late.append(request)
            self._timed_out(request, request.state.spec.timeout, now)

    def _clear(self) -> None:
        busy = self._schedule.busy
        busy[:] = [0] * len(busy)
        self._by_echo.clear()
        self._fifo = 0
        self._deadline = _INF
