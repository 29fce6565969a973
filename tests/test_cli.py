"""The ``loadgen`` command line as a user meets it (issue 12: "Command line", "Exit codes", defect 11).

Exit statuses are those of the README's "Exit status" table; runs go against a silent UDP
socket this test holds (every handshake times out) or the built-in server, on loopback.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import tomllib
from pathlib import Path

import pytest
from procs import Procs, free_port
from servers import loadgen_env

from loadgen.cli.argtypes import duration
from loadgen.cli.help import parsers
from loadgen.cli.keys import DEMO_KEY_NOTICE
from loadgen.cli.parser import build_parser
from loadgen.cli.run import with_load_options
from loadgen.protocol.errors import ConfigError
from loadgen.scenario import parse_scenario
from loadgen.stats.cells import Cell, latency_us, new_histogram
from loadgen.stats.facts import HANDSHAKE, PING
from loadgen.stats.progress import Progress
from loadgen.stats.run import RunStats
from loadgen.stats.sink import SecondDelta

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
KEY_HEX = "5a17c0ffee0ddba11deadbeef0123456"


def loadgen(*args: str, cwd: Path = ROOT, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loadgen", *map(str, args)], cwd=cwd, env=loadgen_env(),
                          capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


# -- help, version, no command --------------------------------------------------------------


def test_every_option_has_help_that_states_its_default() -> None:
    """Walks every parser: each option and argument has help text, and each option that has a
    default value (not None, not a switch) says it."""
    missing, undefaulted = [], []
    for parser in parsers(build_parser()):
        formatter = parser._get_formatter()
        for action in parser._actions:
            if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction,
                                                                       argparse._SubParsersAction)):
                continue
            text = formatter._get_help_string(action) or ""
            where = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not text.strip():
                missing.append(where)
            elif action.option_strings and action.nargs != 0 and action.default is not None and (
                    "default" not in text):
                undefaulted.append(where)
        assert parser.format_help()  # every help string formats (a stray % would raise here)
    assert not missing, f"options without help: {missing}"
    assert not undefaulted, f"options whose help hides their default: {undefaulted}"


def test_help_shows_a_default_once() -> None:
    help_text = " ".join(loadgen("serve", "dtls", "--help").stdout.split())
    assert "(default 60)" in help_text and "(default 60) (default" not in help_text
    assert "--port PORT UDP port; 0 picks a free port (printed) (default: 5684)" in help_text


def test_version_is_the_packages() -> None:
    expected = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    result = loadgen("--version")
    assert (result.returncode, result.stdout.strip()) == (0, f"loadgen {expected}"), result


def test_loadgen_alone_lists_every_command_with_an_example_and_exits_2() -> None:
    result = loadgen()
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    for command in ("serve", "run", "capacity", "report", "locustfile", "validate", "impair"):
        assert any(line.split()[:1] == [command] and len(line.split()) > 1 for line in result.stderr.splitlines()), (
            command, result.stderr)
        assert f"loadgen {command}" in result.stderr or command == "locustfile", (command, result.stderr)
    assert "examples:" in result.stderr


# -- exit statuses --------------------------------------------------------------------------


@pytest.mark.parametrize("args", [("run",), ("run", "x.yaml", "--bogus"), ("serve",), ("run", "x.yaml", "-u", "0"),
                                  ("run", "x.yaml", "-t", "soon"), ("run", "x.yaml", "--exit-code-on-error", "256")],
                         ids=["missing-scenario", "unknown-option", "missing-protocol", "zero-users", "bad-time",
                              "bad-exit-status"])
def test_usage_errors_exit_2(args: tuple[str, ...]) -> None:
    result = loadgen(*args)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr and "usage:" in result.stderr


def test_bad_scenario_exits_2(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nclients: {count: 0}\nrun_time: 1s\n")
    for command in ("run", "validate", "capacity"):
        result = loadgen(command, "bad.yaml", cwd=tmp_path)
        assert result.returncode == 2, (command, result)
        assert result.stderr.startswith("loadgen: bad.yaml:2: clients.count"), (command, result.stderr)


def silent_scenario(tmp_path: Path, port: int, extra: str = "") -> Path:
    """50 clients for a minute at a port nobody answers (the test's -u and -t cut it down)."""
    path = tmp_path / "silent.yaml"
    path.write_text(textwrap.dedent(f"""\
        name: silent
        targets: [{{name: silent, host: 127.0.0.1, port: {port}}}]
        clients: {{count: 50, spawn_rate: 50}}
        run_time: 1m
        dtls: {{handshake_timeout: 1s}}
        reconnect: {{policy: never}}
        psk: {{identity: "device-{{n}}", key: "{KEY_HEX}"}}
        outputs: {{results_dir: results, report: false}}
        """) + extra)
    return path


def summary_of(tmp_path: Path) -> dict:
    [run_dir] = (tmp_path / "results").iterdir()
    return json.loads((run_dir / "summary.json").read_text())


@pytest.mark.parametrize(("options", "status"), [((), 1), (("--exit-code-on-error", "3"), 3),
                                                 (("--exit-code-on-error", "0"), 0)],
                         ids=["default-1", "exit-code-3", "exit-code-0"])
def test_failed_run_without_thresholds_exits_with_exit_code_on_error(tmp_path: Path, options: tuple[str, ...],
                                                                     status: int) -> None:
    """Also -u and -t: 2 clients for 2 s, not the scenario's 50 for a minute."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:  # held: nobody else gets the port
        silent.bind(("127.0.0.1", 0))
        scenario = silent_scenario(tmp_path, silent.getsockname()[1])
        started = time.monotonic()
        result = loadgen("run", scenario, "-u", "2", "-r", "10", "-t", "2s", *options, cwd=tmp_path)
        took = time.monotonic() - started
    assert result.returncode == status, result
    summary = summary_of(tmp_path)
    assert summary["handshake"]["attempted"] == 2 and summary["handshake"]["failed"] == 2, summary["handshake"]
    assert summary["elapsed_s"] < 10 and took < 40, (summary["elapsed_s"], took)


def test_thresholds_decide_over_exit_code_on_error(tmp_path: Path) -> None:
    """A run whose every handshake failed, with a threshold that allows it: exit 0 whatever
    --exit-code-on-error says (it applies to runs without thresholds only)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        scenario = silent_scenario(tmp_path, silent.getsockname()[1], "thresholds: {error_ratio: 1.0}\n")
        result = loadgen("run", scenario, "-u", "1", "-t", "2s", "--exit-code-on-error", "3", cwd=tmp_path)
    assert result.returncode == 0, result


# -- -u / -r / -t ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("30s", 30), ("500ms", 0.5), ("2m", 120), ("1.5h", 5400),
                                               ("1h30m", 5400), ("2m30s", 150), ("1h0m10s", 3610)])
def test_run_time_takes_locusts_syntax_and_the_scenarios(text: str, seconds: float) -> None:
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1x", "m", "0", "0s", "-5s", "1h 30m", "nan", "inf"])
def test_run_time_refuses_what_is_not_a_duration(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def args_for(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["run", "s.yaml", *argv])


def test_users_spawn_rate_and_run_time_override_the_scenario(tmp_path: Path) -> None:
    scenario = parse_scenario(f"name: s\nclients: {{count: 10, spawn_rate: 5}}\nrun_time: 1m\n"
                              f"psk: {{identity: d, key: '{KEY_HEX}'}}\n", str(tmp_path / "s.yaml"))
    changed = with_load_options(scenario, args_for("-u", "300", "-r", "25", "-t", "1h30m"))
    assert (changed.clients.count, changed.clients.spawn_rate, changed.run_time) == (300, 25.0, 5400.0)
    only_users = with_load_options(scenario, args_for("--users", "7"))
    assert (only_users.clients.count, only_users.clients.spawn_rate, only_users.run_time) == (7, 5.0, 60.0)
    assert with_load_options(scenario, args_for()) is scenario


def test_load_options_are_refused_with_stages(tmp_path: Path) -> None:
    scenario = parse_scenario(f"name: s\nstages: [{{duration: 5s, clients: 10}}]\n"
                              f"psk: {{identity: d, key: '{KEY_HEX}'}}\n", str(tmp_path / "s.yaml"))
    with pytest.raises(ConfigError, match=r"-u/--users, -t/--run-time: s.yaml has stages"):
        with_load_options(scenario, args_for("-u", "5", "-t", "3s"))


def test_load_options_with_stages_exit_2_on_the_command_line(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(f"name: s\nstages: [{{duration: 5s, clients: 10}}]\n"
                                     f"psk: {{identity: d, key: '{KEY_HEX}'}}\n")
    result = loadgen("run", "s.yaml", "-r", "5", cwd=tmp_path)
    assert result.returncode == 2, result
    assert result.stderr.startswith("loadgen: -r/--spawn-rate: s.yaml has stages"), result.stderr
    assert not (tmp_path / "results").exists()


# -- serve: key source, limits, throttles (defect 11) --------------------------------------------


def serve_lines(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    """Start ``loadgen serve ARGS --port 0``, read its first three lines (listening, keys, throttles),
    stop it; its stdout lines and stderr."""
    out_path, err_path = tmp_path / "serve.out", tmp_path / "serve.err"
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "loadgen", "serve", *args, "--host", "127.0.0.1", "--port",
                                 "0"], cwd=tmp_path, env=loadgen_env(), stdin=subprocess.DEVNULL, stdout=out,
                                stderr=err)
    try:
        deadline = time.monotonic() + 20
        while out_path.read_text().count("\n") < 3 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    return out_path.read_text().splitlines(), err_path.read_text()


@pytest.mark.parametrize("protocol", ["dtls", "tls"])
def test_serve_without_a_key_option_says_loudly_it_uses_the_demo_key(tmp_path: Path, protocol: str) -> None:
    lines, err = serve_lines(tmp_path, protocol)
    assert len(lines) >= 3 and " listening on 127.0.0.1:" in lines[0] and "max " in lines[0], lines
    assert lines[1].startswith("loadgen: keys: the PUBLIC DEMO KEY"), lines
    assert DEMO_KEY_NOTICE in err
    assert lines[2].startswith("loadgen: throttles: none"), lines
    assert "000102030405060708090a0b0c0d0e0f" not in "\n".join(lines) + err


def test_serve_names_its_key_file_never_the_key(tmp_path: Path) -> None:
    key_file = tmp_path / "gateway.key"
    key_file.write_text(KEY_HEX + "\n")
    key_file.chmod(0o600)
    lines, err = serve_lines(tmp_path, "dtls", "--psk-file", str(key_file), "--max-handshake-rate", "200")
    assert lines[1] == f"loadgen: keys: one key for every identity, from the file {key_file} (--psk-file)", lines
    assert lines[2].startswith("loadgen: throttles: at most 200 handshakes/s"), lines
    assert "DEMO" not in "\n".join(lines) + err
    assert KEY_HEX not in "\n".join(lines) + err


def test_serve_names_the_environment_variable_and_the_scenario(tmp_path: Path) -> None:
    lines, _ = serve_lines(tmp_path, "tls", "--scenario", str(ROOT / "scenarios" / "tls.yaml"))
    assert lines[1] == f"loadgen: keys: the psk section of {ROOT / 'scenarios' / 'tls.yaml'} (--scenario)", lines


def test_tls_scenario_says_how_to_start_its_server_and_matches_the_demo_key() -> None:
    """Defect 11: `loadgen serve tls` then `loadgen run scenarios/tls.yaml` failed every handshake
    (psk-key-mismatch: the scenario had a key of its own and said nothing of its server)."""
    from loadgen.cli.keys import QUICKSTART_KEY
    from loadgen.scenario import load_scenario

    text = (ROOT / "scenarios" / "tls.yaml").read_text()
    assert "#   loadgen serve tls --scenario scenarios/tls.yaml\n" in text
    psk = load_scenario(ROOT / "scenarios" / "tls.yaml").psk
    assert psk is not None and psk.store.key_for(b"client-0") == QUICKSTART_KEY


# -- progress lines -------------------------------------------------------------------------------


def second(index: int, handshakes_ms: list[float], pings_ms: list[float], failed_pings: int = 0) -> SecondDelta:
    """One process's second: completed handshakes and pings with these latencies (ms)."""
    cells = {}
    for kind, latencies in ((HANDSHAKE, handshakes_ms), (PING, pings_ms)):
        cell = Cell()
        for ms in latencies:
            cell.attempted += 1
            cell.completed += 1
            if cell.histogram is None:
                cell.histogram = new_histogram()
            cell.histogram.record_value(latency_us(ms / 1000))
        cells[(kind, "gw")] = cell
    if failed_pings:
        cells[(PING, "gw")].attempted += failed_pings
        cells[(PING, "gw")].failures["ping-timeout"] += failed_pings
    return SecondDelta(index, 1000.0 + index, 1.0, 0.0, 10, cells)


def test_progress_lines_show_the_last_intervals_rates_and_p99() -> None:
    """Build item: progress lines had running totals only (Locust's, rounded); now each says what
    the last interval did: rates and p99 from loadgen's exact per-second figures."""
    stats = RunStats()
    progress = Progress(stats)
    assert progress.line(0.4, 0).endswith("now: - handshakes/s (p99 -), - pings/s (p99 -)")
    stats.apply(second(0, [2.0] * 10, []))
    stats.apply(second(1, [], [float(ms) for ms in range(1, 101)], failed_pings=3))
    line = progress.line(2.0, 10)
    assert re.match(r"^\[\s+2s\] clients\s+10\s+handshakes\s+10 ok\s+0 failed\s+pings\s+100 ok\s+3 failed\s+now: ",
                    line), line
    assert line.endswith("now: 5.0 handshakes/s (p99 2 ms), 50.0 pings/s (p99 99 ms)"), line
    stats.apply(second(2, [], [0.5] * 20))
    line = progress.line(4.0, 10)  # only the newest second: totals grow, the rates are its own
    assert "pings      120 ok" in line and line.endswith("now: 0.0 handshakes/s (p99 -), 20.0 pings/s (p99 0.5 ms)")


def test_a_masters_progress_leaves_the_newest_second_for_later() -> None:
    """On a master a second's shares come from each worker in turn: the newest is not complete yet."""
    stats = RunStats()
    progress = Progress(stats, hold_newest=True)
    stats.apply(second(0, [1.0] * 4, []))
    stats.apply(second(1, [1.0] * 2, []))
    assert progress.line(2.0, 4).endswith("now: 4.0 handshakes/s (p99 1 ms), 0.0 pings/s (p99 -)")
    stats.apply(second(1, [1.0] * 2, []))  # the second worker's share of second 1
    stats.apply(second(2, [], []))
    assert progress.line(4.0, 4).endswith("now: 4.0 handshakes/s (p99 1 ms), 0.0 pings/s (p99 -)")


def test_a_runs_progress_lines_show_current_rates(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(f"name: s\nclients: {{count: 5, spawn_rate: 50}}\nrun_time: 5s\n"
                                     f"ping: {{interval: 200ms, expect: echo}}\n"
                                     f"psk: {{identity: 'd-{{n}}', key: '{KEY_HEX}'}}\n")
    result = loadgen("run", "s.yaml", cwd=tmp_path)
    assert result.returncode == 0, result
    now = re.compile(r"now: \S+ handshakes/s \(p99 [^)]+\), ([\d.]+) pings/s \(p99 [\d.]+ ms\)$", re.M)
    rates = [float(m[1]) for m in now.finditer(result.stdout)]
    assert rates and 10 <= rates[-1] <= 40, result.stdout  # 5 clients, 5 pings/s each


def test_a_master_whose_workers_never_connect_exits_2_without_a_traceback(tmp_path: Path, procs: Procs) -> None:
    """Ctrl-C while the master waits for its workers: one line naming how many connected, exit 2, and
    no empty results directory (it raised RuntimeError with a traceback and exited 1, a failed run's status)."""

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        scenario = silent_scenario(tmp_path, silent.getsockname()[1])
        master = procs.loadgen("run", scenario, "--master", "--expect-workers", "1", "--master-port", free_port(),
                               label="master")
        master.wait_for(r"loadgen: running 'silent'")
        master.signal_group(signal.SIGINT)
        status = master.wait(30)
    assert status == 2, master.describe()
    assert "Traceback" not in master.stderr, master.describe()
    assert "0 of 1 had connected; nothing was run" in master.stderr, master.describe()
    assert not any((tmp_path / "results").glob("*")), list((tmp_path / "results").glob("*"))
