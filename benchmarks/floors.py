"""The floors bench_dtls.py prints its figures against: OpenSSL's DTLS handshake in C, per side,
and the bare syscall cost of one UDP round trip (one send + one recv on a connected socket)."""

from __future__ import annotations

import _socket  # the unpatched module: gevent's monkey-patching must not add its hub to the floor
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

C_SOURCE = Path(__file__).resolve().parent / "c_floor" / "dtls_psk_pair.c"

_WINDOW = 50

#: The echo peer of the syscall floor: a separate process, so its CPU is not the client's.
_ECHO = (
    "import _socket, sys\n"
    "s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)\n"
    "s.bind(('127.0.0.1', 0)); print(s.getsockname()[1], flush=True)\n"
    "while True:\n"
    "    data, peer = s.recvfrom(2048)\n"
    "    if data == b'stop': break\n"
    "    s.sendto(data, peer)\n"
)


class CFloor:
    """OpenSSL's DTLS 1.2 PSK handshake pair in C (in memory), compiled once with the machine's gcc
    into a temporary directory; :meth:`run` it as often as a benchmark alternates with it. Raises
    RuntimeError saying what is missing (gcc, OpenSSL's headers) or what failed."""

    def __init__(self) -> None:
        gcc = shutil.which("gcc")
        if gcc is None:
            raise RuntimeError("gcc not found (apt-get install gcc)")
        if not Path("/usr/include/openssl/ssl.h").exists():
            raise RuntimeError("OpenSSL's headers not found in /usr/include/openssl (apt-get install libssl-dev)")
        self._tmp = tempfile.TemporaryDirectory(prefix="loadgen-c-floor-")
        self._binary = Path(self._tmp.name) / "dtls_psk_pair"
        build = subprocess.run([gcc, "-O2", "-o", str(self._binary), str(C_SOURCE), "-lssl", "-lcrypto"],
                               capture_output=True, text=True, timeout=120)
        if build.returncode != 0:
            self._tmp.cleanup()
            raise RuntimeError(f"gcc could not build {C_SOURCE.name} (libssl-dev installed?): {build.stderr.strip()}")

    def run(self, handshakes: int) -> tuple[float, float]:
        """Client and server CPU seconds per handshake, over ``handshakes`` pairs."""
        run = subprocess.run([str(self._binary), str(handshakes)], capture_output=True, text=True, timeout=120)
        if run.returncode != 0:
            raise RuntimeError(f"{C_SOURCE.name} failed: {run.stderr.strip()}")
        values = dict(line.split() for line in run.stdout.splitlines())
        return float(values["client_us"]) / 1e6, float(values["server_us"]) / 1e6

    def close(self) -> None:
        self._tmp.cleanup()


def udp_round_trip(seconds: float, size: int = 48) -> float:
    """Client CPU seconds per plain UDP round trip (one send + one recv on a connected,
    blocking socket, a window of them in flight) against an echo process on loopback: the syscall floor of a ping."""
    echo = subprocess.Popen([sys.executable, "-c", _ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert echo.stdout is not None
        port = int(echo.stdout.readline())
        sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
        sock.settimeout(2.0)
        sock.connect(("127.0.0.1", port))
        payload = b"x" * size
        trips = 0
        c0, end = time.process_time(), time.perf_counter() + seconds
        while time.perf_counter() < end:
            # A window in flight, as 200 pinging associations keep: the loop measures the two
            # syscalls, not a sleep and a wake-up per round trip.
            for _ in range(_WINDOW):
                sock.send(payload)
            for _ in range(_WINDOW):
                sock.recv(2048)
            trips += _WINDOW
        per_trip = (time.process_time() - c0) / trips
        sock.send(b"stop")
        sock.close()
        return per_trip
    finally:
        echo.wait(timeout=5) if echo.poll() is not None else echo.kill()
        echo.wait(timeout=5)


def wake_up(seconds: float, tick: float = 0.005) -> float:
    """CPU seconds charged to a process per sleep and wake-up of its event loop, idle but for a
    timer every ``tick`` (the associations' timer tick): the floor of every turn of the loop that
    finds nothing waiting. On this virtual machine it is far above the syscall (a 5 ms sleep cost
    tens of microseconds), which is why a ping costs more at scale than back to back."""
    from gevent.monkey import get_original  # the unpatched epoll, as _socket above (locust patches select)

    poller = get_original("select", "epoll")()
    wakes = 0
    c0, end = time.process_time(), time.perf_counter() + seconds
    while time.perf_counter() < end:
        poller.poll(tick)
        wakes += 1
    poller.close()
    return (time.process_time() - c0) / max(wakes, 1)


class Window:
    """What the client (this process) and a server process spent between :meth:`start` and
    :meth:`stop`, summed over spans: the pings completed, the server's CPU seconds and both
    processes' wake-ups (:func:`wake_ups`). A ping that costs the client more than another often
    costs it wake-ups: a client whose server answers more slowly than it asks sleeps and is woken
    per reply, not per batch of replies."""

    def __init__(self, server_pid: int) -> None:
        self.server_pid = server_pid
        self.server_cpu = 0.0
        self.pings = self.client_wakes = self.server_wakes = 0

    def start(self) -> None:
        self._at = (process_cpu(self.server_pid), wake_ups(os.getpid()), wake_ups(self.server_pid))

    def stop(self, pings: int) -> None:
        """End the span, in which ``pings`` completed."""
        cpu, client, server = self._at
        self.pings += pings
        self.server_cpu += process_cpu(self.server_pid) - cpu
        self.client_wakes += wake_ups(os.getpid()) - client
        self.server_wakes += wake_ups(self.server_pid) - server


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) another process's threads have used so far.

    From the scheduler's own account (``/proc/PID/task/*/schedstat``, nanoseconds), not from
    ``/proc/PID/stat``'s clock ticks: 10 ms each, a server's 3,000 handshakes (~0.2 s) read in
    steps of 3.3 us per handshake. Falls back to the ticks where the kernel has no schedstat."""
    total = 0
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, IndexError, ValueError):
                continue  # a thread that ended
    except OSError:
        total = 0
    if total:
        return total / 1e9
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wake_ups(pid: int) -> int:
    """How often the process ``pid`` has slept and been woken (voluntary context switches, all threads)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            text = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended
        total += next(int(line.split()[1]) for line in text.splitlines()
                      if line.startswith("voluntary_ctxt_switches"))
    return total
