"""A flood of identical problems is logged as a few lines with a count."""

from __future__ import annotations

import logging

import pytest

from loadgen.stats.facts import LogSink, Message
from loadgen.stats.throttle import ThrottledLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_suppressed_count(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("t"), interval=10, burst=3, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(1000):
            throttled.log(logging.WARNING, "bad-record", "peer %d sent garbage", i)
        clock.now = 11
        throttled.log(logging.WARNING, "bad-record", "peer %d sent garbage", 1000)
    lines = [r.getMessage() for r in caplog.records]
    assert lines[:3] == ["peer 0 sent garbage", "peer 1 sent garbage", "peer 2 sent garbage"]
    assert lines[3] == "peer 1000 sent garbage (997 similar messages suppressed)"
    assert len(lines) == 4


def test_keys_are_independent_and_bounded(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    throttled = ThrottledLog(logging.getLogger("t"), interval=10, burst=1, max_keys=10, clock=clock)
    with caplog.at_level(logging.WARNING, logger="t"):
        for i in range(100):  # keys chosen by a peer: past 10 they share one window, adding 1 line
            throttled.log(logging.WARNING, f"k{i}", "x")
        assert len(caplog.records) == 11
        assert len(throttled._windows) <= 11
        clock.now = 11  # the windows expired: the table makes room for new keys again
        throttled.log(logging.WARNING, "fresh", "y")
    assert caplog.records[-1].getMessage() == "y"
    assert len(throttled._windows) <= 11


def test_log_sink_limits_a_flood_of_association_warnings(caplog: pytest.LogCaptureFixture) -> None:
    sink = LogSink()
    with caplog.at_level(logging.WARNING, logger="loadgen"):
        for i in range(5000):
            sink.record(Message(logging.WARNING, f"dev{i}", f"dev{i}: unexpected or late reply of 12 bytes"))
    assert 1 <= len(caplog.records) <= 10
