"""TLS client memory per established association, light engines against OpenSSL's, in one run.

Holds N TLS 1.2 PSK associations (AES-128-GCM) to the reference TLS server, pinging every 5 s,
and prints the resident memory each one adds beyond the process before them. Each side runs in a
fresh process: first with light engines (records through loadgen's record layer, OpenSSL's
connection freed after the handshake), then with every engine kept on OpenSSL, the baseline.

    python benchmarks/bench_tls_memory.py --associations 3000
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import subprocess
import sys
from pathlib import Path

import gevent

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import bench_tls  # noqa: E402 - after the path

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.protocol.openssl import tls  # noqa: E402
from loadgen.scenario.model import Expect, PingConfig  # noqa: E402
from loadgen.servers.launcher import ServerProcess  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.transport.tls_association import TlsAssociation  # noqa: E402

_HEAVY = "LOADGEN_BENCH_HEAVY_TLS"


def rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def measure(n: int) -> None:
    """In this process: hold ``n`` associations, print KiB per association and how many went light."""
    if os.environ.get(_HEAVY):
        made = tls.TlsEngine.client.__func__  # type: ignore[attr-defined]
        tls.TlsEngine.client = classmethod(lambda cls, *a, **k: made(cls, *a, **{**k, "light": False}))  # type: ignore[method-assign,assignment]
    mode = bench_tls.psk_mode("1.2", False)
    with ServerProcess(mode.server_args, protocol="tls") as address:
        totals = StatsSink()
        plan = traffic_plan(PingConfig(interval=5.0, jitter=0.0, timeout=2.0, expect=Expect("echo")))
        gc.collect()
        base = rss()
        assocs = [TlsAssociation(f"m{i}", "bench", address, mode.client, totals, identity=b"m%d" % i,
                                 key=QUICKSTART_KEY, ping=plan, message_level=logging.WARNING) for i in range(n)]
        for i, assoc in enumerate(assocs):
            assoc.start()
            if i % 100 == 99:
                gevent.sleep(0.05)  # a ramp, not one burst the server's backlog drops
        while totals.handshakes.completed + totals.handshakes.failed < n:
            gevent.sleep(0.1)
        gevent.sleep(6)  # every association has pinged
        gc.collect()
        per = (rss() - base) / n / 1024
        light = sum(1 for a in assocs if a._engine is not None and a._engine.light)  # noqa: SLF001
        print(f"{per:.1f} {light} {totals.handshakes.completed} {totals.pings.completed} {totals.pings.failed}")
        for assoc in assocs:
            assoc.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=3000)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        measure(args.associations)
        return 0
    print(f"# python benchmarks/bench_tls_memory.py --associations {args.associations}")
    figures = {}
    for label, env in (("light", {}), ("OpenSSL's (baseline)", {_HEAVY: "1"})):
        out = subprocess.run([sys.executable, __file__, "--associations", str(args.associations), "--child"],
                             env={**os.environ, **env}, capture_output=True, text=True, check=True).stdout
        per, light, completed, pings, failed = out.split()
        figures[label] = float(per)
        print(f"{'TLS 1.2 PSK client, ' + label + ' engines':<48}: {float(per):6.1f} KiB per association"
              f" ({completed} handshakes, {light} light, {pings} pings, {failed} failed)")
    light_kib, heavy_kib = figures.values()
    print(f"{'light / OpenSSL':<48}: {light_kib / heavy_kib:6.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
