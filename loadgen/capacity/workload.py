"""The churn workload: every client handshakes once per period and closes again.

The scenario's own behaviour (connect once, then ping) measures how many associations
and pings a server holds; a server's handshake capacity needs handshakes all along.
A churn client opens an association to each of its targets, completes the handshake,
closes it with close_notify, and starts the next one a ``period`` after the last one
started, so ``clients / period`` is the handshake rate offered. A client whose
handshake took longer than the period (a dropped flight waits for a retransmission)
starts the next one at once but does not catch up on the ones it missed: an
overloaded server is not hammered harder than the clients would in real life.
"""

from __future__ import annotations

import random
import time
from typing import ClassVar

import gevent
from locust import task

from loadgen.locust.users import DeviceBase, Session, user_classes


class ChurnUser(DeviceBase):
    """One churning device; subclassed per run with ``session`` and ``period`` (see :func:`churn_user_classes`)."""

    abstract = True
    period: ClassVar[float] = 1.0

    @task
    def churn(self) -> None:
        period, gate = self.period, self.session.gate
        # Spread the first handshakes of a step's new clients over one period, not one instant.
        gevent.sleep(random.Random(self.index).uniform(0.0, period))
        next_start = time.monotonic()
        while True:
            for make in self.factories:
                if not gate.open:  # the run is stopping: a handshake now would measure its teardown
                    gevent.sleep(float("inf"))  # until Locust kills this user (returning would run the task again)
                make().handshake_once()
            next_start = max(next_start + period, time.monotonic())
            gevent.sleep(next_start - time.monotonic())


def churn_user_classes(session: Session, period: float) -> list[type[ChurnUser]]:
    """Concrete ChurnUsers bound to ``session`` (Locust instantiates classes): ``ChurnDevice``, or one
    per device group (see :func:`~loadgen.locust.users.user_classes`)."""
    if period <= 0:
        raise ValueError("the churn period must be > 0")
    return user_classes(ChurnUser, session.scenario, "ChurnDevice", session=session, period=period)
