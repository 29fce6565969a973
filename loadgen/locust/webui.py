"""loadgen's additions to Locust's web UI: a "DTLS/TLS" tab, a live page and its JSON.

- The tab uses Locust's own extension points (``extended_tabs`` / ``extended_tables`` in
  the template arguments, ``extended_stats`` added to each ``/stats/requests`` poll),
  so it refreshes with the rest of the UI: one row per target and kind with active
  associations, completion rate, attempts, failures, retransmissions, exact (HDR)
  percentiles and failures by error code.
- loadgen's exact figures lead: the UI opens on the tab (``/?tab=loadgen``) and a line above
  Locust's own tables says that their latencies are Locust's rounded view.
- ``/loadgen`` is a self-refreshing page with the same figures and charts of the last
  five minutes; ``/loadgen/stats.json`` its data; ``/loadgen/timeseries.csv`` the
  per-second series so far. Links to them are in the UI's "Download Data" tab.
"""

from __future__ import annotations

import io
import json
import time
from html import escape
from typing import Any

import gevent
from flask import Flask, Response, redirect, request
from locust.env import Environment
from locust.web import WebUI

from loadgen.locust.runclock import RunClock
from loadgen.report.svg import Chart, Series, line_chart
from loadgen.report.tables import kind_label
from loadgen.results.files import write_timeseries_csv
from loadgen.scenario import Scenario
from loadgen.stats.facts import HANDSHAKE, is_plain, plural
from loadgen.stats.run import RunStats

TAB_KEY = "loadgen"
TAB_TITLE = "DTLS/TLS (exact)"
#: Above Locust's own UI: which figures to trust.
BANNER = ('<div id="loadgen-banner" style="font:13px system-ui,sans-serif;padding:4px 12px;background:#fff3c4;'
          'color:#222">loadgen: the exact figures are in the <a href="./?tab=loadgen">DTLS/TLS (exact)</a> tab '
          'and on <a href="./loadgen">/loadgen</a>; Locust&#39;s Statistics and Charts are its rounded view '
          '(response times kept to whole ms below 100 ms, 2 significant digits above): use their counts, '
          'not their percentiles.</div>')
COLUMNS = [("target", "Target"), ("kind", "Kind"), ("active", "Active associations"), ("rate", "Rate /s"),
           ("attempts", "Attempts"), ("ok", "Completed"), ("failed", "Failed"), ("retrans", "Retransmits"),
           ("p50", "p50 ms"), ("p95", "p95 ms"), ("p99", "p99 ms"), ("p999", "p99.9 ms"), ("max", "Max ms"),
           ("errors", "Errors by code")]
#: Added for a run of request steps (CoAP): resets and replies by response code.
REQUEST_COLUMNS = [("rsts", "RSTs"), ("codes", "Response codes")]
#: Completion rates are measured over the last few whole seconds of the series.
RATE_WINDOW = 5


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def columns(stats: RunStats) -> list[tuple[str, str]]:
    """The tab's columns: a plain run's, and resets and response codes when the run has request kinds
    (declared when its RunStats was made: the tab's structure is set once, at install)."""
    return COLUMNS if is_plain(stats.kind_names) else COLUMNS + REQUEST_COLUMNS


class LiveView:
    """Figures for the tab and the page, read from the run's RunStats on each request."""

    def __init__(self, stats: RunStats) -> None:
        self.stats = stats
        self._rates: dict[tuple[str, str], tuple[float, int, float]] = {}  # key -> (time, completed, rate)

    def _rate(self, key: tuple[str, str], completed: int) -> float:
        """Completions per second since the previous look at least a second ago (polls come every 2 s)."""
        now = time.monotonic()
        then, before, rate = self._rates.get(key, (now, completed, 0.0))
        if now - then >= 1.0:
            rate = max(0, completed - before) / (now - then)
            self._rates[key] = (now, completed, rate)
        elif key not in self._rates:
            self._rates[key] = (now, completed, 0.0)
        return rate

    def rows(self) -> list[dict[str, Any]]:
        """One row per (target, kind) (a target's own kinds; ``group@target`` with device groups), then
        one per kind over all targets. A notification kind's percentiles are intervals: its name says so."""
        stats = self.stats
        cells = [((target, kind), stats.cell(kind, target)) for target in stats.targets
                 for kind in stats.kinds_of(target)]
        cells += [(("all targets", kind), cell) for kind, cell in stats.kinds.items()]
        out = []
        for (target, kind), cell in cells:
            pct = cell.percentiles_ms()
            active = (stats.active(None if target == "all targets" else target)) if kind == HANDSHAKE else ""
            out.append({
                "target": target, "kind": kind_label(kind), "active": active,
                "rate": f"{self._rate((target, kind), cell.completed):.1f}", "attempts": cell.attempted,
                "ok": cell.completed, "failed": cell.failed, "retrans": cell.retransmits, "p50": _ms(pct["p50"]),
                "p95": _ms(pct["p95"]), "p99": _ms(pct["p99"]), "p999": _ms(pct["p99.9"]), "max": _ms(pct["p100"]),
                "errors": ", ".join(f"{code}: {n}" for code, n in cell.failures.most_common()) or "-",
                "rsts": cell.rsts, "codes": ", ".join(f"{code}: {n}" for code, n in cell.codes.most_common()) or "-",
            })
        return out

    def data(self) -> dict[str, Any]:
        """``/loadgen/stats.json``: the table rows, totals and the last five minutes of the series."""
        rows = self.stats.rows()
        recent = [r for r in rows if r["duration"] >= 0.5][-RATE_WINDOW:]
        kinds = self.stats.kinds
        rates = {kind: (sum(r["kinds"][kind]["completed"] for r in recent) / sum(r["duration"] for r in recent))
                 if recent else 0.0 for kind in kinds}
        return {
            "active_associations": self.stats.active(),
            "users": rows[-1]["users"] if rows else 0,
            "rates_per_s": rates,
            "cpu_busiest_pct": recent[-1]["cpu_max"] if recent else 0.0,
            "totals": {kind: cell.summary(kind=kind) for kind, cell in kinds.items()},
            "rows": self.rows(),
            "series": rows[-300:],
        }

    def page(self) -> str:
        """``/loadgen``: the figures and charts, refreshing every two seconds."""
        data = self.data()
        series = data["series"]
        shown = columns(self.stats)
        head = "".join(f"<th>{escape(title)}</th>" for _, title in shown)
        body = "".join("<tr>" + "".join(f"<td>{escape(str(row[key]))}</td>" for key, _ in shown) + "</tr>"
                       for row in data["rows"])
        kinds = list(data["rates_per_s"])
        small = Chart(width=620, height=220)
        charts = [
            line_chart("Active associations and clients", [
                Series("active", [(r["second"], r["active"]) for r in series], markers=False),
                Series("clients", [(r["second"], r["users"]) for r in series], markers=False, dashed=True)],
                x_label="seconds", y_label="count", chart=small),
            line_chart("Completed per second", [
                Series(plural(kind), [(r["second"], r["kinds"][kind]["completed"] / r["duration"])
                                                    for r in series if r["duration"] >= 0.5], markers=False)
                for kind in kinds], x_label="seconds", y_label="per second", chart=Chart(width=620, height=220)),
            line_chart("p99 latency per second", [
                Series(f"{kind_label(kind)} p99", [(r["second"], r["kinds"][kind]["p99"]) for r in series],
                       markers=False) for kind in kinds], x_label="seconds", y_label="ms (log)", log_y=True,
                chart=Chart(width=620, height=220)),
        ]
        rates = data["rates_per_s"]
        per_kind = "".join(f'<span>{escape(plural(kind))}/s <b>{rate:.1f}</b></span>'
                           for kind, rate in rates.items() if kind != HANDSHAKE)
        return (
            '<!DOCTYPE html><html><head><meta charset="utf-8"><meta http-equiv="refresh" content="2">'
            "<title>loadgen: DTLS/TLS</title><style>body{font:14px system-ui,sans-serif;margin:16px}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 6px;text-align:right}"
            ".figs span{margin-right:18px}</style></head><body><h2>loadgen: DTLS/TLS live figures</h2>"
            f'<p class="figs"><span id="active">active associations <b>{data["active_associations"]}</b></span>'
            f'<span>clients <b>{data["users"]}</b></span>'
            f'<span id="handshake-rate">handshakes/s <b>{rates[HANDSHAKE]:.1f}</b></span>'
            f"{per_kind}"
            f'<span>generator CPU <b>{data["cpu_busiest_pct"]:.0f}%</b></span></p>'
            f'<table id="loadgen-stats"><tr>{head}</tr>{body}</table>{"".join(charts)}'
            '<p><a href="./">Locust UI</a> &middot; <a href="./loadgen/stats.json">stats.json</a> &middot; '
            '<a href="./loadgen/timeseries.csv">timeseries.csv</a></p></body></html>'
        )


def install(web_ui: WebUI, stats: RunStats) -> LiveView:
    """Add the tab, the page and the links to ``web_ui`` (call once, after creating it)."""
    view = LiveView(stats)
    app = web_ui.app
    assert app is not None, "the web UI has no Flask app"
    _add_tab(web_ui, columns(stats))
    _add_request_hooks(app, view)
    _add_routes(app, web_ui, view, stats)
    return view


def _add_tab(web_ui: WebUI, shown: list[tuple[str, str]]) -> None:
    """Our tab and table in Locust's UI, and links to our page and files under its downloads."""
    web_ui.template_args["extended_tabs"] = [{"title": TAB_TITLE, "key": TAB_KEY}]
    web_ui.template_args["extended_tables"] = [
        {"key": TAB_KEY, "structure": [{"key": key, "title": title} for key, title in shown]}]
    web_ui.template_args["extended_csv_files"] = [
        {"href": "./loadgen", "title": "loadgen live page: DTLS/TLS figures and charts"},
        {"href": "./loadgen/timeseries.csv", "title": "loadgen per-second time series (CSV)"},
        {"href": "./loadgen/stats.json", "title": "loadgen live figures (JSON)"}]


def _add_request_hooks(app: Flask, view: LiveView) -> None:
    """Open on our tab, show the banner, and add our rows to Locust's stats polls."""

    @app.before_request
    def open_on_exact_figures() -> Any:
        # Locust's UI opens on the tab named by ?tab=; without one, ours (the exact figures) first.
        if request.path == "/" and request.method == "GET" and not request.args:
            return redirect("./?tab=" + TAB_KEY)
        return None

    @app.after_request
    def add_loadgen_rows(response: Response) -> Response:
        if request.path == "/" and response.status_code == 200 and response.mimetype == "text/html":
            html = response.get_data(as_text=True)
            response.set_data(html.replace('<div id="root">', BANNER + '<div id="root">', 1))
            return response
        # Locust's UI polls /stats/requests every 2 s; our rows ride along as extended_stats.
        if request.path != "/stats/requests" or response.status_code != 200 or not response.is_json:
            return response
        payload = response.get_json()
        payload["extended_stats"] = [*payload.get("extended_stats", []), {"key": TAB_KEY, "data": view.rows()}]
        response.set_data(json.dumps(payload))
        return response


def _add_routes(app: Flask, web_ui: WebUI, view: LiveView, stats: RunStats) -> None:
    """Our page, its figures (JSON) and the per-second series (CSV), behind Locust's login if it has one."""

    @app.route("/loadgen")
    @web_ui.auth_required_if_enabled  # type: ignore[untyped-decorator]  # locust is untyped
    def loadgen_page() -> Response:
        return Response(view.page(), mimetype="text/html")

    @app.route("/loadgen/stats.json")
    @web_ui.auth_required_if_enabled  # type: ignore[untyped-decorator]  # locust is untyped
    def loadgen_stats() -> Response:
        return Response(json.dumps(view.data()), mimetype="application/json")

    @app.route("/loadgen/timeseries.csv")
    @web_ui.auth_required_if_enabled  # type: ignore[untyped-decorator]  # locust is untyped
    def loadgen_csv() -> Response:
        buffer = io.StringIO()
        write_timeseries_csv(stats.rows(), buffer)
        return Response(buffer.getvalue(), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=loadgen-timeseries.csv"})


class WebRunControl(RunClock):
    """Web mode as the scenario says: its run time ends each Start (Locust's form may set its own;
    stages end by themselves), the Host field shows the scenario's targets (Locust ignores it for
    our users; empty, it asked "please provide a host"), and the time users ran is measured
    (:class:`~loadgen.locust.runclock.RunClock`), so rates are not averaged over the idle time before Start
    and after Stop."""

    def __init__(self, env: Environment, web_ui: WebUI, scenario: Scenario, where: str) -> None:
        super().__init__(env)
        self._env = env
        self._web_ui = web_ui
        self._run_time = None if scenario.stages else scenario.run_time
        self._timer: gevent.Greenlet | None = None
        env.host = where
        if env.parsed_options is not None and self._run_time:
            env.parsed_options.run_time = max(1, round(self._run_time))  # the form's default
        env.events.test_start.add_listener(self._start_timer)
        env.events.test_stop.add_listener(self._cancel_timer)

    def _start_timer(self, **_: Any) -> None:
        if self._run_time and self._timer is None:
            self._timer = gevent.spawn(self._end_after, self._run_time)

    def _cancel_timer(self, **_: Any) -> None:
        timer, self._timer = self._timer, None
        if timer is not None and timer is not gevent.getcurrent():
            timer.kill(block=False)

    def _end_after(self, run_time: float) -> None:
        grace = min(0.5, run_time)
        gevent.sleep(grace)  # Locust's /swarm handler sets its own timer right after starting
        form_timer = getattr(self._web_ui, "_run_time_greenlet", None)
        if form_timer is not None and not form_timer.dead:
            self._timer = None
            return  # the run time typed in the form rules
        gevent.sleep(max(0.0, run_time - grace))
        self._timer = None
        runner = self._env.runner
        if runner is not None:
            runner.stop()


def web_run_control(env: Environment, web_ui: WebUI, scenario: Scenario, where: str) -> WebRunControl:
    """Apply the scenario's run time and targets to ``web_ui`` and measure the time users ran."""
    return WebRunControl(env, web_ui, scenario, where)
