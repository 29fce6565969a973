"""A device's associations to one target, one after another per the reconnect policy, without a greenlet.

The associations are event driven (a read watcher and a timer each), so what a device does between
them needs no greenlet either: :class:`Lifeline` starts an association, is called back from the
event loop when it ends, and starts the next one after the policy's delay on a timer of its own.
A Locust user whose devices live on lifelines never has to wait in a greenlet, and a waiting
greenlet costs more memory than its association (~7 KiB: its saved C stack, its own page of
Python frames, its gevent object; see :class:`~loadgen.locust.users.PingUser`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Protocol

import gevent
from gevent import get_hub

from loadgen.protocol.errors import LoadgenError
from loadgen.scenario import Scenario
from loadgen.scenario.model import ReconnectConfig
from loadgen.traffic.workload import Gate

log = logging.getLogger("loadgen")


class Startable(Protocol):
    """What a lifeline needs of an association (both client associations have it)."""

    def start(self) -> None: ...

    def close(self) -> None: ...

    def on_end(self, callback: Callable[[LoadgenError | None], None]) -> None: ...


class Lifeline:
    """Associations made by ``make`` one after another until the reconnect ``policy`` says stop,
    :meth:`stop` is called, or the run's ``gate`` is closed (Locust is stopping the users: stopping
    30,000 frees sockets, and devices that had none would reconnect meanwhile)."""

    __slots__ = ("_make", "_policy", "_gate", "_attempts", "_association", "_timer", "_over")

    def __init__(self, make: Callable[[], Startable], policy: ReconnectConfig, gate: Gate | None = None) -> None:
        self._make = make
        self._policy = policy
        self._gate = gate
        self._attempts = 0
        self._association: Startable | None = None
        self._timer: Any = None  # between two associations: the reconnect delay
        self._over = False

    def start(self) -> None:
        """Start the next association (returns at once: it runs on the event loop)."""
        if self._over:
            return
        try:
            association = self._association = self._make()
            association.on_end(self._ended)
            association.start()
        except Exception as exc:  # noqa: BLE001 - a bug must not take the event loop down: this device stops
            self._over = True
            log.error("loadgen: a device stopped: unexpected %s starting its association", type(exc).__name__)

    def stop(self) -> None:
        """Close the association under way (close_notify when established); no reconnect after. Idempotent."""
        self._over = True
        self._stop_timer()
        association, self._association = self._association, None
        if association is not None:
            association.close()

    def _ended(self, error: LoadgenError | None) -> None:
        association, self._association = self._association, None
        if association is not None:
            association.close()  # its socket, as ``run()`` closes it on the way out
        if self._over:
            return
        self._attempts += 1
        policy = self._policy
        if policy.policy == "never" or (policy.max_attempts is not None and self._attempts > policy.max_attempts) \
                or (policy.policy == "on-failure" and error is None):
            self._over = True  # the device stays a (quiet) user: Locust's user count stays as asked
            return
        self._timer = get_hub().loop.timer(policy.delay)
        self._timer.start(self._again)

    def _again(self) -> None:
        self._stop_timer()
        if self._gate is not None and not self._gate.open:
            self._over = True  # a new handshake now would only slow the stop down
            return
        self.start()

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer.close()
            self._timer = None


def keep_alive(make: Callable[[], Startable], scenario: Scenario, gate: Gate | None = None) -> None:
    """A :class:`Lifeline` for the calling greenlet: returns never; killing the greenlet closes the association."""
    line = Lifeline(make, scenario.reconnect, gate)
    line.start()
    try:
        gevent.sleep(float("inf"))
    finally:
        line.stop()
