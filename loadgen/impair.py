"""A UDP impairment proxy: loss, delay and jitter, duplication, reordering, corruption, truncation.

Kernel netem is not available here, so the project ships its own. The proxy listens on
one UDP address and forwards each client's datagrams to the target from a socket of
its own per client, so the server sees one peer address per client, as it does with
the real clients. Replies come back on that socket and go out to the client from the
listening socket. Each direction, ``up`` (client to server) and ``down`` (server to
client), has its own :class:`Impairment`, its own seeded ``random.Random`` and its own
:class:`Counters`: with a fixed seed and the same datagrams in the same order, the
same datagrams are dropped, delayed, duplicated, held back, corrupted.

Per datagram, in this order: loss; truncation (a datagram longer than ``truncate``
bytes is cut to that length and still forwarded: a DTLS receiver discards the cut
record, as it would a lost one, but any whole records before it survive, which also
exercises the peer's record parser); corruption (one random byte XORed with a
non-zero value, so it always changes); duplication (one extra copy); reordering (the
datagram and its copy are held back ``reorder_delay`` longer, so later ones overtake
it); then each copy gets its own delay drawn with jitter. As with netem, jitter alone
can reorder datagrams too; ``reordered`` counts only the deliberate holds.

Delays never block other traffic: each direction has one scheduler greenlet and a heap
of due times, not one greenlet per datagram. Idle client mappings expire; when
``max_clients`` mappings exist, a new client evicts the least recently active one
(as a full NAT table would).
"""

from __future__ import annotations

import heapq
import math
import random
import socket as _stdsocket
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import gevent
from gevent import socket
from gevent.event import Event

from .errors import ConfigError
from .syntax import format_host_port, parse_host_port
from .syntax import parse_duration as parse_duration_text

Address = tuple[str, int]
#: A peer's address as ``recvfrom`` gives it: ``(host, port)``, or with IPv6 ``(host, port, flowinfo, scope_id)``.
SockAddr = tuple[str, int] | tuple[str, int, int, int]

#: Jitter distributions: "uniform" draws delay +- jitter, "normal" draws N(delay, jitter).
DISTRIBUTIONS = ("uniform", "normal")
_MAX_DATAGRAM = 65536
_BUFFER = 4 * 1024 * 1024  # socket receive buffers: bursts must not add loss of their own
_BURST = 32  # datagrams a scheduler sends before it yields
_PROBABILITIES = ("loss", "duplicate", "reorder", "corrupt")
_DELAYS = ("delay", "jitter", "reorder_delay")


@dataclass(frozen=True)
class Impairment:
    """What happens to datagrams in one direction. Probabilities in 0..1, times in seconds."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    truncate: int | None = None  # datagrams longer than this many bytes are cut to it
    distribution: str = "uniform"  # of the jitter
    reorder_delay: float = 0.010  # how much longer a reordered datagram is held back

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: expected a probability between 0 and 1, got {value!r}")
        for name in _DELAYS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a time >= 0 in seconds, got {value!r}")
        if self.truncate is not None and not (isinstance(self.truncate, int) and self.truncate >= 1):
            raise ValueError(f"truncate: expected a size >= 1 in bytes, got {self.truncate!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution: expected one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}")

    def describe(self) -> str:
        """A short human summary, e.g. ``loss 20%, delay 20 ms +- 5 ms (uniform)``; ``none`` when clear."""
        parts = [f"{name} {getattr(self, name) * 100:.4g}%" for name in _PROBABILITIES if getattr(self, name)]
        if self.delay or self.jitter:
            jitter = f" +- {self.jitter * 1000:.4g} ms ({self.distribution})" if self.jitter else ""
            parts.append(f"delay {self.delay * 1000:.4g} ms{jitter}")
        if self.reorder:
            parts.append(f"reorder hold {self.reorder_delay * 1000:.4g} ms")
        if self.truncate is not None:
            parts.append(f"truncate to {self.truncate} bytes")
        return ", ".join(parts) or "none"


@dataclass
class Counters:
    """What one direction did. ``forwarded`` counts datagrams sent on, copies included."""

    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    truncated: int = 0
    send_errors: int = 0  # could not be sent (socket error, or the client mapping was gone)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass
class ProxyStats:
    """Both directions' counters and the client mappings' life cycle."""

    up: Counters = field(default_factory=Counters)
    down: Counters = field(default_factory=Counters)
    clients: int = 0  # mappings created
    expired: int = 0  # mappings closed after ``idle_timeout``
    evicted: int = 0  # mappings closed to make room (``max_clients``)


class _Direction:
    """One direction's impairments: decides per datagram, then sends now or from its heap."""

    def __init__(self, impairment: Impairment, rng: random.Random, counters: Counters,
                 send: Callable[[bytes, Any], None]) -> None:
        self.impairment = impairment
        self._rng = rng
        self._counters = counters
        self._send_now = send
        self._heap: list[tuple[float, int, bytes, Any]] = []
        self._seq = 0  # tie-breaker: equal due times keep their arrival order
        self._wake = Event()
        self._greenlet: gevent.Greenlet | None = None

    def start(self) -> None:
        self._greenlet = gevent.spawn(self._schedule)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        self._heap.clear()  # datagrams still on their way are lost, as on a link going down

    def submit(self, data: bytes, dest: Any) -> None:
        """Impair one datagram bound for ``dest`` (a client mapping or a client address)."""
        imp, rng, counters = self.impairment, self._rng, self._counters
        if imp.loss and rng.random() < imp.loss:
            counters.dropped += 1
            return
        if imp.truncate is not None and len(data) > imp.truncate:
            data = data[: imp.truncate]
            counters.truncated += 1
        if imp.corrupt and data and rng.random() < imp.corrupt:
            buf = bytearray(data)
            buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
            data = bytes(buf)
            counters.corrupted += 1
        copies = 1
        if imp.duplicate and rng.random() < imp.duplicate:
            copies = 2
            counters.duplicated += 1
        hold = 0.0
        if imp.reorder and rng.random() < imp.reorder:
            hold = imp.reorder_delay
            counters.reordered += 1
        for _ in range(copies):
            wait = self._delay() + hold
            if wait <= 0:
                self._send(data, dest)
                continue
            self._seq += 1
            entry = (time.monotonic() + wait, self._seq, data, dest)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # due before whatever the scheduler sleeps for
                self._wake.set()

    def _delay(self) -> float:
        imp = self.impairment
        if not imp.jitter:
            return imp.delay
        if imp.distribution == "normal":
            return max(0.0, self._rng.gauss(imp.delay, imp.jitter))
        return max(0.0, imp.delay + self._rng.uniform(-imp.jitter, imp.jitter))

    def _send(self, data: bytes, dest: Any) -> None:
        try:
            self._send_now(data, dest)
        except OSError:
            self._counters.send_errors += 1
        else:
            self._counters.forwarded += 1

    def _schedule(self) -> None:
        heap = self._heap
        burst = 0
        while True:
            if not heap:
                self._wake.wait()
            else:
                wait = heap[0][0] - time.monotonic()
                if wait > 0:
                    self._wake.wait(wait)
                else:
                    _, _, data, dest = heapq.heappop(heap)
                    self._send(data, dest)
                    burst += 1
                    if burst % _BURST == 0:
                        gevent.sleep(0)  # let the receivers drain their sockets between bursts
                    continue
            self._wake.clear()


class _Client:
    """One client's mapping: its address and the upstream socket that speaks for it."""

    __slots__ = ("addr", "sock", "greenlet", "last_seen", "closed")

    def __init__(self, addr: SockAddr, sock: socket.socket) -> None:
        self.addr = addr
        self.sock = sock
        self.greenlet: gevent.Greenlet | None = None
        self.last_seen = time.monotonic()
        self.closed = False


class ImpairmentProxy:
    """Forwards UDP between clients and ``target``, impairing each direction.

    ``listen`` with port 0 picks a free port (see :attr:`address`). ``seed`` makes the
    impairment decisions reproducible (default: a random seed, kept in :attr:`seed`).
    At most ``max_clients`` client mappings (one upstream socket each) are kept; one
    idle for ``idle_timeout`` seconds is closed. ``start()`` binds and serves in
    background greenlets; ``stop()`` closes everything, and datagrams still being
    delayed are discarded without being counted. Also a context manager.
    """

    def __init__(
        self,
        target: Address,
        *,
        listen: Address = ("127.0.0.1", 0),
        up: Impairment = Impairment(),
        down: Impairment = Impairment(),
        seed: int | None = None,
        max_clients: int = 10_000,
        idle_timeout: float = 60.0,
    ) -> None:
        if max_clients < 1 or idle_timeout <= 0:
            raise ValueError("max_clients and idle_timeout must be positive")
        self.target = target
        self._listen = listen
        self.seed = seed if seed is not None else random.SystemRandom().randrange(2**32)
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.stats = ProxyStats()
        # String seeds hash with SHA-512: stable across runs and Python versions.
        self._up = _Direction(up, random.Random(f"{self.seed}:up"), self.stats.up, self._send_up)
        self._down = _Direction(down, random.Random(f"{self.seed}:down"), self.stats.down, self._send_down)
        self._clients: OrderedDict[SockAddr, _Client] = OrderedDict()  # least recently active first
        self._sock: socket.socket | None = None
        self._greenlets: list[gevent.Greenlet] = []

    @property
    def address(self) -> Address:
        """The address clients send to (the real port when started with port 0)."""
        assert self._sock is not None, "proxy not started"
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def up(self) -> Impairment:
        """Client-to-server impairment; assign a new one to change it from the next datagram on."""
        return self._up.impairment

    @up.setter
    def up(self, impairment: Impairment) -> None:
        self._up.impairment = impairment

    @property
    def down(self) -> Impairment:
        """Server-to-client impairment; assignable like :attr:`up`."""
        return self._down.impairment

    @down.setter
    def down(self, impairment: Impairment) -> None:
        self._down.impairment = impairment

    @property
    def client_count(self) -> int:
        return len(self._clients)

    def start(self) -> ImpairmentProxy:
        sock = socket.socket(_family(self._listen[0]), _stdsocket.SOCK_DGRAM)
        try:
            # Thousands of clients send at once: a bigger buffer keeps the kernel from adding loss.
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, _BUFFER)
            sock.bind(self._listen)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._up.start()
        self._down.start()
        self._greenlets = [gevent.spawn(self._receive_loop), gevent.spawn(self._expire_loop)]
        return self

    def stop(self) -> None:
        gevent.killall(self._greenlets)
        self._greenlets = []
        self._up.stop()
        self._down.stop()
        clients = list(self._clients.values())
        self._clients.clear()
        for client in clients:
            self._close(client)
        gevent.killall([c.greenlet for c in clients if c.greenlet is not None])
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> ImpairmentProxy:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- loops --------------------------------------------------------------

    def _receive_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            try:
                data, addr = sock.recvfrom(_MAX_DATAGRAM)
            except OSError:  # e.g. an ICMP error reported for an earlier reply
                continue
            client = self._clients.get(addr)
            if client is None:
                client = self._open(addr)
                if client is None:
                    continue
            else:
                self._clients.move_to_end(addr)
            client.last_seen = time.monotonic()
            self._up.submit(data, client)

    def _upstream_loop(self, client: _Client) -> None:
        while not client.closed:
            try:
                data = client.sock.recv(_MAX_DATAGRAM)
            except ConnectionRefusedError:  # ICMP from the target: nothing listens (yet)
                continue
            except OSError:  # closed under us
                return
            client.last_seen = time.monotonic()
            if self._clients.get(client.addr) is client:
                self._clients.move_to_end(client.addr)
            self._down.submit(data, client.addr)

    def _expire_loop(self) -> None:
        while True:
            gevent.sleep(min(1.0, self.idle_timeout / 4))
            horizon = time.monotonic() - self.idle_timeout
            while self._clients:
                oldest = next(iter(self._clients.values()))
                if oldest.last_seen > horizon:
                    break  # the rest were active more recently
                del self._clients[oldest.addr]
                self._close(oldest)
                self.stats.expired += 1

    # -- mappings -----------------------------------------------------------

    def _open(self, addr: SockAddr) -> _Client | None:
        if len(self._clients) >= self.max_clients:
            self._close(self._clients.popitem(last=False)[1])
            self.stats.evicted += 1
        sock = socket.socket(_family(self.target[0]), _stdsocket.SOCK_DGRAM)
        try:
            # Only an upper bound (memory is used only while datagrams queue): replies come in bursts.
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, _BUFFER // 4)
            sock.connect(self.target)  # connected: only the target's replies come back on it
        except OSError:
            sock.close()
            return None
        client = _Client(addr, sock)
        client.greenlet = gevent.spawn(self._upstream_loop, client)
        self._clients[addr] = client
        self.stats.clients += 1
        return client

    def _close(self, client: _Client) -> None:
        client.closed = True
        if client.greenlet is not None:
            client.greenlet.kill(block=False)
        client.sock.close()

    def _send_up(self, data: bytes, client: _Client) -> None:
        if client.closed:
            raise OSError("client mapping closed")
        client.sock.send(data)

    def _send_down(self, data: bytes, addr: SockAddr) -> None:
        if self._sock is None:
            raise OSError("proxy stopped")
        self._sock.sendto(data, addr)


def _family(host: str) -> int:
    return _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET


# -- command-line values ------------------------------------------------------

#: The impairment options of ``loadgen impair``: field -> (metavar, help).
OPTIONS: dict[str, tuple[str, str]] = {
    "loss": ("P", "probability a datagram is dropped"),
    "delay": ("TIME", "added one-way delay, e.g. 20ms or 0.02s (a bare number is seconds)"),
    "jitter": ("TIME", "delay varies by this much (see --distribution)"),
    "distribution": ("NAME", "jitter distribution: uniform (delay +- jitter) or normal (sd = jitter)"),
    "duplicate": ("P", "probability a datagram is sent twice"),
    "reorder": ("P", "probability a datagram is held back so later ones overtake it"),
    "reorder_delay": ("TIME", "how much longer a reordered datagram is held back (default 10ms)"),
    "corrupt": ("P", "probability one random byte of a datagram is changed"),
    "truncate": ("BYTES", "datagrams longer than this are cut to this size (and still sent)"),
}


def parse_probability(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{option}: expected a probability between 0 and 1, got {text!r}")
    return value


def parse_duration(text: str, option: str) -> float:
    """Seconds from ``20ms``, ``0.02s`` or ``0.02`` (see :func:`loadgen.syntax.parse_duration`); never negative."""
    value = parse_duration_text(text)
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{option}: expected a time >= 0 like '20ms' or '0.5s', got {text!r}")
    return value


def parse_size(text: str, option: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"{option}: expected a size in bytes >= 1, got {text!r}")
    return int(text)


def parse_address(text: str, option: str, *, any_port: bool = False) -> Address:
    """``HOST:PORT`` or ``[V6]:PORT`` with a literal IP (or ``localhost``); port 0 only if ``any_port``."""
    return parse_host_port(text, option, literal_ip=True, lowest_port=0 if any_port else 1)


def format_address(address: Address) -> str:
    return format_host_port(*address)


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "loss": parse_probability, "duplicate": parse_probability, "reorder": parse_probability,
    "corrupt": parse_probability, "delay": parse_duration, "jitter": parse_duration,
    "reorder_delay": parse_duration, "truncate": parse_size,
}


def impairments_from_options(options: Mapping[str, str | None]) -> tuple[Impairment, Impairment]:
    """``(up, down)`` from command-line text: ``loss`` sets both, ``up_loss`` / ``down_loss`` one.

    Raises :class:`ConfigError` naming the option.
    """
    chosen: dict[str, dict[str, Any]] = {"up": {}, "down": {}}
    for name in OPTIONS:
        for prefix, directions in (("", ("up", "down")), ("up_", ("up",)), ("down_", ("down",))):
            text = options.get(prefix + name)
            if text is None:
                continue
            option = "--" + (prefix + name).replace("_", "-")
            if name == "distribution":
                if text not in DISTRIBUTIONS:
                    raise ConfigError(f"{option}: expected one of {', '.join(DISTRIBUTIONS)}, got {text!r}")
                value: Any = text
            else:
                value = _PARSERS[name](text, option)
            for direction in directions:  # the one-direction options come later: they win
                chosen[direction][name] = value
    return Impairment(**chosen["up"]), Impairment(**chosen["down"])


def counters_line(direction: str, counters: Counters) -> str:
    return f"{direction}: " + ", ".join(f"{name} {value}" for name, value in counters.as_dict().items())

