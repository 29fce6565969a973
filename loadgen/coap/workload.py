"""CoapWorkload: one DTLS association's CoAP request steps (a :class:`~loadgen.traffic.workload.Workload`).

The :class:`~loadgen.traffic.schedule.StepSchedule` says when each step is due, the
:class:`~loadgen.coap.endpoint.CoapEndpoint` does the CoAP (ids, tokens, ACKs, retransmission,
Observe, Block2), and this turns what happens into facts: ``Started`` when a request goes
out and exactly one ``Finished(kind=step.name, ...)`` when it ends, with its retransmissions
and response code ("2.05"; "RST" for a reset). Every fresh Observe notification is a fact of
its own, kind ``"<step> notification"``, started and finished on arrival, its ``elapsed`` the
interval since the previous one (or since the registration's response); reordered (stale)
ones are counted in :attr:`CoapWorkload.stale_notifications` only.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from loadgen.coap import message as m
from loadgen.coap.endpoint import CoapEndpoint
from loadgen.coap.exchange import (
    OBSERVING,
    Event,
    Exchange,
    Failed,
    Notification,
    ObserveEnded,
    Response,
    judge,
    response_code,
)
from loadgen.protocol.errors import CoapReset, CoapTimeout, LoadgenError, PeerClosed
from loadgen.stats.facts import Finished, Sink, Started
from loadgen.traffic.schedule import StepSchedule
from loadgen.traffic.workload import Uniform

if TYPE_CHECKING:
    from loadgen.coap.plan import CoapPlan, CoapStep


class CoapWorkload:
    """The CoAP requests of association ``name``; its facts name ``target``. Nothing is due before :meth:`start`."""

    def __init__(self, name: str, target: str, plan: CoapPlan, sink: Sink, *,
                 uniform: Uniform = random.uniform) -> None:
        self._name = name
        self._target = target
        self._sink = sink
        self._gate = plan.gate
        self._steps = plan.steps
        windows = sum(s.step.in_flight for s in plan.steps)
        self._endpoint = CoapEndpoint(plan.config, uniform=uniform, max_exchanges=windows)
        self._schedule = StepSchedule([s.step for s in plan.steps], shared_interval=plan.ping.interval,
                                      jitter=plan.ping.jitter, uniform=uniform)
        self._started = [Started(s.step.name, target) for s in plan.steps]  # frozen facts: made once
        self._awaiting = 0  # requests awaiting their response
        self._max_missed = plan.ping.max_missed
        self._missed = 0  # requests in a row that timed out
        self._seq = 0
        self._now = 0.0
        self._last: Exchange | None = None  # whose datagram poll returned last
        #: Requests sent so far (first transmissions; retransmissions and blocks are counted on the request).
        self.requests_sent = 0
        #: Fresh Observe notifications counted, and reordered ones left out (RFC 7641 3.4).
        self.notifications = 0
        self.stale_notifications = 0

    @property
    def outstanding(self) -> int:
        """Requests awaiting their response (observations, once registered, are not)."""
        return self._awaiting

    def start(self, now: float) -> None:
        """The association is up: the ``once`` steps are due now, then the others."""
        self._schedule.start(now)

    def get_timer(self) -> float:
        """When :meth:`poll` has something to do next (a retransmission, a deadline, a step due); inf: nothing."""
        return min(self._endpoint.get_timer(), self._schedule.next_time())

    def poll(self, now: float) -> bytes | None:
        """Retransmit and time out what is due, then the next datagram to send (an ACK, a
        retransmission, a block request, a new request), or None.

        Raises :class:`~loadgen.protocol.errors.CoapTimeout` after ``max_missed`` requests in a row timed out."""
        self._now = now
        endpoint = self._endpoint
        if endpoint.get_timer() <= now:
            self._handle(endpoint.handle_timer(now), now, 0)
            if self._missed >= self._max_missed:
                raise CoapTimeout(f"{self._missed} CoAP requests in a row unanswered: the server is gone")
        out = endpoint.pop_datagram()
        if out is None:
            index = self._schedule.due(now)
            if index is None:
                return None
            if not self._gate.open:  # checked once a step is due; halted, get_timer() no longer wakes for it
                self._schedule.halt()
                return None
            self._begin(index, now)
            out = endpoint.pop_datagram()
            assert out is not None
        self._last = out[1]
        return out[0]

    def sent(self, size: int) -> None:
        """The datagram :meth:`poll` returned went out as ``size`` bytes on the wire."""
        ex = self._last
        if ex is not None:
            if ex.sent_bytes == 0 and ex.parent is None:
                self.requests_sent += 1
            ex.sent_bytes += size

    def abandon(self, error: LoadgenError) -> None:
        """The datagram :meth:`poll` returned could not be sent: its request fails with ``error``."""
        ex, self._last = self._last, None
        if ex is None or ex.tag is None:
            return
        observing = ex.state == OBSERVING or ex.parent is not None
        self._endpoint.forget(ex)
        if observing:
            self._schedule.busy[ex.tag] -= 1
        else:
            self._finish(ex, error, self._now)

    def receive(self, reply: bytes, size: int, now: float) -> bool:
        """A datagram arrived. False: it answers nothing under way (garbage, an unknown token, a late ACK)."""
        self._now = now
        events = self._endpoint.receive(reply, now, size)
        if not events:
            return True  # an ACK, or a repeated message answered again
        return self._handle(events, now, size)

    def fail(self, error: LoadgenError, now: float) -> None:
        """The association ended with ``error``: every request awaiting its response fails with it."""
        if isinstance(error, PeerClosed):
            error = PeerClosed("peer closed with a CoAP request outstanding")
        for ex in self._endpoint.fail_all():
            self._finish(ex, error, now)
        busy = self._schedule.busy
        busy[:] = [0] * len(busy)

    # -- inside -----------------------------------------------------------------

    def _begin(self, index: int, now: float) -> None:
        step = self._steps[index]
        self._seq += 1
        request = step.make(self._name, self._seq)
        self._sink.record(self._started[index])
        ex = self._endpoint.request(request, now, timeout=step.timeout)
        ex.tag = index
        self._schedule.busy[index] += 1
        self._awaiting += 1
        self._schedule.sent(index, now)

    def _handle(self, events: list[Event], now: float, size: int) -> bool:
        """Facts of ``events``; True when one of them answered something of ours."""
        answered = False
        for event in events:
            if isinstance(event, Response):
                answered = True
                if event.exchange.parent is None:  # a deregistration's response ends its observation: ObserveEnded
                    self._finish(event.exchange, None, now, event.message, event.payload)
            elif isinstance(event, Notification):
                answered = True
                self._notification(event, size)
            elif isinstance(event, ObserveEnded):
                answered = True
                self._schedule.busy[event.exchange.tag] -= 1
            elif isinstance(event, Failed):
                answered = True
                self._finish(event.exchange, event.error, now)
        return answered

    def _finish(self, ex: Exchange, error: LoadgenError | None, now: float, msg: m.Message | None = None,
                payload: bytes = b"") -> None:
        """``ex``'s request ended: its one Finished fact; its window slot frees unless it now observes."""
        index = ex.tag
        step = self._steps[index]
        code = None
        if msg is not None:
            code = response_code(msg)
            if not step.coap.ping:
                error = _judge(step, ex, msg, payload)
        elif isinstance(error, CoapReset):
            code = "RST"
        # Positional: the per-request hot path (Finished's fields in order: ..., resumed, code).
        self._sink.record(Finished(self._started[index].kind, self._target, now - ex.started, error, ex.sent_bytes,
                                   ex.received_bytes, ex.retransmits, False, code))
        self._awaiting -= 1
        if ex.state != OBSERVING:
            self._schedule.busy[index] -= 1
        self._missed = self._missed + 1 if isinstance(error, CoapTimeout) else 0
        if step.step.once:
            self._schedule.once_ended(now)

    def _notification(self, event: Notification, size: int) -> None:
        if not event.fresh:
            self.stale_notifications += 1
            return
        self.notifications += 1
        step = self._steps[event.exchange.tag]
        kind = step.notification_kind
        msg = event.message
        self._sink.record(Started(kind, self._target))
        self._sink.record(Finished(kind, self._target, event.interval, _judge(step, event.exchange, msg, msg.payload),
                                   received_bytes=size, code=msg.code_text))


def _judge(step: CoapStep, ex: Exchange, msg: m.Message, payload: bytes) -> LoadgenError | None:
    """The step's ``expect`` (:func:`~loadgen.coap.exchange.judge`)."""
    return judge(msg, payload, ex.request.payload, step.want_code, step.matcher if step.judge_payload else None)
