"""A delayed close of a non-blocking TCP socket, on gevent's loop: flush, half-close, wait for the peer.

An event-driven TLS client that closes with output still queued (its close_notify behind data
the kernel has not taken) hands the socket here and is done. Meanwhile input is read and
dropped: a peer blocked on writing to us would otherwise never read what we are flushing.
Once flushed, the socket half-closes and waits for the peer to close too: closing with unread
input would send a TCP RST, which can make the peer's kernel drop data it has not read yet.
Everything ends, at the latest, after ``timeout`` seconds.
"""

from __future__ import annotations

import _socket
from collections.abc import Callable
from typing import Any

from gevent import get_hub

_READ, _WRITE = 1, 2  # libev EV_READ, EV_WRITE
_RECV_SIZE = 65536


class DelayedClose:
    """Flushes ``pending`` to ``sock`` (a non-blocking C socket), then closes it as the module says.

    ``on_release``: called once, with this object, when the socket has been closed (an owner that
    keeps its delayed closes, such as a server that must end them all when it stops)."""

    def __init__(self, sock: Any, pending: bytearray, timeout: float,
                 on_release: Callable[[DelayedClose], None] | None = None) -> None:
        loop = get_hub().loop
        self._sock: Any = sock
        self._out = pending
        self._on_release = on_release
        self._writer: Any = loop.io(sock.fileno(), _WRITE)
        self._reader: Any = loop.io(sock.fileno(), _READ)
        self._timer: Any = loop.timer(timeout)
        self._writer.start(self._on_writable)
        self._reader.start(self._on_readable)
        self._timer.start(self.release)

    def _on_writable(self) -> None:
        try:
            del self._out[: self._sock.send(self._out)]
        except BlockingIOError:
            return
        except OSError:
            self.release()
            return
        if not self._out:
            self._writer.stop()
            try:
                self._sock.shutdown(_socket.SHUT_WR)
            except OSError:
                self.release()

    def _on_readable(self) -> None:
        try:
            if self._sock.recv(_RECV_SIZE):
                return
        except BlockingIOError:
            return
        except OSError:
            pass
        self.release()  # the peer closed too (or reset): done

    def release(self) -> None:
        """Stop and close now (idempotent)."""
        for watcher in (self._writer, self._reader, self._timer):
            watcher.stop()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            if self._on_release is not None:
                self._on_release(self)
