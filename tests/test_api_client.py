"""The Python API's clients and users against the real reference servers (in-process, loopback):
calls counted exactly in Locust and loadgen, timeouts, bad replies, wrong keys, close, on_connect."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a locustfile
import pytest
from locust.env import Environment

from loadgen.locust.api import DtlsUser, TlsUser, UserSettings, api_run, parse_target
from loadgen.locust.client import RequestFailed
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.errors import ConfigError
from loadgen.protocol.openssl.tls_contexts import server_context
from loadgen.servers.dtls import DtlsServer
from loadgen.servers.tls import TlsServer

KEY = bytes(range(16))
BOUND = 20.0  # seconds any one test may take


class Fired:
    """Locust's request events, as (name, error code or None)."""

    def __init__(self, env: Environment) -> None:
        self.events: list[tuple[str, str | None]] = []
        env.events.request.add_listener(self._on)

    def _on(self, name: str, exception: Any, **_: Any) -> None:
        self.events.append((name, None if exception is None else str(exception)))

    def count(self, suffix: str) -> tuple[int, int]:
        rows = [e for e in self.events if e[0].endswith(f" {suffix}")]
        return len(rows), sum(1 for _, code in rows if code is not None)


@pytest.fixture
def dtls_server() -> Iterator[DtlsServer]:
    server = DtlsServer(KeyStore(shared=Secret(KEY)), max_ping_rate=None).start()
    try:
        yield server
    finally:
        server.stop()


def dtls_user(server: Any, **attrs: Any) -> tuple[type[DtlsUser], Environment, Fired]:
    host, port = server.address
    user = type("Device", (DtlsUser,), {"target": f"{host}:{port}", "psk_key": KEY.hex(), "timeout": 2.0, **attrs})
    env = Environment(user_classes=[user])
    return user, env, Fired(env)


def exact(env: Environment, kind: str) -> tuple[int, int, int, int]:
    cell = api_run(env).session.stats_sink.kinds[kind]
    return cell.attempted, cell.completed, cell.failed, cell.in_flight


def test_requests_sends_and_close_are_counted_alike_in_locust_and_loadgen(dtls_server: DtlsServer) -> None:
    cls, env, fired = dtls_user(dtls_server, target_name="gw")
    user = cls(env)
    with gevent.Timeout(BOUND):
        assert user.client.request(b"hello", name="login", expect="echo") == b"hello"
        for i in range(20):
            assert user.client.request(b"seq=%d" % i, expect=b"seq=") == b"seq=%d" % i
        user.client.close()
        user.client.close()  # idempotent
        assert not user.client.connected
        user.client.send(b"fire and forget", name="event")  # connects again
        user.client.close()
    assert exact(env, "handshake") == (2, 2, 0, 0)
    assert exact(env, "login") == (1, 1, 0, 0) and exact(env, "request") == (20, 20, 0, 0)
    assert exact(env, "event") == (1, 1, 0, 0)
    assert fired.count("request") == (20, 0) and fired.count("handshake") == (2, 0)
    assert ("gw login", None) in fired.events
    assert api_run(env).session.stats_sink.kinds["handshake"].ended == 2


def test_a_request_unanswered_times_out_and_the_next_call_reconnects() -> None:
    # One ping's worth of tokens, refilled only after 1000 s: the first request is answered, the next is not.
    server = DtlsServer(KeyStore(shared=Secret(KEY)), max_ping_rate=0.001).start()
    try:
        cls, env, fired = dtls_user(server, timeout=0.5)
        name = "{}:{} request".format(*server.address)
        user = cls(env)
        with gevent.Timeout(BOUND):
            user.client.request(b"one")
            started = gevent.get_hub().loop.now()
            with pytest.raises(RequestFailed) as failed:
                user.client.request(b"two")
            waited = gevent.get_hub().loop.now() - started
            assert failed.value.code == "ping-timeout"
            assert not user.client.connected  # a late reply must not be taken for the next call's
            with pytest.raises(RequestFailed, match="ping-timeout"):
                user.client.request(b"three", timeout=0.3)  # a new association (the server still drops it)
            user.client.close()
    finally:
        server.stop()
    assert 0.45 <= waited < 2.0
    assert exact(env, "request") == (3, 1, 2, 0) and fired.count("request") == (3, 2)
    assert (name, "ping-timeout") in fired.events
    assert exact(env, "handshake")[:2] == (2, 2)


def test_a_bad_reply_fails_with_its_code_and_the_association_stays_up() -> None:
    server = TlsServer(server_context(keys=KeyStore(shared=Secret(KEY))), reply="qt").start()
    try:
        host, port = server.address
        cls = type("Gateway", (TlsUser,), {"target": f"tls://{host}:{port}", "psk_key": KEY.hex(),
                                           "psk_identity": "gw-{n}"})
        env = Environment(user_classes=[cls])
        fired = Fired(env)
        user = cls(env)
        with gevent.Timeout(BOUND):
            with pytest.raises(RequestFailed) as failed:
                user.client.request(b"status", name="status", expect="echo")
            assert failed.value.code == "bad-reply"
            assert user.client.connected
            assert user.client.request(b"status", name="status", expect=b"to gw-0: ") == b"to gw-0: status"
            with pytest.raises(ValueError, match="one line"):
                user.client.request(b"two\nlines")
            user.client.close()
    finally:
        server.stop()
    assert exact(env, "status") == (2, 1, 1, 0) and fired.count("status") == (2, 1)
    assert exact(env, "handshake") == (1, 1, 0, 0)


def test_a_wrong_key_fails_the_handshake_and_the_call_raises_its_code(dtls_server: DtlsServer) -> None:
    cls, env, fired = dtls_user(dtls_server, psk_key="ff" * 16)
    user = cls(env)
    with gevent.Timeout(BOUND), pytest.raises(RequestFailed) as failed:
        user.client.request(b"hello")
    assert failed.value.code == fired.events[0][1] == "psk-key-mismatch"
    assert exact(env, "handshake")[2] == 1 and fired.count("handshake") == (1, 1)
    assert "request" not in api_run(env).session.stats_sink.kinds  # never sent: not an attempt


def test_on_connect_runs_after_each_handshake_and_a_failed_login_closes(dtls_server: DtlsServer) -> None:
    logins: list[bytes] = []

    def on_connect(self: DtlsUser) -> None:
        logins.append(self.client.request(b"LOGIN", name="login", expect=self.expected))

    cls, env, fired = dtls_user(dtls_server, on_connect=on_connect, expected=b"LOGIN")
    user = cls(env)
    with gevent.Timeout(BOUND):
        user.client.request(b"a")
        user.client.request(b"b")
        user.client.close()
        user.client.request(b"c")
        assert logins == [b"LOGIN", b"LOGIN"]
        user.expected = b"WELCOME"  # type: ignore[attr-defined]
        user.client.close()
        with pytest.raises(RequestFailed, match="bad-reply"):
            user.client.request(b"d")
        assert not user.client.connected  # not logged in: the next call connects and logs in again
    assert exact(env, "login") == (3, 2, 1, 0) and exact(env, "request") == (3, 3, 0, 0)
    assert fired.count("handshake") == (3, 0)


def test_a_waiting_call_blocks_its_own_greenlet_only() -> None:
    server = DtlsServer(KeyStore(shared=Secret(KEY)), max_ping_rate=0.001).start()
    try:
        cls, env, _ = dtls_user(server, timeout=1.0)
        slow, fast = cls(env), cls(env)
        fast_server = DtlsServer(KeyStore(shared=Secret(KEY))).start()
        fast.client = UserSettings.of(type("Fast", (cls,), {"target": "{}:{}".format(*fast_server.address)}),
                                      None).client(1, api_run(env).sink("dtls"))
        with gevent.Timeout(BOUND):
            slow.client.request(b"spend the one token")
            waiting = gevent.spawn(slow.client.request, b"unanswered")
            done = 0
            while not waiting.ready():
                fast.client.request(b"meanwhile")
                done += 1
            assert isinstance(waiting.exception, RequestFailed)
            slow.client.close()
            fast.client.close()
        fast_server.stop()
    finally:
        server.stop()
    assert done >= 50  # answered in well under a millisecond each while the other waited a second


@pytest.mark.parametrize(("attrs", "message"), [
    ({"target": "nowhere"}, r"Bad\.target: expected HOST:PORT and a port 1\.\.65535, got 'nowhere'"),
    ({"target": "tls://127.0.0.1:5684"}, r"scheme tls:// does not fit a DTLS user"),
    ({"target": "127.0.0.1:70000"}, r"expected HOST:PORT and a port 1\.\.65535, got '127\.0\.0\.1:70000'"),
    ({}, r"Bad: a DTLS user needs a PSK"),
    ({"psk_key": "00", "psk_key_env": "X"}, r"set one of psk_key, psk_key_env, not several"),
    ({"psk_key_env": "LOADGEN_TEST_NO_SUCH_VARIABLE"}, r"Bad\.psk_key_env: environment variable .* is not set"),
    ({"psk_key": "zz"}, r"Bad\.psk_key: not a hex string"),
    ({"psk_key": "00", "psk_identity": "d-{m}"}, r"Bad\.psk_identity: 'd-\{m\}' is not a template"),
])
def test_bad_attributes_are_refused_naming_the_class_and_attribute(attrs: dict[str, Any], message: str) -> None:
    cls = type("Bad", (DtlsUser,), {"target": "127.0.0.1:5684", **attrs})
    with pytest.raises(ConfigError, match=message):
        UserSettings.of(cls, None)


def test_the_target_comes_from_the_class_else_from_host() -> None:
    assert parse_target("[::1]:5684", "dtls", "x") == ("::1", 5684)
    assert parse_target("coaps://gw.example:5684/", "dtls", "x") == ("gw.example", 5684)
    cls = type("Either", (DtlsUser,), {"psk_key": "00"})
    assert UserSettings.of(cls, "127.0.0.2:9").address == ("127.0.0.2", 9)
    with pytest.raises(ConfigError, match="no target"):
        UserSettings.of(cls, None)
    pinned = type("Pinned", (cls,), {"target": "127.0.0.3:7", "target_name": "gw"})
    settings = UserSettings.of(pinned, "127.0.0.2:9")
    assert settings.address == ("127.0.0.3", 7) and settings.target.name == "gw"


def test_settings_follow_the_host_locust_gives_them() -> None:
    cls = type("Follow", (DtlsUser,), {"psk_key": "00"})
    env = Environment(user_classes=[cls], host="127.0.0.2:9")
    run = api_run(env)
    assert run.settings(cls).address == ("127.0.0.2", 9)
    env.host = "127.0.0.3:10"  # a new host in the web UI's start form
    assert run.settings(cls).address == ("127.0.0.3", 10)


def test_a_tls_user_with_certificates_verifies_the_server(tmp_path: Any) -> None:
    from tls_servers import make_pki

    from loadgen.protocol.openssl.tls_contexts import TlsOptions
    from loadgen.scenario.model import TlsConfig

    pki = make_pki(tmp_path / "pki")
    server = TlsServer(server_context(TlsOptions(cert_file=pki.server_cert, key_file=pki.server_key))).start()
    try:
        host, port = server.address
        trusting = type("Trusting", (TlsUser,), {"target": f"{host}:{port}", "server_name": "server.test",
                                                 "tls": TlsConfig(ca_file=pki.ca_file, verify="peer")})
        other = type("Other", (trusting,), {"tls": TlsConfig(ca_file=pki.other_ca_file, verify="peer")})
        env = Environment(user_classes=[trusting, other])
        fired = Fired(env)
        good, bad = trusting(env), other(env)
        with gevent.Timeout(BOUND):
            assert good.client.request(b"hello", expect="echo") == b"hello"
            with pytest.raises(RequestFailed) as failed:
                bad.client.request(b"hello")
            good.client.close()
    finally:
        server.stop()
    assert failed.value.code == "cert-untrusted"
    assert fired.count("handshake") == (2, 1) and exact(env, "request") == (1, 1, 0, 0)


def test_the_server_closing_fails_the_waiting_call_with_peer_closed() -> None:
    server = DtlsServer(KeyStore(shared=Secret(KEY)), max_ping_rate=0.001).start()
    stopped = False
    try:
        cls, env, fired = dtls_user(server, timeout=10.0)
        user = cls(env)
        with gevent.Timeout(BOUND):
            user.client.request(b"spend the one token")
            waiting = gevent.spawn(user.client.request, b"unanswered")
            while user.client._connection is None or not user.client._connection.workload.outstanding:
                gevent.sleep(0.01)  # until the call is out
            server.stop()  # close_notify to every peer
            stopped = True
            waiting.join()
        assert isinstance(waiting.exception, RequestFailed) and waiting.exception.code == "peer-closed"
        assert not user.client.connected
    finally:
        if not stopped:
            server.stop()
    assert exact(env, "request") == (2, 1, 1, 0) and fired.count("request") == (2, 1)


def test_under_locusts_runner_every_association_ends_with_its_user(dtls_server: DtlsServer) -> None:
    from locust import constant, task

    def work(self: DtlsUser) -> None:
        self.client.request(b"tick", expect="echo")

    cls, env, fired = dtls_user(dtls_server, wait_time=constant(0.05), tasks=[task(work)])
    runner = env.create_local_runner()
    with gevent.Timeout(BOUND):
        runner.start(4, spawn_rate=100)
        while fired.count("request")[0] < 20:
            gevent.sleep(0.05)
        runner.stop()  # kills the users (their on_stop may do nothing): their associations close with them
        while api_run(env).session.stats_sink.kinds["handshake"].ended < 4:
            gevent.sleep(0.01)  # the closes run as each user's greenlet ends
    handshakes = api_run(env).session.stats_sink.kinds["handshake"]
    assert handshakes.completed == 4 and handshakes.ended == 4
    attempted, completed, failed, in_flight = exact(env, "request")
    assert failed == 0 and attempted == completed + in_flight and fired.count("request") == (completed, 0)
    runner.quit()


def test_each_user_class_numbers_its_devices_from_zero(dtls_server: DtlsServer) -> None:
    sensors, env, _ = dtls_user(dtls_server, psk_identity="sensor-{n}")
    meters = type("Meter", (sensors,), {"psk_identity": "meter-{n}"})
    users = [sensors(env), meters(env), sensors(env), meters(env), meters(env)]
    assert [u.index for u in users] == [0, 0, 1, 1, 2]
    api_run(env).session.renumber(1, 3)  # a plain worker's place: 1 of 3
    assert [sensors(env).index, meters(env).index, meters(env).index] == [1, 1, 4]
