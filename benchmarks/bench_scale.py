"""Scale benchmark: many concurrent DTLS associations in ONE client process.

Ramps up N associations (each pinging every --interval seconds, as devices do),
holds them for --hold seconds, and prints: handshakes, pings answered (ratio), ping
RTT percentiles, client memory per association beyond the process baseline (RSS
measured before the first association and after the hold), client CPU, and the
server's own summary. The reference server runs in its own process.

    python benchmarks/bench_scale.py --associations 19000 --ramp-rate 1000 --hold 30
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
import time
from pathlib import Path

import gevent
import locust  # noqa: F401 - as in a real run: gevent's monkey-patching first
from floors import wake_ups
from locust.env import Environment

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.locust.users import LocustSink  # noqa: E402
from loadgen.protocol import dtls_contexts  # noqa: E402
from loadgen.scenario.model import Expect, PingConfig  # noqa: E402
from loadgen.servers.launcher import ServerProcess  # noqa: E402
from loadgen.stats.facts import FanOut  # noqa: E402
from loadgen.stats.run import RunStats  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.transport.dtls_association import DtlsAssociation  # noqa: E402


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=19000)
    parser.add_argument("--ramp-rate", type=float, default=1000.0, help="associations started per second")
    parser.add_argument("--interval", type=float, default=5.0, help="ping interval, seconds")
    parser.add_argument("--hold", type=float, default=30.0, help="seconds to hold every association up")
    parser.add_argument("--jitter", type=float, default=0.1, help="ping jitter, a fraction of the interval")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.associations > hard - 100:
        print(f"at most {hard - 100} associations fit under the open-file limit ({hard})", file=sys.stderr)
        return 2
    n = args.associations
    totals = StatsSink()
    env = Environment()
    env.create_local_runner()
    sink = FanOut([LocustSink(env.events.request, "DTLS"), totals])
    plan = traffic_plan(PingConfig(interval=args.interval, jitter=args.jitter, expect=Expect("echo")))
    server = ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex(), "--idle-timeout", "120"])
    with server as address:
        ctx = dtls_contexts.client_context()
        gevent.sleep(0.5)
        base = rss_bytes()
        assert server.pid is not None
        server_base = rss_bytes(server.pid)
        c0, w0 = time.process_time(), time.perf_counter()
        assocs = []
        for i in range(n):
            assoc = DtlsAssociation(f"s{i}", "scale", address, ctx, sink, identity=b"scale-%d" % i,
                                    key=QUICKSTART_KEY, ping=plan, message_level=logging.WARNING)
            assoc.start()
            assocs.append(assoc)
            behind = (i + 1) / args.ramp_rate - (time.perf_counter() - w0)
            if behind > 0:
                gevent.sleep(behind)
        while totals.handshakes.completed + totals.handshakes.failed < n and time.perf_counter() - w0 < 600:
            gevent.sleep(0.5)
        ramped = time.perf_counter() - w0
        ramp = totals.roll()  # the hold is counted afresh: RTTs while holding, not while the ramp loads the server
        hold_cpu, hold_wakes, server_wakes = time.process_time(), wake_ups(os.getpid()), wake_ups(server.pid)
        gevent.sleep(args.hold)
        hold_wakes, server_wakes = wake_ups(os.getpid()) - hold_wakes, wake_ups(server.pid) - server_wakes
        after = rss_bytes()
        server_after = rss_bytes(server.pid)
        c1 = time.process_time()
        hold = totals.roll()
        for assoc in assocs:
            assoc.close()
    run, during_hold = RunStats(), RunStats()
    for delta in (ramp, hold):
        run.apply(delta)
    during_hold.apply(hold)
    held = during_hold.pings.completed + during_hold.pings.failed
    hs, pings = run.handshakes, run.pings
    answered = pings.completed / max(pings.completed + pings.failed, 1)
    print(f"# python benchmarks/bench_scale.py {' '.join(sys.argv[1:])}")
    print(f"associations {n}: handshakes completed {hs.completed}, failed {hs.failed} {dict(hs.failures)}, "
          f"ramp {ramped:.1f} s")
    print(f"pings: {pings.completed} answered, {pings.failed} failed {dict(pings.failures)} -> {answered:.4%} "
          f"answered; {held} ended during the {args.hold:g} s hold")
    p50, p99 = during_hold.pings.percentile(50), during_hold.pings.percentile(99)
    print(f"ping RTT during the hold: p50 {p50 * 1000 if p50 else 0:.2f} ms, p99 {p99 * 1000 if p99 else 0:.2f} ms")
    print(f"client memory: {(after - base) / n / 1024:.1f} KiB per association beyond the baseline "
          f"({base / 2**20:.0f} MiB -> {after / 2**20:.0f} MiB)")
    print(f"client CPU: {c1 - c0:.1f} s over {time.perf_counter() - w0:.1f} s wall; during the hold "
          f"{(c1 - hold_cpu) / max(held, 1) * 1e6:.1f} us per ping ({held / args.hold:.0f} pings/s), "
          f"{hold_wakes / max(held, 1):.2f} wake-ups per ping (server {server_wakes / max(held, 1):.2f})")
    print(f"server memory: {(server_after - server_base) / n / 1024:.1f} KiB per association "
          f"({server_base / 2**20:.0f} MiB -> {server_after / 2**20:.0f} MiB)")
    print(f"server: {server.summary}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
