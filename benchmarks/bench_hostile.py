"""Hostile-peer benchmark (issue 11): what hostile input costs the server and a client.

Against ``loadgen serve dtls`` (a separate process; ``--handshake loadgen``, then
``openssl`` with ``--handshake both``):

* mutated handshake datagrams *past the cookie check* (1,000,000 by default, spread
  over ``--peers`` hostile peers that each did the real cookie exchange);
* mutated plaintext *inside established sessions*, sealed with the real keys so that
  every record authenticates (100,000 by default);
* 50,000 idle half-open peers (several 127.0.0.x source addresses; each hostile socket
  closes after its cookie'd ClientHello, the server keeps the state): at most 5% of a core;
* 1 MB/s of hostile 1-byte fragments: at most 10% of a core.

Against a loadgen client (:class:`DtlsAssociation` in this process) from the hostile
server of the adversarial tests (its own process): mutated handshake flights and
mutated plaintext in sealed records, the same classes.

Throughout, legitimate clients ping a ``serve dtls`` (interval 0.2 s, echo expected):
their handshakes, pings and failures are counted. Printed: peak memory (VmHWM) of the
server and of the client process, memory per hostile peer (target <= 48 KiB), CPU per
hostile datagram, and a same-run baseline (server CPU per legitimate handshake
datagram) with ratios; PASS/FAIL per target. Datagrams the kernel dropped at the
server's socket (/proc/net/udp) are subtracted: the figures count what was processed.

    python benchmarks/bench_hostile.py [--handshake loadgen|openssl|both] [--handshake-datagrams 1000000]
        [--session-records 100000] [--peers 1000] [--sessions 100] [--half-open 50000]
        [--fragment-seconds 10] [--client-flight-datagrams 1000000] [--client-records 100000] [--seed 1]
"""

from __future__ import annotations

import argparse
import faulthandler
import logging
import os
import random
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import gevent

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from adversarial import fuzz  # noqa: E402
from adversarial.hostile import (  # noqa: E402
    HostilePeer,
    Ports,
    Session,
    cpu_seconds,
    established,
    got_server_hello,
    hwm_kib,
    one_byte_fragments,
    reset_hwm,
    rss_kib,
    small_fragment_datagrams,
)
from adversarial.legit import LegitClients, limit_args  # noqa: E402
from servers import LoadgenServer, loadgen_env, start_loadgen_server  # noqa: E402

from loadgen.protocol import dtls_contexts  # noqa: E402
from loadgen.protocol.credentials import Secret  # noqa: E402
from loadgen.protocol.native import records  # noqa: E402
from loadgen.scenario.model import DtlsConfig, Expect, PingConfig  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.transport.dtls_association import DtlsAssociation  # noqa: E402

#: Targets of the issue.
MAX_KIB_PER_PEER = 48
MAX_HALF_OPEN_CORE = 0.05  # 50,000 idle half-open peers
MAX_FRAGMENT_CORE = 0.10  # 1 MB/s of hostile fragments
#: A hostile batch waits for the server to catch up (an echo) after this many datagrams,
#: so the socket buffer does not overflow and the datagrams are really processed.
SYNC_EVERY = 200

RESULTS: list[str] = []


def report(line: str) -> None:
    print(line, flush=True)
    RESULTS.append(line)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped at the UDP socket bound to 127.0.0.1:``port``."""
    local = f"0100007F:{port:04X}"
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == local:
            return int(fields[-1])
    return 0


class Sync:
    """A session of our own: its echo says the server processed everything sent before it."""

    def __init__(self, address: tuple[str, int], key: Secret) -> None:
        self.address, self.key = address, key
        self.session = established(address, key, identity=b"sync")
        self.stalls = 0  # echoes that took more than 2 s or never came
        self._in_a_row = 0

    @property
    def server_gone(self) -> bool:
        """Three syncs in a row unanswered: the server stopped serving (the run says so)."""
        return self._in_a_row >= 3

    def wait(self) -> None:
        if self.session.ping(b"sync", timeout=2.0):
            self._in_a_row = 0
            return
        self.stalls += 1
        self._in_a_row += 1
        self.session.peer.close()
        try:
            self.session = established(self.address, self.key, identity=b"sync")
        except AssertionError:
            self._in_a_row = 3

    def close(self) -> None:
        self.session.peer.close()


class ServerPass:
    """One ``serve dtls`` under every server-side attack, legitimate clients pinging it."""

    def __init__(self, args: argparse.Namespace, handshake: str) -> None:
        self.args = args
        self.handshake = handshake
        self.key_hex = secrets.token_hex(16)
        self.key = Secret(bytes.fromhex(self.key_hex))
        self.rng = random.Random(args.seed)
        self.label = f"serve dtls --handshake {handshake}"
        self.server: LoadgenServer
        self.legit: LegitClients
        self.pid = 0

    def start(self) -> None:
        """A fresh server for each phase: one that an attack silenced does not spoil the next figures."""
        limits = limit_args(max_peers=self.args.half_open * 2 + 10_000, max_half_open=self.args.half_open + 10_000,
                            handshake_timeout=600)
        self.server = start_loadgen_server("--handshake", self.handshake, *limits, key_hex=self.key_hex)
        report(f"  server: {' '.join(limits)}")
        self.pid = self.server.process.pid
        self.legit = LegitClients(self.server.address, self.key, count=5)
        gevent.sleep(1.0)

    def stop(self, phase: str) -> None:
        served = self.legit.fresh_served(5.0)
        totals = self.legit.totals
        failed_share = totals.pings.failed / max(totals.pings.attempted, 1)
        self.legit.stop()
        alive = self.alive()
        peak = hwm_kib(self.pid) / 1024 if alive else 0.0
        summary = self.server.stop()
        report(f"  legitimate clients during {phase}: {totals.handshakes.completed} handshakes, "
               f"{totals.handshakes.failed} failed {dict(totals.handshakes.failures)}; {totals.pings.completed} pings, "
               f"{totals.pings.failed} failed {dict(totals.pings.failures)}; a fresh one served after: {served}   "
               f"{verdict(served and failed_share <= 0.01 and alive)} (<= 1% pings failed, process alive)")
        report(f"  server peak memory (VmHWM) {peak:.0f} MiB; summary: "
               f"{summary.line[:300] if summary else 'NONE (no summary line after SIGTERM)'}")

    def alive(self) -> bool:
        return self.server.process.poll() is None

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def run(self) -> None:
        report(f"\n== {self.label} ==")
        self.start()
        try:
            baseline = self.baseline()
        finally:
            self.stop("the baseline")
        phases = [self.handshake_fuzz, self.session_fuzz, self.half_open, self.fragments]
        for phase in [p for p in phases if self.args.only in (None, p.__name__)]:
            self.start()
            try:
                phase(baseline)
            except AssertionError as exc:  # e.g. no session could be established any more
                report(f"  {phase.__name__} aborted: {str(exc)[:300]}   FAIL")
            finally:
                self.stop(phase.__name__)

    def served(self, when: str) -> None:
        try:
            self.legit.assert_served(when)
        except AssertionError as exc:
            report(f"  legitimate clients {when}: {exc}   FAIL")

    def baseline(self) -> float:
        """Server CPU per legitimate handshake datagram (4 per handshake_once: two
        ClientHellos, ClientKeyExchange+CCS+Finished, close_notify)."""
        n = self.args.baseline_handshakes
        totals = StatsSink()
        ctx = dtls_contexts.client_context()

        def worker(todo: Iterator[int]) -> None:
            for i in todo:
                DtlsAssociation(f"base-{i}", "s", self.server.address, ctx, totals, identity=b"base-%d" % i,
                                key=self.key, message_level=logging.ERROR).handshake_once()

        cpu0 = self.cpu()
        done = 0
        # The server's CPU clock ticks every 10 ms: batches of n until it has ticked ten times,
        # so that a small --baseline-handshakes still measures something (it read 0 and divided by it).
        while done == 0 or (self.cpu() - cpu0 < 0.1 and done < 50 * n):
            done += n
            todo = iter(range(done - n, done))  # shared: the ten workers take turns
            gevent.joinall([gevent.spawn(worker, todo) for _ in range(10)])
        per_datagram = (self.cpu() - cpu0) / max(totals.handshakes.completed * 4, 1)
        if per_datagram <= 0:
            raise SystemExit("the baseline measured no server CPU: raise --baseline-handshakes")
        report(f"baseline: server CPU per legitimate handshake datagram: {per_datagram * 1e6:.1f} us "
               f"({totals.handshakes.completed}/{done} handshakes)")
        return per_datagram

    def handshake_fuzz(self, baseline: float) -> None:
        args, rng = self.args, self.rng
        port = self.server.port
        ports = Ports(first_host=2, hosts=4)
        peers: list[tuple[HostilePeer, bytes]] = []
        reset_hwm(self.pid)
        rss0, hwm0 = rss_kib(self.pid), hwm_kib(self.pid)
        for _ in range(args.peers):
            peer = HostilePeer(self.server.address, ports=ports)
            try:
                cookie = peer.cookie_exchange(attempts=2)
            except AssertionError:
                peer.close()
                continue
            if got_server_hello(peer.send_hello(cookie, wait=1.0)):
                peers.append((peer, cookie))
            else:
                peer.close()
        report(f"handshake fuzz: {len(peers)}/{args.peers} hostile peers passed the cookie check")
        if not peers:
            return
        sync = Sync(self.server.address, self.key)
        drops0, cpu0, t0 = udp_drops(port), self.cpu(), time.perf_counter()
        sent = hellos = 0
        batch = 20  # per peer: its cookie'd ClientHello again (state back if the fuzz got it dropped), then these
        while sent < args.handshake_datagrams and self.alive() and not sync.server_gone:
            for peer, cookie in peers:
                peer.send_hello(cookie, wait=None)
                hellos += 1
                for _ in range(batch):
                    peer.send(fuzz.handshake_datagram(rng, cookie))
                sent += batch
                if sent % SYNC_EVERY < batch:
                    sync.wait()
                if sent >= args.handshake_datagrams or sync.server_gone:
                    break
            if sent % 100_000 < batch * len(peers):
                print(f"  ... {sent} sent", flush=True)
        sync.wait()
        drops = udp_drops(port) - drops0
        cpu, wall = self.cpu() - cpu0, time.perf_counter() - t0
        delivered = max(sent + hellos - drops, 1)
        per = cpu / delivered
        growth, peak = rss_kib(self.pid) - rss0, hwm_kib(self.pid) - hwm0
        per_peer = max(growth, peak) / len(peers)
        report(f"  {sent} mutated handshake datagrams (+{hellos} cookie'd ClientHellos) in {wall:.0f} s, "
               f"{drops} dropped by the kernel, {sync.stalls} sync stalls   "
               f"{verdict(not sync.server_gone and self.alive())} (the server kept answering)")
        report(f"  server CPU per hostile datagram: {per * 1e6:.1f} us ({per / baseline:.2f}x baseline)")
        report(f"  server memory per hostile peer: {per_peer:.1f} KiB (RSS +{growth} KiB, peak +{peak} KiB, "
               f"{len(peers)} peers)   {verdict(per_peer <= MAX_KIB_PER_PEER)} (<= {MAX_KIB_PER_PEER} KiB)")
        sync.close()
        for peer, _ in peers:
            peer.close()

    def session_fuzz(self, baseline: float) -> None:
        args, rng = self.args, self.rng
        port = self.server.port
        rss0 = rss_kib(self.pid)
        sessions = [established(self.server.address, self.key, identity=b"fuzz-%d" % i) for i in range(args.sessions)]
        made = len(sessions)
        drops0, cpu0, t0 = udp_drops(port), self.cpu(), time.perf_counter()
        sent = echoed = lost = 0
        gone = False

        def echoes(session: Session) -> int:  # echoes of fuzzed records (not of our liveness pings)
            return sum(1 for p in session.received if p != b"still there?")

        while sent < args.session_records and self.alive() and not gone:
            for i, session in enumerate(sessions):
                batch = [fuzz.mutate_plaintext(rng, b"fuzz %d " % n + rng.randbytes(20)) for n in range(50)]
                # Alerts last: a real one ends the session, and what follows it would be wasted.
                batch.sort(key=lambda item: item[0] == records.ALERT)
                for content_type, plaintext, jump in batch:
                    seq = session.write_seq + jump
                    if seq >= (1 << 48) - 1:
                        seq = session.write_seq
                    session.peer.send(session.seal(plaintext, content_type=content_type, seq=seq))
                sent += len(batch)
                ends = any(t == records.ALERT and len(p) == 2 for t, p, _ in batch)
                if ends or not session.ping(b"still there?", timeout=1.0):
                    session.receive(0.02)
                    echoed += echoes(session)
                    lost += 1  # ended by the server (a well-formed alert, say): a new one
                    session.peer.close()
                    try:
                        sessions[i] = established(self.server.address, self.key, identity=b"fuzz-%d-%d" % (i, sent))
                        made += 1
                    except AssertionError:
                        gone = True  # the server stopped serving: the lines below say so
                        break
                if sent >= args.session_records:
                    break
        for session in sessions:
            session.receive(0.02)
            echoed += echoes(session)
        drops = udp_drops(port) - drops0
        cpu, wall = self.cpu() - cpu0, time.perf_counter() - t0
        per = cpu / max(sent - drops, 1)
        growth = rss_kib(self.pid) - rss0
        report(f"session fuzz: {sent} authentic records with mutated plaintext in {wall:.0f} s over {made} sessions "
               f"({lost} ended: an alert or the server"
               f"'s verdict), {echoed} echoes of them, {drops} dropped by the kernel   "
               f"{verdict(not gone)} (sessions could always be established)")
        report(f"  server CPU per authentic hostile record: {per * 1e6:.1f} us ({per / baseline:.2f}x baseline); "
               f"memory +{growth} KiB ({growth / made:.1f} KiB per session)"
               f"   {verdict(growth / made <= MAX_KIB_PER_PEER)} (<= {MAX_KIB_PER_PEER} KiB)")
        for session in sessions:
            session.peer.close()

    def half_open(self, baseline: float) -> None:
        count = self.args.half_open
        window = self.args.half_open_window
        cpu0 = self.cpu()
        gevent.sleep(window)
        idle_baseline = (self.cpu() - cpu0) / window
        rss0 = rss_kib(self.pid)
        ports = Ports(first_host=10, hosts=4)
        todo = iter(range(count))
        got = [0]
        t0 = time.perf_counter()

        tried = [0]

        def worker() -> None:
            for _ in todo:
                if tried[0] >= 200 and got[0] == 0:
                    return  # the server stopped answering: the figure below says so
                tried[0] += 1
                with HostilePeer(self.server.address, ports=ports) as peer:
                    passed = got_server_hello(peer.half_open(wait=1.0))
                    got[0] += passed

        gevent.joinall([gevent.spawn(worker) for _ in range(16)])
        made_in = time.perf_counter() - t0
        gevent.sleep(1.0)
        cpu1 = self.cpu()
        gevent.sleep(window)
        share = (self.cpu() - cpu1) / window - idle_baseline
        growth = rss_kib(self.pid) - rss0
        report(f"half-open: {got[0]}/{count} idle half-open peers (made in {made_in:.0f} s): "
               f"{share * 100:.1f}% of a core over {window:g} s (idle server {idle_baseline * 100:.1f}%, subtracted), "
               f"{growth / max(got[0], 1):.1f} KiB each   "
               f"{verdict(share <= MAX_HALF_OPEN_CORE * got[0] / 50_000 and got[0] > 0)} "
               f"(<= {MAX_HALF_OPEN_CORE * 100:.0f}% per 50,000)")
        self.served("with the half-open peers")

    def fragments(self, baseline: float) -> None:
        """1 MB/s of 1-byte fragments, in two shapes: the finding's (64 KB datagrams of 16 KB
        records) and small datagrams of 32 records of 8 fragments (what per-datagram and
        per-record caps still let through)."""
        seconds = self.args.fragment_seconds / 2
        for shape in ("64k-records", "small-records"):
            peer = HostilePeer(self.server.address)
            try:
                cookie = peer.cookie_exchange()
                if not got_server_hello(peer.send_hello(cookie)):
                    report(f"fragments ({shape}): the hostile peer did not pass the cookie check   FAIL")
                    continue
                if shape == "64k-records":
                    datagrams = one_byte_fragments(2, self.rng)
                else:
                    datagrams = small_fragment_datagrams(2, self.rng, count=64)
                self._fragment_flood(peer, cookie, datagrams, seconds, shape)
            finally:
                peer.close()
        self.served("after the fragments")

    def _fragment_flood(self, peer: HostilePeer, cookie: bytes, datagrams: list[bytes], seconds: float,
                        shape: str) -> None:
        port = self.server.port
        cpu0 = self.cpu()
        gevent.sleep(1.0)
        idle = self.cpu() - cpu0  # the legitimate clients' share, per second
        drops0, cpu0, t0 = udp_drops(port), self.cpu(), time.perf_counter()
        sent_bytes = 0
        i = 0
        while (elapsed := time.perf_counter() - t0) < seconds:
            if sent_bytes < elapsed * 1_000_000:  # 1 MB/s
                datagram = datagrams[i % len(datagrams)]
                peer.send(datagram)
                sent_bytes += len(datagram)
                i += 1
                if i % len(datagrams) == 0:  # our state back, if the server dropped it over the caps
                    peer.send_hello(cookie, wait=None)
            else:
                gevent.sleep(0.002)
        wall = time.perf_counter() - t0
        share = (self.cpu() - cpu0) / wall - idle
        drops = udp_drops(port) - drops0
        report(f"fragments ({shape}): {sent_bytes / 1e6:.1f} MB of 1-byte fragments in {wall:.1f} s ({drops} datagrams "
               f"dropped by the kernel): {share * 100:.1f}% of a core (legitimate clients' {idle * 100:.1f}% "
               f"subtracted)   {verdict(share <= MAX_FRAGMENT_CORE)} (<= 10% at 1 MB/s)")


class ClientPass:
    """Associations of this process against the hostile server (its own process)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.key_hex = secrets.token_hex(16)
        self.key = Secret(bytes.fromhex(self.key_hex))
        self.server = start_loadgen_server(key_hex=self.key_hex)  # for the legitimate clients
        self.legit = LegitClients(self.server.address, self.key, count=5)

    def hostile(self, *options: str) -> tuple[subprocess.Popen[str], tuple[str, int], Callable[[], dict[str, int]]]:
        env = loadgen_env()
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "tests"), env["PYTHONPATH"]])
        env["LOADGEN_TEST_PSK"] = self.key_hex
        proc = subprocess.Popen([sys.executable, "-m", "adversarial.hostile_server", *options], env=env,
                                stdout=subprocess.PIPE, text=True, cwd=ROOT / "tests")
        assert proc.stdout is not None
        port = int(proc.stdout.readline().split()[1])
        latest: dict[str, int] = {}

        def reader() -> None:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("stats "):
                    latest.update({k: int(v) for k, v in (f.split("=") for f in line.split()[1:])})

        gevent.get_hub().threadpool.spawn(reader)
        return proc, ("127.0.0.1", port), lambda: dict(latest)

    def run(self) -> None:
        report("\n== a loadgen client against the hostile server ==")
        try:
            reset_hwm()
            hwm0 = hwm_kib()
            self.flights()
            self.records()
            totals = self.legit.totals
            report(f"legitimate clients in the same process: {totals.pings.completed} pings, "
                   f"{totals.pings.failed} failed {dict(totals.pings.failures)}   "
                   f"{verdict(totals.pings.failed <= totals.pings.attempted * 0.01)}")
            report(f"client process peak memory (VmHWM): {hwm_kib() / 1024:.0f} MiB (+{(hwm_kib() - hwm0) / 1024:.0f} "
                   f"MiB during the client pass)")
        finally:
            self.legit.stop()
            self.server.stop()

    def _drive(self, address: tuple[str, int], done: Callable[[], bool], *, workers: int, handshake_only: bool,
               totals: StatsSink) -> tuple[float, int, float]:
        """Associations, one after the other per worker, until ``done()``; (CPU s, associations, wall s)."""
        made = [0]
        plan = traffic_plan(PingConfig(interval=0.0, jitter=0.0, timeout=0.3, expect=Expect("echo"), max_missed=10**6))
        settings = DtlsConfig(handshake_timeout=1.5)
        ctx = dtls_contexts.client_context()

        def worker(w: int) -> None:
            while not done():
                made[0] += 1
                assoc = DtlsAssociation(f"victim-{w}-{made[0]}", "hostile", address, ctx, totals,
                                        identity=b"victim", key=self.key, settings=settings, ping=plan,
                                        message_level=logging.ERROR)
                greenlet = gevent.spawn(assoc.handshake_once if handshake_only else assoc.run)
                greenlet.join(timeout=3.0)
                greenlet.kill()

        cpu0, t0 = cpu_seconds(), time.perf_counter()
        gevent.joinall([gevent.spawn(worker, w) for w in range(workers)])
        return cpu_seconds() - cpu0, made[0], time.perf_counter() - t0

    def flights(self) -> None:
        target = self.args.client_flight_datagrams
        proc, address, stats = self.hostile("--mode", "fuzz", "--flight-copies", "20", "--seed", str(self.args.seed))
        totals = StatsSink()
        rss0 = rss_kib()
        try:
            cpu, made, wall = self._drive(address, lambda: stats().get("mutated_flights", 0) >= target, workers=50,
                                          handshake_only=True, totals=totals)
            gevent.sleep(0.6)
            final = stats()
        finally:
            proc.terminate()
            proc.wait(10)
        mutated = final.get("mutated_flights", 0)
        share = totals.handshakes.received_bytes / max(final.get("flight_bytes", 1), 1)
        bugs = {c: n for c, n in totals.handshakes.failures.items() if c in ("internal-error", "local-error")}
        report(f"client, mutated handshake flights: {mutated} sent in {wall:.0f} s ({share * 100:.0f}% of the flight "
               f"bytes reached the associations), {made} associations: {totals.handshakes.completed} handshakes, "
               f"failures {dict(totals.handshakes.failures)}")
        report(f"  client CPU per hostile flight datagram: {cpu / max(mutated * share, 1) * 1e6:.1f} us; "
               f"memory +{rss_kib() - rss0} KiB; exceptions escaped: {bugs or 'none'}   {verdict(not bugs)}")

    def records(self) -> None:
        target = self.args.client_records
        proc, address, stats = self.hostile("--mode", "fuzz", "--record-copies", "10", "--seed", str(self.args.seed))
        totals = StatsSink()
        rss0 = rss_kib()
        try:
            cpu, made, wall = self._drive(address, lambda: stats().get("mutated_records", 0) >= target, workers=20,
                                          handshake_only=False, totals=totals)
            gevent.sleep(0.6)
            final = stats()
        finally:
            proc.terminate()
            proc.wait(10)
        mutated = final.get("mutated_records", 0)
        failures = totals.handshakes.failures + totals.pings.failures
        bugs = {c: n for c, n in failures.items() if c in ("internal-error", "local-error")}
        report(f"client, authentic records with mutated plaintext: {mutated} in {wall:.0f} s over {made} associations;"
               f" pings {totals.pings.completed} completed, failures {dict(totals.pings.failures)}")
        report(f"  client CPU per authentic hostile record: {cpu / max(mutated, 1) * 1e6:.1f} us; "
               f"memory +{rss_kib() - rss0} KiB; exceptions escaped: {bugs or 'none'}   {verdict(not bugs)}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshake", choices=("loadgen", "openssl", "both"), default="both")
    parser.add_argument("--handshake-datagrams", type=int, default=1_000_000)
    parser.add_argument("--session-records", type=int, default=100_000)
    parser.add_argument("--peers", type=int, default=1000)
    parser.add_argument("--sessions", type=int, default=100)
    parser.add_argument("--half-open", type=int, default=50_000)
    parser.add_argument("--half-open-window", type=float, default=10.0)
    parser.add_argument("--fragment-seconds", type=float, default=10.0)
    parser.add_argument("--baseline-handshakes", type=int, default=1000)
    parser.add_argument("--client-flight-datagrams", type=int, default=1_000_000)
    parser.add_argument("--client-records", type=int, default=100_000)
    parser.add_argument("--skip-client", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=("handshake_fuzz", "session_fuzz", "half_open", "fragments"),
                        help="run one server phase (and no client pass)")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    logging.basicConfig(level=logging.ERROR)
    faulthandler.register(signal.SIGUSR1)  # kill -USR1 PID: where a long run spends its time
    print(f"# python benchmarks/bench_hostile.py {' '.join(sys.argv[1:])}", flush=True)
    for handshake in (("loadgen", "openssl") if args.handshake == "both" else (args.handshake,)):
        ServerPass(args, handshake).run()
    if not args.skip_client and args.only is None:
        ClientPass(args).run()
    print("\n# summary")
    for line in RESULTS:
        if "PASS" in line or "FAIL" in line:
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
