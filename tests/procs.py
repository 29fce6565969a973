"""Child processes for the stats/report tests: own process group, output to files, always cleaned up.

``Procs`` is used as a fixture (see ``procs`` in the test modules): every process it
started, and every process those started (built-in server, workers), is ended on
teardown: SIGTERM to the group, a bounded wait, then SIGKILL.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP = 15.0


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Proc:
    def __init__(self, args: list[str], cwd: Path, label: str) -> None:
        self.args = args
        self.out_path, self.err_path = cwd / f"{label}.out", cwd / f"{label}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(args, cwd=cwd, env=child_env(), stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=err, start_new_session=True)

    @property
    def stdout(self) -> str:
        return self.out_path.read_text("utf-8", "replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text("utf-8", "replace")

    def describe(self) -> str:
        return (f"{' '.join(self.args)}\nexit {self.proc.poll()}\n--- stdout\n{self.stdout[-6000:]}\n"
                f"--- stderr\n{self.stderr[-4000:]}")

    def wait_for(self, pattern: str, timeout: float = 20.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.stdout, re.M)
            if match:
                return match
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        raise AssertionError(f"no {pattern!r} within {timeout:.0f} s:\n{self.describe()}")

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"did not end within {timeout:.0f} s:\n{self.describe()}") from None

    def signal_group(self, signum: int) -> None:
        try:
            os.killpg(self.proc.pid, signum)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(STOP)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)  # whatever of the group is left (server, workers)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(STOP)


class Procs:
    """Starts ``python -m loadgen ...`` children under ``cwd``; :meth:`cleanup` ends them all."""

    def __init__(self, cwd: Path) -> None:
        self.cwd = cwd
        self.started: list[Proc] = []

    def loadgen(self, *args: object, label: str = "loadgen") -> Proc:
        proc = Proc([sys.executable, "-m", "loadgen", *map(str, args)], self.cwd, f"{label}{len(self.started)}")
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            proc.kill()
