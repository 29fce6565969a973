"""loadgen's own DTLS PSK handshakes against OpenSSL's, in memory.

What they share with the OpenSSL engines (loss, alerts, wrong keys, the record layer)
is covered by test_dtls_engine.py, which runs every test with each client and server
kind; here is what only the native engines have to get right: when they are chosen,
flights that arrive fragmented and out of order, peers without the extended master
secret, and ClientHellos the native server must refuse.
"""

from __future__ import annotations

from typing import Any

import pytest
from dtls_wire import C2S, S2C, Wire

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.events import ConnectionFailed, DataReceived, HandshakeCompleted
from loadgen.protocol.native import (
    client as psk_client,
)
from loadgen.protocol.native import (
    messages as handshake_messages,
)
from loadgen.protocol.native import (
    records,
)
from loadgen.protocol.native import (
    server as psk_server,
)
from loadgen.protocol.openssl import dtls

pytestmark = pytest.mark.timeout(30)
#: The time engines outside a wire get: any value, the engines only compare times they were given.
NOW = 1000.0

KEY = Secret(bytes.fromhex("00112233445566778899aabbccddeeff"))
IDENTITY = b"device-0001"
#: OpenSSL's SSL_OP_NO_EXTENDED_MASTER_SECRET (pyOpenSSL has no name for it).
OP_NO_EXTENDED_MASTER_SECRET = 0x1


@pytest.fixture(scope="module")
def server_ctx():
    """OpenSSL's server, for the native client."""
    return dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), hint=b"hint", native=False)


def native_server(**options) -> dtls_contexts.ServerContext:
    ctx = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), **options)
    assert ctx.native is not None
    return ctx


def native_client(ciphers: str = dtls_contexts.DEFAULT_PSK_CIPHERS) -> psk_client.PskClientEngine:
    engine = dtls_factory.client_engine(dtls_contexts.client_context(ciphers), lambda hint: (IDENTITY, KEY))
    assert isinstance(engine, psk_client.PskClientEngine)
    return engine


def test_psk_aead_suites_use_the_native_engines_and_others_openssl():
    assert psk_client.native_suites(dtls_contexts.DEFAULT_PSK_CIPHERS) == (0x00A8, 0x00A9, 0xCCAB, 0xC0A4, 0xC0A8)
    assert psk_client.native_suites("PSK-AES128-CCM8:@SECLEVEL=0") == (0xC0A8,)
    # Any suite the native handshake cannot do sends the whole context to OpenSSL.
    for ciphers in ("PSK-AES128-CBC-SHA256", "ECDHE-PSK-CHACHA20-POLY1305", "PSK-AES128-GCM-SHA256:PSK"):
        assert psk_client.native_suites(ciphers) is None
        engine = dtls_factory.client_engine(dtls_contexts.client_context(ciphers), lambda hint: (IDENTITY, KEY))
        assert isinstance(engine, dtls.DtlsEngine)
    # And the user can ask for OpenSSL's handshake explicitly.
    ctx = dtls_contexts.client_context(native=False)
    assert isinstance(dtls_factory.client_engine(ctx, lambda hint: (IDENTITY, KEY)), dtls.DtlsEngine)
    # The same rule on the server side.
    assert native_server().native.suites == psk_client.native_suites(dtls_contexts.DEFAULT_PSK_CIPHERS)
    assert dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), ciphers="PSK-AES128-CBC-SHA256").native is None
    assert dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), native=False).native is None


def _handshake_messages(datagram: bytes) -> list[bytes]:
    """The (unfragmented) handshake messages of a datagram's epoch-0 handshake records."""
    found = []
    for content_type, epoch, raw in records.split(datagram):
        assert content_type == records.HANDSHAKE and epoch == 0
        found.append(raw[records.HEADER_LEN :])
    return found


def _fragmented(message: bytes, pieces: int) -> list[bytes]:
    """``message`` cut into ``pieces`` DTLS handshake fragments (RFC 6347 4.2.3)."""
    body_len = len(message) - 12
    return handshake_messages.fragment_message(message, max(-(-body_len // pieces), 1))


def _record(payload: bytes, seq: int) -> bytes:
    return records.HEADER.pack(records.HANDSHAKE, records.DTLS_1_2, 0, 0, seq, len(payload)) + payload


def test_fragmented_and_reordered_server_flight_is_reassembled(server_ctx):
    client = native_client()
    wire = Wire(server_ctx, client)
    client.start(NOW)
    (hello,) = client.datagrams_to_send()
    server, (hvr,) = dtls_factory.accept(server_ctx, hello, wire.peer, NOW)
    client.receive_datagram(hvr, NOW)
    (hello_with_cookie,) = client.datagrams_to_send()
    server, (flight,) = dtls_factory.accept(server_ctx, hello_with_cookie, wire.peer, NOW)
    assert server is not None

    messages = _handshake_messages(flight)
    assert [m[0] for m in messages] == [2, 12, 14]  # ServerHello, ServerKeyExchange, ServerHelloDone
    fragments = [f for m in messages for f in _fragmented(m, 3)]
    # Last fragment first, each in its own datagram: nothing can be processed until the
    # first ServerHello fragment arrives, and then everything must fall into place.
    for seq, fragment in enumerate(reversed(fragments)):
        assert client.datagrams_to_send() == []  # no answer before the flight is complete
        client.receive_datagram(_record(fragment, 100 + seq), NOW)
    (answer,) = client.datagrams_to_send()
    server.receive_datagram(answer, NOW)
    for datagram in server.datagrams_to_send():
        client.receive_datagram(datagram, NOW)

    (completed,) = [e for e in iter(client.next_event, None) if isinstance(e, HandshakeCompleted)]
    assert completed.retransmits == 0 and client.handshake_done
    client.send(b"after reassembly")
    for datagram in client.datagrams_to_send():
        server.receive_datagram(datagram, NOW)
    assert DataReceived(b"after reassembly") in list(iter(server.next_event, None))


def test_server_without_extended_master_secret(server_ctx):
    plain_server = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), native=False)
    plain_server.ssl.set_options(OP_NO_EXTENDED_MASTER_SECRET)
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
@pytest.mark.parametrize("side", ["native-client", "native-server"])
def test_every_native_suite_against_openssl(cipher, side):
    server = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), ciphers=cipher,
                                          native=side == "native-server")
    client = dtls_factory.client_engine(dtls_contexts.client_context(cipher, native=side == "native-client"),
                                        lambda hint: (IDENTITY, KEY))
    wire = Wire(server, client)
    wire.handshake()
    c, s = wire.completed()
    assert c.cipher == s.cipher == cipher
    wire.client.send(b"x" * wire.client.cleartext_mtu)  # the largest payload fits one datagram
    (datagram,) = wire.client.datagrams_to_send()
    assert len(datagram) == dtls.DEFAULT_MTU
    wire.server.receive_datagram(datagram, wire.now())
    assert list(iter(wire.server.next_event, None)) == [DataReceived(b"x" * wire.client.cleartext_mtu)]


def _openssl_client(ctx: dtls_contexts.ClientContext | None = None) -> dtls.DtlsEngine:
    return dtls.DtlsEngine.client(ctx or dtls_contexts.client_context(native=False), lambda hint: (IDENTITY, KEY))


def test_native_server_with_a_client_without_extended_master_secret():
    ctx = dtls_contexts.client_context(native=False)
    ctx.ssl.set_options(OP_NO_EXTENDED_MASTER_SECRET)
    wire = Wire(native_server(), _openssl_client(ctx))
    wire.handshake()
    c, s = wire.completed()
    assert s.psk_identity == IDENTITY and c.cipher == s.cipher


def test_native_server_buffers_a_finished_that_overtakes_its_key_exchange():
    server_ctx = native_server(hint=b"hint")
    client = native_client()
    client.start(NOW)
    server = None
    datagrams = client.datagrams_to_send()
    while server is None:  # the cookie exchange
        server, replies = dtls_factory.accept(server_ctx, datagrams[0], b"peer", NOW)
        for reply in replies:
            client.receive_datagram(reply, NOW)
        datagrams = client.datagrams_to_send()
    (flight,) = datagrams  # ClientKeyExchange, ChangeCipherSpec, Finished
    slices = [raw for _, _, raw in records.split(flight)]
    assert [r[0] for r in slices] == [records.HANDSHAKE, records.CHANGE_CIPHER_SPEC, records.HANDSHAKE]
    server.receive_datagram(slices[2], NOW)  # the Finished first: no keys yet
    assert not server.handshake_done and not server.closed
    server.receive_datagram(slices[0] + slices[1], NOW)
    assert server.handshake_done and server.peer_identity == IDENTITY
    for reply in server.datagrams_to_send():
        client.receive_datagram(reply, NOW)
    assert client.handshake_done


def test_native_server_ignores_fragmented_or_foreign_client_hellos():
    server_ctx = native_server()
    client = native_client()
    client.start(NOW)
    (hello,) = client.datagrams_to_send()
    message = hello[records.HEADER_LEN :]
    first, second = _fragmented(message, 2)
    # A ClientHello in two fragments: like OpenSSL's DTLSv1_listen, not answered.
    assert dtls_factory.accept(server_ctx, _record(first, 0), b"peer", NOW) == (None, [])
    assert dtls_factory.accept(server_ctx, _record(second, 1), b"peer", NOW) == (None, [])
    # A TLS (not DTLS) version inside the ClientHello.
    tls_version = bytearray(hello)
    tls_version[records.HEADER_LEN + 12] = 0x03
    assert dtls_factory.accept(server_ctx, bytes(tls_version), b"peer", NOW) == (None, [])
    assert psk_server.parse_client_hello(hello) is not None  # positive control


def test_a_cookieless_client_hello_is_answered_from_its_frame_and_read_whole_only_with_its_cookie():
    """The HelloVerifyRequest needs the headers and the cookie's place only (the first ClientHello of
    every handshake, and what a flood is made of); what follows the cookie is read once the cookie
    checks, and a ClientHello malformed there gets no state and no reply."""
    server_ctx = native_server()
    client = native_client()
    client.start(NOW)
    (hello,) = client.datagrams_to_send()

    def odd_suites(datagram: bytes) -> bytes:
        frame = psk_server.hello_frame(datagram)
        assert frame is not None
        broken = bytearray(datagram)
        broken[frame[4] + 1] |= 1  # the suites' length (after the cookie) made odd
        return bytes(broken)

    assert psk_server.parse_client_hello(odd_suites(hello)) is None
    engine, replies = dtls_factory.accept(server_ctx, odd_suites(hello), b"peer", NOW)
    assert engine is None and len(replies) == 1 and len(replies[0]) <= len(hello)  # stateless, no amplification
    client.receive_datagram(replies[0], NOW)
    (with_cookie,) = client.datagrams_to_send()
    assert dtls_factory.accept(server_ctx, odd_suites(with_cookie), b"peer", NOW) == (None, [])
    engine, replies = dtls_factory.accept(server_ctx, with_cookie, b"peer", NOW)  # positive control
    assert engine is not None and replies


def _to_the_server_flight() -> tuple[psk_client.PskClientEngine, Any, list[bytes]]:
    """A native client and server through the cookie exchange and the server's flight: the client's
    ClientKeyExchange flight (ClientKeyExchange, ChangeCipherSpec, Finished under epoch 1) is returned."""
    server_ctx = native_server()
    client = native_client()
    client.start(NOW)
    _, (hvr,) = dtls_factory.accept(server_ctx, client.datagrams_to_send()[0], b"peer", NOW)
    client.receive_datagram(hvr, NOW)
    server, flight = dtls_factory.accept(server_ctx, client.datagrams_to_send()[0], b"peer", NOW)
    assert server is not None
    for datagram in flight:
        client.receive_datagram(datagram, NOW)
    return client, server, client.datagrams_to_send()


def _in_the_clear(message: bytes, seq: int) -> bytes:
    return records.HEADER.pack(records.HANDSHAKE, records.DTLS_1_2, 0, seq >> 16, seq & 0xFFFF, len(message)) + message


def test_a_finished_in_the_clear_is_dropped_by_either_side_and_named_when_the_handshake_times_out() -> None:
    """The Finished is the first message under the new keys (RFC 5246 7.4.9). A peer with the right
    keys that sends its true Finished in an epoch-0 record is broken: the native engines counted it
    as a handshake done. Now each drops it, as DTLS drops a record of the wrong epoch (OpenSSL too),
    and the same Finished sealed as it should be still completes the handshake. The Finished here
    is the real one, opened with the real keys and sent again in the clear."""
    client, server, (flight,) = _to_the_server_flight()
    (_, cke_epoch, cke_raw), ccs, (_, fin_epoch, sealed) = records.split(flight)
    assert (cke_epoch, fin_epoch) == (0, 1)
    server.receive_datagram(cke_raw + ccs[2], NOW)  # the keys are the server's now
    opened = server._records.open(sealed)  # noqa: SLF001 - the client's true Finished
    assert opened is not None and opened[0] == records.HANDSHAKE
    client_finished = opened[1]
    server.receive_datagram(_in_the_clear(client_finished, 5), NOW)
    assert not server.handshake_done and not server.closed and server.next_event() is None
    assert server.datagrams_to_send() == []
    # The control: the same Finished sealed by the client (a fresh record number: the first one
    # was opened above, so the replay window has it) completes the handshake.
    server.receive_datagram(client._records.seal(records.HANDSHAKE, client_finished), NOW)  # noqa: SLF001
    assert server.handshake_done
    (final,) = server.datagrams_to_send()
    *_, (_, epoch, server_sealed) = records.split(final)
    assert epoch == 1
    opened = client._records.open(server_sealed)  # noqa: SLF001 - the server's true Finished
    assert opened is not None
    client.receive_datagram(_in_the_clear(opened[1], 9), NOW)
    assert not client.handshake_done and not client.closed and client.next_event() is None
    error = client.timeout_error()
    assert error.code == "handshake-timeout" and "sent its Finished unencrypted (epoch 0, 1 times)" in str(error)
    client.receive_datagram(server._records.seal(records.HANDSHAKE, opened[1]), NOW)  # noqa: SLF001 - the control
    assert client.handshake_done


def test_native_server_without_a_shared_suite_fails_with_handshake_failure():
    server_ctx = native_server(ciphers="PSK-AES256-GCM-SHA384")
    wire = Wire(server_ctx, native_client("PSK-AES128-CCM8"))
    wire.handshake()
    (client_failed,) = wire.only(wire.client_events, ConnectionFailed)
    (server_failed,) = wire.only(wire.server_events, ConnectionFailed)
    assert server_failed.error.code == "tls-no-shared-cipher"
    assert client_failed.error.code == "tls-handshake-failure"


def test_fragment_message_round_trip():
    message = handshake_messages.handshake_message(12, 2, bytes(range(200)))
    pieces = handshake_messages.fragment_message(message, 64)
    assert len(pieces) == 4 and all(len(p) <= 12 + 64 for p in pieces)
    reassembler = handshake_messages.Reassembler(next_seq=2)
    for piece in reversed(pieces):
        for fragment in handshake_messages.fragments(piece):
            reassembler.add(fragment)
    assert reassembler.pop() == (12, 2, bytes(range(200)))
    assert handshake_messages.fragment_message(message, 500) == [message]  # fits: left whole


def test_native_pair_fragments_what_does_not_fit_the_mtu():
    # A 400-byte identity (RFC 4279 allows up to 65535) cannot fit a 256-byte datagram.
    identity = b"i" * 400
    server_ctx = dtls_contexts.server_context(KeyStore(table={identity: KEY}), hint=b"h" * 256)
    client = dtls_factory.client_engine(dtls_contexts.client_context(), lambda hint: (identity, KEY),
                                        mtu=dtls_contexts.MIN_MTU)
    wire = Wire(server_ctx, client, server_mtu=dtls_contexts.MIN_MTU)
    wire.handshake()
    _, s = wire.completed()
    assert s.psk_identity == identity
    assert max(len(x.datagram) for x in wire.log) <= dtls_contexts.MIN_MTU
    assert wire.count(C2S) >= 5  # ClientHello x2, then the key exchange in at least two pieces, ...
