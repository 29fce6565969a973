"""TLS 1.3 external PSK against OpenSSL's s_server / s_client: resumed counts, PSK modes, error codes.

"Resumed" must mean a ticket or session was resumed: OpenSSL's SSL_session_reused() is also true
for every accepted external PSK. PSK key-exchange modes: ``-allow_no_dhe_kex`` makes an OpenSSL
peer offer or accept psk_ke; with ``-groups ffdhe8192`` (a group loadgen's OpenSSL does not use
by default) the peers share no key-exchange group, so only psk_ke can work: a psk_ke peer.

Every peer is a separate process on 127.0.0.1 on a port it picked or was given free; every wait
is bounded; every process is stopped on teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import needs_openssl
from tls_servers import (
    LoadgenTlsServer,
    OpensslTlsServer,
    run_openssl_tls_client,
    start_loadgen_tls_server,
    start_openssl_tls_server,
)

from loadgen.protocol.credentials import Secret
from loadgen.protocol.errors import ConfigError
from loadgen.protocol.openssl.tls import SessionCache
from loadgen.protocol.openssl.tls_contexts import PSK_MODES, TlsOptions, client_context, server_context
from loadgen.scenario import ScenarioError, parse_scenario
from loadgen.stats.sink import StatsSink
from loadgen.transport.tls_association import TlsAssociation

KEY_HEX = "00112233445566778899aabbccddeeff"
KEY = Secret(bytes.fromhex(KEY_HEX))
WRONG_HEX = "ffeeddccbbaa99887766554433221100"
#: A key-exchange group neither side's defaults share: the handshake can only be psk_ke.
NO_COMMON_GROUP = ("-groups", "ffdhe8192")

pytestmark = [pytest.mark.interop, needs_openssl, pytest.mark.timeout(120)]


@pytest.fixture
def s_server(tmp_path: Path) -> Iterator[Callable[..., OpensslTlsServer]]:
    started: list[OpensslTlsServer] = []

    def start(*args: str) -> OpensslTlsServer:
        server = start_openssl_tls_server("-psk", KEY_HEX, "-psk_identity", "dev1", "-nocert", "-tls1_3", *args,
                                          workdir=tmp_path / f"s_server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def our_server(tmp_path: Path) -> Iterator[Callable[..., LoadgenTlsServer]]:
    started: list[LoadgenTlsServer] = []

    def start(*args: str) -> LoadgenTlsServer:
        server = start_loadgen_tls_server(*args, key_hex=KEY_HEX, workdir=tmp_path / f"server{len(started)}")
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def handshakes(address: tuple[str, int], count: int, *, resumption: bool, key: Secret = KEY,
               psk_modes: tuple[str, ...] = PSK_MODES) -> tuple[StatsSink, list[str | None]]:
    """``count`` handshakes of one device (TLS 1.3 external PSK), one after the other."""
    ctx = client_context(TlsOptions(min_version="1.3", resumption=resumption, psk_modes=psk_modes),
                             psk_mode=True)
    totals, cache, errors = StatsSink(), SessionCache(), []
    for _ in range(count):
        assoc = TlsAssociation("dev1", "peer", address, ctx, totals, identity=b"dev1", key=key, sessions=cache)
        error = assoc.handshake_once()
        errors.append(error.code if error is not None else None)
    return totals, errors


# -- resumed means a ticket was resumed -----------------------------------------------------


@pytest.mark.parametrize("allow", [False, True], ids=["dhe-only", "allow_no_dhe_kex"])
@pytest.mark.parametrize("resumption", [False, True], ids=["no-resumption", "resumption"])
def test_client_counts_resumed_only_for_tickets(s_server, allow: bool, resumption: bool) -> None:
    server = s_server(*(["-allow_no_dhe_kex"] if allow else []))
    totals, errors = handshakes(server.address, 3, resumption=resumption)
    assert errors == [None, None, None]
    assert totals.handshakes.completed == 3
    # Without resumption every handshake is a full PSK handshake; with it, the 2nd and 3rd resume.
    assert totals.handshakes.resumed == (2 if resumption else 0)


@pytest.mark.parametrize("allow", [False, True], ids=["dhe-only", "allow_no_dhe_kex"])
def test_server_counts_no_resumed_without_resumption(our_server, allow: bool) -> None:
    server = our_server("--no-resumption")
    for line in ("one", "two"):
        run = run_openssl_tls_client(server.address, "-psk", KEY_HEX, "-psk_identity", "dev9", "-tls1_3",
                                     *(["-allow_no_dhe_kex"] if allow else []), send=line, until=line + "\n")
        assert line in run.output, run.output
    summary = server.stop_and_summarize()
    assert summary.handshakes == 2 and summary.resumed == 0, summary.line


def test_server_counts_resumed_ticket(our_server, tmp_path: Path) -> None:
    server = our_server()
    session = tmp_path / "session.pem"
    common = ("-psk", KEY_HEX, "-psk_identity", "dev9", "-tls1_3")
    first = run_openssl_tls_client(server.address, *common, "-sess_out", str(session), send="one", until="one\n")
    assert "one" in first.output and session.exists(), first.output
    second = run_openssl_tls_client(server.address, *common, "-sess_in", str(session), send="two", until="two\n")
    assert "Reused, TLSv1.3" in second.output, second.output
    summary = server.stop_and_summarize()
    assert summary.handshakes == 2 and summary.resumed == 1, summary.line


def test_psk_resumption_against_our_server_in_process() -> None:
    # A shared key answers for any identity: OpenSSL also asks about the ticket's identity, which
    # must not become an external PSK (its binder would fail: every other handshake did).
    import gevent

    from loadgen.protocol.credentials import KeyStore
    from loadgen.servers.tls import TlsServer

    server = TlsServer(server_context(TlsOptions(), keys=KeyStore(shared=KEY)), port=0).start()
    try:
        totals, errors = handshakes(server.address, 3, resumption=True)
        gevent.sleep(0.1)
    finally:
        server.stop()
    assert errors == [None, None, None] and totals.handshakes.resumed == 2
    assert server.stats.handshakes == 3 and server.stats.resumed == 2, server.stats


# -- PSK key-exchange modes -------------------------------------------------------------------


def test_client_offers_psk_ke_by_default(s_server) -> None:
    server = s_server("-allow_no_dhe_kex", *NO_COMMON_GROUP)
    totals, errors = handshakes(server.address, 1, resumption=False)
    assert errors == [None] and totals.handshakes.completed == 1


def test_client_with_dhe_only_reports_mode_mismatch(s_server) -> None:
    server = s_server("-allow_no_dhe_kex", *NO_COMMON_GROUP)
    _, errors = handshakes(server.address, 1, resumption=False, psk_modes=("psk_dhe_ke",))
    assert errors == ["psk-mode-mismatch"]


def test_server_accepts_psk_ke_by_default(our_server) -> None:
    server = our_server()
    run = run_openssl_tls_client(server.address, "-psk", KEY_HEX, "-psk_identity", "dev9", "-tls1_3",
                                 "-allow_no_dhe_kex", *NO_COMMON_GROUP, send="no dhe", until="no dhe\n")
    assert "no dhe" in run.output and "Server Temp Key" not in run.output, run.output
    summary = server.stop_and_summarize()
    assert summary.handshakes == 1 and not summary.failures, summary.line


def test_server_with_dhe_only_records_mode_mismatch(our_server) -> None:
    server = our_server("--psk-modes", "psk_dhe_ke")
    run = run_openssl_tls_client(server.address, "-psk", KEY_HEX, "-psk_identity", "dev9", "-tls1_3",
                                 "-allow_no_dhe_kex", *NO_COMMON_GROUP, send="no dhe", until="alert", timeout=5)
    assert "no dhe\n" not in run.output.replace("no dhe\r", "")
    summary = server.stop_and_summarize()
    assert summary.handshakes == 0 and summary.failures["psk-mode-mismatch"] == 1, summary.line


@pytest.mark.parametrize("modes, temp_key", [("psk_dhe_ke,psk_ke", True), ("psk_ke,psk_dhe_ke", False)])
def test_server_prefers_the_first_mode(our_server, modes: str, temp_key: bool) -> None:
    # s_client shows "Server Temp Key" only when the handshake used (EC)DHE.
    server = our_server("--psk-modes", modes)
    run = run_openssl_tls_client(server.address, "-psk", KEY_HEX, "-psk_identity", "dev9", "-tls1_3",
                                 "-allow_no_dhe_kex", send="mode", until="mode\n")
    assert "mode" in run.output and ("Server Temp Key" in run.output) is temp_key, run.output
    assert server.stop_and_summarize().handshakes == 1


# -- a wrong key is psk-key-mismatch ------------------------------------------------------------


@pytest.mark.parametrize("allow", [False, True], ids=["dhe-only", "allow_no_dhe_kex"])
def test_wrong_key_at_s_server(s_server, allow: bool) -> None:
    server = s_server(*(["-allow_no_dhe_kex"] if allow else []))
    _, errors = handshakes(server.address, 1, resumption=False, key=Secret(bytes.fromhex(WRONG_HEX)))
    assert errors == ["psk-key-mismatch"]


def test_wrong_key_from_s_client(our_server) -> None:
    server = our_server()
    run_openssl_tls_client(server.address, "-psk", WRONG_HEX, "-psk_identity", "dev9", "-tls1_3",
                           send="bad key", until="alert", timeout=5)
    summary = server.stop_and_summarize()
    assert summary.handshakes == 0 and summary.failures["psk-key-mismatch"] == 1, summary.line



# -- configuration --------------------------------------------------------------------------


SCENARIO = ("name: t\ntargets: [{name: t, host: 127.0.0.1, port: 4433, protocol: tls}]\nclients: {count: 1}\n"
            'run_time: 1s\npsk: {key: "00112233"}\n')


def test_scenario_psk_modes() -> None:
    assert parse_scenario(SCENARIO, "t.yaml").tls.psk_modes == ("psk_dhe_ke", "psk_ke")
    assert parse_scenario(SCENARIO + "tls: {psk_modes: [psk_dhe_ke]}\n", "t.yaml").tls.psk_modes == ("psk_dhe_ke",)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(SCENARIO + "tls:\n  psk_modes: [psk_dhe_ke, psk_kex]\n", "t.yaml")
    assert info.value.key_path == "tls.psk_modes[1]" and info.value.line == 7, str(info.value)
    with pytest.raises(ScenarioError) as info:
        parse_scenario(SCENARIO + "tls:\n  psk_modes: [psk_ke]\n", "t.yaml")
    assert info.value.key_path == "tls.psk_modes" and "psk_dhe_ke must be one of the modes" in str(info.value)


def test_context_refuses_unusable_modes() -> None:
    with pytest.raises(ConfigError, match="psk_dhe_ke must be one"):
        client_context(TlsOptions(psk_modes=("psk_ke",)), psk_mode=True)
    with pytest.raises(ConfigError, match="listed twice"):
        client_context(TlsOptions(psk_modes=("psk_dhe_ke", "psk_dhe_ke")), psk_mode=True)


def test_serve_tls_refuses_unusable_psk_modes() -> None:
    import subprocess
    import sys

    from servers import loadgen_env

    run = subprocess.run([sys.executable, "-m", "loadgen", "serve", "tls", "--port", "0", "--psk-modes", "psk_ke"],
                         capture_output=True, text=True, timeout=30, env=loadgen_env(), stdin=subprocess.DEVNULL)
    assert run.returncode == 2 and "--psk-modes: psk_dhe_ke must be one of the modes" in run.stderr, run.stderr
