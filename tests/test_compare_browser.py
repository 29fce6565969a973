"""``compare.html`` in a real headless browser (chromium, as tests/test_browser.py opens the report).

Two real runs (tests/test_compare.py's ``runs``: one against the reference server, one against it
throttled) compared; the page must show the verdict, the figures table with the throttled run's
regressions marked, the runs' series overlaid in one chart, and no raw Python structure. A
screenshot is written under the test's temporary directory.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from procs import Procs
from test_browser import By, browser, hover_reads_out  # noqa: F401 - the fixture (skips this module without chromium)
from test_compare import Runs, runs  # noqa: F401 - the module's two real runs

pytestmark = pytest.mark.timeout(180)

#: What a Python structure looks like when it leaks into a page: {} [] {'a': 1} None True False.
RAW_PYTHON = re.compile(r"\{\s*\}|\[\s*\]|\{'|\['|\bNone\b|\bTrue\b|\bFalse\b")


def _overlaid(browser: Any, title: str) -> dict[str, int]:  # noqa: F811 - the fixture's value
    """The series drawn in the chart called ``title``: their names and how many seconds have a value (uPlot's data)."""
    chart = browser.find_element(By.CSS_SELECTOR, f'.tchart[data-panel="{title}"]')
    assert chart.size["width"] > 300 and chart.size["height"] > 100, chart.size
    return dict(browser.execute_script(
        "const p = arguments[0].lgPlot; return p.series.slice(1).map((s, i) => "
        "[s.label, p.data[i + 1].filter(v => v !== null).length])", chart))


def test_compare_html_shows_the_table_and_the_runs_overlaid(runs: Runs, procs: Procs, tmp_path: Path,  # noqa: F811
                                                            browser: Any) -> None:  # noqa: F811
    child = procs.loadgen("compare", runs.fast, runs.slow, "--out", tmp_path / "out", label="compare")
    assert child.wait(60) == 1, child.describe()
    page = tmp_path / "out" / "compare.html"
    data = json.loads((tmp_path / "out" / "compare.json").read_text())
    browser.get(page.as_uri())
    browser.save_screenshot(str(tmp_path / "compare.png"))
    print(f"screenshot: {tmp_path / 'compare.png'}")

    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.text == data["verdict"] and verdict.text.startswith("REGRESSION"), verdict.text
    assert "fail" in (verdict.get_attribute("class") or "")
    table = browser.find_element(By.ID, "figures")
    assert table.is_displayed() and table.size["width"] > 300
    head = [th.text for th in table.find_elements(By.CSS_SELECTOR, "tr th")]
    assert head[:6] == ["target", "kind", "figure", "A", "B", "Δ B"], head
    rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")] for tr in table.find_elements(By.TAG_NAME, "tr")]
    ping = next(r for r in rows if r[:3] == ["ref", "ping", "throughput per s"])
    assert ping[-1] == "REGRESSION" and ping[5].startswith("-"), ping
    marked = table.find_elements(By.CSS_SELECTOR, "tr.regression")
    assert len(marked) == sum(f["regression"] for f in data["figures"]) > 0
    assert [r[2] for r in rows if r][:1] == ["throughput per s"] and len(rows) - 1 == len(data["figures"])

    # Both runs in one chart, each a line across its seconds.
    drawn = _overlaid(browser, "pings completed per second")
    assert drawn.keys() == {"A fast", "B slow"} and min(drawn.values()) >= 2, drawn
    assert _overlaid(browser, "Active associations").keys() == {"A fast", "B slow"}
    # Hovering over the middle of the chart reads out the second and each run's value there.
    readout = hover_reads_out(browser, "pings completed per second")
    assert re.fullmatch(r"\d+(\.\d+)?", readout.get("seconds since the run's start", "")), readout
    assert all(re.fullmatch(r"\d+(\.\d+)? /s", readout.get(run, "")) for run in ("A fast", "B slow")), readout

    text = browser.find_element(By.TAG_NAME, "body").text
    assert not RAW_PYTHON.search(text), RAW_PYTHON.search(text)
    assert str(runs.fast) in text and str(runs.slow) in text
    assert not browser.find_elements(By.CSS_SELECTOR, "script[src], link[href], img[src]")  # offline, one file
