"""Open files a client socket may not take: the last few stay free for Locust and loadgen.

At the open-file limit everything that opens a file fails, not only our sockets: Locust's
CPU monitor (psutil reads /proc) dies with a traceback, results cannot be written. So a
client socket that would leave fewer than :data:`RESERVE` files free is refused like one
``socket()`` itself refused (EMFILE): a ``socket-error`` of that attempt.
"""

from __future__ import annotations

import resource
import sys

from loadgen.protocol.errors import SocketsExhausted

#: Files kept free for everything else in a load process (Locust, psutil, logs, results).
RESERVE = 32


def check_room(fd: int, what: str, who: str = "") -> None:
    """Raise :class:`SocketsExhausted` when the new socket ``fd`` leaves fewer than RESERVE files free;
    its message is ``who: what: ...`` (``who``, if given, apart: no message is made per socket).

    The kernel hands out the lowest free number, so ``fd`` = k means 0..k-1 are all open."""
    global _look_from
    if fd < _look_from:
        return  # the common case: far from the limit, and no getrlimit call per socket
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]  # read again: Locust or the run may have raised it
    if soft == resource.RLIM_INFINITY:
        _look_from = sys.maxsize
        return
    _look_from = soft - RESERVE
    if fd >= _look_from:
        where = f"{who}: {what}" if who else what
        raise SocketsExhausted(f"{where}: open-file limit {soft} reached ({RESERVE} kept free for Locust and loadgen)",
                               reason="EMFILE (this process's open-file limit)")


#: The lowest file number :func:`check_room` looks at the limit for: below it there is room, as of
#: the limit it last read (0 before: it reads the limit once at the first socket). A limit raised
#: since is read when a socket reaches it; a soft limit lowered during a run is not seen before
#: that, and then ``socket()`` itself fails with EMFILE (a ``socket-error`` too).
_look_from = 0
