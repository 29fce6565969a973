"""Hostile peers against the engines, in memory (issue 11: "Bounds in the engines" and
the engine half of "Clients against hostile servers").

No sockets: a hostile peer here is a test that does the real cookie exchange (or a
whole real handshake) and then sends what it likes: ClientHellos with chosen message
and record numbers, fragments, and records sealed with the association's real keys
(``engine._records`` of the established peer) at chosen sequence numbers. Each test
asserts what a server operator or a load-test user cares about: no exception escapes
an engine, the association fails with a stable code (or the datagram is dropped), and
CPU and memory per hostile peer stay bounded.
"""

from __future__ import annotations

import os
import random
import time
import tracemalloc

import pytest
from OpenSSL import SSL

from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import LoadgenError, error_from_openssl
from loadgen.protocol.events import ConnectionFailed, DataReceived
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
from loadgen.protocol.openssl.connection import openssl_reason

pytestmark = pytest.mark.timeout(60)

KEY = Secret(bytes.fromhex("00112233445566778899aabbccddeeff"))
IDENTITY = b"device-0001"
HINT = b"hint"
PEER = b"192.0.2.7:40000"
MAX_RECORD_SEQ = (1 << 48) - 1
#: The time engines get unless a test moves a clock: the engines only compare times they were given.
NOW = 1000.0


def server_ctx(*, native: bool = True, hint: bytes | None = HINT) -> dtls_contexts.ServerContext:
    return dtls_contexts.server_context(KeyStore(table={IDENTITY: KEY}), hint=hint, native=native)


def client(*, native: bool = True, key: Secret = KEY) -> dtls_factory.ClientEngine:
    return dtls_factory.client_engine(dtls_contexts.client_context(native=native), lambda hint: (IDENTITY, key))


def events(engine) -> list:
    return list(iter(engine.next_event, None))


def cookie_hello(ctx: dtls_contexts.ServerContext, peer: bytes = PEER) -> bytes:
    """A real ClientHello that carries a valid cookie for ``peer`` (the cookie exchange done)."""
    c = client()
    c.start(NOW)
    (hello,) = c.datagrams_to_send()
    engine, (hvr,) = dtls_factory.accept(ctx, hello, peer, NOW)
    assert engine is None
    c.receive_datagram(hvr, NOW)
    (hello,) = c.datagrams_to_send()
    return hello


def renumbered(hello: bytes, *, record_seq: int | None = None, message_seq: int | None = None) -> bytes:
    """``hello`` with its record sequence number and/or handshake message_seq rewritten."""
    data = bytearray(hello)
    if record_seq is not None:
        data[5:11] = record_seq.to_bytes(6, "big")
    if message_seq is not None:
        data[records.HEADER_LEN + 4 : records.HEADER_LEN + 6] = message_seq.to_bytes(2, "big")
    return bytes(data)


def hs_record(payload: bytes, seq: int = 0, *, epoch: int = 0, content_type: int = records.HANDSHAKE) -> bytes:
    """One plaintext record (its header says ``epoch``) around ``payload``."""
    return records.HEADER.pack(content_type, records.DTLS_1_2, epoch, seq >> 16, seq & 0xFFFF, len(payload)) + payload


def fragment(msg_type: int, length: int, seq: int, offset: int, data: bytes) -> bytes:
    """One handshake fragment (RFC 6347 4.2.2)."""
    return (bytes((msg_type,)) + length.to_bytes(3, "big") + seq.to_bytes(2, "big") + offset.to_bytes(3, "big")
            + len(data).to_bytes(3, "big") + data)


def pump(c, ctx, *, peer: bytes = PEER, server=None, hook=None, c2s=None, s2c=None, now: float = NOW):
    """Move datagrams between client ``c`` and the server side until both are quiet.

    ``dtls_factory.accept`` plays the server until it returns an engine (then ``hook(engine)``);
    ``c2s``/``s2c`` may rewrite or drop (return None) each datagram on its way.
    """
    while True:
        moved = False
        for d in c.datagrams_to_send():
            moved = True
            if c2s is not None and (d := c2s(d)) is None:
                continue
            if server is None:
                server, replies = dtls_factory.accept(ctx, d, peer, now)
                if server is not None and hook is not None:
                    hook(server)
                for r in replies:
                    if s2c is None or (r := s2c(r)) is not None:
                        c.receive_datagram(r, now)
            else:
                server.receive_datagram(d, now)
        if server is not None:
            for d in server.datagrams_to_send():
                moved = True
                if s2c is not None and (d := s2c(d)) is None:
                    continue
                c.receive_datagram(d, now)
        if not moved:
            return server


def established(*, client_native: bool = True, server_native: bool = True):
    """A real client and server engine after a complete handshake, their events drained."""
    c = client(native=client_native)
    c.start(NOW)
    s = pump(c, server_ctx(native=server_native))
    assert c.handshake_done and s is not None and s.handshake_done
    events(c), events(s)
    return c, s


def codes(engine) -> list[str]:
    return [e.error.code for e in events(engine) if isinstance(e, ConnectionFailed)]


class Clock:
    """The time a test gives the engines (``now``), moved by hand."""

    def __init__(self) -> None:
        self.now = NOW


@pytest.fixture
def clock() -> Clock:
    return Clock()


# -- finding 1 and 4: message_seq near 65535 -------------------------------------


@pytest.mark.parametrize("message_seq", [65533, 65534, 65535])
def test_client_hello_whose_numbering_would_pass_65535_is_dropped(message_seq):
    # With a hint the server numbers ServerHello, ServerKeyExchange, ServerHelloDone and
    # its Finished after the ClientHello's message_seq: the last must fit 16 bits.
    ctx = server_ctx()
    hello = renumbered(cookie_hello(ctx), message_seq=message_seq)
    assert psk_server.accept(ctx.native, hello, PEER, NOW) == (None, [])


class FarClient(psk_client.PskClientEngine):
    """A native client whose cookie ClientHello (so all its numbering) starts at ``first``."""

    first = 65532

    def _send_hello(self) -> None:
        super()._send_hello()
        if self._cookie:
            self._hello_seq = self.first
            self._hello = handshake_messages.handshake_message(handshake_messages.CLIENT_HELLO, self.first,
                                                               self._hello[handshake_messages.HS_HEADER_LEN :])
            self._outgoing.clear()
            self._new_flight([(records.HANDSHAKE, 0, self._hello)])


def test_the_highest_numbering_that_fits_completes():
    # 65532: the server's Finished is message 65535, the last one there is.
    c = FarClient(psk_client.native_suites(dtls_contexts.DEFAULT_PSK_CIPHERS), lambda hint: (IDENTITY, KEY))
    c.start(NOW)
    s = pump(c, server_ctx())
    assert c.handshake_done and s is not None and s.handshake_done


@pytest.mark.parametrize("native", [True, False], ids=["native-client", "openssl-client"])
@pytest.mark.parametrize("server_hello_seq", [65534, 65535])
def test_server_hello_numbered_too_high_fails_the_client(native, server_hello_seq):
    c = client(native=native)
    c.start(NOW)
    ctx = server_ctx()

    def renumber_server_hello(datagram: bytes) -> bytes | None:
        if datagram[records.HEADER_LEN] != handshake_messages.SERVER_HELLO:
            return datagram
        raw = records.split(datagram)[0][2]  # the ServerHello alone: what follows could not be numbered
        return raw[: records.HEADER_LEN + 4] + server_hello_seq.to_bytes(2, "big") + raw[records.HEADER_LEN + 6 :]

    pump(c, ctx, s2c=renumber_server_hello)
    if native:
        assert c.closed and c.error is not None and c.error.code == "protocol-violation"
    else:  # OpenSSL keeps waiting for the rest of the flight: no exception, no state beyond its own
        assert not c.handshake_done


def test_a_handshake_numbered_one_higher_is_dropped_not_crashed():
    # Finding 4: at 65533 the server's Finished would be message 65536 (OverflowError at the
    # client's Finished, in the server's receive loop). Now the ClientHello is dropped.
    far = FarClient(psk_client.native_suites(dtls_contexts.DEFAULT_PSK_CIPHERS), lambda hint: (IDENTITY, KEY))
    far.first = 65533
    far.start(NOW)
    assert pump(far, server_ctx()) is None
    assert not far.handshake_done and not far.closed  # the client just times out

# -- finding 2: record sequence numbers near 2^48 --------------------------------


@pytest.mark.parametrize("record_seq", [MAX_RECORD_SEQ, MAX_RECORD_SEQ - 3])
def test_client_hello_near_the_record_number_limit_is_dropped(clock, record_seq):
    ctx = server_ctx()
    hello = renumbered(cookie_hello(ctx), record_seq=record_seq)
    engine, replies = psk_server.accept(ctx.native, hello, PEER, clock.now)
    if engine is not None:  # whatever the server does with it, a retransmission must not raise
        clock.now += 10
        engine.handle_timer(clock.now)
    assert (engine, replies) == (None, [])


def test_retransmission_out_of_record_numbers_fails_the_association(clock):
    ctx = server_ctx()
    engine, replies = psk_server.accept(ctx.native, cookie_hello(ctx), PEER, clock.now)
    assert engine is not None and replies
    engine._epoch0_seq = MAX_RECORD_SEQ - 1  # the next flight (3 records) cannot be numbered
    clock.now += 10
    engine.handle_timer(clock.now)
    assert engine.closed and [e.error.code for e in events(engine)] == ["protocol-violation"]
    for datagram in engine.datagrams_to_send():  # whatever went out is well formed
        assert all(rec.sequence <= MAX_RECORD_SEQ for rec in records.records(datagram))
    assert engine.get_timer() is None


def test_plaintext_alert_past_the_record_number_limit_is_not_built():
    assert records.plaintext_alert(40, MAX_RECORD_SEQ)[5:11] == MAX_RECORD_SEQ.to_bytes(6, "big")
    assert records.plaintext_alert(40, MAX_RECORD_SEQ + 1) == b""


def test_openssl_server_wrong_key_verdict_at_the_record_number_limit(clock):
    c = client(key=Secret(b"\x01" * 16))

    def near_the_limit(server) -> None:
        server._last_epoch0_seq = MAX_RECORD_SEQ  # its plaintext alert would be 2^48

    c.start(clock.now)
    s = pump(c, server_ctx(native=False), hook=near_the_limit, now=clock.now)
    for _ in range(3):  # the client repeats its Finished; the second bad one is the verdict
        clock.now += 10
        c.handle_timer(clock.now)
        pump(c, None, server=s, now=clock.now)
    assert s.closed and codes(s) == ["psk-key-mismatch"]


def test_write_sequence_exhausted_is_a_loadgen_error():
    c, s = established()
    c._records._write_seq = MAX_RECORD_SEQ
    c.send(b"last")
    for d in c.datagrams_to_send():
        s.receive_datagram(d, NOW)
    assert events(s) == [DataReceived(b"last")]
    with pytest.raises(LoadgenError):
        c.send(b"one too many")
    c.close()  # no close_notify can be numbered: none is sent, nothing raises
    assert c.closed

# -- finding 3: the replay window is O(1) for any jump ---------------------------


def _deliver_at(sender, receiver, seq: int, data: bytes) -> list:
    sender._records._write_seq = seq
    sender.send(data)
    (datagram,) = sender.datagrams_to_send()
    receiver.receive_datagram(datagram, NOW)
    return events(receiver)


@pytest.mark.parametrize(("client_native", "server_native"), [(True, True), (False, False)],
                         ids=["native", "openssl"])
def test_huge_sequence_jumps_allocate_nothing(client_native, server_native):
    """Before: a jump of J allocated a J-bit integer (2^33: 2.2 GB and seconds; 2^47: MemoryError).

    Measured as memory, not time: allocation is exact whatever else the machine does."""
    c, s = established(client_native=client_native, server_native=server_native)
    for receiver, sender in ((s, c), (c, s)):  # against the server, and against a client
        for i in range(20):
            assert _deliver_at(sender, receiver, 10 + i, b"near") == [DataReceived(b"near")]
        for seq in (1 << 33, 1 << 47, (1 << 47) + (1 << 46), MAX_RECORD_SEQ - 1000, MAX_RECORD_SEQ):
            tracemalloc.start()
            try:
                assert _deliver_at(sender, receiver, seq, b"far") == [DataReceived(b"far")]
                peak = tracemalloc.get_traced_memory()[1]
            finally:
                tracemalloc.stop()
            assert peak < 16 * 1024, (seq, peak)
            assert receiver._records._read_window.bit_length() <= 64


def test_window_after_a_jump_keeps_exact_semantics():
    c, s = established()
    top = 1 << 40
    assert _deliver_at(c, s, top, b"top") == [DataReceived(b"top")]
    assert _deliver_at(c, s, top, b"replay") == []  # the same number again
    assert _deliver_at(c, s, top - 1, b"late") == [DataReceived(b"late")]  # inside the window, unseen
    assert _deliver_at(c, s, top - 63, b"edge") == [DataReceived(b"edge")]
    assert _deliver_at(c, s, top - 64, b"old") == []  # too old
    assert _deliver_at(c, s, top + 64, b"jump") == [DataReceived(b"jump")]  # a jump of exactly 64 resets
    assert _deliver_at(c, s, top, b"now old") == []
    assert _deliver_at(c, s, top + 1, b"unseen") == [DataReceived(b"unseen")]

# -- finding 5: reassembly cost per fragment does not grow with the message ------


def _server_after_cookie(ctx=None):
    ctx = ctx or server_ctx()
    engine, _ = psk_server.accept(ctx.native, cookie_hello(ctx), PEER, NOW)
    assert engine is not None
    return engine


def _one_byte_fragments(length: int, *, seq: int = 2, per_record: int = 16, per_datagram: int = 16) -> list[bytes]:
    """Every byte but the last of a ``length``-byte ClientKeyExchange, one fragment each, in order."""
    frags = [fragment(handshake_messages.CLIENT_KEY_EXCHANGE, length, seq, i, b"\x00") for i in range(length - 1)]
    recs = [hs_record(b"".join(frags[i : i + per_record]), 10 + i) for i in range(0, len(frags), per_record)]
    return [b"".join(recs[i : i + per_datagram]) for i in range(0, len(recs), per_datagram)]


def _cost(datagrams: list[bytes], repeat: int = 3) -> float:
    """The least time a fresh server engine (after the cookie exchange) takes for ``datagrams``."""
    best = float("inf")
    for _ in range(repeat):
        engine = _server_after_cookie()
        started = time.perf_counter()
        for d in datagrams:
            engine.receive_datagram(d, NOW)
        best = min(best, time.perf_counter() - started)
        assert not engine.closed
    return best


def test_cost_per_fragment_does_not_grow_with_the_message_length():
    small, large = 256, 4096
    per_small = _cost(_one_byte_fragments(small)) / (small - 1)
    per_large = _cost(_one_byte_fragments(large)) / (large - 1)
    assert per_large < 2.5 * per_small, (per_small, per_large)



def _small_datagrams_of_repeated_fragments(count: int, *, length: int = 4000, seq: int = 2) -> list[bytes]:
    """What the per-datagram and per-record caps still let through: datagrams of 32 records of
    8 one-byte fragments each, at random offsets of a ``length``-byte ClientKeyExchange whose
    first ``length - 1`` bytes came in the first datagram (so every later one repeats bytes
    already here, and the message never completes)."""
    rng = random.Random(11)
    head = hs_record(fragment(handshake_messages.CLIENT_KEY_EXCHANGE, length, seq, 0, b"\x00" * (length - 1)), 2)
    datagrams = []
    record_seq = 3
    for n in range(count):
        recs = [head] if n == 0 else []
        while len(recs) < handshake_messages.MAX_RECORDS_PER_DATAGRAM:
            recs.append(hs_record(b"".join(fragment(handshake_messages.CLIENT_KEY_EXCHANGE, length, seq,
                                                    rng.randrange(length - 1), b"\x00")
                                           for _ in range(handshake_messages.MAX_FRAGMENTS_PER_RECORD)), record_seq))
            record_seq += 1
        datagrams.append(b"".join(recs))
    return datagrams


def test_a_megabyte_of_repeated_tiny_fragments_costs_the_engine_well_under_a_tenth_of_a_second():
    # Issue 11's target: 1 MB/s of hostile fragments costs the whole server at most 10% of a
    # core (100 ms per MB, sockets and event loop included). The engine's part was ~90 ms per MB
    # (every duplicate went through the full merge: two bisects, a copy, list splices, and
    # _advance() after every record); a duplicate now costs a lookup and two comparisons.
    # Judged against the floor measured in the same run, parsing the same records and doing nothing
    # with them (8.5 ms per MB here on a quiet day): seconds on this shared machine move by 2x with
    # its load, so a fixed 50 ms flaked. The engine takes 6-10x that floor; 20x catches a cost that
    # grows out of proportion (the old per-duplicate merge was about twice today's: bench_hostile.py
    # prints the figure in milliseconds).
    datagrams = _small_datagrams_of_repeated_fragments(270)  # ~1 MB
    megabytes = sum(map(len, datagrams)) / 1e6
    per_mb = _cost(datagrams, repeat=5) / megabytes
    floor = _parse_cost(datagrams) / megabytes
    assert per_mb < 20 * floor, (f"{per_mb * 1000:.0f} ms of engine CPU per MB of repeated 1-byte fragments, "
                                 f"{per_mb / floor:.1f}x the {floor * 1000:.1f} ms of parsing their records")


def _parse_cost(datagrams: list[bytes], repeat: int = 5) -> float:
    """The least time it takes to split ``datagrams`` into records and look at each: the floor."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for datagram in datagrams:
            for _record in records.records(datagram):
                pass
        best = min(best, time.perf_counter() - started)
    return best


def first_client_flight():
    """A server engine after the cookie exchange and the client's next flight, not yet delivered
    (ClientKeyExchange, ChangeCipherSpec, Finished)."""
    c = client()
    c.start(NOW)
    flight: list[bytes] = []

    def hold(datagram: bytes) -> bytes | None:
        if records.is_client_hello(datagram):
            return datagram
        flight.append(datagram)
        return None

    s = pump(c, server_ctx(), c2s=hold)
    (datagram,) = flight
    return s, datagram


def _normal_flight_cost() -> float:
    """What the server spends on a real ClientKeyExchange, ChangeCipherSpec, Finished datagram."""
    best = float("inf")
    for _ in range(5):
        s, datagram = first_client_flight()
        started = time.perf_counter()
        s.receive_datagram(datagram, NOW)
        best = min(best, time.perf_counter() - started)
        assert s.handshake_done
    return best


def test_a_64k_datagram_of_one_byte_fragments_costs_little():
    # 4,096 bytes: the longest message accepted (a longer one is not even parsed).
    frags = [fragment(handshake_messages.CLIENT_KEY_EXCHANGE, 4096, 2, i % 4095, b"\x00") for i in range(5000)]
    big_records = b"".join(hs_record(b"".join(frags[i : i + 1250]), i) for i in range(0, 5000, 1250))
    tiny_records = b"".join(hs_record(f, i) for i, f in enumerate(frags[:2500]))
    normal = _normal_flight_cost()
    for datagram in (big_records, tiny_records):
        assert len(datagram) <= 65507
        # Before: 0.67 s for the first kind (2,000 times a normal flight).
        assert _cost([datagram]) < 20 * normal, normal

# -- finding 6: what a hostile peer can make the server hold ---------------------


def _hostile_datagrams() -> list[bytes]:
    """The worst a peer can send after the cookie exchange: partial messages of the longest
    length accepted with holes, for many message_seqs; whole messages ahead of the next one;
    longer messages; and early epoch-1 records of every size."""
    longest = 4096  # handshake_messages.MAX_MESSAGE_LEN; 16,000 was accepted before the caps
    out = []
    for seq in range(2, 2 + 40):
        for length in (16000, longest, 60000):
            pieces = [fragment(handshake_messages.CLIENT_KEY_EXCHANGE, length, seq, offset, os.urandom(300))
                      for offset in range(0, longest - 300, 600)]
            out.append(b"".join(hs_record(p, seq * 100 + i) for i, p in enumerate(pieces)))
    for seq in range(2, 2 + 40):
        out.append(hs_record(fragment(handshake_messages.FINISHED, longest, seq, 0, os.urandom(longest)), seq))
    for i in range(20):  # epoch-1 records before any key: kept for a Finished that overtook its key exchange
        out.append(hs_record(os.urandom((1 << 14) + 2048), i, epoch=1))
        out.append(hs_record(os.urandom(60), 100 + i, epoch=1))
    return out


def test_hostile_peer_after_the_cookie_exchange_holds_bounded_memory():
    ctx = server_ctx()
    hello = cookie_hello(ctx)
    hostile = _hostile_datagrams()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        engine, replies = psk_server.accept(ctx.native, hello, PEER, NOW)
        del replies
        created = tracemalloc.get_traced_memory()[0]
        for d in hostile:
            engine.receive_datagram(d, NOW)
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert not engine.closed
    held, total = after - created, after - before
    assert held <= 32 * 1024, f"hostile input held {held} bytes"
    assert total <= 48 * 1024, f"the peer costs {total} bytes in all"


def test_hostile_server_makes_a_client_hold_bounded_memory():
    # The same worst case from the other side: before its ServerHello the client cannot know
    # the server's numbering, so every message_seq is buffered until the caps.
    hostile = _hostile_datagrams()
    c = client()
    c.start(NOW)
    (hello,) = c.datagrams_to_send()
    _, (hvr,) = dtls_factory.accept(server_ctx(), hello, PEER, NOW)
    c.receive_datagram(hvr, NOW)
    c.datagrams_to_send()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for d in hostile:
            c.receive_datagram(d, NOW)
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held <= 32 * 1024, f"hostile server input held {held} bytes"

# -- finding 8: unauthenticated warning alerts, unknown alerts, oversized records --


def _alert(level: int, description: int, seq: int = 50) -> bytes:
    return hs_record(bytes((level, description)), seq, content_type=records.ALERT)


@pytest.mark.parametrize("description", [0, 90, 200])  # close_notify, user_canceled, unknown
def test_plaintext_warning_alert_does_not_end_a_handshake(description):
    c = client()
    c.start(NOW)

    def warn_first(datagram: bytes) -> bytes:
        if records.is_client_hello(datagram):
            return datagram  # the server keeps no state before the cookie: nothing to end there
        return _alert(records.ALERT_WARNING, description) + datagram

    s = pump(c, server_ctx(), c2s=warn_first, s2c=warn_first)
    assert c.handshake_done and s.handshake_done


@pytest.mark.parametrize("native", [True, False], ids=["native", "openssl"])
def test_plaintext_fatal_alert_still_ends_a_handshake(native):
    c = client(native=native)
    c.start(NOW)
    c.datagrams_to_send()
    c.receive_datagram(_alert(records.ALERT_FATAL, 40), NOW)
    assert c.closed and codes(c) == ["tls-handshake-failure"]


def test_unknown_alert_descriptions_share_one_code():
    from loadgen.protocol.engine import alert_received

    failures = [alert_received(d) for d in (8, 200, 201, 255)]
    assert {f.error.code for f in failures} == {"tls-unknown-alert"}
    assert "200" in str(failures[1].error)  # the number goes in the message
    assert alert_received(42).error.code == "tls-bad-certificate"  # a known one keeps its name
    # And through an engine, in the handshake:
    for description in (200, 201):
        c = client()
        c.start(NOW)
        c.datagrams_to_send()
        c.receive_datagram(_alert(records.ALERT_FATAL, description), NOW)
        assert codes(c) == ["tls-unknown-alert"]


def test_record_plaintext_over_2_14_bytes_is_dropped():
    c, s = established()
    for size, delivered in ((1 << 14, True), ((1 << 14) + 1, False)):
        s.receive_datagram(c._records.seal(records.APPLICATION_DATA, b"x" * size), NOW)
        assert events(s) == ([DataReceived(b"x" * size)] if delivered else [])


def test_handshake_record_over_2_14_bytes_is_dropped():
    s, datagram = first_client_flight()
    (_, _, cke), *rest = records.split(datagram)
    payload = cke[records.HEADER_LEN :]
    oversized = hs_record(payload + bytes((1 << 14) + 1 - len(payload)), 5)
    s.receive_datagram(oversized + b"".join(raw for _, _, raw in rest), NOW)
    assert s._records is None and not s.handshake_done and not s.closed  # the key exchange was not read
    s.receive_datagram(datagram, NOW)  # the real one still is
    assert s.handshake_done


def test_records_with_an_impossible_length_are_skipped():
    good = hs_record(b"ok")
    too_long = hs_record(bytes((1 << 14) + 2049))
    assert [raw for _, _, raw in records.split(too_long + good)] == [good]
    assert [r.length for r in records.records(too_long + good)] == [2]
    longest = hs_record(bytes((1 << 14) + 2048))
    assert len(records.split(longest + good)) == 2

# -- clients against a hostile server --------------------------------------------


def _hello_verify_request(cookie: bytes, record_seq: int, message_seq: int) -> bytes:
    body = records.DTLS_1_0.to_bytes(2, "big") + bytes((len(cookie),)) + cookie
    message = handshake_messages.handshake_message(handshake_messages.HELLO_VERIFY_REQUEST, message_seq, body)
    return hs_record(message, record_seq)


@pytest.mark.parametrize("native", [True, False], ids=["native", "openssl"])
def test_a_new_cookie_for_every_hello_ends_in_hello_verify_loop(native):
    c = client(native=native)
    c.start(NOW)
    hellos = 0
    for i in range(50):
        sent = c.datagrams_to_send()
        if c.closed or not sent:
            break
        hellos += 1
        c.receive_datagram(_hello_verify_request(os.urandom(16), i, i), NOW)
    assert c.closed and codes(c) == ["hello-verify-loop"]
    assert hellos <= 1 + psk_client.MAX_HELLO_VERIFY_REQUESTS
    # The same cookie again is a repeat, not a new request: it does not count.
    c = client(native=native)
    c.start(NOW)
    c.datagrams_to_send()
    for i in range(10):
        c.receive_datagram(_hello_verify_request(b"same-cookie", i, 0), NOW)
    assert not c.closed


@pytest.mark.parametrize("native", [True, False], ids=["native", "openssl"])
def test_incomplete_server_flight_is_requested_again(clock, native):
    c = client(native=native)
    c.start(clock.now)
    ctx = server_ctx()
    held = []

    def only_the_server_hello(datagram: bytes) -> bytes:
        if datagram[records.HEADER_LEN] != handshake_messages.SERVER_HELLO:
            return datagram
        recs = [raw for _, _, raw in records.split(datagram)]
        held.extend(recs[1:])  # ServerKeyExchange, ServerHelloDone: lost
        return recs[0]

    s = pump(c, ctx, s2c=only_the_server_hello, now=clock.now)
    assert held and not c.handshake_done
    timer = c.get_timer()
    assert timer is not None  # before: no timer once the ServerHello arrived
    wait, clock.now = timer - clock.now, timer  # the engines' clock
    if not native:
        time.sleep(wait + 0.01)  # OpenSSL's own timer (1 s at first) reads OpenSSL's clock, the real one
    c.handle_timer(clock.now)
    (again,) = c.datagrams_to_send()
    assert again[records.HEADER_LEN] == handshake_messages.CLIENT_HELLO and c.retransmits == 1
    s.receive_datagram(again, clock.now)  # the server answers the repeat with its whole flight
    pump(c, ctx, server=s, now=clock.now)
    assert c.handshake_done and s.handshake_done

# -- a seeded fuzzer: real handshakes, mutated after the cookie check and inside sessions --

FUZZ_SEED = 11
_SEQ_CHOICES = (0, 1, 2, 63, 64, 65, 1 << 16, 1 << 32, MAX_RECORD_SEQ - 1, MAX_RECORD_SEQ)


def _mutate(rng: random.Random, datagram: bytes) -> bytes:
    """One hostile variant of a real datagram: its records and handshake headers rewritten."""
    recs = [bytearray(raw) for _, _, raw in records.split(datagram)] or [bytearray(datagram)]
    rec = rng.choice(recs)
    kind = rng.randrange(10)
    if kind == 0:  # bit flips anywhere
        for _ in range(rng.randrange(1, 4)):
            rec[rng.randrange(len(rec))] ^= 1 << rng.randrange(8)
    elif kind == 1 and len(rec) > records.HEADER_LEN + 12:  # a handshake header field
        start, size = rng.choice(((0, 1), (1, 3), (4, 2), (6, 3), (9, 3)))
        at = records.HEADER_LEN + start
        rec[at : at + size] = rng.choice((0, 1, rng.randrange(1 << (8 * size)), (1 << (8 * size)) - 1)).to_bytes(
            size, "big")
    elif kind == 2:  # the record's sequence number or epoch
        rec[5:11] = rng.choice(_SEQ_CHOICES).to_bytes(6, "big")
        if rng.random() < 0.3:
            rec[3:5] = rng.choice((0, 1, 2, 0xFFFF)).to_bytes(2, "big")
    elif kind == 3:  # the record's length field
        rec[11:13] = rng.choice((0, 1, len(rec), 0xFFFF, rng.randrange(1 << 16))).to_bytes(2, "big")
    elif kind == 4:  # truncated
        del rec[rng.randrange(len(rec)) :]
    elif kind == 5:  # hostile fragments appended to the record
        extra = b"".join(fragment(rng.randrange(256), rng.randrange(6000), rng.randrange(8), rng.randrange(6000),
                                  os.urandom(rng.randrange(40))) for _ in range(rng.randrange(1, 20)))
        rec += extra
        rec[11:13] = min(len(rec) - records.HEADER_LEN, 0xFFFF).to_bytes(2, "big")
    elif kind == 6:  # the payload replaced
        rec[records.HEADER_LEN :] = os.urandom(rng.randrange(0, 300))
        rec[11:13] = (len(rec) - records.HEADER_LEN).to_bytes(2, "big")
    elif kind == 7:  # records duplicated and reordered
        recs += [bytearray(r) for r in rng.choices(recs, k=rng.randrange(1, 4))]
        rng.shuffle(recs)
    elif kind == 8:  # a plaintext alert of any level and description
        recs.insert(rng.randrange(len(recs) + 1), bytearray(hs_record(bytes((rng.randrange(256), rng.randrange(256))),
                                                                      rng.choice(_SEQ_CHOICES),
                                                                      content_type=records.ALERT)))
    else:  # many tiny records
        recs += [bytearray(hs_record(os.urandom(rng.randrange(3)), i)) for i in range(rng.randrange(50, 500))]
    return b"".join(bytes(r) for r in recs)


def _fuzz_handshake(rng: random.Random, clock: Clock, *, client_native: bool, server_native: bool) -> None:
    """One real handshake whose datagrams after the cookie exchange are mutated at random."""
    c = client(native=client_native)
    c.start(clock.now)
    ctx = server_ctx(native=server_native)
    mutate_rate = rng.choice((0.2, 0.5, 1.0))

    def hostile(datagram: bytes) -> bytes | None:
        if records.starts_plaintext_handshake(datagram) and datagram[records.HEADER_LEN] in (
                handshake_messages.CLIENT_HELLO, handshake_messages.HELLO_VERIFY_REQUEST):
            # The cookie exchange itself stays intact (mutate what follows it), but the
            # ClientHello that carries the valid cookie may come with any numbering.
            hello = psk_server.parse_client_hello(datagram)
            if hello is not None and hello.cookie and rng.random() < 0.3:
                return renumbered(datagram, record_seq=rng.choice(_SEQ_CHOICES),
                                  message_seq=rng.choice((0, 1, 2, 65532, 65533, 65534, 65535)))
            return datagram
        if rng.random() >= mutate_rate:
            return datagram
        return None if rng.random() < 0.1 else _mutate(rng, datagram)

    s = pump(c, ctx, c2s=hostile, s2c=hostile, now=clock.now)
    for _ in range(3):  # timers: retransmissions meet more mutations
        clock.now += 70
        for engine in (c, s):
            if engine is not None:
                engine.get_timer()
                engine.handle_timer(clock.now)
        s = pump(c, ctx, server=s, c2s=hostile, s2c=hostile, now=clock.now)
    for engine in (c, s):
        for event in events(engine) if engine is not None else []:
            if isinstance(event, ConnectionFailed):
                assert isinstance(event.error, LoadgenError)


def _hostile_record(rng: random.Random, sender) -> bytes:
    """A record sealed with the association's real keys: any type, plaintext and number."""
    layer = sender._records
    seq = rng.choice((layer._write_seq, layer._write_seq + rng.randrange(200), rng.choice(_SEQ_CHOICES)))
    layer._write_seq = min(seq, MAX_RECORD_SEQ)
    content_type = rng.choice((records.APPLICATION_DATA, records.ALERT, records.HANDSHAKE,
                               records.CHANGE_CIPHER_SPEC, rng.randrange(256)))
    kind = rng.randrange(4)
    if kind == 0:
        plaintext = bytes((rng.randrange(256), rng.randrange(256)))
    elif kind == 1:
        plaintext = os.urandom(rng.randrange(0, 100))
    elif kind == 2:
        plaintext = fragment(rng.randrange(256), rng.randrange(5000), rng.randrange(1 << 16), rng.randrange(5000),
                             os.urandom(rng.randrange(100)))
    else:
        plaintext = os.urandom(rng.choice((0, (1 << 14) - 1, 1 << 14, (1 << 14) + 1)))
    return layer.seal(content_type, plaintext)


def _fuzz_session(rng: random.Random, *, client_native: bool, server_native: bool, rounds: int) -> None:
    c, s = established(client_native=client_native, server_native=server_native)
    for _ in range(rounds):
        sender, receiver = (c, s) if rng.random() < 0.5 else (s, c)
        datagram = _hostile_record(rng, sender)
        if rng.random() < 0.2:
            datagram = _mutate(rng, datagram)  # and no longer authentic
        receiver.receive_datagram(datagram, NOW)
        receiver.get_timer()
        receiver.handle_timer(NOW)
        for event in events(receiver):
            if isinstance(event, ConnectionFailed):
                assert isinstance(event.error, LoadgenError)
        receiver.datagrams_to_send()
        if receiver.closed:
            c, s = established(client_native=client_native, server_native=server_native)


@pytest.mark.parametrize(("client_native", "server_native"), [(True, True), (False, False), (True, False),
                                                              (False, True)],
                         ids=["native", "openssl", "native-client", "native-server"])
def test_seeded_fuzz_of_handshakes_and_sessions(clock, client_native, server_native):
    rng = random.Random(f"{FUZZ_SEED}-{client_native}-{server_native}")
    trials = 2000 if client_native and server_native else 600
    for _ in range(trials):
        _fuzz_handshake(rng, clock, client_native=client_native, server_native=server_native)
    _fuzz_session(rng, client_native=client_native, server_native=server_native, rounds=5000)


def test_fuzzed_peer_memory_stays_bounded(clock):
    # One association at a time under mutated traffic: what the server holds for it stays under
    # the 48 KiB per hostile peer (engine included).
    rng = random.Random(FUZZ_SEED)
    ctx = server_ctx()
    worst = 0
    for _ in range(30):
        hello = cookie_hello(ctx)
        c = client()
        c.start(clock.now)
        s = pump(c, ctx, now=clock.now)  # a real flight to mutate
        flight = c.datagrams_to_send() or [hs_record(b"", 0)]
        hostile = [_mutate(rng, rng.choice(flight)) for _ in range(200)]
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            engine, replies = psk_server.accept(ctx.native, hello, PEER, clock.now)
            assert engine is not None
            for d in hostile:
                engine.receive_datagram(d, clock.now)
                events(engine)
                engine.datagrams_to_send()
            worst = max(worst, tracemalloc.get_traced_memory()[0] - before)
        finally:
            tracemalloc.stop()
        del s, replies
    assert worst <= 48 * 1024, worst


# -- the OpenSSL engines' switch to loadgen's record layer ------------------------


@pytest.mark.parametrize("victim", ["client", "server"])
def test_forged_epoch1_numbers_during_the_handshake_do_not_deafen_the_session(victim):
    # Before the keys, an epoch-1 record cannot be authenticated; its sequence number used
    # to become the new record layer's highest seen, so one forged record numbered 2^48 - 1
    # made every later record of the session look replayed.
    c = client(native=False)
    c.start(NOW)
    forged = hs_record(os.urandom(40), MAX_RECORD_SEQ, epoch=1)

    def forge(datagram: bytes) -> bytes:
        return forged + datagram

    s = pump(c, server_ctx(native=False), s2c=forge if victim == "client" else None,
             c2s=(lambda d: d if records.is_client_hello(d) else forge(d)) if victim == "server" else None)
    assert c.light and s.light
    events(c), events(s)
    c.send(b"ping")
    for d in c.datagrams_to_send():
        s.receive_datagram(d, NOW)
    s.send(b"pong")
    for d in s.datagrams_to_send():
        c.receive_datagram(d, NOW)
    assert events(s) == [DataReceived(b"ping")] and events(c) == [DataReceived(b"pong")]


@pytest.mark.parametrize("server_native", [True, False], ids=["native", "openssl"])
def test_repeated_client_flights_get_the_final_flight_at_most_twice_a_second(clock, server_native):
    c = client()
    c.start(clock.now)
    flights = []

    def keep(datagram: bytes) -> bytes:
        if not records.is_client_hello(datagram):
            flights.append(datagram)
        return datagram

    s = pump(c, server_ctx(native=server_native), c2s=keep, now=clock.now)
    assert s.handshake_done and flights
    clock.now += 1  # the client's retransmission timer fired: its flight comes again, a hundred times
    for _ in range(100):
        s.receive_datagram(flights[0], clock.now)
    assert len(s.datagrams_to_send()) == 1 and s.retransmits == 1
    clock.now += 1  # a second later the next repeat is answered again (the answer may be lost too)
    s.receive_datagram(flights[0], clock.now)
    assert len(s.datagrams_to_send()) == 1 and s.retransmits == 2


# -- stable codes for OpenSSL failures that leave no reason -------------------------


@pytest.mark.parametrize("exc", [SSL.SysCallError(-1, "Unexpected EOF"), SSL.SysCallError(11, "EAGAIN")])
def test_an_openssl_failure_without_a_reason_gets_a_stable_code(exc):
    # OpenSSL (over memory BIOs) can give up without queueing a reason, e.g. on a fragment
    # claiming a message longer than its maximum (such datagrams no longer reach it, see
    # below); pyOpenSSL then raises SysCallError(-1, 'Unexpected EOF') (errno: whatever was
    # left over), whose repr became the code "tls-(-1,-'unexpected-eof')" (9,035 times in
    # bench_hostile's handshake fuzz).
    assert error_from_openssl(openssl_reason(exc), remote=False).code == "tls-unexpected-eof"


@pytest.mark.parametrize("reason", ["(-1, 'Unexpected EOF')", "(11, 'EAGAIN')", "reason(1234)", "tlsv1 alert 163",
                                    "", "Unexpected EOF: 0x7f"])
def test_reason_texts_that_are_not_openssl_reason_names_share_one_code(reason):
    error = error_from_openssl(reason, remote=False)
    assert error.code == "handshake-failed"
    assert reason in str(error)  # the text still travels in the message


def test_openssl_reason_names_keep_their_codes():
    assert error_from_openssl("wrong version number", remote=False).code == "tls-wrong-version-number"
    assert error_from_openssl("tlsv1 alert unknown ca", remote=True).code == "tls-unknown-ca"
    assert error_from_openssl("x509 lib", remote=False).code == "tls-x509-lib"


def _openssl_growth_per_association(length: int, count: int = 100) -> float:
    """RSS growth (KiB) per OpenSSL server association after the cookie exchange, fed one-byte
    fragments of ClientKeyExchanges numbered 2 to 13 (the next one and eleven ahead) that
    claim ``length`` bytes each."""
    ctx = server_ctx(native=False)
    engines = []
    for i in range(count):
        peer = b"10.0.0.%d:1" % i
        engine, _ = dtls_factory.accept(ctx, cookie_hello(ctx, peer=peer), peer, NOW)
        assert engine is not None
        engines.append(engine)
    before = _rss_kib()
    for engine in engines:
        for seq in range(2, 14):
            engine.receive_datagram(hs_record(fragment(handshake_messages.CLIENT_KEY_EXCHANGE, length, seq, 5, b"\x00"),
                                              seq), NOW)
    assert not any(engine.closed for engine in engines)
    return (_rss_kib() - before) / count


def test_fragments_claiming_long_messages_never_reach_openssl_buffers():
    # OpenSSL sizes a reassembly buffer by the length a fragment claims (up to its ~100 KiB
    # handshake message maximum), for each of several messages ahead: ~220 KiB more per
    # association here. Its maximum (SSL_CTX_set_max_cert_list) is out of reach (no
    # SSL_CTX_ctrl in the binding), so the engine drops such datagrams before OpenSSL sees
    # them (PSK handshake messages are short).
    per_engine = _openssl_growth_per_association(100_000)
    assert per_engine < 32, f"{per_engine:.0f} KiB per OpenSSL association for fragments of over-long messages"


def test_fragments_numbered_far_ahead_never_reach_openssl_buffers():
    # Within the length cap, OpenSSL still buffers a dozen messages ahead: ~57 KiB more per
    # association (measured) from fragments claiming 4 KiB. The server's OpenSSL engine drops
    # plaintext fragments numbered past the ClientKeyExchange (its Finished is encrypted).
    per_engine = _openssl_growth_per_association(handshake_messages.MAX_MESSAGE_LEN)
    assert per_engine < 24, f"{per_engine:.0f} KiB per OpenSSL association for fragments of messages far ahead"


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))


# -- the client's one-pass server flight: what the general path would have done ---------------


def _outcome(engine: psk_client.PskClientEngine) -> tuple:
    """What a user of the engine can see after a datagram: what it sends, its events, its state."""
    happened = [(type(e).__name__, getattr(getattr(e, "error", None), "code", None), str(getattr(e, "error", "")))
                for e in events(engine)]
    inbox = getattr(engine, "_inbox", None)
    return (engine.datagrams_to_send(), happened, engine.closed, engine.handshake_done, engine._state,  # noqa: SLF001
            inbox.next_seq if inbox is not None else None, engine.get_timer(), str(engine.timeout_error()))


@pytest.mark.parametrize("hint", [HINT, None])
def test_the_server_flight_in_one_pass_does_what_the_general_path_does(monkeypatch: pytest.MonkeyPatch,
                                                                       hint: bytes | None) -> None:
    """The client takes the server's flight (whole messages, a record each) in one pass, skipping the
    record split, the fragment parser and the reassembler. Two clients with the same random get the
    same datagram, the real flight and 400 hostile variants of it; one may take the one-pass path,
    the other is made to take the general one: what they send, their events and their state are the
    same every time. Seeded: the mutations and every random are the same on every run."""
    rng = random.Random(20261204)
    monkeypatch.setattr(os, "urandom", rng.randbytes)
    ctx = server_ctx(hint=hint)
    one_pass = 0
    for case in range(400):
        fast, general = client(), client()
        general._client_random = fast._client_random  # noqa: SLF001 - byte-for-byte the same flights
        fast.start(NOW)
        general.start(NOW)
        (hello,) = fast.datagrams_to_send()
        assert general.datagrams_to_send() == [hello]
        _, (hvr,) = dtls_factory.accept(ctx, hello, PEER, NOW)
        fast.receive_datagram(hvr, NOW)
        general.receive_datagram(hvr, NOW)
        (hello,) = fast.datagrams_to_send()
        assert general.datagrams_to_send() == [hello]
        _, (flight,) = dtls_factory.accept(ctx, hello, PEER, NOW)
        datagram = flight if case == 0 else _mutate(rng, flight)
        one_pass += handshake_messages.whole_messages(datagram) is not None and datagram[13] == 2
        fast.receive_datagram(datagram, NOW)
        with monkeypatch.context() as general_only:
            general_only.setattr(psk_client, "whole_messages", lambda *_: None)
            general.receive_datagram(datagram, NOW)
        assert _outcome(fast) == _outcome(general), (case, datagram.hex())
        if case == 0:
            assert fast._state == psk_client._FINISHED  # noqa: SLF001 - the real flight: answered
    assert one_pass >= 50, one_pass  # the variants reach the one-pass path (72 and 76 of 400), not only the general one
