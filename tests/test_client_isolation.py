"""Client associations against faults and hostile servers: one broken association ends alone.

An engine that raises (a bug, or input no check foresaw) ends only its own association, with
``internal-error`` counted once for the attempt that was in flight; the event loop and the
other associations go on. Warnings whose text carries a number the server chooses (reply
sizes) share one throttle key, and a TLS server that never ends its reply line cannot make
the client buffer without bound.
"""

from __future__ import annotations

import logging

import pytest

from loadgen.credentials import Secret
from loadgen.payloads import ReplyRule
from loadgen.recorder import LogSink, Message
from loadgen.transport.association import PingPlan

pytestmark = pytest.mark.timeout(60)

KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))
#: What the injected bug carries in its arguments: it must never reach a message.
PEER_BYTES = "peer-chosen \\x17\\xfe\\xfd"
PING = PingPlan(interval=0.1, reply=ReplyRule("echo"), max_missed=10**6)


# --- throttle keys ---------------------------------------------------------------------------


def test_reply_sizes_chosen_by_the_server_share_one_throttle_key(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()  # burst 10 per 5 s interval: the loop below takes far less than 5 s
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        for size in range(10_000):
            name = f"device-{size % 7:05d}"
            sink.record(Message(logging.WARNING, name, f"{name}: unexpected or late reply of {size} bytes"))
    assert 1 <= len(caplog.records) <= 10, len(caplog.records)


def test_messages_that_differ_only_by_device_name_share_one_key(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level(logging.ERROR, logger="loadgen"):
        for i in range(3_000):  # the name is inside the error text too, not only in front of it
            name = f"gw-{chr(97 + i % 26)}{chr(97 + i // 26 % 26)}{chr(97 + i // 676)}"
            text = f"{name}: handshake error - socket-error: {name}: cannot connect UDP socket to 127.0.0.1:{i}"
            sink.record(Message(logging.ERROR, name, text))
    assert 1 <= len(caplog.records) <= 10, len(caplog.records)


def test_different_kinds_of_messages_keep_their_own_keys(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        for i in range(100):
            sink.record(Message(logging.WARNING, "d", f"d: unexpected or late reply of {i} bytes"))
            sink.record(Message(logging.WARNING, "d", "d: zero-length datagram received?"))
    texts = [r.getMessage() for r in caplog.records]
    assert sum("zero-length" in t for t in texts) == 10 and sum("late reply" in t for t in texts) == 10
