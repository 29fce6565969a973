"""How long users ran: from each Locust test start to its stop, summed (not idle time around it)."""

from __future__ import annotations

import time
from typing import Any


class RunClock:
    """Listens to ``test_start`` / ``test_stop`` of a Locust environment (local runner or master)."""

    def __init__(self, environment: Any) -> None:
        self._ran = 0.0  # seconds of start..stop intervals that ended
        self._started: float | None = None
        environment.events.test_start.add_listener(self._on_start)
        environment.events.test_stop.add_listener(self._on_stop)

    def running(self) -> bool:
        """Whether users run now (a test started and has not stopped)."""
        return self._started is not None

    def seconds(self) -> float:
        """Seconds users ran so far, over every start..stop."""
        extra = time.monotonic() - self._started if self._started is not None else 0.0
        return self._ran + extra

    def _on_start(self, **_: Any) -> None:
        if self._started is None:
            self._started = time.monotonic()

    def _on_stop(self, **_: Any) -> None:
        if self._started is not None:
            self._ran += time.monotonic() - self._started
            self._started = None
