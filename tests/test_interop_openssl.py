"""Interop with OpenSSL's own DTLS 1.2 PSK tools, and our client against our server.

Every peer is a separate process on 127.0.0.1; every wait is bounded.
"""

from __future__ import annotations

import secrets
import time

import gevent
import pytest
from servers import free_udp_port, needs_openssl, run_openssl_client

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import LoadgenError
from loadgen.scenario.model import DtlsConfig, Expect, PingConfig
from loadgen.stats.sink import StatsSink
from loadgen.traffic.tracker import TrafficPlan, traffic_plan
from loadgen.transport.dtls_association import DtlsAssociation

pytestmark = pytest.mark.interop

IDENTITY = "dev1"
SLOW_PINGS = traffic_plan(PingConfig(interval=0.5, jitter=0.0, timeout=1.0))


def association(address, key_hex: str, totals: StatsSink, *, identity: str = IDENTITY, name: str = "dev1",
                ping: TrafficPlan = SLOW_PINGS,
                settings: DtlsConfig = DtlsConfig()) -> DtlsAssociation:
    return DtlsAssociation(
        name, "target", address, dtls_contexts.client_context(), totals,
        identity=identity.encode(), key=Secret(bytes.fromhex(key_hex)), settings=settings, ping=ping,
    )


def run_until_error(assoc: DtlsAssociation, timeout: float) -> tuple[LoadgenError | None, float]:
    """Run ``assoc`` to its end (an error); kill it if it takes longer than ``timeout``."""
    started = time.monotonic()
    greenlet = gevent.spawn(assoc.run)
    try:
        greenlet.join(timeout)
        assert greenlet.ready(), f"association still running after {timeout:g} s"
        greenlet.get()  # re-raise anything unexpected
        return greenlet.value, time.monotonic() - started
    finally:
        greenlet.kill(block=True, timeout=5)


def wrong_key(key_hex: str) -> str:
    other = secrets.token_hex(len(key_hex) // 2)
    return other if other != key_hex else wrong_key(key_hex)


# -- our client against openssl s_server ------------------------------------------------


@needs_openssl
def test_association_handshakes_and_pings_openssl_s_server(start_s_server, psk_hex):
    server = start_s_server(psk_hex, IDENTITY)
    totals = StatsSink()
    assoc = association(server.address, psk_hex, totals, name="dev1",
                        ping=traffic_plan(PingConfig(interval=0.5, jitter=0.0, timeout=1.0, expect=Expect("any"))))
    greenlet = gevent.spawn(assoc.run)
    try:
        assert _wait(lambda: totals.handshakes.completed == 1 or greenlet.ready(), 10), "no handshake in 10 s"
        assert not greenlet.ready(), f"association ended: {greenlet.value!r}"
        assert totals.handshakes.completed == 1 and totals.handshakes.failed == 0

        # Our pings arrive (s_server prints application data to its stdout) ...
        assert server.wait_output("I am dev1, please, accept our ping 1", 5, gevent.sleep), server.output
        assert "CIPHER is PSK-" in server.output, server.output
        # ... and a line typed into s_server answers the outstanding ping (rule "any").
        server.send_line("pong from s_server")
        assert _wait(lambda: totals.pings.completed >= 1 or greenlet.ready(), 5), vars(totals.pings)
        assert not greenlet.ready(), f"association ended: {greenlet.value!r}"
    finally:
        greenlet.kill(block=True, timeout=5)
    # s_server never echoes, so the other pings time out; nothing else may go wrong.
    assert set(totals.pings.failures) <= {"ping-timeout"}, totals.pings.failures
    assert 0 <= totals.pings.in_flight <= 1
    assert totals.handshakes.in_flight == 0


@needs_openssl
def test_association_wrong_key_against_openssl_s_server(start_s_server, psk_hex):
    # s_server silently drops a Finished it cannot decrypt: only our own bookkeeping
    # (Finished sent 3+ times, never answered) can name the cause. OpenSSL's client
    # retransmits at about 1, 3 and 7 s, so an 8 s handshake timeout sees 4 Finished.
    server = start_s_server(psk_hex, IDENTITY)
    totals = StatsSink()
    assoc = association(server.address, wrong_key(psk_hex), totals,
                        settings=DtlsConfig(handshake_timeout=8.0))
    error, elapsed = run_until_error(assoc, timeout=20)
    assert error is not None and error.code == "psk-key-mismatch", repr(error)
    assert 7.0 <= elapsed < 15, elapsed  # the handshake timeout, not something else
    assert totals.handshakes.failures == {"psk-key-mismatch": 1}
    assert totals.handshakes.completed == 0 and totals.pings.attempted == 0


# -- openssl s_client against our server ------------------------------------------------


@needs_openssl
def test_openssl_s_client_gets_echo_from_loadgen_server(dtls_server):
    line = "hello from s_client " + secrets.token_hex(4)
    run = run_openssl_client(dtls_server.address, dtls_server.key_hex, IDENTITY, send=line, until=line,
                             timeout=15)
    assert run.matched, f"no echo within 15 s; s_client output:\n{run.output}"
    summary = dtls_server.stop_and_summarize()
    assert summary.handshakes == 1 and summary.pings >= 1, summary.line
    assert not summary.failures, summary.line


@needs_openssl
def test_openssl_s_client_wrong_key_gets_decrypt_error(dtls_server):
    run = run_openssl_client(dtls_server.address, wrong_key(dtls_server.key_hex), IDENTITY, send="x",
                             until="alert decrypt error", timeout=15)
    assert run.matched, f"s_client output:\n{run.output}"
    assert run.elapsed < 10, run.elapsed  # detected on the first retransmission (~1 s), not a timeout
    summary = dtls_server.stop_and_summarize()
    assert summary.failures == {"psk-key-mismatch": 1}, summary.line
    assert summary.handshakes == 0, summary.line


@needs_openssl
def test_openssl_s_client_unknown_identity(start_dtls_server, psk_hex):
    server = start_dtls_server(psk_csv=[("dev7", psk_hex), ("dev8", wrong_key(psk_hex))])
    run = run_openssl_client(server.address, psk_hex, "dev9", send="x", until="unknown psk identity",
                             timeout=15)
    assert run.matched, f"s_client output:\n{run.output}"
    assert "decrypt error" not in run.output
    summary = server.stop_and_summarize()
    assert summary.failures == {"psk-unknown-identity": 1}, summary.line
    assert summary.handshakes == 0, summary.line


@needs_openssl
def test_openssl_s_client_known_identity_from_csv(start_dtls_server, psk_hex):
    # The positive control for the test above: the same CSV server accepts dev7's key.
    server = start_dtls_server(psk_csv=[("dev7", psk_hex), ("dev8", wrong_key(psk_hex))])
    run = run_openssl_client(server.address, psk_hex, "dev7", send="csv-ok", until="csv-ok", timeout=15)
    assert run.matched, f"s_client output:\n{run.output}"
    assert server.stop_and_summarize().handshakes == 1


# -- our client against our server (another process) -----------------------------------


def test_association_pings_loadgen_server(dtls_server):
    totals = StatsSink()
    assoc = association(dtls_server.address, dtls_server.key_hex, totals,
                        ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, timeout=2.0, expect=Expect("echo"))))
    greenlet = gevent.spawn(assoc.run)
    try:
        assert _wait(lambda: totals.pings.completed >= 3 or greenlet.ready(), 10), vars(totals.pings)
        assert not greenlet.ready(), f"association ended: {greenlet.value!r}"
    finally:
        greenlet.kill(block=True, timeout=5)
    assert totals.handshakes.completed == 1 and totals.handshakes.failed == 0
    assert totals.pings.failed == 0, totals.pings.failures
    summary = dtls_server.stop_and_summarize()
    assert summary.handshakes == 1 and summary.pings >= 3, summary.line
    assert not summary.failures, summary.line


def test_association_wrong_key_against_loadgen_server(dtls_server):
    totals = StatsSink()
    assoc = association(dtls_server.address, wrong_key(dtls_server.key_hex), totals)
    error, elapsed = run_until_error(assoc, timeout=15)
    assert error is not None and error.code == "psk-key-mismatch", repr(error)
    # The server answers the retransmitted Finished (~1 s) with decrypt_error: no timeout.
    assert elapsed < 5, elapsed
    assert totals.handshakes.failures == {"psk-key-mismatch": 1}
    assert dtls_server.stop_and_summarize().failures == {"psk-key-mismatch": 1}


def test_association_unknown_identity_against_loadgen_server(start_dtls_server, psk_hex):
    server = start_dtls_server(psk_csv=[("dev7", psk_hex)])
    totals = StatsSink()
    assoc = association(server.address, psk_hex, totals, identity="dev9")
    error, elapsed = run_until_error(assoc, timeout=15)
    assert error is not None and error.code == "psk-unknown-identity", repr(error)
    assert elapsed < 5, elapsed
    assert totals.handshakes.failures == {"psk-unknown-identity": 1}
    assert server.stop_and_summarize().failures == {"psk-unknown-identity": 1}


def test_association_nothing_listening_is_connection_refused(psk_hex):
    totals = StatsSink()
    port = free_udp_port()  # bound and closed again: nothing listens there now
    assoc = association(("127.0.0.1", port), psk_hex, totals)
    error, elapsed = run_until_error(assoc, timeout=10)
    assert error is not None and error.code == "connection-refused", repr(error)
    assert elapsed < 2, elapsed  # ICMP port unreachable, not the 30 s handshake timeout
    assert totals.handshakes.failures == {"connection-refused": 1}


def _wait(predicate, timeout: float) -> bool:
    """Poll ``predicate`` while letting greenlets run; False after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        gevent.sleep(0.02)
    return True
