"""TLS interop with OpenSSL's s_server / s_client, certificates and PSK, both directions.

Every peer is a separate process on 127.0.0.1; every wait is bounded; every process is
stopped on teardown.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent
import pytest
from servers import needs_openssl
from tls_servers import (
    LoadgenTlsServer,
    OpensslTlsServer,
    Pki,
    make_pki,
    run_openssl_tls_client,
    start_loadgen_tls_server,
    start_openssl_tls_server,
)

from loadgen.protocol.credentials import Secret
from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context
from loadgen.scenario.model import Expect, PingConfig
from loadgen.stats.sink import StatsSink
from loadgen.traffic.tracker import traffic_plan
from loadgen.transport.ssl_socket import SslSocket
from loadgen.transport.tls_association import TlsAssociation

pytestmark = [pytest.mark.interop, needs_openssl, pytest.mark.timeout(120)]

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = Secret(bytes.fromhex(KEY_HEX))


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def s_server(tmp_path: Path) -> Iterator[Callable[..., OpensslTlsServer]]:
    started: list[OpensslTlsServer] = []

    def start(*args: str) -> OpensslTlsServer:
        server = start_openssl_tls_server(*args, workdir=tmp_path / f"s_server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def our_server(tmp_path: Path) -> Iterator[Callable[..., LoadgenTlsServer]]:
    started: list[LoadgenTlsServer] = []

    def start(*args: str, key_hex: str | None = None) -> LoadgenTlsServer:
        server = start_loadgen_tls_server(*args, key_hex=key_hex, workdir=tmp_path / f"server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def exchange_line(sock: SslSocket, line: bytes, timeout: float = 5.0) -> bytes:
    sock.write(line + b"\n")
    deadline = time.monotonic() + timeout
    while not sock.can_read_line() and time.monotonic() < deadline:
        sock.wait_for_ready_read(deadline - time.monotonic())
    return sock.read_line()


# -- our client against openssl s_server ---------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_against_s_server_with_certificate(s_server, pki: Pki, version: str) -> None:
    # s_server -rev answers each line reversed: a reply that proves the round trip.
    server = s_server("-cert", str(pki.server_cert), "-key", str(pki.server_key), "-rev")
    ctx = client_context(TlsOptions(verify="peer", ca_file=pki.ca_file, min_version=version,
                                        max_version=version))
    sock = SslSocket(ctx)
    try:
        assert sock.connect_to_host("localhost", server.port, timeout=10), sock.error_string
        assert sock.protocol_version == f"TLSv{version}"
        assert exchange_line(sock, b"hello s_server") == b"revres_s olleh\n"
    finally:
        sock.close()


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_client_against_s_server_with_psk(s_server, version: str) -> None:
    flag = "-tls1_2" if version == "1.2" else "-tls1_3"
    server = s_server("-psk", KEY_HEX, "-psk_identity", "dev1", "-nocert", flag, "-rev")
    ctx = client_context(TlsOptions(min_version=version, max_version=version), psk_mode=True)
    sock = SslSocket(ctx, choose=lambda hint: (b"dev1", KEY))
    try:
        assert sock.connect_to_host("127.0.0.1", server.port, timeout=10), sock.error_string
        assert exchange_line(sock, b"abc") == b"cba\n"
        assert sock.cipher.startswith("PSK-") if version == "1.2" else sock.cipher.endswith("_SHA256")
    finally:
        sock.close()
    assert "CONNECTION ESTABLISHED" in server.errors


def test_unknown_psk_identity_at_s_server(s_server) -> None:
    server = s_server("-psk", KEY_HEX, "-psk_identity", "dev1", "-nocert", "-tls1_3")
    ctx = client_context(TlsOptions(min_version="1.3"), psk_mode=True)
    sock = SslSocket(ctx, choose=lambda hint: (b"stranger", KEY))
    assert not sock.connect_to_host("127.0.0.1", server.port, timeout=10)
    assert sock.error == "psk-unknown-identity", sock.error_string


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_association_pings_s_server(s_server, pki: Pki, version: str) -> None:
    server = s_server("-cert", str(pki.server_pem), "-key", str(pki.server_pem), "-rev")
    totals = StatsSink()
    ctx = client_context(TlsOptions(verify="peer", ca_file=pki.ca_file, min_version=version,  # type: ignore[arg-type]
                                    max_version=version))
    assoc = TlsAssociation("dev1", "s_server", server.address, ctx, totals, server_name="server.test",
                           ping=traffic_plan(PingConfig(interval=0.2, jitter=0.0, timeout=2.0,
                                                        expect=Expect("regex", regex=re.compile(rb"^\d+ gnip")))))
    greenlet = gevent.spawn(assoc.run)
    try:
        deadline = time.monotonic() + 10
        while totals.pings.completed < 3 and not greenlet.ready() and time.monotonic() < deadline:
            gevent.sleep(0.05)
    finally:
        greenlet.kill(block=True, timeout=5)
    assert totals.handshakes.completed == 1 and totals.pings.completed >= 3, (greenlet.value, vars(totals.pings))
    assert totals.pings.failed == 0
    # TLS 1.2 (ECDHE-RSA with AES-GCM): the pings' records were sealed and opened by loadgen's record layer.
    assert assoc._engine is not None and assoc._engine.light is (version == "1.2")  # noqa: SLF001


# -- openssl s_client against our server ------------------------------------------------------


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_s_client_against_our_server_with_certificate(our_server, pki: Pki, version: str) -> None:
    server = our_server("--cert", str(pki.server_cert), "--key", str(pki.server_key))
    run = run_openssl_tls_client(
        server.address, "-CAfile", str(pki.ca_file), "-verify_return_error", "-servername", "server.test",
        "-verify_hostname", "server.test", f"-tls{version.replace('.', '_')}",
        send="hello from s_client", until="hello from s_client",
    )
    assert "hello from s_client" in run.output, run.output
    assert "Verify return code: 0 (ok)" in run.output and f"TLSv{version}" in run.output
    summary = server.stop_and_summarize()
    assert summary.handshakes == 1 and summary.pings == 1 and not summary.failures


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_s_client_against_our_server_with_psk(our_server, version: str) -> None:
    server = our_server(key_hex=KEY_HEX)
    run = run_openssl_tls_client(
        server.address, "-psk", KEY_HEX, "-psk_identity", "dev9", f"-tls{version.replace('.', '_')}",
        send="psk ping", until="psk ping",
    )
    assert "psk ping" in run.output, run.output
    summary = server.stop_and_summarize()
    assert summary.handshakes == 1 and summary.pings == 1


def test_s_client_mutual_tls(our_server, pki: Pki) -> None:
    server = our_server("--cert", str(pki.server_pem), "--require-client-cert", "--ca-file", str(pki.ca_file))
    ok = run_openssl_tls_client(server.address, "-CAfile", str(pki.ca_file), "-cert", str(pki.client_pem),
                                "-key", str(pki.client_pem), send="with cert", until="with cert")
    assert "with cert" in ok.output, ok.output
    refused = run_openssl_tls_client(server.address, "-CAfile", str(pki.ca_file), send="no cert",
                                     until="alert", timeout=5)
    assert "no cert\n" not in refused.output.replace("no cert\r", "")
    summary = server.stop_and_summarize()
    assert summary.handshakes == 1 and summary.failures["cert-required"] == 1, summary.line


def test_s_client_resumes_with_our_server(our_server, pki: Pki, tmp_path: Path) -> None:
    server = our_server("--cert", str(pki.server_pem))
    session = tmp_path / "session.pem"
    common = ("-CAfile", str(pki.ca_file), "-servername", "localhost")
    first = run_openssl_tls_client(server.address, *common, "-sess_out", str(session), send="one", until="one\n")
    assert "one" in first.output and session.exists()
    second = run_openssl_tls_client(server.address, *common, "-sess_in", str(session), send="two", until="two\n")
    assert "Reused, TLSv1.3" in second.output, second.output
    summary = server.stop_and_summarize()
    assert summary.handshakes == 2 and summary.resumed == 1
