"""Plain ``locust --master`` / ``locust --worker`` processes number their devices apart (issue 12 leftover).

The target is a loadgen DtlsServer in this process whose key store records every identity a
handshake asks for; while the Locust processes run, this process only sleeps in gevent, so its
hub serves the handshakes.
"""

from __future__ import annotations

import random
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a run
import pytest
from locust.rpc import Message
from test_restart import ephemeral_range
from test_runs import KEY_HEX, Child, load, loadgen, run_dir, spawn, write_scenario

from loadgen.locust.environment import make_environment
from loadgen.locust.numbering import MESSAGE, WorkerPlace
from loadgen.locust.users import Endpoint
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.scenario import load_scenario
from loadgen.servers.dtls import DtlsServer

pytestmark = pytest.mark.timeout(90)
__all__ = ["spawn"]  # the fixture, from test_runs

RUN_END = 45.0  # seconds for the master to end by itself (a 4 s run plus Locust's start and stop)


class RecordingKeys(KeyStore):
    """The shared key, and every identity a handshake asked it for, in order."""

    def __init__(self, key: Secret) -> None:
        super().__init__(shared=key)
        self.asked: list[bytes] = []

    def key_for(self, identity: bytes) -> Secret | None:
        self.asked.append(identity)
        return super().key_for(identity)


@pytest.fixture
def master_port() -> Iterator[int]:
    """A TCP port for the master outside the ephemeral range (no client socket can take it meanwhile),
    free when chosen; a UDP socket on the same number is held as the reservation, so another run of
    this test at the same time (which checks UDP too) picks another one."""
    low, high = ephemeral_range()
    candidates = [p for p in range(1024, 65536) if not low <= p <= high]
    if not candidates:
        pytest.skip(f"every unprivileged port is ephemeral here ({low}-{high})")
    random.shuffle(candidates)
    for port in candidates[:200]:
        reservation = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            reservation.bind(("127.0.0.1", port))
            with socket.socket() as tcp:
                tcp.bind(("127.0.0.1", port))
        except OSError:
            reservation.close()
            continue
        with reservation:
            yield port
        return
    pytest.fail("no free port outside the ephemeral range among 200 tried")


def wait_in_gevent(child: Child, timeout: float) -> int:
    """``child``'s exit status, waiting with gevent.sleep so that this process's server keeps answering."""
    deadline = gevent.get_hub().loop.now() + timeout
    while child.proc.poll() is None:
        if gevent.get_hub().loop.now() > deadline:
            pytest.fail(f"did not end within {timeout:.0f} s:\n{child.describe()}")
        gevent.sleep(0.1)
    return child.proc.returncode


def master_and_two_workers(spawn: Callable[..., Child], scenario: Path, master_port: int, *,
                           users: int) -> tuple[Child, int]:
    """Plain ``locust --master`` and two ``--worker`` processes of loadgen's locustfile, a 4 s headless run
    of ``users``: the master and its exit status, once the workers quit too."""
    locustfile = subprocess.run(loadgen("locustfile"), capture_output=True, text=True, check=True,
                                timeout=30).stdout.strip()
    plain = [sys.executable, "-m", "locust", "-f", locustfile, "--scenario", str(scenario)]
    master = spawn(*plain, "--headless", "--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                   str(master_port), "--expect-workers", "2", "-u", str(users), "-r", "100", "-t", "4s",
                   label="master")
    workers = [spawn(*plain, "--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port),
                     label="worker") for _ in range(2)]
    status = wait_in_gevent(master, RUN_END)
    for worker in workers:
        wait_in_gevent(worker, RUN_END)  # a worker quits when its master says so
    return master, status


def test_plain_locust_workers_number_their_devices_apart(tmp_path: Path, spawn: Callable[..., Child],
                                                          master_port: int) -> None:
    """Each worker used to number its devices 0, 1, ...: two workers ran device-00000 twice and never
    device-00002. The master now tells each worker its index and the count at the test start."""
    keys = RecordingKeys(Secret(bytes.fromhex(KEY_HEX)))
    server = DtlsServer(keys).start()
    try:
        host, port = server.address
        scenario = write_scenario(tmp_path, "plainworkers", f"""\
            targets: [{{name: gw, host: {host}, port: {port}}}]
            clients: {{count: 4, spawn_rate: 100}}
            run_time: 4s
            ping: {{interval: 500ms, expect: echo}}
            """)
        master, status = master_and_two_workers(spawn, scenario, master_port, users=4)
        handshakes = server.stats.handshakes
    finally:
        server.stop()
    assert status == 0, master.describe()
    expected = {f"device-{n:05d}".encode() for n in range(4)}
    assert set(keys.asked) == expected, (sorted(keys.asked), master.describe())
    assert handshakes == 4, handshakes
    summary = load(run_dir(tmp_path, "plainworkers") / "summary.json")
    assert summary["handshake"]["completed"] == 4 and summary["handshake"]["failed"] == 0, summary["handshake"]


def test_a_worker_takes_its_place_whether_told_before_or_after_its_session_exists(tmp_path: Path) -> None:
    """The master may tell a worker its place while the worker is still loading (before its Session
    exists); a message without a valid place changes nothing. The handler is called as Locust's
    worker loop calls a registered custom message."""
    scenario = load_scenario(write_scenario(tmp_path, "place", """\
        targets: [{name: gw, host: 127.0.0.1, port: 9}]
        clients: {count: 3, spawn_rate: 10}
        run_time: 1s
        """))
    for told_first in (True, False):
        env, session = make_environment(scenario, [Endpoint(t, (t.host, t.port)) for t in scenario.targets])
        runner = env.create_local_runner()  # any runner registers custom messages as a worker does
        place = WorkerPlace(runner)
        handler, concurrent = runner.custom_messages[MESSAGE]
        assert not concurrent  # inline: handled before the spawn message that follows it
        session.next_device()  # a previous test's device: the counter restarts at the new place
        if not told_first:
            place.bind(session)
        handler(environment=env, msg=Message(MESSAGE, {"index": 1, "count": 3}, "worker-b"))
        handler(environment=env, msg=Message(MESSAGE, {"index": 3, "count": 3}, "worker-b"))  # ignored
        if told_first:
            place.bind(session)
        assert [session.next_device() for _ in range(3)] == [1, 4, 7], told_first
