"""Per-second stats of a worker reach its master whenever the worker's listeners were installed: a plain
``locust --worker`` installs them from its init hook, after Locust created the runner, whose greenlet
may already have taken the master's spawn message (and fired ``test_start``). Real Locust master and
worker runners in one process, talking over ZeroMQ on loopback."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import gevent
import pytest
from locust import User, constant, task
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, MasterRunner, WorkerRunner

from loadgen.stats.facts import PING, Started
from loadgen.stats.live import LiveStats
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink

pytestmark = pytest.mark.timeout(60)


class Idle(User):
    """A user that does nothing a test could count: the counts come from the test's own facts."""

    wait_time = constant(60)

    @task
    def nothing(self) -> None:
        pass


def wait_until(condition: Callable[[], bool], what: str, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        gevent.sleep(0.02)


@pytest.fixture
def master_and_worker() -> Iterator[tuple[MasterRunner, WorkerRunner, RunStats]]:
    master = Environment(user_classes=[Idle]).create_master_runner("127.0.0.1", 0)  # a free port, loopback
    merged = RunStats()
    LiveStats(master.environment, merged, None, "master").install()
    worker = Environment(user_classes=[Idle]).create_worker_runner("127.0.0.1", master.server.port)
    try:
        wait_until(lambda: len(master.clients.ready) == 1, "the worker to connect")
        yield master, worker, merged
    finally:
        master.quit()
        worker.quit()


def test_a_worker_whose_test_started_before_its_stats_were_installed_still_ships_its_counts(
        master_and_worker: tuple[MasterRunner, WorkerRunner, RunStats]) -> None:
    master, worker, merged = master_and_worker
    master.start(1, 10)
    wait_until(lambda: worker.worker_state in (STATE_SPAWNING, STATE_RUNNING), "the worker to start its test")
    sink = StatsSink()
    own = RunStats()
    LiveStats(worker.environment, own, sink, "worker", interval=0.05).install()  # as plain init does: late
    for _ in range(3):
        sink.record(Started(PING, "gw"))
    wait_until(lambda: PING in merged.kinds and merged.kinds[PING].attempted == 3, "the master to get 3 pings")
    assert own.kinds[PING].attempted == 3  # the worker's own totals (worker-<i>.json) have them too
