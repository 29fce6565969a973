"""CoapEndpoint driven by hand (time passed in) against a scripted server written with the codec."""

from __future__ import annotations

import pytest

from loadgen.coap import message as m
from loadgen.coap.endpoint import MAX_ANSWERS, CoapEndpoint, exchange_lifetime, max_transmit_wait
from loadgen.coap.exchange import Failed, Notification, ObserveEnded, Request, Response, Unmatched
from loadgen.protocol.errors import BadReply, CoapFormatError, CoapReset, CoapTimeout, LocalProtocolError
from loadgen.scenario.model import CoapConfig


def low(a: float, b: float) -> float:
    """A "random" draw that always gives the low end: the schedule is exact."""
    return a


def sent(ep: CoapEndpoint) -> list[m.Message]:
    """Every datagram queued, decoded."""
    out = []
    while (item := ep.pop_datagram()) is not None:
        out.append(m.decode(item[0]))
    return out


def one(ep: CoapEndpoint) -> m.Message:
    msgs = sent(ep)
    assert len(msgs) == 1, msgs
    return msgs[0]


def reply(req: m.Message, mtype: int = m.ACK, code: int = m.CONTENT, payload: bytes = b"", *,
          mid: int | None = None, options: m.Options = ()) -> bytes:
    """The server's answer to ``req`` (piggybacked ACK by default; a CON/NON separate one with ``mid``)."""
    return m.encode(m.Message(mtype, code, req.mid if mid is None else mid, req.token, options, payload))


def test_piggybacked_response_matched_by_token() -> None:
    ep = CoapEndpoint(uniform=low)
    ex = ep.request(Request.build("GET", "/sensors/temp", ("unit=C",)), 0.0)
    req = one(ep)
    assert (req.mtype, req.code, len(req.token)) == (m.CON, 1, 4)
    assert req.options_of(m.URI_PATH) == [b"sensors", b"temp"] and req.option(m.URI_QUERY) == b"unit=C"
    events = ep.receive(reply(req, payload=b"21.5"), 0.1)
    assert events == [Response(ex, m.decode(reply(req, payload=b"21.5")), b"21.5")]
    assert ep.in_flight == 0 and ex.retransmits == 0 and ex.received_bytes == len(reply(req, payload=b"21.5"))
    # A second request gets a fresh message id and token.
    ep.request(Request.build(), 1.0)
    nxt = one(ep)
    assert nxt.mid == (req.mid + 1) & 0xFFFF and nxt.token != req.token
    # A piggybacked ACK whose token is not the request's answers nothing.
    bad = m.encode(m.Message(m.ACK, m.CONTENT, nxt.mid, b"zzzz"))
    assert isinstance(ep.receive(bad, 1.1)[0], Unmatched)


def test_separate_response_acked_and_its_repeat_suppressed() -> None:
    ep = CoapEndpoint(uniform=low)
    ex = ep.request(Request.build("GET", "/async"), 0.0)
    req = one(ep)
    assert ep.receive(m.empty(m.ACK, req.mid), 0.05) == []  # empty ACK: the response follows
    assert ep.get_timer() == max_transmit_wait(ep.config)  # no retransmission any more: only the deadline
    assert ep.handle_timer(10.0) == [] and sent(ep) == []
    con = reply(req, m.CON, payload=b"late", mid=0x0BAD)
    events = ep.receive(con, 3.0)
    assert [type(e) for e in events] == [Response] and events[0].payload == b"late"  # type: ignore[union-attr]
    assert one(ep) == m.Message(m.ACK, m.EMPTY, 0x0BAD)  # the client ACKs the CON response
    # The server did not see our ACK and sends the response again: ACKed again, not counted.
    assert ep.receive(con, 4.0) == []
    assert one(ep) == m.Message(m.ACK, m.EMPTY, 0x0BAD)
    assert ex.received_bytes == 4 + len(con)  # the repeat came after the request ended
    # A NON response needs no ACK.
    ep.request(Request.build(), 5.0)
    req2 = one(ep)
    ep.receive(m.empty(m.ACK, req2.mid), 5.1)
    assert [type(e) for e in ep.receive(reply(req2, m.NON, mid=9), 5.2)] == [Response] and sent(ep) == []


def test_reset_fails_the_request() -> None:
    ep = CoapEndpoint(uniform=low)
    ex = ep.request(Request.build(), 0.0)
    req = one(ep)
    [event] = ep.receive(m.empty(m.RST, req.mid), 0.1)
    assert isinstance(event, Failed) and event.exchange is ex and isinstance(event.error, CoapReset)
    assert event.error.code == "coap-reset" and ep.in_flight == 0


def test_retransmission_schedule_and_give_up() -> None:
    config = CoapConfig(ack_timeout=2.0, ack_random_factor=1.5, max_retransmit=4)
    draws: list[tuple[float, float]] = []

    def draw(a: float, b: float) -> float:
        draws.append((a, b))
        return a

    ep = CoapEndpoint(config, uniform=draw)
    ex = ep.request(Request.build(), 0.0)
    first = ep.pop_datagram()
    assert first is not None and draws[-1] == (2.0, 3.0)  # the initial timeout in [ACK_TIMEOUT, x RANDOM_FACTOR]
    times = []
    for _ in range(4):
        at = ep.get_timer()
        assert ep.handle_timer(at - 1e-9) == [] and ep.pop_datagram() is None  # not before its time
        assert ep.handle_timer(at) == []
        again = ep.pop_datagram()
        assert again is not None and again[0] == first[0] and again[1] is ex  # the same message, the same id
        times.append(at)
    assert times == [2.0, 6.0, 14.0, 30.0] and ex.retransmits == 4
    assert ep.get_timer() == 62.0  # the fourth retransmission's timeout doubled once more
    [event] = ep.handle_timer(62.0)
    assert isinstance(event, Failed) and isinstance(event.error, CoapTimeout)
    assert "4 retransmissions" in str(event.error)
    assert ep.in_flight == 0 and ep.get_timer() == float("inf")
    # An ACK after a retransmission stops them.
    ep.request(Request.build(), 100.0)
    req = one(ep)
    ep.handle_timer(102.0)
    assert one(ep).mid == req.mid
    assert ep.receive(m.empty(m.ACK, req.mid), 102.5) == []
    assert ep.receive(m.empty(m.ACK, req.mid), 102.6) == []  # a repeated ACK: counted once
    assert ep.get_timer() == 100.0 + max_transmit_wait(config)


def test_deadline_and_window_bound() -> None:
    ep = CoapEndpoint(uniform=low, max_exchanges=2)
    ex = ep.request(Request.build(confirmable=False), 0.0, timeout=5.0)
    ep.request(Request.build(confirmable=False), 0.0, timeout=50.0)
    with pytest.raises(LocalProtocolError, match="2 CoAP exchanges"):
        ep.request(Request.build(), 0.0)
    assert [m.decode(d).mtype for d, _ in iter(ep.pop_datagram, None)] == [m.NON, m.NON]
    assert ep.get_timer() == 5.0
    [event] = ep.handle_timer(5.0)
    assert isinstance(event, Failed) and event.exchange is ex and isinstance(event.error, CoapTimeout)


def test_ping_is_answered_by_reset() -> None:
    ep = CoapEndpoint(uniform=low)
    ex = ep.ping(0.0)
    ping = one(ep)
    assert m.encode(ping) == m.empty(m.CON, ping.mid)
    [event] = ep.receive(m.empty(m.RST, ping.mid), 0.01)
    assert isinstance(event, Response) and event.exchange is ex and event.message.mtype == m.RST


def observe_msg(req: m.Message, seq: int, mid: int, mtype: int = m.CON, code: int = m.CONTENT) -> bytes:
    return reply(req, mtype, code, f"n{seq}".encode(), mid=mid, options=((m.OBSERVE, m.encode_uint(seq)),))


def test_observe_notifications_fresh_stale_duplicate_and_deregister() -> None:
    ep = CoapEndpoint(uniform=low)
    ex = ep.request(Request.build("GET", "/time", observe=True, observe_for=10.0), 0.0)
    reg = one(ep)
    assert reg.option(m.OBSERVE) == b""  # Observe: 0 registers
    first = reply(reg, options=((m.OBSERVE, m.encode_uint(5)),))
    [resp] = ep.receive(first, 0.5)
    assert isinstance(resp, Response) and ep.in_flight == 1
    [n1] = ep.receive(observe_msg(reg, 6, 100), 1.5)
    assert isinstance(n1, Notification) and n1.fresh and n1.interval == 1.0 and n1.exchange is ex
    assert one(ep) == m.Message(m.ACK, m.EMPTY, 100)  # a CON notification is ACKed
    assert ep.receive(observe_msg(reg, 6, 100), 1.6) == []  # its repeat: ACKed again, not counted
    assert one(ep) == m.Message(m.ACK, m.EMPTY, 100)
    [stale] = ep.receive(observe_msg(reg, 4, 101, m.NON), 2.0)  # reordered: older than the freshest
    assert isinstance(stale, Notification) and not stale.fresh and sent(ep) == []
    [n2] = ep.receive(observe_msg(reg, 7, 102, m.NON), 3.5)
    assert n2.fresh and n2.interval == 2.0  # type: ignore[union-attr]  # since the last fresh one
    # Wrap-around (RFC 7641 3.4): 2 after 2**24 - 2 is newer.
    ex.observe_seq = (1 << 24) - 2
    [n3] = ep.receive(observe_msg(reg, 2, 103, m.NON), 4.0)
    assert n3.fresh  # type: ignore[union-attr]
    # observe_for after the registration's response: GET Observe: 1 with the same token.
    assert ep.get_timer() == 10.5
    assert ep.handle_timer(10.5) == []
    dereg = one(ep)
    assert dereg.option(m.OBSERVE) == b"\x01" and dereg.token == reg.token and dereg.mid != reg.mid
    [late] = ep.receive(observe_msg(reg, 8, 104), 10.6)  # a notification crossing the deregistration
    assert isinstance(late, Notification)
    sent(ep)
    events = ep.receive(reply(dereg, payload=b"bye"), 10.7)
    assert [type(e) for e in events] == [Response, ObserveEnded] and events[1].exchange is ex  # type: ignore[union-attr]
    assert ep.in_flight == 0
    # Now the token is unknown: a further notification is answered by RST.
    assert isinstance(ep.receive(observe_msg(reg, 9, 105), 11.0)[0], Unmatched)
    assert one(ep) == m.Message(m.RST, m.EMPTY, 105)


def test_observe_ended_by_the_server() -> None:
    ep = CoapEndpoint(uniform=low)
    ex = ep.request(Request.build("GET", "/time", observe=True), 0.0)
    reg = one(ep)
    ep.receive(reply(reg, options=((m.OBSERVE, b"\x01"),)), 0.1)
    assert ep.get_timer() == float("inf")  # observe_for None: observed until the server ends it
    assert ep.receive(reply(reg, m.NON, m.code_int("4.04"), mid=7), 1.0) == [ObserveEnded(ex)]
    assert ep.in_flight == 0
    # A server that does not do Observe answers without the option: a plain response.
    ep.request(Request.build("GET", "/", observe=True), 2.0)
    reg2 = one(ep)
    assert [type(e) for e in ep.receive(reply(reg2), 2.1)] == [Response] and ep.in_flight == 0


def blocks(body: bytes, size: int) -> list[bytes]:
    return [body[i:i + size] for i in range(0, len(body), size)]


def test_block2_reassembly() -> None:
    body = bytes(range(256)) * 3
    ep = CoapEndpoint(uniform=low)
    ex = ep.request(Request.build("GET", "/big", block_size=64), 0.0)
    req = one(ep)
    assert m.decode_block(req.option(m.BLOCK2) or b"") == (0, False, 2)  # early negotiation
    parts = blocks(body, 64)
    for num, part in enumerate(parts):
        more = num < len(parts) - 1
        events = ep.receive(reply(req, payload=part, options=((m.BLOCK2, m.encode_block(num, more, 2)),)), num + 0.5)
        if more:
            assert events == []
            req = one(ep)
            assert m.decode_block(req.option(m.BLOCK2) or b"") == (num + 1, False, 2) and req.token == ex.token
        else:
            assert [type(e) for e in events] == [Response] and events[0].payload == body  # type: ignore[union-attr]
    assert ep.in_flight == 0


def test_block2_out_of_order_and_bound() -> None:
    ep = CoapEndpoint(uniform=low, max_body=40)
    ep.request(Request.build("GET", "/big"), 0.0)
    req = one(ep)
    ep.receive(reply(req, payload=b"a" * 16, options=((m.BLOCK2, m.encode_block(0, True, 0)),)), 0.1)
    req = one(ep)
    wrong = reply(req, m.NON, payload=b"b" * 16, mid=555, options=((m.BLOCK2, m.encode_block(5, True, 0)),))
    assert isinstance(ep.receive(wrong, 0.2)[0], Unmatched)
    ep.receive(reply(req, payload=b"b" * 16, options=((m.BLOCK2, m.encode_block(1, True, 0)),)), 0.3)
    req = one(ep)
    [event] = ep.receive(reply(req, payload=b"c" * 16, options=((m.BLOCK2, m.encode_block(2, True, 0)),)), 0.4)
    assert isinstance(event, Failed) and isinstance(event.error, BadReply) and "over 40 bytes" in str(event.error)
    assert ep.in_flight == 0


def test_hostile_inputs_are_unmatched_or_fail_one_request() -> None:
    ep = CoapEndpoint(uniform=low, dedup_size=16)
    ex = ep.request(Request.build(), 0.0)
    req = one(ep)
    for garbage in (b"", b"\x40", bytes([0x4A, 0x45, 0, 1]) + b"x" * 10, b"\x40\x45\x00\x01\xbe\xff\xff",
                    b"\x60\x45\x00\x01\xd5", b"\x40\x45\x00\x01\xf0"):
        [event] = ep.receive(garbage, 0.1)
        assert isinstance(event, Unmatched) and event.reason
    # Responses with unknown tokens: RST for a CON; the dedup cache stays bounded.
    for mid in range(200):
        assert isinstance(ep.receive(m.encode(m.Message(m.CON, m.CONTENT, mid, b"?")), 0.2)[0], Unmatched)
    assert len(ep._seen) <= 16
    answers = sent(ep)  # (the request went out before: what is queued is RSTs, at most MAX_ANSWERS)
    assert {msg.mtype for msg in answers} == {m.RST} and len(answers) == MAX_ANSWERS
    # A request from the server: we serve nothing.
    assert isinstance(ep.receive(m.encode(m.Message(m.CON, 1, 999, b"t")), 0.3)[0], Unmatched)
    assert one(ep) == m.Message(m.RST, m.EMPTY, 999)
    # An unknown critical option in the response: the request fails, the message is rejected.
    bad = reply(req, m.CON, mid=4242, options=((9, b"x"),))
    [event] = ep.receive(bad, 0.4)
    assert isinstance(event, Failed) and event.exchange is ex and isinstance(event.error, CoapFormatError)
    assert "unknown critical option 9" in str(event.error) and one(ep) == m.Message(m.RST, m.EMPTY, 4242)
    # An unknown elective option is fine.
    ep.request(Request.build(), 1.0)
    req = one(ep)
    assert [type(e) for e in ep.receive(reply(req, options=((2000, b"x"),)), 1.1)] == [Response]


def test_dedup_entries_expire() -> None:
    ep = CoapEndpoint(uniform=low)
    ep.request(Request.build(), 0.0)
    req = one(ep)
    ep.receive(m.empty(m.ACK, req.mid), 0.1)
    con = reply(req, m.CON, mid=77)
    ep.receive(con, 0.2)
    sent(ep)
    life = exchange_lifetime(ep.config)
    assert life == pytest.approx(2.0 * 15 * 1.5 + 200 + 2.0)  # RFC 7252 4.8.2's 247 s
    assert ep.receive(con, 0.2 + life - 1) == []  # still remembered: ACKed again
    assert one(ep).mtype == m.ACK
    # After EXCHANGE_LIFETIME the id is new again: an unknown token now, so a RST.
    assert isinstance(ep.receive(con, 0.2 + life + 1)[0], Unmatched)
    assert one(ep).mtype == m.RST
