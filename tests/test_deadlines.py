"""The reference servers' deadline heap (loadgen.servers.deadlines) on gevent's real loop: peers come
due in order, an earlier deadline wakes the sleeping loop, stale entries stay bounded, and one
peer's raising step neither stops the loop nor the others."""

from __future__ import annotations

import math
import time

import gevent
import pytest

from loadgen.servers.deadlines import SLACK, Deadlines

pytestmark = pytest.mark.timeout(30)


class Peer:
    def __init__(self) -> None:
        self.wake = math.inf


def make(peers: dict[str, Peer], due: object, failed: object = None) -> Deadlines:
    errors: list = []
    deadlines: Deadlines[str, Peer] = Deadlines(
        find=peers.get, due=due, failed=failed or (lambda key, peer, exc: errors.append((key, exc))),  # type: ignore[arg-type]
        live=peers.items, count=peers.__len__)
    return deadlines


def wait_until(predicate, timeout: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        gevent.sleep(0.005)
    return True


def test_peers_come_due_in_order_and_an_earlier_deadline_wakes_the_loop() -> None:
    peers = {name: Peer() for name in ("a", "b", "c")}
    fired: list[str] = []
    at: dict[str, float] = {}
    deadlines = make(peers, lambda peer, key, now: (fired.append(key), at.setdefault(key, time.monotonic())))
    loop = gevent.spawn(deadlines.run)
    try:
        now = time.monotonic()
        deadlines.schedule("c", peers["c"], now + 1.5)
        deadlines.schedule("a", peers["a"], now + 10.0)  # the loop sleeps towards c's
        gevent.sleep(0.05)
        deadlines.schedule("b", peers["b"], now + 0.10)  # earlier: must wake it
        deadlines.schedule("a", peers["a"], now + 0.20)  # moved earlier: its 10 s entry goes stale
        assert wait_until(lambda: len(fired) == 3)
        assert fired == ["b", "a", "c"]
        assert at["b"] - now < 1.0  # woken for it, not at c's 1.5 s the loop slept towards
        assert time.monotonic() - now < 2.0  # not at a's stale 10 s
        gevent.sleep(0.1)
        assert fired == ["b", "a", "c"]  # the stale entry fired nothing
    finally:
        loop.kill()


def test_a_peer_gone_or_moved_later_is_skipped() -> None:
    peers = {"gone": Peer(), "later": Peer()}
    fired: list[str] = []
    deadlines = make(peers, lambda peer, key, now: fired.append(key))
    loop = gevent.spawn(deadlines.run)
    try:
        now = time.monotonic()
        deadlines.schedule("gone", peers["gone"], now + 0.05)
        deadlines.schedule("later", peers["later"], now + 0.05)
        del peers["gone"]
        peers["later"].wake = now + 60  # as a holder that took its entry back (wake differs: stale)
        gevent.sleep(0.3)
        assert fired == []
    finally:
        loop.kill()


def test_stale_entries_stay_bounded_under_churn() -> None:
    peers = {f"p{i}": Peer() for i in range(100)}
    deadlines = make(peers, lambda peer, key, now: None)
    far = time.monotonic() + 3600
    for step in range(50):
        for key, peer in peers.items():
            peer.wake = math.inf  # each rescheduled earlier than it was: a new entry every time
            deadlines.schedule(key, peer, far - step)
    assert len(deadlines) <= 2 * len(peers) + SLACK + 1


def test_a_raising_step_is_handed_over_and_the_loop_goes_on() -> None:
    peers = {"bad": Peer(), "good": Peer()}
    fired: list[str] = []
    errors: list[tuple[str, Exception]] = []

    def due(peer: Peer, key: str, now: float) -> None:
        if key == "bad":
            raise ValueError("boom")
        fired.append(key)

    deadlines = make(peers, due, lambda key, peer, exc: errors.append((key, exc)))
    loop = gevent.spawn(deadlines.run)
    try:
        now = time.monotonic()
        deadlines.schedule("bad", peers["bad"], now + 0.05)
        deadlines.schedule("good", peers["good"], now + 0.10)
        assert wait_until(lambda: fired == ["good"])
        assert [(k, type(e)) for k, e in errors] == [("bad", ValueError)]
    finally:
        loop.kill()
