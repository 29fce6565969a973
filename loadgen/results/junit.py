"""JUnit XML output (``--junit FILE``): thresholds and compared figures as test cases, so a CI
server (Jenkins, GitLab, GitHub test reporters) shows a failed threshold as a failed test.

The layout is the one Ant's JUnit task, Jenkins and pytest's ``--junitxml`` write::

    <testsuites tests= failures= errors= skipped= time=>
      <testsuite name= tests= failures= errors= skipped= time= timestamp= hostname=>
        <testcase classname= name= time=>
          <failure message="one line">longer detail</failure>
        </testcase>

Written with :mod:`xml.etree.ElementTree`, which escapes text and attributes.
"""

from __future__ import annotations

import datetime
import os
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Case:
    """One JUnit test case: a threshold, or one compared figure."""

    name: str
    classname: str
    failure: str | None = None
    """None = passed; else the failure message (one line)."""
    detail: str = ""
    """Longer text: the failure's body when failed, ``system-out`` when passed."""
    seconds: float = 0.0


def _seconds(value: float) -> str:
    return f"{max(value, 0.0):.3f}"


def _case_element(case: Case) -> ET.Element:
    element = ET.Element(
        "testcase", classname=case.classname, name=case.name, time=_seconds(case.seconds)
    )
    if case.failure is not None:
        # A message attribute cannot hold a line break usefully: consumers show it as one line.
        message = " ".join(case.failure.split())
        failure = ET.SubElement(element, "failure", message=message, type="failure")
        failure.text = case.detail or message
    elif case.detail:
        ET.SubElement(element, "system-out").text = case.detail
    return element


def build(suite: str, cases: Sequence[Case], timestamp: datetime.datetime | None = None) -> ET.Element:
    """The ``<testsuites>`` element for *cases* in one suite named *suite*."""
    failures = sum(1 for case in cases if case.failure is not None)
    total = _seconds(sum(case.seconds for case in cases))
    when = (timestamp or datetime.datetime.now(datetime.UTC)).replace(microsecond=0)
    counts = {"tests": str(len(cases)), "failures": str(failures), "errors": "0", "skipped": "0",
              "time": total}
    root = ET.Element("testsuites", {"name": suite, **counts})
    testsuite = ET.SubElement(root, "testsuite", {
        "name": suite, **counts, "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S"),
        "hostname": socket.gethostname() or "localhost",
    })
    testsuite.extend(_case_element(case) for case in cases)
    return root


def write(path: Path, suite: str, cases: Sequence[Case]) -> None:
    """Write one <testsuites><testsuite name=suite ...> file with tests/failures counts.

    Written to a temporary file beside *path* and renamed, so a CI step never reads half a file.
    """
    tree = ET.ElementTree(build(suite, cases))
    ET.indent(tree)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tree.write(partial, encoding="utf-8", xml_declaration=True)
    partial.replace(path)
