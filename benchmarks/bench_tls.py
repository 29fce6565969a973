"""TLS benchmark: client CPU per handshake (full and resumed) and pings per client core.

The reference TLS server (PSK mode) runs in its own process; client CPU is this
process's CPU time, associations report through Locust's request events as in a real
run. The same-run baseline is the TLS engines alone (client and server in memory, no
sockets), as for DTLS.

    python benchmarks/bench_tls.py [--handshakes 1500] [--version 1.2|1.3]
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import gevent
import locust  # noqa: F401 - as in a real run: gevent's monkey-patching first
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.locust.users import LocustSink  # noqa: E402
from loadgen.protocol.credentials import KeyStore  # noqa: E402
from loadgen.protocol.openssl.tls import SessionCache, TlsEngine  # noqa: E402
from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context, server_context  # noqa: E402
from loadgen.scenario.model import Expect, PingConfig  # noqa: E402
from loadgen.servers.launcher import ServerProcess  # noqa: E402
from loadgen.stats.facts import FanOut  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.transport.tls_association import TlsAssociation  # noqa: E402


def run_sink(totals: StatsSink) -> FanOut:
    env = Environment()
    env.create_local_runner()
    return FanOut([LocustSink(env.events.request, "TLS"), totals])


def options(version: str, resumption: bool) -> TlsOptions:
    ciphers = "PSK-AES128-GCM-SHA256" if version == "1.2" else None
    return TlsOptions(min_version=version, max_version=version, ciphers=ciphers, resumption=resumption)  # type: ignore[arg-type]


def engine_only(n: int, version: str) -> float:
    """CPU seconds per full handshake, client and server engines in memory."""
    cctx = client_context(options(version, False), psk_mode=True)
    sctx = server_context(options(version, False), keys=KeyStore(shared=QUICKSTART_KEY))
    start = time.process_time()
    for i in range(n):
        client = TlsEngine.client(cctx, choose=lambda hint, i=i: (b"e%d" % i, QUICKSTART_KEY))
        server = TlsEngine.server(sctx)
        client.start()
        for _ in range(10):
            data = client.data_to_send()
            if data:
                server.receive_data(data)
            back = server.data_to_send()
            if back:
                client.receive_data(back)
            if client.handshake_done and server.handshake_done and not data and not back:
                break
    return (time.process_time() - start) / n


def socket_handshakes(address: tuple[str, int], n: int, concurrency: int, version: str,
                      resumed: bool) -> tuple[float, StatsSink]:
    """Client CPU seconds per completed handshake; with ``resumed`` each device resumes its session."""
    ctx = client_context(options(version, resumed), psk_mode=True)
    totals = StatsSink()
    sink = run_sink(totals)
    caches = [SessionCache(maxsize=1) for _ in range(concurrency)]
    todo = iter(range(n))

    def worker(w: int) -> None:
        if resumed:  # a first, full handshake leaves the session to resume (not measured)
            TlsAssociation(f"w{w}", "bench", address, ctx, StatsSink(), identity=b"w%d" % w, key=QUICKSTART_KEY,
                           sessions=caches[w], message_level=logging.WARNING).handshake_once()
        for _ in todo:
            TlsAssociation(f"w{w}", "bench", address, ctx, sink, identity=b"w%d" % w, key=QUICKSTART_KEY,
                           sessions=caches[w] if resumed else None,
                           message_level=logging.WARNING).handshake_once()

    greenlets = [gevent.spawn(worker, w) for w in range(concurrency)]
    gevent.sleep(0)
    c0 = time.process_time()
    gevent.joinall(greenlets)
    return (time.process_time() - c0) / max(totals.handshakes.completed, 1), totals


def pings(address: tuple[str, int], associations: int, seconds: float, version: str) -> tuple[float, StatsSink]:
    ctx = client_context(options(version, False), psk_mode=True)
    totals = StatsSink()
    sink = run_sink(totals)
    plan = traffic_plan(PingConfig(interval=0.0, jitter=0.0, timeout=2.0, expect=Expect("echo")))
    assocs = [TlsAssociation(f"p{i}", "bench", address, ctx, sink, identity=b"p%d" % i, key=QUICKSTART_KEY,
                             ping=plan, message_level=logging.WARNING) for i in range(associations)]
    greenlets = [gevent.spawn(a.run) for a in assocs]
    while totals.handshakes.completed + totals.handshakes.failed < associations:
        gevent.sleep(0.05)
    p0, c0 = totals.pings.completed, time.process_time()
    gevent.sleep(seconds)
    p1, c1 = totals.pings.completed, time.process_time()
    gevent.killall(greenlets)
    return (p1 - p0) / max(c1 - c0, 1e-9), totals


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--version", choices=("1.2", "1.3"), default="1.2")
    parser.add_argument("--ping-associations", type=int, default=100)
    parser.add_argument("--ping-seconds", type=float, default=6.0)
    args = parser.parse_args()
    us = 1e6
    baseline = engine_only(min(args.handshakes, 1000), args.version)
    server_args = ["--psk-hex", QUICKSTART_KEY.value.hex(), "--min-version", args.version,
                   "--max-version", args.version]
    with ServerProcess(server_args, protocol="tls") as address:
        full, ft = socket_handshakes(address, args.handshakes, args.concurrency, args.version, resumed=False)
        resumed, rt = socket_handshakes(address, args.handshakes, args.concurrency, args.version, resumed=True)
        per_cpu, pt = pings(address, args.ping_associations, args.ping_seconds, args.version)
    print(f"# python benchmarks/bench_tls.py {' '.join(sys.argv[1:])}")
    print(f"TLS {args.version} PSK engine-only handshake (client+server, memory): {baseline * us:8.1f} us CPU "
          "[baseline]")
    print(f"full handshake over loopback, client CPU               : {full * us:8.1f} us CPU "
          f"({full / baseline:.2f}x baseline; {ft.handshakes.completed} ok, {ft.handshakes.failed} failed)")
    print(f"resumed handshake over loopback, client CPU            : {resumed * us:8.1f} us CPU "
          f"({resumed / baseline:.2f}x baseline; {rt.handshakes.completed} ok, {rt.handshakes.resumed} resumed)")
    print(f"pings per client CPU second                            : {per_cpu:8.0f} ({us / per_cpu:.1f} us each; "
          f"{pt.pings.completed} ok, {pt.pings.failed} failed)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
