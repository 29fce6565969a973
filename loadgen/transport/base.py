"""What a DTLS and a TLS association share: who it is, where it reports, how it speaks, and
the loop-side skeleton both hang their bytes on.

Both clients are one device's connection to one target. They take the same identity, key,
ping plan and source address, report to a :class:`~loadgen.stats.facts.Sink`, and say
what happens in Qt's words (:class:`~loadgen.stats.facts.Message`). Both are event driven
in the same way: loop callbacks run through :meth:`AssociationBase._guarded` (an error ends
the association, never the loop), one timer is re-armed for the next thing due
(:meth:`AssociationBase._set_timer`), and once established the
:class:`~loadgen.traffic.workload.Workload` decides what goes out when. Each subclass moves
its own bytes: ``_send_due``, ``_on_timer``, ``_fail``, ``_finish``, ``start`` and ``close``.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable
from typing import Any

from gevent import get_hub
from gevent.event import AsyncResult

from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import InternalError, LoadgenError
from loadgen.stats.facts import Message, Sink
from loadgen.traffic.workload import Workload, WorkloadPlan

INFO, WARNING, ERROR = logging.INFO, logging.WARNING, logging.ERROR

# Association states (DTLS has no CONNECTING, nor TICKETS: the wait for TLS 1.3 session tickets).
NEW, CONNECTING, HANDSHAKING, TICKETS, ESTABLISHED, DONE = range(6)
# Timers due further than COALESCE_BEYOND seconds ahead fire on ticks of TICK seconds (see
# _set_timer): at most 5 ms late, never for a timer due sooner (back-to-back requests, retransmits).
TICK = 0.005
COALESCE_BEYOND = 0.02


class AssociationBase:
    """The fields, the loop skeleton and the workload plumbing both associations have."""

    # Where an unexpected exception was met, for the internal-error message (by callback name).
    _CALLBACKS: dict[str, str] = {}

    def __init__(self, name: str, target: str, address: tuple[str, int], sink: Sink, *,
                 identity: bytes | None, key: Secret | None, ping: WorkloadPlan, source_address: str | None,
                 rng: random.Random | None, message_level: int) -> None:
        self.name = name
        self.target = target
        self.address = address
        self._sink = sink
        self._identity = identity
        self._key = key
        self._ping = ping
        self._source = source_address
        # Seeding a Random costs more than a ping: only a caller that wants a seed brings one.
        self._uniform = rng.uniform if rng is not None else random.uniform
        # Messages below this level are not even formatted (a run logs warnings and up).
        self._message_level = message_level
        self._state = NEW
        self._handshake_only = False
        self._done: AsyncResult = AsyncResult()
        self._timer: Any = None
        self._timer_at = math.inf  # when the running timer fires
        # The workload (pings, requests), once established.
        self._tracker: Workload | None = None

    @property
    def pings_sent(self) -> int:
        """Pings sent so far."""
        return self._tracker.requests_sent if self._tracker is not None else 0

    # -- public -------------------------------------------------------------

    def start(self) -> None:
        """Begin: connect and handshake; returns at once."""
        raise NotImplementedError

    def close(self) -> None:
        """Say goodbye, release the socket, report the end. Idempotent."""
        raise NotImplementedError

    def run(self) -> LoadgenError | None:
        """Start, then wait until the association ends; returns the error that ended it."""
        self.start()
        return self.wait()

    def wait(self) -> LoadgenError | None:
        """Block this greenlet until the association ends; closes it on the way out."""
        try:
            result: LoadgenError | None = self._done.get()
            return result
        finally:
            self.close()

    def wake(self) -> None:
        """Poll the workload now, from any greenlet (a caller queued a request): what is due goes out."""
        if self._state == ESTABLISHED and self._tracker is not None:
            self._guarded(self._poll_now)

    # -- the workload -------------------------------------------------------

    def _start_workload(self) -> None:
        """The handshake is done: the workload starts, and what it has due at once goes out."""
        self._state = ESTABLISHED
        self._tracker = self._ping.workload(self.name, self.target, self._sink, uniform=self._uniform)
        now = time.perf_counter()
        self._tracker.start(now)
        self._send_due(self._tracker, now)

    def _poll_now(self) -> None:
        assert self._tracker is not None
        self._send_due(self._tracker, time.perf_counter())
        if self._state == ESTABLISHED:
            self._arm()  # a request's deadline may come before the timer running

    def _send_due(self, tracker: Workload, now: float) -> None:
        """Time out what is overdue, send whatever the workload has due."""
        raise NotImplementedError

    # -- callbacks from the loop --------------------------------------------

    def _guarded(self, callback: Any, *args: Any) -> None:
        """Run a loop callback; an error ends this association, never the event loop.

        The error is kept without its traceback (``with_traceback(None)``), here and wherever an
        association catches one: kept as the association's result, its frames (``self`` among
        their locals) make a cycle that only a full garbage collection frees, and a frozen heap
        (Locust runs freeze it) never: every failed association a reconnect replaced leaked."""
        try:
            callback(*args)
        except LoadgenError as exc:
            self._fail(exc.with_traceback(None))
        except Exception as exc:  # noqa: BLE001 - a bug must not take the hub down, nor the others
            self._internal_error(exc, callback)

    # The two callbacks that run per request get their own guard: what _guarded does, without
    # its generic call (a frame and an argument tuple less, ~600 instructions per datagram).

    def _readable(self) -> None:
        """The read watcher's callback: :meth:`_on_readable`, guarded as :meth:`_guarded` does."""
        try:
            self._on_readable()
        except LoadgenError as exc:
            self._fail(exc.with_traceback(None))
        except Exception as exc:  # noqa: BLE001 - as in _guarded
            self._internal_error(exc, self._on_readable)

    def _timer_fired(self) -> None:
        """The timer's callback: :meth:`_on_timer`, guarded as :meth:`_guarded` does."""
        try:
            self._on_timer()
        except LoadgenError as exc:
            self._fail(exc.with_traceback(None))
        except Exception as exc:  # noqa: BLE001 - as in _guarded
            self._internal_error(exc, self._on_timer)

    def _internal_error(self, exc: Exception, callback: Any) -> None:
        """End this association with ``internal-error``: the attempt in flight fails once, one
        (rate-limited) line says which exception, never its arguments (they may hold peer bytes)."""
        where = self._CALLBACKS.get(getattr(callback, "__name__", ""))
        error = InternalError(f"unexpected {type(exc).__name__}" + (f" in {where}" if where else ""))
        if self._state not in (CONNECTING, HANDSHAKING):  # _fail says why a handshake failed
            self._say(ERROR, f"association ended - {error}")
        try:
            self._fail(error)
        except Exception:  # noqa: BLE001 - a bug in the accounting too: still end, alone
            self._finish(error)

    def _on_readable(self) -> None:
        raise NotImplementedError

    def _on_timer(self) -> None:
        raise NotImplementedError

    def _fail(self, error: LoadgenError) -> None:
        raise NotImplementedError

    def _finish(self, result: LoadgenError | None) -> None:
        raise NotImplementedError

    # -- helpers ------------------------------------------------------------

    def _arm(self) -> None:
        """Re-arm the one timer for the next thing due."""
        raise NotImplementedError

    def _set_timer(self, wake: float) -> None:
        """Have the one timer fire at ``wake`` (perf_counter time), unless it fires before anyway."""
        if self._timer is not None:
            if self._timer_at <= wake:
                # The running timer fires first: _on_timer finds nothing due yet and arms
                # again. Cheaper than a new timer on every step of a handshake or ping.
                return
            self._timer.stop()
        now = time.perf_counter()
        if math.isfinite(wake) and wake - now >= COALESCE_BEYOND:
            # Rounded up to the next tick: the associations due within one tick fire in one turn
            # of the loop, and their replies come back together. Thousands pinging spread out
            # (jitter) otherwise wake the loop once each, and a wake-up costs more than the ping
            # here (2,000 associations at 1/s with 10% jitter: 53 -> 39 us of CPU per ping).
            wake = math.ceil(wake / TICK) * TICK
        delay = wake - now
        self._timer = get_hub().loop.timer(max(delay, 0.0) if math.isfinite(delay) else 3600.0)
        self._timer_at = wake
        self._timer.start(self._timer_fired, update=True)

    def on_end(self, callback: Callable[[LoadgenError | None], None]) -> None:
        """Have the event loop call ``callback(error)`` once the association has ended (what ``run()``
        returns), for a caller that keeps no greenlet waiting (:class:`~loadgen.locust.lifeline.Lifeline`)."""
        self._done.rawlink(lambda done: callback(done.value))

    def _choose_psk(self, hint: bytes | None) -> tuple[bytes, Secret]:
        self._say(INFO, "providing pre-shared key ...")
        assert self._identity is not None and self._key is not None
        return self._identity, self._key

    def _say(self, level: int, text: str) -> None:
        if level >= self._message_level:
            self._sink.record(Message(level, self.name, f"{self.name}: {text}"))
