"""CoapPlan/CoapWorkload driven by hand (time passed in) against a scripted server: the facts."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.coap import message as m
from loadgen.coap.plan import CoapPlan
from loadgen.coap.workload import CoapWorkload
from loadgen.protocol.errors import CoapTimeout, LoadgenError, PeerClosed, SocketError
from loadgen.scenario.model import CoapConfig, CoapRequest, Expect, Payload, PingConfig, RequestStep
from loadgen.stats.facts import Fact, Finished, Started
from loadgen.traffic.workload import Gate

NO_JITTER = PingConfig(interval=5.0, jitter=0.0, max_missed=3)
DEFAULT = CoapConfig()


class Facts:
    """A sink that keeps every fact."""

    def __init__(self) -> None:
        self.facts: list[Fact] = []

    def record(self, fact: Fact) -> None:
        self.facts.append(fact)

    def finished(self, kind: str | None = None) -> list[Finished]:
        return [f for f in self.facts if isinstance(f, Finished) and kind in (None, f.kind)]

    def started(self, kind: str | None = None) -> list[Started]:
        return [f for f in self.facts if isinstance(f, Started) and kind in (None, f.kind)]


def step(name: str = "GET /time", **kwargs: object) -> RequestStep:
    coap = {k: kwargs.pop(k) for k in list(kwargs) if k in CoapRequest.__dataclass_fields__}
    kwargs.setdefault("interval", 5.0)
    return RequestStep(name, coap=CoapRequest(**coap), **kwargs)  # type: ignore[arg-type]


def workload(*steps: RequestStep, ping: PingConfig = NO_JITTER, config: CoapConfig = DEFAULT,
             uniform=lambda a, b: a) -> tuple[CoapWorkload, Facts]:
    facts = Facts()
    return CoapPlan.build(steps, config, ping).workload("dev1", "gw1", facts, uniform=uniform), facts


def drain(w: CoapWorkload, now: float) -> list[m.Message]:
    """What the workload sends at ``now`` (each "sent" as its own size plus 29 bytes of DTLS record)."""
    out = []
    while (datagram := w.poll(now)) is not None:
        w.sent(len(datagram) + 29)
        out.append(m.decode(datagram))
    return out


def ack(req: m.Message, code: str = "2.05", payload: bytes = b"", options: m.Options = ()) -> bytes:
    return m.encode(m.Message(m.ACK, m.code_int(code), req.mid, req.token, options, payload))


def test_a_request_and_its_one_finished_fact() -> None:
    w, facts = workload(step(path="/time", expect=Expect(code="2.05")))
    w.start(0.0)
    [req] = drain(w, 0.0)
    assert req.options_of(m.URI_PATH) == [b"time"] and facts.started("GET /time") == [Started("GET /time", "gw1")]
    assert w.requests_sent == 1 and w.outstanding == 1 and w.get_timer() == pytest.approx(2.0)  # the retransmission
    assert w.receive(ack(req, payload=b"12:00"), 40, 0.25)
    [done] = facts.finished()
    assert (done.kind, done.target, done.elapsed, done.error, done.code) == ("GET /time", "gw1", 0.25, None, "2.05")
    assert (done.sent_bytes, done.received_bytes, done.retransmits) == (len(m.encode(req)) + 29, 40, 0)
    assert w.outstanding == 0 and w.get_timer() == 5.0 and drain(w, 4.9) == []
    [nxt] = drain(w, 5.0)
    assert nxt.mid == req.mid + 1 & 0xFFFF and nxt.token != req.token


def test_code_and_payload_judged() -> None:
    w, facts = workload(step("a", expect=Expect(code="2.05")), step("b", expect=Expect(kind="regex",
                        regex=re.compile(rb"^\d+\.\d$", re.DOTALL))), step("c"))
    w.start(0.0)
    a, b, c = drain(w, 0.0)
    w.receive(ack(a, "4.04"), 10, 0.1)
    w.receive(ack(b, payload=b"21.x"), 10, 0.1)
    w.receive(ack(c, "5.03"), 10, 0.1)
    errors = {f.kind: (f.code, f.error and f.error.code, str(f.error)) for f in facts.finished()}
    assert errors["a"] == ("4.04", "bad-reply", "bad-reply: response code 4.04, expected 2.05")
    assert errors["b"][:2] == ("2.05", "bad-reply") and "does not match rule regex" in errors["b"][2]
    assert errors["c"][:2] == ("5.03", "bad-reply")  # without expect.code any error class is bad


def test_once_steps_first_then_interval_and_weighted() -> None:
    rng = random.Random(7)
    steps = (step("register", method="POST", path="/rd", once=True, interval=None),
             step("telemetry", method="PUT", path="/t", interval=10.0),
             step("read a", path="/a", weight=3.0, interval=None), step("read b", path="/b", weight=1.0, interval=None))
    w, facts = workload(*steps, ping=PingConfig(interval=1.0, jitter=0.0), uniform=rng.uniform)
    w.start(0.0)
    [reg] = drain(w, 0.0)
    assert reg.code == 2 and drain(w, 1.9) == []  # nothing else before the registration ends
    w.receive(ack(reg, "2.01"), 10, 3.0)
    now, picks = 3.0, []
    for _ in range(400):
        for req in drain(w, now):
            picks.append(req.options_of(m.URI_PATH)[0])
            w.receive(ack(req), 10, now)
        now = w.get_timer()
    assert picks.count(b"t") == pytest.approx((now - 3.0) / 10, abs=1)
    share = picks.count(b"a") / (picks.count(b"a") + picks.count(b"b"))
    assert 0.65 < share < 0.85  # weights 3:1
    assert all(f.error is None for f in facts.finished())
    assert len(facts.started()) == len(facts.finished())


def test_retransmissions_counted_then_give_up_and_max_missed() -> None:
    w, facts = workload(step(interval=100.0), config=CoapConfig(ack_timeout=1.0, max_retransmit=2))
    w.start(0.0)
    first = drain(w, 0.0)
    assert drain(w, 1.0) == first and drain(w, 3.0) == first  # the same message again at 1 s, 3 s
    drain(w, 7.0)  # give up at 1 * (2**3 - 1) = 7 s
    [timeout] = facts.finished()
    assert timeout.error is not None and timeout.error.code == "coap-timeout" and timeout.retransmits == 2
    assert timeout.sent_bytes == 3 * (len(m.encode(first[0])) + 29) and w.requests_sent == 1
    w2, _ = workload(step(interval=1.0), config=CoapConfig(ack_timeout=1.0, max_retransmit=0))
    w2.start(0.0)
    with pytest.raises(CoapTimeout, match="3 CoAP requests in a row unanswered"):
        for t in range(10):
            drain(w2, float(t))


def test_reset_and_ping() -> None:
    w, facts = workload(step("get"), step("ping", ping=True))
    w.start(0.0)
    get, ping = drain(w, 0.0)
    assert m.encode(ping) == m.empty(m.CON, ping.mid)
    w.receive(m.empty(m.RST, get.mid), 4, 0.1)
    w.receive(m.empty(m.RST, ping.mid), 4, 0.2)
    by_kind = {f.kind: f for f in facts.finished()}
    get_error = by_kind["get"].error
    assert get_error is not None and get_error.code == "coap-reset" and by_kind["get"].code == "RST"
    assert by_kind["ping"].error is None and by_kind["ping"].code == "RST" and by_kind["ping"].elapsed == 0.2


def test_separate_response_is_acked_and_counted_once() -> None:
    w, facts = workload(step(path="/async"))
    w.start(0.0)
    [req] = drain(w, 0.0)
    assert w.receive(m.empty(m.ACK, req.mid), 4, 0.1) and drain(w, 0.1) == []
    con = m.encode(m.Message(m.CON, m.CONTENT, 0x4242, req.token, (), b"done"))
    assert w.receive(con, 30, 2.0)
    assert drain(w, 2.0) == [m.Message(m.ACK, m.EMPTY, 0x4242)]
    assert w.receive(con, 30, 2.5) and drain(w, 2.5) == [m.Message(m.ACK, m.EMPTY, 0x4242)]
    [done] = facts.finished()
    assert done.error is None and done.elapsed == 2.0 and done.received_bytes == 34


def notification(req: m.Message, seq: int, mid: int) -> bytes:
    return m.encode(m.Message(m.CON, m.CONTENT, mid, req.token, ((m.OBSERVE, m.encode_uint(seq)),), b"x"))


def test_observe_notifications_are_facts_and_the_window_holds() -> None:
    w, facts = workload(step("time", path="/time", observe=True, observe_for=30.0, interval=60.0))
    w.start(0.0)
    [reg] = drain(w, 0.0)
    w.receive(ack(reg, options=((m.OBSERVE, b"\x02"),)), 20, 0.5)
    [registered] = facts.finished("time")
    assert registered.error is None and w.outstanding == 0
    for i, (seq, at) in enumerate([(3, 1.5), (5, 3.5), (4, 4.0), (6, 6.5)]):
        w.receive(notification(reg, seq, 100 + i), 25, at)
        assert drain(w, at) == [m.Message(m.ACK, m.EMPTY, 100 + i)]
    w.receive(notification(reg, 6, 103), 25, 7.0)  # a repeat: ACKed again, not counted
    assert drain(w, 7.0) == [m.Message(m.ACK, m.EMPTY, 103)]
    notes = facts.finished("time notification")
    assert [n.elapsed for n in notes] == [1.0, 2.0, 3.0] and w.stale_notifications == 1 and w.notifications == 3
    assert len(facts.started("time notification")) == 3 and all(n.received_bytes == 25 for n in notes)
    [dereg] = drain(w, 30.5)
    assert dereg.option(m.OBSERVE) == b"\x01" and dereg.token == reg.token
    w.receive(ack(dereg), 10, 30.6)
    assert len(facts.finished("time")) == 1  # the deregistration is part of the observation, not a request
    [again] = drain(w, 60.0)  # the window freed: the next registration on the interval
    assert again.option(m.OBSERVE) == b"" and again.token != reg.token


def test_in_flight_window_and_fail() -> None:
    w, facts = workload(step(in_flight=2, interval=1.0, confirmable=False, timeout=100.0))
    w.start(0.0)
    assert len(drain(w, 0.0)) == 1 and len(drain(w, 1.0)) == 1 and drain(w, 2.0) == []  # two at most
    assert w.outstanding == 2
    w.fail(PeerClosed(), 2.5)
    assert [f.error.code for f in facts.finished() if f.error] == ["peer-closed", "peer-closed"]
    assert w.outstanding == 0 and w.get_timer() < float("inf")
    assert len(facts.finished()) == len(facts.started()) == 2


def test_abandon_fails_the_request() -> None:
    w, facts = workload(step())
    w.start(0.0)
    assert w.poll(0.0) is not None
    w.abandon(SocketError("too big"))
    [f] = facts.finished()
    assert f.error is not None and f.error.code == "socket-error" and w.requests_sent == 0


def test_templates_per_device() -> None:
    plan = CoapPlan.build([step(path="/dev/{n}", query=("seq={seq}",), payload=Payload(text="{target}:{name}"),
                                method="PUT")], ping=NO_JITTER)
    assert plan.device_fields and plan.for_device(n=1, target="x") is not plan
    facts = Facts()
    w = plan.for_device(n=42, target="gw9").workload("dev42", "gw9", facts)
    w.start(0.0)
    [req] = drain(w, 0.0)
    assert req.options_of(m.URI_PATH) == [b"dev", b"42"] and req.option(m.URI_QUERY) == b"seq=1"
    assert req.payload == b"gw9:dev42"
    fixed = CoapPlan.build([step()])
    assert fixed.for_device(n=1, target="x") is fixed
    with pytest.raises(ValueError, match="no coap"):
        CoapPlan.build([RequestStep("plain", payload=Payload())])
    with pytest.raises(ValueError, match="block size"):
        CoapPlan.build([step(block_size=100)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40),
                          st.tuples(st.integers(0, 3), st.integers(0, 255), st.binary(max_size=8),
                                    st.binary(max_size=30))), max_size=30))
def test_hostile_replies_never_raise_and_the_numbers_add_up(replies: list[object]) -> None:
    w, facts = workload(step("a", in_flight=3, interval=0.5), step("o", observe=True, observe_for=2.0, interval=3.0),
                        step("big", block_size=16, interval=1.0))
    w.start(0.0)
    now, reqs = 0.0, drain(w, 0.0)
    for item in replies:
        if isinstance(item, bytes):
            datagram = item
        else:
            mtype, code, tail, payload = item  # type: ignore[misc]
            base = reqs[len(payload) % len(reqs)] if reqs else m.Message(0, 0, 0)
            # A reply near a real one: its mid and token, hostile options and payload.
            datagram = m.header(mtype, code, base.mid, base.token) + tail + payload
        w.receive(datagram, len(datagram), now)
        now += 0.3
        try:
            reqs = drain(w, now) or reqs
        except LoadgenError as exc:
            assert exc.code == "coap-timeout"
            break
    assert len(facts.started()) == len(facts.finished()) + w.outstanding


def test_a_closed_gate_begins_no_request_and_still_retransmits_what_is_outstanding() -> None:
    """The run's stop closes its plans' gate (:class:`~loadgen.traffic.workload.Gate`): no request
    begins, while a confirmable request outstanding is still retransmitted and answered."""
    gate, facts = Gate(), Facts()
    w = CoapPlan.build([step(path="/time")], DEFAULT, NO_JITTER, gate).workload("dev1", "gw1", facts,
                                                                                 uniform=lambda a, b: a)
    w.start(0.0)
    [req] = drain(w, 0.0)
    gate.open = False
    [again] = drain(w, 2.0)  # the retransmission goes
    assert again.mid == req.mid
    assert w.receive(ack(req), 40, 2.1)
    assert drain(w, 5.0) == [] and len(facts.started()) == 1  # the next request, due at 5.0, does not begin
    assert [f.error for f in facts.finished()] == [None]
    assert w.get_timer() == float("inf")  # nothing due: a transport re-arming its timer must not spin
