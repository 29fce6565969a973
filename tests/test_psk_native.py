"""loadgen's own DTLS PSK client handshake against OpenSSL's server, in memory.

The behaviour shared with the OpenSSL client engine (loss, alerts, wrong keys, the
record layer) is covered by test_dtls_engine.py, which runs every client test with
both engines; here is what only the native engine has to get right: choosing it,
server flights that arrive fragmented and out of order, and servers without the
extended master secret.
"""

from __future__ import annotations

import pytest
from dtls_wire import S2C, Wire

from loadgen.credentials import KeyStore, Secret
from loadgen.protocol import dtls, psk_client, records
from loadgen.protocol.events import DataReceived, HandshakeCompleted

pytestmark = pytest.mark.timeout(30)

KEY = Secret(bytes.fromhex("00112233445566778899aabbccddeeff"))
IDENTITY = b"device-0001"
#: OpenSSL's SSL_OP_NO_EXTENDED_MASTER_SECRET (pyOpenSSL has no name for it).
OP_NO_EXTENDED_MASTER_SECRET = 0x1


@pytest.fixture(scope="module")
def server_ctx():
    return dtls.server_context(KeyStore(table={IDENTITY: KEY}), hint=b"hint")


def native_client(ciphers: str = dtls.DEFAULT_PSK_CIPHERS) -> psk_client.PskClientEngine:
    engine = dtls.client_engine(dtls.client_context(ciphers), lambda hint: (IDENTITY, KEY))
    assert isinstance(engine, psk_client.PskClientEngine)
    return engine


def test_psk_aead_suites_use_the_native_engine_and_others_openssl():
    assert psk_client.native_suites(dtls.DEFAULT_PSK_CIPHERS) == (0x00A8, 0x00A9, 0xCCAB, 0xC0A4, 0xC0A8)
    assert psk_client.native_suites("PSK-AES128-CCM8:@SECLEVEL=0") == (0xC0A8,)
    # Any suite the native handshake cannot do sends the whole context to OpenSSL.
    for ciphers in ("PSK-AES128-CBC-SHA256", "ECDHE-PSK-CHACHA20-POLY1305", "PSK-AES128-GCM-SHA256:PSK"):
        assert psk_client.native_suites(ciphers) is None
        engine = dtls.client_engine(dtls.client_context(ciphers), lambda hint: (IDENTITY, KEY))
        assert isinstance(engine, dtls.DtlsEngine)
    # And the user can ask for OpenSSL's handshake explicitly.
    ctx = dtls.client_context(native=False)
    assert isinstance(dtls.client_engine(ctx, lambda hint: (IDENTITY, KEY)), dtls.DtlsEngine)


def _handshake_messages(datagram: bytes) -> list[bytes]:
    """The (unfragmented) handshake messages of a datagram's epoch-0 handshake records."""
    found = []
    for rec, raw in records.record_slices(datagram):
        assert rec.content_type == records.HANDSHAKE and rec.epoch == 0
        found.append(raw[records.HEADER_LEN :])
    return found


def _fragmented(message: bytes, pieces: int) -> list[bytes]:
    """``message`` cut into ``pieces`` DTLS handshake fragments (RFC 6347 4.2.3)."""
    header, body = message[:12], message[12:]
    if not body:
        return [message]  # ServerHelloDone
    size = -(-len(body) // pieces)
    out = []
    for offset in range(0, len(body), size):
        chunk = body[offset : offset + size]
        out.append(header[:6] + offset.to_bytes(3, "big") + len(chunk).to_bytes(3, "big") + chunk)
    return out


def _record(payload: bytes, seq: int) -> bytes:
    return records.HEADER.pack(records.HANDSHAKE, records.DTLS_1_2, 0, 0, seq, len(payload)) + payload


def test_fragmented_and_reordered_server_flight_is_reassembled(server_ctx):
    client = native_client()
    wire = Wire(server_ctx, client)
    client.start()
    (hello,) = client.datagrams_to_send()
    server, (hvr,) = dtls.accept(server_ctx, hello, wire.peer)
    client.receive_datagram(hvr)
    (hello_with_cookie,) = client.datagrams_to_send()
    server, (flight,) = dtls.accept(server_ctx, hello_with_cookie, wire.peer)
    assert server is not None

    messages = _handshake_messages(flight)
    assert [m[0] for m in messages] == [2, 12, 14]  # ServerHello, ServerKeyExchange, ServerHelloDone
    fragments = [f for m in messages for f in _fragmented(m, 3)]
    # Last fragment first, each in its own datagram: nothing can be processed until the
    # first ServerHello fragment arrives, and then everything must fall into place.
    for seq, fragment in enumerate(reversed(fragments)):
        assert client.datagrams_to_send() == []  # no answer before the flight is complete
        client.receive_datagram(_record(fragment, 100 + seq))
    (answer,) = client.datagrams_to_send()
    server.receive_datagram(answer)
    for datagram in server.datagrams_to_send():
        client.receive_datagram(datagram)

    (completed,) = [e for e in iter(client.next_event, None) if isinstance(e, HandshakeCompleted)]
    assert completed.retransmits == 0 and client.handshake_done
    client.send(b"after reassembly")
    for datagram in client.datagrams_to_send():
        server.receive_datagram(datagram)
    assert DataReceived(b"after reassembly") in list(iter(server.next_event, None))


def test_server_without_extended_master_secret(server_ctx):
    plain_server = dtls.server_context(KeyStore(table={IDENTITY: KEY}))
    plain_server.set_options(OP_NO_EXTENDED_MASTER_SECRET)
    wire = Wire(plain_server, native_client())
    wire.handshake()

    c, s = wire.completed()
    assert c.cipher == s.cipher
    server_hello = _handshake_messages(wire.datagrams(S2C)[1])[0]
    assert b"\x00\x17\x00\x00" not in server_hello[12 + 2 + 32 + 1 + server_hello[12 + 34] + 3 :]
    # Positive control: the default server does agree to it.
    wire = Wire(server_ctx, native_client())
    wire.handshake()
    server_hello = _handshake_messages(wire.datagrams(S2C)[1])[0]
    assert b"\x00\x17\x00\x00" in server_hello[12 + 2 + 32 + 1 + server_hello[12 + 34] + 3 :]


@pytest.mark.parametrize("cipher", list(psk_client.NATIVE_SUITES))
def test_every_native_suite_against_openssl(cipher):
    server = dtls.server_context(KeyStore(table={IDENTITY: KEY}), ciphers=cipher)
    wire = Wire(server, native_client(cipher))
    wire.handshake()
    c, s = wire.completed()
    assert c.cipher == s.cipher == cipher
    wire.client.send(b"x" * wire.client.cleartext_mtu)  # the largest payload fits one datagram
    (datagram,) = wire.client.datagrams_to_send()
    assert len(datagram) == dtls.DEFAULT_MTU
    wire.server.receive_datagram(datagram)
    assert list(iter(wire.server.next_event, None)) == [DataReceived(b"x" * wire.client.cleartext_mtu)]
