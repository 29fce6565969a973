"""CI outputs of real runs: ``--junit FILE`` read back by a real JUnit consumer (junitparser), and
``summary.md`` (verdict, targets, per-target table, thresholds, no raw Python structures).

Every run is a ``loadgen`` child process against a reference server on loopback (the built-in one, or
``loadgen serve dtls`` with another key), a few seconds long; the ``procs`` fixture ends every process
group.
"""

from __future__ import annotations

import json
import re
import signal
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from junitparser import Failure, JUnitXml, TestCase
from procs import Procs
from servers import LoadgenServer, parse_failures

pytestmark = pytest.mark.timeout(180)

KEY_HEX = "5a17c0ffee0ddba11deadbeef0123456"
#: What must never reach a user: dicts, lists, None, Python reprs.
RAW = re.compile(r"[{}\[\]]|\bNone\b|Counter\(|'\w+':")


def scenario_file(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body) + textwrap.dedent(f"""\
        psk: {{identity: "device-{{n:05d}}", key: "{KEY_HEX}"}}
        outputs: {{results_dir: results}}
        """))
    return path


def finished(procs: Procs, *args: object, timeout: float = 60) -> tuple[int, str]:
    run = procs.loadgen(*args)
    status = run.wait(timeout)
    assert "Traceback" not in run.stderr, run.describe()
    return status, run.describe()


def results(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    (run_dir,) = (tmp_path / "results").iterdir()
    return run_dir, json.loads((run_dir / "summary.json").read_text())


def cases(path: Path) -> dict[str, TestCase]:
    """The file as junitparser reads it: one suite whose counts match its cases."""
    xml = JUnitXml.fromfile(str(path))
    (suite,) = list(xml)
    found = {case.name: case for case in suite}
    failed = [case for case in found.values() if not case.is_passed]
    assert suite.tests == len(found) and suite.failures == len(failed) and suite.errors == 0
    assert xml.tests == suite.tests and xml.failures == suite.failures
    return found


def failure_message(case: TestCase) -> str:
    (result,) = case.result
    assert isinstance(result, Failure), case.result
    return str(result.message)


def table_row(markdown: str, *first_cells: str) -> list[str]:
    """The cells of the summary.md table row that starts with ``first_cells``."""
    for line in markdown.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[:len(first_cells)] == list(first_cells):
            return cells
    raise AssertionError(f"no row {first_cells} in:\n{markdown}")


def test_impossible_p99_is_a_failed_junit_case_and_summary_md_says_fail(tmp_path: Path, procs: Procs) -> None:
    scenario = scenario_file(tmp_path, "impossible", """\
        clients: {count: 3, spawn_rate: 10}
        run_time: 3s
        ping: {interval: 500ms}
        thresholds: {ping_p99: 0.000001, handshake_p99: 30}
        """)
    status, described = finished(procs, "run", scenario, "--junit", "ci/junit.xml")
    assert status == 1, described
    run_dir, summary = results(tmp_path)
    found = cases(tmp_path / "ci" / "junit.xml")
    assert sorted(found) == ["handshake_p99 <= 30000 ms", "ping_p99 <= 0.001 ms", "verdict"]
    assert found["handshake_p99 <= 30000 ms"].is_passed and found["verdict"].is_passed
    # The failed case names the observed figure, the one summary.json holds.
    (ping_verdict,) = [t for t in summary["thresholds"] if t["name"] == "ping_p99"]
    message = failure_message(found["ping_p99 <= 0.001 ms"])
    assert message.startswith("FAIL ping_p99: ") and f"{ping_verdict['actual'] * 1000:.1f} ms" in message, message

    markdown = (run_dir / "summary.md").read_text()
    assert markdown.splitlines()[0] == "## loadgen: impossible: FAIL", markdown
    port = summary["endpoints"][0]["port"]
    assert f"`builtin = 127.0.0.1:{port}` (dtls)" in markdown, markdown
    handshakes = table_row(markdown, "builtin", "handshake")
    assert handshakes[2:6] == [str(summary["handshake"][k]) for k in ("attempted", "completed", "failed", "in_flight")]
    assert handshakes[-1] == "none"
    pings = table_row(markdown, "builtin", "ping")
    assert int(pings[3]) == summary["ping"]["completed"] > 0 and pings[9] != "-", pings  # p99 ms
    assert table_row(markdown, "ping_p99", "FAIL") and table_row(markdown, "handshake_p99", "pass")
    assert not RAW.search(markdown), markdown
    assert not RAW.search(summary["server"]), summary["server"]  # the built-in server's stop line


def test_passing_distributed_run_has_no_failed_case(tmp_path: Path, procs: Procs) -> None:
    scenario = scenario_file(tmp_path, "generous", """\
        clients: {count: 2, spawn_rate: 10}
        run_time: 3s
        ping: {interval: 500ms}
        thresholds: {ping_p99: 30, handshake_p99: 30, error_ratio: 0.5}
        """)
    status, described = finished(procs, "run", scenario, "--processes", "1", "--junit", "junit.xml", timeout=90)
    assert status == 0, described
    found = cases(tmp_path / "junit.xml")
    assert len(found) == 4 and all(case.is_passed for case in found.values()), found
    run_dir, summary = results(tmp_path)
    markdown = (run_dir / "summary.md").read_text()
    assert markdown.splitlines()[0] == "## loadgen: generous: PASS", markdown
    assert int(table_row(markdown, "builtin", "ping")[3]) == summary["ping"]["completed"] > 0
    assert not RAW.search(markdown), markdown


def test_every_handshake_failing_without_thresholds_fails_the_verdict_case(
        tmp_path: Path, procs: Procs, start_dtls_server: Callable[..., LoadgenServer], psk_hex: str) -> None:
    server = start_dtls_server(key_hex=psk_hex)  # not the scenario's key: every handshake fails
    scenario = scenario_file(tmp_path, "wrongkey", f"""\
        targets: [{{name: gw, host: {server.host}, port: {server.port}}}]
        clients: {{count: 3, spawn_rate: 10}}
        run_time: 2s
        reconnect: {{policy: never}}
        """)
    status, described = finished(procs, "run", scenario, "--junit", "junit.xml")
    assert status == 1, described
    found = cases(tmp_path / "junit.xml")
    assert list(found) == ["verdict"]
    message = failure_message(found["verdict"])
    assert message == ("FAIL: 3 of 3 attempts failed (psk-key-mismatch 3); no thresholds set: "
                       "any failure fails the run"), message
    run_dir, _ = results(tmp_path)
    markdown = (run_dir / "summary.md").read_text()
    assert f"`gw = {server.host}:{server.port}` (dtls)" in markdown, markdown
    assert table_row(markdown, "gw", "handshake")[2:6] == ["3", "0", "3", "0"]
    assert table_row(markdown, "gw", "handshake")[-1] == "psk-key-mismatch 3"
    assert "No thresholds set" in markdown and not RAW.search(markdown), markdown
    stopped = server.stop()
    assert stopped is not None and stopped.failures == parse_failures("psk-key-mismatch 3"), stopped
    assert stopped.line.endswith("3 failures (psk-key-mismatch 3)"), stopped.line


def test_interrupted_run_fails_its_verdict_case(tmp_path: Path, procs: Procs) -> None:
    scenario = scenario_file(tmp_path, "stopped", """\
        clients: {count: 2, spawn_rate: 10}
        run_time: 2m
        ping: {interval: 500ms}
        """)
    run = procs.loadgen("run", scenario, "--junit", "junit.xml")
    run.wait_for(r"handshakes\s+2 ok", timeout=30)
    run.signal_group(signal.SIGTERM)
    assert run.wait(30) == 0, run.describe()  # exit status: no thresholds and no failed attempt
    found = cases(tmp_path / "junit.xml")
    message = failure_message(found["verdict"])
    assert re.fullmatch(r"INTERRUPTED: stopped after \d+ s of the planned 120 s; the figures cover the part "
                        r"that ran", message), message
    run_dir, _ = results(tmp_path)
    markdown = (run_dir / "summary.md").read_text()
    assert markdown.splitlines()[0] == "## loadgen: stopped: INTERRUPTED", markdown


def test_capacity_junit_verdict_agrees_with_the_exit_status(tmp_path: Path, procs: Procs) -> None:
    scenario = scenario_file(tmp_path, "steps", """\
        clients: {count: 2, spawn_rate: 10}
        run_time: 10s
        ping: {interval: 250ms}
        """)
    status, described = finished(procs, "capacity", scenario, "--start", "1", "--step", "1", "--steps", "2",
                                 "--step-time", "2s", "--junit", "junit.xml", timeout=90)
    assert status in (0, 1), described
    found = cases(tmp_path / "junit.xml")
    assert list(found) == ["verdict"]  # a stepped run is judged by its knee only
    assert found["verdict"].is_passed == (status == 0), described
    text = found["verdict"].system_out if status == 0 else str(found["verdict"].result[0].text)
    assert "step 1: " in str(text) and "step 2: " in str(text), text
    run_dir, summary = results(tmp_path)
    markdown = (run_dir / "summary.md").read_text()
    assert "2 stages of 1, 2 clients" in markdown and not RAW.search(markdown), markdown
    assert "| Step | Clients | Throughput pings/s | ping p99 ms | Errors | Health |" in markdown, markdown
    for step in summary["analysis"]["steps"]:  # one row per step, as summary.json has it
        row = table_row(markdown, str(step["index"]), str(step["clients"]))
        assert row[2] == f"{step['throughput']:.1f}" and row[5], row
    assert markdown.splitlines()[0].endswith(": PASS" if status == 0 else ": FAIL"), markdown


@pytest.mark.parametrize(("extra", "error"), [
    (["--worker"], "--junit: a worker does not judge the run; give --junit to the master"),
    ([], "--junit .: is a directory; give a file name (junit.xml)"),
])
def test_bad_junit_option_exits_2_before_the_run(tmp_path: Path, procs: Procs, extra: list[str],
                                                 error: str) -> None:
    scenario = scenario_file(tmp_path, "bad", "clients: {count: 1, spawn_rate: 1}\nrun_time: 1s\n")
    junit = "junit.xml" if extra else "."
    status, described = finished(procs, "run", scenario, "--junit", junit, *extra)
    assert status == 2 and error in described, described
    assert not (tmp_path / "results").exists(), described
