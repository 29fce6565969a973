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

What happens to one datagram is decided in :mod:`loadgen.servers.impairment` (no sockets, no clock);
this module moves the datagrams and keeps time. Delays never block other traffic: each
direction has one scheduler greenlet and a heap of due times, not one greenlet per datagram.
Idle client mappings expire; when ``max_clients`` mappings exist, a new client evicts the
least recently active one (as a full NAT table would).
"""

from __future__ import annotations

import heapq
import random
import socket as _stdsocket
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import gevent
from gevent import socket
from gevent.event import Event

from loadgen.scenario.syntax import SockAddr
from loadgen.servers.impairment import (
    DISTRIBUTIONS,
    NO_IMPAIRMENT,
    OPTIONS,
    Address,
    Counters,
    Impairment,
    counters_line,
    format_address,
    impair,
    impairments_from_options,
    parse_address,
    parse_duration,
    parse_probability,
    parse_size,
)

# The model and the option parsers live in loadgen.servers.impairment; they are named here too, for
# the command line and for users of the proxy (one import for the proxy and what it takes).
__all__ = ["DISTRIBUTIONS", "OPTIONS", "Address", "Counters", "Impairment", "ImpairmentProxy", "ProxyStats",
           "SockAddr", "counters_line", "format_address", "impair", "impairments_from_options", "parse_address",
           "parse_duration", "parse_probability", "parse_size"]


#: Where a direction sends: the client's mapping (up) or the client's address (down).
_Dest = TypeVar("_Dest")

_MAX_DATAGRAM = 65536
_READ_BATCH = 64  # datagrams read before the others on the event loop get a turn
_BUFFER = 4 * 1024 * 1024  # socket receive buffers: bursts must not add loss of their own
_BURST = 32  # datagrams a scheduler sends before it yields


@dataclass
class ProxyStats:
    """Both directions' counters and the client mappings' life cycle."""

    up: Counters = field(default_factory=Counters)
    down: Counters = field(default_factory=Counters)
    clients: int = 0  # mappings created
    expired: int = 0  # mappings closed after ``idle_timeout``
    evicted: int = 0  # mappings closed to make room (``max_clients``)


class _Direction(Generic[_Dest]):
    """One direction's impairments: decides per datagram, then sends now or from its heap."""

    def __init__(self, impairment: Impairment, rng: random.Random, counters: Counters,
                 send: Callable[[bytes, _Dest], None]) -> None:
        self.impairment = impairment
        self._rng = rng
        self._counters = counters
        self._send_now = send
        self._heap: list[tuple[float, int, bytes, _Dest]] = []
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

    def submit(self, data: bytes, dest: _Dest) -> None:
        """Impair one datagram bound for ``dest`` (a client mapping or a client address)."""
        data, waits = impair(data, self.impairment, self._rng, self._counters)
        for wait in waits:
            if wait <= 0:
                self._send(data, dest)
                continue
            self._seq += 1
            entry = (time.monotonic() + wait, self._seq, data, dest)
            heapq.heappush(self._heap, entry)
            if self._heap[0] is entry:  # due before whatever the scheduler sleeps for
                self._wake.set()

    def _send(self, data: bytes, dest: _Dest) -> None:
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
        up: Impairment = NO_IMPAIRMENT,
        down: Impairment = NO_IMPAIRMENT,
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
        batch = 0
        while True:
            # gevent's recvfrom returns without yielding while datagrams wait: a flood that kept the
            # socket from emptying held back the expiry loop, the delayed sends and every other greenlet.
            batch += 1
            if batch == _READ_BATCH:
                batch = 0
                gevent.sleep(0)
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
