"""What a client transport drives once its association is up: the :class:`Workload` protocol.

The transports (DTLS, TLS) move bytes and own the clock; a workload decides what goes out
when and how each request ends, and reports facts to its sink. :class:`~.tracker.RequestTracker`
(the ping, one request at a time) is one; request steps and CoAP are others. A
:class:`WorkloadPlan` is the built, shared form a scenario section becomes: it makes one
workload per association.

The contract, in the transport's words:

- ``start(now)`` once, when the association is established;
- ``poll(now)`` after start, after every reply and whenever ``get_timer()`` is due: it returns
  the next datagram (DTLS) or line (TLS) to send, or None; the transport sends it, calls
  ``sent(size)`` (or ``abandon(error)`` when it cannot send it) and polls again until None;
- ``receive(reply, size, now)`` for every decrypted reply; False: it answered nothing (logged);
- ``fail(error, now)`` when the association ends: whatever is outstanding fails with ``error``.

``poll`` raises a :class:`~loadgen.protocol.errors.LoadgenError` to end the association
(e.g. ``max_missed`` requests in a row unanswered). While the plan's :class:`Gate` is closed
``poll`` begins no request (it still times out and retransmits what is outstanding).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from loadgen.protocol.errors import LoadgenError
from loadgen.stats.facts import Sink

#: ``uniform(a, b)``: the jitter draw (a seeded ``Random``'s for a reproducible run).
Uniform = Callable[[float, float], float]


class Gate:
    """Whether the workloads of a run may begin requests: one per run's session, shared by its
    plans (and its devices' reconnects and churn handshakes), closed when Locust begins to stop the users.

    Stopping 100,000 users is a burst of CPU on every process at once (each worker closing its
    associations, the server taking their close_notifies): requests begun into it measured the
    generator's teardown, not the server (a run's p99 of 2.3-3.7 s against 35-48 ms while
    holding, 2,955 pings timed out), so none begins once the stop has. What is outstanding
    then ends as answered, failed, or in flight when its association closes first. A workload
    that found the gate closed begins nothing again (its association ends with the stop); the
    gate opens again for the workloads of the session's next test.
    """

    __slots__ = ("open",)

    def __init__(self) -> None:
        self.open = True


class Workload(Protocol):
    """One association's application traffic, sans-I/O (time passed in)."""

    requests_sent: int

    @property
    def outstanding(self) -> int:
        """Requests awaiting their reply."""
        ...

    def start(self, now: float) -> None: ...

    def get_timer(self) -> float:
        """When :meth:`poll` has something to do next; ``inf``: nothing."""
        ...

    def poll(self, now: float) -> bytes | None: ...

    def sent(self, size: int) -> None: ...

    def abandon(self, error: LoadgenError) -> None: ...

    def receive(self, reply: bytes, size: int, now: float) -> bool: ...

    def fail(self, error: LoadgenError, now: float) -> None: ...


class WorkloadPlan(Protocol):
    """A scenario's traffic section, built once and shared by the associations of a run."""

    def for_device(self, *, n: int, target: str) -> WorkloadPlan:
        """This plan for device ``n`` talking to ``target`` (itself when nothing differs per device)."""
        ...

    def workload(self, name: str, target: str, sink: Sink, *, uniform: Uniform) -> Workload:
        """A fresh workload for association ``name`` (its facts name ``target``)."""
        ...
