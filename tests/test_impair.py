"""The UDP impairment proxy against a plain UDP echo, all in this process on loopback.

Every impairment is checked with a fixed seed against what the echo (and the client)
actually saw, and the proxy's counters must match those observations exactly.
"""

from __future__ import annotations

import math
import os
import random
import signal
import socket as _stdsocket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import gevent
import pytest
from gevent import socket

from loadgen.servers.impair import Counters, Impairment, ImpairmentProxy, impair

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parent.parent
BUFFER = 4 * 1024 * 1024  # test sockets must not add loss of their own


@dataclass
class Echo:
    """A UDP echo: records each datagram (payload, source, arrival time), sends it back."""

    sock: socket.socket
    received: list[tuple[bytes, tuple, float]] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    @property
    def payloads(self) -> list[bytes]:
        return [data for data, _, _ in self.received]

    def serve(self) -> None:
        while True:
            data, addr = self.sock.recvfrom(65536)
            self.received.append((data, addr, time.monotonic()))
            self.sock.sendto(data, addr)


@pytest.fixture
def echo() -> Iterator[Echo]:
    sock = _udp()
    sock.bind(("127.0.0.1", 0))
    server = Echo(sock)
    greenlet = gevent.spawn(server.serve)
    try:
        yield server
    finally:
        greenlet.kill()
        sock.close()


@pytest.fixture
def proxies() -> Iterator[list[ImpairmentProxy]]:
    """Every proxy a test appends here is stopped on teardown."""
    started: list[ImpairmentProxy] = []
    try:
        yield started
    finally:
        for proxy in started:
            proxy.stop()


def _udp() -> socket.socket:
    sock = socket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM)
    sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, BUFFER)
    return sock


def start(proxies: list[ImpairmentProxy], echo: Echo, **kwargs) -> ImpairmentProxy:
    proxy = ImpairmentProxy(echo.address, **kwargs).start()
    proxies.append(proxy)
    return proxy


def client(proxy: ImpairmentProxy) -> socket.socket:
    sock = _udp()
    sock.connect(proxy.address)
    return sock


def drain(sock: socket.socket, quiet: float = 0.3, limit: float = 10.0,
          first: float = 0.3) -> list[tuple[bytes, float]]:
    """Replies (payload, arrival time) until none came for ``quiet`` seconds (``first`` for the first one)."""
    replies: list[tuple[bytes, float]] = []
    deadline = time.monotonic() + limit
    sock.settimeout(first)
    while time.monotonic() < deadline:
        try:
            replies.append((sock.recv(65536), time.monotonic()))
        except TimeoutError:
            break
        sock.settimeout(quiet)
    return replies


def collect(sock: socket.socket) -> gevent.Greenlet:
    """Start receiving at once (arrival times must not wait for the sender): ``.get()`` the replies."""
    return gevent.spawn(drain, sock, first=2.0)


def send_all(sock: socket.socket, payloads: list[bytes], gap: float = 0.0) -> dict[bytes, float]:
    """Send each payload (yielding now and then so the proxy keeps up); returns send times."""
    sent: dict[bytes, float] = {}
    for i, payload in enumerate(payloads):
        sent[payload] = time.monotonic()
        sock.send(payload)
        if gap:
            gevent.sleep(gap)
        elif i % 50 == 49:
            gevent.sleep(0)
    return sent


def numbered(n: int, size: int = 16) -> list[bytes]:
    return [b"%08d" % i + b"." * (size - 8) for i in range(n)]


def binomial_ok(observed: int, n: int, p: float, sigmas: float = 5.0) -> bool:
    """Whether ``observed`` successes of ``n`` are plausible for probability ``p`` (5 sigma: ~1 in 3.5 million)."""
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p))


# -- forwarding ------------------------------------------------------------------


def test_clear_proxy_forwards_both_ways_one_upstream_peer_per_client(proxies, echo):
    proxy = start(proxies, echo, seed=1)
    clients = [client(proxy) for _ in range(3)]
    for i, sock in enumerate(clients):
        send_all(sock, [b"client %d says %d" % (i, k) for k in range(5)])
    replies = [drain(sock) for sock in clients]
    for i, got in enumerate(replies):
        assert [data for data, _ in got] == [b"client %d says %d" % (i, k) for k in range(5)]
    # The echo sees one peer per client, and it is the proxy's socket, not the client's.
    peers = {addr for _, addr, _ in echo.received}
    assert len(peers) == 3 and not peers & {sock.getsockname() for sock in clients}
    assert proxy.client_count == 3 and proxy.stats.clients == 3
    assert proxy.stats.up.as_dict() == proxy.stats.down.as_dict() == {
        "forwarded": 15, "dropped": 0, "duplicated": 0, "reordered": 0, "corrupted": 0, "truncated": 0,
        "send_errors": 0,
    }


def _lossy_run(proxies, echo, seed: int, n: int, loss: float) -> tuple[list[bytes], list[bytes], ImpairmentProxy]:
    echo.received.clear()
    proxy = start(proxies, echo, up=Impairment(loss=loss), down=Impairment(loss=loss), seed=seed)
    sock = client(proxy)
    send_all(sock, numbered(n))
    replies = [data for data, _ in drain(sock)]
    sock.close()
    proxy.stop()
    return list(echo.payloads), replies, proxy


def test_loss_is_binomial_counted_and_reproducible(proxies, echo):
    n, p = 2000, 0.2
    at_echo, at_client, proxy = _lossy_run(proxies, echo, seed=7, n=n, loss=p)
    up, down = proxy.stats.up, proxy.stats.down
    # Counters match what each side saw, exactly.
    assert up.forwarded == len(at_echo) and up.forwarded + up.dropped == n
    assert down.forwarded == len(at_client) and down.forwarded + down.dropped == len(at_echo)
    assert at_client == [d for d in at_echo if d in set(at_client)]  # loss only: order kept
    # The loss is what was asked for, within a binomial tolerance.
    assert binomial_ok(up.dropped, n, p), up
    assert binomial_ok(down.dropped, len(at_echo), p), down
    # The same seed drops exactly the same datagrams; another seed does not.
    again_echo, again_client, _ = _lossy_run(proxies, echo, seed=7, n=n, loss=p)
    assert (again_echo, again_client) == (at_echo, at_client)
    other_echo, _, _ = _lossy_run(proxies, echo, seed=8, n=n, loss=p)
    assert other_echo != at_echo


def test_directions_are_independent(proxies, echo):
    proxy = start(proxies, echo, down=Impairment(loss=1.0), seed=1)
    sock = client(proxy)
    send_all(sock, numbered(50))
    assert drain(sock) == []
    assert len(echo.received) == 50
    assert (proxy.stats.up.forwarded, proxy.stats.down.dropped, proxy.stats.down.forwarded) == (50, 50, 0)
    proxy.down = Impairment()  # a change applies from the next datagram on
    send_all(sock, numbered(10))
    assert len(drain(sock)) == 10 and proxy.stats.down.forwarded == 10


# -- delay -------------------------------------------------------------------------


def test_delay_adds_at_least_the_delay_each_way(proxies, echo):
    delay = 0.05
    proxy = start(proxies, echo, up=Impairment(delay=delay), down=Impairment(delay=delay), seed=1)
    sock = client(proxy)
    replies = collect(sock)
    sent = send_all(sock, numbered(20), gap=0.005)
    got = replies.get()
    assert [data for data, _ in got] == echo.payloads == list(sent)  # a fixed delay keeps the order
    at_echo = {data: arrived for data, _, arrived in echo.received}
    up = [at_echo[data] - sent[data] for data in sent]
    down = [arrived - at_echo[data] for data, arrived in got]
    assert min(up) >= delay and min(down) >= delay, (up, down)
    assert max(up) < delay + 0.2 and max(down) < delay + 0.2, (up, down)  # slow machine, not 0.2 s slow


def test_delays_do_not_block_other_traffic(proxies, echo):
    """50 datagrams each delayed 0.3 s arrive together after ~0.3 s, not one after another."""
    delay = 0.3
    proxy = start(proxies, echo, up=Impairment(delay=delay), seed=1)
    sock = client(proxy)
    replies = collect(sock)
    started = time.monotonic()
    send_all(sock, numbered(50))
    arrivals = [arrived - started for _, arrived in replies.get()]
    assert len(arrivals) == 50
    assert min(arrivals) >= delay and max(arrivals) < delay + 0.2, arrivals


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_jitter_spreads_the_delay(distribution):
    """The waits the proxy draws (its sans-I/O model, seeded as the proxy seeds it): centred on the
    delay, spread like the distribution. Judged on the draws, not on arrival times, which a loaded
    machine only makes later (a median measured over sockets once read 131 ms for 100)."""
    delay, jitter, n = 0.1, 0.03, 2000
    imp = Impairment(delay=delay, jitter=jitter, distribution=distribution)
    rng, counters = random.Random(3), Counters()
    waits = sorted(impair(b"datagram", imp, rng, counters)[1][0] for _ in range(n))
    median = waits[n // 2]
    assert abs(median - delay) < 0.005, median
    if distribution == "uniform":
        assert waits[0] >= delay - jitter and waits[-1] <= delay + jitter, (waits[0], waits[-1])
    # Spread like the distribution: quartiles jitter apart (uniform), about 1.35 sd apart (normal).
    spread = waits[3 * n // 4] - waits[n // 4]
    expected = jitter if distribution == "uniform" else 1.35 * jitter
    assert 0.8 * expected < spread < 1.2 * expected, spread


@pytest.mark.parametrize("distribution", ["uniform", "normal"])
def test_the_proxy_holds_each_datagram_for_its_jittered_delay(proxies, echo, distribution):
    """Over real sockets, lower bounds only (load can delay a datagram more, never less)."""
    delay, jitter, n = 0.1, 0.03, 200
    proxy = start(proxies, echo, up=Impairment(delay=delay, jitter=jitter, distribution=distribution), seed=3)
    sock = client(proxy)
    sent = send_all(sock, numbered(n), gap=0.001)
    drain(sock)
    assert len(echo.received) == n
    one_way = sorted(arrived - sent[data] for data, _, arrived in echo.received)
    assert one_way[n // 2] >= delay - 0.01, one_way[n // 2]
    if distribution == "uniform":
        assert one_way[0] >= delay - jitter, one_way[:5]


# -- duplication, reordering, corruption, truncation ---------------------------------


def test_duplication_yields_duplicates(proxies, echo):
    n = 500
    proxy = start(proxies, echo, up=Impairment(duplicate=0.1), seed=5)
    sock = client(proxy)
    send_all(sock, numbered(n))
    replies = drain(sock)
    seen = Counter(echo.payloads)
    twice = [data for data, count in seen.items() if count == 2]
    assert set(seen) == set(numbered(n)) and max(seen.values()) == 2
    assert len(twice) == proxy.stats.up.duplicated and binomial_ok(len(twice), n, 0.1)
    assert proxy.stats.up.forwarded == len(echo.received) == n + len(twice)
    assert len(replies) == proxy.stats.down.forwarded == n + len(twice)


def test_reordering_holds_datagrams_back_so_later_ones_overtake(proxies, echo):
    n, hold = 300, 0.03
    proxy = start(proxies, echo, up=Impairment(reorder=0.1, reorder_delay=hold), seed=11)
    sock = client(proxy)
    payloads = numbered(n)
    send_all(sock, payloads, gap=0.001)  # later datagrams exist while one is held back
    drain(sock)
    order = [int(data[:8]) for data in echo.payloads]
    assert sorted(order) == list(range(n)), "reordering must not lose or duplicate"
    assert order != sorted(order)
    # A datagram is late when a later-numbered one arrived before it: exactly the held ones.
    late, highest = 0, -1
    for number in order:
        if number < highest:
            late += 1
        highest = max(highest, number)
    assert late == proxy.stats.up.reordered > 0 and binomial_ok(late, n, 0.1)


def test_corruption_changes_one_byte(proxies, echo):
    n = 500
    proxy = start(proxies, echo, up=Impairment(corrupt=0.2), seed=13)
    sock = client(proxy)
    payloads = numbered(n, size=64)
    send_all(sock, payloads)
    drain(sock)
    received = echo.payloads
    assert len(received) == n  # corruption neither drops nor reorders
    changed = 0
    for sent, got in zip(payloads, received, strict=True):
        diff = [i for i in range(len(sent)) if sent[i] != got[i]]
        assert len(got) == len(sent) and len(diff) <= 1
        changed += bool(diff)
    assert changed == proxy.stats.up.corrupted and binomial_ok(changed, n, 0.2)


def test_truncation_limits_the_size_each_way(proxies, echo):
    proxy = start(proxies, echo, up=Impairment(truncate=1000), down=Impairment(truncate=100), seed=1)
    sock = client(proxy)
    sizes = [50, 100, 101, 1000, 1001, 1500]
    send_all(sock, [bytes([65 + i]) * size for i, size in enumerate(sizes)])
    replies = [data for data, _ in drain(sock)]
    assert [len(d) for d in echo.payloads] == [50, 100, 101, 1000, 1000, 1000]
    assert [len(d) for d in replies] == [50, 100, 100, 100, 100, 100]
    assert echo.payloads[4] == b"E" * 1000  # cut, not mangled
    assert (proxy.stats.up.truncated, proxy.stats.down.truncated) == (2, 4)
    assert proxy.stats.up.forwarded == proxy.stats.down.forwarded == 6


# -- client mappings ------------------------------------------------------------------


def test_idle_mappings_expire_and_the_oldest_is_evicted_at_the_cap(proxies, echo):
    proxy = start(proxies, echo, max_clients=2, idle_timeout=0.4, seed=1)
    clients = [client(proxy) for _ in range(3)]
    for sock in clients:
        sock.send(b"hello")
        gevent.sleep(0.02)
    assert proxy.client_count == 2 and proxy.stats.evicted == 1
    # The evicted client's next datagram opens a new mapping: a new peer at the echo.
    clients[0].send(b"again")
    gevent.sleep(0.05)
    assert len({addr for _, addr, _ in echo.received}) == 4
    assert proxy.stats.clients == 4
    gevent.sleep(1.5)  # idle_timeout plus a sweep
    assert proxy.client_count == 0 and proxy.stats.expired == 2


def test_stop_closes_everything_and_drops_delayed_datagrams(proxies, echo):
    proxy = start(proxies, echo, up=Impairment(delay=0.5), seed=1)
    sock = client(proxy)
    sock.send(b"never arrives")
    gevent.sleep(0.05)
    proxy.stop()
    gevent.sleep(0.6)
    assert echo.received == [] and proxy.client_count == 0 and proxy.stats.up.forwarded == 0


def test_impairment_rejects_bad_values():
    for kwargs, name in [
        ({"loss": 1.5}, "loss"), ({"duplicate": -0.1}, "duplicate"), ({"delay": -1.0}, "delay"),
        ({"jitter": math.inf}, "jitter"), ({"truncate": 0}, "truncate"), ({"distribution": "pareto"}, "distribution"),
    ]:
        with pytest.raises(ValueError, match=f"^{name}: "):
            Impairment(**kwargs)
    assert Impairment(loss=0.2, delay=0.02, jitter=0.005).describe() == "loss 20%, delay 20 ms +- 5 ms (uniform)"


# -- command line -------------------------------------------------------------------


def _loadgen(*args: str, **kwargs) -> subprocess.Popen:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen([sys.executable, "-m", "loadgen", "impair", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--to", "127.0.0.1:5684", "--loss", "1.5"], "--loss"),
        (["--to", "127.0.0.1:5684", "--down-duplicate", "-0.1"], "--down-duplicate"),
        (["--to", "127.0.0.1:5684", "--delay=-5ms"], "--delay"),
        (["--to", "127.0.0.1:5684", "--up-jitter", "5 parsecs"], "--up-jitter"),
        (["--to", "127.0.0.1:5684", "--truncate", "0"], "--truncate"),
        (["--to", "no-such-host:5684"], "--to"),
        (["--to", "127.0.0.1"], "--to"),
        (["--to", "127.0.0.1:5684", "--listen", "127.0.0.1:70000"], "--listen"),
        (["--to", "127.0.0.1:5684", "--seed", "abc"], "--seed"),
    ],
)
def test_cli_bad_option_exits_2_naming_it(args, option):
    process = _loadgen(*args)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2, err
    assert out == "" and "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"loadgen: {option}: "), err


def test_cli_forwards_until_sigterm_then_prints_counters():
    target = _stdsocket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM)
    target.bind(("127.0.0.1", 0))
    target.settimeout(10)
    to = "{}:{}".format(*target.getsockname())
    process = _loadgen("--listen", "127.0.0.1:0", "--to", to, "--up-truncate", "5", "--seed", "1")
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        host_port = first.removeprefix("loadgen: impairment proxy on ").split(" -> ")
        assert len(host_port) == 2 and host_port[1] == to, first
        host, port = host_port[0].rsplit(":", 1)
        sender = _stdsocket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_DGRAM)
        sender.sendto(b"hello world", (host, int(port)))
        assert target.recvfrom(100)[0] == b"hello"
        sender.close()
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        target.close()
    assert process.returncode == 0, err
    assert "loadgen: up: forwarded 1, dropped 0, duplicated 0, reordered 0, corrupted 0, truncated 1" in out, out
    assert "loadgen: down: forwarded 0" in out and "1 clients" in out, out


def test_a_queue_of_datagrams_never_keeps_the_proxys_other_greenlets_waiting(echo: Echo) -> None:
    """The proxy read its socket until it was empty before anything else on the event loop ran, so a
    flood held back its expiry loop, its delayed sends and every other greenlet. Deterministic: the
    datagrams are all queued before the proxy reads one, and a greenlet that yields after each look
    counts what the proxy has forwarded meanwhile."""
    queued = 300  # of 20 bytes: well inside the socket's receive buffer (none dropped)
    proxy = ImpairmentProxy(echo.address)
    proxy.start()
    try:
        with _udp() as flood:
            for i in range(queued):
                flood.sendto(b"datagram-%011d" % i, proxy.address)
            seen: list[int] = []

            def watch() -> None:
                while proxy.stats.up.forwarded < queued and len(seen) < 10_000:
                    seen.append(proxy.stats.up.forwarded)
                    gevent.sleep(0)

            watcher = gevent.spawn(watch)
            watcher.join(timeout=30)
            watcher.kill()
    finally:
        proxy.stop()
    assert proxy.stats.up.forwarded == queued, proxy.stats
    between = [n for n in seen if 0 < n < queued]
    assert between, f"nothing else ran while {queued} datagrams were forwarded (looks saw {sorted(set(seen))})"
