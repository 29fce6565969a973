"""CoapCallWorkload: a caller's CoAP requests over one DTLS association, sans-I/O.

The CoAP counterpart of :class:`~loadgen.traffic.calls.CallWorkload`, on the CoAP helper's
:class:`~loadgen.coap.endpoint.CoapEndpoint` (message ids, tokens, ACKs, CON retransmission,
duplicates, separate responses, Observe, Block2). A :class:`CoapCall` is submitted, its first
datagram goes out at the next poll, and it ends once: its response (matched by token), a RST,
or a timeout. Facts as for the scenario's CoAP steps: ``Started`` at submit, one ``Finished``
with the response code ("2.05"; "RST" for a reset) and the call's retransmissions; every fresh
Observe notification is a fact of its own, kind ``"<name> notification"``, its ``elapsed`` the
interval since the previous one. Unlike plain calls, a timed-out CoAP request leaves the
association up: the token tells a late response apart.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.coap import message as m
from loadgen.coap.endpoint import DEFAULT_CONFIG, CoapEndpoint
from loadgen.coap.exchange import (
    OBSERVING,
    Event,
    Exchange,
    Failed,
    Notification,
    ObserveEnded,
    Request,
    Response,
    Unmatched,
    judge,
    response_code,
)
from loadgen.protocol.errors import CoapReset, LoadgenError, LocalProtocolError, PeerClosed
from loadgen.scenario.model import CoapConfig
from loadgen.stats.facts import Finished, Sink, Started
from loadgen.traffic.calls import ReplyCheck
from loadgen.traffic.workload import Uniform

#: CoAP exchanges (requests under way and observations) at once, per association.
MAX_EXCHANGES = 64


@dataclass(frozen=True, slots=True)
class CoapResponse:
    """A CoAP response: ``code`` as text ("2.05"; "RST" for a reset), the (reassembled) payload, the message."""

    code: str
    payload: bytes
    message: m.Message

    @property
    def options(self) -> m.Options:
        return self.message.options

    def option(self, number: int) -> bytes | None:
        """The first value of option ``number`` (``loadgen.coap.message.CONTENT_FORMAT`` ...), None: absent."""
        return self.message.option(number)

    @property
    def content_format(self) -> int | None:
        value = self.message.option(m.CONTENT_FORMAT)
        return m.decode_uint(value) if value is not None else None


def _response(message: m.Message, payload: bytes) -> CoapResponse:
    return CoapResponse(response_code(message), payload, message)


class CoapCall:
    """One CoAP request of a caller. ``expect_code``: the code the response must carry (without
    one, a 4.xx/5.xx fails the call as ``bad-reply``); ``check``: the payload's rule. For an
    Observe registration, ``on_notification(response)`` hears each fresh notification and
    ``on_end(error)`` the observation's end."""

    __slots__ = ("kind", "request", "expect_code", "check", "timeout", "notify", "on_notification", "on_end",
                 "exchange", "response", "error", "elapsed", "done", "observing", "submitted_at")

    def __init__(self, kind: str, request: Request, *, expect_code: str | None = None, check: ReplyCheck | None = None,
                 timeout: float | None = None, notify: Callable[[CoapCall], None] = lambda call: None,
                 on_notification: Callable[[CoapResponse], None] = lambda response: None,
                 on_end: Callable[[LoadgenError | None], None] = lambda error: None) -> None:
        self.kind = kind
        self.request = request
        self.expect_code = expect_code
        self.check = check
        self.timeout = timeout  # None: RFC 7252's MAX_TRANSMIT_WAIT
        self.notify = notify
        self.on_notification = on_notification
        self.on_end = on_end
        self.exchange: Exchange | None = None
        self.response: CoapResponse | None = None
        self.error: LoadgenError | None = None
        self.elapsed = 0.0
        self.done = False
        self.observing = False  # registered, notifications arriving
        self.submitted_at = 0.0


class CoapCallWorkload:
    """The CoAP calls of one association (the :class:`~.workload.Workload` protocol, and :meth:`submit`)."""

    def __init__(self, target: str, sink: Sink, config: CoapConfig = DEFAULT_CONFIG, *,
                 on_start: Callable[[], None] = lambda: None, uniform: Uniform = random.uniform,
                 max_exchanges: int = MAX_EXCHANGES) -> None:
        self._target = target
        self._sink = sink
        self._on_start = on_start
        self._endpoint = CoapEndpoint(config, uniform=uniform, max_exchanges=max_exchanges)
        self._awaiting: dict[int, CoapCall] = {}  # by exchange serial: calls awaiting their response
        self._observing: dict[int, CoapCall] = {}  # by exchange serial: registered observations
        self._last: Exchange | None = None  # whose datagram poll returned last
        self.started = False
        self.closed = False
        #: Requests sent so far (first transmissions).
        self.requests_sent = 0

    @property
    def outstanding(self) -> int:
        return len(self._awaiting)

    def submit(self, call: CoapCall, now: float) -> None:
        """Begin ``call`` (the attempt starts now): its first datagram goes out at the next poll.
        Raises :class:`LocalProtocolError` (nothing counted) when the association is not up or full."""
        if self.closed or not self.started:
            raise LocalProtocolError("the association is not up")
        ex = self._endpoint.request(call.request, now, timeout=call.timeout)  # raises when full
        ex.tag, call.exchange, call.submitted_at = call, ex, now
        self._awaiting[ex.serial] = call
        self._sink.record(Started(call.kind, self._target))

    def deregister(self, call: CoapCall, now: float) -> bool:
        """End ``call``'s observation (a GET with Observe: 1); False when it observes nothing."""
        ex = call.exchange
        if ex is None or not call.observing or self.closed:
            return False
        return self._endpoint.deregister(ex, now) is not None

    # -- the Workload protocol ----------------------------------------------------

    def start(self, now: float) -> None:
        self.started = True
        self._on_start()

    def get_timer(self) -> float:
        return self._endpoint.get_timer()

    def poll(self, now: float) -> bytes | None:
        """Retransmit and time out what is due, then the next datagram to send (a request, an ACK ...)."""
        endpoint = self._endpoint
        if endpoint.get_timer() <= now:
            self._handle(endpoint.handle_timer(now), now, 0)
        out = endpoint.pop_datagram()
        if out is None:
            return None
        self._last = out[1]
        return out[0]

    def sent(self, size: int) -> None:
        ex, self._last = self._last, None
        if ex is None:
            return  # an ACK or RST of ours
        self.requests_sent += ex.sent_bytes == 0 and ex.parent is None  # a first transmission
        ex.sent_bytes += size

    def abandon(self, error: LoadgenError) -> None:
        ex, self._last = self._last, None
        if ex is None or not isinstance(ex.tag, CoapCall):
            return
        self._endpoint.forget(ex)
        call = ex.tag
        if self._awaiting.pop(ex.serial, None) is not None:
            self._finish(call, error, 0.0)
        else:
            self._end_observation(call, error)

    def receive(self, reply: bytes, size: int, now: float) -> bool:
        events = self._endpoint.receive(reply, now, size)
        return not events or self._handle(events, now, size)

    def fail(self, error: LoadgenError, now: float) -> None:
        """The association ended with ``error``: every call awaiting its response fails with it, observations end."""
        self.closed = True
        if isinstance(error, PeerClosed):
            error = PeerClosed("peer closed with a CoAP request outstanding")
        self._endpoint.fail_all()
        awaiting, self._awaiting = list(self._awaiting.values()), {}
        for call in awaiting:
            self._finish(call, error, now)
        self._end_all(error)

    def detach(self, error: LoadgenError) -> list[CoapCall]:
        """Ended without :meth:`fail` (closed from outside): calls released with ``error``, not counted."""
        self.closed = True
        self._endpoint.fail_all()
        calls, self._awaiting = list(self._awaiting.values()), {}
        for call in calls:
            call.error, call.done = error, True
            call.notify(call)
        self._end_all(error)
        return calls

    # -- inside -------------------------------------------------------------------

    def _handle(self, events: list[Event], now: float, size: int) -> bool:
        answered = False
        for event in events:
            if isinstance(event, Unmatched):
                continue
            answered = True
            call = event.exchange.tag
            if isinstance(event, Response) and event.exchange.parent is None:
                call.response = _response(event.message, event.payload)
                self._awaiting.pop(event.exchange.serial, None)
                if event.exchange.state == OBSERVING:  # the registration was answered
                    call.observing = True
                    self._observing[event.exchange.serial] = call
                self._finish(call, self._judge(call, event.message, event.payload), now)
            elif isinstance(event, Notification):
                self._notification(call, event, size)
            elif isinstance(event, ObserveEnded):
                self._observing.pop(event.exchange.serial, None)
                self._end_observation(call, event.error)
            elif isinstance(event, Failed):
                self._awaiting.pop(event.exchange.serial, None)
                self._finish(call, event.error, now)
        return answered

    @staticmethod
    def _judge(call: CoapCall, msg: m.Message, payload: bytes) -> LoadgenError | None:
        """The call's expectations (:func:`~loadgen.coap.exchange.judge`); a CoAP ping's RST always passes."""
        if call.request.ping:
            return None
        return judge(msg, payload, call.request.payload, call.expect_code, call.check)

    def _finish(self, call: CoapCall, error: LoadgenError | None, now: float) -> None:
        ex = call.exchange
        assert ex is not None
        code = call.response.code if call.response is not None else "RST" if isinstance(error, CoapReset) else None
        call.elapsed = max(now - call.submitted_at, 0.0)
        call.error, call.done = error, True
        if error is not None:
            call.observing = False
        self._sink.record(Finished(call.kind, self._target, call.elapsed, error, sent_bytes=ex.sent_bytes,
                                   received_bytes=ex.received_bytes, retransmits=ex.retransmits, code=code))
        call.notify(call)

    def _notification(self, call: CoapCall, event: Notification, size: int) -> None:
        if not event.fresh:
            return  # reordered: older than the freshest seen (RFC 7641 3.4)
        msg, kind = event.message, f"{call.kind} notification"
        response = _response(msg, msg.payload)
        error = self._judge(call, msg, msg.payload)
        self._sink.record(Started(kind, self._target))
        self._sink.record(Finished(kind, self._target, event.interval, error, received_bytes=size,
                                   code=response.code))
        call.on_notification(response)

    def _end_observation(self, call: CoapCall, error: LoadgenError | None) -> None:
        if call.observing:
            call.observing = False
            call.on_end(error)

    def _end_all(self, error: LoadgenError) -> None:
        observing, self._observing = list(self._observing.values()), {}
        for call in observing:
            self._end_observation(call, error)

