"""StatsD output: once a second, counter increments since the last flush, and gauges.

Counters are sent as the difference between the RunStats totals and what was sent
before, so the increments a StatsD server adds up equal the run's totals once the
last flush (at the end of the run) is out. Names, under the configured prefix
(dots and other characters StatsD reserves, and spaces and slashes, in kind and target names
get underscores: ``GET__sensors_temp.sensors_gw1.completed``):

- ``KIND.TARGET.attempts|completed|failed|retransmits|sent_bytes|received_bytes`` (c)
- ``KIND.TARGET.errors.CODE`` (c); with CoAP requests ``KIND.TARGET.codes.CODE`` (replies by response
  code) and ``KIND.TARGET.rsts`` (c)
- ``KIND.TARGET.p50_ms|p95_ms|p99_ms`` (g): cumulative percentiles so far, exact HDR
- ``TARGET.active_associations``, ``active_associations``, ``users``, ``cpu_percent`` (g)
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import gevent
from statsd import StatsClient

from loadgen.stats.facts import HANDSHAKE
from loadgen.stats.run import RunStats

log = logging.getLogger("loadgen")


def _safe(name: str) -> str:
    return "".join("_" if ch in ".:|@ /#" else ch for ch in name)


class StatsdExporter:
    """Flushes :class:`RunStats` to a StatsD server every ``interval`` seconds and once at :meth:`stop`."""

    def __init__(self, stats: RunStats, host: str, port: int, prefix: str, users: Callable[[], int],
                 interval: float = 1.0) -> None:
        self._stats = stats
        self._client = StatsClient(host, port, prefix=prefix or None, ipv6=":" in host)
        self._users = users
        self._interval = interval
        self._sent: dict[str, int] = {}
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> StatsdExporter:
        self._greenlet = gevent.spawn(self._loop)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=True)
            self._greenlet = None
        self.flush()

    def _loop(self) -> None:
        while True:
            gevent.sleep(self._interval)
            try:
                self.flush()
            except OSError as exc:  # a StatsD server that went away must not end the run
                log.warning("loadgen: statsd: %s", exc)

    def counters(self) -> dict[str, int]:
        """Every counter's current total, by StatsD name (without the prefix)."""
        out: dict[str, int] = {}
        for (kind, target), cell in self._stats.totals.items():
            base = f"{_safe(kind)}.{_safe(target)}"
            out[f"{base}.attempts"] = cell.attempted
            out[f"{base}.completed"] = cell.completed
            out[f"{base}.failed"] = cell.failed
            out[f"{base}.retransmits"] = cell.retransmits
            out[f"{base}.sent_bytes"] = cell.sent_bytes
            out[f"{base}.received_bytes"] = cell.received_bytes
            for code, count in cell.failures.items():
                out[f"{base}.errors.{_safe(code)}"] = count
            for code, count in cell.codes.items():
                out[f"{base}.codes.{_safe(code)}"] = count
            if cell.codes or cell.rsts:
                out[f"{base}.rsts"] = cell.rsts
        return out

    def flush(self) -> None:
        """Send counter increments since the last flush, then the gauges."""
        with self._client.pipeline() as pipe:
            for name, total in self.counters().items():
                step = total - self._sent.get(name, 0)
                if step:
                    pipe.incr(name, step)
                    self._sent[name] = total
            active_all = 0
            for (kind, target), cell in self._stats.totals.items():
                base = f"{_safe(kind)}.{_safe(target)}"
                pct = cell.percentiles_ms()
                for key in ("p50", "p95", "p99"):
                    value = pct[key]
                    if value is not None:
                        pipe.gauge(f"{base}.{key}_ms", round(value, 3))
                if kind == HANDSHAKE:
                    active = cell.completed - cell.ended
                    active_all += active
                    pipe.gauge(f"{_safe(target)}.active_associations", max(active, 0))
            pipe.gauge("active_associations", max(active_all, 0))
            pipe.gauge("users", self._users())
            rows = [row for row in self._stats.seconds.values() if row.duration >= 0.5]
            if rows:
                pipe.gauge("cpu_percent", round(max(rows, key=lambda r: r.index).cpu_max, 1))
