"""The top of a run's report: its name, outcome, targets, workload and load, then the verdict sentence."""

from __future__ import annotations

import ast
import re
from html import escape
from typing import Any

from loadgen.report.panels import View
from loadgen.report.params import text

#: ``summary["outcome"]`` -> the verdict's first word.
OUTCOMES = {"passed": "PASS", "failed": "FAIL", "interrupted": "INTERRUPTED"}
# The built-in server's last line ends in its failures as a dict repr: "0 failures {}".
_FAILURES = re.compile(r"(\d+) failures (\{.*\})\s*$")


def outcome(summary: dict[str, Any]) -> str:
    """``passed``, ``failed`` or ``interrupted``; a summary written before ``outcome`` existed is read
    from its verdict's first word."""
    if summary.get("outcome") in OUTCOMES:
        return str(summary["outcome"])
    word = str((summary.get("analysis") or {}).get("verdict", "")).split(":", 1)[0]
    return {v: k for k, v in OUTCOMES.items()}.get(word, "failed" if summary.get("interrupted") else "passed")


def header(summary: dict[str, Any], scenario: dict[str, Any], view: View) -> list[str]:
    """The title with the outcome, a list of what ran (targets, workload, load, when), the verdict."""
    analysis = summary.get("analysis") or {}
    result = outcome(summary)
    facts = [("targets", _targets(summary, scenario)), ("workload", _workload(scenario, analysis, view)),
             ("load", _load(scenario)),
             ("ran", f"{_started(summary)} for {summary.get('elapsed_s', 0):.0f} s")]
    items = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts if v)
    generator_bound = (view.knee or {}).get("limited_by") == "generator"
    return [
        f'<h1>loadgen report: {escape(str(summary.get("scenario", "run")))} '
        f'<span id="outcome" class="outcome {result}">{OUTCOMES[result]}</span></h1>',
        f'<dl class="run">{items}</dl>',
        f'<p id="verdict" class="verdict{" fail" if result != "passed" or generator_bound else ""}">'
        f'{escape(str(analysis.get("verdict") or "No verdict recorded."))}</p>',
    ]


def _started(summary: dict[str, Any]) -> str:
    started = str(summary.get("started_utc") or "")
    return started.replace("T", " ").removesuffix("+00:00") + " UTC" if started else "start not recorded"


def _targets(summary: dict[str, Any], scenario: dict[str, Any]) -> str:
    """``name = host:port (PROTOCOL)`` of each target as run (the built-in server with its real port);
    from the scenario for runs saved before ``endpoints`` was written."""
    targets = summary.get("endpoints") or scenario.get("targets")
    if targets:
        return ", ".join(f"{t['name']} = {_address(t)} ({str(t.get('protocol', 'dtls')).upper()})"
                         for t in targets)
    if scenario:
        return "builtin = 127.0.0.1, a port picked at start (DTLS): the built-in reference server"
    return ""


def _address(target: dict[str, Any]) -> str:
    host = str(target["host"])
    return f"[{host}]:{target['port']}" if ":" in host else f"{host}:{target['port']}"


def _workload(scenario: dict[str, Any], analysis: dict[str, Any], view: View) -> str:
    if view.churn:
        return f"churn: each client handshakes every {analysis.get('period', 1.0):g} s, then closes"
    groups = [g.get("name", "") for g in scenario.get("devices") or []]
    if groups:
        return f"steady: device groups {', '.join(groups)}, each with its own traffic"
    if scenario.get("requests"):
        return "steady: each client connects once, then runs its request steps: " + ", ".join(
            str(step.get("name")) for step in scenario["requests"])
    ping = scenario.get("ping") or {}
    every = f" every {text(ping['interval'], 'interval')}" if ping.get("interval") else ""
    return f"steady: each client connects once, then pings{every}" if scenario else "steady"


def _load(scenario: dict[str, Any]) -> str:
    stages = scenario.get("stages") or []
    if stages:
        return f"{len(stages)} stages: " + ", ".join(f"{s['clients']}" for s in stages) + " clients, " + \
            f"{sum(s['duration'] for s in stages):g} s"
    clients = scenario.get("clients") or {}
    if not clients:
        return ""
    return f"{clients.get('count')} clients started at {clients.get('spawn_rate', 0):g}/s, " \
           f"run time {text(scenario.get('run_time'), 'run_time')}"


def server_line(summary: dict[str, Any]) -> str:
    """The built-in server's last line, its failures written out ("0 failures", "3 failures: ...")."""
    line = str(summary.get("server") or "").removeprefix("loadgen: ")
    match = _FAILURES.search(line)
    if match is None:
        return line
    try:
        failures = ast.literal_eval(match[2])
    except (ValueError, SyntaxError):
        return line[:match.start(2)].rstrip()
    detail = ", ".join(f"{code} {n}" for code, n in sorted(failures.items())) if isinstance(failures, dict) else ""
    return line[:match.start()] + f"{match[1]} failures" + (f": {detail}" if detail else "")
