"""Per-process plumbing: roll the sink every second, and apply the deltas here or ship them to the master.

Roles, as Locust's runners have them:

- ``local``: every second the sink's delta is applied to this process's RunStats.
- ``worker``: every second the delta goes to the master in a Locust custom message
  (:data:`SECOND_MESSAGE`) and is applied to the worker's own RunStats too (its
  ``worker-<i>.json``). The last, partial second goes out from ``test_stop``, which
  Locust fires before the worker reports "stopped", so the master has every count
  by the time it sees all workers stopped.
- ``master``: no sink; each worker's message is applied as it arrives, merged by
  second index (exact: see :mod:`loadgen.stats.run`).
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import gevent
from gevent.lock import Semaphore
from locust.env import Environment
from locust.runners import STATE_RUNNING, STATE_SPAWNING, WorkerRunner

from loadgen.locust.health import LoopLag
from loadgen.stats.run import RunStats
from loadgen.stats.sink import SecondDelta, StatsSink

log = logging.getLogger("loadgen")

#: Locust custom message carrying one worker's :class:`SecondDelta` to the master.
SECOND_MESSAGE = "loadgen_second"

Role = Literal["local", "worker", "master"]


def _started_already(runner: Any) -> bool:
    """Whether ``runner`` is a worker that fired this test's ``test_start`` already (it is spawning or running)."""
    return isinstance(runner, WorkerRunner) and runner.worker_state in (STATE_SPAWNING, STATE_RUNNING)


class LiveStats:
    """Ties a :class:`StatsSink` and a :class:`RunStats` to a Locust environment (see the module doc)."""

    def __init__(self, environment: Environment, stats: RunStats, sink: StatsSink | None, role: Role,
                 interval: float = 1.0) -> None:
        if role != "master" and sink is None:
            raise ValueError(f"a {role} needs a sink")
        self.environment = environment
        self.stats = stats
        self.sink = sink
        self.role = role
        self.interval = interval
        self._ticker: gevent.Greenlet | None = None
        self._lag = LoopLag()  # how late this process's timers run: reported with each second
        self._unsent: list[dict[str, Any]] = []  # a worker's seconds the master has not got yet
        self._stopping: float | None = None  # lag before the stop began, once it has
        # A delta is rolled and delivered whole: stopping waits for one under way (a send may yield).
        self._lock = Semaphore()

    def install(self) -> LiveStats:
        """Register with the environment's events (and, for a master, its runner's messages)."""
        events = self.environment.events
        # Locust's EventHook.add_listener has no annotations (mypy --strict: an untyped call).
        events.test_start.add_listener(self._on_test_start)
        events.test_stop.add_listener(self._on_test_stop)
        events.test_stopping.add_listener(self._on_test_stopping)
        if self.role == "master":
            runner = self.environment.runner
            assert runner is not None, "create the master runner first"
            runner.register_message(SECOND_MESSAGE, self._on_message)
        elif self.role == "worker" and _started_already(self.environment.runner):
            # Plain `locust --worker` installs this from its init hook, after Locust made the runner; the
            # runner's own greenlet reads the master's messages while it waits for the ack (and while init
            # yields), so this test's spawn message, and its test_start, may have come first. Without this
            # catch-up the ticker never ran: Locust counted the worker's users, loadgen's totals had none.
            self._on_test_start()
        return self

    @property
    def running(self) -> bool:
        return self._ticker is not None

    # -- events ---------------------------------------------------------------------

    def _on_test_start(self, **_: Any) -> None:
        if self.role == "worker" and (counted := sum(c.attempted for c in self.stats.kinds.values())):
            # Locust starts a new test on a worker that stopped (a master's new swarm): its counts so far
            # are at the master already, but no longer in this worker's own totals (worker-<i>.json).
            log.warning("loadgen: a new test started on this worker: its own totals restart (%d attempts "
                        "of the last test are at the master only)", counted)
        self.stats.reset()
        if self.sink is None:
            return
        self._stop_ticker()
        self.sink.reset()
        self._lag.start().take()
        self._stopping = None
        self._ticker = gevent.spawn(self._tick)

    def _on_test_stop(self, **_: Any) -> None:
        if self.sink is None or self._ticker is None:
            return
        with self._lock:
            self._stop_ticker()
            self._deliver(self._roll())  # the last, partial second
        self._lag.stop()

    def _on_test_stopping(self, **_: Any) -> None:
        if self._stopping is None:
            self._stopping = self._lag.take()  # what came before the stop is the run's own lag

    def _on_message(self, msg: Any, **_: Any) -> None:
        try:
            self.stats.apply(SecondDelta.from_wire(msg.data))
        except (KeyError, TypeError, ValueError) as exc:  # a worker of another version: say so, keep going
            log.warning("loadgen: ignoring a malformed %s message: %r", SECOND_MESSAGE, exc)

    # -- the ticker -----------------------------------------------------------------

    def _tick(self) -> None:
        assert self.sink is not None
        start = time.monotonic()
        n = 0
        while True:
            n += 1
            # Sleep to the next whole interval since the start, so rows do not drift.
            gevent.sleep(max(0.0, start + n * self.interval - time.monotonic()))
            with self._lock:
                self._deliver(self._roll())

    def _roll(self) -> SecondDelta:
        assert self.sink is not None
        if self._stopping is None:
            return self.sink.roll(self._users(), self._lag.take())
        before, self._stopping = self._stopping, 0.0
        return self.sink.roll(self._users(), before, self._lag.take())

    def _deliver(self, delta: SecondDelta) -> None:
        if self.role == "worker":
            self._unsent.append(delta.to_wire())  # before apply() unpacks histograms
            self._send_unsent()
        self.stats.apply(delta)

    def _send_unsent(self) -> None:
        """Send the seconds the master has not got, oldest first; keep them on a send error.

        The ticker must survive a failed send: a dead ticker would leave every later count of
        this worker to its last message, which a worker killed at the end never sends.
        """
        runner = self.environment.runner
        assert runner is not None
        while self._unsent:
            try:
                runner.send_message(SECOND_MESSAGE, self._unsent[0])
            except Exception as exc:  # noqa: BLE001 - Locust's RPCError and zmq's errors alike
                log.warning("loadgen: could not send %d second(s) of counts to the master yet: %r",
                            len(self._unsent), exc)
                return
            self._unsent.pop(0)

    def _users(self) -> int:
        runner = self.environment.runner
        return runner.user_count if runner is not None else 0

    def _stop_ticker(self) -> None:
        ticker, self._ticker = self._ticker, None
        if ticker is not None:
            ticker.kill(block=True)
