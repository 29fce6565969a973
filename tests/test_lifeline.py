"""A scenario's Locust users wait in no greenlet: their associations and reconnects run on the loop.

Real Locust local runner, real reference server (its own process), loopback, port 0."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a run
import pytest

from loadgen.locust.environment import RunOptions, endpoints, make_environment
from loadgen.locust.lifeline import Lifeline
from loadgen.locust.users import Endpoint, Session
from loadgen.protocol.errors import LoadgenError
from loadgen.scenario import parse_scenario
from loadgen.scenario.model import ReconnectConfig, Scenario

pytestmark = pytest.mark.timeout(60)

USERS = 20


def scenario(body: str = "") -> Scenario:
    return parse_scenario(f"""\
name: lifeline
clients: {{count: {USERS}, spawn_rate: 200}}
run_time: 30s
psk: {{identity: "device-{{n:05d}}", key: "000102030405060708090a0b0c0d0e0f"}}
ping: {{interval: 200ms, expect: echo}}
{body}""", "lifeline.yaml")


def wait_for(condition: Callable[[], bool], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        gevent.sleep(0.05)
    return condition()


@pytest.fixture
def session() -> Iterator[tuple[Session, list[Endpoint]]]:
    s = scenario()
    with endpoints(s, RunOptions()) as (eps, _server):
        env, sess = make_environment(s, eps)
        env.create_local_runner()
        yield sess, eps
        assert env.runner is not None
        env.runner.quit()


def test_locust_counts_and_stops_users_whose_greenlets_never_run(session: tuple[Session, list[Endpoint]]) -> None:
    sess, _ = session
    runner = sess._environment.runner  # noqa: SLF001 - the runner the session's environment made
    assert runner is not None
    runner.start(USERS, 200)
    totals = sess.stats_sink
    assert wait_for(lambda: totals.handshakes.completed == USERS and totals.pings.completed >= 2 * USERS, 15)
    assert runner.user_count == USERS  # Locust counts the users by their greenlets ...
    assert all(not g.started and not g.dead for g in runner.user_greenlets)  # ... which never ran
    runner.stop()  # Locust kills each user's greenlet: its association closes (close_notify), counted as ended
    assert wait_for(lambda: runner.user_count == 0 and totals.handshakes.ended == USERS, 10), vars(totals.handshakes)
    pings = totals.pings
    gevent.sleep(0.5)  # nothing pings any more, nothing reconnects
    assert totals.pings.attempted == pings.attempted and totals.handshakes.attempted == USERS


def test_a_lifeline_reconnects_per_the_policy_until_stopped(session: tuple[Session, list[Endpoint]]) -> None:
    sess, eps = session
    made = sess.association_factory(0, eps[0])
    ended: list[LoadgenError | None] = []
    associations = []

    def make() -> object:
        association = made()
        association.on_end(ended.append)
        associations.append(association)
        return association

    # "always": a closed association is followed by a new one after the delay.
    line = Lifeline(make, ReconnectConfig(policy="always", delay=0.05))  # type: ignore[arg-type]
    line.start()
    assert wait_for(lambda: sess.stats_sink.handshakes.completed == 1, 10)
    associations[0].close()
    assert wait_for(lambda: sess.stats_sink.handshakes.completed == 2, 10)
    assert len(associations) == 2 and ended == [None]
    line.stop()  # closes the one up, and no reconnect follows
    gevent.sleep(0.3)
    assert len(associations) == 2 and sess.stats_sink.handshakes.ended == 2


def test_a_lifeline_with_max_attempts_gives_up() -> None:
    s = scenario()
    with endpoints(s, RunOptions()) as (eps, _server):
        _, sess = make_environment(s, eps)
        refused = Endpoint(eps[0].target, ("127.0.0.1", 9))  # the discard port: nothing listens, ICMP refuses
        made = sess.association_factory(0, refused)
        count = []

        def make() -> object:
            count.append(1)
            return made()

        line = Lifeline(make, ReconnectConfig(policy="on-failure", delay=0.01, max_attempts=2))  # type: ignore[arg-type]
        line.start()
        assert wait_for(lambda: sess.stats_sink.handshakes.failed == 3, 20), vars(sess.stats_sink.handshakes)
        gevent.sleep(0.3)
        assert len(count) == 3  # the first attempt and two more, then a quiet device
        line.stop()
