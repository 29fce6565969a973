"""Open files a client socket may not take: the last few stay free for Locust and loadgen.

At the open-file limit everything that opens a file fails, not only our sockets: Locust's
CPU monitor (psutil reads /proc) dies with a traceback, results cannot be written. So a
client socket that would leave fewer than :data:`RESERVE` files free is refused like one
``socket()`` itself refused (EMFILE): a ``socket-error`` of that attempt.
"""

from __future__ import annotations

import resource

from loadgen.protocol.errors import SocketsExhausted

#: Files kept free for everything else in a load process (Locust, psutil, logs, results).
RESERVE = 32


def check_room(fd: int, what: str) -> None:
    """Raise :class:`SocketsExhausted` when the new socket ``fd`` leaves fewer than RESERVE files free.

    The kernel hands out the lowest free number, so ``fd`` = k means 0..k-1 are all open."""
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft != resource.RLIM_INFINITY and fd >= soft - RESERVE:
        raise SocketsExhausted(f"{what}: open-file limit {soft} reached ({RESERVE} kept free for Locust and loadgen)",
                               reason="EMFILE (this process's open-file limit)")
