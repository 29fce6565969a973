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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import gevent
from gevent.pool import Group
from locust import User, constant, task
from locust.env import Environment

from loadgen.locust.lifeline import Lifeline
from loadgen.locust.limits import ShortageLog
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import LocalProtocolError
from loadgen.protocol.openssl.tls import SessionCache
from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context
from loadgen.scenario import Scenario, Target
from loadgen.scenario.model import CoapConfig, DeviceGroup, DtlsConfig, PskConfig, TlsConfig
from loadgen.stats.facts import FanOut, Finished, LogSink, Sink
from loadgen.stats.sink import StatsSink
from loadgen.traffic.plans import build_plan
from loadgen.traffic.workload import Gate, WorkloadPlan
from loadgen.transport.dtls_association import DtlsAssociation
from loadgen.transport.tls_association import TlsAssociation

#: A user class :func:`user_classes` subclasses.
D = TypeVar("D", bound="DeviceBase")

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

    facts = (Finished,)

    def __init__(self, request_event: Any, request_type: str) -> None:
        self._fire = request_event.fire
        self._request_type = request_type
        # Locust's row names by (target, kind, resumed): made once, not formatted per ping.
        self._names: dict[tuple[str, str, bool], str] = {}

    def record(self, fact: object) -> None:
        if type(fact) is not Finished:
            return
        key = (fact.target, fact.kind, fact.resumed)
        name = self._names.get(key)
        if name is None:
            # A resumed handshake costs the server far less: its own row, so both can be measured.
            name = self._names[key] = f"{fact.target} resumed {fact.kind}" if fact.resumed \
                else f"{fact.target} {fact.kind}"
        self._fire(
            request_type=self._request_type,
            name=name,
            response_time=fact.elapsed * 1000.0,
            response_length=fact.received_bytes,
            exception=FailureCode(fact.error.code) if fact.error is not None else None,
            context={},
        )


class DtlsMaker:
    """Makes one device's DTLS association, again on each reconnect. A class with slots, not a
    closure: a closure over these eleven values held ~800 B per device (a cell each), this ~150 B."""

    __slots__ = ("name", "label", "address", "context", "sink", "identity", "key", "settings", "ping", "source",
                 "level")

    def __init__(self, name: str, label: str, address: tuple[str, int], context: dtls_contexts.ClientContext,
                 sink: Sink, identity: bytes, key: Secret, settings: DtlsConfig, ping: WorkloadPlan,
                 source: str | None, level: int) -> None:
        self.name, self.label, self.address, self.context, self.sink = name, label, address, context, sink
        self.identity, self.key, self.settings, self.ping, self.source = identity, key, settings, ping, source
        self.level = level

    def __call__(self) -> DtlsAssociation:
        return DtlsAssociation(self.name, self.label, self.address, self.context, self.sink, identity=self.identity,
                               key=self.key, settings=self.settings, ping=self.ping, source_address=self.source,
                               message_level=self.level)


@dataclass(frozen=True)
class Endpoint:
    """A target with a resolved address (the built-in server's port is known only at run time)."""

    target: Target
    address: tuple[str, int]


def group_plan(group: DeviceGroup, coap: CoapConfig, gate: Gate | None = None) -> WorkloadPlan:
    """What a group's devices send: its ping / requests sections as a plan (:func:`.plans.build_plan`)."""
    assert group.ping is not None, "a resolved group has a ping section"
    return build_plan(group.ping, group.requests, coap, gate)


@dataclass
class GroupPlan:
    """One device group's part of a session: who its devices are, what they send and to whom, and
    its own device counter (a group's devices are numbered from 0, apart across processes)."""

    group: DeviceGroup  # resolved (Scenario.fleet): psk, ping and requests filled in
    plan: WorkloadPlan
    endpoints: list[Endpoint]
    counter: Iterator[int] = field(default_factory=itertools.count)

    def label(self, target: str) -> str:
        """The facts' target: ``group@target`` (every table shows each group), bare for the implicit group."""
        return f"{self.group.name}@{target}" if self.group.name else target


class Session:
    """What all users of one process share: contexts, sinks, the device numbering; and per device group
    (one implicit group without ``devices:``) its plan, credentials and endpoints (:class:`GroupPlan`)."""

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
        self.scenario = scenario
        self.endpoints = endpoints
        # Closed while Locust stops the users (Gate): no request begins and no device reconnects
        # (stopping 30,000 frees sockets, and devices that had none would reconnect meanwhile:
        # 7,000 handshakes during one stop, which made it take 14 s).
        self.gate = gate = Gate()
        environment.events.test_stopping.add_listener(lambda **_: setattr(gate, "open", False))
        environment.events.test_start.add_listener(lambda **_: setattr(gate, "open", True))
        self.groups = {g.name: GroupPlan(g, group_plan(g, scenario.coap, gate), _group_endpoints(g, endpoints))
                       for g in scenario.fleet()}
        for plan in self.groups.values():
            if plan.group.psk is None and any(e.target.protocol == "dtls" for e in plan.endpoints):
                raise LocalProtocolError("a DTLS target needs psk credentials in the scenario")
        protocols = {e.target.protocol for e in endpoints}
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
        self.tls_psk = all(p.group.psk is not None for p in self.groups.values()) and t.cert_file is None \
            and t.ca_file is None and t.verify == "none"
        self.tls_context = client_context(tls_options(t), psk_mode=self.tls_psk) if "tls" in protocols else None
        # Qt-style info messages are only built when the log would show them (-v).
        self.message_level = logging.getLogger("loadgen").getEffectiveLevel()
        self._environment = environment
        self._offset = index_offset
        self._stride = index_stride

    def next_device(self, group: str = "") -> int:
        """Index of ``group``'s next device: ``offset + k * stride``, unique across worker processes.

        Without an explicit offset, a worker uses the index its master assigned it.
        """
        offset = self._offset
        if offset is None:
            offset = getattr(self._environment.runner, "worker_index", 0)
        return next(self.groups[group].counter) * self._stride + offset

    def renumber(self, offset: int, stride: int) -> None:
        """Number every group's next devices ``offset + k * stride`` from ``k = 0`` (a plain Locust worker's
        place, told by its master at each test start: :mod:`loadgen.locust.numbering`)."""
        self._offset, self._stride = offset, stride
        for plan in self.groups.values():
            plan.counter = itertools.count()

    def endpoints_for(self, n: int, group: str = "") -> list[Endpoint]:
        """One of the group's endpoints picked by weight (``connect: one``) or all of them (``connect: all``)."""
        eps = self.groups[group].endpoints
        if self.scenario.clients.connect == "all" or len(eps) == 1:
            return eps
        rng = random.Random(n)  # deterministic: device n always talks to the same target
        return rng.choices(eps, weights=[e.target.weight for e in eps])

    def association_factory(self, n: int, endpoint: Endpoint, group: str = "") -> Callable[[], Association]:
        """A function making ``group``'s device ``n``'s association to ``endpoint`` (again, on each reconnect)."""
        plan = self.groups[group]
        identity, key = _credentials(plan.group.psk, n)
        pool = self.scenario.clients.source_addresses
        source = pool[n % len(pool)] if pool else None
        name = identity.decode(errors="replace") if identity is not None else \
            f"{plan.group.name or 'client'}-{n:05d}"
        if len(plan.endpoints) > 1 and self.scenario.clients.connect == "all":
            name = f"{name}@{endpoint.target.name}"
        target = endpoint.target
        label = plan.label(target.name)
        sink = self.sinks[target.protocol]
        ping = plan.plan.for_device(n=n, target=target.name)
        if target.protocol == "tls":
            return self._tls_factory(name, label, endpoint, sink, identity, key, ping, source)

        assert self.dtls_context is not None and identity is not None and key is not None
        return DtlsMaker(name, label, endpoint.address, self.dtls_context, sink, identity, key, self.scenario.dtls,
                         ping, source, self.message_level)

    def _tls_factory(self, name: str, label: str, endpoint: Endpoint, sink: Sink, identity: bytes | None,
                     key: Secret | None, ping: WorkloadPlan, source: str | None) -> Callable[[], TlsAssociation]:
        tls_context = self.tls_context
        assert tls_context is not None
        sessions = SessionCache(maxsize=1)  # this device's session, resumed by its reconnects
        use_psk, target = self.tls_psk, endpoint.target

        def make_tls() -> TlsAssociation:
            return TlsAssociation(
                name, label, endpoint.address, tls_context, sink,
                identity=identity if use_psk else None, key=key if use_psk else None,
                server_name=target.server_name, sessions=sessions, settings=self.scenario.tls,
                ping=ping, source_address=source, message_level=self.message_level,
            )

        return make_tls


def _group_endpoints(group: DeviceGroup, endpoints: list[Endpoint]) -> list[Endpoint]:
    """The endpoints of the targets ``group`` talks to (all without ``targets``)."""
    return [e for e in endpoints if e.target.name in group.targets] if group.targets else endpoints


def _credentials(psk: PskConfig | None, n: int) -> tuple[bytes | None, Secret | None]:
    """Device ``n``'s PSK identity and key (None, None without a psk section)."""
    if psk is None:
        return None, None
    identity = psk.identity_for(n)
    key = psk.store.key_for(identity)
    if key is None:
        raise LocalProtocolError(f"no pre-shared key for identity {identity!r}")
    return identity, key


class DeviceBase(User):
    """What every simulated device has: its group, its number in the group (``index``) and one association
    factory per target it talks to. Each workload subclasses it with its task, as an abstract Locust user
    class (:class:`PingUser`, :class:`~loadgen.capacity.workload.ChurnUser`); a run binds that to
    its session as the concrete classes Locust spawns (:func:`user_classes`), named for what they
    simulate: ``Device`` (and plain Locust's in the locustfile) or ``ChurnDevice``, or with device
    groups one class per group, named for it (``sensors``)."""

    abstract = True
    wait_time = constant(0)
    session: ClassVar[Session]
    group: ClassVar[str] = ""  # the device group ("" : the scenario's one implicit group)

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        self.index = self.session.next_device(self.group)
        self.factories = [self.session.association_factory(self.index, e, self.group)
                          for e in self.session.endpoints_for(self.index, self.group)]


class PingUser(DeviceBase):
    """The scenario's workload: a device that connects and pings, on one :class:`~.lifeline.Lifeline`
    per target (reconnecting per the scenario's policy). Subclassed per run with ``session`` set (see
    :func:`user_classes`).

    Its Locust greenlet is never switched into. The associations and their reconnects run on the event
    loop, so a user has nothing to wait for, and a greenlet waiting in ``run()`` cost 7-10 KiB per
    device (its saved C stack, its own page of Python frames, Locust's task set): as much as the
    association itself. Locust's runner still counts, dispatches and stops the user by that greenlet
    (it reads the user as its ``args[0]``); killing it closes the associations (close_notify)."""

    abstract = True

    def start(self, group: Group) -> gevent.Greenlet:
        """Join Locust's ``group`` of user greenlets and start the device's associations (Locust's hook)."""
        lines = self._lifelines()
        greenlet = _DormantGreenlet(_dormant, self)
        greenlet.rawlink(lambda _: _stop_all(lines))  # killed: Locust stops this user
        group.add(greenlet)
        self._greenlet, self._group = greenlet, group
        for line in lines:
            line.start()
        return greenlet

    @task
    def live(self) -> None:
        """The same devices, waited on, for a caller that runs the user in a greenlet itself (Locust's
        ``run_single_user`` calls ``run()``): returns never, killing the greenlet closes them."""
        lines = self._lifelines()
        for line in lines:
            line.start()
        try:
            gevent.sleep(float("inf"))
        finally:
            _stop_all(lines)

    def _lifelines(self) -> list[Lifeline]:
        session = self.session
        return [Lifeline(make, session.scenario.reconnect, session.gate) for make in self.factories]


class _DormantGreenlet(gevent.Greenlet):  # type: ignore[misc]  # gevent's Greenlet is untyped (Cython)
    """A greenlet that keeps no record of where it was spawned. gevent saves the spawning stack of every
    greenlet (10 frames, ~500 B) for its debugging tools; a user's greenlet is never run, and one per
    device adds up (3000 users: 1.5 MB)."""

    __slots__ = ()
    spawning_stack_limit = 0


def _dormant(user: PingUser) -> None:
    """A :class:`PingUser`'s greenlet body: never run (Locust reads ``args[0]``, the user, off the greenlet)."""


def _stop_all(lines: list[Lifeline]) -> None:
    for line in lines:
        line.stop()


def user_classes(base: type[D], scenario: Scenario, single: str, **attrs: Any) -> list[type[D]]:
    """The concrete classes Locust spawns, subclasses of ``base`` with ``attrs`` (``session=...``).

    Without ``devices:`` one class named ``single``; else one per group, named for it, with the group's
    count as Locust's ``fixed_count`` (spawned first) or its share as ``weight`` (the rest of the users,
    by weight). A master makes them too (without a session): it dispatches users by class name."""
    if not scenario.devices:
        return [type(single, (base,), {**attrs, "abstract": False})]
    return [type(g.name, (base,), {**attrs, "abstract": False, "group": g.name,
                                   **({"fixed_count": g.count} if g.count is not None else {"weight": g.share})})
            for g in scenario.devices]


def tls_options(tls: TlsConfig) -> TlsOptions:
    """The TLS context options a scenario's ``tls`` section asks for (the one place they are copied)."""
    return TlsOptions(min_version=tls.min_version, max_version=tls.max_version, ciphers=tls.ciphers,
                      ca_file=tls.ca_file, cert_file=tls.cert_file, key_file=tls.key_file, verify=tls.verify,
                      resumption=tls.resumption, psk_modes=tls.psk_modes)
