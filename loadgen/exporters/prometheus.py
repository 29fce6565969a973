"""A Prometheus ``/metrics`` endpoint computed from the run's RunStats at every scrape.

A custom collector (no prometheus_client module-level registry, no second copy of the
counts): each scrape reads the same totals the JSON summary is written from, so the
last scrape after a run and ``summary.json`` agree exactly. Served by gevent's WSGI
server, so it lives on the load generator's event loop and stops cleanly.

Metrics (labels ``kind`` = handshake | ping | a request step's name, ``target``, which is
``group@target`` with device groups):

- ``loadgen_attempts_total``, ``loadgen_successes_total``, ``loadgen_failures_total{code}``,
  ``loadgen_retransmissions_total``, ``loadgen_sent_bytes_total``, ``loadgen_received_bytes_total``
- with CoAP requests: ``loadgen_responses_total{code}`` (replies by response code, "RST" for a reset)
  and ``loadgen_resets_total`` (requests answered by a reset)
- ``loadgen_in_flight``, ``loadgen_active_associations{target}``, ``loadgen_users``,
  ``loadgen_generator_cpu_percent{process="busiest"|"all"}`` (last whole second)
- ``loadgen_latency_seconds{kind,target,quantile}`` with ``_count`` and ``_sum``: a summary
  whose quantiles come from the exact HDR histogram (``_sum`` is count x HDR mean).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from gevent.pywsgi import WSGIServer
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric, SummaryMetricFamily

from loadgen.stats.cells import Cell
from loadgen.stats.facts import HANDSHAKE
from loadgen.stats.run import RunStats
from loadgen.stats.sink import Key

QUANTILES = (0.5, 0.9, 0.95, 0.99, 0.999)


class RunStatsCollector:
    """prometheus_client collector over a :class:`RunStats` (see the module doc)."""

    def __init__(self, stats: RunStats, users: Callable[[], int]) -> None:
        self._stats = stats
        self._users = users

    def collect(self) -> Iterator[Metric]:
        items = sorted(self._stats.totals.items())
        yield from _counters(items)
        yield from _responses(items)
        yield from _failures_and_latency(items)
        yield from self._gauges(items)

    def _gauges(self, items: list[tuple[Key, Cell]]) -> Iterator[Metric]:
        """Associations up, users and the generator's CPU: the figures that are levels, not totals."""
        active = GaugeMetricFamily("loadgen_active_associations",
                                   "Associations up: handshakes completed minus associations ended", labels=["target"])
        for (kind, target), cell in items:
            if kind == HANDSHAKE:
                active.add_metric([target], cell.completed - cell.ended)
        yield active
        yield GaugeMetricFamily("loadgen_users", "Simulated clients running", value=self._users())
        cpu = GaugeMetricFamily("loadgen_generator_cpu_percent",
                                "Load generator CPU in the last whole second, % of one core", labels=["process"])
        whole = [row for row in self._stats.seconds.values() if row.duration >= 0.5]
        last = max(whole, key=lambda r: r.index) if whole else None
        cpu.add_metric(["busiest"], last.cpu_max if last else 0.0)
        cpu.add_metric(["all"], last.cpu_total if last else 0.0)
        yield cpu


_LABELS = ["kind", "target"]
#: The per-(kind, target) counters: name -> (help, the cell's figure).
_COUNTERS: dict[str, tuple[str, Callable[[Cell], float]]] = {
    "attempts": ("Attempts started", lambda c: c.attempted),
    "successes": ("Attempts completed successfully", lambda c: c.completed),
    "retransmissions": ("Handshake flights and CoAP confirmable messages retransmitted", lambda c: c.retransmits),
    "sent_bytes": ("UDP payload bytes sent", lambda c: c.sent_bytes),
    "received_bytes": ("UDP payload bytes received", lambda c: c.received_bytes),
}


def _counters(items: list[tuple[Key, Cell]]) -> Iterator[Metric]:
    for name, (doc, value) in _COUNTERS.items():
        family = CounterMetricFamily(f"loadgen_{name}", doc, labels=_LABELS)
        for (kind, target), cell in items:
            family.add_metric([kind, target], value(cell))
        yield family


def _responses(items: list[tuple[Key, Cell]]) -> Iterator[Metric]:
    """Replies by response code and resets: only in runs that have them (a plain run's metrics are as before)."""
    codes = CounterMetricFamily("loadgen_responses", "Replies by CoAP response code", labels=[*_LABELS, "code"])
    resets = CounterMetricFamily("loadgen_resets", "Requests answered by a CoAP reset (RST)", labels=_LABELS)
    for (kind, target), cell in items:
        for code, count in sorted(cell.codes.items()):
            codes.add_metric([kind, target, code], count)
        if cell.codes or cell.rsts:
            resets.add_metric([kind, target], cell.rsts)
    if codes.samples:
        yield codes
    if resets.samples:
        yield resets


def _failures_and_latency(items: list[tuple[Key, Cell]]) -> Iterator[Metric]:
    """Failures by code, attempts in flight, and the latency summary with the HDR quantiles."""
    failures = CounterMetricFamily("loadgen_failures", "Attempts failed, by error code", labels=[*_LABELS, "code"])
    in_flight = GaugeMetricFamily("loadgen_in_flight", "Attempts under way", labels=_LABELS)
    latency = SummaryMetricFamily("loadgen_latency_seconds", "Latency of completed attempts (exact HDR)",
                                  labels=_LABELS)
    for (kind, target), cell in items:
        for code, count in sorted(cell.failures.items()):
            failures.add_metric([kind, target, code], count)
        in_flight.add_metric([kind, target], cell.in_flight)
        mean = cell.mean()
        latency.add_metric([kind, target], cell.completed, cell.completed * (mean or 0.0))
        if cell.completed:
            for q in QUANTILES:
                seconds = cell.percentile(q * 100)
                if seconds is not None:
                    latency.add_sample("loadgen_latency_seconds",
                                       {"kind": kind, "target": target, "quantile": f"{q:g}"}, seconds)
    yield failures
    yield in_flight
    yield latency


class PrometheusEndpoint:
    """``/metrics`` (any path, in fact) on ``host:port``; ``start()`` / ``stop()``."""

    def __init__(self, stats: RunStats, host: str, port: int, users: Callable[[], int]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(RunStatsCollector(stats, users))
        self._server = WSGIServer((host, port), make_wsgi_app(self.registry), log=None)

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.address[:2]
        return str(host), int(port)

    def start(self) -> PrometheusEndpoint:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(timeout=1)
