"""Property tests (hypothesis) for what the engines must get exactly right whatever the
peer sends: the record layer's replay window and handshake reassembly (issue 11)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.protocol.native import messages as handshake_messages
from loadgen.protocol.native import records
from loadgen.protocol.native.record_layer import SUITES, WINDOW, RecordLayer

pytestmark = pytest.mark.timeout(120)

MAX_RECORD_SEQ = (1 << 48) - 1
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- the replay window (RFC 6347 4.1.2.6) ------------------------------------------


def _pair() -> tuple[RecordLayer, RecordLayer]:
    suite = SUITES["PSK-AES128-GCM-SHA256"]
    keys = {"master_key": b"m" * 48, "client_random": b"c" * 32, "server_random": b"s" * 32}
    sender = RecordLayer(suite, is_client=True, write_seq=0, read_seq=-1, **keys)
    receiver = RecordLayer(suite, is_client=False, write_seq=0, read_seq=-1, **keys)
    return sender, receiver


#: Sequence numbers: anywhere in the 48-bit space, or close to the highest seen so far.
_STEPS = st.lists(st.one_of(st.integers(0, MAX_RECORD_SEQ), st.tuples(st.just("near"), st.integers(-70, 70))),
                  max_size=60)


@FAST
@given(_STEPS)
def test_replay_window_matches_a_reference_model(steps):
    sender, receiver = _pair()
    seen: set[int] = set()
    top = -1
    for step in steps:
        seq = step if isinstance(step, int) else min(max(top + step[1], 0), MAX_RECORD_SEQ)
        sender._write_seq = seq
        record = sender.seal(records.APPLICATION_DATA, b"%d" % seq)
        expected = seq > top or (top - seq < WINDOW and seq not in seen)
        opened = receiver.open(record)
        assert (opened is not None) == expected, (seq, top)
        if expected:
            assert opened == (records.APPLICATION_DATA, b"%d" % seq)
            seen.add(seq)
            top = max(top, seq)
        assert receiver._read_window < 1 << WINDOW  # the window never grows past 64 bits


# -- reassembly (RFC 6347 4.2.3) -----------------------------------------------------

SEQ = 5


def _pieces(message: bytes, cuts: list[int]) -> list[handshake_messages.Fragment]:
    """``message`` cut at ``cuts`` into contiguous fragments."""
    bounds = [0, *sorted(set(c for c in cuts if 0 < c < len(message))), len(message)]
    return [(handshake_messages.CLIENT_KEY_EXCHANGE, len(message), SEQ, a, message[a:b])
            for a, b in zip(bounds, bounds[1:], strict=False)]


def _check_bounds(r: handshake_messages.Reassembler) -> None:
    partial = r._partial.values()
    assert len(r._partial) + len(r._complete) <= handshake_messages.MAX_BUFFERED_MESSAGES
    assert r.buffered == sum(len(p.body) for p in partial) + sum(len(m) for _, m in r._complete.values())
    assert r.buffered <= handshake_messages.MAX_REASSEMBLY_BYTES
    for p in partial:
        assert len(p.starts) == len(p.ends) <= handshake_messages.MAX_FRAGMENT_RANGES
        bounds = [x for pair in zip(p.starts, p.ends, strict=True) for x in pair]
        assert all(a < b for a, b in zip(bounds, bounds[1:], strict=False))  # sorted, disjoint, not touching


_MESSAGES = st.binary(min_size=1, max_size=1500)


@FAST
@given(_MESSAGES, st.data())
def test_any_fragmentation_order_and_duplication_reassembles_in_one_pass(message, data):
    # Up to 2 x MAX_FRAGMENT_RANGES pieces can never make more disjoint ranges than the cap.
    cuts = data.draw(st.lists(st.integers(1, max(len(message) - 1, 1)),
                              max_size=2 * handshake_messages.MAX_FRAGMENT_RANGES - 1))
    pieces = _pieces(message, cuts)
    sent = pieces + data.draw(st.lists(st.sampled_from(pieces), max_size=10))  # duplicates
    data.draw(st.randoms()).shuffle(sent)
    r = handshake_messages.Reassembler(next_seq=SEQ)
    for piece in sent:
        r.add(piece)
        _check_bounds(r)
    assert r.pop() == (handshake_messages.CLIENT_KEY_EXCHANGE, SEQ, message)
    assert r.pop() is None and r.buffered == 0


@FAST
@given(_MESSAGES, st.data())
def test_fine_fragmentation_with_overlaps_reassembles_after_retransmissions(message, data):
    # Any number of pieces plus overlapping sub-ranges, reordered: a piece that would make
    # too many holes is dropped, the peer's retransmission (the same pieces again) brings it.
    pieces = _pieces(message, data.draw(st.lists(st.integers(1, max(len(message) - 1, 1)), max_size=200)))
    extra = []
    for _ in range(data.draw(st.integers(0, 30))):
        a = data.draw(st.integers(0, len(message) - 1))
        b = data.draw(st.integers(a + 1, len(message)))
        extra.append((handshake_messages.CLIENT_KEY_EXCHANGE, len(message), SEQ, a, message[a:b]))
    rng = data.draw(st.randoms())
    r = handshake_messages.Reassembler(next_seq=SEQ)
    got = None
    for _ in range(len(pieces) + 1):  # each pass fills at least the gap after the first range
        flight = pieces + extra
        rng.shuffle(flight)
        for piece in flight:
            r.add(piece)
            _check_bounds(r)
        if (got := r.pop()) is not None:
            break
    assert got == (handshake_messages.CLIENT_KEY_EXCHANGE, SEQ, message)


_HOSTILE = st.tuples(st.integers(0, 255), st.integers(0, 2 * handshake_messages.MAX_MESSAGE_LEN), st.integers(0, 40),
                     st.integers(0, 2 * handshake_messages.MAX_MESSAGE_LEN), st.integers(0, 3000))


@FAST
@given(st.lists(_HOSTILE, max_size=300), st.sampled_from([None, 0, 3]))
def test_hostile_fragments_never_exceed_the_caps(fragments, next_seq):
    r = handshake_messages.Reassembler(next_seq=next_seq)
    for msg_type, length, seq, offset, size in fragments:
        offset = min(offset, length)
        size = min(size, length - offset)  # what fragments() lets through: inside the message
        r.add((msg_type, length, seq, offset, b"\x01" * size))
        _check_bounds(r)
        if r.next_seq is None:
            r.start_at(msg_type)
        while (message := r.pop()) is not None:
            assert len(message[2]) <= handshake_messages.MAX_MESSAGE_LEN
        _check_bounds(r)
