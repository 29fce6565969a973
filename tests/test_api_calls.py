"""CallWorkload, sans-I/O: the calls of the Python API's clients, with time passed in by hand."""

from __future__ import annotations

import re

import pytest

from loadgen.protocol.errors import PeerClosed, PingTimeout
from loadgen.stats.facts import Finished, Started
from loadgen.stats.sink import StatsSink
from loadgen.traffic.calls import Call, CallWorkload, reply_check


class Facts(StatsSink):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[object] = []

    def record(self, fact: object) -> None:  # type: ignore[override]
        self.seen.append(fact)
        super().record(fact)  # type: ignore[arg-type]


def up(sink: Facts, **kwargs: int) -> CallWorkload:
    workload = CallWorkload("gw", sink, **kwargs)
    workload.start(0.0)
    return workload


def test_a_request_goes_out_at_the_next_poll_and_its_reply_ends_it() -> None:
    sink, ended = Facts(), []
    workload = up(sink)
    call = Call("login", b"hello", check=reply_check("echo"), notify=ended.append)
    workload.submit(call, 1.0)
    assert workload.get_timer() == 0.0 and workload.outstanding == 1
    assert workload.poll(1.25) == b"hello"
    workload.sent(37)
    assert workload.poll(1.25) is None and workload.get_timer() == 6.0  # submitted at 1.0, 5 s default timeout
    assert workload.receive(b"hello", 40, 1.5)
    assert ended == [call] and call.error is None and call.reply == b"hello" and call.elapsed == 0.5
    finished = [f for f in sink.seen if isinstance(f, Finished)]
    assert finished == [Finished("login", "gw", 0.5, None, sent_bytes=37, received_bytes=40)]
    assert sink.seen[0] == Started("login", "gw")
    assert workload.outstanding == 0 and workload.requests_sent == 1
    assert not workload.receive(b"stray", 10, 2.0)  # answers nothing outstanding


@pytest.mark.parametrize(("expect", "reply", "good"), [
    ("echo", b"ping 1", True), ("echo", b"ping 2", False), (b"OK", b"OK 200", True), (b"OK", b"NO", False),
    (re.compile(rb"\Aseq=\d+\Z"), b"seq=12", True), (re.compile(rb"seq=\d"), b"\n\nseq=x", False),
    (lambda reply: len(reply) == 3, b"abc", True), (lambda reply: len(reply) == 3, b"abcd", False),
    (None, b"anything", True),
])
def test_the_reply_is_judged_as_expect_says(expect: object, reply: bytes, good: bool) -> None:
    sink = Facts()
    workload = up(sink)
    call = Call("r", b"ping 1", check=reply_check(expect))  # type: ignore[arg-type]
    workload.submit(call, 0.0)
    workload.poll(0.0)
    workload.sent(10)
    workload.receive(reply, 10, 0.1)
    assert (call.error is None) is good
    assert sink.kinds["r"].completed + sink.kinds["r"].failed == 1
    if not good:
        assert call.error is not None and call.error.code == "bad-reply" and sink.kinds["r"].failures["bad-reply"] == 1


def test_expect_of_the_wrong_kind_is_refused() -> None:
    for bad in ("prefix", 3, re.compile("text")):
        with pytest.raises(ValueError, match="expect"):
            reply_check(bad)  # type: ignore[arg-type]


def test_a_request_without_reply_times_out_then_the_association_ends() -> None:
    sink, ended = Facts(), []
    workload = up(sink)
    first = Call("r", b"a", timeout=2.0, notify=ended.append)
    second = Call("r", b"b", timeout=2.0, notify=ended.append)
    workload.submit(first, 0.0)
    workload.poll(0.0)
    workload.sent(5)
    workload.submit(second, 1.0)  # queued behind it (the transport was not woken yet)
    assert workload.get_timer() == 0.0
    with pytest.raises(PingTimeout, match="late reply"):
        workload.poll(2.0)  # the first timed out: counted, and the association ends; the second fails with it
    assert [c.error.code for c in ended if c.error] == ["ping-timeout", "ping-timeout"]
    assert first.elapsed == 2.0 and second.elapsed == 1.0
    cell = sink.kinds["r"]
    assert (cell.attempted, cell.completed, cell.failed, cell.in_flight) == (2, 0, 2, 0)
    assert workload.closed and not workload.receive(b"a", 5, 2.5)  # the late reply answers nothing


def test_a_send_is_over_once_it_is_on_the_wire() -> None:
    sink, ended = Facts(), []
    workload = up(sink)
    call = Call("send", b"fire", wants_reply=False, notify=ended.append)
    workload.submit(call, 3.0)
    assert workload.poll(3.5) == b"fire"
    assert ended == []
    workload.sent(29)
    assert ended == [call] and call.error is None and call.elapsed == 0.5 and workload.outstanding == 0
    assert sink.kinds["send"].completed == 1 and sink.kinds["send"].sent_bytes == 29


def test_the_association_failing_fails_every_call_and_closing_leaves_them_in_flight() -> None:
    sink = Facts()
    workload = up(sink)
    calls = [Call("r", b"x"), Call("r", b"y")]
    for call in calls:
        workload.submit(call, 0.0)
    workload.poll(0.0)
    workload.sent(5)
    workload.fail(PeerClosed("shutdown alert received"), 0.5)
    assert [c.error.code for c in calls if c.error] == ["peer-closed", "peer-closed"]
    assert sink.kinds["r"].failed == 2
    with pytest.raises(Exception, match="not up"):
        workload.submit(Call("r", b"z"), 1.0)

    sink2, released = Facts(), []
    other = up(sink2)
    other.submit(Call("r", b"x", notify=released.append), 0.0)
    other.poll(0.0)
    other.sent(5)
    detached = other.detach(PeerClosed("closed"))  # closed from outside: released, not counted
    assert released == detached and len(detached) == 1 and detached[0].error is not None
    assert (sink2.kinds["r"].attempted, sink2.kinds["r"].in_flight) == (1, 1)


def test_calls_are_bounded_and_wait_for_the_association() -> None:
    sink = Facts()
    workload = CallWorkload("gw", sink, max_outstanding=2)
    with pytest.raises(Exception, match="not up"):
        workload.submit(Call("r", b"x"), 0.0)
    workload.start(0.0)
    workload.submit(Call("r", b"x"), 0.0)
    workload.submit(Call("r", b"y"), 0.0)
    with pytest.raises(Exception, match="2 calls outstanding"):
        workload.submit(Call("r", b"z"), 0.0)
    assert sink.kinds["r"].attempted == 2  # a refused call is not an attempt


def test_an_unsendable_call_fails_with_the_transport_error() -> None:
    sink = Facts()
    workload = up(sink)
    call = Call("big", b"x" * 5000)
    workload.submit(call, 0.0)
    workload.poll(0.1)
    from loadgen.protocol.errors import LocalProtocolError

    workload.abandon(LocalProtocolError("payload larger than the MTU"))
    assert call.error is not None and call.error.code == "local-error" and sink.kinds["big"].failed == 1
