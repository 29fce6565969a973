"""Locust adapter: one Locust user = one simulated device owning 1..n associations.

Associations report facts to a sink; :class:`LocustSink` turns finished attempts into
``environment.events.request`` (request_type DTLS/TLS, name "<target> handshake" or
"<target> ping", response time in ms, the stable error code as the exception). Users
never touch stats themselves, as in locust's ``contrib/dns.py``.
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import gevent
from gevent.event import Event
from gevent.pool import Group
from locust import User, constant, task
from locust.env import Environment

from loadgen.locust.limits import ShortageLog
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import LoadgenError, LocalProtocolError
from loadgen.protocol.openssl.tls import SessionCache
from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context
from loadgen.scenario import Scenario, Target
from loadgen.scenario.model import TlsConfig
from loadgen.stats.facts import FanOut, Finished, LogSink, Sink
from loadgen.stats.sink import StatsSink
from loadgen.traffic.plans import build_plan
from loadgen.traffic.workload import WorkloadPlan
from loadgen.transport.dtls_association import DtlsAssociation
from loadgen.transport.tls_association import TlsAssociation

#: Either kind of client association: same constructor shape, same facts, same run().
Association = DtlsAssociation | TlsAssociation


class FailureCode(Exception):
    """What Locust is told failed: the stable code only. Locust groups its Failures tab by the
    error's ``repr`` (``StatsError.parse_error``); the full error names the device and its
    address, which made one row per device. The details go to the log (see ``LogSink``)."""

    def __init__(self, code: str) -> None:
        super().__init__(code)
        self.code = code

    def __repr__(self) -> str:
        return self.code

    def __str__(self) -> str:
        return self.code


class LocustSink:
    """Fires one Locust request event per finished handshake or ping."""

    def __init__(self, request_event: Any, request_type: str) -> None:
        self._fire = request_event.fire
        self._request_type = request_type

    def record(self, fact: object) -> None:
        if type(fact) is not Finished:
            return
        # A resumed handshake costs the server far less: its own row, so both can be measured.
        kind = f"resumed {fact.kind}" if fact.resumed else fact.kind
        self._fire(
            request_type=self._request_type,
            name=f"{fact.target} {kind}",
            response_time=fact.elapsed * 1000.0,
            response_length=fact.received_bytes,
            exception=FailureCode(fact.error.code) if fact.error is not None else None,
            context={},
        )


@dataclass(frozen=True)
class Endpoint:
    """A target with a resolved address (the built-in server's port is known only at run time)."""

    target: Target
    address: tuple[str, int]


class Session:
    """What all users of one process share: contexts, sinks, the device counter."""

    def __init__(
        self,
        scenario: Scenario,
        environment: Environment,
        endpoints: list[Endpoint],
        *,
        index_offset: int | None = 0,
        index_stride: int = 1,
        extra_sinks: tuple[Sink, ...] = (),
    ) -> None:
        protocols = {e.target.protocol for e in endpoints}
        if scenario.psk is None and "dtls" in protocols:
            raise LocalProtocolError("a DTLS target needs psk credentials in the scenario")
        self.scenario = scenario
        self.endpoints = endpoints
        # Exact per-target counts and histograms, rolled into a time series every second.
        self.stats_sink = StatsSink()
        shortage = ShortageLog()  # clients without a socket: one line every 10 s with counts
        self.sinks = {
            protocol: FanOut([LocustSink(environment.events.request, protocol.upper()), self.stats_sink,
                              LogSink(), shortage, *extra_sinks])
            for protocol in ("dtls", "tls")
        }
        self.dtls_context = dtls_contexts.client_context(scenario.dtls.ciphers,
                                                         native=scenario.dtls.handshake == "loadgen") \
            if "dtls" in protocols else None
        t = scenario.tls
        # TLS targets use the scenario's PSK unless it sets up certificates.
        self.tls_psk = scenario.psk is not None and t.cert_file is None and t.ca_file is None and t.verify == "none"
        self.tls_context = client_context(tls_options(t), psk_mode=self.tls_psk) if "tls" in protocols else None
        # The associations take the scenario's dtls and tls sections as they are; the ping section,
        # built once, serves every device (a device whose ping text names it gets its own: for_device).
        self.ping = build_plan(scenario.ping, scenario.requests, scenario.coap)
        # Qt-style info messages are only built when the log would show them (-v).
        self.message_level = logging.getLogger("loadgen").getEffectiveLevel()
        self._counter = itertools.count()
        self._environment = environment
        # Set while Locust stops the users: stopping 30,000 frees sockets, and devices that had none
        # would reconnect meanwhile (7,000 handshakes during one stop), which made the stop take 14 s.
        self.stopping = Event()
        environment.events.test_stopping.add_listener(lambda **_: self.stopping.set())
        environment.events.test_start.add_listener(lambda **_: self.stopping.clear())
        self._offset = index_offset
        self._stride = index_stride

    def next_device(self) -> int:
        """Index of the next device: ``offset + k * stride``, unique across worker processes.

        Without an explicit offset, a worker uses the index its master assigned it.
        """
        offset = self._offset
        if offset is None:
            offset = getattr(self._environment.runner, "worker_index", 0)
        return next(self._counter) * self._stride + offset

    def renumber(self, offset: int, stride: int) -> None:
        """Number the next devices ``offset + k * stride`` from ``k = 0`` (a plain Locust worker's place,
        told by its master at each test start: :mod:`loadgen.locust.numbering`)."""
        self._offset, self._stride = offset, stride
        self._counter = itertools.count()

    def endpoints_for(self, n: int) -> list[Endpoint]:
        """One endpoint picked by weight (``connect: one``) or all of them (``connect: all``)."""
        if self.scenario.clients.connect == "all" or len(self.endpoints) == 1:
            return self.endpoints
        rng = random.Random(n)  # deterministic: device n always talks to the same target
        return rng.choices(self.endpoints, weights=[e.target.weight for e in self.endpoints])

    def association_factory(self, n: int, endpoint: Endpoint) -> Callable[[], Association]:
        """A function making device ``n``'s association to ``endpoint`` (again, on each reconnect)."""
        identity, key = self._credentials(n)
        pool = self.scenario.clients.source_addresses
        source = pool[n % len(pool)] if pool else None
        name = identity.decode(errors="replace") if identity is not None else f"client-{n:05d}"
        if len(self.endpoints) > 1 and self.scenario.clients.connect == "all":
            name = f"{name}@{endpoint.target.name}"
        target = endpoint.target
        sink = self.sinks[target.protocol]
        ping = self.ping.for_device(n=n, target=target.name)
        if target.protocol == "tls":
            return self._tls_factory(name, endpoint, sink, identity, key, ping, source)

        dtls_context = self.dtls_context
        assert dtls_context is not None and identity is not None and key is not None

        def make() -> DtlsAssociation:
            return DtlsAssociation(
                name, target.name, endpoint.address, dtls_context, sink, identity=identity, key=key,
                settings=self.scenario.dtls, ping=ping, source_address=source,
                message_level=self.message_level,
            )

        return make

    def _credentials(self, n: int) -> tuple[bytes | None, Secret | None]:
        """Device ``n``'s PSK identity and key (None, None without a psk section)."""
        psk = self.scenario.psk
        if psk is None:
            return None, None
        identity = psk.identity_for(n)
        key = psk.store.key_for(identity)
        if key is None:
            raise LocalProtocolError(f"no pre-shared key for identity {identity!r}")
        return identity, key

    def _tls_factory(self, name: str, endpoint: Endpoint, sink: Sink, identity: bytes | None, key: Secret | None,
                     ping: WorkloadPlan, source: str | None) -> Callable[[], TlsAssociation]:
        tls_context = self.tls_context
        assert tls_context is not None
        sessions = SessionCache(maxsize=1)  # this device's session, resumed by its reconnects
        use_psk, target = self.tls_psk, endpoint.target

        def make_tls() -> TlsAssociation:
            return TlsAssociation(
                name, target.name, endpoint.address, tls_context, sink,
                identity=identity if use_psk else None, key=key if use_psk else None,
                server_name=target.server_name, sessions=sessions, settings=self.scenario.tls,
                ping=ping, source_address=source, message_level=self.message_level,
            )

        return make_tls


def keep_alive(make: Callable[[], Association], scenario: Scenario, stopping: Event | None = None) -> None:
    """Run associations one after another per the reconnect policy until killed (or ``stopping`` is set)."""
    policy = scenario.reconnect
    attempts = 0
    while True:
        error: LoadgenError | None = make().run()
        attempts += 1
        if policy.policy == "never" or (policy.max_attempts is not None and attempts > policy.max_attempts):
            break
        if policy.policy == "on-failure" and error is None:
            break
        gevent.sleep(policy.delay)
        if stopping is not None and stopping.is_set():
            break  # Locust is stopping the users: a new handshake now would only slow the stop down
    gevent.sleep(float("inf"))  # stay a (quiet) user so Locust's user count stays as asked


class DeviceBase(User):
    """What every simulated device has: its number (``index``) and one association factory per
    target it talks to. Each workload subclasses it with its task, as an abstract Locust user
    class (:class:`PingUser`, :class:`~loadgen.capacity.workload.ChurnUser`); a run binds that to
    its session as the concrete class Locust spawns, named for what it simulates: ``Device``
    (:func:`user_class`, and plain Locust's in the locustfile) or ``ChurnDevice``."""

    abstract = True
    wait_time = constant(0)
    session: ClassVar[Session]

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.index = self.session.next_device()
        self.factories = [self.session.association_factory(self.index, e)
                          for e in self.session.endpoints_for(self.index)]


class PingUser(DeviceBase):
    """The scenario's workload: a device that connects and pings. Subclassed per run with
    ``session`` set (see :func:`user_class`)."""

    abstract = True

    @task
    def live(self) -> None:
        scenario = self.session.scenario
        if len(self.factories) == 1:
            keep_alive(self.factories[0], scenario, self.session.stopping)
            return
        group = Group()
        try:
            for make in self.factories:
                group.spawn(keep_alive, make, scenario, self.session.stopping)
            group.join()
        finally:
            group.kill()


def user_class(session: Session) -> type[PingUser]:
    """The run's ``Device``: a concrete PingUser bound to ``session`` (Locust instantiates classes)."""
    return type("Device", (PingUser,), {"session": session, "abstract": False})


def tls_options(tls: TlsConfig) -> TlsOptions:
    """The TLS context options a scenario's ``tls`` section asks for (the one place they are copied)."""
    return TlsOptions(min_version=tls.min_version, max_version=tls.max_version, ciphers=tls.ciphers,
                      ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file, verify=tls.verify,
                      resumption=tls.resumption, psk_modes=tls.psk_modes)
