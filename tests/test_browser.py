"""The report and the web UI tab in a real headless browser (Debian's chromium + chromium-driver, via selenium).

Skipped, with the reason, when chromium, chromedriver or selenium is missing; CI
installs them (.ci/run). The browser never leaves loopback: the report is a local file
with no links out, the web UI is on 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from procs import Procs, child_env, free_port

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:  # pragma: no cover - selenium is a test dependency
    webdriver = None  # type: ignore[assignment]

if not CHROMIUM or not CHROMEDRIVER or webdriver is None:
    pytest.skip("needs chromium, chromedriver and selenium (apt-get install chromium chromium-driver; "
                "pip install selenium)", allow_module_level=True)

KEY_HEX = "000102030405060708090a0b0c0d0e0f"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                 "--window-size=1280,1600", f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    # An explicit driver path: selenium must not try to download one (no internet here).
    driver = webdriver.Chrome(options=options, service=Service(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def write_scenario(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body) + textwrap.dedent(f"""\
        psk: {{identity: "device-{{n:05d}}", key: "{KEY_HEX}"}}
        outputs: {{results_dir: results}}
        """))
    return path


def test_report_renders_charts_with_data_and_the_verdict(tmp_path: Path, procs: Procs, browser: Any) -> None:
    scenario = write_scenario(tmp_path, "steps", """\
        stages:
          - {duration: 4s, clients: 5, spawn_rate: 50}
          - {duration: 4s, clients: 10, spawn_rate: 50}
          - {duration: 4s, clients: 15, spawn_rate: 50}
        ping: {interval: 200ms, expect: echo}
        """)
    run = procs.loadgen("run", scenario)
    assert run.wait(60) == 0, run.describe()
    (results,) = (tmp_path / "results").iterdir()
    summary = json.loads((results / "summary.json").read_text())
    verdict = summary["analysis"]["verdict"]
    assert f"loadgen: verdict: {verdict}" in run.stdout  # headless runs print the same sentence

    browser.get((results / "report.html").as_uri())
    assert browser.find_element(By.ID, "verdict").text == verdict
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) >= 8
    for chart in charts:
        size = chart.size
        assert size["width"] > 300 and size["height"] > 100, chart.get_attribute("aria-label")
    lines = browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline.series")
    drawn = {line.get_attribute("data-series") for line in lines if int(line.get_attribute("data-n")) >= 2}
    assert {"pings/s", "active associations", "ping p99", "busiest load process"} <= drawn, drawn
    # Per step: three points on the throughput-vs-load line, the bounding boxes really laid out.
    per_step = browser.execute_script(
        "return [...document.querySelectorAll('svg.chart')].filter(s => s.getAttribute('aria-label')"
        ".startsWith('Throughput vs offered load')).map(s => s.querySelectorAll('circle').length)")
    assert per_step and per_step[0] >= 3, per_step
    height = browser.execute_script(
        "return document.querySelector('polyline.series').getBBox().height + "
        "document.querySelector('polyline.series').getBBox().width")
    assert height > 0


def test_web_ui_tab_shows_live_dtls_figures(tmp_path: Path, procs: Procs, browser: Any) -> None:
    port = free_port()
    scenario = write_scenario(tmp_path, "webtab", """\
        clients: {count: 5, spawn_rate: 5}
        run_time: 1m
        ping: {interval: 300ms, expect: echo}
        """)
    run = procs.loadgen("run", scenario, "--web", "--web-port", port)
    run.wait_for(r"web UI at http://127\.0\.0\.1:\d+")
    base = f"http://127.0.0.1:{port}"
    form = urllib.parse.urlencode({"user_count": 8, "spawn_rate": 8}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/swarm", data=form), timeout=5) as response:
        assert json.load(response)["success"] is True

    browser.get(f"{base}/")  # issue 12 (one truth): the UI opens on loadgen's exact figures
    deadline = time.monotonic() + 30
    cells: list[str] = []
    while time.monotonic() < deadline:
        rows = [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
                for tr in browser.find_elements(By.CSS_SELECTOR, "table tbody tr")]
        cells = next((r for r in rows if r[:2] == ["builtin", "handshake"]), [])
        if cells and cells[2] == "8":
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the DTLS/TLS tab never showed 8 active associations: {cells}\n{browser.page_source[:3000]}")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table thead th")]
    assert "Active associations" in headers and "Retransmits" in headers and "p99.9 ms" in headers
    tab = [t.text for t in browser.find_elements(By.CSS_SELECTOR, "[role=tab]")]
    assert "DTLS/TLS (EXACT)" in [t.upper() for t in tab], tab  # the UI shows tab titles in capitals
    assert "rounded view" in browser.find_element(By.ID, "loadgen-banner").text  # Locust's tables, labelled
    # Live: the ping count on the tab keeps growing (Locust's UI polls every 2 s; a loaded machine
    # can delay a poll, so wait for the change rather than for a fixed time).
    first = int(next(r for r in _rows(browser) if r[:2] == ["builtin", "ping"])[5])
    later, deadline = first, time.monotonic() + 15
    while later <= first and time.monotonic() < deadline:
        time.sleep(0.5)
        later = int(next(r for r in _rows(browser) if r[:2] == ["builtin", "ping"])[5])
    assert later > first, f"the tab's ping count stayed at {first} for 15 s"

    browser.get(f"{base}/loadgen")
    assert browser.find_element(By.CSS_SELECTOR, "#active b").text == "8"
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline.series")


def _rows(browser: Any) -> list[list[str]]:
    return [[td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in browser.find_elements(By.CSS_SELECTOR, "table tbody tr")]


def test_report_of_a_multi_kind_run_shows_a_table_per_request_kind(tmp_path: Path, browser: Any) -> None:
    import kinds_run
    from kinds_run import NOTIFY, TEMP

    run = kinds_run.kinds_run(tmp_path / "results")  # the same facts the child process writes out
    run_dir = tmp_path / "results" / "fleet"
    # In a child: the results need Locust, which must not monkey-patch ssl after selenium imported it.
    subprocess.run([sys.executable, kinds_run.__file__, str(run_dir)], check=True, timeout=60, cwd=tmp_path,
                   env=child_env())
    browser.get((run_dir / "report.html").as_uri())
    browser.save_screenshot(str(tmp_path / "report-kinds.png"))
    print(f"screenshot: {tmp_path / 'report-kinds.png'}")
    shown = [div.get_attribute("data-kind") for div in browser.find_elements(By.CSS_SELECTOR, "div.request-kind")]
    assert shown == ["register", TEMP, "GET /time", NOTIFY, "telemetry"]
    table = browser.find_element(By.CSS_SELECTOR, f'div.request-kind[data-kind="{TEMP}"] table')
    assert table.size["width"] > 300 and table.is_displayed()
    head = [th.text for th in table.find_elements(By.TAG_NAME, "th")]
    assert head[:4] == ["target", "attempted", "completed", "failed"] and head[-3:] == [
        "retransmits", "RSTs", "response codes"]
    rows = {tr.find_elements(By.TAG_NAME, "td")[0].text: [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            for tr in table.find_elements(By.TAG_NAME, "tr")[1:]}
    assert list(rows) == ["sensors@gw1", "sensors@gw2", "all targets"]
    tally = run.ledger.tally(TEMP, "sensors@gw1")
    assert rows["sensors@gw1"][1] == str(tally.attempted) and rows["sensors@gw1"][-2] == str(tally.rsts)
    assert f"4.04 {tally.codes['4.04']}" in rows["sensors@gw1"][-1]
    notify = browser.find_element(By.CSS_SELECTOR, f'div.request-kind[data-kind="{NOTIFY}"]')
    assert "interval p50 ms" in [th.text for th in notify.find_elements(By.TAG_NAME, "th")]
    lines = browser.find_elements(By.CSS_SELECTOR, "svg.chart polyline.series")
    drawn = {line.get_attribute("data-series") for line in lines}
    assert {f"{TEMP}/s", "telemetry/s", f"{TEMP} p99"} <= drawn, drawn


def test_web_ui_tab_shows_each_request_kind_per_group(tmp_path: Path, procs: Procs, browser: Any) -> None:
    import kinds_run
    from kinds_run import NOTIFY, TEMP
    from procs import Proc

    run = kinds_run.kinds_run(tmp_path / "results")  # what the child's tab shows
    web = Proc([sys.executable, kinds_run.__file__, "web"], tmp_path, "webkinds")
    procs.started.append(web)  # ended by the fixture's cleanup
    base = web.wait_for(r"web UI at (http://127\.0\.0\.1:\d+)").group(1)
    form = urllib.parse.urlencode({"user_count": 1, "spawn_rate": 1}).encode()
    with urllib.request.urlopen(urllib.request.Request(f"{base}/swarm", data=form), timeout=5) as response:
        assert json.load(response)["success"] is True
    browser.get(f"{base}/")
    deadline = time.monotonic() + 30
    rows: dict[tuple[str, str], list[str]] = {}
    while time.monotonic() < deadline and ("sensors@gw1", TEMP) not in rows:
        rows = {(r[0], r[1]): r for r in _rows(browser) if len(r) > 2}
        time.sleep(0.5)
    browser.save_screenshot(str(tmp_path / "web-tab-kinds.png"))
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table thead th")]
    assert headers[-2:] == ["RSTs", "Response codes"], headers
    tally = run.ledger.tally(TEMP, "sensors@gw1")
    temp = rows[("sensors@gw1", TEMP)]
    assert temp[headers.index("Attempts")] == str(tally.attempted)
    assert temp[headers.index("RSTs")] == str(tally.rsts) and f"4.04: {tally.codes['4.04']}" in temp[-1]
    assert ("meters@gw1", "telemetry") in rows and ("all targets", f"{NOTIFY} (interval)") in rows
