"""Device numbers for plain Locust workers: the master tells each worker its place.

``loadgen run --processes N`` gives each worker its index and the worker count on the command
line. Plain ``locust --worker`` processes are all alike, so each would number its devices 0, 1,
2, ...: duplicate PSK identities, and half of a key store of exactly ``count`` identities unused.
So at each test start the master sends every worker it is about to give users (sorted by client
id) its index ``i`` and the count ``n``; the worker then numbers its devices ``i + k * n`` from
``k = 0`` (:meth:`~loadgen.locust.users.Session.renumber`).

Order: Locust fires ``test_start`` on the master before it sends the spawn messages
(``MasterRunner.start``), the master's messages to one worker travel in order over its zmq
connection, and the worker handles a non-concurrent custom message inline, so a worker is
renumbered before it spawns its first user. A worker that joins mid-run is not told (Locust fires
no ``test_start`` for it): it keeps numbering from 0 with stride 1 until the next test start.
"""

from __future__ import annotations

import logging
from typing import Any

from loadgen.locust.users import Session

log = logging.getLogger("loadgen")

#: The custom message type (master -> worker): ``{"index": i, "count": n}``.
MESSAGE = "loadgen_numbering"


def number_workers(runner: Any) -> None:
    """On a master: at each test start, tell every worker it dispatches users to its index and the count."""

    def tell(**_: Any) -> None:
        clients = runner.clients
        ids = sorted(client.id for client in clients.ready + clients.running + clients.spawning)
        for index, client_id in enumerate(ids):
            runner.send_message(MESSAGE, {"index": index, "count": len(ids)}, client_id)

    runner.environment.events.test_start.add_listener(tell)


class WorkerPlace:
    """On a worker: the place the master last gave it, applied to the session once there is one.

    Made before the worker loads anything (so before it could handle a message from the master),
    bound to the session when that exists: whichever comes first, the session ends up numbered.
    """

    def __init__(self, runner: Any) -> None:
        self.place: tuple[int, int] | None = None
        self._session: Session | None = None
        runner.register_message(MESSAGE, self._told)

    def bind(self, session: Session) -> None:
        """Number ``session``'s devices by the place the master gave (now, or when it does)."""
        self._session = session
        if self.place is not None:
            session.renumber(*self.place)

    def _told(self, environment: Any, msg: Any, **_: Any) -> None:
        data = msg.data if isinstance(msg.data, dict) else {}
        index, count = data.get("index"), data.get("count")
        if not (type(index) is int and type(count) is int and 0 <= index < count):
            log.warning("loadgen: ignored a numbering message from the master without a valid index and count")
            return
        self.place = (index, count)
        if self._session is not None:
            self._session.renumber(index, count)
