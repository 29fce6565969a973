"""What a DTLS and a TLS association share: who it is, where it reports, how it speaks.

Both clients are one device's connection to one target. They take the same identity, key,
ping plan and source address, report to a :class:`~loadgen.stats.facts.Sink`, and say
what happens in Qt's words (:class:`~loadgen.stats.facts.Message`), which is all this
base holds: each subclass moves its own bytes.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from gevent.event import AsyncResult

from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import LoadgenError
from loadgen.stats.facts import Message, Sink
from loadgen.traffic.workload import WorkloadPlan

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR


class AssociationBase:
    """The fields and the callbacks both associations have."""

    #: Set once the association has ended, to the error that ended it (None: closed); each subclass makes it.
    _done: AsyncResult

    def __init__(self, name: str, target: str, address: tuple[str, int], sink: Sink, *,
                 identity: bytes | None, key: Secret | None, ping: WorkloadPlan, source_address: str | None,
                 rng: random.Random | None, message_level: int) -> None:
        self.name = name
        self.target = target
        self.address = address
        self._sink = sink
        self._identity = identity
        self._key = key
        self._ping = ping
        self._source = source_address
        # Seeding a Random costs more than a ping: only a caller that wants a seed brings one.
        self._uniform = rng.uniform if rng is not None else random.uniform
        # Messages below this level are not even formatted (a run logs warnings and up).
        self._message_level = message_level

    def on_end(self, callback: Callable[[LoadgenError | None], None]) -> None:
        """Have the event loop call ``callback(error)`` once the association has ended (what ``run()``
        returns), for a caller that keeps no greenlet waiting (:class:`~loadgen.locust.lifeline.Lifeline`)."""
        self._done.rawlink(lambda done: callback(done.value))

    def _choose_psk(self, hint: bytes | None) -> tuple[bytes, Secret]:
        self._say(INFO, "providing pre-shared key ...")
        assert self._identity is not None and self._key is not None
        return self._identity, self._key

    def _say(self, level: int, text: str) -> None:
        if level >= self._message_level:
            self._sink.record(Message(level, self.name, f"{self.name}: {text}"))
