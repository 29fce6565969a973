"""Hostile TLS 1.3 PSK identities against ``loadgen serve tls`` (a real process, CSV key store).

Every hostile hello carries binders made with the real key of the known identity ``dev1``, so
what refuses it is the identity lookup, not the binder check; a control hello (``dev1``, the
right key) proves the same builder gets a ServerHello. After each attack the server must live,
name the failure by its code, and still complete a real ``openssl s_client`` PSK handshake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from servers import LoadgenServer, needs_openssl, start_loadgen_server
from tls_servers import run_openssl_tls_client

from loadgen.protocol.openssl.tls_contexts import MAX_PSK_IDENTITIES

from .tls13 import ALERT, HANDSHAKE, client_hello, first_record_type

KEY = bytes.fromhex("00112233445566778899aabbccddeeff")
WRONG = bytes(16)

pytestmark = [needs_openssl, pytest.mark.timeout(120)]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Callable[[], LoadgenServer]]:
    started: list[LoadgenServer] = []

    def start() -> LoadgenServer:
        started.append(start_loadgen_server(psk_csv=[("dev1", KEY.hex())], protocol="tls",
                                            workdir=tmp_path / f"server{len(started)}"))
        return started[-1]

    yield start
    for each in started:
        each.stop()


def _still_serves(server: LoadgenServer) -> None:
    run = run_openssl_tls_client(server.address, "-psk", KEY.hex(), "-psk_identity", "dev1", "-tls1_3",
                                 send="still here", until="still here\n")
    assert "still here\n" in run.output.replace("\r", ""), run.output[-2000:]


def test_control_hello_gets_a_server_hello(server) -> None:
    target = server()
    assert first_record_type(target.address, client_hello([b"dev1"], KEY)) == HANDSHAKE
    assert first_record_type(target.address, client_hello([b"dev1"], WRONG)) == ALERT
    summary = target.stop_and_summarize()
    assert summary.failures["psk-key-mismatch"] == 1, summary.line


HOSTILE = {
    # Cut at the NUL, it would be dev1, whose key made the binder: it must not pass as dev1.
    "nul-after-known": [b"dev1\0evil"],
    "invalid-utf8": [b"\xff\xfe\x80dev1"],
    "unknown": [b"dev2"],
    # Longer than OpenSSL's 256-byte limit: OpenSSL never asks our lookup about it.
    "huge": [b"A" * 60000],
    "many": [b"d%d" % i for i in range(1500)],
}


@pytest.mark.parametrize("identities", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_identities_are_unknown_and_the_server_serves_on(server, identities: list[bytes]) -> None:
    target = server()
    assert first_record_type(target.address, client_hello(identities, KEY)) == ALERT
    _still_serves(target)
    summary = target.stop_and_summarize()
    assert summary.handshakes == 1, summary.line
    assert summary.failures == {"psk-unknown-identity": 1}, summary.line
    assert "Traceback" not in target.stderr, target.stderr[-3000:]


def test_lookups_stop_after_the_first_few_identities(server) -> None:
    """A client offers a ticket and its identity; a list of 1,500 costs no 1,500 key lookups."""
    target = server()
    junk = [b"x%d" % i for i in range(MAX_PSK_IDENTITIES)]
    assert first_record_type(target.address, client_hello([junk[0], b"dev1"], KEY)) == HANDSHAKE
    assert first_record_type(target.address, client_hello([*junk, b"dev1"], KEY)) == ALERT
    summary = target.stop_and_summarize()
    assert summary.failures["psk-unknown-identity"] == 1, summary.line
