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
from typing import Protocol

from loadgen.protocol.errors import LoadgenError
from loadgen.stats.throttle import ThrottledLog

log = logging.getLogger("loadgen")

HANDSHAKE = "handshake"
PING = "ping"
#: The kinds of attempt, in report order.
KINDS = (HANDSHAKE, PING)


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt (``kind`` = handshake or ping) began."""

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


class Sink(Protocol):
    """Anything that takes facts: :class:`loadgen.stats.sink.StatsSink` counts them, others log or forward."""

    def record(self, fact: Fact) -> None: ...


class FanOut:
    """Sends every fact to each of several sinks."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)

    def record(self, fact: Fact) -> None:
        for sink in self.sinks:
            sink.record(fact)


class LogSink:
    """Messages go to the ``loadgen`` logger at their own level, rate-limited per level and
    message kind (thousands of associations hitting the same problem make one line a
    few seconds with a count); other facts are ignored."""

    def __init__(self) -> None:
        self._log = ThrottledLog(log, interval=5.0, burst=10)

    def record(self, fact: Fact) -> None:
        if isinstance(fact, Message):
            self._log.log(fact.level, f"{fact.level}:{message_kind(fact)}", "%s", fact.text)
        elif type(fact) is Finished and fact.error is not None:
            # Locust sees only the code; the device and the detail are here (-v shows them).
            self._log.log(logging.INFO, f"failed:{fact.kind}:{fact.error.code}", "%s %s failed: %s", fact.target,
                          fact.kind, fact.error)


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
