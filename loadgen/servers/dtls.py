"""The reference DTLS-PSK server: one UDP socket, thousands of peers.

Per-peer state is created only after a ClientHello returns a valid cookie (see
:func:`loadgen.protocol.dtls_factory.accept`). Replies to each ping by echoing it, or in the
style of Qt's DTLS server example ("to IDENTITY: PAYLOAD"). Idle peers expire.

Limits: at most ``max_peers`` peers with state, of which at most ``max_half_open``
still handshaking; a handshake must complete within ``handshake_timeout``. When full,
a cookieless ClientHello still gets its stateless HelloVerifyRequest, and a ClientHello
with a valid cookie (which would create state) is dropped and counted ``server-full``.

Deadlines (handshake, idle) live in one heap (:mod:`loadgen.servers.deadlines`): the timer
loop sleeps until the earliest is due, so idle peers cost no CPU. The server never retransmits a flight on a timer of
its own: every DTLS client retransmits its flight until answered (RFC 6347 4.2.4), and
the engines answer a repeat of the client's flight with theirs. So a lost server flight
costs no more than it would otherwise, while half-open peers that went silent (an
attacker's, or a client that gave up) cost nothing until their handshake timeout, and
an address that stopped listening gets no more datagrams. One peer's datagram or timer
step that raises unexpectedly drops that peer (``internal-error``); the loops go on.
"""

from __future__ import annotations

import _socket  # the C socket type: never monkey-patched, no wrapper on the hot path
import logging
import math
import socket as _stdsocket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import gevent

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.cookies import CookieJar
from loadgen.protocol.credentials import KeyStore
from loadgen.protocol.errors import InternalError, LoadgenError, ServerFull
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from loadgen.protocol.native import records
from loadgen.protocol.native import server as psk_server
from loadgen.protocol.native.handshake import DEFAULT_MTU
from loadgen.scenario.syntax import SockAddr, format_host_port
from loadgen.servers.deadlines import Deadlines
from loadgen.servers.ratelimit import TokenBucket, client_hello_has_cookie
from loadgen.servers.udp import bind_udp
from loadgen.stats.throttle import ThrottledLog, exception_summary
from loadgen.transport.heap import freeze_while_growing

log = logging.getLogger("loadgen.server")

#: Defaults of ``serve dtls``. 100,000 peers at ~11 KiB each (established, native) is ~1.1 GiB;
#: 10,000 half-open peers bound what a flood of cookie'd ClientHellos can hold. See README.
DEFAULT_MAX_PEERS = 100_000
DEFAULT_MAX_HALF_OPEN = 10_000
DEFAULT_HANDSHAKE_TIMEOUT = 10.0
DEFAULT_IDLE_TIMEOUT = 60.0

#: Datagrams read in one call of the read watcher before the loop's other watchers (the timer
#: loop, another worker's) get their turn; the watcher is level-triggered and calls again.
_READ_BATCH = 64


@dataclass
class ServerStats:
    """What the server has seen; ``failures`` is keyed by error code."""

    hello_verify_sent: int = 0
    handshakes: int = 0
    pings: int = 0
    closed_by_peer: int = 0
    expired: int = 0
    ignored: int = 0  # datagrams from unknown peers that were not a ClientHello we could answer
    throttled_handshakes: int = 0  # ClientHellos with a cookie dropped over --max-handshake-rate
    throttled_pings: int = 0  # application-data records dropped over --max-ping-rate
    failures: Counter[str] = field(default_factory=Counter)


@dataclass(slots=True, eq=False)
class _Peer:
    """One peer's state: small, since a server holds tens of thousands (slots, no dict)."""

    engine: dtls_factory.ServerEngine
    last_seen: float
    deadline: float  # the handshake must complete by then
    half_open: bool = True  # handshake not done yet
    # The due time of this peer's live heap entry (inf: none). An entry whose time differs is
    # stale (lazy invalidation): the peer was rescheduled, dropped, or replaced since.
    wake: float = math.inf


class DtlsServer:
    """Reference DTLS server. ``start()`` binds and serves in background greenlets."""

    def __init__(
        self,
        keys: KeyStore,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        hint: bytes | None = b"loadgen",
        reply: str = "echo",
        ciphers: str = dtls_contexts.DEFAULT_PSK_CIPHERS,
        mtu: int = DEFAULT_MTU,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        max_peers: int = DEFAULT_MAX_PEERS,
        max_half_open: int = DEFAULT_MAX_HALF_OPEN,
        native: bool = True,
        max_handshake_rate: float | None = None,
        max_ping_rate: float | None = None,
        cookie_seed: bytes | None = None,
    ) -> None:
        if reply not in ("echo", "qt"):
            raise ValueError(f"reply must be 'echo' or 'qt', not {reply!r}")
        if max_peers < 1 or max_half_open < 1:
            raise ValueError("max_peers and max_half_open must be at least 1")
        if handshake_timeout <= 0 or idle_timeout <= 0:
            raise ValueError("handshake_timeout and idle_timeout must be > 0")
        # cookie_seed: shared by the workers of one port, so a cookie verifies in any (see CookieJar).
        self._cookies = CookieJar(seed=cookie_seed)  # ours too: a full server checks a cookie without creating state
        # native: loadgen's own handshake where the suites allow (see protocol/psk_handshake.py).
        self._context = dtls_contexts.server_context(keys, hint=hint, ciphers=ciphers, cookies=self._cookies,
                                                     native=native)
        self._host, self._port = host, port
        self._reply = reply
        self._mtu = mtu
        self.idle_timeout = idle_timeout
        self.handshake_timeout = handshake_timeout
        self.max_peers = max_peers
        self.max_half_open = max_half_open
        self._peers: dict[SockAddr, _Peer] = {}
        self._half_open = 0  # peers whose handshake is not done yet
        self._deadlines: Deadlines[SockAddr, _Peer] = Deadlines(
            find=self._peers.get, due=self._on_due, failed=lambda addr, _, exc: self._internal_error(addr, exc),
            live=self._peers.items, count=self._peers.__len__)
        self._sock: _socket.socket | None = None
        self._reader: Any = None  # the socket's read watcher, once started
        # One reused receive buffer, each datagram copied out at its size: recvfrom(65536)
        # mallocs 64 KiB per datagram and shrinks it, and the long-lived per-peer objects
        # allocated meanwhile land in the freed tails, fragmenting the heap (~35 KiB of RSS
        # per hostile peer under the handshake fuzz).
        self._buffer = bytearray(65536)
        self._view = memoryview(self._buffer)
        self._greenlets: list[gevent.Greenlet] = []
        self.stats = ServerStats()
        self._log = ThrottledLog(log)
        # Capacity limits for testing capacity planning: over-limit datagrams are dropped silently.
        now = time.monotonic()
        self._handshake_bucket = TokenBucket(max_handshake_rate, now=now) if max_handshake_rate else None
        self._ping_bucket = TokenBucket(max_ping_rate, now=now) if max_ping_rate else None

    @property
    def address(self) -> tuple[str, int]:
        assert self._sock is not None, "server not started"
        host, port = self._sock.getsockname()[:2]
        return host, port

    @property
    def peer_count(self) -> int:
        return len(self._peers)

    @property
    def half_open_count(self) -> int:
        """Peers whose handshake is not done yet."""
        return self._half_open

    def peer_addresses(self) -> list[SockAddr]:
        """Addresses of the peers the server holds state for (after their cookie checked out)."""
        return list(self._peers)

    def describe_limits(self) -> str:
        """The limits in force, for the listening line."""
        return (f"max {self.max_peers} peers, {self.max_half_open} half-open, "
                f"handshake timeout {self.handshake_timeout:g}s, idle timeout {self.idle_timeout:g}s")

    def start(self, bound: _stdsocket.socket | None = None) -> DtlsServer:
        """Serve on a new socket bound to host and port, or on ``bound`` (a worker's SO_REUSEPORT socket)."""
        if bound is None:
            bound = bind_udp(self._host, self._port, reuse_port=False)
        # A plain non-blocking socket read from a watcher's callback, as the client associations
        # are: no greenlet switch, watcher start and stop, or BlockingIOError per wake-up, which a
        # receive greenlet on gevent's socket paid for every datagram that found the loop idle.
        # The C socket type (never monkey-patched): no wrapper on the hot path either.
        sock = _socket.socket(bound.family, bound.type, 0, bound.detach())
        sock.setblocking(False)
        self._sock = sock
        self._reader = gevent.get_hub().loop.io(sock.fileno(), 1)
        self._reader.start(self._on_readable)
        self._greenlets = [gevent.spawn(self._deadlines.run),
                           # Peers are long-lived: keep them out of full garbage collections, which
                           # otherwise walk every peer (~0.4 s at 50,000). They hold no cycles.
                           freeze_while_growing(lambda: len(self._peers))]
        return self

    def serve_forever(self) -> None:
        if self._sock is None:
            self.start()
        gevent.joinall(self._greenlets)

    def stop(self) -> None:
        """Send close_notify to every peer, then close the socket. Never raises for one peer."""
        gevent.killall(self._greenlets)
        self._greenlets = []
        if self._reader is not None:
            self._reader.stop()
            self._reader.close()
            self._reader = None
        for addr, peer in list(self._peers.items()):
            try:
                peer.engine.close()
                self._send(peer.engine, addr)
            except Exception as exc:  # a broken engine must not keep the others from their goodbye
                self._internal_error(None, exc)
        self._peers.clear()
        self._deadlines.clear()
        self._half_open = 0
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()

    # -- loops --------------------------------------------------------------

    def _on_readable(self) -> None:
        """The read watcher's callback, on the event loop: read and handle what is queued, a
        batch at most. It must not block (it runs in the hub) and never raises (a raise would
        print a traceback per datagram): one datagram never ends what serves the others."""
        sock, buffer, view = self._sock, self._buffer, self._view
        if sock is None:
            return  # stopped (stop() also stops the watcher; nothing here yields to it)
        for _ in range(_READ_BATCH):
            try:
                size, addr = sock.recvfrom_into(buffer)
            except BlockingIOError:
                return  # drained: the watcher calls again when more comes
            except OSError:  # e.g. ICMP from a vanished client on some kernels
                continue
            except Exception as exc:  # e.g. MemoryError: the watcher calls again on the next turn
                self._internal_error(None, exc)
                return
            try:
                self.handle_datagram(bytes(view[:size]), addr)
            except Exception as exc:
                self._internal_error(addr, exc)

    def _on_due(self, peer: _Peer, addr: SockAddr, now: float) -> None:
        if peer.half_open and now >= peer.deadline:
            self._drop(addr, peer, "handshake-timeout")
            return
        if now >= peer.last_seen + self.idle_timeout:
            self.stats.expired += 1
            self._drop(addr, peer, None)
            return
        self._schedule(peer, addr)

    def _schedule(self, peer: _Peer, addr: SockAddr) -> None:
        """Make sure the deadlines hold an entry for ``peer`` no later than its next due time."""
        due = peer.last_seen + self.idle_timeout
        if peer.half_open:
            due = min(due, peer.deadline)
        # No engine timer here: the server retransmits only when the client repeats (see above).
        self._deadlines.schedule(addr, peer, due)

    # -- per datagram -------------------------------------------------------

    def handle_datagram(self, datagram: bytes, addr: SockAddr) -> None:
        peer = self._peers.get(addr)
        now = time.monotonic()
        # A byte compared first: an established peer's datagrams are pings (0x17), not hellos (0x16).
        if peer is None or (not peer.half_open and datagram[:1] == b"\x16" and records.is_client_hello(datagram)):
            self._handle_newcomer(datagram, addr, peer, now)
            return
        peer.last_seen = now
        if self._ping_bucket is not None and datagram[:1] == b"\x17" and not peer.half_open \
                and not self._ping_bucket.take(now):
            self.stats.throttled_pings += 1  # 0x17: application data, i.e. a ping
            return
        peer.engine.receive_datagram(datagram, now)
        self._after_input(peer, addr)

    def _handle_newcomer(self, datagram: bytes, addr: SockAddr, peer: _Peer | None, now: float) -> None:
        """An unknown peer, or a known one starting over (client restarted on the same port):
        stateless cookie exchange first; state only for a valid cookie and only within the limits."""
        with_cookie = client_hello_has_cookie(datagram)
        if with_cookie and self._full(replacing=peer) and self._cookie_valid(datagram, addr, now):
            self.stats.failures[ServerFull.code] += 1  # counted, never logged per datagram
            return
        if self._handshake_bucket is not None and with_cookie and not self._handshake_bucket.take(now):
            self.stats.throttled_handshakes += 1
            return
        engine, replies = dtls_factory.accept(self._context, datagram, _peer_key(addr), now, mtu=self._mtu)
        if engine is not None and self._full(replacing=peer):
            # The cookie check above and the engine's may differ (OpenSSL's path): still no state.
            self.stats.failures[ServerFull.code] += 1
            return
        for reply in replies:
            self._sendto(reply, addr)
        if engine is None:
            self.stats.hello_verify_sent += bool(replies)
            self.stats.ignored += not replies
            return
        if peer is not None:
            self._drop(addr, peer, None)
        peer = _Peer(engine, now, now + self.handshake_timeout)
        self._peers[addr] = peer
        self._half_open += 1
        self._after_input(peer, addr)
        if self._peers.get(addr) is peer:
            self._schedule(peer, addr)

    def _full(self, *, replacing: _Peer | None) -> bool:
        """True when a new half-open peer would exceed a limit (a restarting peer replaces its old state)."""
        peers = len(self._peers) - (replacing is not None)
        return peers >= self.max_peers or self._half_open >= self.max_half_open

    def _cookie_valid(self, datagram: bytes, addr: SockAddr, now: float) -> bool:
        hello = psk_server.parse_client_hello(datagram)
        return hello is not None and bool(hello.cookie) and self._cookies.check(_peer_key(addr), hello.cookie, now)

    def _after_input(self, peer: _Peer, addr: SockAddr) -> None:
        engine = peer.engine
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                answer = self._answer(engine, event.data)
                if len(answer) > engine.cleartext_mtu:
                    # A ping whose answer cannot fit one datagram (the peer's MTU is larger than
                    # ours): not answered, so not counted as answered.
                    self.stats.failures["reply-too-large"] += 1
                    continue
                try:
                    engine.send(answer)
                except LoadgenError as exc:
                    self.stats.failures[exc.code] += 1
                    continue
                self.stats.pings += 1
            elif isinstance(event, HandshakeCompleted):
                self.stats.handshakes += 1
                if peer.half_open:
                    peer.half_open = False
                    self._half_open -= 1
            elif isinstance(event, ConnectionClosed):
                self.stats.closed_by_peer += 1
            elif isinstance(event, ConnectionFailed):
                self.stats.failures[event.error.code] += 1
                self._log.log(logging.WARNING, event.error.code, "%s: %s", _peer_text(addr), event.error)
        self._send(engine, addr)
        if engine.closed:
            self._drop(addr, peer, None)

    def _answer(self, engine: dtls_factory.ServerEngine, data: bytes) -> bytes:
        if self._reply == "echo":
            return data
        who = (engine.peer_identity or b"?").decode("utf-8", "replace")
        return f"to {who}: ".encode() + data

    def _drop(self, addr: SockAddr, peer: _Peer | None, failure: str | None) -> None:
        """Forget ``peer`` (if it is still the one at ``addr``); its heap entry goes stale."""
        if failure:
            self.stats.failures[failure] += 1
        current = self._peers.get(addr)
        if current is None or (peer is not None and current is not peer):
            return
        del self._peers[addr]
        current.wake = math.inf
        if current.half_open:
            current.half_open = False
            self._half_open -= 1

    def _internal_error(self, addr: SockAddr | None, exc: Exception) -> None:
        """A bug met while serving one peer: drop that peer, count it, log its type (rate-limited)."""
        try:
            self.stats.failures[InternalError.code] += 1
            if addr is not None:
                self._drop(addr, None, None)
            self._log.log(logging.ERROR, InternalError.code, "%s: internal error, peer dropped: %s",
                          _peer_text(addr) if addr is not None else "server", exception_summary(exc))
        except Exception:  # noqa: S110 - e.g. MemoryError again: the loop must go on regardless
            pass

    def _send(self, engine: dtls_factory.ServerEngine, addr: SockAddr) -> None:
        for datagram in engine.datagrams_to_send():
            self._sendto(datagram, addr)

    def _sendto(self, datagram: bytes, addr: SockAddr) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(datagram, addr)
        except OSError as exc:  # a full buffer or a vanished peer must not stop the server
            self._log.log(logging.WARNING, "send", "send to %s failed: %s", _peer_text(addr), exc)


def _peer_key(addr: SockAddr) -> bytes:
    return f"{addr[0]}:{addr[1]}".encode()


def _peer_text(addr: SockAddr) -> str:
    return format_host_port(addr[0], addr[1])
