"""The HTML report without a browser: what it shows for which run, its parameters, its size for an hour.

The browser tests (tests/test_browser.py) open reports of real runs; here the runs are built
through the real stats code with time passed in, so an hour of seconds takes a second.
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from locust.env import Environment

from loadgen.capacity import analyze
from loadgen.protocol.errors import HandshakeTimeout, PingTimeout
from loadgen.report import render_report
from loadgen.report.charts import chart_assets, time_chart
from loadgen.report.header import server_line
from loadgen.report.params import parameters
from loadgen.report.tables import reason_tag
from loadgen.results.files import write_results
from loadgen.results.summary import RunOutcome
from loadgen.scenario.loader import parse_scenario
from loadgen.stats.facts import HANDSHAKE, PING, Ended, Finished, Started
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink

KEY_HEX = "5ec7e75ec7e75ec7e75ec7e75ec7e75e"
#: Raw Python (or JSON) structures that must never reach a reader: empty containers, None, reprs.
RAW = re.compile(r"\{\}|\[\]|\bNone\b|\{'|\['|\{\"|\[\"|': ")


class _VisibleText(HTMLParser):
    """The text a reader sees: everything but scripts, styles and the charts' JSON."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._hidden += tag in ("script", "style")
        self.parts += [v for k, v in attrs if k == "title" and v]  # hover text is read too

    def handle_endtag(self, tag: str) -> None:
        self._hidden -= tag in ("script", "style")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = _VisibleText()
    parser.feed(html)
    return " ".join(parser.parts)


def scenario(body: str) -> str:
    return body + f'psk: {{identity: "device-{{n:05d}}", key: "{KEY_HEX}"}}\n'


def simulated_run(text: str, seconds: int, clients: int, pings_per_s: int, seed: int = 7) -> RunOutcome:
    """A run of ``seconds`` counted by the real sink and RunStats, one second per roll with its time
    given: clients handshake at 20/s (a few time out), then ping with a spread of latencies; one in
    a thousand pings is lost."""
    rnd, sink, stats = random.Random(seed), StatsSink(), RunStats()
    scn = parse_scenario(text, "hour.yaml")
    up = 0
    for second in range(seconds):
        for _ in range(min(20, clients - up)):
            sink.record(Started(HANDSHAKE, "gw1"))
            error = HandshakeTimeout("timed out") if rnd.random() < 0.02 else None
            sink.record(Finished(HANDSHAKE, "gw1", rnd.lognormvariate(-5, 0.5), error,
                                 retransmits=int(error is not None)))
            up += error is None
        for _ in range(pings_per_s if up else 0):
            sink.record(Started(PING, "gw1"))
            lost = rnd.random() < 0.001
            sink.record(Finished(PING, "gw1", rnd.lognormvariate(-6, 0.7), PingTimeout("no reply") if lost else None))
        if second == seconds - 1:
            for _ in range(up):
                sink.record(Ended("gw1"))
        delta = sink.roll(users=min(clients, 20 * (second + 1)))
        stats.apply(dataclasses.replace(delta, index=second, wall=1.8e9 + second, duration=1.0,
                                        cpu=0.2 + rnd.random() * 0.1))
    analysis = analyze(stats, scn, float(seconds), 0, 0)
    return RunOutcome(scn, Environment(), stats, float(seconds), analysis=analysis)


HOUR = scenario("""\
name: hour
targets: [{name: gw1, host: 192.0.2.10, port: 5684}]
clients: {count: 1000, spawn_rate: 20}
run_time: 1h
ping: {interval: 5s, expect: echo}
""")


def test_an_hour_long_run_makes_a_report_under_one_megabyte(tmp_path: Path) -> None:
    # 3600 one-second rows from the real sink and RunStats (time passed in), 1000 clients, 20 pings/s
    # (the page's size depends on the seconds and the series, not on how many pings a second holds).
    outcome = simulated_run(HOUR, 3600, 1000, 20)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_results(outcome, run_dir)
    html = (run_dir / "report.html").read_text()
    assert len(html.encode()) < 1_000_000, len(html.encode())
    assert html.count('class="tchart" data-chart') >= 5  # the time series are all there, each as data
    spec = json.loads(html.split('data-panel="latency ping"><script type="application/json">')[1].split("</script>")[0])
    assert spec["n"] == 3600 and len(spec["series"][0]["values"]) == 3600
    # Handshakes happened in the first minute: their panel covers those (and 2 s after), not the hour.
    last = max(r.index for r in outcome.stats.seconds.values() if HANDSHAKE in r.kinds and r.kinds[HANDSHAKE].attempted)
    spec = json.loads(html.split('data-panel="latency handshake"><script type="application/json">')[1]
                      .split("</script>")[0])
    assert 50 <= last < 60 and (spec["x0"], spec["n"]) == (0, last + 3)
    assert KEY_HEX not in html
    assert not RAW.search(visible_text(html)), RAW.search(visible_text(html))


def test_the_header_names_targets_workload_and_outcome() -> None:
    outcome = simulated_run(HOUR.replace("run_time: 1h", "run_time: 30s"), 30, 40, 5)
    html = render_report(*_saved(outcome))
    text = visible_text(html)
    assert "gw1 = 192.0.2.10:5684 (DTLS)" in text
    assert "steady: each client connects once, then pings every 5 s" in text
    assert re.search(r'id="outcome" class="outcome failed">FAIL<', html)  # handshakes timed out, no thresholds
    assert 'data-panel="throughput-vs-load"' not in html  # one offered level


def test_the_header_names_the_built_in_servers_real_address() -> None:
    # A run without targets: summary.json's endpoints carry the port the built-in server bound.
    outcome = simulated_run(HOUR.replace("run_time: 1h", "run_time: 30s"), 30, 40, 5)
    summary, rows, scenario = _saved(outcome)
    summary["endpoints"] = [{"name": "builtin", "host": "127.0.0.1", "port": 40123, "protocol": "dtls"}]
    scenario.pop("targets", None)
    assert "builtin = 127.0.0.1:40123 (DTLS)" in visible_text(render_report(summary, rows, scenario))


def _saved(outcome: RunOutcome) -> tuple[dict[str, object], list[dict[str, object]], dict[str, object]]:
    """What write_results saves: the summary, the rows, the redacted scenario (through JSON, as read back)."""
    from loadgen.results.summary import summary_data

    summary = json.loads(json.dumps(summary_data(outcome)))
    return summary, outcome.stats.rows(), json.loads(json.dumps(outcome.scenario.redacted(), default=str))


def test_run_parameters_are_what_differs_from_the_defaults() -> None:
    scn = parse_scenario(scenario("""\
        name: params
        targets: [{name: gw1, host: "::1", port: 5684}, {name: gw2, host: 127.0.0.1, port: 5685, protocol: tls}]
        clients: {count: 10, spawn_rate: 5}
        run_time: 20s
        ping: {interval: 1s, timeout: 2s}
        dtls: {mtu: 1000}
        thresholds: {ping_p99: 200ms}
        requests:
          - {name: hello, interval: 2s, payload: {text: "hi {seq}"}}
        """.replace("        ", "")), "params.yaml")
    saved = json.loads(json.dumps(scn.redacted(), default=str))
    rows = dict(parameters(saved))
    assert rows["targets"] == "gw1 = [::1]:5684 (DTLS), gw2 = 127.0.0.1:5685 (TLS)"
    assert rows["ping.interval"] == "1 s" and rows["ping.timeout"] == "2 s"  # set, unlike its default
    assert rows["dtls.mtu"] == "1000" and rows["thresholds.ping_p99"] == "0.2 s"
    assert rows["requests[0].name"] == "hello" and rows["requests[0].payload.text"] == "hi {seq}"
    assert rows["psk.key"] == "<redacted>" and KEY_HEX not in json.dumps(rows)
    # Unset fields (the null tls paths, unset thresholds, defaults) are left out.
    assert not any(k.startswith(("tls.", "coap.", "reconnect.", "outputs.")) for k in rows), rows
    assert "thresholds.error_ratio" not in rows and "dtls.handshake_timeout" not in rows
    # A section the run did not use is left out, set or not: dtls with only TLS targets, ping in a churn run.
    tls_only = dict(saved, targets=[t for t in saved["targets"] if t["protocol"] == "tls"])
    assert not [k for k, _ in parameters(tls_only) if k.startswith("dtls.")]
    assert [k for k, _ in parameters(saved, churn=True) if k.startswith("ping.")] == []
    # A ping timeout left out is the interval: not a difference either.
    plain = parse_scenario(scenario("name: p\nclients: {count: 1, spawn_rate: 1}\nrun_time: 5s\n"
                                    "ping: {interval: 1s}\n"), "p.yaml")
    assert "ping.timeout" not in dict(parameters(json.loads(json.dumps(plain.redacted(), default=str))))


@pytest.mark.parametrize(("reason", "tag"), [
    ("handshake p95 120 ms > 100 ms", "hs p95"),
    ("ping p95 40 ms (first step 3.1 ms)", "ping p95"),
    ("errors 4.0% > 1.0%", "errors"),
    ("ping loss 2.5%", "loss"),
    ("throughput stopped growing (+3% for +50% offered)", "no growth"),
    ("throughput 80/s fell behind the offered 100/s", "behind offered"),
])
def test_step_health_reasons_have_short_tags(reason: str, tag: str) -> None:
    assert reason_tag(reason) == tag


def test_the_builtin_servers_line_has_no_dict_repr() -> None:
    assert server_line({"server": "loadgen: DTLS server stopped: 4 handshakes, 9 pings answered, 0 failures {}"}) \
        == "DTLS server stopped: 4 handshakes, 9 pings answered, 0 failures"
    assert server_line({"server": "loadgen: DTLS server stopped: 4 handshakes, 9 pings answered, 3 failures "
                                  "{'bad-record': 2, 'cookie-mismatch': 1}"}).endswith(
        "3 failures: bad-record 2, cookie-mismatch 1")


def test_time_chart_embeds_its_data_and_escapes_labels() -> None:
    html = time_chart("p99 </script> per second", "ms", [0, 1, 2, 3], [("a</script>", [1.23456, None, 0.0, 4]),
                                                                       ("b", [1, 2, 3, 4])], log=True, panel="p")
    assert html.count("</script>") == 1  # the labels cannot end the data block
    spec = json.loads(html.split('<script type="application/json">')[1].split("</script>")[0])
    assert spec["title"] == "p99 </script> per second" and (spec["x0"], spec["dx"], spec["n"]) == (0, 1, 4)
    assert spec["series"][0]["values"] == [1.235, None, None, 4]  # 4 significant digits; <= 0 is a gap on a log axis
    uneven = json.loads(time_chart("t", "", [0, 1, 5], [("a", [1, 2, 3])]).split('json">')[1].split("</script>")[0])
    assert uneven["x"] == [0, 1, 5]
    assert "no data" in time_chart("t", "", [0, 1], [("a", [None, None])])
    # Runs of different lengths overlaid (compare.html): the shorter ends early.
    overlaid = json.loads(time_chart("t", "", [0, 1, 2], [("a", [1, 2, 3]), ("b", [5])]).split('json">')[1]
                          .split("</script>")[0])
    assert overlaid["series"][1]["values"] == [5, None, None]
    with pytest.raises(ValueError, match="more values than x"):
        time_chart("t", "", [0], [("a", [1, 2])])
    assert "uPlot" in chart_assets() and "@media print" in chart_assets()


def test_throughput_against_offered_load_needs_two_offered_levels() -> None:
    # Stages up and down (not steps): two levels, so the chart of the mean at each client count.
    updown = HOUR.replace("run_time: 1h\n", "stages: [{duration: 20s, clients: 40, spawn_rate: 20}, "
                                           "{duration: 20s, clients: 20, spawn_rate: 20}]\n")
    outcome = simulated_run(updown, 40, 40, 5)
    html = render_report(*_saved(outcome))
    assert 'data-panel="throughput-vs-load"' in html and "mean per second at each client count" in html
    assert 'data-panel="latency-per-step"' not in html and 'data-panel="steps"' not in html
    # One stage is one level: no chart against offered load.
    single = HOUR.replace("run_time: 1h\n", "stages: [{duration: 20s, clients: 40, spawn_rate: 20}]\n")
    assert 'data-panel="throughput-vs-load"' not in render_report(*_saved(simulated_run(single, 20, 40, 5)))


def test_an_interrupted_run_says_so_on_top() -> None:
    outcome = dataclasses.replace(simulated_run(HOUR, 10, 40, 5), interrupted=True)
    html = render_report(*_saved(outcome))
    assert re.search(r'id="outcome" class="outcome interrupted">INTERRUPTED<', html)
    assert 'class="verdict fail"' in html
