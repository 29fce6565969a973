"""Facts that associations report, and the sinks that receive them.

Associations never format or aggregate stats: they hand a small frozen fact to a
:class:`Sink`. Adapters turn facts into Locust request events, exact histograms,
time series, and so on. Every attempt is reported when it starts and once when it
ends, so completed + failed + in flight = attempted, always.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from loadgen.protocol.errors import LoadgenError
from loadgen.stats.throttle import ThrottledLog

if TYPE_CHECKING:
    from loadgen.scenario.model import RequestStep, Scenario

log = logging.getLogger("loadgen")

HANDSHAKE = "handshake"
PING = "ping"
#: The kinds of a plain run (handshakes and the one ping), in report order. A run with request steps
#: has "handshake" and its request names instead: see :func:`run_kinds`.
KINDS = (HANDSHAKE, PING)
#: The kind of Observe notifications of request ``X`` is ``X`` + this suffix (see :func:`is_notification`).
NOTIFICATION_SUFFIX = " notification"
#: ``Finished.code`` of a reply that was a CoAP reset, and the error code of a request answered by one.
RST = "RST"
RESET_ERROR = "coap-reset"


def is_notification(kind: str) -> bool:
    """True for a kind of CoAP Observe notifications: its ``elapsed`` is the interval since the previous
    notification, not a latency, so reports label it "interval" and latency thresholds leave it out."""
    return kind.endswith(NOTIFICATION_SUFFIX)


def plural(kind: str) -> str:
    """A kind in prose and legends: "handshakes", "pings"; a request name as it is ("GET /time")."""
    return f"{kind}s" if kind in KINDS else kind


def is_plain(kinds: Iterable[str]) -> bool:
    """True when ``kinds`` are those of a plain run (handshakes and pings only): its outputs keep the
    shape they had before request steps (no response-code columns, no per-request tables)."""
    return set(kinds) <= set(KINDS)


def run_kinds(seen: Iterable[str]) -> tuple[str, ...]:
    """A run's kinds in report order: "handshake" first, then the others in the order given (first
    declared or first seen); a run without any other kind has "ping", as every run had before requests."""
    others = tuple(dict.fromkeys(kind for kind in seen if kind != HANDSHAKE))
    return (HANDSHAKE, *(others or (PING,)))


def request_kinds(kinds: Iterable[str]) -> tuple[str, ...]:
    """The kinds of ``kinds`` that are request/response attempts: not handshakes, not notifications.
    Their latency is what ``ping_p99`` judges; in a plain run that is "ping"."""
    return tuple(kind for kind in kinds if kind != HANDSHAKE and not is_notification(kind))


def scenario_kinds(scenario: Scenario) -> tuple[str, ...]:
    """The kinds a scenario's run will count, in the scenario's order (:func:`run_kinds` of its
    request names, the device groups' after the scenario's own; an Observe request adds its
    notifications' kind after it). Declared up front, they show (with zeros) before any is seen."""
    steps: list[RequestStep] = list(scenario.requests)
    for group in scenario.devices:
        steps += group.requests
    names: list[str] = []
    for step in steps:
        names.append(step.name)
        if step.coap is not None and step.coap.observe:
            names.append(step.name + NOTIFICATION_SUFFIX)
    groups_ping = any(not group.requests for group in scenario.devices) and not scenario.requests
    return run_kinds([PING] * groups_ping + names)


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt (``kind`` = handshake, ping or a request step's name) began."""

    kind: str
    target: str


# Finished is made once per attempt on the hot path: a frozen dataclass's __init__ goes through
# object.__setattr__ per field (1.2 us here, against 0.35 us plain), so it is not frozen; no
# code changes a fact once made.
@dataclass(slots=True)
class Finished:
    """An attempt ended: ``error`` is None on success. ``elapsed`` in seconds."""

    kind: str
    target: str
    elapsed: float
    error: LoadgenError | None = None
    sent_bytes: int = 0
    received_bytes: int = 0
    retransmits: int = 0
    resumed: bool = False
    code: str | None = None  # the reply's CoAP response code ("2.05"; "RST" for a reset), None otherwise


@dataclass(frozen=True, slots=True)
class Message:
    """Qt-style info / warning / error message from an association."""

    level: int
    association: str
    text: str


@dataclass(frozen=True, slots=True)
class Ended:
    """An established association (its handshake completed) ended: error, close_notify or stop.

    Active associations of a target = its completed handshakes - its ``Ended`` facts.
    """

    target: str


Fact = Started | Finished | Message | Ended
#: Every kind of fact, for a sink that takes them all.
FACT_TYPES: tuple[type, ...] = (Started, Finished, Message, Ended)


class Sink(Protocol):
    """Anything that takes facts: :class:`loadgen.stats.sink.StatsSink` counts them, others log or forward.

    A sink may also say which kinds of fact it takes, as a ``facts`` attribute (a tuple of the
    classes above); :class:`FanOut` then gives it only those. One without takes them all."""

    def record(self, fact: Fact) -> None: ...


class FanOut:
    """Sends every fact to each of several sinks that takes its kind (see :class:`Sink`).

    A run's associations report to five sinks (Locust, exact stats, the log, the socket-shortage
    log, the web UI's or the API's), and each ping makes two facts: routed by kind, a ping calls
    the three sinks that want its facts instead of all five twice."""

    facts = FACT_TYPES

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = tuple(sinks)
        self._routes = {kind: tuple(sink.record for sink in self.sinks if kind in getattr(sink, "facts", FACT_TYPES))
                        for kind in FACT_TYPES}

    def record(self, fact: Fact) -> None:
        for record in self._routes[type(fact)]:
            record(fact)


class LogSink:
    """Messages go to the ``loadgen`` logger at their own level, rate-limited per level and
    message kind (thousands of associations hitting the same problem make one line a
    few seconds with a count); other facts are ignored."""

    facts = (Message, Finished)

    def __init__(self) -> None:
        self._log = ThrottledLog(log, interval=5.0, burst=10)

    def record(self, fact: Fact) -> None:
        if type(fact) is Finished:  # first: one a request, messages are rare
            if fact.error is not None:
                # Locust sees only the code; the device and the detail are here (-v shows them).
                self._log.log(logging.INFO, f"failed:{fact.kind}:{fact.error.code}", "%s %s failed: %s",
                              fact.target, fact.kind, fact.error)
        elif isinstance(fact, Message):
            self._log.log(fact.level, f"{fact.level}:{message_kind(fact)}", "%s", fact.text)


#: Numbers in a message (sizes, ports, counts, alert values) that a peer may choose.
_NUMBERS = re.compile(r"0[xX][0-9a-fA-F]+|\d+")


def message_kind(message: Message) -> str:
    """The throttle key of a message: its first 40 characters without the association's name
    (wherever it appears) and with every number as ``#``. A server that varies what it sends
    (11,503 "unexpected or late reply of N bytes" lines in 12 s) or thousands of devices with
    the same problem then share one key."""
    text = message.text.removeprefix(f"{message.association}: ")
    if message.association:
        text = text.replace(message.association, "<name>")
    return _NUMBERS.sub("#", text[:200])[:40]
