"""Client and server engines back to back in memory: real OpenSSL, no sockets.

Every test runs with loadgen's own PSK handshake (``native``, what runs use for PSK
AEAD suites) and with OpenSSL's (``openssl``), on the client and on the server side,
in all four pairings.

Time is the wire's clock (see dtls_wire.py): retransmissions by loadgen's own engines
move it by hand; those that wait on OpenSSL's own DTLS timer (1 s at first) sleep for
real, one timer period each, since OpenSSL reads its own clock.
"""

from __future__ import annotations

import random

import pytest
from dtls_wire import C2S, S2C, Wire

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.cookies import CookieJar
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import HandshakeTimeout, LoadgenError, LocalProtocolError
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from loadgen.protocol.native import records
from loadgen.protocol.openssl import dtls

pytestmark = pytest.mark.timeout(30)

KEY = Secret(bytes.fromhex("00112233445566778899aabbccddeeff"))
IDENTITY = b"device-0001"
HINT = b"loadgen-test-hint"
PEER = b"192.0.2.1:40000"
#: The time engines outside a wire get: any value, the engines only compare times they were given.
NOW = 1000.0

# -- reading datagrams --------------------------------------------------------

_HANDSHAKE_NAMES = {
    1: "ClientHello",
    2: "ServerHello",
    3: "HelloVerifyRequest",
    12: "ServerKeyExchange",
    14: "ServerHelloDone",
    16: "ClientKeyExchange",
}


def describe(datagram: bytes) -> tuple[str, ...]:
    """Message names in a datagram (unfragmented handshake messages only)."""
    names = []
    offset = 0
    for rec in records.records(datagram):
        body = datagram[offset + records.HEADER_LEN : offset + records.HEADER_LEN + rec.length]
        offset += records.HEADER_LEN + rec.length
        if rec.content_type == records.CHANGE_CIPHER_SPEC:
            names.append("ChangeCipherSpec")
        elif rec.content_type == records.ALERT:
            names.append(f"Alert(epoch={rec.epoch})")
        elif rec.content_type == records.HANDSHAKE and rec.epoch > 0:
            names.append("Finished")  # the only encrypted handshake message here
        elif rec.content_type == records.HANDSHAKE:
            name = _HANDSHAKE_NAMES.get(body[0], f"handshake-{body[0]}")
            if body[0] == 1:
                # 12-byte handshake header, version (2), random (32), session id, cookie
                sid_len = body[12 + 34]
                cookie_len = body[12 + 35 + sid_len]
                name += "+cookie" if cookie_len else ""
            names.append(name)
        else:
            names.append(f"type-{rec.content_type}")
    return tuple(names)


CH = ("ClientHello",)
CH_COOKIE = ("ClientHello+cookie",)
HVR = ("HelloVerifyRequest",)
SERVER_FLIGHT = ("ServerHello", "ServerKeyExchange", "ServerHelloDone")
CLIENT_FLIGHT = ("ClientKeyExchange", "ChangeCipherSpec", "Finished")
SERVER_FINISHED = ("ChangeCipherSpec", "Finished")


# -- fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module", params=["native", "openssl"])
def client_ctx(request):
    return dtls_contexts.client_context(native=request.param == "native")


@pytest.fixture(scope="module", params=["native-server", "openssl-server"])
def server_native(request):
    return request.param == "native-server"


@pytest.fixture(scope="module")
def server_ctx(server_native):
    return dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), hint=HINT, native=server_native)


def client_engine(ctx, identity=IDENTITY, key=KEY, *, mtu=dtls.DEFAULT_MTU):
    return dtls_factory.client_engine(ctx, lambda hint: (identity, key), mtu=mtu)


def handshake(client_ctx, server_ctx, **wire_args) -> Wire:
    wire = Wire(server_ctx, client_engine(client_ctx), peer=PEER, **wire_args)
    wire.handshake()
    return wire


def flights(wire: Wire, direction: str) -> list[tuple[str, ...]]:
    return [describe(d) for d in wire.datagrams(direction)]


def error_codes(wire: Wire) -> tuple[str, str]:
    client_failed, server_failed = wire.failures()
    assert len(client_failed) == 1, wire.client_events
    assert len(server_failed) == 1, wire.server_events
    return client_failed[0].error.code, server_failed[0].error.code


# -- a clean handshake --------------------------------------------------------


def test_handshake_completes_with_psk_aead_suite(client_ctx, server_ctx):
    wire = handshake(client_ctx, server_ctx)

    c, s = wire.completed()
    assert s.psk_identity == IDENTITY
    assert wire.server.peer_identity == IDENTITY
    assert c.psk_identity is None  # the client knows its identity; the event is for servers
    for event in (c, s):
        assert event.version == "DTLSv1.2"
        assert event.cipher.startswith("PSK-")
        assert any(aead in event.cipher for aead in ("GCM", "CCM", "CHACHA20"))
        assert event.retransmits == 0
    assert c.cipher == s.cipher
    assert not wire.failures()[0] and not wire.failures()[1]
    # The textbook exchange, one datagram per flight, nothing retransmitted.
    assert flights(wire, C2S) == [CH, CH_COOKIE, CLIENT_FLIGHT]
    assert flights(wire, S2C) == [HVR, SERVER_FLIGHT, SERVER_FINISHED]
    assert wire.timer_sleeps == 0
    # Handshake over: no retransmission timer left running on either side.
    assert wire.client.get_timer() is None
    assert wire.server.get_timer() is None


@pytest.mark.parametrize("native", [True, False], ids=["native", "openssl"])
@pytest.mark.parametrize("cipher", dtls_contexts.DEFAULT_PSK_CIPHERS.split(":"))
def test_every_default_suite_negotiates(server_ctx, cipher, native):
    wire = Wire(server_ctx, client_engine(dtls_contexts.client_context(cipher, native=native)), peer=PEER)
    wire.handshake()
    c, s = wire.completed()
    assert c.cipher == s.cipher == cipher


def test_application_data_both_ways(client_ctx, server_ctx):
    wire = handshake(client_ctx, server_ctx)
    client, server = wire.client, wire.server

    client.send(b"ping 1")
    client.send(b"ping 2")
    for d in client.datagrams_to_send():
        server.receive_datagram(d, wire.now())
    assert list(iter(server.next_event, None)) == [DataReceived(b"ping 1"), DataReceived(b"ping 2")]

    server.send(b"pong")
    (reply,) = server.datagrams_to_send()
    assert b"pong" not in reply  # encrypted on the wire
    client.receive_datagram(reply, wire.now())
    assert list(iter(client.next_event, None)) == [DataReceived(b"pong")]


@pytest.mark.parametrize("closer", ["client", "server"])
def test_close_notify_gives_peer_closed(client_ctx, server_ctx, closer):
    wire = handshake(client_ctx, server_ctx)
    closing, other = (wire.client, wire.server) if closer == "client" else (wire.server, wire.client)

    closing.close()
    datagrams = closing.datagrams_to_send()
    assert [describe(d) for d in datagrams] == [("Alert(epoch=1)",)]
    for d in datagrams:
        other.receive_datagram(d, wire.now())

    assert list(iter(other.next_event, None)) == [ConnectionClosed()]
    assert other.closed and closing.closed
    with pytest.raises(LocalProtocolError):
        closing.send(b"too late")
    with pytest.raises(LocalProtocolError):
        other.send(b"too late")


def test_send_before_handshake_is_refused(client_ctx):
    client = client_engine(client_ctx)
    client.start(NOW)
    with pytest.raises(LocalProtocolError):
        client.send(b"early")


# -- loss and retransmission --------------------------------------------------

# Each case drops one flight exactly once. Expected datagrams per direction, then
# the retransmission counters of the client and of the server engine.
LOSS_CASES = [
    pytest.param(
        (C2S, 1),
        [CH, CH_COOKIE, CH_COOKIE, CLIENT_FLIGHT],
        [HVR, SERVER_FLIGHT, SERVER_FINISHED],
        1,
        0,  # the server kept no state for the lost ClientHello: nothing to retransmit
        id="client-hello-with-cookie",
    ),
    pytest.param(
        (S2C, 1),
        # Both timers expire: the client repeats its ClientHello (the server engine
        # ignores the duplicate) and the server repeats its flight.
        [CH, CH_COOKIE, CH_COOKIE, CLIENT_FLIGHT],
        [HVR, SERVER_FLIGHT, SERVER_FLIGHT, SERVER_FINISHED],
        1,
        1,
        id="server-hello-flight",
    ),
    pytest.param(
        (C2S, 2),
        # The server had no answer to its flight either and repeats it.
        [CH, CH_COOKIE, CLIENT_FLIGHT, CLIENT_FLIGHT],
        [HVR, SERVER_FLIGHT, SERVER_FLIGHT, SERVER_FINISHED],
        1,
        1,
        id="client-finished-flight",
    ),
    pytest.param(
        (S2C, 2),
        # The server's handshake is over: it re-sends CCS+Finished when the client's
        # timer-driven retransmission arrives (RFC 6347 4.2.4), not on a timer.
        [CH, CH_COOKIE, CLIENT_FLIGHT, CLIENT_FLIGHT],
        [HVR, SERVER_FLIGHT, SERVER_FINISHED, SERVER_FINISHED],
        1,
        1,
        id="server-finished-flight",
    ),
]


@pytest.mark.parametrize(("drop", "expect_c2s", "expect_s2c", "client_rtx", "server_rtx"), LOSS_CASES)
def test_handshake_survives_one_lost_flight(
    client_ctx, server_ctx, drop, expect_c2s, expect_s2c, client_rtx, server_rtx
):
    wire = handshake(client_ctx, server_ctx, drop={drop})

    c, s = wire.completed()
    assert s.psk_identity == IDENTITY
    direction, index = drop
    assert [x.dropped for x in wire.log].count(True) == 1
    assert flights(wire, C2S) == expect_c2s, wire.describe()
    assert flights(wire, S2C) == expect_s2c, wire.describe()
    assert wire.count(C2S) == len(expect_c2s) and wire.count(S2C) == len(expect_s2c)
    assert wire.client.retransmits == client_rtx
    assert wire.server.retransmits == server_rtx
    assert c.retransmits == client_rtx  # what the load report sees
    # Recovered after one timer period (no exponential back-off needed).
    assert wire.timer_sleeps == 1
    assert wire.client.get_timer() is None and wire.server.get_timer() is None


def test_small_mtu_fragment_loss_is_not_mistaken_for_a_wrong_key(client_ctx, server_native):
    # Long identity and MTU 300: the client's last flight spans two datagrams.
    identity = b"i" * 200
    server_ctx = dtls_contexts.server_context(KeyStore(table={identity: KEY}), native=server_native)
    client = client_engine(client_ctx, identity, mtu=300)
    wire = Wire(server_ctx, client, peer=PEER, server_mtu=300, drop={(C2S, 3)})
    wire.handshake()

    first, second = wire.datagrams(C2S)[2:4]
    assert "ClientKeyExchange" in describe(first) and describe(second) == ("Finished",)  # 2nd lost
    c, s = wire.completed()
    assert s.psk_identity == identity
    assert wire.client.retransmits == 1
    assert not any(wire.failures())


# -- PSK failures -------------------------------------------------------------


def test_unknown_identity_fails_on_both_sides(client_ctx, server_ctx):
    wire = Wire(server_ctx, client_engine(client_ctx, b"nobody"), peer=PEER)
    wire.handshake()

    assert error_codes(wire) == ("psk-unknown-identity", "psk-unknown-identity")
    assert wire.server.peer_identity == b"nobody"  # the server can log who it was
    assert not wire.only(wire.client_events, HandshakeCompleted)
    assert not wire.only(wire.server_events, HandshakeCompleted)
    assert wire.timer_sleeps == 0  # an alert, not a timeout
    assert isinstance(wire.client.error, LoadgenError) and wire.client.closed


def test_wrong_key_fails_on_both_sides_with_key_mismatch(client_ctx, server_ctx):
    wire = Wire(server_ctx, client_engine(client_ctx, IDENTITY, Secret(b"\x42" * 16)), peer=PEER)
    wire.handshake()

    assert error_codes(wire) == ("psk-key-mismatch", "psk-key-mismatch")
    # Two undecryptable Finished flights, then a plaintext (epoch 0) decrypt_error
    # alert the client can read without the shared keys.
    assert flights(wire, C2S)[2:] == [CLIENT_FLIGHT, CLIENT_FLIGHT]
    alert = wire.datagrams(S2C)[-1]
    assert describe(alert) == ("Alert(epoch=0)",)
    assert alert[-2:] == bytes((records.ALERT_FATAL, records.DECRYPT_ERROR))
    assert not wire.only(wire.client_events, HandshakeCompleted)
    assert not wire.only(wire.server_events, HandshakeCompleted)


def test_failure_codes_are_distinct(client_ctx, server_ctx):
    unknown = Wire(server_ctx, client_engine(client_ctx, b"nobody"), peer=PEER)
    unknown.handshake()
    client_started = client_engine(client_ctx)
    client_started.start(NOW)  # nobody answers
    timeout_code = client_started.timeout_error().code

    assert timeout_code == HandshakeTimeout.code == "handshake-timeout"
    unknown_code = error_codes(unknown)[0]
    assert len({unknown_code, "psk-key-mismatch", timeout_code}) == 3


def _finished_flights_lost(server_native: bool, *, server_repeats: bool) -> LoadgenError:
    """A native client whose every Finished flight is lost on the way (time jumped by hand,
    no sleeps), after the first flights were answered at once; with ``server_repeats`` the
    server's flight comes again after each of them, as OpenSSL and libcoap repeat theirs
    while they wait for a Finished they cannot read. Returns the client's timeout error."""
    context = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), hint=HINT, native=server_native)
    wire = Wire(context, client_engine(dtls_contexts.client_context(native=True)), peer=PEER,
                drop={(C2S, i) for i in range(2, 64)})
    wire.client.start(wire.now())
    wire.pump()
    server_flight = wire.datagrams(S2C)[1:]
    assert [describe(d) for d in server_flight] == [SERVER_FLIGHT], flights(wire, S2C)
    while wire.count(C2S) < 2 + 6:  # six Finished flights, all lost
        due = wire.client.get_timer()
        assert due is not None and not wire.client.closed
        wire.skipped += max(due - wire.now(), 0.0) + 0.002
        wire.client.handle_timer(wire.now())
        wire.pump()
        if server_repeats:
            for datagram in server_flight:
                wire.client.receive_datagram(datagram, wire.now())
            wire.pump()
    assert flights(wire, C2S)[2:] == [CLIENT_FLIGHT] * (wire.count(C2S) - 2)
    return wire.client.timeout_error()


@pytest.mark.parametrize("server_native", [True, False], ids=["native-server", "openssl-server"])
def test_a_server_silent_after_our_finished_is_a_timeout_not_a_wrong_key(server_native):
    # Through 20% loss each way the reference server gave a handshake up on its own 10 s
    # timeout while the client still retransmitted its Finished (60 s): silence from then on.
    # That once came out as psk-key-mismatch (tests/test_loss.py): the key was right.
    error = _finished_flights_lost(server_native, server_repeats=False)
    assert error.code == "handshake-timeout", error
    assert "silent after our Finished" in str(error)


@pytest.mark.parametrize("server_native", [True, False], ids=["native-server", "openssl-server"])
def test_a_server_repeating_its_flight_after_our_finished_is_a_wrong_key(server_native):
    # Alive and still waiting for a Finished it cannot read: what OpenSSL and libcoap do
    # with a wrong key (tests/test_interop_openssl.py and test_coap_libcoap.py see it live).
    error = _finished_flights_lost(server_native, server_repeats=True)
    assert error.code == "psk-key-mismatch", error


def test_server_identity_hint_reaches_the_chooser(client_ctx, server_ctx):
    seen = []

    def choose(hint):
        seen.append(hint)
        return IDENTITY, KEY

    wire = Wire(server_ctx, dtls_factory.client_engine(client_ctx, choose), peer=PEER)
    wire.handshake()
    assert seen == [HINT]
    wire.completed()


def test_no_hint_means_chooser_gets_none(client_ctx, server_native):
    server_ctx = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), native=server_native)
    seen = []

    def choose(hint):
        seen.append(hint)
        return IDENTITY, KEY

    wire = Wire(server_ctx, dtls_factory.client_engine(client_ctx, choose), peer=PEER)
    wire.handshake()
    assert seen == [None]
    wire.completed()


def test_raising_chooser_fails_the_handshake_cleanly(client_ctx, server_ctx):
    def choose(hint):
        raise KeyError("no key for this device")

    wire = Wire(server_ctx, dtls_factory.client_engine(client_ctx, choose), peer=PEER)
    wire.handshake()  # no exception escapes the engine or OpenSSL's callback

    (client_failed,), (server_failed,) = wire.failures()
    assert isinstance(client_failed, ConnectionFailed)
    assert "(local)" in str(client_failed.error)  # our side gave up, not a peer alert
    assert server_failed.error.code == "tls-handshake-failure"
    assert wire.client.closed and wire.server.closed
    assert not wire.only(wire.client_events, HandshakeCompleted)
    assert not wire.only(wire.server_events, HandshakeCompleted)


# -- cookies and accept() -----------------------------------------------------


def first_client_hello(client_ctx) -> tuple[dtls.DtlsEngine, bytes]:
    client = client_engine(client_ctx)
    client.start(NOW)
    (hello,) = client.datagrams_to_send()
    return client, hello


def test_cookieless_client_hello_gets_small_hello_verify_request(client_ctx, server_ctx):
    _, hello = first_client_hello(client_ctx)
    assert describe(hello) == CH

    engine, replies = dtls_factory.accept(server_ctx, hello, PEER, NOW)
    assert engine is None
    (hvr,) = replies
    assert describe(hvr) == HVR
    assert len(hvr) <= len(hello)  # no amplification
    # Stateless: the same hello gets the same answer.
    assert dtls_factory.accept(server_ctx, hello, PEER, NOW) == (None, [hvr])


def test_cookie_is_bound_to_the_peer_address(client_ctx, server_ctx):
    client, hello = first_client_hello(client_ctx)
    (hvr,) = dtls_factory.accept(server_ctx, hello, b"198.51.100.7:5683", NOW)[1]
    client.receive_datagram(hvr, NOW)
    (hello_with_cookie,) = client.datagrams_to_send()
    assert describe(hello_with_cookie) == CH_COOKIE

    engine, replies = dtls_factory.accept(server_ctx, hello_with_cookie, b"198.51.100.8:5683", NOW)
    assert engine is None
    assert all(describe(r) == HVR for r in replies)  # asked to prove the new address
    # Positive control: from the address the cookie was made for, it is accepted.
    engine, replies = dtls_factory.accept(server_ctx, hello_with_cookie, b"198.51.100.7:5683", NOW)
    assert engine is not None
    assert [describe(r) for r in replies] == [SERVER_FLIGHT]


def _not_a_client_hello(hello: bytes) -> dict[str, bytes]:
    return {
        "empty": b"",
        "one byte": b"\x16",
        "record header only": hello[: records.HEADER_LEN],
        "header and type byte": hello[: records.HEADER_LEN + 1],
        "truncated to 20": hello[:20],
        "truncated to 60": hello[:60],
        "missing last byte": hello[:-1],
        "record length too long": hello[:11] + b"\xff\xff" + hello[13:],
        "application data": bytes([records.APPLICATION_DATA]) + hello[1:],
        "alert": records.plaintext_alert(records.DECRYPT_ERROR, 0),
        "epoch 1": hello[:3] + b"\x00\x01" + hello[5:],
        "TLS record version": hello[:1] + b"\x03\x03" + hello[3:],
        "zeros": bytes(200),
        "random": random.Random(7).randbytes(300),
    }


def test_garbage_gets_no_answer_and_no_state(client_ctx, server_ctx):
    _, hello = first_client_hello(client_ctx)
    for name, datagram in _not_a_client_hello(hello).items():
        assert dtls_factory.accept(server_ctx, datagram, PEER, NOW) == (None, []), name
    # The hello these were cut from is answered (the cases above are not refused by accident).
    assert dtls_factory.accept(server_ctx, hello, PEER, NOW)[1]


def test_corrupted_client_hellos_never_create_state(client_ctx, server_ctx):
    _, hello = first_client_hello(client_ctx)
    rng = random.Random(1234)
    for _ in range(300):
        corrupted = bytearray(hello)
        for _ in range(rng.randint(1, 4)):
            corrupted[rng.randrange(len(corrupted))] = rng.randrange(256)
        engine, replies = dtls_factory.accept(server_ctx, bytes(corrupted), PEER, NOW)
        assert engine is None, corrupted.hex()
        for reply in replies:
            assert len(reply) <= len(corrupted)
            assert describe(reply) == HVR


def test_cookie_jar_rotation():
    now = [1000.0]
    jar = CookieJar(rotate_every=60)
    cookie = jar.make(PEER, now[0])

    assert jar.check(PEER, cookie, now[0])
    assert not jar.check(b"192.0.2.2:40000", cookie, now[0])
    now[0] += 60  # first rotation: the previous secret is still accepted
    assert jar.make(PEER, now[0]) != cookie
    assert jar.check(PEER, cookie, now[0])
    now[0] += 60  # second rotation: too old
    assert not jar.check(PEER, cookie, now[0])
    assert jar.check(PEER, jar.make(PEER, now[0]), now[0])


def test_cookie_jar_idle_for_two_periods_expires_old_cookies():
    now = [0.0]
    jar = CookieJar(rotate_every=60)
    cookie = jar.make(PEER, now[0])
    now[0] += 130  # two rotation periods with no traffic in between
    assert not jar.check(PEER, cookie, now[0])


def test_rotated_server_context_still_completes_handshake(client_ctx, server_native):
    # A rotation between HelloVerifyRequest and the second ClientHello must not fail it.
    now = [0.0]
    jar = CookieJar(rotate_every=60)
    server_ctx = dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), cookies=jar, native=server_native)
    client, hello = first_client_hello(client_ctx)
    (hvr,) = dtls_factory.accept(server_ctx, hello, PEER, now[0])[1]
    now[0] += 61
    client.receive_datagram(hvr, NOW)
    (hello_with_cookie,) = client.datagrams_to_send()
    engine, _ = dtls_factory.accept(server_ctx, hello_with_cookie, PEER, now[0])
    assert engine is not None


# -- MTU ----------------------------------------------------------------------


@pytest.mark.parametrize(("mtu", "hint_len", "identity_len", "client_flights_split"),
                         [(300, 200, 200, True), (dtls_contexts.MIN_MTU, 256, 128, False)], ids=["mtu300", "mtu256"])
def test_small_mtu_bounds_every_datagram(client_ctx, server_native, mtu, hint_len, identity_len,
                                         client_flights_split):
    # At 256 bytes the longest hint (256) does not fit one record: it goes in fragments.
    # (128 bytes is OpenSSL's longest client identity.)
    identity = b"m" * identity_len
    server_ctx = dtls_contexts.server_context(KeyStore(table={identity: KEY}), hint=b"h" * hint_len,
                                              native=server_native)
    wire = Wire(server_ctx, client_engine(client_ctx, identity, mtu=mtu), peer=PEER, server_mtu=mtu)
    wire.handshake()

    _, s = wire.completed()
    assert s.psk_identity == identity
    sizes = [len(x.datagram) for x in wire.log]
    assert max(sizes) <= mtu, sizes
    # The MTU really constrained the flights: they needed more than one datagram.
    assert wire.count(S2C) > 3
    assert (wire.count(C2S) > 3) == client_flights_split

    client, server = wire.client, wire.server
    assert 0 < client.cleartext_mtu < mtu
    client.send(b"x" * client.cleartext_mtu)  # the largest payload that fits
    (datagram,) = client.datagrams_to_send()
    assert len(datagram) <= mtu
    server.receive_datagram(datagram, wire.now())
    assert server.next_event() == DataReceived(b"x" * client.cleartext_mtu)

    with pytest.raises(LocalProtocolError):
        client.send(b"x" * (client.cleartext_mtu + 1))
    assert client.datagrams_to_send() == []  # nothing half-sent
    assert not client.closed  # and the association is still usable
    client.send(b"ok")
    assert client.datagrams_to_send()


def test_send_larger_than_cleartext_mtu_raises_at_default_mtu(client_ctx, server_ctx):
    wire = handshake(client_ctx, server_ctx)
    with pytest.raises(LocalProtocolError):
        wire.client.send(b"y" * (wire.client.cleartext_mtu + 1))
    with pytest.raises(LocalProtocolError):
        wire.server.send(b"y" * 20000)


def test_mtu_below_dtls_minimum_is_refused_up_front(client_ctx, server_ctx):
    with pytest.raises(LocalProtocolError):
        client_engine(client_ctx, mtu=dtls_contexts.MIN_MTU - 1)
    _, hello = first_client_hello(client_ctx)
    with pytest.raises(LocalProtocolError):
        dtls_factory.accept(server_ctx, hello, PEER, NOW, mtu=200)
    # The minimum itself works.
    wire = Wire(server_ctx, client_engine(client_ctx, mtu=dtls_contexts.MIN_MTU), peer=PEER,
                server_mtu=dtls_contexts.MIN_MTU)
    wire.handshake()
    wire.completed()
    assert max(len(x.datagram) for x in wire.log) <= dtls_contexts.MIN_MTU


def test_established_engines_ignore_empty_and_truncated_datagrams(client_ctx, server_ctx):
    wire = handshake(client_ctx, server_ctx)
    for engine in (wire.client, wire.server):
        for junk in (b"", b"\x17", b"\x16\xfe\xfd\x00\x00"):
            engine.receive_datagram(junk, wire.now())  # UDP allows a zero-length datagram: nothing to do
        assert engine.next_event() is None and engine.datagrams_to_send() == [] and not engine.closed
    wire.client.send(b"still fine")
    (datagram,) = wire.client.datagrams_to_send()
    wire.server.receive_datagram(datagram, wire.now())
    assert wire.server.next_event() == DataReceived(b"still fine")
