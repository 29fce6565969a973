"""The Python API's CoAP client: its workload sans-I/O (a scripted server, time by hand), then CoapUser
over real DTLS against libcoap's coap-server-openssl and, for timeouts, loadgen's echo server."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from typing import Any

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a locustfile
import pytest
from locust.env import Environment
from test_api_calls import Facts

from loadgen.coap import message as m
from loadgen.coap.exchange import Request
from loadgen.locust.api import CoapUser, api_run
from loadgen.locust.client import RequestFailed
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import PeerClosed
from loadgen.scenario.model import CoapConfig, DtlsConfig
from loadgen.servers.dtls import DtlsServer
from loadgen.stats.facts import Finished
from loadgen.traffic.calls import reply_check
from loadgen.traffic.coap_calls import CoapCall, CoapCallWorkload, CoapResponse

BOUND = 30.0


def workload(sink: Facts) -> CoapCallWorkload:
    w = CoapCallWorkload("gw", sink, CoapConfig(), uniform=random.Random(7).uniform)
    w.start(0.0)
    return w


def sent(w: CoapCallWorkload, now: float) -> m.Message:
    datagram = w.poll(now)
    assert datagram is not None
    w.sent(len(datagram) + 29)
    return m.decode(datagram)


def answer(request: m.Message, code: str, payload: bytes = b"", options: m.Options = ()) -> bytes:
    return m.encode(m.Message(m.ACK, m.code_int(code), request.mid, request.token, options, payload))


def test_a_piggybacked_response_ends_the_call_with_its_code() -> None:
    sink, ended = Facts(), []
    w = workload(sink)
    call = CoapCall("GET /temp", Request.build("GET", "/temp"), expect_code="2.05", check=reply_check(b"21"),
                    notify=ended.append)
    w.submit(call, 1.0)
    request = sent(w, 1.0)
    assert request.code == m.METHODS["GET"] and request.options_of(m.URI_PATH) == [b"temp"]
    assert w.receive(answer(request, "2.05", b"21.5", ((m.CONTENT_FORMAT, b""),)), 40, 1.25)
    assert ended == [call] and call.error is None
    assert call.response == CoapResponse("2.05", b"21.5", call.response.message) and call.response.content_format == 0
    finished = [f for f in sink.seen if isinstance(f, Finished)]
    assert [(f.kind, f.elapsed, f.code, f.retransmits, f.received_bytes) for f in finished] == \
        [("GET /temp", 0.25, "2.05", 0, 40)]
    assert w.poll(1.3) is None and w.outstanding == 0


@pytest.mark.parametrize(("code", "expect_code", "check", "error"), [
    ("4.04", None, None, "bad-reply"), ("2.05", "2.04", None, "bad-reply"), ("2.05", None, b"x", "bad-reply"),
    ("2.04", None, None, None),
])
def test_the_response_is_judged_by_code_then_payload(code: str, expect_code: str | None, check: bytes | None,
                                                       error: str | None) -> None:
    sink = Facts()
    w = workload(sink)
    call = CoapCall("r", Request.build("PUT", "/x", payload=b"1"), expect_code=expect_code, check=reply_check(check))
    w.submit(call, 0.0)
    w.receive(answer(sent(w, 0.0), code, b"body"), 30, 0.1)
    assert (call.error.code if call.error else None) == error
    assert sink.kinds["r"].completed + sink.kinds["r"].failed == 1


def test_a_reset_fails_the_call_and_a_ping_takes_it_as_the_answer() -> None:
    sink = Facts()
    w = workload(sink)
    get, ping = CoapCall("get", Request.build("GET", "/")), CoapCall("ping", Request.ping_request())
    w.submit(get, 0.0)
    w.submit(ping, 0.0)
    first, second = sent(w, 0.0), sent(w, 0.0)
    w.receive(m.empty(m.RST, first.mid), 33, 0.1)
    w.receive(m.empty(m.RST, second.mid), 33, 0.2)
    assert get.error is not None and get.error.code == "coap-reset"
    assert ping.error is None and ping.response is not None and ping.response.code == "RST"
    codes = {f.kind: f.code for f in sink.seen if isinstance(f, Finished)}
    assert codes == {"get": "RST", "ping": "RST"}


def test_an_unanswered_con_is_retransmitted_then_times_out_and_the_association_stays_up() -> None:
    sink, ended = Facts(), []
    w = workload(sink)
    call = CoapCall("get", Request.build("GET", "/"), timeout=100.0, notify=ended.append)
    w.submit(call, 0.0)
    first = sent(w, 0.0)
    now, copies = 0.0, 0
    while not ended and now < 100:
        now = w.get_timer()
        while (datagram := w.poll(now)) is not None:
            assert m.decode(datagram).mid == first.mid  # the same message again
            w.sent(len(datagram))
            copies += 1
    assert copies == 4 and call.error is not None and call.error.code == "coap-timeout"  # MAX_RETRANSMIT
    finished = [f for f in sink.seen if isinstance(f, Finished)]
    assert finished[0].retransmits == 4 and not w.closed
    later = CoapCall("get", Request.build("GET", "/"))
    w.submit(later, now)  # the token tells a late response apart: the association goes on
    assert not w.receive(answer(first, "2.05"), 30, now + 0.1)  # the late one answers nothing ...
    assert later.error is None and not later.done  # ... and is not taken for the new call's


def test_an_observation_counts_each_fresh_notification_then_deregisters() -> None:
    sink, heard, ends = Facts(), [], []
    w = workload(sink)
    call = CoapCall("watch", Request.build("GET", "/time", observe=True), on_notification=heard.append,
                    on_end=ends.append)
    w.submit(call, 0.0)
    registration = sent(w, 0.0)
    assert registration.option(m.OBSERVE) == b""
    w.receive(answer(registration, "2.05", b"t0", ((m.OBSERVE, b"\x01"),)), 30, 0.1)
    assert call.done and call.observing and call.error is None
    for seq, at in ((2, 1.1), (4, 2.1), (3, 2.2)):  # the third is older than the freshest: not counted
        w.receive(m.encode(m.Message(m.NON, m.CONTENT, 100 + seq, registration.token, ((m.OBSERVE, bytes([seq])),),
                                     b"t%d" % seq)), 30, at)
    assert [r.payload for r in heard] == [b"t2", b"t4"]
    notes = sink.kinds["watch notification"]
    assert (notes.attempted, notes.completed) == (2, 2)
    assert w.deregister(call, 3.0)
    dereg = sent(w, 3.0)
    assert dereg.option(m.OBSERVE) == b"\x01" and dereg.token == registration.token
    w.receive(answer(dereg, "2.05", b"t5"), 30, 3.1)
    assert ends == [None] and not call.observing
    assert sink.kinds["watch"].attempted == 1  # the deregistration is no attempt of its own


def test_the_association_ending_fails_the_calls_and_ends_observations() -> None:
    sink, ends = Facts(), []
    w = workload(sink)
    watch = CoapCall("watch", Request.build("GET", "/time", observe=True), on_end=ends.append)
    w.submit(watch, 0.0)
    registration = sent(w, 0.0)
    w.receive(answer(registration, "2.05", b"t", ((m.OBSERVE, b"\x01"),)), 30, 0.1)
    pending = CoapCall("get", Request.build("GET", "/"))
    w.submit(pending, 0.2)
    sent(w, 0.2)
    w.fail(PeerClosed("shutdown alert received"), 0.5)
    assert pending.error is not None and pending.error.code == "peer-closed" and sink.kinds["get"].failed == 1
    assert len(ends) == 1 and ends[0] is not None and ends[0].code == "peer-closed"
    with pytest.raises(Exception, match="not up"):
        w.submit(CoapCall("get", Request.build("GET", "/")), 1.0)


# -- over real DTLS ------------------------------------------------------------------------------

needs_libcoap = pytest.mark.skipif(shutil.which("coap-server-openssl") is None,
                                   reason="coap-server-openssl (libcoap3-bin) not installed")
KEY = b"api-secret-key"


@pytest.fixture(scope="module")
def libcoap() -> Iterator[Any]:
    from test_coap_libcoap import start_libcoap

    server = start_libcoap(KEY)
    try:
        yield server
    finally:
        server.stop()


def coap_user(address: tuple[str, int], **attrs: Any) -> tuple[CoapUser, Environment]:
    host, port = address
    cls = type("Device", (CoapUser,), {"target": f"coaps://{host}:{port}", "psk_key": KEY.hex(), "timeout": 10.0,
                                       "psk_identity": "api-{n}", **attrs})
    env = Environment(user_classes=[cls])
    return cls(env), env


def exact(env: Environment, kind: str) -> tuple[int, int, int, int]:
    cell = api_run(env).session.stats_sink.kinds[kind]
    return cell.attempted, cell.completed, cell.failed, cell.in_flight


@needs_libcoap
def test_a_coap_user_gets_pings_and_fails_a_4_04_with_its_code(libcoap: Any) -> None:
    user, env = coap_user(libcoap.dtls_address)
    fired: list[tuple[str, str, object]] = []
    env.events.request.add_listener(lambda request_type, name, exception, **_: fired.append((request_type, name,
                                                                                              exception)))
    with gevent.Timeout(BOUND):
        page = user.client.get("/", expect_code="2.05", expect=b"This is a test server")
        assert page.code == "2.05"
        assert user.client.get("/", block_size=16).payload == page.payload  # reassembled from Block2
        assert user.client.ping().code == "RST"
        with pytest.raises(RequestFailed) as failed:
            user.client.get("/nothing-here", name="missing")
        assert failed.value.code == "bad-reply" and "4.04" in str(failed.value)
        separate = user.client.get("/async", query=("1",), name="async")  # an empty ACK, then the response
        assert separate.code == "2.05"
        user.client.close()
    assert exact(env, "GET /") == (2, 2, 0, 0) and exact(env, "missing") == (1, 0, 1, 0)
    assert exact(env, "async")[:2] == (1, 1) and exact(env, "ping") == (1, 1, 0, 0)
    target = "{}:{}".format(*libcoap.dtls_address)
    assert ("COAP", f"{target} missing") in [(t, n) for t, n, e in fired if e is not None]
    assert sum(1 for t, n, _ in fired if t == "COAP") == 6  # five requests and the handshake


@needs_libcoap
def test_an_observation_counts_the_servers_notifications(libcoap: Any) -> None:
    user, env = coap_user(libcoap.dtls_address)
    with gevent.Timeout(BOUND):
        watched = user.client.observe("/time", duration=2.6, name="clock")  # libcoap notifies once a second
        assert watched.ended and watched.error is None and watched.response is not None
        assert watched.response.code == "2.05" and 2 <= watched.notifications <= 3
        handle = user.client.observe("/time", name="clock")
        assert handle.wait(3.0) is not None and not handle.ended
        handle.cancel()
        assert handle.ended
        user.client.close()
    notes = api_run(env).session.stats_sink.kinds["clock notification"]
    assert notes.completed == watched.notifications + handle.notifications and notes.failed == 0
    assert exact(env, "clock") == (2, 2, 0, 0)


@needs_libcoap
def test_a_wrong_key_fails_the_coap_users_handshake(libcoap: Any) -> None:
    user, env = coap_user(libcoap.dtls_address, psk_key=b"not-the-key".hex(), dtls=DtlsConfig(handshake_timeout=3.0))
    with gevent.Timeout(BOUND), pytest.raises(RequestFailed) as failed:
        user.client.get("/")
    assert failed.value.code not in ("local-error", "internal-error")
    assert exact(env, "handshake")[2] == 1


def test_a_coap_request_the_server_does_not_answer_is_retransmitted_then_times_out() -> None:
    # loadgen's reference server with one datagram's worth of tokens (refilled after 1000 s) echoes the first
    # CON (a request back, which the client answers with RST) and drops the rest: the request is never ACKed.
    server = DtlsServer(KeyStore(shared=Secret(KEY)), max_ping_rate=0.001).start()
    try:
        user, env = coap_user(server.address, coap=CoapConfig(ack_timeout=0.1, ack_random_factor=1.0,
                                                             max_retransmit=2))
        with gevent.Timeout(BOUND):
            with pytest.raises(RequestFailed) as failed:
                user.client.get("/temp")
            assert failed.value.code == "coap-timeout" and user.client.connected
            user.client.close()
    finally:
        server.stop()
    cell = api_run(env).session.stats_sink.kinds["GET /temp"]
    assert (cell.attempted, cell.failed, cell.retransmits) == (1, 1, 2)
