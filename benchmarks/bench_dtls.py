"""DTLS benchmark: client CPU per handshake and pings per client core.

Prints each figure with the same-run baseline (both engines in memory, no sockets)
and the ratio. The reference server runs in a separate process so it has its own
core; client CPU is this process's CPU time (user + system).

    python benchmarks/bench_dtls.py [--handshakes 3000] [--concurrency 100]
                                    [--ping-associations 200] [--ping-seconds 10]
"""

from __future__ import annotations

import argparse
import logging
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import gevent
import locust  # noqa: F401 - as in a real run: gevent's monkey-patching first
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import floors  # noqa: E402
from floors import Window, process_cpu  # noqa: E402 - process_cpu: bench_coap and bench_distributed take it from here

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.locust.limits import ShortageLog  # noqa: E402
from loadgen.locust.users import LocustSink  # noqa: E402
from loadgen.protocol import dtls_contexts, dtls_factory  # noqa: E402
from loadgen.protocol.credentials import KeyStore, Secret  # noqa: E402
from loadgen.scenario.model import Expect, PingConfig  # noqa: E402
from loadgen.servers.launcher import ServerProcess  # noqa: E402
from loadgen.stats.facts import PING, FanOut, LogSink, Sink  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.traffic.workload import WorkloadPlan  # noqa: E402
from loadgen.transport.dtls_association import DtlsAssociation  # noqa: E402

#: The reference server's cost per handshake when issue 15 was filed, as a multiple of the C
#: floor's server side in the same run (212 us against ~45 us): the target is half of it.
ISSUE_SERVER_RATIO = 212 / 45


def cpu() -> float:
    return time.process_time()


def run_sink(totals: StatsSink, *more: Sink, locust_events: bool = True, request_type: str = "DTLS") -> FanOut:
    """What a real run's associations report to (loadgen.locust.users.Session's sinks): Locust's
    request events (with Locust's own stats listening), loadgen's exact totals, the log and the
    socket-shortage log; ``more`` after them. Without ``locust_events``: Locust's share measured."""
    env = Environment()
    env.create_local_runner()  # wires Locust's stats to the request event
    locust_sink = [LocustSink(env.events.request, request_type)] if locust_events else []
    return FanOut([*locust_sink, totals, LogSink(), ShortageLog(), *more])


#: The time the in-memory engines get: no timer fires in these handshakes, any value does.
NOW = 0.0


def engine_only(n: int, *, native: bool = True) -> tuple[float, float]:
    """CPU seconds per handshake for both engines in memory, and the client engine's share.
    ``native=False``: OpenSSL's handshake on both sides instead of loadgen's own."""
    sctx = dtls_contexts.server_context(KeyStore(shared=QUICKSTART_KEY), hint=b"loadgen", native=native)
    cctx = dtls_contexts.client_context(native=native)
    client_cpu = 0.0
    start = cpu()
    for i in range(n):
        t0 = cpu()
        client = dtls_factory.client_engine(cctx, lambda hint: (b"bench", QUICKSTART_KEY))
        client.start(NOW)
        to_server = client.datagrams_to_send()
        client_cpu += cpu() - t0
        server = None
        peer = b"127.0.0.1:%d" % i
        while not client.handshake_done:
            to_client: list[bytes] = []
            for d in to_server:
                if server is None:
                    server, replies = dtls_factory.accept(sctx, d, peer, NOW)
                    to_client += replies
                else:
                    server.receive_datagram(d, NOW)
                    to_client += server.datagrams_to_send()
            t0 = cpu()
            to_server = []
            for d in to_client:
                client.receive_datagram(d, NOW)
                to_server += client.datagrams_to_send()
            client_cpu += cpu() - t0
        if server is not None:
            for d in to_server:
                server.receive_datagram(d, NOW)
    total = cpu() - start
    return total / n, client_cpu / n


def socket_handshakes(address: tuple[str, int], n: int, concurrency: int) -> tuple[float, float, StatsSink]:
    """Client CPU seconds per completed handshake over loopback, and handshakes per wall second."""
    ctx = dtls_contexts.client_context()
    totals = StatsSink()
    sink = run_sink(totals)
    todo = iter(range(n))

    def worker() -> None:
        for i in todo:
            DtlsAssociation(f"bench-{i}", "bench", address, ctx, sink, identity=b"bench-%d" % i,
                            key=QUICKSTART_KEY, message_level=logging.WARNING).handshake_once()

    c0, w0 = cpu(), time.perf_counter()
    gevent.joinall([gevent.spawn(worker) for _ in range(concurrency)])
    c1, w1 = cpu(), time.perf_counter()
    done = max(totals.handshakes.completed, 1)
    return (c1 - c0) / done, done / (w1 - w0), totals


def pings(address: tuple[str, int], associations: int, seconds: float, *, plan: WorkloadPlan | None = None,
          key: Secret = QUICKSTART_KEY, kind: str = PING, window: Window | None = None,
          ) -> tuple[float, float, StatsSink]:
    """Completed pings (or ``plan``'s requests of ``kind``) per client CPU second and per wall
    second, with handshakes excluded; ``window`` is started and stopped around the same span."""
    ctx = dtls_contexts.client_context()
    totals = StatsSink()
    if plan is None:
        plan = traffic_plan(PingConfig(interval=0.0, jitter=0.0, timeout=2.0, expect=Expect("echo")))  # back-to-back
    sink = run_sink(totals)
    assocs = [DtlsAssociation(f"ping-{i}", "bench", address, ctx, sink, identity=b"ping-%d" % i,
                              key=key, ping=plan, message_level=logging.WARNING)
              for i in range(associations)]
    greenlets = [gevent.spawn(a.run) for a in assocs]
    while totals.handshakes.completed + totals.handshakes.failed < associations:
        gevent.sleep(0.05)
    if window is not None:
        window.start()
    p0, c0, w0 = totals.counted(kind).completed, cpu(), time.perf_counter()
    gevent.sleep(seconds)
    p1, c1, w1 = totals.counted(kind).completed, cpu(), time.perf_counter()
    if window is not None:
        window.stop(p1 - p0)
    gevent.killall(greenlets)
    return (p1 - p0) / max(c1 - c0, 1e-9), (p1 - p0) / (w1 - w0), totals


@dataclass(frozen=True)
class Round:
    """One round of the handshake figures: the C floor, the engines in memory and the socket
    handshakes, measured back to back so that each ratio's two sides share the host's moment."""

    c_client: float | None  # None: the C floor could not be built
    c_server: float
    both: float  # the engine-only pair
    client_engine: float
    client: float  # per socket handshake, client process CPU
    rate: float  # socket handshakes per wall second
    server: float  # the reference server's CPU per socket handshake
    completed: int
    failed: int
    failures: dict[str, int]


def median(values: list[float]) -> float:
    return statistics.median(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=3000, help="socket handshakes per round")
    parser.add_argument("--engine-handshakes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--ping-associations", type=int, default=200)
    parser.add_argument("--ping-seconds", type=float, default=10.0)
    parser.add_argument("--c-handshakes", type=int, default=2000, help="handshakes of the C floor per round")
    parser.add_argument("--rounds", type=int, default=3,
                        help="the C floor, the engines and the socket handshakes alternate this often; each ratio"
                             " printed is the median of the rounds' own ratios")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    command = "python benchmarks/bench_dtls.py " + " ".join(sys.argv[1:])

    c_floor: floors.CFloor | None = None
    c_floor_error = ""
    try:
        c_floor = floors.CFloor()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
        c_floor_error = str(error)
    syscall_floor = floors.udp_round_trip(min(2.0, args.ping_seconds))
    openssl_both, openssl_client = engine_only(args.engine_handshakes, native=False)
    rounds: list[Round] = []
    server = ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex()])
    with server as address:
        assert server.pid is not None
        for _ in range(max(1, args.rounds)):
            c_client, c_server = None, 0.0
            if c_floor is not None:
                try:
                    c_client, c_server = c_floor.run(args.c_handshakes)
                except (RuntimeError, OSError, subprocess.TimeoutExpired) as error:
                    c_floor, c_floor_error = None, str(error)
            both, client_engine = engine_only(args.engine_handshakes)
            s0 = process_cpu(server.pid)
            per_hs, hs_rate, ht = socket_handshakes(address, args.handshakes, args.concurrency)
            s1 = process_cpu(server.pid)
            hs = ht.handshakes
            rounds.append(Round(c_client, c_server, both, client_engine, per_hs, hs_rate,
                                (s1 - s0) / max(hs.completed, 1), hs.completed, hs.failed, dict(hs.failures)))
        s1 = process_cpu(server.pid)
        per_cpu, per_wall, pt = pings(address, args.ping_associations, args.ping_seconds)
        s2 = process_cpu(server.pid)
    if c_floor is not None:
        c_floor.close()
    server_ping = (s2 - s1) / max(pt.pings.completed, 1)  # includes the ping run's handshakes (few)
    floored = [(r, r.c_client) for r in rounds if r.c_client is not None]  # with the C client side

    us = 1e6

    def spread(values: list[float], unit: str = " us") -> str:
        """The median, and every round's value in order."""
        scale = us if unit else 1.0
        fmt = "{:.1f}" if unit else "{:.2f}"
        return (fmt.format(median(values) * scale) + unit + " (rounds: " + ", ".join(fmt.format(v * scale)
                for v in values) + ")")

    both = median([r.both for r in rounds])
    client_engine = median([r.client_engine for r in rounds])
    per_hs = median([r.client for r in rounds])
    print(f"# {command}")
    print(f"# {len(rounds)} rounds, each: the C floor, the engines in memory, then {args.handshakes} socket handshakes;"
          " figures are medians, ratios the median of each round's own")
    if not floored:
        print(f"C floor (OpenSSL in C, DTLS 1.2 PSK pair in memory): not measured: {c_floor_error}")
    else:
        print("C floor (OpenSSL in C, DTLS 1.2 PSK pair in memory) : "
              f"{median([c + r.c_server for r, c in floored]) * us:8.1f} us CPU"
              f" (client side {spread([c for _, c in floored])},"
              f" server side {spread([r.c_server for r, _ in floored])})   [floor]")
    print(f"engine-only handshake (client+server engines, memory): {both * us:8.1f} us CPU   [baseline]")
    print(f"  of which the client engine                         : {client_engine * us:8.1f} us CPU")
    print(f"  the same with OpenSSL's handshake on both sides    : {openssl_both * us:8.1f} us CPU"
          f" (client {openssl_client * us:.1f} us): loadgen's own is {openssl_client / client_engine:.2f}x"
          " cheaper on the client")
    print(f"socket handshake + Locust events, client process CPU: {per_hs * us:8.1f} us CPU"
          f"   ratio {per_hs / both:.2f}x baseline, {per_hs / client_engine:.2f}x client engine")
    if floored:
        ratios = [r.client / c for r, c in floored]
        print(f"  socket handshake client CPU = {spread([r.client for r, _ in floored])}"
              f" = {spread(ratios, '')} x the C client side (target <= 3x)")
    completed, failed = sum(r.completed for r in rounds), sum(r.failed for r in rounds)
    failures: dict[str, int] = {}
    for r in rounds:
        for code, n in r.failures.items():
            failures[code] = failures.get(code, 0) + n
    print(f"  handshakes completed {completed}/{args.handshakes * len(rounds)}, failed {failed} {failures},"
          f" {median([r.rate for r in rounds]):.0f} handshakes/s wall ({args.concurrency} concurrent);"
          f" client CPU allows {1 / per_hs:.0f}/s")
    server_hs = median([r.server for r in rounds])
    line = (f"  reference server CPU per handshake                 : {spread([r.server for r in rounds])}"
            f" (one core allows {1 / max(server_hs, 1e-9):.0f}/s)")
    if floored:
        ratios = [r.server / r.c_server for r, _ in floored if r.c_server]
        line += (f"; {spread(ratios, '')} x the C server side (target <= {ISSUE_SERVER_RATIO / 2:.2f}x: half the"
                 f" {ISSUE_SERVER_RATIO:.1f}x measured when the work began)")
    print(line)
    print(f"pings per client CPU second                          : {per_cpu:8.0f}"
          f"   ({us / per_cpu:.1f} us CPU per ping; {per_wall:.0f} pings/s wall,"
          f" {args.ping_associations} associations)")
    print(f"  syscall floor: a plain UDP round trip (send + recv, connected socket): {syscall_floor * us:.1f} us"
          f" client CPU ({1 / syscall_floor:.0f}/s); a ping costs {us / per_cpu / (syscall_floor * us):.1f}x that"
          " (target: >= 50,000 pings/s)")
    print(f"  pings completed {pt.pings.completed}, failed {pt.pings.failed} {dict(pt.pings.failures)};"
          f" reference server CPU per ping {server_ping * us:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
