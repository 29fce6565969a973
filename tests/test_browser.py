"""The report and the web UI tab in a real headless browser (Debian's chromium + chromium-driver, via selenium).

Skipped, with the reason, when chromium, chromedriver or selenium is missing; CI
installs them (.ci/run). The browser never leaves loopback: the report is a local file
with no links out, the web UI is on 127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from procs import Procs, child_env, free_port
from servers import start_loadgen_server

pytestmark = pytest.mark.timeout(180)

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.action_chains import ActionChains
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


# -- the report of each kind of run ---------------------------------------------------------

#: Raw Python (or JSON) structures a reader must never see: empty containers, None, reprs.
RAW = re.compile(r"\{\}|\[\]|\bNone\b|\{'|\['|\{\"|\[\"|': ")
#: A4 at 96 px per inch, less 12 mm margins each side (the report's @page): the printable width in px.
A4_WIDTH = round((210 - 24) / 25.4 * 96)
#: Every panel a report can have (data-panel); each test names those its run must show.
ALL_PANELS = {"throughput-vs-load", "latency-per-step", "throughput", "latency handshake", "latency ping", "active",
              "cpu", "errors", "failures", "steps", "targets"}


@dataclass
class Report:
    """A real short run's results directory, its summary and the target it ran against."""

    dir: Path
    summary: dict[str, Any]
    target: str  # "gw = 127.0.0.1:PORT (DTLS)"


@pytest.fixture(scope="module")
def reports(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Report]]:
    """One run per kind against the reference server (``loadgen serve dtls``), each a few seconds:
    churn, steady, and stepped against a server that answers at most 40 pings/s (its later steps
    are over capacity, so the steps table has health reasons)."""
    base = tmp_path_factory.mktemp("report-runs")
    procs = Procs(base)
    servers = [start_loadgen_server(key_hex=KEY_HEX, workdir=base / "server"),
               start_loadgen_server("--max-ping-rate", "40", key_hex=KEY_HEX, workdir=base / "throttled")]
    plain, throttled = servers
    runs = {
        "churn": (plain, "clients: {count: 5, spawn_rate: 50}\nrun_time: 4s\n", ["--workload", "churn",
                                                                                 "--period", "0.5"]),
        "steady": (plain, "clients: {count: 5, spawn_rate: 50}\nrun_time: 4s\nping: {interval: 300ms, timeout: 3s}\n",
                   []),
        "stepped": (throttled, "stages:\n" + "".join(f"  - {{duration: 3s, clients: {n}, spawn_rate: 50}}\n"
                                                     for n in (5, 10, 15)) + "ping: {interval: 200ms}\n", []),
    }
    try:
        out = {}
        for name, (server, body, args) in runs.items():
            host, port = server.address
            path = write_scenario(base, name, f"targets: [{{name: gw, host: {host}, port: {port}}}]\n" + body)
            run = procs.loadgen("run", path, *args, label=name)
            assert run.wait(90) in (0, 1), run.describe()  # 1: a failed attempt (the steady run asserts none)
            (results,) = (base / "results").glob(f"*-{name}")
            out[name] = Report(results, json.loads((results / "summary.json").read_text()),
                               f"gw = {host}:{port} (DTLS)")
        yield out
    finally:
        procs.cleanup()
        for server in servers:
            server.stop()


def open_report(browser: Any, report: Report, tmp_path: Path, name: str) -> set[str]:
    """Open the report, write a full-page screenshot under ``tmp_path``, check what every report must
    have; returns the names of the panels it shows."""
    browser.get((report.dir / "report.html").as_uri())
    browser.find_element(By.CSS_SELECTOR, ".tchart .uplot")  # the charts were drawn
    height = browser.execute_script("return document.documentElement.scrollHeight")
    shot = browser.execute_cdp_cmd("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                              "clip": {"x": 0, "y": 0, "width": 1280,
                                                                       "height": height, "scale": 1}})
    (tmp_path / f"report-{name}.png").write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {tmp_path / f'report-{name}.png'}")
    html = (report.dir / "report.html").read_text()
    assert KEY_HEX not in html and KEY_HEX not in browser.page_source  # the run's key never reaches the page
    assert browser.find_element(By.ID, "verdict").text == report.summary["analysis"]["verdict"]
    word = {"passed": "PASS", "failed": "FAIL", "interrupted": "INTERRUPTED"}[report.summary["outcome"]]
    assert browser.find_element(By.ID, "outcome").text == word
    text = browser.find_element(By.TAG_NAME, "body").text
    titles = browser.execute_script("return [...document.querySelectorAll('[title]')].map(e => e.title).join(' ')")
    assert not RAW.search(text + titles), RAW.search(text + titles)
    assert report.target in text
    return set(browser.execute_script(
        "return [...document.querySelectorAll('[data-panel]')].map(e => e.dataset.panel)"))


def hover_reads_out(browser: Any, panel: str) -> dict[str, str]:
    """Move the mouse over the middle of a time-series chart; returns its legend's read-out per series."""
    chart = browser.find_element(By.CSS_SELECTOR, f'.tchart[data-panel="{panel}"]')
    browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", chart)
    over = chart.find_element(By.CSS_SELECTOR, ".u-over")
    ActionChains(browser).move_to_element_with_offset(over, 0, 0).perform()  # the centre
    return dict(browser.execute_script(
        "return [...arguments[0].querySelectorAll('.u-legend .u-series')].map(s => ["
        "s.querySelector('.u-label').textContent, (s.querySelector('.u-value') || {}).textContent || ''])", chart))


def assert_prints_on_a4(browser: Any, tmp_path: Path, name: str) -> None:
    """Laid out for print at A4's printable width, no table, chart or text runs past the page; and
    Chromium prints it to an A4 PDF."""
    browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": "print"})
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": A4_WIDTH, "height": 1000,
                                                                  "deviceScaleFactor": 1, "mobile": False})
    try:
        wide = browser.execute_script(
            "return [...document.querySelectorAll('table, canvas, svg.chart, .uplot, p, dl')]"
            ".filter(e => e.getBoundingClientRect().right > arguments[0] + 1)"
            ".map(e => e.tagName + ' ' + Math.round(e.getBoundingClientRect().right))", A4_WIDTH)
        assert not wide, wide
        assert browser.execute_script("return document.documentElement.scrollWidth") <= A4_WIDTH
        pdf = browser.execute_cdp_cmd("Page.printToPDF", {"paperWidth": 8.27, "paperHeight": 11.69})
        data = base64.b64decode(pdf["data"])
        (tmp_path / f"report-{name}.pdf").write_bytes(data)
        assert data.startswith(b"%PDF") and data.count(b"/Type /Page") >= 2
    finally:
        browser.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        browser.execute_cdp_cmd("Emulation.setEmulatedMedia", {"media": ""})


def test_steady_report_shows_its_panels_reads_out_on_hover_and_zooms(reports: dict[str, Report], tmp_path: Path,
                                                                     browser: Any) -> None:
    report = reports["steady"]
    panels = open_report(browser, report, tmp_path, "steady")
    failed = any(report.summary[kind]["failed"] for kind in ("handshake", "ping"))
    assert not failed, report.summary  # 5 clients, a 3 s ping timeout on loopback
    assert panels == {"throughput", "latency handshake", "latency ping", "active", "cpu", "targets"}, panels
    assert "No failed attempts." in browser.find_element(By.TAG_NAME, "body").text
    header = browser.find_element(By.CSS_SELECTOR, "dl.run").text
    assert "steady: each client connects once, then pings every 0.3 s" in header
    readout = hover_reads_out(browser, "throughput")
    assert re.fullmatch(r"\d+(\.\d+)?", readout.get("seconds", "")), readout  # the second under the cursor
    assert re.fullmatch(r"\d+(\.\d+)? /s", readout.get("pings/s", "")), readout
    # Handshakes happen at the start only: their panel covers those seconds, the ping panel the whole run.
    lengths = browser.execute_script(
        "return ['latency handshake', 'latency ping'].map(p => document.querySelector("
        "`.tchart[data-panel='${p}']`).lgPlot.data[0].length)")
    assert lengths[0] < lengths[1], lengths
    # Drag across the ping chart: its x axis zooms in; a double-click shows the whole run again.
    chart = browser.find_element(By.CSS_SELECTOR, '.tchart[data-panel="latency ping"]')
    over = chart.find_element(By.CSS_SELECTOR, ".u-over")
    scale = "return arguments[0].lgPlot.scales.x"
    whole = browser.execute_script(scale, chart)
    width = over.size["width"]
    ActionChains(browser).move_to_element_with_offset(over, -width // 4, 0).click_and_hold() \
        .move_by_offset(width // 4, 0).release().perform()
    zoomed = browser.execute_script(scale, chart)
    assert whole["min"] < zoomed["min"] < zoomed["max"] < whole["max"], (whole, zoomed)
    ActionChains(browser).double_click(over).perform()
    assert browser.execute_script(scale, chart) == whole
    assert_prints_on_a4(browser, tmp_path, "steady")


def test_churn_report_has_no_ping_panels_or_rows(reports: dict[str, Report], tmp_path: Path, browser: Any) -> None:
    report = reports["churn"]
    panels = open_report(browser, report, tmp_path, "churn")
    failures = {"errors", "failures"} & panels
    assert panels - failures == {"throughput", "latency handshake", "active", "cpu", "targets"}, panels
    assert bool(failures) == bool(report.summary["handshake"]["failed"] or report.summary["handshake"]["retransmits"])
    assert "churn: each client handshakes every 0.5 s, then closes" in browser.find_element(By.CSS_SELECTOR,
                                                                                           "dl.run").text
    kinds = [tr.find_elements(By.TAG_NAME, "td")[1].text for tr in
             browser.find_elements(By.CSS_SELECTOR, '[data-panel="targets"] tr')[1:]]
    assert kinds == ["handshake"], kinds
    legends = browser.execute_script("return [...document.querySelectorAll('.tchart')].flatMap("
                                     "c => c.lgPlot.series.map(s => s.label))")
    assert "handshakes/s" in legends and not [label for label in legends if "ping" in label], legends
    readout = hover_reads_out(browser, "latency handshake")
    assert any(re.fullmatch(r"\d+(\.\d+)? ms", v) for k, v in readout.items() if k != "seconds"), readout


def test_stepped_report_shows_load_panels_and_tagged_step_health(reports: dict[str, Report], tmp_path: Path,
                                                                 browser: Any) -> None:
    report = reports["stepped"]
    panels = open_report(browser, report, tmp_path, "stepped")
    assert {"throughput-vs-load", "latency-per-step", "steps", "throughput", "latency handshake", "latency ping",
            "active", "cpu", "targets"} <= panels <= ALL_PANELS, panels
    # Per step: three points on the throughput-vs-load line (SVG: x is the offered load, not time).
    points = browser.find_elements(By.CSS_SELECTOR, '[data-panel="throughput-vs-load"] circle')
    assert len(points) >= 3 and all(p.size["width"] > 0 for p in points)
    rows = browser.find_elements(By.CSS_SELECTOR, '[data-panel="steps"] tr')[1:]
    assert [r.find_elements(By.TAG_NAME, "td")[1].text for r in rows] == ["5", "10", "15"]
    # The server answers 40 pings/s: the later steps are unhealthy, each reason a short tag with its sentence.
    tags = browser.find_elements(By.CSS_SELECTOR, '[data-panel="steps"] .tag')
    assert tags, browser.find_element(By.CSS_SELECTOR, '[data-panel="steps"]').text
    for tag in tags:
        title = tag.get_attribute("title")
        assert len(tag.text) <= 16 and len(title) > len(tag.text), (tag.text, title)
    health = {h["step"]: h for h in report.summary["analysis"]["knee"]["health"]}
    assert sum(len(h["reasons"]) for h in health.values()) == len(tags)
    readout = hover_reads_out(browser, "latency ping")
    assert any(re.fullmatch(r"\d+(\.\d+)? ms", v) for k, v in readout.items() if k != "seconds"), readout
    assert_prints_on_a4(browser, tmp_path, "stepped")


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
    drawn = set(browser.execute_script("return [...document.querySelectorAll('.tchart')].flatMap("
                                       "c => c.lgPlot.series.map(s => s.label))"))
    assert {f"{TEMP}/s", "telemetry/s", f"{TEMP} p99", f"{NOTIFY} p99"} <= drawn, drawn


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
