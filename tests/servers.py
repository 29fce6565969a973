"""Start and stop the server processes the tests talk to (loopback only).

* :func:`start_loadgen_server` runs ``python -m loadgen serve dtls --port 0 ...`` and
  reads the port from its first stdout line.
* :func:`start_openssl_server` runs ``openssl s_server -dtls1_2 -psk ... -nocert`` on a
  free loopback UDP port.
* :func:`run_openssl_client` runs ``openssl s_client -dtls1_2 -psk ...`` once.

Output goes to files, never to pipes nobody reads (a chatty process cannot block on
a full pipe), and every wait is bounded. Each handle's ``stop()`` is idempotent, so
the fixtures in ``conftest.py`` can always call it on teardown.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent

#: Bounded waits (seconds).
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
POLL = 0.02

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="no openssl binary on PATH")

_LISTENING = re.compile(  # the limits in parentheses, e.g. "(max 100000 peers, 10000 half-open, ...)"
    r"^loadgen: (?:DTLS|TLS) server listening on (?P<host>\S+):(?P<port>\d+)(?: \((?P<limits>[^()]*)\))?\s*$"
)
_SUMMARY = re.compile(  # serve dtls, and serve tls (which also counts resumed handshakes)
    r"^loadgen: (?:DTLS|TLS) server stopped: (?P<handshakes>\d+) handshakes(?: \((?P<resumed>\d+) resumed\))?, "
    r"(?P<pings>\d+) pings answered, (?P<failed>\d+) failures(?: \((?P<failures>[^()]*)\))?\s*$"
)


def parse_failures(text: str | None) -> Counter[str]:
    """The stop line's ``(psk-key-mismatch 2, timeout 1)`` (without parentheses) as counts by code."""
    counts: Counter[str] = Counter()
    for item in filter(None, (text or "").split(", ")):
        code, _, n = item.rpartition(" ")
        counts[code] += int(n)
    return counts


def _read(path: Path) -> str:
    try:
        return path.read_text("utf-8", "replace")
    except FileNotFoundError:
        return ""


def _wait_for(predicate: Callable[[], bool], timeout: float, sleep: Callable[[float], None] = time.sleep) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        sleep(POLL)


def _terminate(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = STOP_TIMEOUT) -> None:
    """Send ``sig``, wait up to ``timeout``, then SIGKILL; always reaps the process."""
    if proc.poll() is None:
        try:
            proc.send_signal(sig)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(STOP_TIMEOUT)
    if proc.stdin is not None:
        try:
            proc.stdin.close()
        except OSError:
            pass


def free_udp_port(host: str = "127.0.0.1") -> int:
    """A UDP port nothing listens on right now (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


# -- python -m loadgen serve dtls -------------------------------------------


@dataclass
class ServerSummary:
    """The stop line of ``loadgen serve dtls``, parsed."""

    line: str
    handshakes: int
    pings: int
    failures: Counter[str]
    resumed: int = 0  # serve tls only


@dataclass
class LoadgenServer:
    """A running ``loadgen serve dtls`` process."""

    host: str
    port: int
    key_hex: str | None
    process: subprocess.Popen
    workdir: Path
    stdout_path: Path
    stderr_path: Path
    summary: ServerSummary | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def stdout(self) -> str:
        return _read(self.stdout_path)

    @property
    def stderr(self) -> str:
        return _read(self.stderr_path)

    def stop(self) -> ServerSummary | None:
        """SIGTERM, bounded wait (SIGKILL if needed); returns the parsed summary line."""
        if not self._stopped:
            self._stopped = True
            _terminate(self.process, signal.SIGTERM)
            for line in self.stdout.splitlines():
                match = _SUMMARY.match(line)
                if match:
                    self.summary = ServerSummary(
                        line=line,
                        handshakes=int(match["handshakes"]),
                        pings=int(match["pings"]),
                        failures=parse_failures(match["failures"]),
                        resumed=int(match["resumed"] or 0),
                    )
        return self.summary

    def stop_and_summarize(self) -> ServerSummary:
        summary = self.stop()
        assert summary is not None, (
            f"no summary line after SIGTERM (exit status {self.process.returncode})\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )
        return summary


def loadgen_env() -> dict[str, str]:
    env = dict(os.environ)
    parts = [str(REPO_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(parts)
    env["PYTHONUNBUFFERED"] = "1"
    return env


def start_loadgen_server(
    *args: str,
    key_hex: str | None = None,
    psk_csv: Sequence[tuple[str, str]] | None = None,
    workdir: Path | None = None,
    host: str = "127.0.0.1",
    env: dict[str, str] | None = None,
    timeout: float = START_TIMEOUT,
    protocol: str = "dtls",
) -> LoadgenServer:
    """Start ``python -m loadgen serve PROTOCOL --host HOST --port 0 [keys] ARGS``.

    Give ``key_hex`` (one shared key, passed with ``--psk-env`` so it stays out of
    ``ps``) or ``psk_csv`` (identity, hex-key rows, written to a 0600 file); a TLS server
    may have neither (certificate mode, in ARGS). Returns once the server printed its
    listening line; fails with its stderr otherwise.
    """
    if key_hex is not None and psk_csv is not None or (protocol == "dtls" and key_hex is None and psk_csv is None):
        raise ValueError("give exactly one of key_hex and psk_csv")
    workdir = Path(workdir or tempfile.mkdtemp(prefix="loadgen-server-"))
    workdir.mkdir(parents=True, exist_ok=True)
    full_env = loadgen_env()
    full_env.update(env or {})
    command = [sys.executable, "-m", "loadgen", "serve", protocol, "--host", host, "--port", "0"]
    if key_hex is not None:
        full_env["LOADGEN_TEST_PSK"] = key_hex
        command += ["--psk-env", "LOADGEN_TEST_PSK"]
    elif psk_csv is not None:
        csv_path = workdir / "keys.csv"
        csv_path.write_text("identity,key\n" + "".join(f"{i},{k}\n" for i, k in psk_csv or ()))
        csv_path.chmod(0o600)
        command += ["--psk-csv", str(csv_path)]
    command += list(args)
    stdout_path, stderr_path = workdir / "server.out", workdir / "server.err"
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=full_env, cwd=workdir
        )
    server = LoadgenServer(host, 0, key_hex, process, workdir, stdout_path, stderr_path)
    try:
        found: dict[str, str] = {}

        def listening() -> bool:
            first = server.stdout.split("\n", 1)
            if len(first) == 2:  # a complete first line
                match = _LISTENING.match(first[0])
                if match:
                    found.update(match.groupdict())
                    return True
                return True  # a different first line: fail below
            return process.poll() is not None

        ready = _wait_for(listening, timeout)
        if not found:
            state = (
                f"exited with status {process.returncode}" if process.poll() is not None
                else "still running" if ready else f"no listening line within {timeout:g} s"
            )
            raise AssertionError(
                f"loadgen server did not start ({state}): {' '.join(command)}\n"
                f"stdout:\n{server.stdout}\nstderr:\n{server.stderr}"
            )
        server.host, server.port = found["host"], int(found["port"])
        return server
    except BaseException:
        server.stop()
        raise


# -- openssl s_server ---------------------------------------------------------


@dataclass
class OpensslServer:
    """A running ``openssl s_server -dtls1_2 -psk ... -nocert`` (one client at a time, no echo)."""

    host: str
    port: int
    key_hex: str
    identity: str
    process: subprocess.Popen
    stdout_path: Path
    stderr_path: Path
    _stopped: bool = field(default=False, repr=False)

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def output(self) -> str:
        """What s_server printed so far (received application data lands on stdout)."""
        return _read(self.stdout_path)

    @property
    def errors(self) -> str:
        return _read(self.stderr_path)

    def send_line(self, text: str) -> None:
        """s_server sends each line written to its stdin to the current client."""
        assert self.process.stdin is not None
        self.process.stdin.write(text.encode() + b"\n")
        self.process.stdin.flush()

    def wait_output(self, needle: str, timeout: float, sleep: Callable[[float], None] = time.sleep) -> bool:
        """True once ``needle`` is in the output (pass ``gevent.sleep`` inside gevent code)."""
        return _wait_for(lambda: needle in self.output, timeout, sleep)

    def stop(self) -> None:
        if not self._stopped:
            self._stopped = True
            _terminate(self.process, signal.SIGTERM)


def start_openssl_server(
    key_hex: str,
    identity: str,
    *extra: str,
    workdir: Path | None = None,
    attempts: int = 5,
    timeout: float = START_TIMEOUT,
) -> OpensslServer:
    """Start s_server on a free 127.0.0.1 UDP port, retrying if the port got taken."""
    assert OPENSSL is not None, "no openssl binary"
    workdir = Path(workdir or tempfile.mkdtemp(prefix="openssl-server-"))
    workdir.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    for attempt in range(attempts):
        port = free_udp_port()
        stdout_path, stderr_path = workdir / f"s_server{attempt}.out", workdir / f"s_server{attempt}.err"
        command = [
            OPENSSL, "s_server", "-dtls1_2", "-psk", key_hex, "-psk_identity", identity, "-nocert",
            "-accept", f"127.0.0.1:{port}", *extra,
        ]
        with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
            process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=err, cwd=workdir)
        server = OpensslServer("127.0.0.1", port, key_hex, identity, process, stdout_path, stderr_path)
        try:
            # s_server prints ACCEPT once its socket is bound.
            _wait_for(lambda: "ACCEPT" in server.output or process.poll() is not None, timeout)  # noqa: B023 - called within this iteration
            if "ACCEPT" in server.output and process.poll() is None:
                return server
        except BaseException:
            server.stop()
            raise
        server.stop()
        failures.append(f"port {port}: status {process.returncode}: {server.errors.strip()[-500:]}")
    raise AssertionError("openssl s_server did not start:\n" + "\n".join(failures))


# -- openssl s_client ---------------------------------------------------------


@dataclass
class ClientRun:
    output: str  # stdout and stderr, interleaved as written
    returncode: int | None  # None: still running when stopped (we terminated it)
    elapsed: float
    matched: bool


def run_openssl_client(
    address: tuple[str, int],
    key_hex: str,
    identity: str,
    *,
    send: str | None = None,
    until: str | None = None,
    timeout: float = 15.0,
    workdir: Path | None = None,
) -> ClientRun:
    """Run ``openssl s_client -dtls1_2 -psk KEY -psk_identity ID -connect HOST:PORT -quiet``.

    Writes ``send`` (plus a newline) on its stdin, then waits until ``until`` shows up in
    its output, it exits, or ``timeout`` passes; then stops it. (``-quiet`` implies
    ``-ign_eof``, so it would otherwise keep the association open.)
    """
    assert OPENSSL is not None, "no openssl binary"
    workdir = Path(workdir or tempfile.mkdtemp(prefix="openssl-client-"))
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = workdir / "s_client.out"
    host, port = address
    command = [
        OPENSSL, "s_client", "-dtls1_2", "-psk", key_hex, "-psk_identity", identity,
        "-connect", f"{host}:{port}", "-quiet",
    ]
    started = time.monotonic()
    with open(out_path, "wb") as out:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT,
                                   cwd=workdir)
    try:
        if send is not None:
            assert process.stdin is not None
            try:
                process.stdin.write(send.encode() + b"\n")
                process.stdin.flush()
            except BrokenPipeError:
                pass
        matched = _wait_for(
            lambda: (until is not None and until in _read(out_path)) or process.poll() is not None, timeout
        )
        returncode = process.poll()
    finally:
        _terminate(process, signal.SIGTERM, timeout=5.0)
    output = _read(out_path)
    return ClientRun(output, returncode, time.monotonic() - started,
                     matched=(until in output) if until is not None else matched)
