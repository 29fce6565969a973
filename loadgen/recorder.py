"""Facts that associations report, and the sinks that receive them.

Associations never format or aggregate stats: they hand a small frozen fact to a
:class:`Sink`. Adapters turn facts into Locust request events, exact histograms,
time series, and so on. Every attempt is reported when it starts and once when it
ends, so completed + failed + in flight = attempted, always.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from .errors import LoadgenError

log = logging.getLogger("loadgen")

HANDSHAKE = "handshake"
PING = "ping"


@dataclass(frozen=True, slots=True)
class Started:
    """An attempt (``kind`` = handshake or ping) began."""

    kind: str
    target: str


@dataclass(frozen=True, slots=True)
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


@dataclass(frozen=True, slots=True)
class Message:
    """Qt-style info / warning / error message from an association."""

    level: int
    association: str
    text: str


Fact = Started | Finished | Message


class Sink(Protocol):
    def record(self, fact: Fact) -> None: ...


class FanOut:
    """Sends every fact to each of several sinks."""

    def __init__(self, sinks: Iterable[Sink]) -> None:
        self.sinks = list(sinks)

    def record(self, fact: Fact) -> None:
        for sink in self.sinks:
            sink.record(fact)


class LogSink:
    """Messages go to the ``loadgen`` logger (at their own level); other facts are ignored."""

    def record(self, fact: Fact) -> None:
        if isinstance(fact, Message):
            log.log(fact.level, "%s", fact.text)


@dataclass
class KindTally:
    """Counts and latencies of one kind of attempt (handshake or ping)."""

    attempted: int = 0
    completed: int = 0
    failures: Counter[str] = field(default_factory=Counter)
    retransmits: int = 0
    resumed: int = 0
    sent_bytes: int = 0
    received_bytes: int = 0
    latencies: list[float] = field(default_factory=list)  # seconds, arrival order

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def in_flight(self) -> int:
        return self.attempted - self.completed - self.failed

    def percentile(self, p: float) -> float | None:
        """Nearest-rank percentile (``p`` in 0..100) of completed latencies, seconds."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        rank = max(1, -(-len(ordered) * p // 100))
        return ordered[int(rank) - 1]


class Tally:
    """Exact in-process totals per kind; enough for a headless summary and for tests."""

    def __init__(self) -> None:
        self.kinds: dict[str, KindTally] = {HANDSHAKE: KindTally(), PING: KindTally()}

    def record(self, fact: Fact) -> None:
        if isinstance(fact, Started):
            self.kinds[fact.kind].attempted += 1
        elif isinstance(fact, Finished):
            tally = self.kinds[fact.kind]
            tally.retransmits += fact.retransmits
            tally.sent_bytes += fact.sent_bytes
            tally.received_bytes += fact.received_bytes
            if fact.error is None:
                tally.completed += 1
                tally.resumed += fact.resumed
                tally.latencies.append(fact.elapsed)
            else:
                tally.failures[fact.error.code] += 1

    @property
    def handshakes(self) -> KindTally:
        return self.kinds[HANDSHAKE]

    @property
    def pings(self) -> KindTally:
        return self.kinds[PING]
