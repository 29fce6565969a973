"""What a CoAP client sends (:class:`Request`), the state of one request under way
(:class:`Exchange`), what :class:`~loadgen.coap.endpoint.CoapEndpoint` reports (the events), and
how a response is judged (:func:`judge`, for the scenario's steps and the Python API's calls alike)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from loadgen.coap import message as m
from loadgen.protocol.errors import BadReply, LoadgenError


class PayloadRule(Protocol):
    """A response payload's rule (:class:`~loadgen.traffic.payloads.ReplyRule`, the API's ``ReplyCheck``)."""

    @property
    def kind(self) -> str: ...

    def accepts(self, request: bytes, reply: bytes) -> bool: ...


def response_code(msg: m.Message) -> str:
    """A reply's code as the stats count it: "RST" for a reset, else its code ("2.05")."""
    return "RST" if msg.mtype == m.RST else msg.code_text


def judge(msg: m.Message, payload: bytes, request_payload: bytes, want_code: str | None,
          rule: PayloadRule | None) -> LoadgenError | None:
    """A response against what was expected: the code ``want_code`` (without one, any 4.xx/5.xx is
    bad), then the (reassembled) ``payload`` by ``rule`` (None: any payload). None: it passes."""
    if want_code is not None:
        if msg.code_text != want_code:
            return BadReply(f"response code {msg.code_text}, expected {want_code}")
    elif msg.code >= 128:
        return BadReply(f"error response {msg.code_text}")
    if rule is not None and not rule.accepts(request_payload, payload):
        return BadReply(f"response payload of {len(payload)} bytes does not match rule {rule.kind}")
    return None


@dataclass(frozen=True, slots=True)
class Request:
    """One CoAP request, ready to go out but for its message id and token.

    ``options`` are the request's own (Uri-Path, Uri-Query, Content-Format, Accept ...),
    sorted by number; the endpoint adds Observe and Block2. Build one with :meth:`build`.
    """

    code: int = 1  # GET
    options: m.Options = ()
    payload: bytes = b""
    confirmable: bool = True
    observe: bool = False  # register (Observe: 0); the first response finishes the request
    observe_for: float | None = None  # seconds after the registration's response to deregister (None: never)
    block_size: int | None = None  # Block2 size asked for in the first request (None: the server's choice)
    ping: bool = False  # an empty CON (RFC 7252 4.3): a RST answers it
    wire_options: bytes = b""  # ``options`` encoded (filled in by :meth:`build`)

    @classmethod
    def build(cls, method: str = "GET", path: str = "/", query: tuple[str, ...] = (), payload: bytes = b"", *,
              content_format: int | None = None, accept: int | None = None, confirmable: bool = True,
              observe: bool = False, observe_for: float | None = None, block_size: int | None = None) -> Request:
        """A request from its parts: ``path`` "/a/b" becomes two Uri-Path options, each of
        ``query`` ("k=v") a Uri-Query. ValueError for an unknown method or block size."""
        if method not in m.METHODS:
            raise ValueError(f"unknown CoAP method {method!r} (one of {', '.join(m.METHODS)})")
        if block_size is not None:
            m.block_szx(block_size)
        options = list(m.path_options(path))
        if content_format is not None:
            options.append((m.CONTENT_FORMAT, m.encode_uint(content_format)))
        options += [(m.URI_QUERY, q.encode()) for q in query]
        if accept is not None:
            options.append((m.ACCEPT, m.encode_uint(accept)))
        options.sort(key=lambda o: o[0])  # stable: repeated options keep their order
        opts = tuple(options)
        return cls(METHODS_BY_NAME[method], opts, payload, confirmable, observe, observe_for, block_size,
                   wire_options=m.encode_options(opts))

    @classmethod
    def ping_request(cls) -> Request:
        """A CoAP ping."""
        return cls(m.EMPTY, ping=True)

    def encode(self, mtype: int, mid: int, token: bytes, extra: m.Options = ()) -> bytes:
        """The request as message ``mid`` with ``token``; ``extra``: options to add (Observe, Block2)."""
        if self.ping:
            return m.empty(mtype, mid)
        if extra:
            opts = m.encode_options(tuple(sorted(self.options + extra, key=lambda o: o[0])))
        else:
            opts = self.wire_options
        out = m.header(mtype, self.code, mid, token) + opts
        return out + b"\xff" + self.payload if self.payload else out


METHODS_BY_NAME = m.METHODS

INF = float("inf")

# Exchange states.
WAIT_ACK = 0  # a CON went out, no ACK yet (retransmitted on its timer)
WAIT_RESPONSE = 1  # acknowledged empty, or NON: the response is to come
OBSERVING = 2  # the registration was answered: notifications arrive
DONE = 3


class Exchange:
    """One request under way (with its retransmissions, blocks, and its observation if any).

    The caller reads it and may set ``tag`` (anything: e.g. the step it belongs to) and add
    the wire size of what it sent to ``sent_bytes`` (the endpoint adds what it receives).
    """

    __slots__ = ("request", "token", "mid", "started", "deadline", "datagram", "state", "retransmit_at", "timeout",
                 "retransmits", "sent_bytes", "received_bytes", "body", "body_size", "block", "szx", "observe_seq",
                 "notified_at", "deregister_at", "parent", "tag", "serial")

    def __init__(self, request: Request, token: bytes, mid: int, now: float, deadline: float, serial: int) -> None:
        self.request = request
        self.token = token
        self.mid = mid
        self.started = now
        self.deadline = deadline
        self.datagram = b""  # the last request message (what a retransmission repeats)
        self.state = WAIT_ACK if request.confirmable or request.ping else WAIT_RESPONSE
        self.retransmit_at = INF
        self.timeout = 0.0  # the current retransmission timeout (doubles)
        #: CON retransmissions of this request (all its blocks together).
        self.retransmits = 0
        self.sent_bytes = 0
        self.received_bytes = 0
        self.body: list[bytes] = []  # the Block2 payloads so far
        self.body_size = 0  # their bytes, bounded by the endpoint's max_body
        self.block = 0  # the Block2 number expected next
        self.szx = 6
        self.observe_seq = -1  # the freshest notification's Observe value (-1: none yet)
        self.notified_at = 0.0  # when it arrived (or when the registration was answered)
        self.deregister_at = INF
        self.parent: Exchange | None = None  # a deregistration: the observation it ends
        self.tag: Any = None
        self.serial = serial

    @property
    def next_due(self) -> float:
        """When this exchange's timer fires next (inf: nothing to do until a message arrives)."""
        if self.state == OBSERVING:
            return self.deregister_at
        retransmit, deadline = self.retransmit_at, self.deadline
        return retransmit if retransmit < deadline else deadline


# The events are made per response: plain slotted dataclasses, not frozen (see Message).
@dataclass(slots=True)
class Response:
    """``exchange``'s request got its (final, reassembled) response; ``payload`` is the whole body.
    For a ping, ``message`` is the RST. For an Observe registration, notifications follow."""

    exchange: Exchange
    message: m.Message
    payload: bytes


@dataclass(slots=True)
class Notification:
    """An Observe notification of ``exchange``'s observation. ``fresh`` is False for one older
    than the freshest seen (reordered: RFC 7641 3.4); ``interval`` is the time since the
    previous fresh one (or since the registration's response)."""

    exchange: Exchange
    message: m.Message
    fresh: bool
    interval: float


@dataclass(slots=True)
class ObserveEnded:
    """``exchange``'s observation is over: deregistered, ended by the server (a notification
    without Observe or with an error code), or failed (``error``)."""

    exchange: Exchange
    error: LoadgenError | None = None


@dataclass(slots=True)
class Failed:
    """``exchange``'s request failed (RST, no ACK, no response in time, a bad response ...)."""

    exchange: Exchange
    error: LoadgenError


@dataclass(slots=True)
class Unmatched:
    """A datagram that answers nothing under way (garbage, an unknown token, a late ACK): ``reason`` says which."""

    reason: str


Event = Response | Notification | ObserveEnded | Failed | Unmatched
