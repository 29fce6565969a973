"""The headless run's progress lines: running totals and the last interval's rates and p99.

Read from the run's :class:`~loadgen.stats.run.RunStats` (loadgen's exact figures, merged from every
worker on a master), not from Locust's rounded request stats, so the lines agree with the summary.
"""

from __future__ import annotations

from loadgen.stats.cells import Cell
from loadgen.stats.facts import HANDSHAKE, is_plain, request_kinds
from loadgen.stats.run import RunStats


class Progress:
    """Formats one progress line per call; each covers the seconds that arrived since the last.

    ``hold_newest``: leave the newest second for the next line. A master sets it, since its
    workers' shares of one second arrive one message at a time; a local run applies whole seconds.
    """

    def __init__(self, stats: RunStats, hold_newest: bool = False) -> None:
        self.stats = stats
        self.hold_newest = hold_newest
        self._next = 0  # the first second index the next line covers

    def line(self, elapsed: float, clients: int) -> str:
        # A plain run's pings; with request steps all requests together (notifications are not requests).
        hs, pings = self.stats.handshakes, self.stats.requests
        what = "pings" if is_plain(self.stats.kind_names) else "requests"
        newest = max(self.stats.seconds, default=-1)
        if self._next > newest + 1:  # the stats were reset (a new run): start over
            self._next = 0
        end = newest if self.hold_newest else newest + 1
        cells, rows = self.stats.span(self._next, end)
        self._next = max(self._next, end)
        seconds = sum(row.duration for row in rows)
        now = Cell()
        for kind in request_kinds(cells):
            now.add(cells[kind])
        return (f"[{elapsed:5.0f}s] clients {clients:>6}  "
                f"handshakes {hs.completed:>7} ok {hs.failed:>5} failed  "
                f"{what} {pings.completed:>8} ok {pings.failed:>5} failed  "
                f"now: {_rate(cells[HANDSHAKE], seconds, 'handshakes')}, {_rate(now, seconds, what)}")


def _rate(cell: Cell, seconds: float, what: str) -> str:
    """``12.5 pings/s (p99 0.61 ms)`` over ``seconds``; ``-`` where there is nothing to say."""
    rate = f"{cell.completed / seconds:.1f}" if seconds > 0 else "-"
    p99 = cell.percentile(99.0)
    return f"{rate} {what}/s (p99 {f'{p99 * 1000:.3g} ms' if p99 is not None else '-'})"
