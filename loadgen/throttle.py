"""Rate-limited logging: a flood of identical problems becomes one line with a count.

Hostile or broken peers can make every datagram an error; logging each one would
hide everything else and cost more than the work itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class ThrottledLog:
    """Logs at most ``burst`` lines per ``key`` per ``interval`` seconds.

    Further lines for that key are counted; the next line that gets through says how
    many were suppressed since.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 1024) -> None:
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[str, list[float | int]] = {}  # key -> [window start, lines, suppressed]

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``key`` has used its burst in this interval."""
        if not self._logger.isEnabledFor(level):
            return
        now = self._clock()
        window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval:
            suppressed = int(window[2]) if window is not None else 0
            if window is None and len(self._windows) >= self._max_keys:
                self._windows.clear()  # keys chosen by peers must not grow without bound
            window = self._windows[key] = [now, 0, 0]
            if suppressed:
                message += f" ({suppressed} similar messages suppressed)"
        if window[1] >= self._burst:
            window[2] += 1
            return
        window[1] += 1
        self._logger.log(level, message, *args)
