"""Blocking DTLS and TLS clients for Locust tasks (and scripts): ``request``, ``send``, ``close``.

A client is one device's connection to one target. It connects and handshakes on first use
(again after the association ended), and each call blocks the calling greenlet only: the
call goes to the association's :class:`~loadgen.traffic.calls.CallWorkload`, the client
wakes the association, and the association's own reader and timer finish the call (reply,
timeout, failure) as they finish a scenario's pings. So a call costs what a ping costs, and
is counted the same way: ``Started``/``Finished`` facts to the client's sink (Locust's
request event, loadgen's exact stats), the handshake too.

A call that fails raises :class:`RequestFailed`, which Locust takes as "reschedule the task"
(:class:`locust.exception.RescheduleTask`): the failure is already counted with its code,
the rest of the task (what depended on the reply) is skipped, no traceback is printed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import AsyncResult, Event
from locust.exception import RescheduleTask

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import InternalError, LoadgenError, LocalProtocolError
from loadgen.protocol.openssl.tls import SessionCache
from loadgen.protocol.openssl.tls_contexts import TlsContext
from loadgen.scenario.model import DtlsConfig, TlsConfig
from loadgen.stats.facts import Sink
from loadgen.traffic.calls import Call, CallPlan, CallWorkload, Expectation, reply_check
from loadgen.transport.dtls_association import DtlsAssociation
from loadgen.transport.tls_association import TlsAssociation

Association = DtlsAssociation | TlsAssociation

#: Seconds a call waits for its reply unless told otherwise.
DEFAULT_TIMEOUT = 5.0


class RequestFailed(RescheduleTask):
    """A call (or the handshake it needed) failed; ``code`` is the stable code, ``error`` the error.

    Already counted (Locust's request event, loadgen's stats): catch it to go on regardless."""

    def __init__(self, error: LoadgenError) -> None:
        super().__init__(str(error))
        self.error = error
        self.code = error.code


class Connection:
    """One association, its workload and the greenlet running it (a client's current one)."""

    def __init__(self, association: Association, workload: Any, runner: gevent.Greenlet) -> None:
        self.association = association
        self.workload = workload
        self.runner = runner

    @property
    def alive(self) -> bool:
        return not self.runner.dead and not self.workload.closed


class Connector:
    """What every blocking client has: an association made on first use (again after it ended), and
    calls that block the calling greenlet only (see the module doc). ``target`` names the facts.

    ``on_connect()``, when given, runs after each handshake, before the call that connected
    goes on (e.g. a login); when it raises, the association is closed again."""

    def __init__(self, target: str, sink: Sink, *, timeout: float = DEFAULT_TIMEOUT,
                 on_connect: Callable[[], None] | None = None) -> None:
        self.target = target
        self.timeout = timeout
        self.on_connect = on_connect
        self._sink = sink
        self._connection: Connection | None = None
        self._connecting = False

    @property
    def connected(self) -> bool:
        """Whether an association is up now."""
        return self._connection is not None and self._connection.alive

    def connect(self) -> None:
        """Connect and handshake unless connected; raises :class:`RequestFailed` when the handshake fails."""
        if self.connected or self._connecting:
            return
        self._connection = None
        up = Event()
        workload = self._workload(up.set)
        association = self._associate(CallPlan(workload))
        runner = gevent.spawn(association.run)
        runner.rawlink(lambda ended: (up.set(), workload.detach(_ended_by(ended))))
        connection = Connection(association, workload, runner)
        try:
            up.wait()
        except BaseException:  # killed while handshaking (Locust stops the user): the handshake stays in flight
            _stop(connection)
            raise
        if not workload.started:
            raise RequestFailed(_ended_by(runner))
        self._connection = connection
        if self.on_connect is not None:
            self._connecting = True
            try:
                self.on_connect()
            except BaseException:
                self.close()  # not logged in: the next call connects (and logs in) afresh
                raise
            finally:
                self._connecting = False

    def close(self) -> None:
        """Close the association (close_notify) if one is up; the next call connects again. Idempotent."""
        connection, self._connection = self._connection, None
        if connection is not None:
            _stop(connection)

    def _call(self, call: Any) -> Any:
        """Submit ``call`` to the association (connecting first), wake it, wait for the call to end."""
        self._check(call)
        self.connect()
        connection = self._connection
        if connection is None:  # on_connect closed it under us (its own call failed and was caught)
            raise RequestFailed(LocalProtocolError("the association closed while connecting"))
        result: AsyncResult = AsyncResult()
        call.notify = result.set
        try:
            connection.workload.submit(call, time.perf_counter())
        except LoadgenError as exc:
            raise RequestFailed(exc) from None
        connection.association.wake()
        result.get()  # killed meanwhile (Locust stops the user): the call stays in flight
        if call.error is not None:
            raise RequestFailed(call.error)
        return call

    def _check(self, call: Any) -> None:
        """Refuse a call the protocol cannot carry (ValueError: a mistake in the caller's code)."""

    def _workload(self, on_start: Callable[[], None]) -> Any:
        """A fresh workload for the next association: :class:`~loadgen.traffic.calls.CallWorkload`'s shape."""
        return CallWorkload(self.target, self._sink, on_start=on_start)

    def _associate(self, plan: CallPlan) -> Association:
        raise NotImplementedError


class Client(Connector):
    """A client of datagrams (DTLS) or lines (TLS): :meth:`request`, :meth:`send`, :meth:`close`."""

    def request(self, payload: bytes, *, name: str | None = None, expect: Expectation = None,
                timeout: float | None = None) -> bytes:
        """Send ``payload`` and return the reply; ``name`` is the stats row (default "request").

        ``expect`` judges the reply (see :data:`~loadgen.traffic.calls.Expectation`): one that
        does not match fails as ``bad-reply``. No reply within ``timeout`` seconds (default: the
        client's) fails as ``ping-timeout`` and closes the association. Raises :class:`RequestFailed`."""
        call: Call = self._call(Call(name or "request", payload, check=reply_check(expect),
                               timeout=self.timeout if timeout is None else timeout))
        assert call.reply is not None
        return call.reply

    def send(self, payload: bytes, *, name: str | None = None) -> None:
        """Send ``payload`` expecting no reply; done once it is on the wire (default name "send")."""
        self._call(Call(name or "send", payload, wants_reply=False))

    def _check(self, call: Any) -> None:
        if not isinstance(call.payload, bytes | bytearray):
            raise TypeError(f"a payload is bytes, not {type(call.payload).__name__}")


def _ended_by(runner: Any) -> LoadgenError:
    """Why the association run by ``runner`` ended."""
    value = runner.value
    if isinstance(value, LoadgenError):
        return value
    if runner.exception is not None:
        return InternalError(f"unexpected {type(runner.exception).__name__}")
    return LocalProtocolError("the association was closed")


def _stop(connection: Connection) -> None:
    connection.association.close()
    connection.runner.kill(block=False)


class DtlsClient(Client):
    """A blocking client over a :class:`~loadgen.transport.dtls_association.DtlsAssociation` (PSK)."""

    def __init__(self, target: str, address: tuple[str, int], context: dtls_contexts.ClientContext, sink: Sink, *,
                 identity: bytes, key: Secret, settings: DtlsConfig = DtlsConfig(), name: str | None = None,
                 timeout: float = DEFAULT_TIMEOUT, on_connect: Callable[[], None] | None = None) -> None:
        super().__init__(target, sink, timeout=timeout, on_connect=on_connect)
        self._make: Callable[[CallPlan], Association] = lambda plan: DtlsAssociation(
            name or identity.decode(errors="replace"), target, address, context, sink, identity=identity, key=key,
            settings=settings, ping=plan)

    def _associate(self, plan: CallPlan) -> Association:
        return self._make(plan)


class TlsClient(Client):
    """A blocking client over a :class:`~loadgen.transport.tls_association.TlsAssociation`.

    The stream carries lines: a request is one line (no newline in it), its reply the next line
    (without its newline), as the reference server speaks. The device's session is kept between
    its associations (resumption, when the context has it on)."""

    def __init__(self, target: str, address: tuple[str, int], context: TlsContext, sink: Sink, *,
                 identity: bytes | None = None, key: Secret | None = None, server_name: str | None = None,
                 settings: TlsConfig = TlsConfig(), name: str = "tls-client", timeout: float = DEFAULT_TIMEOUT,
                 on_connect: Callable[[], None] | None = None) -> None:
        super().__init__(target, sink, timeout=timeout, on_connect=on_connect)
        sessions = SessionCache(maxsize=1)
        self._make: Callable[[CallPlan], Association] = lambda plan: TlsAssociation(
            name, target, address, context, sink, identity=identity, key=key, server_name=server_name,
            sessions=sessions, settings=settings, ping=plan)

    def _check(self, call: Any) -> None:
        super()._check(call)
        if b"\n" in call.payload:
            raise ValueError("a TLS request is one line: the payload must not contain a newline")

    def _associate(self, plan: CallPlan) -> Association:
        return self._make(plan)
