"""Stats per request kind: facts of several kinds and targets (device groups' ``group@target``) fed into
real sinks, two workers' deltas merged over msgpack, and every output built from them (console and JSON
summary, CSV, series, HTML report, web tab, exporters, steps, thresholds), checked against a ledger
that counted the same facts with plain integers. A plain ping run's outputs keep their exact shape.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest
from kinds_run import KINDS, METERS, NOTIFY, SENSORS, TEMP, KindsRun, kinds_run, reset_error
from locust.env import Environment

from loadgen.capacity.steps import measure_steps
from loadgen.exporters.prometheus import RunStatsCollector
from loadgen.exporters.statsd import StatsdExporter
from loadgen.locust.webui import COLUMNS, LiveView, columns
from loadgen.protocol.errors import PingTimeout
from loadgen.report import rebuild, render_report
from loadgen.results.files import write_files, write_timeseries_csv
from loadgen.results.summary import RunOutcome, print_summary, summary_data
from loadgen.scenario.model import Clients, CoapRequest, RequestStep, Scenario, Stage, Thresholds
from loadgen.stats.cells import MAX_CODES, OTHER_CODE, Cell
from loadgen.stats.facts import HANDSHAKE, PING, Finished, Started, is_notification, run_kinds, scenario_kinds
from loadgen.stats.progress import Progress
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink
from loadgen.stats.thresholds import evaluate

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def run(tmp_path: Path) -> KindsRun:
    return kinds_run(tmp_path / "results")


def outcome_of(run: KindsRun) -> RunOutcome:
    verdicts = evaluate(run.scenario.thresholds, run.stats, 2.0)
    return RunOutcome(run.scenario, Environment(), run.stats, 2.0, verdicts=verdicts)


def test_kinds_are_handshake_then_the_scenarios_requests_or_ping() -> None:
    assert run_kinds([]) == (HANDSHAKE, PING)
    assert run_kinds([HANDSHAKE, PING, HANDSHAKE]) == (HANDSHAKE, PING)
    assert run_kinds(["telemetry", HANDSHAKE, "register", "telemetry"]) == (HANDSHAKE, "telemetry", "register")
    assert is_notification(NOTIFY) and not is_notification("GET /time") and not is_notification("notification")
    plain = Scenario(name="p", clients=Clients(count=1, spawn_rate=1), run_time=1.0, psk=None)
    assert scenario_kinds(plain) == (HANDSHAKE, PING)
    coap = RequestStep("GET /obs", coap=CoapRequest(path="/obs", observe=True))
    assert scenario_kinds(Scenario(name="c", clients=plain.clients, run_time=1.0, psk=None, requests=(coap,))) == \
        (HANDSHAKE, "GET /obs", "GET /obs notification")
    # Undeclared kinds follow in the order first seen; a run without other kinds shows ping.
    stats = RunStats()
    sink = StatsSink()
    for kind in ("telemetry", "register", "telemetry"):
        sink.record(Started(kind, "gw1"))
    stats.apply(sink.roll())
    assert stats.kind_names == (HANDSHAKE, "telemetry", "register")
    assert RunStats().kind_names == (HANDSHAKE, PING)


def test_merged_worker_deltas_count_every_kind_exactly(run: KindsRun) -> None:
    stats, ledger = run.stats, run.ledger
    assert stats.kind_names == KINDS  # the scenario's order, not the order seen
    for kind in KINDS:
        mine, single, counted = stats.kinds[kind], run.single.counted(kind), ledger.kind(kind)
        assert counted.attempted > 0, kind
        for cell in (mine, single):
            assert (cell.attempted, cell.completed, cell.retransmits, cell.rsts) == \
                (counted.attempted, counted.completed, counted.retransmits, counted.rsts), kind
            assert cell.failures == counted.errors and cell.codes == counted.codes, kind
        # Percentiles of the master's merged histograms equal one histogram of every sample.
        assert mine.percentiles_ms() == single.percentiles_ms(), kind
    temp = stats.kinds[TEMP]
    assert temp.codes["2.05"] > 0 and temp.codes["4.04"] > 0 and temp.codes["RST"] > 0
    assert temp.rsts > temp.codes["RST"] > 0  # resets without a code count too, once each
    assert temp.failures["bad-reply"] == temp.codes["4.04"] and temp.failures[PingTimeout.code] > 0
    assert temp.retransmits == ledger.kind(TEMP).retransmits > 0
    for target in SENSORS:
        assert stats.kinds_of(target) == (HANDSHAKE, "register", TEMP, "GET /time", NOTIFY)
        assert stats.cell(TEMP, target).codes == ledger.tally(TEMP, target).codes
    assert stats.kinds_of(METERS[0]) == (HANDSHAKE, "telemetry")


def test_response_codes_are_bounded_per_cell() -> None:
    sink = StatsSink()
    for n in range(300):  # a hostile server answering with ever new codes
        sink.record(Started(TEMP, "gw1"))
        sink.record(Finished(TEMP, "gw1", 0.001, code=f"{n // 32}.{n % 32:02d}"))
    cell = sink.counted(TEMP)
    assert len(cell.codes) == MAX_CODES and sum(cell.codes.values()) == 300
    assert cell.codes[OTHER_CODE] == 300 - (MAX_CODES - 1)
    twin = Cell.from_wire({"codes": {f"x{n}": 1 for n in range(1000)}})
    assert len(twin.codes) == MAX_CODES and sum(twin.codes.values()) == 1000
    cell.add(twin)
    assert len(cell.codes) == MAX_CODES and sum(cell.codes.values()) == 1300


def test_summary_shows_each_request_kind_per_target(run: KindsRun) -> None:
    outcome = outcome_of(run)
    summary = json.loads(json.dumps(summary_data(outcome)))
    ledger = run.ledger
    assert list(summary["requests"]) == list(KINDS[1:]) and "ping" not in summary
    temp = summary["requests"][TEMP]
    counted = ledger.kind(TEMP)
    assert (temp["attempted"], temp["completed"], temp["retransmits"], temp["rsts"]) == \
        (counted.attempted, counted.completed, counted.retransmits, counted.rsts)
    assert temp["codes"] == dict(counted.codes) and temp["errors"] == dict(counted.errors)
    assert temp["latency_ms"]["p50"] is not None
    notify = summary["requests"][NOTIFY]
    assert "latency_ms" not in notify and 5000 <= notify["interval_ms"]["p50"] <= 5100
    for target in SENSORS:
        mine = summary["targets"][target]
        assert list(mine["requests"]) == ["register", TEMP, "GET /time", NOTIFY]
        assert mine["requests"][TEMP]["codes"] == dict(ledger.tally(TEMP, target).codes)
    assert list(summary["targets"][METERS[0]]["requests"]) == ["telemetry"]
    assert summary["requests"]["telemetry"]["errors"] == {PingTimeout.code: ledger.kind("telemetry").errors[
        PingTimeout.code]}
    out = io.StringIO()
    print_summary(outcome, out)
    text = out.getvalue()
    assert f"{TEMP}: attempted {counted.attempted}, completed {counted.completed}" in text
    assert f"retransmits {counted.retransmits}, RSTs {counted.rsts}, response codes: 2.05 {counted.codes['2.05']}" \
        in text
    assert f"  sensors@gw2 {TEMP}: attempted {ledger.tally(TEMP, 'sensors@gw2').attempted}" in text
    assert f"{NOTIFY}: attempted" in text and "interval p50 50" in text


def test_ping_p99_judges_each_request_kind_but_not_notifications(run: KindsRun) -> None:
    verdicts = evaluate(Thresholds(ping_p99=0.008, error_ratio=0.5), run.stats, 2.0)
    p99 = {v.kind: v for v in verdicts if v.name == "ping_p99"}
    assert list(p99) == ["register", TEMP, "GET /time", "telemetry"]  # no notification kind
    assert p99["telemetry"].passed and not p99[TEMP].passed
    assert p99[TEMP].describe().startswith(f"FAIL ping_p99: {TEMP} p99 1")
    assert p99["telemetry"].describe() == "pass ping_p99: telemetry p99 3.0 ms <= 8.0 ms"
    ratio = next(v for v in verdicts if v.name == "error_ratio")
    tallies = run.ledger.tallies.values()
    failed = sum(sum(t.errors.values()) for t in tallies)
    assert ratio.actual == failed / sum(t.attempted for t in tallies)
    assert {"name": "ping_p99", "limit": 0.008, "actual": p99[TEMP].actual, "passed": False, "kind": TEMP} in \
        summary_data(outcome_of(run))["thresholds"]


def test_files_and_report_show_each_request_kind(run: KindsRun, tmp_path: Path) -> None:
    outcome = outcome_of(run)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    scenario_json = json.loads(json.dumps(run.scenario.redacted(), default=str))
    (run_dir / "scenario.json").write_text(json.dumps(scenario_json))
    write_files(run_dir, run.scenario, run.stats, summary_data(outcome), scenario_json)
    with (run_dir / "timeseries.csv").open() as f:
        rows = list(csv.DictReader(f))
    counted = run.ledger.kind(TEMP)
    assert sum(int(r[f"{TEMP}_completed"]) for r in rows) == counted.completed
    assert sum(int(r[f"{TEMP}_rsts"]) for r in rows) == counted.rsts
    codes: dict[str, int] = {}
    for r in rows:
        for item in filter(None, r[f"{TEMP}_codes"].split(";")):
            code, n = item.split("=")
            codes[code] = codes.get(code, 0) + int(n)
    assert codes == dict(counted.codes)
    assert f"{NOTIFY}_interval_p50_ms" in rows[0] and "ping_completed" not in rows[0]
    html = (run_dir / "report.html").read_text()
    assert '<h2 id="requests">Requests</h2>' in html
    for kind in KINDS[1:]:
        assert f'data-kind="{kind}"' in html
    temp_table = html.split(f'data-kind="{TEMP}"')[1].split("</div>")[0]
    assert f"4.04 {counted.codes['4.04']}" in temp_table and f"RST {counted.codes['RST']}" in temp_table
    replies = ", ".join(f"{code} {n}" for code, n in sorted(counted.codes.items()))
    all_targets = temp_table.split("all targets")[1]  # the last row
    assert all_targets.endswith(f'<td class="">{counted.retransmits}</td><td class="">{counted.rsts}</td>'
                                f'<td class="">{replies}</td></tr></table>')
    notify_table = html.split(f'data-kind="{NOTIFY}"')[1].split("</div>")[0]
    assert "interval p50 ms" in notify_table and "latency p50" not in notify_table
    # `loadgen report` rebuilds the same page from the saved files (the kinds' order included).
    assert rebuild(run_dir).read_text() == html


def test_web_tab_exporters_and_steps_show_request_kinds(run: KindsRun) -> None:
    stats, ledger = run.stats, run.ledger
    view = LiveView(stats)
    assert columns(stats)[-2:] == [("rsts", "RSTs"), ("codes", "Response codes")]
    rows = {(r["target"], r["kind"]): r for r in view.rows()}
    temp = rows[("sensors@gw1", TEMP)]
    tally = ledger.tally(TEMP, "sensors@gw1")
    assert temp["rsts"] == tally.rsts and f"4.04: {tally.codes['4.04']}" in temp["codes"]
    assert ("all targets", f"{NOTIFY} (interval)") in rows and ("meters@gw1", TEMP) not in rows
    json.dumps(view.data())
    assert "telemetry/s" in view.page()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in RunStatsCollector(stats, lambda: 0).collect()
               for s in m.samples}
    labels = (("code", "4.04"), ("kind", TEMP), ("target", "sensors@gw1"))
    assert samples[("loadgen_responses_total", labels)] == tally.codes["4.04"]
    assert samples[("loadgen_resets_total", (("kind", TEMP), ("target", "sensors@gw1")))] == tally.rsts
    counters = StatsdExporter(stats, "127.0.0.1", 9, "", lambda: 0).counters()
    assert counters["GET__sensors_temp.sensors_gw1.codes.4_04"] == tally.codes["4.04"]
    assert counters["GET__sensors_temp.sensors_gw1.rsts"] == tally.rsts
    [step] = measure_steps(stats, (Stage(2.0, 10, 10.0),), run.scenario, "steady", 1.0)
    second = stats.seconds[1].kinds
    assert set(second) == {HANDSHAKE, TEMP, NOTIFY, "telemetry"}  # register and GET /time: in second 0 only
    assert step.ping.completed == second[TEMP].completed + second["telemetry"].completed  # not notifications
    assert step.kinds[TEMP].errors == dict(stats.seconds[1].kinds[TEMP].failures)
    assert step.to_json()["kinds"][NOTIFY]["completed"] == stats.seconds[1].kinds[NOTIFY].completed
    assert "requests" in Progress(stats).line(2.0, 10)


# -- a plain ping run: exactly the outputs it had before request kinds ---------------------------

KIND_KEYS = ["attempted", "completed", "failed", "in_flight", "errors", "retransmits", "resumed", "sent_bytes",
             "received_bytes", "rate_per_s", "latency_ms"]


def plain_csv_header() -> list[str]:
    """The CSV header of a plain run, written out as it was before request kinds."""
    head = ["second", "time_utc", "duration_s", "users", "active_associations", "processes", "cpu_busiest_pct",
            "cpu_total_pct"]
    for kind in ("handshake", "ping"):
        head += [f"{kind}_attempted", f"{kind}_completed", f"{kind}_failed", f"{kind}_retransmits"]
        head += [f"{kind}_p{p}_ms" for p in ("50", "90", "95", "99", "99.9", "100")] + [f"{kind}_errors"]
    return head


def plain_stats() -> RunStats:
    sink = StatsSink()
    for n in range(40):
        target = ("gw1", "gw2")[n % 2]
        sink.record(Started(HANDSHAKE if n < 4 else PING, target))
        error = PingTimeout("t") if n % 13 == 5 else None
        sink.record(Finished(HANDSHAKE if n < 4 else PING, target, 0.001 * (n + 1), error))
    stats = RunStats()
    delta = sink.roll(users=2)
    delta.duration = 1.0  # a whole second (charts leave partial ones out)
    stats.apply(delta)
    return stats


def test_a_plain_ping_run_keeps_its_outputs(tmp_path: Path) -> None:
    stats = plain_stats()
    scenario = Scenario(name="plain", clients=Clients(count=2, spawn_rate=2), run_time=1.0, psk=None,
                        thresholds=Thresholds(ping_p99=0.5))
    verdicts = evaluate(scenario.thresholds, stats, 1.0)
    summary = summary_data(RunOutcome(scenario, Environment(), stats, 1.0, verdicts=verdicts))
    assert list(summary) == ["scenario", "elapsed_s", "interrupted", "outcome", "handshake", "ping", "locust",
                             "thresholds", "server", "targets", "endpoints", "active_associations", "started_utc",
                             "analysis", "health"]
    assert list(summary["handshake"]) == list(summary["ping"]) == KIND_KEYS
    assert list(summary["targets"]["gw1"]) == ["handshake", "ping", "active_associations"]
    assert list(summary["targets"]["gw1"]["ping"]) == KIND_KEYS
    assert summary["thresholds"] == [{"name": "ping_p99", "limit": 0.5, "actual": stats.pings.percentile(99),
                                      "passed": True}]
    assert verdicts[0].describe() == f"pass ping_p99: {stats.pings.percentile(99) * 1000:.1f} ms <= 500.0 ms"
    buffer = io.StringIO()
    write_timeseries_csv(stats.rows(), buffer)
    assert buffer.getvalue().splitlines()[0].split(",") == plain_csv_header()
    series = stats.to_json()
    assert list(series) == ["version", "totals", "seconds"]
    assert [(kind, target) for kind, target, _ in series["totals"]] == \
        [(HANDSHAKE, "gw1"), (HANDSHAKE, "gw2"), (PING, "gw1"), (PING, "gw2")]
    assert list(series["seconds"][0]["kinds"]) == [HANDSHAKE, PING]
    assert "rsts" not in series["totals"][0][2] and "codes" not in series["totals"][0][2]
    html = render_report(summary, stats.rows(), {})
    assert 'id="requests"' not in html and "request-kind" not in html and "pings/s" in html
    assert columns(stats) == COLUMNS
    assert "pings/s <b>" in LiveView(stats).page()
    line = Progress(stats).line(1.0, 2)
    assert f"pings {stats.pings.completed:>8} ok" in line and "pings/s" in line


def test_a_reset_counts_once_whether_or_not_it_carries_a_code() -> None:
    sink = StatsSink()
    for fact in (Finished(TEMP, "gw1", 0.001, reset_error(), code="RST"), Finished(TEMP, "gw1", 0.001, reset_error()),
                 Finished(TEMP, "gw1", 0.001, code="RST"), Finished(TEMP, "gw1", 0.001, code="2.05")):
        sink.record(Started(TEMP, "gw1"))
        sink.record(fact)
    cell = sink.counted(TEMP)
    assert cell.rsts == 3 and cell.codes == {"RST": 2, "2.05": 1} and cell.failures == {"coap-reset": 2}
    back = Cell.from_wire(cell.to_wire())
    assert (back.rsts, back.codes, back.failures) == (3, cell.codes, cell.failures)
