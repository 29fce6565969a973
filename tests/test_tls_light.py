"""A light TLS engine, client or server (its TLS 1.2 records sealed and opened by loadgen's record
layer after the handshake, OpenSSL's connection freed) against one that kept OpenSSL's.

The hostile peer here is a server-side record layer keyed with the real handshake's keys (the
server engine's master secret and randoms): its lies authenticate, so they reach the code behind
the MAC check. Every lie goes to a light client and to an OpenSSL (heavy) client of its own
handshake, and both must end the same way, with the same error code, as OpenSSL is the oracle.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest
from OpenSSL import SSL

from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from loadgen.protocol.native import record_layer, records
from loadgen.protocol.native.record_layer import SUITES
from loadgen.protocol.native.tls_record_layer import TlsRecordLayer
from loadgen.protocol.openssl.tls import TlsEngine
from loadgen.protocol.openssl.tls_contexts import TlsContext, TlsOptions, client_context, server_context

pytestmark = pytest.mark.timeout(60)

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
CIPHERS = ["PSK-AES128-GCM-SHA256", "PSK-AES256-GCM-SHA384", "PSK-CHACHA20-POLY1305", "PSK-AES128-CCM8"]


@pytest.fixture(autouse=True, params=["accelerated", "pure-python"])
def aead_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test twice: through the C accelerator, then through cryptography's classes."""
    if request.param == "pure-python":
        monkeypatch.setattr(record_layer, "_aead", None)
    elif not record_layer.ACCELERATED:
        if os.environ.get("LOADGEN_REQUIRE_ACCELERATOR"):
            pytest.fail("the C accelerator was not built (LOADGEN_REQUIRE_ACCELERATOR is set: CI builds it)")
        pytest.skip("the C accelerator was not built at install")
    return str(request.param)


def drain(engine: TlsEngine) -> list:
    events = []
    while (event := engine.next_event()) is not None:
        events.append(event)
    return events


def contexts(cipher: str = "PSK-AES128-GCM-SHA256", *, version: str = "1.2",
             resumption: bool = False) -> tuple[TlsContext, TlsContext]:
    options = TlsOptions(min_version=version, max_version=version, resumption=resumption,  # type: ignore[arg-type]
                         ciphers=cipher if version == "1.2" else None)
    return client_context(options, psk_mode=True), server_context(options, keys=KeyStore(shared=KEY))


def pair(cipher: str = "PSK-AES128-GCM-SHA256", *, light: bool, version: str = "1.2",
         using: tuple[TlsContext, TlsContext] | None = None, session: SSL.Session | None = None,
         server_light: bool = False) -> tuple[TlsEngine, TlsEngine]:
    """A client and a server engine (OpenSSL's unless ``server_light``), handshaken in memory."""
    client_ctx, server_ctx = using or contexts(cipher, version=version)
    client = TlsEngine.client(client_ctx, choose=lambda hint: (b"dev", KEY), light=light, session=session)
    server = TlsEngine.server(server_ctx, light=server_light)
    client.start()
    for _ in range(6):
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
    assert client.handshake_done and server.handshake_done
    assert [type(e) for e in drain(client)] == [HandshakeCompleted]
    drain(server)
    return client, server


def liar(peer: TlsEngine, cipher: str) -> TlsRecordLayer:
    """``peer``'s side of the record layer, keyed from the real handshake (``peer`` kept OpenSSL's
    connection): what it seals authenticates."""
    conn = peer._conn  # noqa: SLF001 - the test needs the handshake's secrets
    return TlsRecordLayer(SUITES[cipher], master_key=conn.master_key(), client_random=conn.client_random(),
                          server_random=conn.server_random(), is_client=peer.is_client)


def outcome(events: list) -> list:
    """What a user of the engine sees: the data, a close, or a failure's code."""
    seen: list = []
    for event in events:
        if isinstance(event, DataReceived):
            if seen and isinstance(seen[-1], bytes):
                seen[-1] += event.data  # OpenSSL may hand two records over in one read
            else:
                seen.append(event.data)
        elif isinstance(event, ConnectionClosed):
            seen.append("closed")
        elif isinstance(event, ConnectionFailed):
            seen.append(event.error.code)
    return seen


def record(content_type: int, body: bytes, version: int = 0x0303) -> bytes:
    return struct.pack("!BHH", content_type, version, len(body)) + body


def seal_one(layer: TlsRecordLayer, content_type: int, plaintext: bytes) -> bytes:
    return layer._seal_one(content_type, plaintext)  # noqa: SLF001 - one record, whatever its size


def tamper(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


#: A ClientHello as a renegotiating client sends it (sealed, so only its type and length matter first).
CLIENT_HELLO = b"\x01\x00\x00\x29\x03\x03" + b"\x11" * 32 + b"\x00\x00\x02\x00\x9c\x01\x00"

#: name -> what the hostile server sends, made from its record layer.
LIES: dict[str, Callable[[TlsRecordLayer], list[bytes]]] = {
    "one record": lambda s: [s.seal(23, b"hello\n")],
    "two records in one read": lambda s: [s.seal(23, b"one\n") + s.seal(23, b"two\n")],
    "a record a byte at a time": lambda s: [bytes([b]) for b in s.seal(23, b"slow\n")],
    "a record and half the next": lambda s: (lambda a, b: [a + b[:9], b[9:]])(s.seal(23, b"a\n"), s.seal(23, b"b\n")),
    "an empty record, then data": lambda s: [s.seal(23, b"") + s.seal(23, b"after\n")],
    "a forged tag": lambda s: [tamper(s.seal(23, b"hello\n"))],
    "a good record, then a forged one, in one read": lambda s: [s.seal(23, b"kept\n") + tamper(s.seal(23, b"x\n"))],
    "a replayed record": lambda s: (lambda r: [r, r])(s.seal(23, b"again\n")),
    "a skipped sequence number": lambda s: [(s.seal(23, b"lost"), s.seal(23, b"hello\n"))[1]],
    "a wrong version in the header": lambda s: (lambda r: [r[:1] + b"\x03\x01" + r[3:]])(s.seal(23, b"x\n")),
    "a length over 2^14 + 2048": lambda s: [record(23, b"\x00" * 5)[:3] + struct.pack("!H", 18433) + b"\x00" * 64],
    "a sealed plaintext of 2^14 + 1 bytes": lambda s: [seal_one(s, 23, b"x" * 16385)],
    "a sealed record of an unknown type": lambda s: [seal_one(s, 99, b"what\n")],
    "a sealed change_cipher_spec": lambda s: [seal_one(s, 20, b"\x01")],
    "a sealed fatal alert": lambda s: [s.alert(40)],
    "a sealed close_notify after data": lambda s: [s.seal(23, b"bye\n") + s.alert(0, fatal=False)],
    "a sealed warning alert, then data": lambda s: [s.alert(90, fatal=False) + s.seal(23, b"still\n")],
    "a sealed alert of 3 bytes": lambda s: [seal_one(s, 21, b"\x02\x28\x00")],
    "a sealed handshake message": lambda s: [seal_one(s, 22, b"\x14\x00\x00\x0c" + b"\x00" * 12)],
    "a plaintext record": lambda s: [record(23, b"hello\n")],
}


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_light_client_ends_every_lie_as_openssl_does(cipher: str, lie: str) -> None:
    results = {}
    for light in (True, False):
        client, server = pair(cipher, light=light)
        assert client.light is light
        hostile = liar(server, cipher)
        events: list = []
        for chunk in LIES[lie](hostile):
            client.receive_data(chunk)
            events += drain(client)
        reply = client.data_to_send()  # an alert, or close_notify in answer to the server's
        said = [plaintext for _, plaintext in hostile.receive(reply)] if reply else []
        assert all(len(alert) == 2 for alert in said), lie
        results[light] = outcome(events) + said
        assert client.closed is any(isinstance(e, (ConnectionFailed, ConnectionClosed)) for e in events), lie
    assert results[True] == results[False], lie
    assert results[True], lie


#: A client's lies to a server: the same, but that a renegotiation is the client's ClientHello.
CLIENT_LIES = {**{name: lie for name, lie in LIES.items() if name != "a sealed handshake message"},
               "a sealed handshake message": lambda s: [seal_one(s, 22, b"\x14\x00\x00\x0c" + b"\x00" * 12)],
               "a renegotiating ClientHello": lambda s: [seal_one(s, 22, CLIENT_HELLO)],
               "a renegotiating ClientHello, then data": lambda s: [seal_one(s, 22, CLIENT_HELLO) + s.seal(23, b"x\n")],
               "a HelloRequest": lambda s: [seal_one(s, 22, b"\x00\x00\x00\x00")]}


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("lie", sorted(CLIENT_LIES))
def test_a_light_server_ends_every_lie_as_openssl_does(cipher: str, lie: str) -> None:
    """The same differential test the other way round: a hostile client keyed from its real
    handshake lies to a light server and to an OpenSSL one."""
    results = {}
    for light in (True, False):
        client, server = pair(cipher, light=False, server_light=light)
        hostile = liar(client, cipher)
        server.receive_data(hostile.seal(23, b"first\n"))  # a light server goes light at the first data
        assert server.light is light
        events: list = drain(server)
        for chunk in CLIENT_LIES[lie](hostile):
            server.receive_data(chunk)
            events += drain(server)
        reply = server.data_to_send()
        said = [plaintext for _, plaintext in hostile.receive(reply)] if reply else []
        assert all(len(alert) == 2 for alert in said), lie
        results[light] = outcome(events) + said
        assert server.closed is any(isinstance(e, (ConnectionFailed, ConnectionClosed)) for e in events), lie
    assert results[True] == results[False], lie
    assert results[True], lie


def test_a_light_client_declines_renegotiation_and_goes_on() -> None:
    """OpenSSL would renegotiate on a HelloRequest; a light client declines it (RFC 5246 7.4.1.1:
    a no_renegotiation warning) and keeps the connection."""
    client, server = pair(light=True)
    hostile = liar(server, "PSK-AES128-GCM-SHA256")
    client.receive_data(seal_one(hostile, 22, b"\x00\x00\x00\x00") + hostile.seal(23, b"after\n"))
    assert outcome(drain(client)) == [b"after\n"]
    assert list(hostile.receive(client.data_to_send())) == [(records.ALERT, bytes((records.ALERT_WARNING, 100)))]
    client.send(b"ping\n")
    assert list(hostile.receive(client.data_to_send())) == [(records.APPLICATION_DATA, b"ping\n")]


@pytest.mark.parametrize("cipher", CIPHERS)
def test_a_light_clients_records_are_openssls_and_so_is_its_close(cipher: str) -> None:
    client, server = pair(cipher, light=True)
    assert client.light and client.cipher == cipher and client.version == "TLSv1.2"
    for size in (1, 100, 16384, 16385, 40000):  # one record, a full one, and split over several
        payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        client.send(payload)
        server.receive_data(client.data_to_send())
        assert outcome(drain(server)) == [payload]
        server.send(payload)
        client.receive_data(server.data_to_send())
        assert outcome(drain(client)) == [payload]
    client.close()
    server.receive_data(client.data_to_send())
    assert outcome(drain(server)) == ["closed"]


def test_a_light_clients_session_resumes() -> None:
    using = contexts(resumption=True)
    client, server = pair(light=True, using=using)
    assert client.light and not client.resumed
    client.close()
    server.receive_data(client.data_to_send())
    again, _ = pair(light=True, using=using, session=client.session)
    assert again.resumed and again.light


@pytest.mark.parametrize("cipher", CIPHERS)
def test_a_light_servers_records_are_openssls_and_so_is_its_close(cipher: str) -> None:
    client, server = pair(cipher, light=False, server_light=True)
    assert not server.light  # not yet: a connection that only handshakes never pays for the keys
    for size in (1, 16385, 40000):
        payload = bytes(range(256)) * (size // 256) + b"z" * (size % 256)
        client.send(payload)
        server.receive_data(client.data_to_send())
        assert outcome(drain(server)) == [payload]
        assert server.light and server.cipher == cipher and server.version == "TLSv1.2"
        assert server.psk_identity == b"dev"  # the reference server's "qt" reply names it
        server.send(payload)
        client.receive_data(server.data_to_send())
        assert outcome(drain(client)) == [payload]
    server.close()
    client.receive_data(server.data_to_send())
    assert outcome(drain(client)) == ["closed"]


@pytest.mark.parametrize("tickets", [True, False], ids=["tickets", "session ids"])
def test_a_light_server_keeps_its_sessions_resumable(tickets: bool) -> None:
    """With session ids the session lives in the server's cache: freeing a connection that was
    not shut down would have dropped it (OpenSSL's ssl_clear_bad_session)."""
    using = contexts(resumption=True)
    if not tickets:
        using[1].ssl.set_options(SSL.OP_NO_TICKET)
    client, server = pair(light=False, server_light=True, using=using)
    client.send(b"ping\n")
    server.receive_data(client.data_to_send())
    assert server.light and not server.resumed and outcome(drain(server)) == [b"ping\n"]
    client.close()
    server.receive_data(client.data_to_send())
    again, server_again = pair(light=False, server_light=True, using=using, session=client.session)
    assert again.resumed and server_again.resumed


def test_a_light_server_goes_light_at_the_first_data_either_way_and_not_for_a_close() -> None:
    """Handshake-only connections (a storm of them) never pay for the keys; a server that speaks
    first goes light at its send; input that came with the client's Finished keeps OpenSSL."""
    client, server = pair(light=False, server_light=True)
    client.close()
    server.receive_data(client.data_to_send())
    assert not server.light and outcome(drain(server)) == ["closed"]
    client, server = pair(light=False, server_light=True)
    server.send(b"banner\n")
    assert server.light
    client.receive_data(server.data_to_send())
    assert outcome(drain(client)) == [b"banner\n"]
    # Resumed, the server's Finished comes first: the client's, then its data, reach the server in one read.
    client_ctx, server_ctx = using = contexts(resumption=True)
    first, _ = pair(light=False, server_light=True, using=using)
    first.close()
    client = TlsEngine.client(client_ctx, choose=lambda hint: (b"dev", KEY), session=first.session)
    server = TlsEngine.server(server_ctx, light=True)
    client.start()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    assert client.handshake_done and client.resumed
    client.send(b"early\n")  # in the same read as the client's Finished
    server.receive_data(client.data_to_send())
    assert server.handshake_done and outcome(drain(server)) == [b"early\n"]
    server.send(b"x\n")
    assert not server.light


def test_tls_1_3_and_a_heavy_request_keep_openssl() -> None:
    assert not pair(light=True, version="1.3")[0].light
    assert not pair(light=False)[0].light


def test_input_after_the_servers_finished_keeps_openssl_and_loses_nothing() -> None:
    """Data that arrives with the handshake's last flight is OpenSSL's to number: no light engine then."""
    options = TlsOptions(min_version="1.2", max_version="1.2", ciphers="PSK-AES128-GCM-SHA256")
    client = TlsEngine.client(client_context(options, psk_mode=True), choose=lambda hint: (b"dev", KEY), light=True)
    server = TlsEngine.server(server_context(options, keys=KeyStore(shared=KEY)))
    client.start()
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())  # the server is done: its Finished, then a line at once
    server.send(b"banner\n")
    client.receive_data(server.data_to_send())
    assert client.handshake_done and not client.light
    assert outcome(drain(client)) == [b"banner\n"]


def test_a_partial_record_is_bounded_by_one_records_length() -> None:
    client, server = pair(light=True)
    hostile = liar(server, "PSK-AES128-GCM-SHA256")
    big = seal_one(hostile, 23, b"y" * 16384)
    for i in range(0, len(big) - 1, 1000):
        client.receive_data(big[i : min(i + 1000, len(big) - 1)])
        assert client._records is not None and len(client._records._in) < len(big)  # noqa: SLF001
    assert drain(client) == []
    client.receive_data(big[-1:])
    assert outcome(drain(client)) == [b"y" * 16384]
