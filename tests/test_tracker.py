"""The request tracker driven by hand: time is passed in, no sockets, no sleeps."""

from __future__ import annotations

import random
import re

import pytest

from loadgen.protocol.errors import LocalProtocolError, PeerClosed, PingTimeout
from loadgen.scenario.model import Expect, Payload, PingConfig
from loadgen.stats.facts import PING, Finished, Started
from loadgen.traffic.tracker import RequestTracker, traffic_plan
from loadgen.traffic.workload import Gate


class Facts:
    """A sink that keeps every fact."""

    def __init__(self) -> None:
        self.facts: list[object] = []

    def record(self, fact: object) -> None:
        self.facts.append(fact)

    @property
    def started(self) -> int:
        return sum(isinstance(f, Started) for f in self.facts)

    @property
    def finished(self) -> list[Finished]:
        return [f for f in self.facts if isinstance(f, Finished)]


def tracker(sink: Facts, *, uniform=random.uniform, max_in_flight: int = 1, **ping: object) -> RequestTracker:
    config = PingConfig(**{"interval": 1.0, "jitter": 0.0, **ping})  # type: ignore[arg-type]
    return RequestTracker("dev-1", "gw", traffic_plan(config), sink, uniform=uniform, max_in_flight=max_in_flight)


def send(t: RequestTracker, now: float, size: int = 40) -> bytes:
    payload = t.poll(now)
    assert payload is not None, f"nothing due at {now}"
    t.sent(size)
    return payload


def test_nothing_is_due_before_start_then_the_first_request_at_once_and_then_on_the_interval() -> None:
    sink = Facts()
    t = tracker(sink, interval=2.0, timeout=1.0)
    assert t.get_timer() == float("inf") and t.poll(100.0) is None
    t.start(10.0)
    assert t.get_timer() == 10.0
    assert send(t, 10.0) == b"I am dev-1, please, accept our ping 1"
    assert sink.facts == [Started(PING, "gw")] and t.requests_sent == 1 and t.outstanding == 1
    assert t.get_timer() == 11.0  # one in flight: only its reply or its deadline matter
    assert t.receive(b"anything", 50, 10.25)
    (done,) = sink.finished
    assert done == Finished(PING, "gw", 0.25, None, sent_bytes=40, received_bytes=50)
    assert t.get_timer() == 12.0 and t.poll(11.99) is None
    assert send(t, 12.0).endswith(b"ping 2")


def test_the_interval_keeps_its_phase_and_never_schedules_into_the_past() -> None:
    t = tracker(Facts(), interval=1.0)
    t.start(0.0)
    send(t, 0.0)
    t.receive(b"r", 1, 0.1)
    send(t, 1.3)  # woken late: the next one is still due at 2.0, not 2.3
    t.receive(b"r", 1, 1.4)
    assert t.get_timer() == 2.0
    send(t, 5.0)  # very late: due at once again, no burst of catch-up requests
    t.receive(b"r", 1, 5.1)
    assert t.get_timer() == 5.0 and send(t, 5.1)


def test_jitter_stays_within_its_bounds() -> None:
    draws: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        draws.append((a, b))
        return random.Random(len(draws)).uniform(a, b)

    t = tracker(Facts(), uniform=uniform, interval=2.0, jitter=0.25)
    now = 0.0
    t.start(now)
    gaps = []
    for _ in range(50):
        send(t, now)
        t.receive(b"r", 1, now + 0.01)
        gaps.append(t.get_timer() - now)
        now = t.get_timer()
    assert set(draws) == {(-0.5, 0.5)}  # a fraction of the interval, applied +-
    assert all(1.5 <= gap <= 2.5 for gap in gaps) and len(set(gaps)) > 10, gaps


def test_no_jitter_draws_nothing() -> None:
    def uniform(a: float, b: float) -> float:
        raise AssertionError("no jitter asked for")

    t = tracker(Facts(), uniform=uniform)
    t.start(0.0)
    send(t, 0.0)


def test_a_timeout_fails_the_request_once_and_its_late_reply_is_not_counted_again() -> None:
    sink = Facts()
    t = tracker(sink, interval=1.0, timeout=0.5, expect=Expect("echo"))
    t.start(0.0)
    first = send(t, 0.0, size=33)
    assert t.poll(0.49) is None and not sink.finished
    assert t.poll(0.5) is None  # timed out; the next one is due at 1.0
    (timeout,) = sink.finished
    assert timeout.error is not None and timeout.error.code == "ping-timeout"
    assert "no reply in 0.5 s" in str(timeout.error)
    assert timeout.elapsed == 0.5 and timeout.sent_bytes == 33 and t.outstanding == 0
    assert not t.receive(first, 33, 0.7)  # late, nothing outstanding: unexpected
    second = send(t, 1.0)
    assert not t.receive(first, 33, 1.1)  # the late echo of the first while the second is out
    assert len(sink.finished) == 1 and t.outstanding == 1
    assert t.receive(second, 33, 1.2)
    assert [f.error for f in sink.finished][1] is None and sink.started == 2


def test_missed_in_a_row_end_the_association_and_a_reply_resets_the_count() -> None:
    sink = Facts()
    t = tracker(sink, interval=1.0, timeout=1.0, max_missed=3)
    t.start(0.0)
    send(t, 0.0)
    send(t, 1.0)  # the first timed out at 1.0, the second goes at once
    assert t.receive(b"r", 1, 1.5)  # answered: the count starts again
    send(t, 2.0)
    send(t, 3.0)
    send(t, 4.0)
    with pytest.raises(PingTimeout, match="3 pings in a row unanswered"):
        t.poll(5.0)
    codes = [f.error.code if f.error else None for f in sink.finished]
    assert codes == ["ping-timeout", None, "ping-timeout", "ping-timeout", "ping-timeout"]


@pytest.mark.parametrize(("expect", "reply", "ok"), [
    (Expect("any"), b"whatever", True),
    (Expect("echo"), b"I am dev-1, please, accept our ping 1", True),
    (Expect("echo"), b"I am dev-1, please, accept our ping 2", False),
    (Expect("prefix", prefix=b"I am"), b"I am someone", True),
    (Expect("prefix", prefix=b"I am"), b"You are", False),
    (Expect("regex", regex=re.compile(rb"ping \d+$")), b"pong ping 17", True),
    (Expect("regex", regex=re.compile(rb"ping \d+$")), b"ping seventeen", False),
])
def test_replies_are_judged_by_the_expect_rule(expect: Expect, reply: bytes, ok: bool) -> None:
    sink = Facts()
    t = tracker(sink, expect=expect)
    t.start(0.0)
    send(t, 0.0)
    assert t.receive(reply, len(reply), 0.1)  # a reply ends the request either way
    (done,) = sink.finished
    if ok:
        assert done.error is None
    else:
        assert done.error is not None and done.error.code == "bad-reply" and expect.kind in str(done.error)
    assert t.outstanding == 0


def test_a_reply_with_nothing_outstanding_is_unexpected() -> None:
    sink = Facts()
    t = tracker(sink)
    t.start(0.0)
    assert not t.receive(b"hello?", 6, 0.0) and not sink.facts


def test_the_association_ending_fails_the_outstanding_request() -> None:
    sink = Facts()
    t = tracker(sink)
    t.start(0.0)
    send(t, 0.0, size=21)
    t.fail(PeerClosed("shutdown alert received"), 0.3)
    (done,) = sink.finished
    assert done.error is not None and "peer closed with a ping outstanding" in str(done.error)
    assert done.elapsed == 0.3 and done.sent_bytes == 21
    t.fail(PeerClosed("again"), 0.4)  # nothing outstanding: nothing more
    assert len(sink.finished) == 1


def test_a_request_that_cannot_be_sent_fails_at_once() -> None:
    sink = Facts()
    t = tracker(sink)
    t.start(0.0)
    assert t.poll(0.0) is not None
    t.abandon(LocalProtocolError("too large"))
    assert sink.finished == [Finished(PING, "gw", 0.0, sink.finished[0].error)]
    assert t.outstanding == 0 and t.requests_sent == 0


def test_several_in_flight_are_answered_oldest_first() -> None:
    sink = Facts()
    t = tracker(sink, max_in_flight=2, interval=1.0, timeout=5.0, expect=Expect("echo"))
    t.start(0.0)
    first = send(t, 0.0)
    assert t.get_timer() == 1.0  # room for one more: the next request is due first
    second = send(t, 1.0)
    assert t.get_timer() == 5.0 and t.poll(2.0) is None  # the window is full
    assert t.receive(first, 1, 2.5) and t.receive(second, 1, 2.6)
    assert [f.elapsed for f in sink.finished] == [2.5, pytest.approx(1.6)]


def test_a_plan_of_its_own_only_for_a_text_that_names_the_device() -> None:
    shared = traffic_plan(PingConfig())
    assert shared.for_device(n=7, target="gw") is shared
    named = traffic_plan(PingConfig(payload=Payload(text="{target}/{n}: {name} #{seq}")))
    own = named.for_device(n=7, target="gw")
    assert own is not named and own.payload("dev-7", 3) == b"gw/7: dev-7 #3"
    binary = traffic_plan(PingConfig(payload=Payload(text=None, data=b"\x40\x00\x00\x00", seq_offset=2)))
    assert binary.for_device(n=1, target="gw") is binary and binary.payload("d", 258) == b"\x40\x00\x01\x02"


BINARY_PING = """name: t
clients: {count: 1}
run_time: 1s
psk: {key: "00112233"}
ping:
  interval: 1s
  jitter: 0
  payload: {hex: "40010000", seq_offset: 2}
"""


@pytest.mark.parametrize("expect", [
    'expect: {regex: "^\\\\x60\\\\x01..$"}',  # '.' must match 0x0a: DOTALL
    "expect: {prefix: '60', seq_offset: 2}",  # the message id echoed (its width: the payload's)
    'expect: {regex: "^`.{3}", seq_offset: 2, seq_width: 2}',
])
def test_a_binary_ping_whose_tenth_reply_carries_0x0a_passes(expect: str) -> None:
    from loadgen.scenario import parse_scenario

    scenario = parse_scenario(BINARY_PING + "  " + expect + "\n", "binary.yaml")
    sink = Facts()
    t = RequestTracker("dev-1", "gw", traffic_plan(scenario.ping), sink)
    t.start(0.0)
    replies = []
    for i in range(12):
        ping = send(t, float(i))
        replies.append(b"\x60" + ping[1:])  # an ACK with the ping's message id
        assert t.receive(replies[-1], 4, i + 0.1)
    assert replies[9] == b"\x60\x01\x00\x0a"
    assert [f.error for f in sink.finished] == [None] * 12


def test_a_reply_echoing_another_message_id_is_bad_and_the_late_one_is_not_counted() -> None:
    sink = Facts()
    config = PingConfig(interval=1.0, jitter=0.0, timeout=0.5, expect=Expect(seq_offset=2),
                        payload=Payload(text=None, data=b"\x40\x01\x00\x00", seq_offset=2))
    t = RequestTracker("dev-1", "gw", traffic_plan(config), sink)
    t.start(0.0)
    send(t, 0.0)  # times out at 0.5
    send(t, 1.0)
    assert not t.receive(b"\x60\x01\x00\x01", 4, 1.1)  # the first's late reply: not the second's answer
    assert t.receive(b"\x60\x01\x00\x07", 4, 1.2)  # nobody's: the second fails
    errors = [str(f.error) for f in sink.finished]
    assert "ping-timeout" in errors[0] and "sequence number 7 at byte 2, expected 2" in errors[1]


@pytest.mark.parametrize("template", [
    "I am {name}, please, accept our ping {seq}",  # Qt's, the default
    "{seq} from {name}", "{name}", "#{seq}", "no fields", "", "100% {name} {{literal}} %s %d {seq}%",
    "{target}/{n}: {name} #{seq} {n}%", "{seq}{seq}{name}{seq}",
    "{seq:05d} {name!r}", "{name.upper}", "{0}", "{}", "{name[0]}",  # str.format's own
])
def test_text_payloads_are_what_str_format_makes(template: str) -> None:
    """The %-format fast path makes, for every template, the bytes ``str.format`` does (templates
    it cannot copy keep ``str.format``)."""
    from loadgen.traffic.payloads import text_payload

    make = text_payload(template, n=7, target="gw-%s")
    for name, seq in (("dev-1", 1), ("ü 100%", 65536), ("", 0)):
        try:
            want = template.format(name=name, seq=seq, n=7, target="gw-%s").encode()
        except (IndexError, KeyError):
            with pytest.raises((IndexError, KeyError)):
                make(name, seq)
            continue
        assert make(name, seq) == want


def test_a_broken_template_fails_as_str_format_does() -> None:
    from loadgen.traffic.payloads import text_payload

    with pytest.raises(ValueError):
        text_payload("{name")("dev", 1)
    with pytest.raises(KeyError):
        text_payload("{device}")("dev", 1)


def test_plain_templates_take_the_percent_path() -> None:
    """The default template (and the device fields) are made by %-format: what the comparison
    above checks is the fast path, not only the fallback."""
    from loadgen.scenario.model import DEFAULT_PING_TEXT
    from loadgen.traffic.payloads import _percent_template

    for template in (DEFAULT_PING_TEXT, "{target}/{n}: {name} #{seq} 100%", "{seq}{name}{seq}", "fixed"):
        assert _percent_template(template, {"n": 7, "target": "gw"}) is not None, template
    for template in ("{seq:05d}", "{name!r}", "{0}", "{name.upper}", "{device}"):
        assert _percent_template(template, {"n": 7, "target": "gw"}) is None, template


def test_a_closed_gate_begins_no_request_and_wakes_for_none() -> None:
    """The run's stop closes its plans' gate (:class:`~loadgen.traffic.workload.Gate`): the request
    outstanding still gets its reply, no other begins, and nothing is due any more (a transport
    re-arming its timer at a due time it never acts on would spin: 100,000 of them made a stop
    take 45 s instead of 9)."""
    sink, gate = Facts(), Gate()
    t = RequestTracker("dev-1", "gw", traffic_plan(PingConfig(interval=1.0, jitter=0.0), gate), sink)
    t.start(0.0)
    first = send(t, 0.0)
    gate.open = False
    assert t.receive(first, 40, 0.1) and t.poll(0.1) is None
    assert t.get_timer() == 1.0 and t.poll(1.0) is None  # the next was due: not begun ...
    assert t.get_timer() == float("inf")  # ... and nothing is due any more
    gate.open = True  # the session's next test: this tracker's association has ended with the stop
    assert t.poll(2.0) is None and sink.started == 1 and [f.error for f in sink.finished] == [None]
