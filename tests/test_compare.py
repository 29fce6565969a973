"""``loadgen compare``: the judgement on histograms made here, and real runs against the reference server.

The real part makes two short runs of the same scenario, one against ``loadgen serve dtls`` as it
is and one against the same server throttled to 40 pings/s (the scenario offers 100/s, so the
throughput at least halves); ``loadgen compare`` must flag the throttled run and exit 1, find no
regression in a run compared with itself (exit 0), and exit 2 naming an unusable directory.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml, TestCase
from procs import Procs

from loadgen.results.compare import RUN, Comparison, Figure, SavedRun, compare, judge
from loadgen.results.compare import Measure as M
from loadgen.stats.cells import Cell, new_histogram
from loadgen.stats.run import RunStats

KEY_HEX = "00112233445566778899aabbccddeeff"
#: The throttled server's pings/s: the scenario offers 10 clients x 10 pings/s = 100/s.
THROTTLE = 40


# -- the judgement, on histograms made here ------------------------------------------------------


def cell(latencies_us: list[int], failures: dict[str, int] | None = None) -> Cell:
    c = Cell()
    c.histogram = new_histogram()
    for value in latencies_us:
        c.histogram.record_value(value)
    c.completed = len(latencies_us)
    c.failures.update(failures or {})
    c.attempted = c.completed + c.failed
    return c


def saved(name: str, cells: dict[tuple[str, str], Cell], elapsed: float = 10.0,
          analysis: dict[str, Any] | None = None) -> SavedRun:
    stats = RunStats()
    stats.totals.update(cells)
    return SavedRun(name, {"scenario": "s", "elapsed_s": elapsed, "analysis": analysis}, stats)


def figure(comparison: Comparison, kind: str, name: str, target: str = "ref") -> Figure:
    return next(f for f in comparison.figures if (f.target, f.kind, f.name) == (target, kind, name))


def test_a_latency_moved_inside_the_histograms_resolution_is_not_a_regression() -> None:
    # 5 -> 6 us is +20% but one 1-us bucket; 100,000 -> 100,040 us share a 64-us bucket's neighbourhood.
    base = saved("A", {("ping", "ref"): cell([5] * 500 + [100_000] * 500)})
    later = saved("B", {("ping", "ref"): cell([6] * 500 + [100_040] * 500)})
    result = compare([base, later], max_regression=0.0)  # any move beyond the resolution would count
    p50, p99 = figure(result, "ping", "p50"), figure(result, "ping", "p99")
    assert p50.values == (0.005, 0.006) and p50.deltas[0] is not None and p50.deltas[0].ratio == pytest.approx(0.2)
    assert p50.deltas[0].within_resolution and not p50.regressed, p50
    assert p99.deltas[0] is not None and p99.deltas[0].within_resolution and not p99.regressed, p99
    assert not result.regressions and result.verdict.startswith("no regression"), result.verdict
    # The same move twice as large is beyond the resolution.
    worse = compare([base, saved("C", {("ping", "ref"): cell([7] * 500 + [100_300] * 500)})], max_regression=0.0)
    assert figure(worse, "ping", "p50").regressed and figure(worse, "ping", "p99").regressed


def test_a_tail_too_few_samples_decide_is_shown_never_judged() -> None:
    # 150 pings: their p99.9 is the slowest one, and the max is always one sample: twice as slow
    # there is shown, not a regression; the p50 (75 samples beyond it) is judged.
    base = saved("A", {("ping", "ref"): cell([1000] * 149 + [5000])})
    later = saved("B", {("ping", "ref"): cell([2000] * 149 + [10_000])})
    result = compare([base, later])
    for name in ("p99", "p99.9", "max"):
        tail = figure(result, "ping", name)
        assert tail.deltas[0] is not None and tail.deltas[0].ratio == pytest.approx(1.0, abs=0.01), tail
        assert not tail.regressed, tail
    assert figure(result, "ping", "p50").regressed


def test_worse_by_more_than_max_regression_in_its_worse_direction() -> None:
    base = saved("A", {("ping", "ref"): cell([1000] * 2000)})
    slower_fewer = saved("B", {("ping", "ref"): cell([1500] * 1000, {"ping-timeout": 50})})
    result = compare([base, slower_fewer])
    throughput, p99 = figure(result, "ping", "throughput"), figure(result, "ping", "p99")
    assert throughput.values == (200.0, 100.0) and throughput.regressed, throughput  # down is worse
    assert p99.deltas[0] is not None and p99.deltas[0].ratio == pytest.approx(0.5, abs=0.01) and p99.regressed
    errors, timeouts = figure(result, "ping", "errors"), figure(result, "ping", "errors ping-timeout")
    assert errors.values[0] == 0 and errors.regressed and timeouts.values[0] == 0.0 and timeouts.regressed
    assert timeouts.deltas[0] is not None and timeouts.deltas[0].ratio is None  # new: no percentage of zero
    # The other way round every move is an improvement: nothing flagged.
    assert not compare([slower_fewer, base]).regressions
    # Three runs: each later one against the baseline, the verdict names the one that regressed.
    three = compare([base, base, slower_fewer])
    assert [d is not None and d.regression for d in figure(three, "ping", "throughput").deltas] == [False, True]
    assert "ping throughput [ref] C -100 (-50.0%)" in three.verdict and " B " not in three.verdict, three.verdict
    # Within --max-regression: 1000 -> 1050 us is +5%, beyond the resolution but not worse than 10%.
    assert not figure(compare([base, saved("C", {("ping", "ref"): cell([1050] * 2000)})]), "ping", "p99").regressed


def test_a_run_compared_with_itself_and_the_knee_of_stepped_runs() -> None:
    steps = {"steps": [{}], "stages": [{"duration": 8.0}], "unit": "pings/s",
             "knee": {"knee_clients": 200, "capacity": 1000.0}}
    lower = {**steps, "knee": {"knee_clients": 150, "capacity": 700.0}}
    a = saved("A", {("ping", "ref"): cell([900, 1000, 1100])}, analysis=steps)
    same = compare([a, a])
    assert not same.regressions and all(d is None or d.change == 0 for f in same.figures for d in f.deltas)
    knee = compare([a, saved("B", {("ping", "ref"): cell([900, 1000, 1100])}, analysis=lower)])
    capacity = figure(knee, "", "sustainable capacity", target=RUN)
    assert capacity.values == (1000.0, 700.0) and capacity.regressed and capacity.unit == "pings/s"
    assert figure(knee, "", "knee clients", target=RUN).regressed
    assert [f.title for f in knee.regressions] == ["knee clients", "sustainable capacity"], knee.verdict


def test_targets_by_name_all_targets_and_one_target_each_under_other_names() -> None:
    two = saved("A", {("ping", "gw1"): cell([1000] * 10), ("ping", "gw2"): cell([3000] * 10)})
    one = saved("B", {("ping", "gw1"): cell([1000] * 10)})
    result = compare([two, one])
    assert figure(result, "ping", "p50", target="all targets").values == (1.0, 1.0)  # 1 ms is the median of both
    assert figure(result, "ping", "throughput", target="all targets").regressed  # gw2's pings are missing
    gw2 = figure(result, "ping", "throughput", target="gw2")
    assert gw2.values == (1.0, None) and gw2.deltas == (None,) and not gw2.regressed
    assert "ping [gw2] is not in run B" in result.notes, result.notes
    # One target in each run, named differently (the built-in server against a real one): compared.
    paired = compare([saved("A", {("ping", "builtin"): cell([1000])}), saved("B", {("ping", "ref"): cell([2000])})])
    assert figure(paired, "ping", "p50", target="builtin").values == (1.0, 2.0)
    assert "one target per run, compared with each other: A builtin, B ref" in paired.notes


def test_judge_needs_both_values_and_knows_no_direction_for_informational_figures() -> None:
    assert judge(M(None), M(1.0), "up", 0.1) is None
    informational = judge(M(10.0), M(100.0), "none", 0.1)
    assert informational is not None and not informational.regression and informational.ratio == 9.0
    unchanged = judge(M(0.0), M(0.0, 0.1), "up", 0.1)
    assert unchanged is not None and unchanged.ratio == 0.0 and not unchanged.regression


# -- real runs against the reference server -------------------------------------------------------


@dataclass
class Runs:
    workdir: Path
    fast: Path  # against the server as it is
    slow: Path  # against the same server throttled to THROTTLE pings/s


def _run_against(procs: Procs, workdir: Path, name: str, *server_args: object) -> Path:
    server = procs.loadgen("serve", "dtls", "--port", "0", "--psk-hex", KEY_HEX, *server_args, label=f"srv-{name}")
    port = int(server.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1])
    scenario = workdir / f"{name}.yaml"
    scenario.write_text(textwrap.dedent(f"""\
        name: {name}
        targets: [{{name: ref, host: 127.0.0.1, port: {port}}}]
        clients: {{count: 10, spawn_rate: 50}}
        run_time: 3s
        ping: {{interval: 100ms, expect: echo}}
        psk: {{identity: "device-{{n:05d}}", key: "{KEY_HEX}"}}
        outputs: {{results_dir: results, csv: false, report: false}}
        """))
    run = procs.loadgen("run", scenario, label=f"run-{name}")
    run.wait(60)  # the throttled run fails its pings (exit 1): the comparison is what is tested
    assert "Traceback" not in run.stderr, run.describe()
    (results,) = (workdir / "results").glob(f"*-{name}")
    return results


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runs]:
    workdir = tmp_path_factory.mktemp("compare")
    procs = Procs(workdir)
    try:
        fast = _run_against(procs, workdir, "fast")
        slow = _run_against(procs, workdir, "slow", "--max-ping-rate", THROTTLE)
        yield Runs(workdir, fast, slow)
    finally:
        procs.cleanup()


def junit_cases(path: Path) -> dict[str, TestCase]:
    """``--junit``'s file as junitparser reads it: one suite, "loadgen compare", whose counts match its cases."""
    xml = JUnitXml.fromfile(str(path))
    (suite,) = list(xml)
    found = {case.name: case for case in suite}
    assert suite.name == "loadgen compare" and suite.tests == len(found) == xml.tests
    assert suite.failures == sum(not case.is_passed for case in found.values()) == xml.failures
    return found


def compare_cli(procs: Procs, *args: object) -> tuple[int, str, str]:
    child = procs.loadgen("compare", *args, label="compare")
    status = child.wait(60)
    return status, child.stdout, child.stderr


@pytest.mark.timeout(180)
def test_compare_flags_the_throttled_run(runs: Runs, procs: Procs, tmp_path: Path) -> None:
    status, out, err = compare_cli(procs, runs.fast, runs.slow, "--out", tmp_path / "out",
                                   "--junit", tmp_path / "compare.xml")
    assert status == 1, out + err
    assert "Traceback" not in err, err
    row = next(line for line in out.splitlines() if line.startswith("ref ") and " ping " in line
               and "throughput" in line)
    assert row.endswith("REGRESSION"), out
    assert "loadgen: compare: REGRESSION:" in out and "ping throughput [ref] B -" in out, out
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert data["regression"] is True and data["baseline"] == str(runs.fast)
    rows = {(f["target"], f["kind"], f["figure"]): f for f in data["figures"]}
    ping = rows[("ref", "ping", "throughput")]
    assert ping["regression"] and ping["deltas"][1]["ratio"] < -0.4, ping  # at least halved, with margin
    assert ping["values"][1] <= THROTTLE * 1.15, ping  # the throttle held
    summary = json.loads((runs.fast / "summary.json").read_text())
    # The figures are the runs' own: throughput from the totals, p99 from the merged histogram.
    assert ping["values"][0] == pytest.approx(summary["ping"]["completed"] / summary["elapsed_s"])
    assert rows[("ref", "ping", "p99")]["values"][0] == pytest.approx(summary["ping"]["latency_ms"]["p99"])
    assert rows[("ref", "ping", "errors")]["regression"], rows[("ref", "ping", "errors")]
    # JUnit, as a real consumer reads it: a case per compared figure, the regressions failed (only those).
    junit = junit_cases(tmp_path / "compare.xml")
    failed = {name: case for name, case in junit.items() if not case.is_passed}
    assert len(failed) == sum(f["regression"] for f in data["figures"]) and len(junit) > 10, sorted(failed)
    (failure,) = failed["ping throughput [ref] B vs A"].result
    assert isinstance(failure, Failure) and "worse than 10%" in str(failure.message), failure
    html = (tmp_path / "out" / "compare.html").read_text()
    # Self-contained: the charts' data and script inline, nothing loaded from elsewhere.
    assert "REGRESSION" in html and "data-chart" in html and not re.search(r"<script[^>]* src=|<link|<img", html)
    # The throttled run as the baseline: its ping throughput is what got better.
    status, out, _ = compare_cli(procs, runs.slow, runs.fast, "--out", tmp_path / "reverse")
    reverse = json.loads((tmp_path / "reverse" / "compare.json").read_text())
    improved = next(f for f in reverse["figures"]
                    if (f["target"], f["kind"], f["figure"]) == ("ref", "ping", "throughput"))
    assert not improved["regression"] and improved["deltas"][1]["ratio"] > 0.6, improved


@pytest.mark.timeout(120)
def test_a_run_compared_with_itself_has_no_regression(runs: Runs, procs: Procs, tmp_path: Path) -> None:
    status, out, err = compare_cli(procs, runs.fast, runs.fast, "--junit", tmp_path / "self.xml")
    assert status == 0, out + err
    assert "loadgen: compare: no regression" in out and "REGRESSION" not in out, out
    (written,) = (runs.fast.parent).glob("compare-*")  # the default: next to the first run
    assert f"loadgen: written {written / 'compare.json'}, {written / 'compare.html'}, {tmp_path / 'self.xml'}" in out
    data = json.loads((written / "compare.json").read_text())
    assert not data["regression"] and all(d is None or d["change"] == 0 for f in data["figures"]
                                          for d in f["deltas"]), data
    junit = junit_cases(tmp_path / "self.xml")
    assert len(junit) > 10 and all(case.is_passed for case in junit.values()), junit


@pytest.mark.timeout(120)
def test_unusable_input_exits_2_naming_the_directory(runs: Runs, procs: Procs, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-run"
    status, out, err = compare_cli(procs, runs.fast, missing, "--out", tmp_path / "out")
    assert status == 2 and str(missing) in err and "Traceback" not in err, out + err
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "summary.json").write_text((runs.fast / "summary.json").read_text())
    (corrupt / "series.json").write_text('{"totals": [["ping", "ref", {"hdr": "not base64!"}]], "seconds": []}')
    status, out, err = compare_cli(procs, runs.fast, corrupt)
    assert status == 2 and str(corrupt / "series.json") in err and "ping [ref]" in err, err
    assert "Traceback" not in err, err
    bad_knee = {**json.loads((runs.fast / "summary.json").read_text()), "analysis": {"knee": {"capacity": "x"}}}
    (corrupt / "series.json").write_text((runs.fast / "series.json").read_text())
    (corrupt / "summary.json").write_text(json.dumps(bad_knee))
    status, _, err = compare_cli(procs, runs.fast, corrupt)
    assert status == 2 and f"{corrupt / 'summary.json'}: 'analysis'" in err and "Traceback" not in err, err
    (corrupt / "summary.json").write_text("{not json")
    status, _, err = compare_cli(procs, corrupt, runs.fast)
    assert status == 2 and str(corrupt / "summary.json") in err and "Traceback" not in err, err
    status, _, err = compare_cli(procs, runs.fast)
    assert status == 2 and "at least two" in err, err
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    status, _, err = compare_cli(procs, runs.fast, runs.fast, "--out", a_file)
    assert status == 2 and f"{a_file}: cannot write the comparison" in err and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()  # nothing written for unusable input
