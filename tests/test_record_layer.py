"""loadgen's own record layer for established associations, against OpenSSL's.

After the handshake an engine drops OpenSSL's connection and seals/opens records
itself (``loadgen.protocol.native.record_layer``). Every supported suite is checked against
a peer that kept OpenSSL's record layer, in both directions, plus the DTLS rules a
record layer must keep: replayed and forged records are dropped silently, alerts and
close_notify are understood, and a lost final flight is re-sent.
"""

from __future__ import annotations

import os

import pytest
from dtls_wire import C2S, S2C, Wire

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.events import ConnectionClosed, DataReceived
from loadgen.protocol.native import record_layer, records
from loadgen.protocol.native.record_layer import SUITES, prf
from loadgen.protocol.openssl import dtls

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
CIPHERS = ["PSK-AES128-GCM-SHA256", "PSK-AES256-GCM-SHA384", "PSK-CHACHA20-POLY1305", "PSK-AES128-CCM",
           "PSK-AES128-CCM8"]


@pytest.fixture(autouse=True, params=["accelerated", "pure-python"])
def aead_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: GCM and ChaCha20 through the C accelerator, then through cryptography's classes
    (the path a machine without gcc or OpenSSL's headers takes)."""
    if request.param == "pure-python":
        monkeypatch.setattr(record_layer, "_aead", None)
    elif not record_layer.ACCELERATED:
        if os.environ.get("LOADGEN_REQUIRE_ACCELERATOR"):
            pytest.fail("the C accelerator was not built (LOADGEN_REQUIRE_ACCELERATOR is set: CI builds it)")
        pytest.skip("the C accelerator was not built at install")
    return str(request.param)


def established(cipher: str, *, client_light: bool, server_light: bool, drop: frozenset = frozenset()) -> Wire:
    server_ctx = dtls_contexts.server_context(KeyStore(shared=KEY), ciphers=cipher)
    client = dtls.DtlsEngine.client(dtls_contexts.client_context(cipher), lambda hint: (b"dev", KEY),
                                    light=client_light)
    wire = Wire(server_ctx, client, drop=drop, server_light=server_light)
    wire.handshake()
    assert wire.server is not None and client.handshake_done and wire.server.handshake_done
    assert client.cipher == cipher
    return wire


def exchange(sender: dtls.DtlsEngine, receiver: dtls.DtlsEngine, data: bytes, now: float) -> list:
    sender.send(data)
    for datagram in sender.datagrams_to_send():
        receiver.receive_datagram(datagram, now)
    return list(iter(receiver.next_event, None))


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize(("client_light", "server_light"), [(True, False), (False, True), (True, True)])
def test_application_data_and_close_against_openssl(cipher: str, client_light: bool, server_light: bool) -> None:
    wire = established(cipher, client_light=client_light, server_light=server_light)
    client, server = wire.client, wire.server
    assert (client.light, server.light) == (client_light, server_light)
    for i in range(70):  # past the 64-record replay window
        assert exchange(client, server, b"ping %d" % i, wire.now()) == [DataReceived(b"ping %d" % i)]
        assert exchange(server, client, b"pong %d" % i, wire.now()) == [DataReceived(b"pong %d" % i)]
    client.close()
    for datagram in client.datagrams_to_send():
        server.receive_datagram(datagram, wire.now())
    assert list(iter(server.next_event, None)) == [ConnectionClosed()]


@pytest.mark.parametrize("cipher", ["PSK-AES128-GCM-SHA256", "PSK-CHACHA20-POLY1305"])
def test_replayed_and_forged_records_are_dropped(cipher: str) -> None:
    wire = established(cipher, client_light=False, server_light=True)
    client, server = wire.client, wire.server
    client.send(b"once")
    (datagram,) = client.datagrams_to_send()
    server.receive_datagram(datagram, wire.now())
    server.receive_datagram(datagram, wire.now())  # replay
    forged = bytearray(datagram)
    forged[-1] ^= 1
    server.receive_datagram(bytes(forged), wire.now())  # tag fails
    server.receive_datagram(datagram[:20], wire.now())  # truncated
    assert list(iter(server.next_event, None)) == [DataReceived(b"once")]
    assert not server.closed


def test_late_record_inside_the_window_is_accepted_once() -> None:
    wire = established("PSK-AES128-GCM-SHA256", client_light=True, server_light=True)
    client, server = wire.client, wire.server
    sent = []
    for i in range(5):
        client.send(b"m%d" % i)
        sent += client.datagrams_to_send()
    for datagram in [sent[4], sent[0], sent[2], sent[0], sent[1], sent[3]]:  # reordered, one replay
        server.receive_datagram(datagram, wire.now())
    got = [e.data for e in iter(server.next_event, None)]
    assert got == [b"m4", b"m0", b"m2", b"m1", b"m3"]


def test_fatal_alert_from_openssl_peer_is_reported() -> None:
    wire = established("PSK-AES128-GCM-SHA256", client_light=True, server_light=False)
    client, server = wire.client, wire.server
    # An OpenSSL peer that shuts down sends close_notify; a light engine reports it.
    server.close()
    for datagram in server.datagrams_to_send():
        client.receive_datagram(datagram, wire.now())
    assert list(iter(client.next_event, None)) == [ConnectionClosed()]
    # A light engine closing sends an alert OpenSSL understands.
    wire2 = established("PSK-AES128-GCM-SHA256", client_light=False, server_light=True)
    wire2.server.close()
    for datagram in wire2.server.datagrams_to_send():
        wire2.client.receive_datagram(datagram, wire2.now())
    assert list(iter(wire2.client.next_event, None)) == [ConnectionClosed()]


def test_lost_final_flight_is_resent_by_a_light_server() -> None:
    # Datagrams s2c: 0 HelloVerifyRequest, 1 ServerHello..Done, 2 CCS+Finished (dropped).
    wire = established("PSK-AES128-GCM-SHA256", client_light=True, server_light=True,
                       drop=frozenset({(S2C, 2)}))
    assert wire.server.light
    assert wire.server.retransmits == 1 and wire.client.retransmits == 1
    assert wire.count(C2S) == 4 and wire.count(S2C) == 4
    assert exchange(wire.client, wire.server, b"after", wire.now()) == [DataReceived(b"after")]


def test_unsupported_suite_stays_with_openssl() -> None:
    wire = established("PSK-AES128-CBC-SHA256", client_light=True, server_light=True)
    assert not wire.client.light and not wire.server.light
    assert exchange(wire.client, wire.server, b"cbc", wire.now()) == [DataReceived(b"cbc")]


def test_prf_matches_rfc5246_test_vector() -> None:
    # The widely used TLS 1.2 PRF (SHA-256) test vector (IETF TLS WG mailing list).
    secret = bytes.fromhex("9bbe436ba940f017b17652849a71db35")
    seed = bytes.fromhex("a0ba9f936cda311827a6f796ffd5198c")
    out = prf(secret, b"test label", seed, 100)
    assert out[:16].hex() == "e3f229ba727be17b8d122620557cd453"


def test_known_suites_have_sane_parameters() -> None:
    for name, suite in SUITES.items():
        assert suite.key_len in (16, 32) and suite.fixed_iv_len in (4, 12) and suite.tag_len in (8, 16), name


def test_alert_names_cover_psk_failures() -> None:
    assert records.ALERT_NAMES[115] == "unknown psk identity"
    assert records.ALERT_NAMES[51] == "decrypt error"


@pytest.mark.parametrize("native", [True, False], ids=["native-client", "openssl-client"])
@pytest.mark.parametrize("server_light", [True, False], ids=["light-server", "openssl-server"])
def test_a_light_client_engine_queues_nothing_when_it_receives(native: bool, server_light: bool) -> None:
    """What DtlsAssociation relies on to skip its flush after each reply: once a client engine
    is light, nothing it receives (data, a replay, every server flight of the handshake again,
    a forged record, garbage) leaves it anything to send."""
    cipher = CIPHERS[0]
    client = dtls_factory.client_engine(dtls_contexts.client_context(cipher, native=native),
                                        lambda hint: (b"dev", KEY))
    wire = Wire(dtls_contexts.server_context(KeyStore(shared=KEY), ciphers=cipher), client,
                server_light=server_light)
    wire.handshake()
    server = wire.server
    assert server is not None and client.light
    server.send(b"pong")
    (reply,) = server.datagrams_to_send()
    forged = reply[:-1] + bytes((reply[-1] ^ 1,))
    for datagram in [reply, reply, forged, *wire.datagrams(S2C), b"\x17\xfe\xfd" + bytes(20), b"junk"]:
        client.receive_datagram(datagram, wire.now())
        assert client.datagrams_to_send() == [], datagram[:16].hex()
    assert list(iter(client.next_event, None)) == [DataReceived(b"pong")]
    assert not client.closed
