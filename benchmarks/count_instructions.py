"""Instructions per DTLS (or TLS) ping in the client, counted by valgrind: an A/B that noise cannot blur.

CPU seconds on this machine move by 4x with what else runs (2 shared cores), so a change of
10% to the ping path cannot be seen in them. ``valgrind --tool=callgrind`` counts the
instructions the client process executes instead: the same for the same code, whatever the
machine does. The client runs the instrumented ping path of a real run (Locust's request
event with Locust's stats, loadgen's exact stats, reply checks) against the reference server
in its own process (not counted). Two ways to take start-up and handshakes out:

- ``--method markers`` (the default): one run; after ``--warmup`` answered pings the client
  calls a marker function (``math.erfc``, which nothing else in the process calls), after
  ``--pings`` more a second one (``math.lgamma``), and callgrind dumps its counts on entering
  each (``--dump-before``). The count between the markers over the pings answered between them
  is the figure: steady-state pings only, with at most one partial ping per association at
  each end. Repeat runs of the same code agree within about 0.1-0.3% (see the commit that
  added it for measured figures), so a 1-2% change shows.
- ``--method difference`` (the original): two runs, with ``--pings`` and twice as many, and
  the difference of their totals per ping. Start-up and handshakes cancel only on average:
  the figure moves about +-3% between runs of the same code (the run's end, gevent's and
  the collector's timing), so run old and new code back to back, twice each or more.

    python benchmarks/count_instructions.py --pings 4000
    python benchmarks/count_instructions.py --pings 1000 --method difference
    python benchmarks/count_instructions.py --pings 1000 --protocol both   # TLS 1.2 PSK / DTLS, user space

``--protocol tls`` counts a TLS 1.2 PSK (AES-128-GCM) association against the reference TLS
server; ``both`` counts both and prints the ratio: the user-space part of bench_tls's TLS/DTLS
ping ratio, without the host's noise and without the kernel's share (TCP's send and recv cost
more than UDP's: bench_tls's floor).

Needs valgrind (Debian: ``valgrind``). Inside valgrind the client is ~50x slower, so the
server's replies are always waiting: this counts the work per ping, not the wake-ups.
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


#: The marker functions of ``--method markers``: C functions (``math_erfc``, ``math_lgamma`` in
#: CPython's math module) that neither loadgen, gevent nor Locust call, so that callgrind's
#: ``--dump-before`` fires exactly where the client calls them (checked: one dump each).
START_MARKER, END_MARKER = "math_erfc", "math_lgamma"


def client(pings: int, associations: int, locust_events: bool = True, warmup: int = 0,
           protocol: str = "dtls") -> int:
    """Run ``pings`` back-to-back pings over ``associations`` associations (the counted process).

    With ``warmup``, the first ``warmup`` answered pings come first, then the start marker; the
    end marker follows the ``pings``-th answer after it (see the module doc)."""
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
    from loadgen.transport.tls_association import TlsAssociation

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
                if warmup and answered[0] == warmup:
                    math.erfc(0.0)  # START_MARKER: callgrind dumps what came before
                if answered[0] == warmup + pings:
                    if warmup:
                        math.lgamma(1.0)  # END_MARKER: callgrind dumps the counted pings
                    enough.set()

    sink = run_sink(totals, Counter(), locust_events=locust_events, request_type=protocol.upper())
    server = ["--psk-hex", QUICKSTART_KEY.value.hex(), "--idle-timeout", "300"]
    if protocol == "tls":
        server += ["--min-version", "1.2", "--max-version", "1.2"]
    with ServerProcess(server, protocol=protocol) as address:
        assocs: list[DtlsAssociation | TlsAssociation]
        if protocol == "tls":
            from loadgen.protocol.openssl.tls_contexts import TlsOptions, client_context

            tls = client_context(TlsOptions(min_version="1.2", max_version="1.2", ciphers="PSK-AES128-GCM-SHA256"),
                                 psk_mode=True)
            assocs = [TlsAssociation(f"count-{i}", "bench", address, tls, sink, identity=b"count-%d" % i,
                                     key=QUICKSTART_KEY, ping=plan, message_level=logging.WARNING)
                      for i in range(associations)]
        else:
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


def count(pings: int, associations: int, locust_events: bool = True, protocol: str = "dtls") -> tuple[int, int]:
    """Instructions of one counted client run, and the pings it completed (at least ``pings``)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        done = _valgrind(out, pings, associations, locust_events, protocol=protocol)
        return _instructions(out), done


def count_between_markers(pings: int, associations: int, warmup: int, locust_events: bool = True,
                          protocol: str = "dtls") -> int:
    """Instructions between the two markers of one counted run (``pings`` answered between them)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "callgrind.out"
        _valgrind(out, pings, associations, locust_events, warmup=warmup, protocol=protocol,
                  extra=[f"--dump-before={START_MARKER}", f"--dump-before={END_MARKER}"])
        # Dumps: .1 up to the start marker, .2 between the markers, the file itself after the end one.
        parts = sorted(Path(tmp).glob("callgrind.out.*"))
        if [p.name for p in parts] != ["callgrind.out.1", "callgrind.out.2"]:
            raise SystemExit(f"expected two marker dumps, got {[p.name for p in parts]}: a marker was called "
                             "elsewhere (or not at all)")
        triggers = [re.search(r"^desc: Trigger: (.*)$", p.read_text(errors="replace"), re.MULTILINE)
                    for p in parts]
        wanted = [f"--dump-before={START_MARKER}", f"--dump-before={END_MARKER}"]
        if [t.group(1).strip() if t else None for t in triggers] != wanted:
            raise SystemExit(f"marker dumps with unexpected triggers: {triggers}")
        return _instructions(parts[1])


def _valgrind(out: Path, pings: int, associations: int, locust_events: bool, warmup: int = 0,
              extra: list[str] | None = None, protocol: str = "dtls") -> int:
    """Run the client under callgrind (counts to ``out``); returns the pings it completed."""
    done = out.with_name("done")
    cmd = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", "--trace-children=no", *(extra or []),
           sys.executable, __file__, "--client", str(pings), "--associations", str(associations),
           "--warmup", str(warmup), "--report", str(done), "--protocol", protocol]
    cmd += [] if locust_events else ["--without-locust"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return int(done.read_text())


def _instructions(out: Path) -> int:
    """The instruction total of one callgrind output file."""
    match = re.search(r"^(?:summary|totals):\s+(\d+)", out.read_text(errors="replace"), re.MULTILINE)
    if match is None:
        raise SystemExit(f"no instruction total in {out}")
    return int(match.group(1))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pings", type=int, default=4000, help="pings of the smaller run (the larger: twice)")
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--without-locust", action="store_true",
                        help="also count without Locust's request events (loadgen's stats only): Locust's share")
    parser.add_argument("--method", choices=("markers", "difference"), default="markers",
                        help="markers: one run, counted between two markers (+-0.3%%); difference: two runs, "
                             "N and 2N pings, their difference (+-3%%)")
    parser.add_argument("--warmup", type=int, default=200,
                        help="markers: pings answered before counting starts (handshakes done, caches warm)")
    parser.add_argument("--protocol", choices=("dtls", "tls", "both"), default="dtls",
                        help="tls: a TLS 1.2 PSK association and the reference TLS server; both: each, and the ratio")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client is not None:
        Path(args.report).write_text(str(client(args.client, args.associations, not args.without_locust,
                                                args.warmup, args.protocol)))
        return 0
    if shutil.which("valgrind") is None:
        print("not measured: valgrind is not installed (Debian: apt-get install valgrind)")
        return 0
    print(f"# python benchmarks/count_instructions.py {' '.join(sys.argv[1:])}")
    measure = per_ping if args.method == "difference" else per_ping_between_markers
    protocols = ("dtls", "tls") if args.protocol == "both" else (args.protocol,)
    figures = {}
    for protocol in protocols:
        full = figures[protocol] = measure(args.pings, args.associations, True, args.warmup, protocol)
        if args.without_locust:
            bare = measure(args.pings, args.associations, False, args.warmup, protocol)
            share = full - bare
            print(f"{protocol.upper()}: Locust's request event and stats: {share:,.0f} instructions per ping"
                  f" ({share / full:.0%})")
    if len(figures) == 2:
        print(f"TLS / DTLS instructions per ping (user space): {figures['tls'] / figures['dtls']:.2f}x")
    return 0


def per_ping(pings: int, associations: int, locust_events: bool, warmup: int = 0, protocol: str = "dtls") -> float:
    """Instructions per ping: two counted runs, ``pings`` and twice as many, their difference
    (``warmup`` is the markers method's)."""
    small, small_done = count(pings, associations, locust_events, protocol)
    large, large_done = count(2 * pings, associations, locust_events, protocol)
    result = (large - small) / max(large_done - small_done, 1)
    what = f"{protocol.upper()}, " + ("with Locust's request events" if locust_events else "loadgen's stats only")
    print(f"{what}: {small:,} instructions for {small_done} pings, {large:,} for {large_done}: "
          f"{result:,.0f} per ping")
    return result


def per_ping_between_markers(pings: int, associations: int, locust_events: bool, warmup: int,
                             protocol: str = "dtls") -> float:
    """Instructions per ping: one counted run, between the markers around ``pings`` answered pings."""
    between = count_between_markers(pings, associations, max(warmup, 1), locust_events, protocol)
    result = between / pings
    what = f"{protocol.upper()}, " + ("with Locust's request events" if locust_events else "loadgen's stats only")
    print(f"{what}: {between:,} instructions between the markers for {pings} pings "
          f"(after {max(warmup, 1)}): {result:,.0f} per ping")
    return result


if __name__ == "__main__":
    raise SystemExit(main())
