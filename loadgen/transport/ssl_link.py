"""The state machine of one TLS connection over TCP, under :class:`~loadgen.transport.ssl_socket.SslSocket`.

:class:`TlsLink` runs a :class:`~loadgen.protocol.openssl.tls.TlsEngine` over a gevent TCP socket:
what one recv brings goes through the engine, whose events become state changes, read
buffer data and Qt-style :class:`Signal` emissions; what the engine produces is written
without blocking the caller (a helper greenlet writes what the kernel does not take at once);
a delayed close flushes first; a failure sends what OpenSSL queued (an alert) and tears down.
"""

from __future__ import annotations

import enum
import socket as _stdsocket
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket

from loadgen.protocol.errors import LoadgenError
from loadgen.protocol.events import (
    CertCheckFailed,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    HandshakeCompleted,
)
from loadgen.protocol.openssl.tls import TlsEngine
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.transport.tcp import transfer_error, tune

#: Bytes asked of the kernel per recv.
_RECV_SIZE = 65536


class Mode(enum.Enum):
    """Which side of the handshake a socket plays (its context says)."""

    CLIENT = "client"
    SERVER = "server"


class State(enum.Enum):
    """Where the TLS link is (QtSSLSocket::State)."""

    UNCONNECTED = "unconnected"
    HOST_LOOKUP = "host lookup"
    CONNECTING = "connecting"
    HANDSHAKING = "handshaking"
    CONNECTED = "connected"
    CLOSING = "closing"  # delayed close: pending data is still being written


class Signal:
    """A Qt-style signal: ``connect(slot)``; ``emit(*args)`` calls the slots; ``count`` says how often it fired."""

    def __init__(self) -> None:
        self._slots: list[Callable[..., Any]] = []
        self.count = 0

    def connect(self, slot: Callable[..., Any]) -> None:
        self._slots.append(slot)

    def disconnect(self, slot: Callable[..., Any]) -> None:
        self._slots.remove(slot)

    def emit(self, *args: Any) -> None:
        self.count += 1
        for slot in list(self._slots):
            slot(*args)


class TlsLink:
    """A TLS connection's state, buffers and signals, and the I/O that moves them (see the module docstring)."""

    def __init__(self, context: TlsContext, sock: socket.socket | None, close_timeout: float) -> None:
        self.context = context
        self.mode = Mode.SERVER if context.is_server else Mode.CLIENT
        self._sock = sock
        self._close_timeout = close_timeout
        self._engine: TlsEngine | None = None
        self._state = State.UNCONNECTED
        self._read_buffer = bytearray()
        self._out = bytearray()
        self._writer: gevent.Greenlet | None = None
        self._error: LoadgenError | None = None
        self.bytes_sent = 0  # TLS bytes on the wire, both ways
        self.bytes_received = 0
        self.peer_closed = False
        self.connected = Signal()  # client: handshake done
        self.accepted = Signal()  # server: handshake done
        self.ready_read = Signal()
        self.connection_closed = Signal()  # the peer closed (close_notify or EOF)
        self.delayed_close_finished = Signal()
        self.error_occurred = Signal()  # (code: str)
        self.cert_check_failed = Signal()  # (verify code: int, description: str)
        self.state_changed = Signal()  # (State)
        if sock is not None:
            tune(sock)

    def _set_state(self, state: State) -> None:
        if state is not self._state:
            self._state = state
            self.state_changed.emit(state)

    def _receive(self, timeout: float | None) -> bool:
        """One recv into the engine and its events; False on timeout or when the link ended."""
        sock, engine = self._sock, self._engine
        assert sock is not None and engine is not None
        data: bytes | None = None
        try:
            with gevent.Timeout(timeout, False):
                data = sock.recv(_RECV_SIZE)
        except OSError as exc:
            if self._sock is not None:
                self._failed(transfer_error(exc, "read"))
            return False
        if data is None:
            return False
        self.bytes_received += len(data)
        if data:
            engine.receive_data(data)
        else:
            engine.receive_eof()
        self._process_events()
        self._pump_out()
        return self._state in (State.HANDSHAKING, State.CONNECTED)

    def _process_events(self) -> None:
        engine = self._engine
        assert engine is not None
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                self._read_buffer += event.data
            elif isinstance(event, HandshakeCompleted):
                self._set_state(State.CONNECTED)
                (self.connected if self.mode is Mode.CLIENT else self.accepted).emit()
            elif isinstance(event, CertCheckFailed):
                self.cert_check_failed.emit(event.code, event.description)
            elif isinstance(event, ConnectionClosed):
                self.peer_closed = True
                self._pump_out()  # our close_notify in answer, if it fits at once
                self._teardown()
                self.connection_closed.emit()
            elif isinstance(event, ConnectionFailed):
                self._failed(event.error)

    def _pump_out(self) -> None:
        """Queue what the engine produced; write what the kernel takes now; a greenlet does the rest."""
        if self._engine is not None:
            self._out += self._engine.data_to_send()
        if not self._out or self._sock is None or self._writer is not None:
            return
        try:
            sent = self._sock.send(self._out, 0, timeout=0.0)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._failed(transfer_error(exc, "write"))
            return
        self.bytes_sent += sent
        del self._out[:sent]
        if self._out:
            self._writer = gevent.spawn(self._write_loop)

    def _write_loop(self) -> None:
        try:
            while self._out and self._sock is not None:
                sent = self._sock.send(bytes(self._out[:_RECV_SIZE]))
                self.bytes_sent += sent
                del self._out[:sent]
        except OSError as exc:
            if self._sock is not None:
                self._writer = None
                self._failed(transfer_error(exc, "write"))
        finally:
            self._writer = None

    def _delayed_close(self) -> None:
        # Keep reading (and dropping) meanwhile: a peer blocked on writing to us would
        # otherwise never read what we are flushing. Once flushed, half-close and wait for
        # the peer to close too: closing with unread input would send a TCP RST, and a
        # reset can make the peer's kernel drop data it has not read yet.
        drain = gevent.spawn(self._discard_input)
        deadline = time.monotonic() + self._close_timeout
        try:
            if self._writer is not None:
                self._writer.join(self._close_timeout)
            if self._sock is not None and not self._out:
                try:
                    self._sock.shutdown(_stdsocket.SHUT_WR)
                except OSError:
                    pass
                drain.join(max(deadline - time.monotonic(), 0.0))
        finally:
            drain.kill()
            self._teardown()
            self.delayed_close_finished.emit()

    def _discard_input(self) -> None:
        sock = self._sock
        try:
            while sock is not None and sock.recv(_RECV_SIZE):
                pass
        except OSError:
            pass

    def _failed(self, error: LoadgenError) -> bool:
        self._error = error.with_traceback(None)  # kept: its frames would hold this object in a cycle
        if self._engine is not None:
            self._out += self._engine.data_to_send()  # e.g. the alert OpenSSL queued
        if self._out and self._sock is not None and self._writer is None:
            try:
                self._sock.send(self._out, 0, timeout=0.0)
            except OSError:
                pass
        self._out.clear()
        self._teardown()
        self.error_occurred.emit(error.code)
        return False

    def _teardown(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer is not gevent.getcurrent():
            writer.kill(block=False)
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
        self._set_state(State.UNCONNECTED)
