"""Legitimate clients next to an attack: they must be served during and after it.

:class:`LegitClients` keeps a few real :class:`DtlsAssociation` s pinging (interval
0.2 s, echo expected) while a test attacks; :meth:`LegitClients.assert_served` checks
that pings keep completing, and that a fresh association completes a handshake and a
ping, within bounded time.
"""

from __future__ import annotations

import functools
import logging
import subprocess
import sys
import time
from typing import TYPE_CHECKING

import gevent

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.scenario.model import DtlsConfig, Expect, PingConfig
from loadgen.stats.facts import Sink
from loadgen.stats.sink import StatsSink
from loadgen.stats.words import counts_text
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport.dtls_association import DtlsAssociation

if TYPE_CHECKING:
    from .hostile_server import HostileServer

#: How long a served client may take to show progress (handshake, then a ping). Loopback
#: handshakes take milliseconds; the margin is for a shared 2-core machine under load (a
#: lost flight costs the client one 1 s retransmission timer).
SERVED_WITHIN = 8.0


@functools.lru_cache(maxsize=1)
def serve_dtls_help() -> str:
    """``loadgen serve dtls --help``: which of the planned flags this checkout has."""
    return subprocess.run([sys.executable, "-m", "loadgen", "serve", "dtls", "--help"], capture_output=True,
                          text=True, timeout=30, check=False).stdout


def limit_args(**limits: int | float) -> list[str]:
    """``--max-peers N`` and friends, for the flags this checkout has (they may land later):
    tests raise limits so that hostile peers do not crowd out the legitimate client."""
    args = []
    for name, value in limits.items():
        flag = "--" + name.replace("_", "-")
        if flag in serve_dtls_help():
            args += [flag, str(value)]
    return args


def wait_until(predicate: object, timeout: float, step: float = 0.05) -> bool:
    """Poll ``predicate()`` in gevent time until true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():  # type: ignore[operator]
            return True
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(step)


class LegitClients:
    """Real associations pinging a server; each the way a user's run would."""

    def __init__(self, address: tuple[str, int], key: Secret, *, count: int = 2, native: bool = True) -> None:
        self.address = address
        self.key = key
        self.context = dtls_contexts.client_context(native=native)
        self.totals = StatsSink()
        self._made = 0
        self._greenlets: list[gevent.Greenlet] = []
        for _ in range(count):
            self._spawn(self.totals)

    def _spawn(self, totals: StatsSink) -> gevent.Greenlet:
        self._made += 1
        assoc = DtlsAssociation(f"legit-{self._made}", "server", self.address, self.context, totals,
                                identity=b"legit-%d" % self._made, key=self.key,
                                settings=DtlsConfig(handshake_timeout=10.0),
                                ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, timeout=1.0,
                                                             expect=Expect("echo"), max_missed=10**6)),
                                message_level=logging.ERROR)
        greenlet = gevent.spawn(assoc.run)
        self._greenlets.append(greenlet)
        return greenlet

    def pings_progress(self, timeout: float = SERVED_WITHIN) -> bool:
        """True when the running associations complete pings within ``timeout``."""
        before = self.totals.pings.completed
        return wait_until(lambda: self.totals.pings.completed >= before + 2, timeout)

    def fresh_served(self, timeout: float = SERVED_WITHIN) -> bool:
        """A new association completes a handshake and a ping within ``timeout``."""
        totals = StatsSink()
        greenlet = self._spawn(totals)
        try:
            return wait_until(lambda: totals.handshakes.completed >= 1 and totals.pings.completed >= 1, timeout)
        finally:
            greenlet.kill()

    def assert_served(self, when: str, timeout: float = SERVED_WITHIN) -> None:
        """Running clients keep pinging and a fresh one gets a handshake and a ping."""
        assert self.pings_progress(timeout), (
            f"{when}: legitimate pings stopped completing (pings {self.totals.pings.completed} completed, "
            f"failures: {counts_text(self.totals.pings.failures)})")
        assert self.fresh_served(timeout), f"{when}: a fresh legitimate client got no handshake and ping"

    def stop(self) -> None:
        gevent.killall(self._greenlets, timeout=5)
        self._greenlets = []


def attacked(server: HostileServer, key: Secret, totals: Sink, *, name: str = "victim",
             handshake_timeout: float = 10.0) -> DtlsAssociation:
    """An association the way a run makes one, aimed at the hostile server."""
    return DtlsAssociation(name, "hostile", server.address, dtls_contexts.client_context(), totals,
                           identity=name.encode(), key=key, settings=DtlsConfig(handshake_timeout=handshake_timeout),
                           ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, timeout=1.0, expect=Expect("echo"),
                                                        max_missed=10**6)))


class LoopLag:
    """The longest the event loop went without running a 10 ms ticker (a stall), counted in
    the CPU this thread spent meanwhile: a stall is the loop busy with one peer's bytes, not
    the shared machine running something else (wall-clock lag under the full suite reached
    0.52 s with no work in between, and failed a 0.5 s bound by luck)."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._greenlet = gevent.spawn(self._tick)

    def _tick(self) -> None:
        hub = gevent.get_hub()
        while True:
            hub.loop.update_now()
            before, cpu_before = hub.loop.now(), time.thread_time()
            gevent.sleep(0.01)
            hub.loop.update_now()
            late = hub.loop.now() - before - 0.01
            # Busy, not descheduled: the lag counts only as far as this thread ran.
            self.worst = max(self.worst, min(late, time.thread_time() - cpu_before))

    def stop(self) -> None:
        self._greenlet.kill()
