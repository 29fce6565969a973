"""Issue 11, the client findings: a loadgen client (:class:`DtlsAssociation`) against a
hostile server (:mod:`.hostile_server`, in this process).

Each test checks what a user cares about: the attacked association fails with a
distinct code or carries on (never a hang, a flood, a stall or gigabytes), and the
other associations of the same process (legitimate ones, to a real ``serve dtls``)
keep completing pings during and after.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

import gevent
import pytest

from loadgen.coap.plan import CoapPlan
from loadgen.protocol import dtls_contexts
from loadgen.scenario.model import CoapConfig, CoapRequest, PingConfig, RequestStep
from loadgen.stats.facts import FanOut, LogSink
from loadgen.stats.sink import StatsSink
from loadgen.transport.dtls_association import DtlsAssociation

from .hostile import hwm_kib, reset_hwm
from .hostile_server import HostileServer
from .legit import LoopLag, attacked, wait_until

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def lag() -> Iterator[LoopLag]:
    watch = LoopLag()
    yield watch
    watch.stop()


def test_client_hello_verify_loop_is_capped(target, lag: LoopLag) -> None:
    """A server answering every ClientHello with a HelloVerifyRequest carrying a new cookie
    got ~33,000 ClientHellos a second from 5 clients until the handshake timeout, which
    then read "no handshake after 0 retransmissions". Now: a few, then hello-verify-loop."""
    t = target()
    with HostileServer(t.key, "hvr-loop") as server:
        totals = StatsSink()
        victims = [attacked(server, t.key, totals, name=f"victim-{i}", handshake_timeout=3.0) for i in range(5)]
        greenlets = [gevent.spawn(v.run) for v in victims]
        t.legit.assert_served("during the HelloVerifyRequest loop")
        gevent.joinall(greenlets, timeout=6)
        ended = [g.value for g in greenlets if g.ready()]
        gevent.killall(greenlets)
    assert len(ended) == 5, "an association was still handshaking after its timeout"
    assert server.stats.client_hellos <= 5 * 20, f"{server.stats.client_hellos} ClientHellos from 5 clients"
    assert dict(totals.handshakes.failures) == {"hello-verify-loop": 5}, dict(totals.handshakes.failures)
    assert lag.worst < 0.5, f"event loop stalled {lag.worst:.2f} s"
    t.assert_served("after the HelloVerifyRequest loop")


def test_client_rerequests_incomplete_flight(target) -> None:
    """Once a ServerHello arrived, an incomplete server flight was never re-requested:
    our ClientHello must go out again until the flight is complete."""
    t = target()
    with HostileServer(t.key, "incomplete") as server:
        totals = StatsSink()
        victim = attacked(server, t.key, totals, handshake_timeout=8.0)
        greenlet = gevent.spawn(victim.run)
        try:
            assert wait_until(lambda: totals.handshakes.completed + totals.handshakes.failed >= 1, 6.0), (
                "no handshake within 6 s: the incomplete flight was never re-requested")
        finally:
            greenlet.kill()
    assert totals.handshakes.completed == 1, dict(totals.handshakes.failures)
    assert server.stats.repeats_after_server_hello >= 1


def test_client_authentic_record_number_jumps(target, lag: LoopLag) -> None:
    """Echoes whose record numbers jump by 2^33 then 2^47, sealed with the session's real
    keys: the client allocated a 2^33-bit window (2.3 GB, an 11 s event-loop stall). Now:
    O(1), the jumped echoes are accepted, the association and the process carry on."""
    t = target()
    with HostileServer(t.key, "seq-jump") as server:
        totals = StatsSink()
        reset_hwm()
        hwm_before = hwm_kib()
        greenlet = gevent.spawn(attacked(server, t.key, totals).run)
        try:
            t.legit.assert_served("during the jumps")
            assert wait_until(lambda: totals.pings.completed >= 4, 5.0), (
                f"pings {totals.pings.completed} completed, {dict(totals.pings.failures)}")
            assert not greenlet.ready(), f"the association ended: {greenlet.value}"
        finally:
            greenlet.kill()
        growth = hwm_kib() - hwm_before
    assert server.stats.hostile_sent == 2, "the jumped records did not go out"
    assert totals.pings.failed == 0, dict(totals.pings.failures)
    assert lag.worst < 0.5, f"event loop stalled {lag.worst:.2f} s"
    assert growth < 64 * 1024, f"peak memory grew by {growth} KiB"


class CountingHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def test_client_varying_reply_sizes_stay_throttled(target) -> None:
    """The "unexpected or late reply of N bytes" warning had N in its throttle key: a
    server varying reply sizes produced 11,503 lines in 12 s. Now: throttled as one kind."""
    t = target()
    handler = CountingHandler()
    logger = logging.getLogger("loadgen")
    logger.addHandler(handler)
    try:
        with HostileServer(t.key, "sizes") as server:
            totals = StatsSink()
            greenlet = gevent.spawn(attacked(server, t.key, FanOut([totals, LogSink()])).run)
            try:
                assert wait_until(lambda: totals.pings.completed >= 10, 5.0), dict(totals.pings.failures)
            finally:
                greenlet.kill()
    finally:
        logger.removeHandler(handler)
    unasked = server.stats.hostile_sent
    lines = [line for line in handler.lines if "reply" in line]
    assert unasked >= 400, f"only {unasked} unasked replies went out"
    assert len(lines) <= 25, f"{len(lines)} warning lines for {unasked} unasked replies: {lines[:3]}"
    t.assert_served("after the unasked replies")


def test_client_survives_garbage_and_huge_datagrams(target, lag: LoopLag) -> None:
    """Garbage, records whose length lies, and 64 KB datagrams after each echo: dropped;
    the association keeps pinging, the process keeps its memory."""
    t = target()
    with HostileServer(t.key, "garbage") as server:
        totals = StatsSink()
        reset_hwm()
        hwm_before = hwm_kib()
        greenlet = gevent.spawn(attacked(server, t.key, totals).run)
        try:
            assert wait_until(lambda: totals.pings.completed >= 10, 5.0), dict(totals.pings.failures)
            t.legit.assert_served("during the garbage")
            assert not greenlet.ready(), f"the association ended: {greenlet.value}"
        finally:
            greenlet.kill()
        growth = hwm_kib() - hwm_before
    assert server.stats.hostile_sent >= 40
    assert totals.pings.failed == 0, dict(totals.pings.failures)
    assert lag.worst < 0.5, f"event loop stalled {lag.worst:.2f} s"
    assert growth < 32 * 1024, f"peak memory grew by {growth} KiB"


def test_client_coap_survives_lies_inside_an_authentic_session(target, lag: LoopLag) -> None:
    """CoAP answers that lie (wrong codes and types, broken and unknown critical options, an endless
    Block2, separate responses, RSTs, unknown tokens, garbage), sealed with the session's real keys and
    carrying the request's real message id and token: every request ends once, with a code, the
    association and the loop carry on, and the real answers among them still complete requests."""
    t = target()
    plan = CoapPlan.build([RequestStep("get", coap=CoapRequest(path="/temp"), interval=0.05, in_flight=4,
                                       timeout=0.5)], CoapConfig(ack_timeout=0.1, ack_random_factor=1.0),
                          PingConfig(interval=0.05, jitter=0.0, max_missed=10**6))
    with HostileServer(t.key, "coap") as server:
        totals = StatsSink()
        victim = DtlsAssociation("victim", "hostile", server.address, dtls_contexts.client_context(),
                                 FanOut([totals, LogSink()]), identity=b"victim", key=t.key, ping=plan)
        greenlet = gevent.spawn(victim.run)
        try:
            assert wait_until(lambda: totals.counted("get").completed >= 10, 10.0), dict(totals.counted("get").failures)
            t.legit.assert_served("during the CoAP lies")
            assert not greenlet.ready(), f"the association ended: {greenlet.value}"
        finally:
            greenlet.kill()
    cell = totals.counted("get")
    assert server.stats.hostile_sent >= 100
    assert cell.completed + cell.failed <= cell.attempted <= cell.completed + cell.failed + 4  # at most the window
    assert "internal-error" not in cell.failures and cell.completed >= 10, (cell.completed, dict(cell.failures))
    assert set(cell.failures) <= {"bad-reply", "coap-reset", "coap-format", "coap-timeout"}, dict(cell.failures)
    assert lag.worst < 0.5, f"event loop stalled {lag.worst:.2f} s"
