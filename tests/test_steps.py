"""Request steps (plain payloads) driven by hand: time passed in, no sockets, no sleeps."""

from __future__ import annotations

import random
import re

import pytest

from loadgen.protocol.errors import LocalProtocolError, PeerClosed, PingTimeout
from loadgen.scenario.model import Expect, Payload, PingConfig, RequestStep
from loadgen.stats.facts import Finished, Started
from loadgen.stats.sink import StatsSink
from loadgen.traffic.plans import build_plan
from loadgen.traffic.steps import LATE_KEPT, StepsPlan, StepsWorkload, steps_plan
from loadgen.traffic.tracker import TrafficPlan
from loadgen.traffic.workload import Gate

pytestmark = pytest.mark.timeout(30)

PING = PingConfig(interval=10.0, jitter=0.0, timeout=2.0, max_missed=3)


class Facts(StatsSink):
    """The real stats sink (counts per kind), keeping the facts in order too."""

    def __init__(self) -> None:
        super().__init__()
        self.facts: list[object] = []

    def record(self, fact: object) -> None:  # type: ignore[override]
        self.facts.append(fact)
        super().record(fact)  # type: ignore[arg-type]

    @property
    def finished(self) -> list[Finished]:
        return [f for f in self.facts if isinstance(f, Finished)]

    def exact(self, kind: str) -> tuple[int, int, int]:
        """(attempted, completed, failed) of ``kind``; every attempt ended once or is in flight."""
        cell = self.counted(kind)
        return cell.attempted, cell.completed, cell.failed


def text(template: str) -> Payload:
    return Payload(text=template)


def binary(hex_text: str, offset: int, width: int = 2) -> Payload:
    return Payload(text=None, data=bytes.fromhex(hex_text), seq_offset=offset, seq_width=width)


def workload(sink: Facts, *steps: RequestStep, ping: PingConfig = PING, uniform=random.uniform) -> StepsWorkload:
    return steps_plan(ping, steps).workload("dev-1", "gw", sink, uniform=uniform)


def send(w: StepsWorkload, now: float, size: int = 40) -> bytes:
    payload = w.poll(now)
    assert payload is not None, f"nothing due at {now}"
    w.sent(size)
    return payload


def drain(w: StepsWorkload, now: float) -> list[bytes]:
    out = []
    while (payload := w.poll(now)) is not None:
        w.sent(len(payload))
        out.append(payload)
    return out


REGISTER = RequestStep("register", payload=text("REG {name} {seq}"), once=True, expect=Expect("echo"))
TELEMETRY = RequestStep("telemetry", payload=text("T {seq}"), interval=1.0, expect=Expect("echo"))
CONFIG = RequestStep("config", payload=text("C {seq}"), interval=3.0, expect=Expect("echo"))


def test_once_goes_first_and_alone_then_each_interval_step_on_its_own_interval() -> None:
    sink = Facts()
    w = workload(sink, TELEMETRY, REGISTER, CONFIG)
    assert w.get_timer() == float("inf") and w.poll(0.0) is None  # nothing before start
    w.start(5.0)
    assert drain(w, 5.0) == [b"REG dev-1 1"]  # the once step, alone, though listed second
    assert w.get_timer() == 7.0  # only its reply (or its deadline) matters now
    assert drain(w, 6.0) == []
    assert w.receive(b"REG dev-1 1", 11, 6.5)
    # Registered: the interval steps start at once, numbered on from the same counter.
    assert drain(w, 6.5) == [b"T 2", b"C 3"]
    assert w.receive(b"T 2", 3, 6.6) and w.receive(b"C 3", 3, 6.7)
    assert w.get_timer() == 7.5  # telemetry's next
    assert drain(w, 7.5) == [b"T 4"]
    assert w.receive(b"T 4", 3, 7.6)
    assert drain(w, 9.5) == [b"T 5", b"C 6"]  # telemetry kept its phase (8.5 was missed: no burst)
    assert [f.kind for f in sink.facts if isinstance(f, Started)] == ["register", "telemetry", "config",
                                                                        "telemetry", "telemetry", "config"]
    assert sink.exact("register") == (1, 1, 0) and sink.exact("telemetry") == (3, 2, 0)
    assert sink.exact("config") == (2, 1, 0) and w.requests_sent == 6 and w.outstanding == 2


def test_once_steps_go_together_and_one_that_times_out_still_lets_the_others_start() -> None:
    sink = Facts()
    second = RequestStep("second", payload=text("S {seq}"), once=True, expect=Expect("echo"), timeout=5.0)
    w = workload(sink, REGISTER, second, TELEMETRY)
    w.start(0.0)
    assert drain(w, 0.0) == [b"REG dev-1 1", b"S 2"]  # every once step right after the handshake
    assert drain(w, 2.0) == []  # the register timed out at 2.0 (the ping's timeout); "second" is still out
    (timeout,) = sink.finished
    assert timeout.kind == "register" and timeout.error is not None and timeout.error.code == "ping-timeout"
    assert not w.receive(b"REG dev-1 1", 11, 2.1)  # its late reply: not counted again, nor taken as S's
    assert w.receive(b"S 2", 3, 2.5)  # replies come in order: S's after the register's
    assert drain(w, 2.5) == [b"T 3"]  # every once step has ended: the others begin
    assert sink.exact("register") == (1, 0, 1) and sink.exact("second") == (1, 1, 0)
    assert sink.exact("telemetry") == (1, 0, 0)


def test_in_flight_lets_a_step_have_several_outstanding_and_a_full_window_waits() -> None:
    sink = Facts()
    step = RequestStep("burst", payload=text("B {seq}"), interval=1.0, in_flight=2, timeout=10.0)
    w = workload(sink, step)
    w.start(0.0)
    assert drain(w, 0.0) == [b"B 1"]
    assert drain(w, 1.0) == [b"B 2"] and w.outstanding == 2
    assert w.get_timer() == 10.0 and drain(w, 5.0) == []  # full: only a reply or a deadline matters
    assert w.receive(b"r", 1, 5.5)  # FIFO: answers B 1
    assert drain(w, 5.5) == [b"B 3"]
    assert [f.elapsed for f in sink.finished] == [5.5]


def test_replies_echoing_the_sequence_number_are_matched_out_of_order() -> None:
    sink = Facts()
    step = RequestStep("read", payload=binary("01000000", 2), interval=0.5, in_flight=3, timeout=10.0,
                       expect=Expect(seq_offset=1, seq_width=2))
    w = workload(sink, step)
    w.start(0.0)
    sent = drain(w, 0.0) + drain(w, 0.5) + drain(w, 1.0)
    assert sent == [b"\x01\x00\x00\x01", b"\x01\x00\x00\x02", b"\x01\x00\x00\x03"]
    assert w.receive(b"\x02\x00\x03", 3, 1.2)  # the third answered first
    assert w.receive(b"\x02\x00\x01", 3, 1.3)
    assert w.receive(b"\x02\x00\x02", 3, 1.4)
    assert [f.elapsed for f in sink.finished] == pytest.approx([0.2, 1.3, 0.9])
    assert all(f.error is None for f in sink.finished) and w.outstanding == 0


def test_an_echoed_number_of_no_request_outstanding_fails_the_oldest_as_bad_reply() -> None:
    sink = Facts()
    step = RequestStep("read", payload=binary("0100", 0), interval=0.5, in_flight=2, timeout=10.0,
                       expect=Expect(seq_offset=0))
    w = workload(sink, step)
    w.start(0.0)
    drain(w, 0.0)
    drain(w, 0.5)
    assert w.receive(b"\x00\x07", 2, 0.6)  # number 7: nobody's
    (bad,) = sink.finished
    assert bad.error is not None and bad.error.code == "bad-reply"
    assert "sequence number 7 at byte 0, expected 1" in str(bad.error)
    assert w.receive(b"\x00", 1, 0.7)  # too short to carry one: the next oldest fails
    assert "too short to carry the sequence number (bytes 0..1)" in str(sink.finished[1].error)
    assert not w.receive(b"\x00\x02", 2, 0.8)  # nothing outstanding


def test_late_replies_are_told_from_bad_ones_by_their_echoed_number() -> None:
    sink = Facts()
    step = RequestStep("read", payload=binary("0000", 0), interval=1.0, timeout=0.5, expect=Expect(seq_offset=0))
    w = workload(sink, step, ping=PingConfig(interval=10.0, jitter=0.0, max_missed=10))
    w.start(0.0)
    drain(w, 0.0)
    drain(w, 1.0)  # number 1 timed out at 0.5
    assert not w.receive(b"\x00\x01", 2, 1.1)  # late: not counted again, and number 2 still waits
    assert w.outstanding == 1 and len(sink.finished) == 1
    assert w.receive(b"\x00\x02", 2, 1.2) and sink.finished[-1].error is None


def test_plain_and_echoed_steps_together_each_reply_finds_its_request() -> None:
    sink = Facts()
    echoed = RequestStep("echoed", payload=binary("ff0000", 1), interval=1.0, timeout=5.0,
                         expect=Expect(seq_offset=1))
    plain = RequestStep("plain", payload=text("P {seq}"), interval=1.0, timeout=5.0, expect=Expect("echo"))
    w = workload(sink, echoed, plain)
    w.start(0.0)
    assert drain(w, 0.0) == [b"\xff\x00\x01", b"P 2"]
    assert w.receive(b"P 2", 3, 0.1)  # no echoed number of anyone outstanding: the oldest plain request
    assert w.receive(b"\xff\x00\x01", 3, 0.2)
    assert [(f.kind, f.error) for f in sink.finished] == [("plain", None), ("echoed", None)]


def test_each_step_times_out_on_its_own_timeout_earliest_first_and_max_missed_ends_it() -> None:
    sink = Facts()
    slow = RequestStep("slow", payload=text("S"), interval=10.0, timeout=3.0)
    fast = RequestStep("fast", payload=text("F"), interval=10.0, timeout=1.0)
    w = workload(sink, slow, fast, ping=PingConfig(interval=10.0, jitter=0.0, max_missed=3))
    w.start(0.0)
    drain(w, 0.0)
    assert w.get_timer() == 1.0
    assert drain(w, 5.0) == []  # both overdue: fast's deadline came first
    assert [f.kind for f in sink.finished] == ["fast", "slow"]
    assert [f.elapsed for f in sink.finished] == [5.0, 5.0]
    drain(w, 10.0)
    with pytest.raises(PingTimeout, match="3 requests in a row unanswered"):
        w.poll(11.0)


def test_weighted_steps_share_the_ping_interval_and_are_picked_by_weight() -> None:
    sink = Facts()
    heavy = RequestStep("heavy", payload=text("H"), weight=3.0)
    light = RequestStep("light", payload=text("L"), weight=1.0)
    ping = PingConfig(interval=1.0, jitter=0.0, timeout=0.5)
    draws = iter([0.5, 3.5, 2.9, 3.0])  # uniform(0, 4): below 3 picks heavy

    def uniform(a: float, b: float) -> float:
        assert (a, b) == (0.0, 4.0)
        return next(draws)

    w = workload(sink, heavy, light, ping=ping, uniform=uniform)
    w.start(0.0)
    picked = []
    for now in (0.0, 1.0, 2.0, 3.0):
        picked += drain(w, now)
        assert w.receive(b"ok", 2, now + 0.1)
        assert w.get_timer() == now + 1.0  # the shared interval
    assert picked == [b"H", b"L", b"H", b"L"]
    assert sink.exact("heavy") == (2, 2, 0) and sink.exact("light") == (2, 2, 0)


def test_a_step_with_no_interval_weight_or_once_runs_on_the_ping_interval_with_its_timeout() -> None:
    sink = Facts()
    w = workload(sink, RequestStep("a", payload=text("A")), RequestStep("b", payload=text("B")),
                 ping=PingConfig(interval=2.0, jitter=0.0, timeout=0.5))
    w.start(0.0)
    assert drain(w, 0.0) == [b"A", b"B"]  # each on its own timer, both every ping.interval
    assert w.get_timer() == 0.5  # and the ping's timeout
    assert drain(w, 0.5) == [] and [f.error.code for f in sink.finished if f.error] == ["ping-timeout"] * 2
    assert w.get_timer() == 2.0 and drain(w, 2.0) == [b"A", b"B"]


def test_a_pick_whose_window_is_full_waits_for_room_without_spinning() -> None:
    sink = Facts()
    only = RequestStep("only", payload=text("O"), weight=1.0)
    w = workload(sink, only, ping=PingConfig(interval=0.1, jitter=0.0, timeout=5.0))
    w.start(0.0)
    assert drain(w, 0.0) == [b"O"]
    assert drain(w, 0.2) == [] and w.get_timer() == 5.0  # due, but full: wake for the deadline only
    assert w.receive(b"x", 1, 0.3)
    assert w.get_timer() == pytest.approx(0.1) and drain(w, 0.3) == [b"O"]


def test_jitter_is_a_fraction_of_each_steps_own_interval() -> None:
    draws: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        draws.append((a, b))
        return 0.0

    w = workload(Facts(), TELEMETRY, CONFIG, ping=PingConfig(interval=10.0, jitter=0.1), uniform=uniform)
    w.start(0.0)
    drain(w, 0.0)
    assert draws == [(-0.1, 0.1), (-0.30000000000000004, 0.30000000000000004)]


def test_the_association_ending_fails_every_outstanding_request_once() -> None:
    sink = Facts()
    w = workload(sink, TELEMETRY, CONFIG)
    w.start(0.0)
    drain(w, 0.0)
    w.fail(PeerClosed("shutdown alert received"), 0.4)
    assert [(f.kind, str(f.error).removeprefix("peer-closed: ")) for f in sink.finished] == [
        ("telemetry", "peer closed with request 'telemetry' outstanding"),
        ("config", "peer closed with request 'config' outstanding")]
    assert w.outstanding == 0
    w.fail(PeerClosed("again"), 0.5)
    assert len(sink.finished) == 2
    assert sink.exact("telemetry") == (1, 0, 1) and sink.exact("config") == (1, 0, 1)


def test_a_request_that_cannot_be_sent_fails_at_once() -> None:
    sink = Facts()
    w = workload(sink, REGISTER, TELEMETRY)
    w.start(0.0)
    assert w.poll(0.0) is not None
    w.abandon(LocalProtocolError("too large"))
    assert [(f.kind, f.elapsed, f.error is not None) for f in sink.finished] == [("register", 0.0, True)]
    assert w.outstanding == 0 and w.requests_sent == 0
    assert drain(w, 0.0) == [b"T 2"]  # the once step is over: the others start


def test_late_replies_kept_are_bounded() -> None:
    sink = Facts()
    step = RequestStep("t", payload=text("T {seq}"), interval=1.0, timeout=0.5, expect=Expect("echo"))
    w = workload(sink, step, ping=PingConfig(interval=10.0, jitter=0.0, max_missed=1000))
    w.start(0.0)
    for i in range(LATE_KEPT + 5):
        drain(w, float(i))
    drain(w, LATE_KEPT + 5.0)
    assert not w.receive(f"T {LATE_KEPT + 5}".encode(), 4, LATE_KEPT + 5.1)  # recent: late
    assert w.receive(b"T 1", 3, LATE_KEPT + 5.2)  # forgotten long ago: judged (bad) against the one waiting
    assert sink.finished[-1].error is not None and sink.finished[-1].error.code == "bad-reply"


def test_regexes_match_any_byte_including_newline() -> None:
    sink = Facts()
    step = RequestStep("r", payload=binary("4001000000", 2), interval=1.0,
                       expect=Expect("regex", regex=re.compile(rb"^\x60.{4}$"), seq_offset=2))
    w = workload(sink, step)
    w.start(0.0)
    for i in range(12):
        request = drain(w, float(i))[0]
        assert w.receive(b"\x60" + request[1:], 5, i + 0.1)
    assert sink.exact("r") == (12, 12, 0)  # request 10 carries 0x0a


def test_build_plan_picks_the_ping_or_the_steps_and_device_payloads() -> None:
    assert isinstance(build_plan(PING, ()), TrafficPlan)
    plan = build_plan(PING, (RequestStep("a", payload=text("{target}/{n} {seq}")), TELEMETRY))
    assert isinstance(plan, StepsPlan)
    own = plan.for_device(n=7, target="gw2")
    assert own is not plan and own.steps[0].make("x", 3) == b"gw2/7 3" and own.steps[1] is plan.steps[1]
    shared = build_plan(PING, (TELEMETRY, CONFIG))
    assert shared.for_device(n=7, target="gw2") is shared


def test_build_plan_gives_coap_steps_to_the_coap_plan() -> None:
    from loadgen.protocol.errors import ConfigError
    from loadgen.scenario.model import CoapRequest

    steps = (RequestStep("GET /time", coap=CoapRequest(path="/time"), interval=1.0),)
    with pytest.raises(ConfigError, match="cannot be mixed"):
        build_plan(PING, (*steps, TELEMETRY))
    try:
        from loadgen.coap.plan import CoapPlan
    except ImportError:  # before the CoAP package is merged
        with pytest.raises(ConfigError, match="CoAP request steps need loadgen.coap.plan"):
            build_plan(PING, steps)
        return

    plan = build_plan(PING, steps)
    assert isinstance(plan, CoapPlan) and plan.ping == PING


def test_a_closed_gate_begins_no_request_and_still_times_out_what_is_outstanding() -> None:
    """The run's stop closes its plans' gate (:class:`~loadgen.traffic.workload.Gate`): no step begins,
    again, and what is outstanding still ends (here by its timeout)."""
    sink, gate = Facts(), Gate()
    w = steps_plan(PING, (TELEMETRY,), gate).workload("dev-1", "gw", sink)
    w.start(0.0)
    assert drain(w, 0.0) == [b"T 1"]
    gate.open = False
    assert drain(w, 5.0) == []  # four intervals due, none begun; T 1's deadline (1.0) passed
    assert sink.exact("telemetry") == (1, 0, 1) and w.outstanding == 0
    assert w.get_timer() == float("inf")  # nothing due: a transport re-arming its timer must not spin
    gate.open = True  # the session's next test: this workload's association has ended with the stop
    assert drain(w, 6.0) == [] and w.requests_sent == 1
