"""Property tests (hypothesis) for what the engines must get exactly right whatever the
peer sends: the record layer's replay window and handshake reassembly (issue 11)."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from loadgen.protocol import records
from loadgen.protocol.record_layer import SUITES, WINDOW, RecordLayer

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
