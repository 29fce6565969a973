"""The scenario model: frozen dataclasses that :mod:`loadgen.scenario.loader` builds and validates.

Everything here is already checked and resolved: durations are float seconds, paths
are absolute, key sources have been read into :class:`~loadgen.protocol.credentials.Secret`
values. Constructing these classes directly (in tests or code) skips validation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass, replace
from pathlib import Path
from typing import Any, Literal

from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.dtls_contexts import DEFAULT_PSK_CIPHERS
from loadgen.protocol.native.handshake import DEFAULT_MTU

#: What :meth:`Scenario.redacted` writes in place of every secret.
REDACTED = "<redacted>"

#: The default ping text (Qt's DTLS client example sends this).
DEFAULT_PING_TEXT = "I am {name}, please, accept our ping {seq}"

KeySourceName = Literal["key", "key_env", "key_file", "derive", "csv"]
MasterSourceName = Literal["master", "master_env", "master_file"]
ExpectKind = Literal["any", "echo", "regex", "prefix"]
CoapMethod = Literal["GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "iPATCH"]


@dataclass(frozen=True, slots=True)
class Target:
    """One server under test."""

    name: str
    host: str
    port: int
    protocol: Literal["dtls", "tls"] = "dtls"
    weight: float = 1.0  # relative share of clients when clients.connect is "one"
    server_name: str | None = None  # SNI / hostname to verify for tls


@dataclass(frozen=True, slots=True)
class Clients:
    """How many simulated devices, how fast they start and which peers they talk to."""

    count: int
    spawn_rate: float  # clients started per second
    connect: Literal["one", "all"] = "one"
    source_addresses: tuple[str, ...] = ()  # expanded pool, used round-robin


@dataclass(frozen=True, slots=True)
class Stage:
    """One step of a ramp: reach ``clients`` at ``spawn_rate`` and hold for ``duration`` seconds."""

    duration: float
    clients: int
    spawn_rate: float


@dataclass(frozen=True, slots=True)
class PskConfig:
    """Pre-shared keys: identity template plus exactly one (already resolved) key source."""

    identity: str  # str.format template with field n (client index, 0-based)
    hint: str
    source: KeySourceName  # which YAML key supplied the key
    store: KeyStore = field(repr=False, compare=False)  # identity -> key, for the clients and the built-in server
    # Env var name or absolute path that held the key (derive: that of the master); None for inline hex.
    location: str | None = None
    master_source: MasterSourceName | None = None  # derive only
    length: int = 16  # derived key length in bytes (derive only)

    def identity_for(self, n: int) -> bytes:
        """The PSK identity of client ``n`` (0-based)."""
        return self.identity.format(n=n).encode()

    def redacted(self) -> dict[str, Any]:
        """This section in its YAML shape, with inline keys and masters replaced by ``<redacted>``."""

        def ref(name: str) -> str | None:
            return REDACTED if name in ("key", "master") else self.location

        out: dict[str, Any] = {"identity": self.identity, "hint": self.hint}
        if self.source == "derive":
            assert self.master_source is not None
            out["derive"] = {self.master_source: ref(self.master_source), "length": self.length}
        else:
            out[self.source] = ref(self.source)
        return out


@dataclass(frozen=True, slots=True)
class DtlsConfig:
    """DTLS client knobs."""

    version: Literal["1.2"] = "1.2"
    ciphers: str = DEFAULT_PSK_CIPHERS
    mtu: int = DEFAULT_MTU
    # RFC 6347's timer doubles from 1 s to 60 s; 60 s leaves room for 6 transmissions
    # of a flight, which a handshake needs on a lossy path (20% each way: 99%+ complete).
    handshake_timeout: float = 60.0
    max_retransmits: int = 16
    # An unanswered flight goes out again after at most this long (None: RFC 6347's doubling only).
    retransmit_cap: float | None = 2.0
    # Who does the handshake: loadgen's own (PSK AEAD suites; several times cheaper) or OpenSSL.
    handshake: Literal["loadgen", "openssl"] = "loadgen"


@dataclass(frozen=True, slots=True)
class TlsConfig:
    """TLS client knobs (for targets with ``protocol: tls``)."""

    min_version: Literal["1.2", "1.3"] = "1.2"
    max_version: Literal["1.2", "1.3"] = "1.3"
    ciphers: str | None = None  # None = OpenSSL's defaults
    resumption: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    verify: Literal["none", "peer"] = "none"
    handshake_timeout: float = 30.0
    psk_modes: tuple[str, ...] = ("psk_dhe_ke", "psk_ke")  # TLS 1.3 PSK key-exchange modes offered


@dataclass(frozen=True, slots=True)
class Payload:
    """What one ping carries: a text template, or binary bytes with an optional sequence number."""

    text: str | None = DEFAULT_PING_TEXT  # fields: name, seq, n, target
    data: bytes | None = None
    seq_offset: int | None = None  # big-endian sequence number written here (binary only)
    seq_width: int = 2


@dataclass(frozen=True, slots=True)
class Expect:
    """How a reply is judged: any reply, an echo, a regex match (bytes, DOTALL) or a byte prefix;
    for CoAP also the response code; for binary payloads also the request's sequence number echoed."""

    kind: ExpectKind = "any"
    regex: re.Pattern[bytes] | None = None
    prefix: bytes | None = None
    code: str | None = None  # CoAP response code the reply must carry, e.g. "2.05" (CoAP requests only)
    # The reply carries the request's sequence number (its seq_width bytes, big-endian) at this
    # offset: a reply without it is bad, and with several requests in flight it says which one it answers.
    seq_offset: int | None = None
    seq_width: int = 2


@dataclass(frozen=True, slots=True)
class PingConfig:
    """Application traffic once an association is up."""

    interval: float = 5.0
    jitter: float = 0.1  # fraction of the interval, applied +-
    timeout: float | None = None  # None = the interval (filled in on construction)
    max_missed: int = 3  # unanswered pings in a row that end the association (then: reconnect policy)
    payload: Payload = field(default_factory=Payload)
    expect: Expect = field(default_factory=Expect)

    def __post_init__(self) -> None:
        if self.timeout is None:
            object.__setattr__(self, "timeout", self.interval)


@dataclass(frozen=True, slots=True)
class CoapRequest:
    """One CoAP request (RFC 7252) a request step sends. Text fields are templates with the
    payload's fields (name, seq, n, target)."""

    method: CoapMethod = "GET"
    path: str = "/"  # Uri-Path, split at "/"
    query: tuple[str, ...] = ()  # Uri-Query options, each "k=v" (or "k")
    payload: Payload | None = None
    content_format: int | None = None  # Content-Format option (numeric, e.g. 0 text/plain, 50 json)
    accept: int | None = None
    confirmable: bool = True  # CON (retransmitted until acknowledged) or NON
    observe: bool = False  # register (Observe: 0); notifications are counted until ``observe_for`` ends
    observe_for: float | None = None  # seconds after which the client deregisters (None: never)
    block_size: int | None = None  # Block2 size asked for (16..1024); None: the server's choice
    ping: bool = False  # a CoAP ping: an empty CON, answered by RST (method/path unused)


@dataclass(frozen=True, slots=True)
class CoapConfig:
    """CoAP transmission parameters (RFC 7252 section 4.8)."""

    ack_timeout: float = 2.0
    ack_random_factor: float = 1.5
    max_retransmit: int = 4


@dataclass(frozen=True, slots=True)
class RequestStep:
    """One entry of ``requests:``: what a device sends, how often, and how the reply is judged.

    Exactly one of ``payload`` and ``coap``. A step runs ``once`` (right after the handshake,
    before the others start), on its own ``interval``, or, with a ``weight``, on the section's
    shared interval, picked by weight among the weighted steps (as Locust picks tasks).
    """

    name: str  # the stats and Locust name (default: "GET /path" for CoAP, "request N" otherwise)
    payload: Payload | None = None
    coap: CoapRequest | None = None
    expect: Expect = field(default_factory=Expect)
    interval: float | None = None
    weight: float | None = None
    once: bool = False
    in_flight: int = 1  # requests of this step outstanding at once
    timeout: float | None = None  # None: the interval (weighted steps: the shared interval)


@dataclass(frozen=True, slots=True)
class DeviceGroup:
    """One class of devices in a fleet (``devices:``): how many, who they are, what they send.

    ``count`` fixes the group's number of clients; else ``share`` is its weight among the groups
    without a count. Sections left out are the scenario's own (``psk``, ``ping``, ``requests``).
    """

    name: str
    count: int | None = None
    share: float = 1.0
    psk: PskConfig | None = None
    ping: PingConfig | None = None
    requests: tuple[RequestStep, ...] = ()
    targets: tuple[str, ...] = ()  # target names this group talks to (empty: all)

    def resolved(self, scenario: Scenario) -> DeviceGroup:
        """This group with every section filled in: a psk it leaves out is the scenario's; its traffic is
        its own when it gives ``ping`` or ``requests`` (a ``ping`` alone replaces the scenario's requests
        too), else the scenario's ``ping`` and ``requests``."""
        ping, requests = self.ping, self.requests
        if ping is None:
            ping = scenario.ping
            requests = requests or scenario.requests
        return replace(self, psk=self.psk or scenario.psk, ping=ping, requests=requests)


@dataclass(frozen=True, slots=True)
class ReconnectConfig:
    """What an association does after it ends or fails."""

    policy: Literal["never", "on-failure", "always"] = "on-failure"
    delay: float = 1.0
    max_attempts: int | None = None  # None = unlimited


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Pass/fail criteria for the run; None means not checked."""

    handshake_p95: float | None = None
    handshake_p99: float | None = None
    ping_p99: float | None = None
    error_ratio: float | None = None
    min_handshake_rate: float | None = None


@dataclass(frozen=True, slots=True)
class PrometheusConfig:
    """Where to serve a Prometheus /metrics endpoint."""

    host: str = "127.0.0.1"
    port: int = 9646


@dataclass(frozen=True, slots=True)
class StatsdConfig:
    """Where to send StatsD metrics."""

    host: str = "127.0.0.1"
    port: int = 8125
    prefix: str = "loadgen"


@dataclass(frozen=True, slots=True)
class Outputs:
    """What the run writes and exports."""

    results_dir: Path = Path("results")  # relative to the working directory at run time
    csv: bool = True
    json: bool = True
    report: bool = True
    prometheus: PrometheusConfig | None = None
    statsd: StatsdConfig | None = None


@dataclass(frozen=True, slots=True)
class Scenario:
    """A whole load test, as read from one YAML file."""

    name: str
    clients: Clients
    run_time: float
    psk: PskConfig | None  # None only when every target is tls
    description: str = ""
    targets: tuple[Target, ...] = ()  # empty: start the built-in reference server on loopback
    stages: tuple[Stage, ...] = ()
    dtls: DtlsConfig = field(default_factory=DtlsConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    ping: PingConfig = field(default_factory=PingConfig)
    requests: tuple[RequestStep, ...] = ()  # when given, replaces the ping
    coap: CoapConfig = field(default_factory=CoapConfig)
    devices: tuple[DeviceGroup, ...] = ()  # empty: one group, the scenario's own clients/psk/ping/requests
    reconnect: ReconnectConfig = field(default_factory=ReconnectConfig)
    thresholds: Thresholds = field(default_factory=Thresholds)
    outputs: Outputs = field(default_factory=Outputs)
    source: Path | None = None  # absolute path of the YAML file

    def fleet(self) -> tuple[DeviceGroup, ...]:
        """The device groups, each :meth:`~DeviceGroup.resolved`; without ``devices``, one implicit group
        named "" (no count: ``clients``/``stages`` say how many) with the scenario's own sections."""
        if not self.devices:
            return (DeviceGroup(name="", psk=self.psk, ping=self.ping, requests=self.requests),)
        return tuple(group.resolved(self) for group in self.devices)

    @property
    def builtin_server(self) -> bool:
        """True when no targets are given and the run starts its own reference server."""
        return not self.targets

    def redacted(self) -> dict[str, Any]:
        """The scenario as JSON-ready plain data, every secret replaced by ``<redacted>``."""
        plain: dict[str, Any] = plain_data(self)
        return plain


def plain_data(value: Any) -> Any:
    """A model value as JSON-ready plain data (what ``scenario.json`` holds), every secret replaced by
    ``<redacted>``: dataclasses as dicts, tuples as lists, paths as text, bytes as hex, patterns as text."""
    if isinstance(value, Secret | KeyStore):
        return REDACTED
    if isinstance(value, PskConfig):
        return value.redacted()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [plain_data(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, re.Pattern):
        return value.pattern.decode("utf-8", "replace")
    return value
