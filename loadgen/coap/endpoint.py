"""CoapEndpoint: the client side of RFC 7252 (with Observe, RFC 7641, and Block2, RFC 7959), sans-I/O.

It never reads a clock or touches a socket: the caller passes ``now`` in, sends what
:meth:`CoapEndpoint.pop_datagram` gives (over DTLS, one datagram each), hands every
datagram received to :meth:`CoapEndpoint.receive` and calls :meth:`CoapEndpoint.handle_timer`
when :meth:`CoapEndpoint.get_timer` is due. Both return the events (``exchange`` module).
One endpoint talks to one server (one DTLS association)::

    ep = CoapEndpoint(CoapConfig())
    ex = ep.request(Request.build("GET", "/time"), now)
    while (out := ep.pop_datagram()) is not None:
        sock.send(out[0])
    events = ep.receive(sock.recv(), time.perf_counter())   # [Response(ex, message, payload)]

What it does: a fresh message id (random start, +1) and token (random 4-byte start, +1) per
request; responses matched by token (piggybacked, separate after an empty ACK, NON); the CON
responses ACKed, and repeated ones ACKed again from a duplicate cache (bounded, kept for
EXCHANGE_LIFETIME) instead of counted twice; a RST fails the request (``coap-reset``) but
answers a ping; CON retransmission (RFC 7252 4.2) until MAX_RETRANSMIT, then ``coap-timeout``;
Observe notifications with freshness by sequence number (RFC 7641 3.4) and deregistration with
a GET Observe: 1; Block2 follow-ups with the same token, reassembled up to ``max_body``.
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque

from loadgen.coap import message as m
from loadgen.coap.exchange import (
    DONE,
    OBSERVING,
    WAIT_ACK,
    WAIT_RESPONSE,
    Event,
    Exchange,
    Failed,
    Notification,
    ObserveEnded,
    Request,
    Response,
    Unmatched,
)
from loadgen.protocol.errors import BadReply, CoapFormatError, CoapReset, CoapTimeout, LoadgenError, LocalProtocolError
from loadgen.scenario.model import CoapConfig
from loadgen.traffic.workload import Uniform

INF = float("inf")
#: RFC 7641 3.4: a notification newer by sequence number, or this much later, is fresh.
OBSERVE_FRESH_AFTER = 128.0
_SEQ_HALF = 1 << 23
_DEREGISTER = m.encode_uint(1)
#: ACKs and RSTs of ours queued at most (requests are bounded by ``max_exchanges``).
MAX_ANSWERS = 64
#: RFC 7252's transmission parameters.
DEFAULT_CONFIG = CoapConfig()


def max_transmit_wait(config: CoapConfig) -> float:
    """RFC 7252 4.8.2: the longest a CON's sender waits for an ACK, retransmissions included."""
    return config.ack_timeout * ((1 << (config.max_retransmit + 1)) - 1) * config.ack_random_factor


def exchange_lifetime(config: CoapConfig) -> float:
    """RFC 7252 4.8.2 (MAX_LATENCY 100 s, PROCESSING_DELAY = ACK_TIMEOUT): how long a message id stays taken."""
    span = config.ack_timeout * ((1 << config.max_retransmit) - 1) * config.ack_random_factor
    return span + 200.0 + config.ack_timeout


class CoapEndpoint:
    """The requests one client has under way with one server. ``uniform(a, b)`` draws the
    random message id and token starts and the initial retransmission timeouts (a seeded
    ``Random``'s makes a run reproducible). At most ``max_exchanges`` under way (observations
    included), responses of at most ``max_body`` bytes, ``dedup_size`` message ids remembered."""

    def __init__(self, config: CoapConfig = DEFAULT_CONFIG, *, uniform: Uniform = random.uniform,
                 max_exchanges: int = 64, max_body: int = 1 << 20, dedup_size: int = 256) -> None:
        self.config = config
        self._uniform = uniform
        self._max_exchanges = max_exchanges
        self._max_body = max_body
        self._dedup_size = dedup_size
        self._lifetime = exchange_lifetime(config)
        self._give_up = max_transmit_wait(config)
        self._ack_low, self._ack_high = config.ack_timeout, config.ack_timeout * config.ack_random_factor
        self._mid = int(uniform(0, 65536)) & 0xFFFF
        self._token = int(uniform(0, 1 << 32))
        self._serial = 0
        self._exchanges: dict[int, Exchange] = {}  # by serial, oldest first
        self._by_token: dict[bytes, Exchange] = {}
        self._by_mid: dict[int, Exchange] = {}
        self._seen: OrderedDict[int, tuple[float, bytes | None]] = OrderedDict()  # peer's mid -> (expiry, our answer)
        self._out: deque[tuple[bytes, Exchange | None]] = deque()

    # -- the caller's side ------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Exchanges under way (requests awaiting their response, observations)."""
        return len(self._exchanges)

    def request(self, request: Request, now: float, *, timeout: float | None = None) -> Exchange:
        """Begin ``request``: its first datagram is queued. ``timeout``: seconds until it fails
        with ``coap-timeout`` when unanswered (default MAX_TRANSMIT_WAIT, RFC 7252 4.8.2).
        Raises LocalProtocolError when ``max_exchanges`` are under way."""
        if len(self._exchanges) >= self._max_exchanges:
            raise LocalProtocolError(f"{self._max_exchanges} CoAP exchanges under way already")
        self._serial += 1
        token = b"" if request.ping else self._next_token()
        ex = Exchange(request, token, self._next_mid(), now, now + (timeout if timeout is not None else self._give_up),
                      self._serial)
        if request.block_size is not None:
            ex.szx = m.block_szx(request.block_size)
        self._exchanges[ex.serial] = ex
        if token:
            self._by_token[token] = ex
        self._transmit(ex, self._extra(ex) if request.observe or request.block_size else (), now)
        return ex

    def ping(self, now: float, *, timeout: float | None = None) -> Exchange:
        """Begin a CoAP ping (an empty CON; the server's RST is the :class:`Response`)."""
        return self.request(Request.ping_request(), now, timeout=timeout)

    def deregister(self, ex: Exchange, now: float) -> Exchange | None:
        """End ``ex``'s observation with a GET Observe: 1 (same token); None when it observes nothing.
        Its response ends the observation (:class:`ObserveEnded`)."""
        if ex.state != OBSERVING:
            return None
        self._serial += 1
        dereg = Exchange(ex.request, ex.token, self._next_mid(), now, now + self._give_up, self._serial)
        dereg.parent, dereg.tag = ex, ex.tag
        ex.state, ex.deregister_at = DONE, INF
        del self._exchanges[ex.serial]
        self._exchanges[dereg.serial] = dereg
        self._by_token[ex.token] = dereg
        self._transmit(dereg, ((m.OBSERVE, _DEREGISTER),), now)
        return dereg

    def forget(self, ex: Exchange) -> None:
        """Drop ``ex`` without a word to the server (a notification of it is then answered by RST)."""
        self._drop(ex)

    def fail_all(self) -> list[Exchange]:
        """Forget everything under way (the association ended); returns the requests that
        awaited their response (not observations, nor their deregistrations)."""
        under_way = list(self._exchanges.values())
        awaiting = [ex for ex in under_way if ex.state != OBSERVING and ex.parent is None]
        for ex in under_way:
            self._drop(ex)
        self._out.clear()
        return awaiting

    def pop_datagram(self) -> tuple[bytes, Exchange | None] | None:
        """The next datagram to send and the exchange it belongs to (None: an ACK or RST of
        ours); None when nothing is queued."""
        return self._out.popleft() if self._out else None

    def get_timer(self) -> float:
        """When :meth:`handle_timer` has something to do (inf: nothing)."""
        exchanges = self._exchanges
        if len(exchanges) < 2:  # the common cases, per request: no generator
            for ex in exchanges.values():
                return ex.next_due
            return INF
        return min(ex.next_due for ex in exchanges.values())

    def handle_timer(self, now: float) -> list[Event]:
        """Retransmit, give up, time out and deregister what is due."""
        events: list[Event] = []
        for ex in [ex for ex in self._exchanges.values() if ex.next_due <= now]:
            if ex.state == OBSERVING:
                self.deregister(ex, now)
            elif now >= ex.deadline:
                events.append(self._fail(ex, CoapTimeout(f"no response in {ex.deadline - ex.started:g} s")))
            elif ex.retransmits >= self.config.max_retransmit:
                events.append(self._fail(ex, CoapTimeout(f"no ACK after {ex.retransmits} retransmissions")))
            else:
                ex.retransmits += 1
                ex.timeout *= 2
                ex.retransmit_at += ex.timeout
                self._out.append((ex.datagram, ex))
        return events

    def receive(self, datagram: bytes, now: float, size: int | None = None) -> list[Event]:
        """Handle one datagram from the server (``size``: its bytes on the wire, counted to the
        exchange it answers). Never raises on what the peer sent: garbage is an :class:`Unmatched`."""
        try:
            msg = m.decode(datagram)
        except CoapFormatError as exc:
            return [Unmatched(str(exc))]
        size = len(datagram) if size is None else size
        if msg.mtype >= m.ACK:
            return self._on_ack_or_reset(msg, now, size)
        seen = self._seen.get(msg.mid)
        if seen is not None and seen[0] > now:
            if seen[1] is not None:
                self._answer(seen[1])  # the ACK (or RST) again: ours was lost
            return []
        if not 64 <= msg.code < 192:  # an empty CON/NON (a ping), a request: we serve nothing
            return self._reject(msg, now, f"{m.TYPE_NAMES[msg.mtype]} with code {msg.code_text} to a client")
        ex = self._by_token.get(msg.token)
        if ex is None:
            return self._reject(msg, now, "response with an unknown token")
        if (bad := _unknown_critical(msg)) is not None:
            self._reject(msg, now, bad)
            return [self._fail(ex, CoapFormatError(bad))]
        self._remember(msg.mid, m.empty(m.ACK, msg.mid) if msg.mtype == m.CON else None, now)
        ex.received_bytes += size
        return self._on_response(ex, msg, now)

    # -- inside -----------------------------------------------------------------

    def _next_mid(self) -> int:
        self._mid = (self._mid + 1) & 0xFFFF
        return self._mid

    def _next_token(self) -> bytes:
        self._token = (self._token + 1) & 0xFFFFFFFF
        return self._token.to_bytes(4, "big")

    def _extra(self, ex: Exchange) -> m.Options:
        """Observe and Block2 options of ``ex``'s next request message."""
        extra: m.Options = ((m.OBSERVE, b""),) if ex.request.observe else ()
        if ex.block or ex.request.block_size is not None:
            extra += ((m.BLOCK2, m.encode_block(ex.block, False, ex.szx)),)
        return extra

    def _transmit(self, ex: Exchange, extra: m.Options, now: float) -> None:
        """Queue ``ex``'s (next) request message, a CON with its retransmission timer."""
        req = ex.request
        con = req.confirmable or req.ping
        ex.datagram = req.encode(m.CON if con else m.NON, ex.mid, ex.token, extra)
        self._by_mid[ex.mid] = ex
        if con:
            ex.state = WAIT_ACK
            ex.timeout = timeout = self._uniform(self._ack_low, self._ack_high)
            ex.retransmit_at = now + timeout
        self._out.append((ex.datagram, ex))

    def _on_ack_or_reset(self, msg: m.Message, now: float, size: int) -> list[Event]:
        ex = self._by_mid.get(msg.mid)
        if ex is None:
            return [Unmatched(f"{m.TYPE_NAMES[msg.mtype]} for no message of ours under way")]
        ex.received_bytes += size
        if msg.mtype == m.RST:
            if ex.request.ping:
                self._drop(ex)
                return [Response(ex, msg, b"")]
            return [self._fail(ex, CoapReset(f"RST to {m.TYPE_NAMES[ex.datagram[0] >> 4 & 3]} message {msg.mid}"))]
        if ex.state != WAIT_ACK:
            return []  # a repeated ACK: the first one counted
        ex.state, ex.retransmit_at = WAIT_RESPONSE, INF
        if msg.code == m.EMPTY:
            if ex.request.ping:  # an empty ACK to a ping is as good an answer as its RST
                self._drop(ex)
                return [Response(ex, msg, b"")]
            return []  # the separate response follows
        if msg.token != ex.token:
            return [Unmatched(f"piggybacked response with token {msg.token.hex()} to {ex.token.hex()}")]
        if (bad := _unknown_critical(msg)) is not None:
            return [self._fail(ex, CoapFormatError(bad))]
        return self._on_response(ex, msg, now)

    def _on_response(self, ex: Exchange, msg: m.Message, now: float) -> list[Event]:
        """A response (or notification) carrying ``ex``'s token."""
        if ex.state == OBSERVING or (ex.parent is not None and msg.option(m.OBSERVE) is not None):
            return self._notification(ex.parent or ex, msg, now)
        if ex.parent is not None:  # the deregistration's response
            self._drop(ex)
            return [Response(ex, msg, msg.payload), ObserveEnded(ex.parent)]
        block = msg.option(m.BLOCK2) if msg.options and 64 <= msg.code < 96 else None
        if block is not None:
            try:
                num, more, szx = m.decode_block(block)
            except CoapFormatError as exc:
                return [self._fail(ex, exc)]
            if num != ex.block:
                return [Unmatched(f"block {num} where {ex.block} was due")]
            ex.body.append(msg.payload)
            ex.body_size += len(msg.payload)
            if ex.body_size > self._max_body:
                return [self._fail(ex, BadReply(f"response body over {self._max_body} bytes"))]
            if more:
                ex.block, ex.szx = num + 1, szx
                del self._by_mid[ex.mid]
                ex.mid = self._next_mid()
                self._transmit(ex, self._extra(ex), now)
                return []
        payload = b"".join(ex.body) if block is not None else msg.payload
        observe = msg.option(m.OBSERVE) if ex.request.observe else None
        if observe is not None and 64 <= msg.code < 96:
            ex.state, ex.notified_at = OBSERVING, now
            ex.observe_seq = m.decode_uint(observe[:3])
            if ex.request.observe_for is not None:
                ex.deregister_at = now + ex.request.observe_for
            del self._by_mid[ex.mid]
        else:
            self._drop(ex)
        return [Response(ex, msg, payload)]

    def _notification(self, ex: Exchange, msg: m.Message, now: float) -> list[Event]:
        observe = msg.option(m.OBSERVE)
        if observe is None or not 64 <= msg.code < 96:  # the server ended the observation
            if ex.state != OBSERVING:
                return []  # being deregistered: the deregistration's response ends it
            self._drop(ex)
            return [ObserveEnded(ex)]
        seq = m.decode_uint(observe[:3])
        last = ex.observe_seq
        fresh = (last < seq and seq - last < _SEQ_HALF) or (last > seq and last - seq > _SEQ_HALF) \
            or now > ex.notified_at + OBSERVE_FRESH_AFTER
        interval = now - ex.notified_at
        if fresh:
            ex.observe_seq, ex.notified_at = seq, now
        return [Notification(ex, msg, fresh, interval)]

    def _reject(self, msg: m.Message, now: float, reason: str) -> list[Event]:
        """A CON we cannot take is answered by RST (RFC 7252 4.2); a NON is ignored."""
        if msg.mtype == m.CON:
            rst = m.empty(m.RST, msg.mid)
            self._remember(msg.mid, rst, now)
            self._answer(rst)
        return [Unmatched(reason)]

    def _remember(self, mid: int, answer: bytes | None, now: float) -> None:
        """Note the peer's message ``mid`` (and our answer to repeat) for EXCHANGE_LIFETIME; queue an ACK."""
        seen = self._seen
        while seen and (len(seen) >= self._dedup_size or next(iter(seen.values()))[0] <= now):
            seen.popitem(last=False)
        seen.pop(mid, None)
        seen[mid] = (now + self._lifetime, answer)
        if answer is not None and answer[0] >> 4 & 3 == m.ACK:
            self._answer(answer)

    def _answer(self, datagram: bytes) -> None:
        """Queue an ACK or RST of ours, unless ``MAX_ANSWERS`` wait already: a peer flooding us
        between two polls gets no more (they are best effort: its retransmission asks again)."""
        if len(self._out) < MAX_ANSWERS:
            self._out.append((datagram, None))

    def _fail(self, ex: Exchange, error: LoadgenError) -> Event:
        """``ex`` fails: a request's :class:`Failed`; an observation's (or its deregistration's) end."""
        observing = ex.state == OBSERVING
        self._drop(ex)
        if ex.parent is not None:
            return ObserveEnded(ex.parent, error)
        return ObserveEnded(ex, error) if observing else Failed(ex, error)

    def _drop(self, ex: Exchange) -> None:
        ex.state = DONE
        self._exchanges.pop(ex.serial, None)
        if self._by_token.get(ex.token) is ex:
            del self._by_token[ex.token]
        if self._by_mid.get(ex.mid) is ex:
            del self._by_mid[ex.mid]


def _unknown_critical(msg: m.Message) -> str | None:
    """Why ``msg`` must be rejected for an unknown critical option (RFC 7252 5.4.1); None: it need not."""
    if not msg.options:
        return None
    for number, _ in msg.options:
        if number & 1 and number not in m.KNOWN_OPTIONS:
            return f"unknown critical option {number} in a {msg.code_text} response"
    return None
