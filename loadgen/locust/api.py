"""The Python API for Locust users: abstract ``DtlsUser`` and ``TlsUser`` (in the style of
Locust's ``FastHttpUser``), whose ``self.client`` connects, handshakes and offers blocking calls.

    from locust import constant, task

    from loadgen import DtlsUser

    class Gateway(DtlsUser):
        target = "127.0.0.1:5684"            # or Locust's --host
        psk_identity = "device-{n}"           # n: the user's number, unique across workers
        psk_key_env = "GATEWAY_PSK"           # or psk_key (hex), psk_key_file, psk_csv
        wait_time = constant(1)

        @task
        def report(self):
            self.client.request(b"temp=21", name="report", expect=b"ok")

Run it with plain ``locust -f my_locustfile.py``: every call is one Locust request
(request_type DTLS/TLS, name "<target> <name>", the stable error code as the failure) and one
attempt in loadgen's exact stats, the handshakes too; when Locust quits, ``results/<run>/``
(summary, series, CSV, report, verdict) is written and the exit status set as for scenario
runs (:mod:`loadgen.locust.plain`). The client is :class:`~loadgen.locust.client.DtlsClient` /
:class:`~loadgen.locust.client.TlsClient`; its settings are the user class's attributes, read
and checked once per class when Locust starts (a mistake exits 2 naming the class and attribute).
"""

from __future__ import annotations

import contextlib
import itertools
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from locust import User, events
from locust.env import Environment
from locust.runners import MasterRunner, WorkerRunner

from loadgen.locust.client import DEFAULT_TIMEOUT, Connector, DtlsClient, TlsClient
from loadgen.locust.coap_client import COAP_TIMEOUT, CoapClient
from loadgen.locust.users import LocustSink, Session, tls_options
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import KeyStore, Secret, key_from_env, key_from_file, parse_hex
from loadgen.protocol.errors import ConfigError, LocalProtocolError
from loadgen.protocol.openssl.tls_contexts import TlsContext, client_context
from loadgen.scenario import Scenario, Target
from loadgen.scenario.model import Clients, CoapConfig, DtlsConfig, TlsConfig
from loadgen.scenario.syntax import parse_host_port
from loadgen.stats.facts import FanOut, LogSink, Sink

#: The Environment attribute holding the run's :class:`ApiRun`.
_ATTRIBUTE = "loadgen_api"
#: The schemes a target of each kind of user may carry, and its default port (None: give one).
_SCHEMES = {"dtls": ("dtls", "coaps"), "coap": ("coaps", "dtls"), "tls": ("tls",)}
_DEFAULT_PORT = {"coap": 5684}
#: A port at the end of ``host:port`` or ``[v6]:port`` (a bare v6 address or a host has none).
_HAS_PORT = re.compile(r"^(?:\[.*\]|[^:\[\]]*):\d*$")


class ApiUser(User):
    """What :class:`DtlsUser` and :class:`TlsUser` share: the target, the credentials, the client.

    ``target`` ("host:port", optionally with a ``dtls://``/``tls://`` scheme) wins over Locust's
    ``host`` (``--host``), so one locustfile can mix users of different targets. ``target_name``
    names the stats rows (default: the target's host:port). ``self.index`` is the user's number
    within its class, unique across plain Locust workers (``{n}`` in ``psk_identity``). Override
    :meth:`on_connect` to run calls after each handshake.
    """

    abstract = True
    protocol: ClassVar[str] = "dtls"
    target: str | None = None
    target_name: str | None = None
    timeout: float = DEFAULT_TIMEOUT  # seconds a request waits for its reply
    psk_identity: str = "device-{n}"
    psk_key: str | None = None  # hex
    psk_key_env: str | None = None  # name of an environment variable holding the hex key
    psk_key_file: str | None = None  # a file holding the key (hex, or raw bytes)
    psk_csv: str | None = None  # a CSV of identity,hex-key rows
    client: Any  # the kind's client: DtlsClient, TlsClient, CoapClient

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        run = api_run(environment)
        self.index = run.session.next_device(type(self).__name__)
        hook = self.on_connect if type(self).on_connect is not ApiUser.on_connect else None
        self.client = run.settings(type(self)).client(self.index, run.sink(self.protocol), hook)

    def on_connect(self) -> None:
        """Called after each handshake, before the call that connected goes on (e.g. to log in)."""

    def start(self, group: Any) -> Any:
        greenlet = super().start(group)
        # Whatever on_stop does, the user's association ends with the user.
        greenlet.rawlink(lambda _: self.client.close())
        return greenlet


class DtlsUser(ApiUser):
    """A Locust user whose ``self.client`` is a :class:`~loadgen.locust.client.DtlsClient` (PSK).

    ``dtls``: the scenario's ``dtls`` section as a :class:`~loadgen.scenario.model.DtlsConfig`
    (ciphers, MTU, handshake timeout, handshake engine)."""

    abstract = True
    protocol = "dtls"
    dtls: DtlsConfig = DtlsConfig()
    client: DtlsClient


class TlsUser(ApiUser):
    """A Locust user whose ``self.client`` is a :class:`~loadgen.locust.client.TlsClient`.

    With a PSK attribute set it handshakes with that PSK, else with certificates as ``tls`` (a
    :class:`~loadgen.scenario.model.TlsConfig`: versions, ciphers, CA, client certificate,
    verification, resumption) says. ``server_name``: SNI and the name to verify."""

    abstract = True
    protocol = "tls"
    tls: TlsConfig = TlsConfig()
    server_name: str | None = None
    client: TlsClient


class CoapUser(DtlsUser):
    """A Locust user whose ``self.client`` is a :class:`~loadgen.locust.coap_client.CoapClient`:
    CoAP (RFC 7252) over DTLS with a PSK. ``target`` may be ``coaps://host`` (port 5684 by default);
    ``coap``: the transmission parameters (a :class:`~loadgen.scenario.model.CoapConfig`);
    ``timeout``: how long a request may go unanswered (default RFC 7252's MAX_TRANSMIT_WAIT, 93 s).
    Locust's request_type is "COAP"."""

    abstract = True
    protocol = "coap"
    coap: CoapConfig = CoapConfig()
    timeout = COAP_TIMEOUT
    client: CoapClient  # type: ignore[assignment]  # a CoAP client, not a datagram one


def parse_target(text: str, protocol: str, where: str) -> tuple[str, int]:
    """``host:port`` (``[v6]:port``, an optional ``dtls://``, ``coaps://`` or ``tls://`` first) as an address."""
    scheme, sep, rest = text.strip().rpartition("://")
    if sep and scheme not in _SCHEMES[protocol]:
        raise ConfigError(f"{where}: {text!r}: the scheme {scheme}:// does not fit a {protocol.upper()} user")
    rest = rest.removesuffix("/")
    default = _DEFAULT_PORT.get(protocol)
    if default is not None and not _HAS_PORT.search(rest):
        rest = f"{rest}:{default}"
    return parse_host_port(rest, where, lowest_port=1)


def key_store(user: type[ApiUser]) -> KeyStore | None:
    """The keys the class's PSK attributes name (exactly one of them), or None when none is set."""
    given = {attr: getattr(user, attr) for attr in ("psk_key", "psk_key_env", "psk_key_file", "psk_csv")
             if getattr(user, attr) is not None}
    if len(given) > 1:
        raise ConfigError(f"{user.__name__}: set one of {', '.join(sorted(given))}, not several")
    if not given:
        return None
    (attr, value), = given.items()
    where = f"{user.__name__}.{attr}"
    try:
        if attr == "psk_csv":
            return KeyStore.from_csv(value)
        secret: Secret = {"psk_key": lambda: parse_hex(value, where=where), "psk_key_env": lambda: key_from_env(value),
                          "psk_key_file": lambda: key_from_file(value)}[attr]()
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc.args[0]}") from None
    return KeyStore(shared=secret)


@dataclass(frozen=True)
class UserSettings:
    """One API user class's attributes, checked, with its contexts built (once per class)."""

    user: type[ApiUser]
    target: Target
    address: tuple[str, int]
    keys: KeyStore | None
    dtls_context: dtls_contexts.ClientContext | None = None
    tls_context: TlsContext | None = None

    @classmethod
    def of(cls, user: type[ApiUser], host: str | None) -> UserSettings:
        """Read ``user``'s attributes (``host``: Locust's --host, when the class sets no target)."""
        where = f"{user.__name__}.target" if user.target else f"{user.__name__}.host (or --host)"
        text = user.target or host or user.host
        if not text:
            raise ConfigError(f"{user.__name__}: no target: set its target attribute or give --host host:port")
        address = parse_target(text, user.protocol, where)
        keys = key_store(user)
        if keys is not None:
            identity = _identity(user, 0)
            if keys.key_for(identity) is None:
                raise ConfigError(f"{user.__name__}.psk_csv: no key for the first identity {identity!r}")
        shown = f"[{address[0]}]:{address[1]}" if ":" in address[0] else f"{address[0]}:{address[1]}"
        target = Target(name=user.target_name or shown, host=address[0], port=address[1],
                        protocol="tls" if user.protocol == "tls" else "dtls", weight=float(user.weight),
                        server_name=getattr(user, "server_name", None))
        if user.protocol != "tls":
            if keys is None:
                raise ConfigError(f"{user.__name__}: a DTLS user needs a PSK: set psk_key, psk_key_env, psk_key_file "
                                  "or psk_csv")
            dtls: DtlsConfig = getattr(user, "dtls", DtlsConfig())
            context = dtls_contexts.client_context(dtls.ciphers, native=dtls.handshake == "loadgen")
            return cls(user, target, address, keys, dtls_context=context)
        tls: TlsConfig = getattr(user, "tls", TlsConfig())
        try:
            tls_context = client_context(tls_options(tls), psk_mode=keys is not None)
        except (OSError, ValueError, LocalProtocolError) as exc:
            raise ConfigError(f"{user.__name__}.tls: {exc}") from None
        return cls(user, target, address, keys, tls_context=tls_context)

    def client(self, n: int, sink: Sink, on_connect: Any = None) -> Connector:
        """Device ``n``'s client."""
        user = self.user
        identity = _identity(user, n) if self.keys is not None else None
        key = self.keys.key_for(identity) if self.keys is not None and identity is not None else None
        if self.keys is not None and key is None:
            raise LocalProtocolError(f"{user.__name__}: no pre-shared key for identity {identity!r}")
        name = identity.decode(errors="replace") if identity is not None else f"{user.__name__}-{n}"
        if self.dtls_context is not None:
            assert identity is not None and key is not None
            if user.protocol == "coap":
                return CoapClient(self.target.name, self.address, self.dtls_context, sink, identity=identity, key=key,
                                  settings=getattr(user, "dtls", DtlsConfig()), name=name, timeout=user.timeout,
                                  coap=getattr(user, "coap", CoapConfig()), on_connect=on_connect)
            return DtlsClient(self.target.name, self.address, self.dtls_context, sink, identity=identity, key=key,
                              settings=getattr(user, "dtls", DtlsConfig()), name=name, timeout=user.timeout,
                              on_connect=on_connect)
        assert self.tls_context is not None
        return TlsClient(self.target.name, self.address, self.tls_context, sink, identity=identity, key=key,
                         server_name=self.target.server_name, settings=getattr(user, "tls", TlsConfig()), name=name,
                         timeout=user.timeout, on_connect=on_connect)


def _identity(user: type[ApiUser], n: int) -> bytes:
    try:
        return user.psk_identity.format(n=n).encode()
    except (KeyError, IndexError, ValueError) as exc:
        raise ConfigError(f"{user.__name__}.psk_identity: {user.psk_identity!r} is not a template with "
                          f"{{n}} ({exc})") from None


class ApiSession(Session):
    """A :class:`~loadgen.locust.users.Session` (sinks, stop handling, a plain worker's place) whose
    devices are numbered per user class, as device groups are: each class's ``{n}`` runs ``offset +
    k * stride`` from ``k = 0``, so a class's identities (and a CSV of its keys) stay contiguous."""

    def __init__(self, scenario: Scenario, environment: Environment) -> None:
        super().__init__(scenario, environment, [])
        self._per_class: dict[str, Iterator[int]] = {}

    def next_device(self, group: str = "") -> int:
        """Index of the next device of user class ``group``."""
        offset = self._offset if self._offset is not None else getattr(self._environment.runner, "worker_index", 0)
        return next(self._per_class.setdefault(group, itertools.count())) * self._stride + offset

    def renumber(self, offset: int, stride: int) -> None:
        super().renumber(offset, stride)
        self._per_class = {}


class ApiRun:
    """What the API users of one process share: the sinks (Locust, exact stats, log), the device
    numbering (:class:`ApiSession`), and each class's settings."""

    def __init__(self, environment: Environment, scenario: Scenario,
                 settings: list[UserSettings] | None = None) -> None:
        self.environment = environment
        self.scenario = scenario
        self.session = ApiSession(scenario, environment)
        self._settings = {self._key(s.user): s for s in settings or []}
        coap = FanOut([LocustSink(environment.events.request, "COAP"), self.session.stats_sink, LogSink()])
        self._sinks: dict[str, Sink] = {**self.session.sinks, "coap": coap}

    def settings(self, user: type[ApiUser]) -> UserSettings:
        """``user``'s settings, read on first use (again when the host it takes changed: the web UI's form)."""
        key = self._key(user)
        found = self._settings.get(key)
        if found is None:
            found = self._settings[key] = UserSettings.of(user, self.environment.host)
        return found

    def _key(self, user: type[ApiUser]) -> tuple[type[ApiUser], str | None]:
        return user, None if user.target else (self.environment.host or user.host)

    def sink(self, protocol: str) -> Sink:
        """Where ``protocol``'s users report ("dtls", "tls", "coap"): Locust, the exact stats, the log."""
        return self._sinks[protocol]


def api_run(environment: Environment) -> ApiRun:
    """The environment's :class:`ApiRun`; made here when Locust's init did not (an Environment built by
    hand, as in tests): then the calls are counted, but no results are written at quit."""
    run: ApiRun | None = getattr(environment, _ATTRIBUTE, None)
    if run is None:
        run = ApiRun(environment, run_scenario(environment, []))
        setattr(environment, _ATTRIBUTE, run)
    return run


def api_users(environment: Environment) -> list[type[ApiUser]]:
    """The run's user classes that are API users."""
    return [u for u in (environment.user_classes or []) if isinstance(u, type) and issubclass(u, ApiUser)]


def run_scenario(environment: Environment, targets: list[Target]) -> Scenario:
    """The scenario an API run's results describe: named for the locustfile, with Locust's -u, -r and -t."""
    options = environment.parsed_options
    files = getattr(options, "locustfile", None) or "locust"
    first = (files[0] if isinstance(files, list | tuple) else str(files).split(",")[0]) or "locust"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(first).stem) or "locust"
    users = int(getattr(options, "num_users", None) or 1)
    rate = float(getattr(options, "spawn_rate", None) or 1)
    return Scenario(name=name, clients=Clients(count=users, spawn_rate=rate),
                    run_time=float(getattr(options, "run_time", None) or 0), psk=None, targets=tuple(targets))


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust is untyped
def _bind_api_users(environment: Environment, runner: Any = None, web_ui: Any = None, **_: Any) -> None:
    """When the locustfile's users are API users: check every class, then wire the run as plain Locust
    runs of scenarios are (Ctrl-C, limits, per-second stats, numbering, results at quit)."""
    users = api_users(environment)
    if not users or getattr(environment, _ATTRIBUTE, None) is not None:
        return
    from loadgen.locust.numbering import WorkerPlace, number_workers
    from loadgen.locust.plain import check_limits, interrupt_in_main_greenlet, live_stats, results_when_quitting

    interrupt_in_main_greenlet()
    place = WorkerPlace(runner) if isinstance(runner, WorkerRunner) else None  # before anything may yield
    # A plain Locust worker learns --host from the master's first spawn message: its classes without a
    # target of their own are read then (the master has checked them already).
    worker = isinstance(runner, WorkerRunner)
    try:
        settings = [UserSettings.of(user, environment.host) for user in users
                    if not worker or user.target or environment.host or user.host]
    except ConfigError as exc:
        print(f"loadgen: {exc.args[0]}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    scenario = check_limits(run_scenario(environment, [s.target for s in settings]), environment, runner)
    run = ApiRun(environment, scenario, settings)
    setattr(environment, _ATTRIBUTE, run)
    stack = contextlib.ExitStack()
    if isinstance(runner, MasterRunner):
        stats = live_stats(environment, None, "master", web_ui, ())  # the master merges its workers' seconds
        results_when_quitting(environment, scenario, stats, stack, None)
        number_workers(runner)
    elif place is not None:
        place.bind(run.session)
        live_stats(environment, run.session.stats_sink, "worker", web_ui, ())
    else:
        stats = live_stats(environment, run.session.stats_sink, "local", web_ui, ())
        results_when_quitting(environment, scenario, stats, stack, None)
