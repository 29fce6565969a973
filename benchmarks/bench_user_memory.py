"""Memory per Locust user in one process: what a device costs in a real run (issue 15, target 4).

Spawns ``--users`` loadgen users with Locust's own local runner (each one DTLS association to the
reference server in its own process, pinging every 5 s), waits until every handshake completed and a
ping went out, and prints the RSS per user beyond the RSS before the first one: as the run holds it
(the target's figure), and after a full garbage collection (what the collector could give back: a
gap between them is garbage that a frozen heap keeps until its next full collection). Run twice in fresh
processes, in the same run: with the record layer's C accelerator and with the pure-Python path
(``LOADGEN_PURE_PYTHON=1``, cryptography's AEAD classes), and the ratio between them.

    python benchmarks/bench_user_memory.py --users 3000
    python benchmarks/bench_user_memory.py --users 3000 --trace   # where it goes (tracemalloc, slower)

``bench_scale.py`` measures the association alone (no Locust user); ``bench_distributed.py`` the
same in Locust worker processes over a longer hold (stats and Locust's bookkeeping grow with it).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_KIB = 8.0


def measure(users: int, trace: bool, hold: float, rate: float) -> None:
    """The counted process: Locust's runner spawns the users; prints ``kib_per_user=...`` last."""
    import gc
    import time
    import tracemalloc

    import gevent
    import locust  # noqa: F401 - as in a run: gevent's monkey-patching first

    sys.path.insert(0, str(ROOT))
    from loadgen.locust.environment import RunOptions, endpoints, make_environment
    from loadgen.locust.health import freeze_heap, freeze_while_spawning
    from loadgen.protocol.native.record_layer import ACCELERATED
    from loadgen.scenario import parse_scenario

    scenario = parse_scenario(f"""\
name: user-memory
clients: {{count: {users}, spawn_rate: {rate}}}
run_time: 10m
psk: {{identity: "device-{{n:05d}}", key: "000102030405060708090a0b0c0d0e0f"}}
ping: {{interval: 5s, expect: echo}}
""", "user-memory.yaml")

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with endpoints(scenario, RunOptions()) as (eps, _server):
        env, session = make_environment(scenario, eps)
        runner = env.create_local_runner()
        env.events.spawning_complete.add_listener(freeze_heap)  # what `loadgen run` does (locust/run.py)
        freeze_while_spawning(env)
        gevent.sleep(0.5)
        gc.collect()
        if trace:
            tracemalloc.start(10)
        before_snapshot = tracemalloc.take_snapshot() if trace else None
        before = rss()
        runner.start(users, rate)
        deadline = time.monotonic() + 120 + users / rate
        totals = session.stats_sink
        while (totals.handshakes.completed < users or totals.pings.attempted < users) and time.monotonic() < deadline:
            gevent.sleep(0.2)
        gevent.sleep(hold)
        held = rss()
        gc.collect()
        after = rss()
        print(f"  handshakes completed {totals.handshakes.completed} of {users}, accelerator: {ACCELERATED}")
        if trace and before_snapshot is not None:
            stats = tracemalloc.take_snapshot().compare_to(before_snapshot, "traceback")
            print(f"  tracemalloc sees {sum(s.size_diff for s in stats) / users:.0f} B per user; the largest:")
            for stat in stats[:15]:
                print(f"  {stat.size_diff / users:7.0f} B {stat.count_diff / users:5.2f} blocks per user, from")
                for line in stat.traceback.format()[-4:]:
                    print(f"      {line}")
        runner.quit()
    print(f"kib_per_user={(held - before) / users / 1024:.3f} {(after - before) / users / 1024:.3f}")


def run(users: int, trace: bool, hold: float, rate: float, pure: bool) -> tuple[float, float]:
    """KiB per user as held, and after a full collection, in a fresh process."""
    env = {**os.environ, "LOADGEN_PURE_PYTHON": "1" if pure else ""}
    out = subprocess.run([sys.executable, __file__, "--users", str(users), "--hold", str(hold),
                          "--spawn-rate", str(rate), "--child",
                          *(["--trace"] if trace else [])],
                         env=env, capture_output=True, text=True, timeout=600)
    if out.returncode != 0:
        raise SystemExit(f"the measuring process failed:\n{out.stderr[-3000:]}")
    *lines, last = out.stdout.strip().splitlines()
    print("\n".join(lines))
    held, collected = last.partition("=")[2].split()
    return float(held), float(collected)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=3000)
    parser.add_argument("--trace", action="store_true", help="tracemalloc: where the memory goes (slower)")
    parser.add_argument("--hold", type=float, default=0.0, help="seconds to hold them up before measuring")
    parser.add_argument("--spawn-rate", type=float, default=2000.0, help="users started per second")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.users, args.trace, args.hold, args.spawn_rate)
        return
    print(f"# python benchmarks/bench_user_memory.py --users {args.users} --hold {args.hold:g} "
          f"--spawn-rate {args.spawn_rate:g}"
          f"{' --trace' if args.trace else ''}")
    pure, pure_collected = run(args.users, args.trace, args.hold, args.spawn_rate, pure=True)
    print(f"pure-Python record layer (baseline)  : {pure:5.2f} KiB per Locust user (RSS beyond the baseline;"
          f" {pure_collected:.2f} after a full collection)")
    ours, collected = run(args.users, args.trace, args.hold, args.spawn_rate, pure=False)
    print(f"with the C AEAD accelerator          : {ours:5.2f} KiB per Locust user, {ours / pure:.2f}x the baseline "
          f"(target <= {TARGET_KIB:.0f} KiB: {'met' if ours <= TARGET_KIB else 'missed'};"
          f" {collected:.2f} after a full collection)")


if __name__ == "__main__":
    main()
