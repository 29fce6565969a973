"""SslSocket: QtSSLSocket's feature set on a gevent TCP socket and a :class:`~loadgen.protocol.tls.TlsEngine`.

Client or server mode (from the context); :meth:`SslSocket.connect_to_host` resolves,
connects and handshakes, or an already connected socket is wrapped and the handshake
started explicitly (:meth:`~SslSocket.start_client_handshake`, Qt's sslConnect;
:meth:`~SslSocket.start_server_handshake`, Qt's sslAccept). Reads are line or block
oriented over a read buffer; writes never block the caller (what the kernel does not
take at once is written by a helper greenlet), so :meth:`~SslSocket.close` can be a
delayed close that flushes pending data first, as Qt's is.

Qt's signals are :class:`Signal` attributes (``connected``, ``accepted``, ``ready_read``,
``connection_closed``, ``delayed_close_finished``, ``error_occurred``,
``cert_check_failed``, ``state_changed``). Blocking calls (``connect_to_host``,
``wait_for_ready_read``, ...) block only the calling greenlet and return ``False`` on
failure, leaving the reason in :attr:`~SslSocket.error` / :attr:`~SslSocket.error_string`.
"""

from __future__ import annotations

import enum
import socket as _stdsocket
import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent import socket

from ..credentials import PskChooser
from ..errors import (
    ConnectionRefused,
    ConnectionReset,
    ConnectTimeout,
    HandshakeTimeout,
    HostNotFound,
    LoadgenError,
    LocalProtocolError,
    SocketError,
    SocketsExhausted,
    socket_error,
)
from ..protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from ..protocol.tls import CertCheckFailed, CertificateInfo, TlsContext, TlsEngine
from .fds import check_room

#: Bytes asked of the kernel per recv.
_RECV_SIZE = 65536


class Mode(enum.Enum):
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


class SslSocket:
    """A TLS socket in client or server mode (see the module docstring)."""

    def __init__(
        self,
        context: TlsContext,
        sock: socket.socket | None = None,
        *,
        server_name: str | None = None,
        session: Any = None,
        psk: PskChooser | None = None,
        close_timeout: float = 30.0,
    ) -> None:
        """``sock``: an already connected gevent TCP socket to wrap (then call a
        ``start_*_handshake``). ``server_name``: SNI and the name to verify (client; default:
        the host given to :meth:`connect_to_host`). ``session``: a session to resume.
        ``psk``: the identity/key chooser of a client with a PSK context.
        """
        self.context = context
        self.mode = Mode.SERVER if context.is_server else Mode.CLIENT
        self._sock = sock
        self._server_name = server_name
        self._session = session
        self._psk = psk
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
            _tune(sock)

    # -- connecting -----------------------------------------------------------

    def connect_to_host(self, host: str, port: int, *, timeout: float = 30.0,
                        source_address: str | None = None) -> bool:
        """Resolve ``host``, connect and handshake within ``timeout`` seconds (client mode)."""
        if self.mode is not Mode.CLIENT or self._sock is not None or self._state is not State.UNCONNECTED:
            raise LocalProtocolError("connect_to_host needs an unconnected client socket")
        deadline = time.monotonic() + timeout
        self._error = None
        self._set_state(State.HOST_LOOKUP)
        try:
            with gevent.Timeout(timeout, ConnectTimeout(f"cannot resolve {host} in {timeout:g} s")):
                infos = socket.getaddrinfo(host, port, 0, _stdsocket.SOCK_STREAM)
        except (OSError, UnicodeError) as exc:
            return self._failed(HostNotFound(f"{host}: {exc}"))
        except ConnectTimeout as exc:
            return self._failed(exc)
        self._set_state(State.CONNECTING)
        try:
            self._sock = _connect(infos, host, port, deadline, source_address)
        except LoadgenError as exc:
            return self._failed(exc)
        return self._handshake(deadline, self._server_name or host)

    def start_client_handshake(self, timeout: float = 30.0) -> bool:
        """Handshake as a client over the wrapped, already connected socket (Qt: sslConnect)."""
        if self.mode is not Mode.CLIENT:
            raise LocalProtocolError("start_client_handshake needs a client context")
        return self._handshake(time.monotonic() + timeout, self._server_name)

    def start_server_handshake(self, timeout: float = 30.0) -> bool:
        """Wait for and answer the client's handshake on the wrapped socket (Qt: sslAccept)."""
        if self.mode is not Mode.SERVER:
            raise LocalProtocolError("start_server_handshake needs a server context")
        return self._handshake(time.monotonic() + timeout, None)

    def _handshake(self, deadline: float, name: str | None) -> bool:
        if self._sock is None or self._engine is not None:
            raise LocalProtocolError("a handshake needs a connected socket that has not handshaken yet")
        if self.mode is Mode.CLIENT:
            engine = TlsEngine.client(self.context, server_name=name, session=self._session, psk=self._psk)
        else:
            engine = TlsEngine.server(self.context)
        self._engine = engine
        self._set_state(State.HANDSHAKING)
        engine.start()
        self._pump_out()
        while self._state is State.HANDSHAKING:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (not self._receive(remaining) and self._state is State.HANDSHAKING):
                return self._failed(HandshakeTimeout("no TLS handshake in time"))
        # Done, unless it failed. The peer may have closed right after it (a client that
        # only handshakes): then the state is already UNCONNECTED, but it did complete.
        if not engine.handshake_done or self._error is not None:
            return False
        if self._read_buffer:
            self.ready_read.emit()
        return True

    # -- reading ------------------------------------------------------------

    def wait_for_ready_read(self, timeout: float | None = None) -> bool:
        """Block until new application data arrived (True), or timeout / close / error (False)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._state is State.CONNECTED:
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return False
            before = len(self._read_buffer)
            received = self._receive(remaining)
            if len(self._read_buffer) > before:  # even if the peer closed right after it
                self.ready_read.emit()
                return True
            if not received:
                return False
        return False

    def wait_for_input(self, timeout: float | None = None) -> bool:
        """Wait for one chunk of TLS input of any kind (e.g. TLS 1.3 session tickets) and
        process it; False on timeout or when the link ended."""
        if self._state is not State.CONNECTED:
            return False
        before = len(self._read_buffer)
        received = self._receive(timeout)
        if len(self._read_buffer) > before:
            self.ready_read.emit()
        return received

    @property
    def bytes_available(self) -> int:
        return len(self._read_buffer)

    def can_read_line(self) -> bool:
        return b"\n" in self._read_buffer

    def read_line(self) -> bytes:
        """One line including its ``\\n``, or ``b""`` when :meth:`can_read_line` is False."""
        end = self._read_buffer.find(b"\n")
        if end < 0:
            return b""
        line = bytes(self._read_buffer[: end + 1])
        del self._read_buffer[: end + 1]
        return line

    def read(self, maxlen: int) -> bytes:
        data = bytes(self._read_buffer[:maxlen])
        del self._read_buffer[:maxlen]
        return data

    def read_all(self) -> bytes:
        data = bytes(self._read_buffer)
        self._read_buffer.clear()
        return data

    # -- writing and closing ----------------------------------------------------

    def write(self, data: bytes) -> int:
        """Encrypt and queue ``data``; returns ``len(data)``. Raises when not connected."""
        if self._state is not State.CONNECTED or self._engine is None:
            raise LocalProtocolError(f"cannot write: the socket is {self._state.value}")
        self._engine.send(data)
        self._pump_out()
        return len(data)

    @property
    def bytes_to_write(self) -> int:
        """Encrypted bytes queued but not yet taken by the kernel."""
        return len(self._out)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until everything queued has gone to the kernel (Qt: waitForBytesWritten)."""
        writer = self._writer
        if writer is not None:
            writer.join(timeout)
        return not self._out

    def close(self) -> None:
        """Close with close_notify. With data still pending, the close is delayed: the state is
        CLOSING until it has been written, then ``delayed_close_finished`` fires. Unread data is dropped."""
        self._read_buffer.clear()
        if self._state is State.CLOSING or self._sock is None:
            return
        pending = bool(self._out)
        if self._engine is not None:
            self._engine.close()
        self._pump_out()
        if pending and self._sock is not None:
            self._set_state(State.CLOSING)
            gevent.spawn(self._delayed_close)
            return
        self._teardown()

    def abort(self) -> None:
        """Drop the connection at once: no close_notify, pending data discarded."""
        self._out.clear()
        self._teardown()

    # -- state and properties ------------------------------------------------------

    @property
    def state(self) -> State:
        return self._state

    @property
    def error(self) -> str | None:
        """Stable code of the most recent error (e.g. ``connection-refused``, ``cert-expired``)."""
        return self._error.code if self._error is not None else None

    @property
    def error_string(self) -> str:
        """A human description of the most recent error ("" when none)."""
        return str(self._error) if self._error is not None else ""

    @property
    def last_error(self) -> LoadgenError | None:
        return self._error

    @property
    def engine(self) -> TlsEngine | None:
        return self._engine

    @property
    def socket(self) -> socket.socket | None:
        return self._sock

    def peer_certificate(self) -> CertificateInfo | None:
        cert = self._engine.peer_certificate if self._engine is not None else None
        return CertificateInfo.from_x509(cert) if cert is not None else None

    def local_certificate(self) -> CertificateInfo | None:
        cert = self._engine.local_certificate if self._engine is not None else None
        return CertificateInfo.from_x509(cert) if cert is not None else None

    def ciphers(self) -> list[str]:
        """TLS 1.2 ciphers this socket may negotiate (Qt: ciphers())."""
        return self._engine.available_ciphers if self._engine is not None else []

    @property
    def cipher(self) -> str | None:
        return self._engine.cipher if self._engine is not None else None

    @property
    def protocol_version(self) -> str | None:
        return self._engine.version if self._engine is not None and self._engine.handshake_done else None

    @property
    def session_reused(self) -> bool:
        return self._engine is not None and self._engine.resumed

    @property
    def session(self) -> Any:
        """The TLS session to pass to a later socket's ``session=`` for resumption."""
        return self._engine.session if self._engine is not None else None

    # -- internals ----------------------------------------------------------------

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
                self._failed(_socket_error(exc, "read"))
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
            self._failed(_socket_error(exc, "write"))
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
                self._failed(_socket_error(exc, "write"))
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
        self._error = error
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


def _tune(sock: socket.socket) -> None:
    # Pings are small request/response exchanges: Nagle plus delayed ACKs would add ~40 ms.
    try:
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    except OSError:
        pass


def _connect(infos: list, host: str, port: int, deadline: float, source: str | None) -> socket.socket:
    """Connect to the first address that accepts, within the deadline."""
    error: LoadgenError = HostNotFound(f"{host}: no address")
    for family, kind, proto, _, address in infos:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = None
        try:
            # Inside the try: at the open-file limit socket() itself fails (EMFILE): a socket-error.
            sock = socket.socket(family, kind, proto)
            check_room(sock.fileno(), "cannot open a TCP socket")
            if source:
                sock.bind((source, 0))
            with gevent.Timeout(remaining, ConnectTimeout(f"{host}:{port}: no TCP connection in time")):
                sock.connect(address)
        except ConnectionRefusedError:
            if sock is not None:
                sock.close()
            error = ConnectionRefused(f"{host}:{port} refused the connection (TCP RST)")
            continue
        except ConnectTimeout as exc:
            if sock is not None:
                sock.close()
            error = exc
            break
        except SocketsExhausted as exc:
            if sock is not None:
                sock.close()
            error = exc
            break
        except OSError as exc:
            if sock is not None:
                sock.close()
            error = socket_error(exc, f"cannot connect to {host}:{port}")
            continue
        _tune(sock)
        return sock
    raise error


def _socket_error(exc: OSError, during: str) -> LoadgenError:
    if isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError):
        return ConnectionReset(f"connection reset during {during}")
    return SocketError(f"{during} failed: {exc}")
