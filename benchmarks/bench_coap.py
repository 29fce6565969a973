"""CoAP benchmark: CoAP requests per client CPU second next to plain pings, in the same run.

Three figures, each with its ratio to the plain ping's:

- workload only (no sockets, no DTLS): the client CPU a request costs in the workload the
  transport drives: today's ping tracker (echo rule) against the CoAP workload (CON GET,
  piggybacked 2.05 matched by token, code judged), the server's answer made in memory;
- over DTLS on loopback, with Locust's events and loadgen's stats as in a real run: plain
  pings against the reference server (an echo server, not a CoAP server: it gets plain pings
  only) and CoAP CON GETs of ``/time`` against libcoap's ``coap-server-openssl``, each server
  in a process of its own; client CPU is this process's.

    python benchmarks/bench_coap.py [--associations 100] [--seconds 10] [--requests 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from bench_dtls import cpu, pings, process_cpu, run_sink

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from test_coap_libcoap import start_libcoap  # noqa: E402

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.coap import message as m  # noqa: E402
from loadgen.coap.plan import CoapPlan  # noqa: E402
from loadgen.protocol.credentials import Secret  # noqa: E402
from loadgen.scenario.model import CoapRequest, Expect, PingConfig, RequestStep  # noqa: E402
from loadgen.servers.launcher import ServerProcess  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.traffic.workload import WorkloadPlan  # noqa: E402

KIND = "GET /time"
#: Back-to-back CON GETs (the next right after each response), as the ping benchmark's pings.
COAP_PLAN = CoapPlan.build([RequestStep(KIND, coap=CoapRequest(path="/time"), expect=Expect(code="2.05"),
                                        interval=0.0)], ping=PingConfig(interval=0.0, jitter=0.0))
PING_PLAN = traffic_plan(PingConfig(interval=0.0, jitter=0.0, timeout=2.0, expect=Expect("echo")))


def coap_answer(request: bytes) -> bytes:
    """The piggybacked 2.05 a server sends to ``request`` (made from its bytes: mid and token)."""
    tkl = request[0] & 15
    return bytes((0x60 | tkl, m.CONTENT)) + request[2:4 + tkl] + b"\xc0\xff04:20:00"  # Content-Format 0, a time


def workload_only(plan: WorkloadPlan, answer, n: int) -> float:  # type: ignore[no-untyped-def]
    """Client CPU seconds per request of ``plan``'s workload in memory, ``answer(request)`` the server's reply."""
    totals = StatsSink()
    work = plan.workload("bench", "bench", run_sink(totals), uniform=lambda a, b: a)
    now = 0.0
    work.start(now)
    t0 = cpu()
    request = work.poll(now)
    for _ in range(n):
        assert request is not None
        work.sent(len(request) + 29)
        now += 1e-4
        reply = answer(request)
        assert work.receive(reply, len(reply) + 29, now)
        request = work.poll(now)  # the transport polls after each reply: the next request (interval 0)
    spent = cpu() - t0
    done = sum(cell.completed for kind, cell in totals.kinds.items() if kind != "handshake")
    assert done == n, (done, n)
    return spent / n


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--requests", type=int, default=50000, help="in-memory requests of each workload")
    args = parser.parse_args()
    command = "python benchmarks/bench_coap.py " + " ".join(sys.argv[1:])

    ping_mem = workload_only(PING_PLAN, lambda request: request, args.requests)
    coap_mem = workload_only(COAP_PLAN, coap_answer, args.requests)
    with ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex()]) as address:
        ping_cpu, ping_wall, pt = pings(address, args.associations, args.seconds, plan=PING_PLAN)
    libcoap = start_libcoap(b"loadgen-bench-key")
    try:
        s0 = process_cpu(libcoap.process.pid)
        coap_cpu, coap_wall, ct = pings(libcoap.dtls_address, args.associations, args.seconds, plan=COAP_PLAN,
                                        key=Secret(libcoap.key), kind=KIND)
        server_cpu = process_cpu(libcoap.process.pid) - s0
    finally:
        libcoap.stop()
    coap = ct.counted(KIND)

    us = 1e6
    print(f"# {command}")
    print(f"workload only, in memory: ping {ping_mem * us:6.2f} us CPU, CoAP CON GET {coap_mem * us:6.2f} us CPU"
          f"   (CoAP adds {(coap_mem - ping_mem) * us:.2f} us, ratio {coap_mem / ping_mem:.2f}x)")
    print(f"pings per client CPU second (reference server)    : {ping_cpu:8.0f}   ({us / ping_cpu:.1f} us CPU each;"
          f" {ping_wall:.0f}/s wall, {args.associations} associations; failed {pt.pings.failed})")
    print(f"CoAP GETs per client CPU second (coap-server)     : {coap_cpu:8.0f}   ({us / coap_cpu:.1f} us CPU each;"
          f" {coap_wall:.0f}/s wall; failed {coap.failed} {dict(coap.failures)}, retransmissions {coap.retransmits})")
    print(f"  ratio CoAP / ping per client CPU second          : {coap_cpu / ping_cpu:8.2f}"
          f"   (libcoap CPU per request {server_cpu / max(coap.completed, 1) * us:.1f} us)")
    return 0


if __name__ == "__main__":
    started = time.perf_counter()
    status = main()
    print(f"# {time.perf_counter() - started:.0f} s")
    raise SystemExit(status)
