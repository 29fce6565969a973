"""Rate-limited logging: a flood of identical problems becomes one line with a count.

Hostile or broken peers can make every datagram an error; logging each one would
hide everything else and cost more than the work itself.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
from collections.abc import Callable

#: The key that every key beyond ``max_keys`` shares: more distinct keys than that cannot add lines.
OVERFLOW_KEY = "(other)"


class ThrottledLog:
    """Logs at most ``burst`` lines per ``key`` per ``interval`` seconds.

    Further lines for that key are counted; the next line that gets through says how
    many were suppressed since. At most ``max_keys`` keys are tracked: when the table is
    full, windows older than ``interval`` are forgotten, and if none is, new keys share
    one window (:data:`OVERFLOW_KEY`), so a peer that varies the key cannot make more lines.
    """

    def __init__(self, logger: logging.Logger, interval: float = 10.0, burst: int = 5,
                 clock: Callable[[], float] = time.monotonic, max_keys: int = 1024) -> None:
        self._logger = logger
        self._interval = interval
        self._burst = burst
        self._clock = clock
        self._max_keys = max_keys
        self._windows: dict[str, list[float | int]] = {}  # key -> [window start, lines, suppressed]
        self._pruned_at = -float("inf")

    def log(self, level: int, key: str, message: str, *args: object) -> None:
        """Log ``message % args`` unless ``key`` has used its burst in this interval."""
        if not self._logger.isEnabledFor(level):
            return
        now = self._clock()
        window = self._windows.get(key)
        if window is None and len(self._windows) >= self._max_keys:
            self._prune(now)
            if len(self._windows) >= self._max_keys:
                key = OVERFLOW_KEY
                window = self._windows.get(key)
        if window is None or now - window[0] >= self._interval:
            suppressed = int(window[2]) if window is not None else 0
            window = self._windows[key] = [now, 0, 0]
            if suppressed:
                message += f" ({suppressed} similar messages suppressed)"
        if window[1] >= self._burst:
            window[2] += 1
            return
        window[1] += 1
        self._logger.log(level, message, *args)

    def _prune(self, now: float) -> None:
        # At most once per interval: a full table of live keys must not cost a scan per line.
        if now - self._pruned_at < self._interval:
            return
        self._pruned_at = now
        # An expired window's suppressed count is lost with it: keeping such windows would let
        # one burst of distinct keys lock the table for good.
        for key in [k for k, w in self._windows.items() if now - w[0] >= self._interval]:
            del self._windows[key]


def exception_summary(exc: BaseException) -> str:
    """The exception's type and where it was raised (file:line in function), never its
    arguments: they may hold bytes a peer chose, or secrets."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames:
        return type(exc).__name__
    last = frames[-1]
    return f"{type(exc).__name__} at {os.path.basename(last.filename)}:{last.lineno} in {last.name}"
