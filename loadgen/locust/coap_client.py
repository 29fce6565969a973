"""A blocking CoAP-over-DTLS client for Locust tasks: ``get``, ``post``, ``put``, ``delete``, ``ping``, ``observe``.

It is a :class:`~loadgen.locust.client.Connector` like the DTLS and TLS clients (connects on
first use, blocks the calling greenlet only, raises :class:`~loadgen.locust.client.RequestFailed`
with the stable code), whose association runs a :class:`~loadgen.traffic.coap_calls.CoapCallWorkload`:
RFC 7252 message ids, tokens, CON retransmission, separate responses, Observe and Block2 come
from the CoAP helper's endpoint. A call returns a :class:`~loadgen.traffic.coap_calls.CoapResponse`
(``.code`` "2.05", ``.payload``, ``.option(n)``, ``.content_format``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import gevent
from gevent.event import Event

from loadgen.coap.endpoint import DEFAULT_CONFIG, max_transmit_wait
from loadgen.coap.exchange import Request
from loadgen.locust.client import Association, Connection, Connector
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import LoadgenError
from loadgen.scenario.model import CoapConfig, DtlsConfig
from loadgen.stats.facts import Sink
from loadgen.traffic.calls import CallPlan, Expectation, reply_check
from loadgen.traffic.coap_calls import CoapCall, CoapCallWorkload, CoapResponse
from loadgen.transport.dtls_association import DtlsAssociation

#: RFC 7252's MAX_TRANSMIT_WAIT with its default parameters (93 s): how long a CON may go unanswered.
COAP_TIMEOUT = max_transmit_wait(DEFAULT_CONFIG)


class Observation:
    """An Observe registration (RFC 7641): its first ``response``, the fresh ``notifications``
    counted since (each also a fact, "<name> notification"), the ``last`` one; :meth:`wait` for the
    next, :meth:`cancel` to deregister. ``ended`` once over (``error``: why, None when deregistered)."""

    def __init__(self, call: CoapCall, connection: Connection, timeout: float) -> None:
        self.response: CoapResponse | None = None
        self.notifications = 0
        self.last: CoapResponse | None = None
        self.ended = False
        self.error: LoadgenError | None = None
        self._call = call
        self._connection = connection
        self._timeout = timeout
        self._changed = Event()
        call.on_notification = self._notified
        call.on_end = self._ended

    def wait(self, timeout: float | None = None) -> CoapResponse | None:
        """Block until the next notification (returned), or None at the end or after ``timeout`` seconds."""
        seen = self.notifications
        while not self.ended and self.notifications == seen:
            self._changed.clear()
            if not self._changed.wait(timeout):
                break
        return self.last if self.notifications > seen else None

    def cancel(self) -> None:
        """Deregister (a GET with Observe: 1) and wait for the server's answer (at most the client's
        timeout); an observation already over is left as it is."""
        workload: CoapCallWorkload = self._connection.workload
        if self.ended or not workload.deregister(self._call, time.perf_counter()):
            self._ended(None)
            return
        self._connection.association.wake()
        deadline = time.monotonic() + self._timeout
        while not self.ended and (left := deadline - time.monotonic()) > 0:
            self._changed.clear()
            self._changed.wait(left)
        self._ended(None)

    def _notified(self, response: CoapResponse) -> None:
        self.notifications += 1
        self.last = response
        self._changed.set()

    def _ended(self, error: LoadgenError | None) -> None:
        if not self.ended:
            self.ended, self.error = True, error
        self._changed.set()


class CoapClient(Connector):
    """CoAP requests over one DTLS association (PSK) at a time; ``coap``: the transmission parameters."""

    def __init__(self, target: str, address: tuple[str, int], context: dtls_contexts.ClientContext, sink: Sink, *,
                 identity: bytes, key: Secret, settings: DtlsConfig = DtlsConfig(), coap: CoapConfig = DEFAULT_CONFIG,
                 name: str | None = None, timeout: float = COAP_TIMEOUT,
                 on_connect: Callable[[], None] | None = None) -> None:
        super().__init__(target, sink, timeout=timeout, on_connect=on_connect)
        self.coap = coap
        self._make: Callable[[CallPlan], Association] = lambda plan: DtlsAssociation(
            name or identity.decode(errors="replace"), target, address, context, sink, identity=identity, key=key,
            settings=settings, ping=plan)

    def request(self, method: str, path: str = "/", payload: bytes = b"", *, query: tuple[str, ...] = (),
                content_format: int | None = None, accept: int | None = None, confirmable: bool = True,
                block_size: int | None = None, name: str | None = None, expect_code: str | None = None,
                expect: Expectation = None, timeout: float | None = None) -> CoapResponse:
        """Send one request and return its response; ``name`` is the stats row (default "METHOD /path").

        The response must carry ``expect_code`` (e.g. "2.05"; without it, any 4.xx/5.xx fails) and its
        payload match ``expect`` (as for the DTLS client), else ``bad-reply``. A RST fails as
        ``coap-reset``, no answer in ``timeout`` seconds (or after MAX_RETRANSMIT) as ``coap-timeout``."""
        request = Request.build(method, path, query, payload, content_format=content_format, accept=accept,
                                confirmable=confirmable, block_size=block_size)
        call = CoapCall(name or f"{method} {path}", request, expect_code=expect_code, check=reply_check(expect),
                        timeout=self.timeout if timeout is None else timeout)
        return self._respond(call)

    def get(self, path: str, **options: Any) -> CoapResponse:
        """``request("GET", path, ...)``."""
        return self.request("GET", path, **options)

    def post(self, path: str, payload: bytes = b"", **options: Any) -> CoapResponse:
        """``request("POST", path, payload, ...)``."""
        return self.request("POST", path, payload, **options)

    def put(self, path: str, payload: bytes = b"", **options: Any) -> CoapResponse:
        """``request("PUT", path, payload, ...)``."""
        return self.request("PUT", path, payload, **options)

    def delete(self, path: str, **options: Any) -> CoapResponse:
        """``request("DELETE", path, ...)``."""
        return self.request("DELETE", path, **options)

    def ping(self, *, name: str = "ping", timeout: float | None = None) -> CoapResponse:
        """A CoAP ping (an empty CON); the server's RST (code "RST") or empty ACK answers it."""
        call = CoapCall(name, Request.ping_request(), timeout=self.timeout if timeout is None else timeout)
        return self._respond(call)

    def observe(self, path: str, *, duration: float | None = None, query: tuple[str, ...] = (),
                accept: int | None = None, name: str | None = None, expect_code: str | None = None,
                expect: Expectation = None, timeout: float | None = None) -> Observation:
        """Register to observe ``path`` (default name "OBSERVE /path"); returns once the server answered.

        With ``duration``, blocks that long counting notifications, then deregisters. Raises
        :class:`~loadgen.locust.client.RequestFailed` when the registration fails."""
        request = Request.build("GET", path, query, accept=accept, observe=True)
        call = CoapCall(name or f"OBSERVE {path}", request, expect_code=expect_code, check=reply_check(expect),
                        timeout=self.timeout if timeout is None else timeout)
        self.connect()
        assert self._connection is not None
        observation = Observation(call, self._connection, self.timeout if timeout is None else timeout)
        observation.response = self._respond(call)
        if not call.observing:  # answered without Observe: the server does not keep us posted
            observation._ended(None)
        if duration is not None:
            gevent.sleep(duration)
            observation.cancel()
        return observation

    # -- helpers --------------------------------------------------------------

    def _respond(self, call: CoapCall) -> CoapResponse:
        done: CoapCall = self._call(call)
        assert done.response is not None
        return done.response

    def _workload(self, on_start: Callable[[], None]) -> CoapCallWorkload:
        return CoapCallWorkload(self.target, self._sink, self.coap, on_start=on_start)

    def _associate(self, plan: CallPlan) -> Association:
        return self._make(plan)
