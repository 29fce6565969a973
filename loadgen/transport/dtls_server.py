"""The reference DTLS-PSK server: one UDP socket, thousands of peers.

Per-peer state is created only after a ClientHello returns a valid cookie (see
:func:`loadgen.protocol.dtls.accept`). Replies to each ping by echoing it, or in the
style of Qt's DTLS server example ("to IDENTITY: PAYLOAD"). Idle peers expire.
"""

from __future__ import annotations

import logging
import socket as _stdsocket
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field

import gevent
from gevent import socket

from ..credentials import KeyStore
from ..errors import LoadgenError
from ..heap import freeze_while_growing
from ..protocol import dtls
from ..protocol.cookies import CookieJar
from ..protocol.events import ConnectionFailed, DataReceived, HandshakeCompleted, PeerClosed
from ..throttle import ThrottledLog
from .ratelimit import TokenBucket, client_hello_has_cookie

log = logging.getLogger("loadgen.server")


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


@dataclass
class _Peer:
    engine: dtls.ServerEngine
    last_seen: float


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
        ciphers: str = dtls.DEFAULT_PSK_CIPHERS,
        mtu: int = dtls.DEFAULT_MTU,
        idle_timeout: float = 60.0,
        handshake_timeout: float = 30.0,
        native: bool = True,
        max_handshake_rate: float | None = None,
        max_ping_rate: float | None = None,
    ) -> None:
        if reply not in ("echo", "qt"):
            raise ValueError(f"reply must be 'echo' or 'qt', not {reply!r}")
        # native: loadgen's own handshake where the suites allow (see protocol/psk_handshake.py).
        self._context = dtls.server_context(keys, hint=hint, ciphers=ciphers, cookies=CookieJar(), native=native)
        self._host, self._port = host, port
        self._reply = reply
        self._mtu = mtu
        self._idle_timeout = idle_timeout
        self._handshake_timeout = handshake_timeout
        # Least recently heard from first: expiring idle peers looks at the front only
        # (a sweep over 50,000 peers stalled the server ~150 ms a second).
        self._peers: OrderedDict[tuple, _Peer] = OrderedDict()
        self._handshaking: dict[tuple, float] = {}  # peer -> handshake deadline
        self._sock: socket.socket | None = None
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

    def peer_addresses(self) -> list[tuple]:
        """Addresses of the peers the server holds state for (after their cookie checked out)."""
        return list(self._peers)

    def start(self) -> DtlsServer:
        family = _stdsocket.AF_INET6 if ":" in self._host else _stdsocket.AF_INET
        sock = socket.socket(family, _stdsocket.SOCK_DGRAM)
        # Thousands of clients send at once: a bigger receive buffer rides out bursts.
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, 4 * 1024 * 1024)
        sock.bind((self._host, self._port))
        self._sock = sock
        self._greenlets = [gevent.spawn(self._receive_loop), gevent.spawn(self._timer_loop),
                           # Peers are long-lived: keep them out of full garbage collections, which
                           # otherwise walk every peer (~0.4 s at 50,000). They hold no cycles.
                           freeze_while_growing(lambda: len(self._peers))]
        return self

    def serve_forever(self) -> None:
        if self._sock is None:
            self.start()
        gevent.joinall(self._greenlets)

    def stop(self) -> None:
        """Send close_notify to every peer, then close the socket."""
        gevent.killall(self._greenlets)
        for addr, peer in list(self._peers.items()):
            peer.engine.close()
            self._send(peer.engine, addr)
        self._peers.clear()
        self._handshaking.clear()
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    # -- loops --------------------------------------------------------------

    def _receive_loop(self) -> None:
        assert self._sock is not None
        sock = self._sock
        while True:
            try:
                datagram, addr = sock.recvfrom(65536)
            except OSError:  # e.g. ICMP from a vanished client on some kernels
                continue
            self.handle_datagram(datagram, addr)

    def _timer_loop(self) -> None:
        last_sweep = time.monotonic()
        while True:
            gevent.sleep(0.05)
            now = time.monotonic()
            for addr, deadline in list(self._handshaking.items()):
                peer = self._peers.get(addr)
                if peer is None:
                    self._handshaking.pop(addr, None)
                    continue
                if now >= deadline:
                    self._drop(addr, "handshake-timeout")
                    continue
                timer = peer.engine.get_timer()
                if timer is not None and timer <= 0:
                    peer.engine.handle_timer()
                    self._send(peer.engine, addr)
            if now - last_sweep >= 1.0:
                last_sweep = now
                while self._peers:
                    addr, peer = next(iter(self._peers.items()))
                    if now - peer.last_seen <= self._idle_timeout:
                        break  # everyone behind it was heard from later
                    self.stats.expired += 1
                    self._drop(addr, None)

    # -- per datagram -------------------------------------------------------

    def handle_datagram(self, datagram: bytes, addr: tuple) -> None:
        peer = self._peers.get(addr)
        now = time.monotonic()
        if peer is None or (peer.engine.handshake_done and dtls.records.is_client_hello(datagram)):
            # Unknown peer, or a known one starting over (client restarted on the
            # same port): stateless cookie exchange first.
            if self._handshake_bucket is not None and client_hello_has_cookie(datagram) \
                    and not self._handshake_bucket.take(now):
                self.stats.throttled_handshakes += 1
                return
            engine, replies = dtls.accept(self._context, datagram, _peer_key(addr), mtu=self._mtu)
            for reply in replies:
                self._sendto(reply, addr)
            if engine is None:
                self.stats.hello_verify_sent += bool(replies)
                self.stats.ignored += not replies
                return
            if peer is not None:
                self._drop(addr, None)
            peer = _Peer(engine, now)
            self._peers[addr] = peer
            self._handshaking[addr] = now + self._handshake_timeout
            self._after_input(peer, addr)
            return
        peer.last_seen = now
        self._peers.move_to_end(addr)
        if self._ping_bucket is not None and datagram[:1] == b"\x17" and peer.engine.handshake_done \
                and not self._ping_bucket.take(now):
            self.stats.throttled_pings += 1  # 0x17: application data, i.e. a ping
            return
        peer.engine.receive_datagram(datagram)
        self._after_input(peer, addr)

    def _after_input(self, peer: _Peer, addr: tuple) -> None:
        engine = peer.engine
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                self.stats.pings += 1
                try:
                    engine.send(self._answer(engine, event.data))
                except LoadgenError as exc:  # e.g. an answer too large for the MTU
                    self.stats.failures[exc.code] += 1
            elif isinstance(event, HandshakeCompleted):
                self.stats.handshakes += 1
                self._handshaking.pop(addr, None)
            elif isinstance(event, PeerClosed):
                self.stats.closed_by_peer += 1
            elif isinstance(event, ConnectionFailed):
                self.stats.failures[event.error.code] += 1
                self._log.log(logging.WARNING, event.error.code, "%s: %s", _peer_text(addr), event.error)
        self._send(engine, addr)
        if engine.closed:
            self._drop(addr, None)

    def _answer(self, engine: dtls.ServerEngine, data: bytes) -> bytes:
        if self._reply == "echo":
            return data
        who = (engine.peer_identity or b"?").decode("utf-8", "replace")
        return f"to {who}: ".encode() + data

    def _drop(self, addr: tuple, failure: str | None) -> None:
        if failure:
            self.stats.failures[failure] += 1
        self._peers.pop(addr, None)
        self._handshaking.pop(addr, None)

    def _send(self, engine: dtls.ServerEngine, addr: tuple) -> None:
        for datagram in engine.datagrams_to_send():
            self._sendto(datagram, addr)

    def _sendto(self, datagram: bytes, addr: tuple) -> None:
        if self._sock is None:
            return
        try:
            self._sock.sendto(datagram, addr)
        except OSError as exc:  # a full buffer or a vanished peer must not stop the server
            self._log.log(logging.WARNING, "send", "send to %s failed: %s", _peer_text(addr), exc)


def _peer_key(addr: tuple) -> bytes:
    return f"{addr[0]}:{addr[1]}".encode()


def _peer_text(addr: tuple) -> str:
    return f"[{addr[0]}]:{addr[1]}" if ":" in addr[0] else f"{addr[0]}:{addr[1]}"
