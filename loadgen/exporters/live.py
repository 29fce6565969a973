"""The live collectors of a run, Prometheus and StatsD, started and stopped together."""

from __future__ import annotations

from collections.abc import Callable
from typing import TextIO

from loadgen.exporters.prometheus import PrometheusEndpoint
from loadgen.exporters.statsd import StatsdExporter
from loadgen.protocol.errors import ConfigError
from loadgen.scenario import Scenario
from loadgen.stats.run import RunStats


class Exporters:
    """The live collectors the scenario's ``outputs`` switch on (Prometheus, StatsD)."""

    def __init__(self, scenario: Scenario, stats: RunStats, users: Callable[[], int]) -> None:
        self.prometheus: PrometheusEndpoint | None = None
        self.statsd: StatsdExporter | None = None
        outputs = scenario.outputs
        if outputs.prometheus is not None:
            self.prometheus = PrometheusEndpoint(stats, outputs.prometheus.host, outputs.prometheus.port, users)
        if outputs.statsd is not None:
            self.statsd = StatsdExporter(stats, outputs.statsd.host, outputs.statsd.port, outputs.statsd.prefix, users)

    def start(self, out: TextIO) -> Exporters:
        """Listen (Prometheus: says where, or exit 2 when it cannot) and start sending (StatsD)."""
        if self.prometheus is not None:
            try:
                self.prometheus.start()
            except OSError as exc:
                raise ConfigError(f"prometheus: cannot listen: {exc.strerror or exc}") from None
            host, port = self.prometheus.address
            print(f"loadgen: Prometheus metrics at http://{host}:{port}/metrics", file=out, flush=True)
        if self.statsd is not None:
            self.statsd.start()
        return self

    def stop(self) -> None:
        """Final StatsD flush (so its counters add up to the totals), then close the endpoint."""
        if self.statsd is not None:
            self.statsd.stop()
        if self.prometheus is not None:
            self.prometheus.stop()
