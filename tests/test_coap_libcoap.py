"""Our CoAP workload over real DTLS associations against libcoap's ``coap-server-openssl`` (PSK).

libcoap 4.3.1's example server: ``/`` (a text page; Block2 when asked for small blocks),
``/time`` (observable, a notification a second), ``/async?N`` (an empty ACK, then the
response as a CON after N seconds), ``/.well-known/core``; a CoAP ping is answered by RST.
It listens for plain CoAP on ``-p PORT`` and for DTLS on PORT + 1. Every wait is bounded;
the server is stopped after the module, even when a test failed.
"""

from __future__ import annotations

import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gevent
import pytest
from servers import free_udp_port
from test_coap_workload import Facts

from loadgen.coap import message as m
from loadgen.coap.plan import CoapPlan
from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import LoadgenError
from loadgen.scenario.model import CoapRequest, DtlsConfig, Expect, PingConfig, RequestStep
from loadgen.transport.dtls_association import DtlsAssociation

COAP_SERVER = shutil.which("coap-server-openssl")
pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(COAP_SERVER is None, reason="coap-server-openssl (libcoap3-bin) not installed")]


@dataclass
class Libcoap:
    port: int  # plain CoAP; DTLS is port + 1
    key: bytes
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def dtls_address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port + 1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def _ports_free(port: int) -> bool:
    """UDP and TCP ``port`` and ``port + 1`` (libcoap binds all four) are free right now."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        for p in (port, port + 1):
            with socket.socket(socket.AF_INET, kind) as sock:
                try:
                    sock.bind(("127.0.0.1", p))
                except OSError:
                    return False
    return True


def _answers_ping(port: int, timeout: float) -> bool:
    """The server answers a plain CoAP ping on ``port`` (RST) within ``timeout``: it is up."""
    deadline = time.monotonic() + timeout
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.1)
        while time.monotonic() < deadline:
            sock.sendto(m.empty(m.CON, 7), ("127.0.0.1", port))
            try:
                data = sock.recv(64)
            except (TimeoutError, ConnectionRefusedError):
                continue
            return data == m.empty(m.RST, 7)
    return False


def start_libcoap(key: bytes, attempts: int = 5) -> Libcoap:
    """``coap-server-openssl -A 127.0.0.1 -p PORT -k KEY -h hint`` on free ports, up and answering."""
    assert COAP_SERVER is not None
    workdir = Path(tempfile.mkdtemp(prefix="libcoap-"))
    failures = []
    for attempt in range(attempts):
        port = free_udp_port()
        if port > 65000 or not _ports_free(port):
            continue
        log = workdir / f"server{attempt}.log"
        with open(log, "wb") as out:
            process = subprocess.Popen([COAP_SERVER, "-A", "127.0.0.1", "-p", str(port), "-k", key.decode(),
                                        "-h", "hint", "-v", "4"], stdout=out, stderr=subprocess.STDOUT, cwd=workdir)
        server = Libcoap(port, key, process, log)
        if _answers_ping(port, 5.0) and process.poll() is None:
            return server
        server.stop()
        failures.append(f"port {port}: {log.read_text(errors='replace')[-300:]}")
    raise AssertionError("coap-server-openssl did not start:\n" + "\n".join(failures))


@pytest.fixture(scope="module")
def libcoap() -> Iterator[Libcoap]:
    server = start_libcoap(secrets.token_hex(8).encode())
    try:
        yield server
    finally:
        server.stop()


def coap_step(name: str, interval: float | None = 0.5, expect: Expect | None = None, once: bool = False,
              **coap: object) -> RequestStep:
    return RequestStep(name, coap=CoapRequest(**coap), expect=expect or Expect(code="2.05"),  # type: ignore[arg-type]
                       interval=None if once else interval, once=once)


def regex(pattern: bytes) -> Expect:
    return Expect(kind="regex", regex=re.compile(pattern, re.DOTALL), code="2.05")


def run_clients(server: Libcoap, steps: list[RequestStep], *, clients: int = 1, rate: float = 50.0,
                seconds: float = 3.0, key: bytes | None = None,
                settings: DtlsConfig = DtlsConfig()) -> tuple[Facts, list[LoadgenError | None]]:
    """``clients`` associations (target "cN" each), started at ``rate`` a second, run ``seconds``
    after the last started, then closed; their facts and how each ended (None: still running)."""
    facts = Facts()
    plan = CoapPlan.build(steps, ping=PingConfig(interval=0.5, jitter=0.1))
    context = dtls_contexts.client_context()
    greenlets = []
    for i in range(clients):
        assoc = DtlsAssociation(f"dev{i}", f"c{i}", server.dtls_address, context, facts, identity=f"dev{i}".encode(),
                                key=Secret(key or server.key), settings=settings,
                                ping=plan.for_device(n=i, target=f"c{i}"))
        greenlets.append(gevent.spawn(assoc.run))
        gevent.sleep(1.0 / rate)
    gevent.joinall(greenlets, timeout=seconds)
    ended = [g.value if g.ready() else None for g in greenlets]
    gevent.killall(greenlets, block=True, timeout=10)
    return facts, ended


def by_kind(facts: Facts) -> dict[str, list]:
    out: dict[str, list] = {}
    for f in facts.finished():
        out.setdefault(f.kind, []).append(f)
    return out


def test_get_resources_block2_ping_and_a_separate_response(libcoap: Libcoap) -> None:
    steps = [coap_step("root", path="/", expect=regex(rb"test server made with libcoap")),
             coap_step("root in 16-byte blocks", path="/", block_size=16,
                       expect=regex(rb"^This is a test server.*libcoap")),
             coap_step("core", path="/.well-known/core", block_size=64, expect=regex(rb"</time>.*obs")),
             coap_step("time", path="/time"),
             coap_step("ping", ping=True, expect=Expect()),
             coap_step("async", path="/async", query=("1",), expect=regex(rb"^done$"), once=True),
             coap_step("missing", path="/no/such/thing", expect=Expect(code="4.04"))]
    facts, ended = run_clients(libcoap, steps, seconds=3.0)
    assert ended == [None], ended  # the association ran until we closed it
    rows = by_kind(facts)
    assert set(rows) == {"handshake"} | {s.name for s in steps}, rows.keys()
    bad = [f for f in facts.finished() if f.error is not None]
    assert not bad, bad
    assert len(rows["root"]) >= 3 and {f.code for f in rows["time"]} == {"2.05"}
    assert {f.code for f in rows["ping"]} == {"RST"} and {f.code for f in rows["missing"]} == {"4.04"}
    # Block2: the 16-byte blocks are each a request/response of their own on the wire, one request in the figures.
    blocked, whole = rows["root in 16-byte blocks"][0], rows["root"][0]
    assert blocked.received_bytes > 3 * whole.received_bytes and blocked.sent_bytes > 3 * whole.sent_bytes
    # The separate response: an empty ACK, then the CON response a second later (which we ACKed).
    [separate] = rows["async"]
    assert separate.elapsed > 0.9, separate  # (no upper bound: a loaded machine may be late)
    assert len(facts.started()) - len(facts.finished()) <= len(steps)  # at most one each in flight at the close


def test_observe_counts_notifications_then_deregisters(libcoap: Libcoap) -> None:
    steps = [coap_step("time", path="/time", observe=True, observe_for=2.6, once=True)]
    facts, ended = run_clients(libcoap, steps, seconds=4.5)
    assert ended == [None], ended
    [registered] = facts.finished("time")
    assert registered.error is None and registered.code == "2.05"
    notes = facts.finished("time notification")
    # /time notifies once a second: two or three in the 2.6 s observed, none after the deregistration.
    assert 2 <= len(notes) <= 3, notes
    assert all(n.error is None and n.code == "2.05" for n in notes)
    assert all(0 < n.elapsed < 2.6 for n in notes), [n.elapsed for n in notes]  # since the previous one
    assert len(facts.started("time notification")) == len(notes)


def test_wrong_key_fails_the_handshake_with_a_psk_code(libcoap: Libcoap) -> None:
    # libcoap (OpenSSL) drops the Finished it cannot decrypt and retransmits its flight: we
    # tell that apart from a lost flight and end the handshake with psk-key-mismatch.
    facts, ended = run_clients(libcoap, [coap_step("time", path="/time")], key=b"not-" + libcoap.key,
                               settings=DtlsConfig(handshake_timeout=6.0), seconds=15.0)
    assert len(ended) == 1 and ended[0] is not None and ended[0].code == "psk-key-mismatch", ended
    [handshake] = facts.finished("handshake")
    assert handshake.error is not None and handshake.error.code == "psk-key-mismatch"
    assert facts.finished("time") == []


def test_fifty_clients_get_and_observe(libcoap: Libcoap) -> None:
    # libcoap ignores new ClientHellos while about 100 sessions are mid-handshake: 25 a second is well below.
    steps = [coap_step("time", path="/time", observe=True, observe_for=2.5, once=True),
             coap_step("GET /", path="/", interval=1.0, expect=regex(rb"libcoap"))]
    facts, ended = run_clients(libcoap, steps, clients=50, rate=25.0, seconds=4.0)
    assert ended == [None] * 50, [e for e in ended if e is not None][:3]
    handshakes = facts.finished("handshake")
    assert len(handshakes) == 50 and all(h.error is None for h in handshakes)
    gets = facts.finished("GET /")
    assert len(gets) >= 50 * 3 and all(f.error is None and f.code == "2.05" for f in gets)
    notes = facts.finished("time notification")
    per_client = {f.target for f in notes}
    assert per_client == {f"c{i}" for i in range(50)}  # every client's notifications counted
    assert all(f.error is None for f in facts.finished())
