"""Start and stop the reference server as a child process.

A separate process so that the server gets the other core: in the client's process
it would halve the rate a run can offer.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from loadgen.protocol.errors import LocalProtocolError

if TYPE_CHECKING:
    from loadgen.scenario.model import PskConfig, Scenario

#: The server's first line: ``loadgen: DTLS server listening on HOST:PORT (LIMITS)``.
_LISTENING = re.compile(r"listening on (?P<host>\S+):(?P<port>\d+)(?: \(|\s*$)")


class ServerProcess:
    """``with ServerProcess(["--scenario", path]) as (host, port): ...`` runs ``loadgen serve dtls`` (or tls).

    Keys are passed by reference (scenario file, env var, key file) or in ``env`` (added to the
    child's environment, which only its user can read), never on the command line where ``ps``
    would show them, except when the caller chooses ``--psk-hex``.
    """

    def __init__(self, options: Sequence[str], host: str = "127.0.0.1", startup_timeout: float = 20.0,
                 protocol: str = "dtls", env: Mapping[str, str] | None = None) -> None:
        self._args = [sys.executable, "-m", "loadgen", "serve", protocol, "--host", host, "--port", "0", *options]
        self._env = dict(env or {})
        self._timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self.summary = ""

    def __enter__(self) -> tuple[str, int]:
        env = {**os.environ, **self._env}
        # Works uninstalled too: the child must import the same loadgen as we do.
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        # Its own process group: Ctrl-C in the terminal must stop the clients first; we stop
        # the server after them (otherwise it says goodbye to every client mid-run).
        self._proc = subprocess.Popen(self._args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                      env=env, process_group=0, preexec_fn=_die_with_parent)
        assert self._proc.stdout is not None
        deadline = time.monotonic() + self._timeout
        line = ""
        while time.monotonic() < deadline:
            line = self._proc.stdout.readline()
            if "listening on" in line or not line:
                break
        if "listening on" not in line:
            self.__exit__(None, None, None)
            raise LocalProtocolError(f"reference server did not start: {self.summary or 'no output'}")
        found = _LISTENING.search(line)
        if found is None:
            self.__exit__(None, None, None)
            raise LocalProtocolError(f"reference server said something unexpected: {line.strip()!r}")
        return found["host"], int(found["port"])

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self._proc is not None else None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
        lines = (out.strip() or err.strip()).splitlines()
        self.summary = lines[-1] if lines else ""


def _die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies, even by SIGKILL (Linux), so that a
    server in its own process group is never left behind."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


#: The child's environment variable that holds the built-in server's key (one shared key, or the
#: master of a derivation) in hex: a process's environment is readable by its user only, its
#: command line by everyone (``ps``).
BUILTIN_KEY_ENV = "LOADGEN_BUILTIN_PSK"


def builtin_server(scenario: Scenario, workers: int = 1) -> ServerProcess:
    """The reference server for a scenario without targets: keys and hint from the scenario, in
    ``workers`` processes sharing its port (``loadgen serve dtls --workers``) when one core is not enough.

    The keys are those the scenario resolved when it was loaded (see :func:`_key_options`): the
    child reads neither the scenario file nor its key sources again.
    Its limits follow the scenario, so that the built-in server is never what a run measures:
    room for every client as a peer and as a handshake at once, and half-open peers kept as
    long as the clients keep trying (``dtls.handshake_timeout``).
    """
    from loadgen.servers.dtls import DEFAULT_MAX_HALF_OPEN, DEFAULT_MAX_PEERS

    # Device groups may each have a psk; without targets the loader made them share one key source.
    psk = next((g.psk for g in scenario.fleet() if g.psk is not None), None)
    assert psk is not None, "a scenario without targets has a psk section (the built-in server is DTLS)"
    keys, env = _key_options(psk)
    clients = scenario.clients.count
    return ServerProcess([*keys, "--max-peers", str(max(DEFAULT_MAX_PEERS, clients)),
                          "--max-half-open", str(max(DEFAULT_MAX_HALF_OPEN, clients)),
                          "--handshake-timeout", f"{scenario.dtls.handshake_timeout:g}",
                          *(["--workers", str(workers)] if workers > 1 else [])], env=env)


def _key_options(psk: PskConfig) -> tuple[list[str], dict[str, str]]:
    """``loadgen serve dtls`` options and the environment that give the child the scenario's keys.

    A shared key or a derivation's master travels in :data:`BUILTIN_KEY_ENV`; a CSV table (up to
    a million rows, too big for an environment) by its file's path, which the child reads."""
    hint = f"--hint={psk.hint}"  # one word: a hint may start with "-"
    one_key = psk.store.one_key()
    if one_key is None:
        assert psk.source == "csv" and psk.location is not None, "a table comes from a CSV file"
        return [hint, "--psk-csv", psk.location], {}
    key, derived_length = one_key
    env = {BUILTIN_KEY_ENV: key.value.hex()}
    if derived_length is None:
        return [hint, "--psk-env", BUILTIN_KEY_ENV], env
    return [hint, "--psk-master-env", BUILTIN_KEY_ENV, "--derive-length", str(derived_length)], env
