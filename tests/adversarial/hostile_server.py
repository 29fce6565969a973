"""A scripted hostile DTLS server for the client cases: one UDP socket on 127.0.0.1:0.

It runs loadgen's own server engine (:func:`loadgen.protocol.native.server.accept`) with
the real key, so what it sends after the handshake is sealed with the session's real
keys and authenticates at the client; then it misbehaves, by ``mode``:

``hvr-loop``    a HelloVerifyRequest with a new cookie to every ClientHello
``incomplete``  of its first flight only the ServerHello, then nothing until the client
                repeats its ClientHello (then the whole flight, so the handshake can end)
``seq-jump``    echoes whose record sequence numbers jump by 2^33, then 2^47
``sizes``       each echo followed by authentic records of varying sizes (unasked replies)
``garbage``     each echo followed by garbage, records that lie, and 64 KB datagrams
``fuzz``        mutated handshake messages in its flights, mutated plaintext of sealed
                records (see :mod:`.fuzz`)
``coap``        to each CoAP request, CoAP that lies, with the request's real message id and
                token (so it passes the matching): wrong codes and types, truncated and
                unknown critical options, a Block2 transfer that never ends, separate CON
                responses with fresh ids, repeats, RSTs, unknown tokens, raw garbage; then,
                every other request, the real piggybacked 2.05 answer before them
``echo``        none of that: a well-behaved echo server

Counters say how much hostile input really went out (and how much authenticated).
Run it as a process too (``python -m adversarial.hostile_server --mode fuzz``, from
tests/) so that a benchmark can measure the client's CPU without the server's.
"""

from __future__ import annotations

import argparse
import os
import random
import socket as _stdsocket
import sys
import time
from dataclasses import dataclass, field

import gevent
from gevent import socket

from loadgen.coap import message as coap
from loadgen.protocol.cookies import CookieJar
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import CoapFormatError
from loadgen.protocol.events import DataReceived
from loadgen.protocol.native import records
from loadgen.protocol.native import server as psk_server
from loadgen.protocol.native.keys import NATIVE_SUITES
from loadgen.protocol.native.server import PskServerEngine

from . import fuzz

MODES = ("hvr-loop", "incomplete", "seq-jump", "sizes", "garbage", "fuzz", "coap", "echo")
#: Record number jumps of the ``seq-jump`` mode, one per ping, in this order.
JUMPS = (1 << 33, 1 << 47)


@dataclass
class HostileStats:
    """What the hostile server did."""

    client_hellos: int = 0  # every ClientHello received
    cookied_hellos: int = 0  # ClientHellos that created (or repeated into) an engine
    hello_verify_sent: int = 0
    handshakes: int = 0
    pings: int = 0  # authentic application data from clients
    authentic_sent: int = 0  # records sealed with a session's real keys
    hostile_sent: int = 0  # datagrams that were mutated, garbage, jumped or unasked
    repeats_after_server_hello: int = 0  # ClientHellos repeated after a ServerHello went out
    mutated_flights: int = 0  # fuzz: mutated handshake flight datagrams sent
    flight_bytes: int = 0  # fuzz: bytes of every handshake flight datagram sent (mutated or not)
    mutated_records: int = 0  # fuzz: records with mutated plaintext, sealed with the real keys
    by_peer: dict[tuple, int] = field(default_factory=dict)  # ClientHellos per client address


class HostileServer:
    """``HostileServer(key, mode).start()``; ``.address``; ``.stop()``."""

    def __init__(self, key: Secret, mode: str, *, seed: int = 1, hint: bytes | None = b"loadgen",
                 flight_copies: int = 0, record_copies: int = 0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}")
        self.mode = mode
        # fuzz: this many mutated copies of each flight datagram go out before the real one
        # (0: each datagram is mutated or not, at random, instead).
        self.flight_copies = flight_copies
        # fuzz: this many mutated records answer each ping, then the real echo (0: one
        # mutated record, and the echo half the time).
        self.record_copies = record_copies
        self.rng = random.Random(seed)
        self.config = psk_server.ServerConfig(KeyStore(shared=key), hint, tuple(NATIVE_SUITES.values()), CookieJar())
        self.sock = socket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM)
        self.sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.stats = HostileStats()
        self._engines: dict[tuple, PskServerEngine] = {}
        self._first_flight_cut: set[tuple] = set()
        self._greenlet: gevent.Greenlet | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.sock.getsockname()[:2]
        return host, port

    def start(self) -> HostileServer:
        self._greenlet = gevent.spawn(self._loop)
        return self

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill()
        self.sock.close()

    def __enter__(self) -> HostileServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- the loop -----------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(65536)
            except OSError:
                continue
            self._on_datagram(data, addr)

    def _sendto(self, datagram: bytes, addr: tuple) -> None:
        try:
            self.sock.sendto(datagram, addr)
        except OSError:
            pass  # a full buffer or a vanished client: the client's problem

    def _on_datagram(self, data: bytes, addr: tuple) -> None:
        hello = records.is_client_hello(data)
        if hello:
            self.stats.client_hellos += 1
            self.stats.by_peer[addr] = self.stats.by_peer.get(addr, 0) + 1
        if self.mode == "hvr-loop":
            parsed = psk_server.parse_client_hello(data) if hello else None
            if parsed is not None:  # a new cookie every time: the client can never get past us
                self._sendto(psk_server.hello_verify_request(os.urandom(16), parsed.record_seq), addr)
                self.stats.hello_verify_sent += 1
                self.stats.hostile_sent += 1
            return
        engine = self._engines.get(addr)
        if engine is None or (engine.handshake_done and hello):
            engine, replies = psk_server.accept(self.config, data, f"{addr[0]}:{addr[1]}".encode(), time.monotonic())
            if engine is None:
                self.stats.hello_verify_sent += bool(replies)
                for reply in replies:
                    self._sendto(reply, addr)
                return
            self.stats.cookied_hellos += 1
            self._engines[addr] = engine
            self._send_flight(engine, addr, replies)
        else:
            if hello and not engine.handshake_done:
                self.stats.cookied_hellos += 1
                self.stats.repeats_after_server_hello += 1
            done_before = engine.handshake_done
            engine.receive_datagram(data, time.monotonic())
            self._after_input(engine, addr, done_before)
        if engine.closed:
            self._engines.pop(addr, None)

    def _after_input(self, engine: PskServerEngine, addr: tuple, done_before: bool) -> None:
        pings = []
        while (event := engine.next_event()) is not None:
            if isinstance(event, DataReceived):
                pings.append(event.data)
        out = engine.datagrams_to_send()
        if engine.handshake_done and not done_before:
            self.stats.handshakes += 1
        if not engine.handshake_done or not pings:
            self._send_flight(engine, addr, out)
            return
        for datagram in out:
            self._sendto(datagram, addr)
        for ping in pings:
            self.stats.pings += 1
            self._answer(engine, addr, ping)

    def _send_flight(self, engine: PskServerEngine, addr: tuple, datagrams: list[bytes]) -> None:
        if self.mode == "incomplete" and addr not in self._first_flight_cut and datagrams:
            # Only the ServerHello of the first flight: the client must ask again.
            self._first_flight_cut.add(addr)
            first = records.split(datagrams[0])[0][2]
            self._sendto(first, addr)
            self.stats.hostile_sent += 1
            return
        if self.mode == "fuzz" and not engine.handshake_done and self.flight_copies:
            for datagram in datagrams:
                for _ in range(self.flight_copies):
                    mutated = fuzz.mutate_flight(self.rng, datagram)
                    self.stats.flight_bytes += len(mutated)
                    self._sendto(mutated, addr)
                self.stats.hostile_sent += self.flight_copies
                self.stats.mutated_flights += self.flight_copies
        elif self.mode == "fuzz" and not engine.handshake_done:
            mutated = [fuzz.mutate_flight(self.rng, d) if self.rng.random() < 0.5 else d for d in datagrams]
            changed = sum(m != d for m, d in zip(mutated, datagrams, strict=True))
            self.stats.hostile_sent += changed
            self.stats.mutated_flights += changed
            datagrams = mutated
        for datagram in datagrams:
            self.stats.flight_bytes += len(datagram) if self.mode == "fuzz" else 0
            self._sendto(datagram, addr)

    # -- after the handshake --------------------------------------------------------

    def _seal(self, engine: PskServerEngine, plaintext: bytes, *, content_type: int = records.APPLICATION_DATA,
              jump: int = 0) -> bytes:
        layer = engine._records
        assert layer is not None
        if jump:
            layer._write_seq = min(layer._write_seq + jump, (1 << 48) - 1)
        self.stats.authentic_sent += 1
        return layer.seal(content_type, plaintext)

    def _answer(self, engine: PskServerEngine, addr: tuple, ping: bytes) -> None:
        rng = self.rng
        if self.mode == "seq-jump":
            index = self.stats.pings - 1
            jump = JUMPS[index] if index < len(JUMPS) else 0
            self.stats.hostile_sent += bool(jump)
            self._sendto(self._seal(engine, ping, jump=jump), addr)
        elif self.mode == "sizes":
            self._sendto(self._seal(engine, ping), addr)
            for _ in range(50):  # unasked authentic replies of every size
                self._sendto(self._seal(engine, rng.randbytes(rng.randrange(1, 1100))), addr)
                self.stats.hostile_sent += 1
        elif self.mode == "garbage":
            self._sendto(self._seal(engine, ping), addr)
            for datagram in (rng.randbytes(rng.randrange(1, 1500)), rng.randbytes(65000),
                             fuzz.lying_record(rng), records.HEADER.pack(23, records.DTLS_1_2, 1, 0, 0, 60000)
                             + rng.randbytes(64000)):
                self._sendto(datagram, addr)
                self.stats.hostile_sent += 1
        elif self.mode == "fuzz":
            # Mutated plaintext, sealed with the real keys: it authenticates at the client.
            for _ in range(max(1, self.record_copies)):
                content_type, plaintext, jump = fuzz.mutate_plaintext(rng, ping)
                if engine._records is not None and engine._records._write_seq + jump >= (1 << 48) - 1:
                    jump = 0
                self._sendto(self._seal(engine, plaintext, content_type=content_type, jump=jump), addr)
                self.stats.hostile_sent += 1
                self.stats.mutated_records += 1
            if self.record_copies or rng.random() < 0.5:  # the real echo too, so some pings complete
                self._sendto(self._seal(engine, ping), addr)
        elif self.mode == "coap":
            for plaintext in coap_lies(rng, ping):
                self._sendto(self._seal(engine, plaintext), addr)
                self.stats.hostile_sent += 1
        else:
            self._sendto(self._seal(engine, ping), addr)


def coap_lies(rng: random.Random, request: bytes) -> list[bytes]:
    """What the ``coap`` mode answers ``request`` with: lies carrying its real message id and token
    (they pass the token and id matching and reach the judging), after the real piggybacked 2.05
    response every other time (by ``rng``). A datagram that is not CoAP gets garbage only, the
    client's own ACKs and RSTs nothing."""
    try:
        req = coap.decode(request)
    except CoapFormatError:
        return [rng.randbytes(rng.randrange(1, 64))]
    if req.mtype not in (coap.CON, coap.NON) or not 1 <= req.code <= 31:
        return []  # the client's ACKs and RSTs (of the lies): answering those too would be a storm of our making
    mid, token = req.mid, req.token
    more = coap.encode_block(rng.randrange(1 << 16), True, 0)  # Block2 "more" forever, 16-byte blocks
    lies = [
        coap.header(coap.ACK, rng.randrange(256), mid, token) + rng.randbytes(rng.randrange(0, 40)),
        coap.header(coap.ACK, 69, mid, token) + bytes([0xD1]),  # an option claiming bytes that are not there
        coap.encode(coap.Message(coap.ACK, 69, mid, token, ((9, b"x"),))),  # unknown critical option 9
        coap.encode(coap.Message(coap.ACK, 69, mid, token, ((coap.BLOCK2, more),), rng.randbytes(16))),
        coap.encode(coap.Message(coap.CON, 69, rng.randrange(1 << 16), token, (), b"separate")),
        coap.encode(coap.Message(coap.NON, 132, rng.randrange(1 << 16), token)),  # 4.04, NON
        coap.empty(coap.ACK, mid),
        coap.encode(coap.Message(coap.ACK, 69, mid, rng.randbytes(len(token) or 1), (), b"unknown token")),
        coap.encode(coap.Message(coap.CON, 1, rng.randrange(1 << 16), token)),  # a request, to a client
        bytes([0x4F]) + rng.randbytes(20),  # token length 15
        rng.randbytes(rng.randrange(1, 200)),
    ]
    rng.shuffle(lies)
    if rng.random() < 0.5:  # the real answer first: the lies after it meet an exchange that is over
        lies.insert(0, coap.encode(coap.Message(coap.ACK, 69, mid, token, (), b"21.5")))
    return lies


def main(argv: list[str] | None = None) -> int:
    """Run a hostile server until killed; print ``port N`` first (for benchmarks)."""
    parser = argparse.ArgumentParser(description="hostile DTLS server (tests only)")
    parser.add_argument("--mode", choices=MODES, default="fuzz")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--psk-env", default="LOADGEN_TEST_PSK")
    parser.add_argument("--flight-copies", type=int, default=0)
    parser.add_argument("--record-copies", type=int, default=0)
    args = parser.parse_args(argv)
    server = HostileServer(Secret(bytes.fromhex(os.environ[args.psk_env])), args.mode, seed=args.seed,
                           flight_copies=args.flight_copies, record_copies=args.record_copies).start()
    print(f"port {server.address[1]}", flush=True)
    try:
        while True:
            gevent.sleep(0.5)
            stats = server.stats
            print(f"stats client_hellos={stats.client_hellos} handshakes={stats.handshakes} pings={stats.pings} "
                  f"authentic_sent={stats.authentic_sent} mutated_flights={stats.mutated_flights} "
                  f"flight_bytes={stats.flight_bytes} mutated_records={stats.mutated_records}", flush=True)
    except KeyboardInterrupt:
        return 0
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
