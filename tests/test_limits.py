"""Issue 12, defect 1: the open-file limit and local ports, before and during a run.

Before a run ``loadgen run`` raises the soft open-file limit to the hard one and, when the
scenario's sockets still do not fit, exits 2 with the numbers and the fix. During a run a
client that gets no socket (EMFILE, ENFILE, EADDRNOTAVAIL, EADDRINUSE) fails its handshake
attempt as ``socket-error``: counted once, summed up in one log line every 10 s, never a
traceback, and the device waits its reconnect delay before trying again.
"""

from __future__ import annotations

import _socket
import errno
import json
import logging
import os
import resource
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gevent
import pytest

from loadgen.locust import limits
from loadgen.locust.limits import HEADROOM, ShortageLog, plan, problems
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import SocketError, SocketsExhausted, socket_error
from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context
from loadgen.scenario import load_scenario
from loadgen.stats.facts import HANDSHAKE, Finished, Started
from loadgen.stats.sink import StatsSink
from loadgen.transport import dtls_association as association
from loadgen.transport import fds
from loadgen.transport.dtls_association import DtlsAssociation
from loadgen.transport.tls_association import TlsAssociation

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parent.parent
KEY_HEX = "5a17c0ffee0ddba11deadbeef0123456"
KEY = Secret(bytes.fromhex(KEY_HEX))


def write_scenario(tmp_path: Path, name: str, body: str) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\n" + textwrap.dedent(body).strip("\n") + "\n" + textwrap.dedent(f"""\
        psk:
          identity: "device-{{n:05d}}"
          key: "{KEY_HEX}"
        outputs:
          results_dir: results
        """))
    return path


# -- the plan ---------------------------------------------------------------------


def test_plan_counts_sockets_per_process_and_ports_per_address(tmp_path: Path) -> None:
    one = load_scenario(write_scenario(tmp_path, "one", "clients: {count: 30000, spawn_rate: 100}\nrun_time: 10s"))
    p = plan(one)
    assert (p.clients_per_process, p.per_client, p.open_files) == (30000, 1, 30000 + HEADROOM)
    found = problems(p, open_file_limit=20000, hard_limit=20000, ports=28232)
    assert len(found) == 2, found  # too many files in one process, too many UDP ports on one address
    assert "--processes 2 " in found[0] and "30000" in found[0] and "20000" in found[0], found[0]
    assert "clients.source_addresses" in found[1], found[1]
    # Divided over two worker processes each needs 15,000 sockets; the built-in server's clients
    # get 127.0.0.1, .2 (spread_sources), so the ports fit too.
    spread = limits.spread_sources(one, builtin=True)
    assert problems(plan(spread, processes=2), 20000, 20000, 28232) == []
    # connect: all to three targets: three sockets per device, and each target counts.
    body = """\
        clients: {count: 5000, spawn_rate: 100, connect: all}
        run_time: 10s
        targets:
          - {name: a, host: 127.0.0.1, port: 1000}
          - {name: b, host: 127.0.0.1, port: 1001}
          - {name: c, host: 127.0.0.1, port: 1002, protocol: tls}
        """
    everywhere = plan(load_scenario(write_scenario(tmp_path, "all", body)), processes=1, open_now=20)
    assert (everywhere.per_client, everywhere.headroom) == (3, HEADROOM + 20)
    assert (everywhere.dtls_ports, everywhere.tls_ports) == (10000, 5000)
    found = problems(everywhere, 10000, 65536, 28232)
    assert len(found) == 1 and "--processes 2 " in found[0], found
    # Stages: the largest one counts.
    staged = load_scenario(write_scenario(tmp_path, "staged", """\
        clients: {count: 10, spawn_rate: 100}
        run_time: 10s
        stages:
          - {duration: 5s, clients: 100, spawn_rate: 50}
          - {duration: 5s, clients: 700, spawn_rate: 50}
        """))
    assert plan(staged).clients == 700


def test_errnos_that_mean_no_socket_are_told_apart() -> None:
    for code in (errno.EMFILE, errno.ENFILE, errno.EADDRNOTAVAIL, errno.EADDRINUSE):
        error = socket_error(OSError(code, os.strerror(code)), "cannot connect")
        assert isinstance(error, SocketsExhausted) and error.code == "socket-error", code
    other = socket_error(OSError(errno.ENETUNREACH, "unreachable"), "cannot connect")
    assert type(other) is SocketError and other.code == "socket-error"


def test_shortage_log_says_it_once_per_interval_with_counts(caplog: pytest.LogCaptureFixture) -> None:
    sink = ShortageLog(interval=10.0)
    error = SocketsExhausted("no socket", reason="EMFILE (this process's open-file limit)")
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        for _ in range(5000):
            sink.record(Finished(HANDSHAKE, "t", 0.0, error))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "1 handshake attempts found no socket" in lines[0], lines


# -- the transports: no socket is a socket-error of the attempt ---------------------


def _no_files(*_: Any, **__: Any) -> Any:
    raise OSError(errno.EMFILE, "Too many open files")


def test_dtls_client_without_a_socket_fails_its_handshake_as_socket_error(monkeypatch: pytest.MonkeyPatch) -> None:
    class NoSockets:
        AF_INET, AF_INET6, SOCK_DGRAM, SOCK_NONBLOCK = 2, 10, 2, _socket.SOCK_NONBLOCK
        socket = staticmethod(_no_files)

    monkeypatch.setattr(association, "_socket", NoSockets)
    rec = StatsSink()
    assoc = DtlsAssociation("dev", "t", ("127.0.0.1", 9), dtls_contexts.client_context(), rec, identity=b"dev", key=KEY)
    error = gevent.spawn(assoc.run).get(timeout=5)
    assert isinstance(error, SocketsExhausted) and error.code == "socket-error", repr(error)
    assert (rec.handshakes.attempted, dict(rec.handshakes.failures)) == (1, {"socket-error": 1})


def test_tls_client_without_a_socket_fails_its_handshake_as_socket_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_socket, "socket", _no_files)  # the association opens a C socket, never patched by gevent
    rec = StatsSink()
    context = client_context(TlsOptions(), psk_mode=True)
    assoc = TlsAssociation("dev", "tls", ("127.0.0.1", 9), context, rec, identity=b"dev", key=KEY)
    error = gevent.spawn(assoc.run).get(timeout=5)
    assert isinstance(error, SocketsExhausted) and error.code == "socket-error", repr(error)
    assert (rec.handshakes.attempted, dict(rec.handshakes.failures)) == (1, {"socket-error": 1})


def test_the_reserve_follows_the_open_file_limit_as_it_is_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    """check_room reads the limit once, not per socket; a limit raised since is read again when a
    socket reaches the old one, and the refusal names the limit it found."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert hard >= 400, hard
    monkeypatch.setattr(fds, "_look_from", 0)  # as in a new process
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        fds.check_room(3, "first socket")
        with pytest.raises(SocketsExhausted, match="open-file limit 200 reached"):
            fds.check_room(200 - fds.RESERVE, "at the reserve")
        fds.check_room(200 - fds.RESERVE - 1, "just below it")
        resource.setrlimit(resource.RLIMIT_NOFILE, (400, hard))  # as loadgen's limits.prepare does
        fds.check_room(200 - fds.RESERVE, "room again")
        with pytest.raises(SocketsExhausted, match="open-file limit 400 reached") as refused:
            fds.check_room(400 - fds.RESERVE, "cannot open a UDP socket", "device-7")
        assert refused.value.args[0].startswith("device-7: cannot open a UDP socket: "), refused.value
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# -- whole runs ---------------------------------------------------------------------


def _run(tmp_path: Path, scenario: Path, open_files: int, timeout: float,
         env: dict[str, str] | None = None) -> tuple[int, str, str, float]:
    """``loadgen run SCENARIO`` with soft and hard open-file limits of ``open_files`` (so raising
    the soft one to the hard one cannot help); its whole process group is ended afterwards."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
                     PYTHONUNBUFFERED="1", **(env or {}))
    started = time.monotonic()
    with open(tmp_path / "out", "wb") as out, open(tmp_path / "err", "wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "loadgen", "run", str(scenario)], cwd=tmp_path, env=child_env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err, start_new_session=True,
                                preexec_fn=limit)
        try:
            status = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            status = -1
        finally:
            wall = time.monotonic() - started
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the built-in server, if anything is left
            except ProcessLookupError:
                pass
            proc.wait(10)
    return status, (tmp_path / "out").read_text(), (tmp_path / "err").read_text(), wall


def test_more_clients_than_open_files_count_socket_error_and_end_on_time(tmp_path: Path) -> None:
    """The run goes ahead (LOADGEN_IGNORE_LIMITS=1): clients without a socket fail as
    socket-error, every attempt adds up in loadgen's and Locust's counts, no tracebacks (not
    even Locust's CPU monitor, which opens /proc files every 10 s: the last files stay free), on time."""
    scenario = write_scenario(tmp_path, "exhausted", """\
        clients: {count: 300, spawn_rate: 300}
        run_time: 11s
        ping: {interval: 1s, expect: echo}
        reconnect: {policy: on-failure, delay: 1s}
        """)
    status, out, err, wall = _run(tmp_path, scenario, 150, timeout=60, env={limits.IGNORE_ENV: "1"})
    assert "Traceback" not in out + err, err[-3000:]
    assert status == 1, (status, out, err[-3000:])  # failures, no thresholds
    assert wall < 11 + 15, wall  # startup and stop included; before, the run overran
    summary_path, = (tmp_path / "results").glob("*-exhausted/summary.json")
    summary = json.loads(summary_path.read_text())
    hs = summary["handshake"]
    assert hs["attempted"] == hs["completed"] + hs["failed"] + hs["in_flight"], hs
    assert hs["errors"].get("socket-error", 0) > 0 and hs["completed"] > 0, hs
    # Waiting the reconnect delay: about one attempt per device left out per second, not a spin.
    assert hs["attempted"] < 300 * 20, hs
    locust = summary["locust"]["DTLS builtin handshake"]
    assert (locust["requests"], locust["failures"]) == (hs["completed"] + hs["failed"], hs["failed"]), (locust, hs)
    assert out.count("WARNING") >= 1 and "--processes" in out  # it said so before the run
    assert 1 <= err.count("found no socket") <= 1 + wall // 10, err  # at most one line per 10 s


def test_a_run_that_cannot_fit_exits_2_before_it_starts(tmp_path: Path) -> None:
    """30,000 clients in one process at an open-file limit of 20,000: exit 2 at once, with the
    numbers and ``--processes 2``; no server, no results."""
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if hard != resource.RLIM_INFINITY and hard < 20000:
        pytest.skip(f"the hard open-file limit is {hard}: cannot set 20,000")
    scenario = write_scenario(tmp_path, "toobig", "clients: {count: 30000, spawn_rate: 1000}\nrun_time: 10s")
    status, out, err, wall = _run(tmp_path, scenario, 20000, timeout=30)
    assert status == 2, (status, out, err)
    assert "--processes 2 " in err and "30000 clients" in err and "20000" in err, err
    assert "Traceback" not in err and "running" not in out, (out, err)
    assert not (tmp_path / "results").exists()
    assert wall < 10, wall


def test_validate_warns_about_a_run_that_would_not_fit(tmp_path: Path) -> None:
    """``loadgen validate`` still exits 0, and says what ``loadgen run`` would stop at."""
    scenario = write_scenario(tmp_path, "toobig", "clients: {count: 30000, spawn_rate: 1000}\nrun_time: 10s")
    child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "loadgen", "validate", str(scenario)], env=child_env,
                          capture_output=True, text=True, timeout=30,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1000, 1000)))
    assert done.returncode == 0, done.stderr
    assert "is valid" in done.stdout and "would not start" in done.stdout and "--processes" in done.stdout, done.stdout


def test_plain_locust_with_loadgens_locustfile_checks_too(tmp_path: Path) -> None:
    """``locust -f "$(loadgen locustfile)"`` with -u past the open-file limit: exit 2 before the run."""
    from loadgen import locustfile

    scenario = write_scenario(tmp_path, "plain", "clients: {count: 10, spawn_rate: 10}\nrun_time: 10s")
    child_env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    locust = [sys.executable, "-c", "import sys; from locust.main import main; sys.exit(main())"]
    done = subprocess.run([*locust, "-f", locustfile.__file__, "--scenario", str(scenario), "--headless",
                           "-u", "400", "-r", "400", "-t", "5s"], env=child_env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, start_new_session=True,
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200)))
    assert done.returncode == 2, (done.returncode, done.stdout, done.stderr[-3000:])
    assert "400 clients need" in done.stderr and "--processes" in done.stderr, done.stderr[-3000:]
    assert "Traceback" not in done.stderr and not (tmp_path / "results").exists()


def test_devices_do_not_reconnect_while_locust_stops_the_users(tmp_path: Path) -> None:
    """Stopping thousands of users frees their sockets; devices that had none must not start
    handshakes meanwhile (7,000 did in a 30,000-client run, and its stop took 14 s instead of 6)."""
    from locust.env import Environment

    from loadgen.locust.environment import BUILTIN_TARGET
    from loadgen.locust.lifeline import keep_alive
    from loadgen.locust.users import Endpoint, Session

    scenario = load_scenario(write_scenario(tmp_path, "stop", """\
        clients: {count: 1, spawn_rate: 1}
        run_time: 10s
        reconnect: {policy: on-failure, delay: 50ms}
        """))
    env = Environment()
    session = Session(scenario, env, [Endpoint(BUILTIN_TARGET, ("127.0.0.1", 9))])
    made: list[int] = []

    class NoSocket:
        """An association that fails at once for want of a socket (as DtlsAssociation.start() does at EMFILE)."""

        def on_end(self, callback: Callable[[SocketsExhausted], None]) -> None:
            self._ended = callback

        def start(self) -> None:
            made.append(1)
            gevent.get_hub().loop.run_callback(self._ended, SocketsExhausted("no socket", reason="EMFILE"))

        def close(self) -> None:
            pass

    device = gevent.spawn(keep_alive, NoSocket, scenario, session.gate)
    try:
        gevent.sleep(0.3)
        assert len(made) >= 3  # it retried after each delay
        env.events.test_stopping.fire(environment=env)
        before = len(made)
        gevent.sleep(0.3)
        assert len(made) == before, "a device reconnected while the users were being stopped"
        env.events.test_start.fire(environment=env)
        assert session.gate.open  # a new run (web UI) reconnects again
    finally:
        device.kill()


class Attempts:
    """A sink that keeps when each attempt of ``kind`` began and how each one ended."""

    facts = (Started, Finished)

    def __init__(self, kind: str) -> None:
        self._kind = kind
        self.began: list[float] = []
        self.ended: list[Finished] = []

    def record(self, fact: Any) -> None:
        if fact.kind == self._kind:
            if type(fact) is Started:
                self.began.append(time.monotonic())
            else:
                self.ended.append(fact)


def stop_slowly(scenario: Any, options: Any, kind: str, users: int, enough: int) -> tuple[Attempts, float]:
    """Run ``scenario`` on a real local runner until ``enough`` attempts of ``kind`` ended, then stop it
    slowly, as 100,000 users' stop is: a test_stopping listener after the session's own waits for what
    is outstanding, then 0.3 s more (15 intervals of 20 ms). Returns the attempts and when the stop began."""
    from loadgen.locust.environment import make_environment
    from loadgen.locust.users import Endpoint
    from loadgen.stats.facts import FanOut

    env, session = make_environment(scenario, [Endpoint(t, (t.host, t.port)) for t in scenario.targets], options)
    attempts = Attempts(kind)
    session.sinks["dtls"] = FanOut([*session.sinks["dtls"].sinks, attempts])
    stop_began: list[float] = []

    def slow_teardown(**_: Any) -> None:
        stop_began.append(time.monotonic())
        deadline = time.monotonic() + 10
        while len(attempts.ended) < len(attempts.began) and time.monotonic() < deadline:
            gevent.sleep(0.01)  # what was outstanding ends
        gevent.sleep(0.3)

    env.events.test_stopping.add_listener(slow_teardown)
    runner = env.create_local_runner()
    try:
        runner.start(users, 1000)
        deadline = time.monotonic() + 10
        while len(attempts.ended) < enough and time.monotonic() < deadline:
            gevent.sleep(0.02)
        assert len(attempts.ended) >= enough, f"too few {kind} attempts before the stop"
        runner.stop()
    finally:
        runner.quit()
    assert stop_began, "Locust's stop did not fire test_stopping"
    return attempts, stop_began[0]


def test_no_request_begins_while_locust_stops_the_users(tmp_path: Path, start_dtls_server: Any) -> None:
    """Stopping 100,000 users is a burst of CPU on every process at once, and pings begun into it
    measured the generator's teardown, not the server: a run's p99 of 2.3-3.7 s against 35-48 ms
    while holding, and 2,955 pings timed out. Once Locust begins to stop the users no request
    begins (devices pinging every 20 ms begin none in a stop that lasts 0.3 s past the last
    reply), and every request begun before it ends answered."""
    from loadgen.locust.environment import LOCAL_RUN

    server = start_dtls_server(key_hex=KEY_HEX)
    scenario = load_scenario(write_scenario(tmp_path, "stopping", f"""\
        targets: [{{name: gw, host: 127.0.0.1, port: {server.port}}}]
        clients: {{count: 20, spawn_rate: 1000}}
        run_time: 10s
        ping: {{interval: 20ms, timeout: 5s, expect: echo}}
        """))
    pings, stop_began = stop_slowly(scenario, LOCAL_RUN, "ping", users=20, enough=200)
    late = [t for t in pings.began if t >= stop_began]
    assert late == [], f"{len(late)} pings began while the users were being stopped"
    assert len(pings.ended) == len(pings.began)  # every ping begun ended ...
    assert [f.error for f in pings.ended if f.error is not None] == []  # ... answered


def test_no_churn_handshake_begins_while_locust_stops_the_users(tmp_path: Path, start_dtls_server: Any) -> None:
    """The churn workload (``loadgen capacity --workload churn``) too: a handshake per client per
    period, none once the stop has begun, and every one begun before it completed."""
    from loadgen.locust.environment import RunOptions

    server = start_dtls_server(key_hex=KEY_HEX)
    scenario = load_scenario(write_scenario(tmp_path, "churning", f"""\
        targets: [{{name: gw, host: 127.0.0.1, port: {server.port}}}]
        clients: {{count: 10, spawn_rate: 1000}}
        run_time: 10s
        """))
    handshakes, stop_began = stop_slowly(scenario, RunOptions(workload="churn", period=0.02), HANDSHAKE,
                                         users=10, enough=50)
    late = [t for t in handshakes.began if t >= stop_began]
    assert late == [], f"{len(late)} handshakes began while the users were being stopped"
    assert len(handshakes.ended) == len(handshakes.began)
    assert [f.error for f in handshakes.ended if f.error is not None] == []
