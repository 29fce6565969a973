"""Collectors during real runs: Prometheus scraped live, StatsD received over UDP, files, the web UI page.

Every run is a ``loadgen`` child process against the built-in reference server on
loopback, a few seconds long; the ``procs`` fixture ends every process group.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import socket
import textwrap
import threading
import time
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from procs import Procs, free_port
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(180)

KEY_HEX = "5a17c0ffee0ddba11deadbeef0123456"


def scenario_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body) + textwrap.dedent(f"""\
        psk: {{identity: "device-{{n:05d}}", key: "{KEY_HEX}"}}
        outputs: {{results_dir: results}}
        """))
    return path


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of ``/metrics``: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples: dict, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:  # the endpoint is not up yet
            last = exc
        else:
            if last:
                return last
        time.sleep(0.2)
    raise AssertionError(f"{what} within {timeout:.0f} s; last: {last!r}")


class StatsdListener:
    """A UDP socket collecting StatsD lines in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.lines: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            self.lines += data.decode().splitlines()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.sock.close()

    def counters(self) -> Counter[str]:
        totals: Counter[str] = Counter()
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind == "c":
                totals[name] += int(value)
        return totals

    def gauges(self) -> dict[str, float]:
        out = {}
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind == "g":
                out[name] = float(value)
        return out


def test_distributed_run_exports_prometheus_statsd_and_files(tmp_path: Path, procs: Procs) -> None:
    prom = free_port()
    statsd = StatsdListener()
    scenario = scenario_file(tmp_path, "exported", """\
        clients: {count: 20, spawn_rate: 20}
        run_time: 7s
        ping: {interval: 500ms, expect: echo}
        """)
    try:
        run = procs.loadgen("run", scenario, "--processes", 2, "--prometheus", f"127.0.0.1:{prom}",
                            "--statsd", f"127.0.0.1:{statsd.port}", "--statsd-prefix", "lg")
        # Scraped during the run: every counter is there, and the handshakes show up live.
        live = wait_until(lambda: (s := scrape(prom)) and (metric(s, "loadgen_successes_total", kind="handshake",
                                                                  target="builtin") or 0) >= 20 and s,
                          40, "20 handshakes on /metrics")
        assert run.proc.poll() is None, "the scrape must happen while the run is on"
        for name in ("loadgen_attempts_total", "loadgen_successes_total", "loadgen_retransmissions_total",
                     "loadgen_sent_bytes_total", "loadgen_received_bytes_total"):
            assert metric(live, name, kind="ping", target="builtin") is not None, name
        assert metric(live, "loadgen_active_associations", target="builtin") == 20
        assert (metric(live, "loadgen_latency_seconds", kind="handshake", target="builtin", quantile="0.99") or 0) > 0
        assert run.wait(60) == 0, run.describe()
        time.sleep(0.5)  # the last StatsD datagrams
    finally:
        statsd.close()
    assert "Traceback" not in run.stderr, run.describe()

    (results,) = (tmp_path / "results").iterdir()
    summary = json.loads((results / "summary.json").read_text())
    target = summary["targets"]["builtin"]
    # StatsD counter increments add up to the run's exact totals.
    counters = statsd.counters()
    for kind in ("handshake", "ping"):
        assert counters[f"lg.{kind}.builtin.attempts"] == target[kind]["attempted"] == summary[kind]["attempted"]
        assert counters[f"lg.{kind}.builtin.completed"] == target[kind]["completed"] == summary[kind]["completed"]
        assert counters[f"lg.{kind}.builtin.failed"] == target[kind]["failed"]
        assert counters[f"lg.{kind}.builtin.sent_bytes"] == target[kind]["sent_bytes"]
    assert target["handshake"]["completed"] == 20 and target["ping"]["completed"] > 100
    gauges = statsd.gauges()
    assert "lg.active_associations" in gauges and "lg.ping.builtin.p99_ms" in gauges and "lg.users" in gauges

    # The per-second series of both workers merged by second; its rows add up to the totals.
    with (results / "timeseries.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["ping_completed"]) for r in rows) == summary["ping"]["completed"]
    assert sum(int(r["handshake_completed"]) for r in rows) == 20
    assert max(int(r["processes"]) for r in rows) == 2
    assert max(int(r["active_associations"]) for r in rows) == 20
    assert any(r["ping_p99_ms"] for r in rows) and all(0 <= float(r["cpu_busiest_pct"]) for r in rows)
    workers = [json.loads(p.read_text()) for p in sorted(results.glob("worker-*.json"))]
    assert sum(w["ping"]["completed"] for w in workers) == summary["ping"]["completed"]

    # `loadgen report` rebuilds the same page from the saved files.
    report = results / "report.html"
    first = report.read_text()
    report.unlink()
    rebuilt = procs.loadgen("report", results, label="report")
    assert rebuilt.wait(30) == 0, rebuilt.describe()
    assert report.read_text() == first
    # One self-contained page: scripts and styles inline, nothing fetched.
    assert summary["analysis"]["verdict"] in first
    assert not re.search(r"<script[^>]*\bsrc=|<link\b|\b(?:src|href)=", first)


def _post(url: str, fields: dict[str, Any]) -> Any:
    request = urllib.request.Request(url, data=urllib.parse.urlencode(fields).encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def test_web_run_prometheus_matches_summary_and_loadgen_page_is_live(tmp_path: Path, procs: Procs) -> None:
    web, prom = free_port(), free_port()
    # The ping's timeout is generous (its default is the interval, 300 ms): on a loaded machine the
    # built-in server or this run went unscheduled for a second, three pings in a row timed out, the
    # associations ended and reconnected (24 handshakes, not 12). Pings still go every 300 ms.
    scenario = scenario_file(tmp_path, "webexport", """\
        clients: {count: 5, spawn_rate: 5}
        run_time: 1m
        ping: {interval: 300ms, timeout: 30s, expect: echo}
        """)
    run = procs.loadgen("run", scenario, "--web", "--web-port", web, "--prometheus", f"127.0.0.1:{prom}", "--no-csv")
    run.wait_for(r"web UI at http://127\.0\.0\.1:\d+")
    base = f"http://127.0.0.1:{web}"
    assert _post(f"{base}/swarm", {"user_count": 12, "spawn_rate": 12})["success"] is True

    live = wait_until(lambda: (d := _get_json(f"{base}/loadgen/stats.json"))["active_associations"] == 12 and d,
                      30, "12 active associations on /loadgen/stats.json")
    assert live["totals"]["handshake"]["completed"] == 12
    # The tab's rows ride along with Locust's own poll.
    polled = _get_json(f"{base}/stats/requests")
    (ours,) = [e for e in polled["extended_stats"] if e["key"] == "loadgen"]
    row = next(r for r in ours["data"] if r["target"] == "builtin" and r["kind"] == "handshake")
    assert row["active"] == 12 and row["ok"] == 12
    with urllib.request.urlopen(f"{base}/loadgen", timeout=5) as response:
        page = response.read().decode()
    assert 'id="active">active associations <b>12</b>' in page and "<svg" in page
    wait_until(lambda: (metric(scrape(prom), "loadgen_successes_total", kind="ping", target="builtin") or 0) > 20,
               20, "pings on /metrics")

    # Locust's POST /stop returns once runner.stop() has stopped the users and fired test_stop, whose
    # listener applies the last, partial second; from "stopped" on the run's figures stay as they are
    # until the summary is written from them (no sleep: the scrape below must already be final).
    with urllib.request.urlopen(urllib.request.Request(f"{base}/stop", method="POST"), timeout=30):
        pass
    wait_until(lambda: _get_json(f"{base}/stats/requests")["state"] == "stopped", 20, "the run to stop")
    final = scrape(prom)
    run.proc.send_signal(signal.SIGINT)
    assert run.wait(20) == 0, run.describe()
    assert "Traceback" not in run.stderr, run.describe()

    (results,) = (tmp_path / "results").iterdir()
    summary = json.loads((results / "summary.json").read_text())
    assert not (results / "timeseries.csv").exists()  # --no-csv
    for kind in ("handshake", "ping"):
        data = summary["targets"]["builtin"][kind]
        labels = {"kind": kind, "target": "builtin"}
        assert metric(final, "loadgen_attempts_total", **labels) == data["attempted"], kind
        assert metric(final, "loadgen_successes_total", **labels) == data["completed"], kind
        assert metric(final, "loadgen_retransmissions_total", **labels) == data["retransmits"], kind
        assert metric(final, "loadgen_sent_bytes_total", **labels) == data["sent_bytes"], kind
        assert metric(final, "loadgen_latency_seconds_count", **labels) == data["completed"], kind
        for code, count in data["errors"].items():
            assert metric(final, "loadgen_failures_total", code=code, **labels) == count
        p99 = metric(final, "loadgen_latency_seconds", quantile="0.99", **labels)
        assert p99 is not None and p99 * 1000 == pytest.approx(data["latency_ms"]["p99"])
    assert summary["handshake"]["completed"] == 12
    assert metric(final, "loadgen_active_associations", target="builtin") == summary["active_associations"]
