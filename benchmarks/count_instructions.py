"""Instructions per DTLS ping in the client, counted by valgrind: an A/B that noise cannot blur.

CPU seconds on this machine move by 4x with what else runs (2 shared cores), so a change of
10% to the ping path cannot be seen in them. ``valgrind --tool=callgrind`` counts the
instructions the client process executes instead: the same for the same code, whatever the
machine does. The client runs the instrumented ping path of a real run (Locust's request
event with Locust's stats, loadgen's exact stats, reply checks) against the reference server
in its own process (not counted); the script runs it twice, with ``--pings`` and twice as
many, and prints the difference per ping, so start-up and handshakes drop out.

    python benchmarks/count_instructions.py --pings 4000

Needs valgrind (Debian: ``valgrind``). Inside valgrind the client is ~50x slower, so the
server's replies are always waiting: this counts the work per ping, not the wake-ups.
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def client(pings: int, associations: int, locust_events: bool = True) -> int:
    """Run ``pings`` back-to-back pings over ``associations`` associations (the counted process)."""
    import gevent
    import locust  # noqa: F401 - as in a real run: gevent's monkey-patching first
    from gevent.event import Event

    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_dtls import run_sink

    from loadgen.cli.keys import QUICKSTART_KEY
    from loadgen.protocol import dtls_contexts
    from loadgen.scenario.model import Expect, PingConfig
    from loadgen.servers.launcher import ServerProcess
    from loadgen.stats.facts import PING, Fact, Finished
    from loadgen.stats.sink import StatsSink
    from loadgen.traffic.tracker import traffic_plan
    from loadgen.transport.dtls_association import DtlsAssociation

    plan = traffic_plan(PingConfig(interval=0.0, jitter=0.0, timeout=30.0, expect=Expect("echo")))
    totals = StatsSink()
    # Counted as they come, so that waiting for the last ping costs nothing per second (reading
    # totals merges histograms: under valgrind's slowness that would outweigh the pings).
    enough, answered = Event(), [0]

    class Counter:
        facts = (Finished,)

        def record(self, fact: Fact) -> None:
            if type(fact) is Finished and fact.kind == PING and fact.error is None:
                answered[0] += 1
                if answered[0] >= pings:
                    enough.set()

    sink = run_sink(totals, Counter(), locust_events=locust_events)
    with ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex(), "--idle-timeout", "300"]) as address:
        ctx = dtls_contexts.client_context()
        assocs = [DtlsAssociation(f"count-{i}", "bench", address, ctx, sink, identity=b"count-%d" % i,
                                  key=QUICKSTART_KEY, ping=plan, message_level=logging.WARNING)
                  for i in range(associations)]
        greenlets = [gevent.spawn(a.run) for a in assocs]
        enough.wait(600)
        gevent.killall(greenlets)
    if totals.pings.failed:
        raise SystemExit(f"pings failed: {dict(totals.pings.failures)}")
    return totals.pings.completed


def count(pings: int, associations: int, locust_events: bool = True) -> tuple[int, int]:
    """Instructions of one counted client run, and the pings it completed (at least ``pings``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = Path(tmp) / "done"
        cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--trace-children=no",
               sys.executable, __file__, "--client", str(pings), "--associations", str(associations),
               "--report", str(done)] + ([] if locust_events else ["--without-locust"])
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        text = out.read_text(errors="replace")
        match = re.search(r"^(?:summary|totals):\s+(\d+)", text, re.MULTILINE)
        if match is None:
            raise SystemExit(f"no instruction total in {out}")
        return int(match.group(1)), int(done.read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=4000, help="pings of the smaller run (the larger: twice)")
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--without-locust", action="store_true",
                        help="also count without Locust's request events (loadgen's stats only): Locust's share")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        Path(args.report).write_text(str(client(args.client, args.associations, not args.without_locust)))
        return 0
    if shutil.which("valgrind") is None:
        print("not measured: valgrind is not installed (Debian: apt-get install valgrind)")
        return 0
    print(f"# python benchmarks/count_instructions.py {' '.join(sys.argv[1:])}")
    full = per_ping(args.pings, args.associations, True)
    if args.without_locust:
        bare = per_ping(args.pings, args.associations, False)
        share = full - bare
        print(f"Locust's request event and stats: {share:,.0f} instructions per ping ({share / full:.0%})")
    return 0


def per_ping(pings: int, associations: int, locust_events: bool) -> float:
    """Instructions per ping: two counted runs, ``pings`` and twice as many, their difference."""
    small, small_done = count(pings, associations, locust_events)
    large, large_done = count(2 * pings, associations, locust_events)
    result = (large - small) / max(large_done - small_done, 1)
    what = "with Locust's request events" if locust_events else "loadgen's stats only"
    print(f"{what}: {small:,} instructions for {small_done} pings, {large:,} for {large_done}: "
          f"{result:,.0f} per ping")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
