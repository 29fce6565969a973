"""The I/O under :class:`~loadgen.transport.tls_association.TlsAssociation`, on gevent's loop.

A non-blocking C ``_socket`` TCP stream: connect with ``connect_ex`` and a write watcher until
connected (none when ``connect`` completed it, as over loopback), a bounded output queue written
by a write watcher that runs only while the kernel does not take everything at once, one timer
re-armed for the next thing due, and a teardown that stops every watcher. The association above
it reads, handshakes and keeps the accounts.
"""

from __future__ import annotations

import _socket
import errno
from typing import Any

from gevent import get_hub

from loadgen.protocol.errors import ConnectionRefused, LoadgenError, SocketError, SocketsExhausted, socket_error
from loadgen.protocol.openssl.tls import TlsEngine
from loadgen.transport.base import AssociationBase
from loadgen.transport.tcp import AddressInfo, connect_failure, is_connected, open_stream, transfer_error

#: Most encrypted output queued for a server that does not read (the workload's window and
#: max_missed end such an association long before; this bounds a bug or a huge payload).
MAX_QUEUED = 4 * 1024 * 1024
_WRITE = 2  # libev EV_WRITE


class TlsStreamIo(AssociationBase):
    """Socket, watchers and output queue of one event-driven TLS client (see the module docstring)."""

    _sock: Any
    _engine: TlsEngine | None

    def _init_io(self) -> None:
        self._sock = None
        self._engine = None
        self._infos: AddressInfo = []
        self._reader: Any = None
        self._writer: Any = None
        self._out = bytearray()  # encrypted bytes the kernel has not taken yet
        self.bytes_sent = 0  # TLS bytes on the wire, both ways
        self.bytes_received = 0

    # The association's: it begins once the TCP connection is up.
    def _on_connected(self) -> None:
        raise NotImplementedError

    def _connect_next(self, error: LoadgenError | None) -> None:
        """Connect to the next address (non-blocking); the write watcher says when it is done, unless
        it is done already. ``error``: why the one before failed (None: none was tried), raised when
        none is left."""
        host, port = self.address
        while self._infos:
            family, kind, proto, _, address = self._infos.pop(0)
            try:
                sock, code = open_stream(family, kind, proto, address, self._source)
            except SocketsExhausted:
                raise
            except OSError as exc:
                error = socket_error(exc, f"cannot connect to {host}:{port}")
                continue
            if code in (0, errno.EINPROGRESS):
                self._sock = sock
                if code == 0 or is_connected(sock):
                    # Over loopback the three-way handshake completes inside connect(): waiting for
                    # the write watcher cost a turn of the loop and three syscalls per connection.
                    self._on_connected()
                    return
                self._writer = get_hub().loop.io(sock.fileno(), _WRITE)
                self._writer.start(self._guarded, self._on_connect_done)
                return
            error = connect_failure(code, host, port)
            sock.close()
        # Made here, not by the caller: an exception and its message per connection cost ~3 us.
        raise error if error is not None else ConnectionRefused(f"{host}:{port}: no address")

    def _on_connect_done(self) -> None:
        """The write watcher of a connect in progress fired: connected, or on to the next address."""
        self._writer.stop()
        self._writer = None
        code = self._sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
        if code:
            sock, self._sock = self._sock, None
            sock.close()
            self._connect_next(connect_failure(code, *self.address))
            return
        self._on_connected()

    def _on_writable(self) -> None:
        """The kernel takes more: write what is queued; stop watching once it is all out."""
        try:
            sent = self._sock.send(self._out)
        except BlockingIOError:
            return
        except OSError as exc:
            raise transfer_error(exc, "write") from None
        self.bytes_sent += sent
        del self._out[:sent]
        if not self._out:
            self._writer.stop()
            self._writer = None

    # -- helpers ------------------------------------------------------------

    def _flush(self) -> int:
        """Send what the engine produced, queueing what the kernel does not take; returns its size."""
        engine, sock = self._engine, self._sock
        if engine is None or sock is None:
            return 0
        data = engine.data_to_send()
        total = len(data)
        if not total:
            return 0
        if self._writer is None:  # nothing queued before it: straight to the kernel
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError as exc:
                raise transfer_error(exc, "write") from None
            self.bytes_sent += sent
            if sent == total:
                return total
            self._writer = get_hub().loop.io(sock.fileno(), _WRITE)
            self._writer.start(self._guarded, self._on_writable)
            data = data[sent:]
        self._out += data
        if len(self._out) > MAX_QUEUED:
            raise SocketError(f"the server does not read: over {MAX_QUEUED // 1024} KiB queued for it")
        return total

    def _release(self) -> None:
        """Stop every watcher, close the socket, and let the engine go of our PSK callback (a cycle)."""
        if self._engine is not None:
            self._engine.forget_chooser()
        for watcher in (self._reader, self._writer, self._timer):
            if watcher is not None:
                watcher.stop()
        self._reader = self._writer = self._timer = None
        self._out.clear()
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
