"""loadgen.results.junit: the JUnit XML file's layout, counts and escaping."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from loadgen.results import junit


def _write(tmp_path: Path, cases: list[junit.Case]) -> ET.Element:
    path = tmp_path / "out" / "junit.xml"
    junit.write(path, "loadgen run", cases)
    assert not [p for p in path.parent.iterdir() if p.name != "junit.xml"]  # no partial left
    return ET.parse(path).getroot()


def test_counts_and_layout(tmp_path: Path) -> None:
    cases = [
        junit.Case("p99 < 50ms [ping @ gw]", "loadgen.thresholds", seconds=1.25),
        junit.Case("error_rate < 1% [handshake @ gw]", "loadgen.thresholds", "observed 3.5%", "detail"),
        junit.Case("run completed", "loadgen.run", detail="12 attempts, 12 completed"),
    ]
    root = _write(tmp_path, cases)
    assert root.tag == "testsuites"
    assert (root.get("tests"), root.get("failures"), root.get("errors")) == ("3", "1", "0")
    [suite] = root
    assert suite.tag == "testsuite" and suite.get("name") == "loadgen run"
    assert (suite.get("tests"), suite.get("failures"), suite.get("skipped")) == ("3", "1", "0")
    assert suite.get("time") == "1.250" and suite.get("timestamp")
    names = [(case.get("classname"), case.get("name"), case.get("time")) for case in suite]
    assert names == [
        ("loadgen.thresholds", "p99 < 50ms [ping @ gw]", "1.250"),
        ("loadgen.thresholds", "error_rate < 1% [handshake @ gw]", "0.000"),
        ("loadgen.run", "run completed", "0.000"),
    ]
    passed, failed, verdict = suite
    assert passed.find("failure") is None and passed.find("system-out") is None
    failure = failed.find("failure")
    assert failure is not None
    assert failure.get("message") == "observed 3.5%" and failure.text == "detail"
    out = verdict.find("system-out")
    assert out is not None and out.text == "12 attempts, 12 completed"


def test_escaping_and_one_line_message(tmp_path: Path) -> None:
    name = 'p99 < 5ms & "quoted" <tag>'
    case = junit.Case(name, "loadgen.thresholds", "observed\n9 ms > 5 ms & more")
    [suite] = _write(tmp_path, [case])
    [testcase] = suite
    assert testcase.get("name") == name
    failure = testcase.find("failure")
    assert failure is not None and failure.get("message") == "observed 9 ms > 5 ms & more"
    assert failure.text == "observed 9 ms > 5 ms & more"  # no detail: the message is the body


def test_no_cases_is_an_empty_suite(tmp_path: Path) -> None:
    root = _write(tmp_path, [])
    assert (root.get("tests"), root.get("failures")) == ("0", "0")
    assert len(root[0]) == 0
