"""TLS benchmark: client CPU per handshake (full and resumed) and pings per client core.

The reference TLS server runs in its own process; client CPU is this process's CPU time,
associations report through Locust's request events as in a real run. Each handshake
figure is printed next to its same-run baseline, defined as bench_dtls.py defines its own:
the TLS engines alone, client and server in memory, no sockets, in the same mode (PSK, or
the same certificate). The ping figure is printed next to the DTLS ping figure measured in
the same run (bench_dtls.py's ``pings`` against the reference DTLS server). Certificate
mode: an ECDSA P-256 and an RSA-2048 server certificate, made in a temporary directory at
run time, which the client verifies (host name included).

    python benchmarks/bench_tls.py [--handshakes 1500] [--version 1.2|1.3] [--no-certificates]
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import gevent
import locust  # noqa: F401 - as in a real run: gevent's monkey-patching first
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_dtls import pings as dtls_pings  # noqa: E402 - the DTLS figure, measured the DTLS bench's way
from bench_dtls import run_sink  # noqa: E402 - a run's sinks
from floors import Window  # noqa: E402

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.protocol.credentials import KeyStore  # noqa: E402
from loadgen.protocol.openssl.tls import SessionCache, TlsEngine  # noqa: E402
from loadgen.protocol.openssl.tls_contexts import (  # noqa: E402
    TlsContext,
    TlsOptions,
    client_context,
    server_context,
)
from loadgen.scenario.model import Expect, PingConfig  # noqa: E402
from loadgen.servers.launcher import ServerProcess  # noqa: E402
from loadgen.stats.facts import Sink  # noqa: E402
from loadgen.stats.sink import StatsSink  # noqa: E402
from loadgen.traffic.tracker import traffic_plan  # noqa: E402
from loadgen.transport.tls_association import TlsAssociation  # noqa: E402

US = 1e6


@dataclass(frozen=True)
class Mode:
    """One way to handshake: the client context, and what the server (engine or process) is given."""

    label: str
    client: TlsContext
    server: TlsContext
    server_args: list[str]
    server_name: str | None = None


def options(version: str, resumption: bool, **more: object) -> TlsOptions:
    ciphers = "PSK-AES128-GCM-SHA256" if version == "1.2" and not more else None
    return TlsOptions(min_version=version, max_version=version, ciphers=ciphers, resumption=resumption,  # type: ignore[arg-type]
                      **more)  # type: ignore[arg-type]


def psk_mode(version: str, resumption: bool) -> Mode:
    return Mode(f"TLS {version} PSK", client_context(options(version, resumption), psk_mode=True),
                server_context(options(version, resumption), keys=KeyStore(shared=QUICKSTART_KEY)),
                ["--psk-hex", QUICKSTART_KEY.value.hex(), "--min-version", version, "--max-version", version])


def certificate_mode(label: str, pem: Path, version: str, resumption: bool) -> Mode:
    """The server shows ``pem`` (certificate and key); the client verifies it against itself as the CA."""
    client = client_context(options(version, resumption, ca_file=pem, verify="peer"))
    server = server_context(options(version, resumption, cert_file=pem))
    return Mode(f"TLS {version} {label}", client, server,
                ["--cert", str(pem), "--min-version", version, "--max-version", version], server_name="localhost")


@contextmanager
def certificates() -> Iterator[dict[str, Path]]:
    """Self-signed server certificates for localhost (ECDSA P-256, RSA-2048), certificate and key in one PEM."""
    keys: dict[str, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey] = {
            "ECDSA P-256": ec.generate_private_key(ec.SECP256R1()),
            "RSA-2048": rsa.generate_private_key(public_exponent=65537, key_size=2048)}
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for label, key in keys.items():
            cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                    .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                    .not_valid_after(now + datetime.timedelta(days=2)).add_extension(names, critical=False)
                    .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                    .sign(key, hashes.SHA256()))
            path = paths[label] = Path(tmp) / f"{label.split()[0].lower()}.pem"
            path.write_bytes(cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        yield paths


def engine_only(n: int, mode: Mode, resumed: bool = False) -> float:
    """CPU seconds per handshake, client and server engines in memory; ``resumed``: each one
    resumes the session of the one before (the first, full one not measured)."""
    session = _engine_handshake(mode, 0, None) if resumed else None
    start = time.process_time()
    for i in range(n):
        last = _engine_handshake(mode, i, session)
        if resumed:
            session = last
    return (time.process_time() - start) / n


def _engine_handshake(mode: Mode, i: int, session: SSL.Session | None) -> SSL.Session | None:
    """One handshake between two engines in memory, closed with close_notify; returns the client's session."""
    choose = (lambda hint: (b"e%d" % i, QUICKSTART_KEY)) if mode.client.psk else None
    client = TlsEngine.client(mode.client, server_name=mode.server_name, choose=choose, session=session)
    server = TlsEngine.server(mode.server)
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
    assert client.handshake_done and server.handshake_done, "in-memory handshake did not complete"
    client.close()
    server.receive_data(client.data_to_send())
    return client.session


def socket_handshakes(address: tuple[str, int], n: int, concurrency: int, mode: Mode,
                      resumed: bool) -> tuple[float, StatsSink]:
    """Client CPU seconds per completed handshake; with ``resumed`` each device resumes its session."""
    ctx = mode.client
    totals = StatsSink()
    sink = run_sink(totals, request_type="TLS")
    caches = [SessionCache(maxsize=1) for _ in range(concurrency)]
    todo = iter(range(n))

    def association(w: int, to: Sink) -> TlsAssociation:
        return TlsAssociation(f"w{w}", "bench", address, ctx, to, server_name=mode.server_name,
                              identity=b"w%d" % w if ctx.psk else None, key=QUICKSTART_KEY if ctx.psk else None,
                              sessions=caches[w] if resumed else None, message_level=logging.WARNING)

    def worker(w: int) -> None:
        for _ in todo:
            association(w, sink).handshake_once()

    if resumed:  # a first, full handshake per device leaves the session to resume: done before the clock starts
        gevent.joinall([gevent.spawn(association(w, StatsSink()).handshake_once) for w in range(concurrency)])
    greenlets = [gevent.spawn(worker, w) for w in range(concurrency)]
    c0 = time.process_time()
    gevent.joinall(greenlets)
    return (time.process_time() - c0) / max(totals.handshakes.completed, 1), totals


def pings(address: tuple[str, int], associations: int, seconds: float, mode: Mode,
          window: Window | None = None) -> tuple[float, StatsSink]:
    """Completed pings per client CPU second, handshakes excluded (``window``: around the same span)."""
    totals = StatsSink()
    sink = run_sink(totals, request_type="TLS")
    plan = traffic_plan(PingConfig(interval=0.0, jitter=0.0, timeout=2.0, expect=Expect("echo")))
    assocs = [TlsAssociation(f"p{i}", "bench", address, mode.client, sink, identity=b"p%d" % i, key=QUICKSTART_KEY,
                             ping=plan, message_level=logging.WARNING) for i in range(associations)]
    greenlets = [gevent.spawn(a.run) for a in assocs]
    while totals.handshakes.completed + totals.handshakes.failed < associations:
        gevent.sleep(0.05)
    if window is not None:
        window.start()
    p0, c0 = totals.pings.completed, time.process_time()
    gevent.sleep(seconds)
    p1, c1 = totals.pings.completed, time.process_time()
    if window is not None:
        window.stop(p1 - p0)
    gevent.killall(greenlets)
    return (p1 - p0) / max(c1 - c0, 1e-9), totals


def handshake_rows(args: argparse.Namespace, full_mode: Mode, resumed_mode: Mode) -> None:
    """Full and resumed handshakes over loopback against the server, each with its engine-only baseline,
    in ``args.rounds`` rounds (each: both engine-only figures, then both socket figures): each ratio
    printed is the median of the rounds' own, so that its two sides share the host's moment."""
    engine_n = min(args.handshakes, 1000)
    kinds = (("full", full_mode, False), ("resumed", resumed_mode, True))
    # Per kind, per round: (engine-only pair, client over loopback, totals).
    measured: dict[str, list[tuple[float, float, StatsSink]]] = {kind: [] for kind, _, _ in kinds}
    with ServerProcess(full_mode.server_args, protocol="tls") as address:
        for _ in range(max(1, args.rounds)):
            baselines = {kind: engine_only(engine_n, mode, resumed) for kind, mode, resumed in kinds}
            for kind, mode, resumed in kinds:
                measured[kind].append((baselines[kind],
                                       *socket_handshakes(address, args.handshakes, args.concurrency, mode, resumed)))
    full = measured["full"]
    for kind, mode, _ in kinds:
        label = f"{mode.label} {kind}"
        runs = measured[kind]
        baseline = statistics.median(b for b, _, _ in runs)
        client = statistics.median(c for _, c, _ in runs)
        ratios = [c / b for b, c, _ in runs]
        against_full = [c / f[0] for (_, c, _), f in zip(runs, full, strict=True)]
        ok = sum(t.handshakes.completed for _, _, t in runs)
        failed = sum(t.handshakes.failed for _, _, t in runs)
        resumed_count = sum(t.handshakes.resumed for _, _, t in runs)
        print(f"{label + ' engine-only (client+server, memory)':<64}: {baseline * US:8.1f} us CPU [baseline]"
              f" (rounds: {', '.join(f'{b * US:.1f}' for b, _, _ in runs)})")
        print(f"{label + ' over loopback, client CPU':<64}: {client * US:8.1f} us CPU"
              f" (rounds: {', '.join(f'{c * US:.1f}' for _, c, _ in runs)});"
              f" {statistics.median(ratios):.2f}x baseline (rounds: {', '.join(f'{r:.2f}' for r in ratios)}),"
              f" {statistics.median(against_full):.2f}x the full one;"
              f" {ok} ok, {failed} failed, {resumed_count} resumed")


def ping_rows(args: argparse.Namespace, mode: Mode) -> None:
    """TLS pings and DTLS pings the DTLS bench's way, in alternating rounds of the same length: on a
    shared host the speed drifts within a minute, and one TLS phase followed by one DTLS phase put
    the drift into the ratio (0.9x to 1.6x for the same code in one hour)."""
    rounds = max(1, args.ping_rounds)
    tls_us: list[float] = []
    dtls_us: list[float] = []
    counts = {"TLS": [0, 0], "DTLS": [0, 0]}
    tls_server = ServerProcess(mode.server_args, protocol="tls")
    dtls_server = ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex()])
    with tls_server as tls_address, dtls_server as dtls_address:
        assert tls_server.pid is not None and dtls_server.pid is not None
        windows = {"TLS": Window(tls_server.pid), "DTLS": Window(dtls_server.pid)}
        for _ in range(rounds):
            per_cpu, totals = pings(tls_address, args.ping_associations, args.ping_seconds / rounds, mode,
                                    windows["TLS"])
            tls_us.append(US / per_cpu)
            counts["TLS"][0] += totals.pings.completed
            counts["TLS"][1] += totals.pings.failed
            dtls = dtls_pings(dtls_address, args.ping_associations, args.ping_seconds / rounds,
                              window=windows["DTLS"])
            dtls_us.append(US / dtls[0])
            counts["DTLS"][0] += dtls[-1].pings.completed
            counts["DTLS"][1] += dtls[-1].pings.failed
    tls_mean, dtls_mean = sum(tls_us) / rounds, sum(dtls_us) / rounds
    each = ", ".join(f"{t / d:.2f}" for t, d in zip(tls_us, dtls_us, strict=True))
    print(f"{mode.label + ' pings per client CPU second':<64}: {US / tls_mean:8.0f} ({tls_mean:.1f} us each;"
          f" {counts['TLS'][0]} ok, {counts['TLS'][1]} failed)")
    print(f"{'DTLS 1.2 PSK pings per client CPU second (same run)':<64}: {US / dtls_mean:8.0f}"
          f" ({dtls_mean:.1f} us each; {counts['DTLS'][0]} ok, {counts['DTLS'][1]} failed)")
    print(f"{'TLS ping CPU / DTLS ping CPU':<64}: {tls_mean / dtls_mean:8.2f}x (rounds, alternating: {each})")
    for kind, window in windows.items():
        done = window.pings  # the measured spans' only (the counts above include the handshakes' spans)
        print(f"{'  ' + kind + ': client wake-ups, reference server CPU, per ping':<64}:"
              f" {window.client_wakes / max(done, 1):8.3f} ({US * window.server_cpu / max(done, 1):.1f} us;"
              f" the server woke {window.server_wakes / max(done, 1):.3f} times per ping)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=1500)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--version", choices=("1.2", "1.3"), default="1.2")
    parser.add_argument("--ping-associations", type=int, default=100)
    parser.add_argument("--ping-seconds", type=float, default=6.0)
    parser.add_argument("--ping-rounds", type=int, default=4, help="TLS and DTLS ping phases alternate this often")
    parser.add_argument("--no-certificates", action="store_true", help="PSK figures only")
    parser.add_argument("--rounds", type=int, default=3,
                        help="engine-only baselines and socket handshakes alternate this often per mode")
    args = parser.parse_args()
    print(f"# python benchmarks/bench_tls.py {' '.join(sys.argv[1:])}")
    handshake_rows(args, psk_mode(args.version, False), psk_mode(args.version, True))
    ping_rows(args, psk_mode(args.version, False))
    if not args.no_certificates:
        with certificates() as pems:
            for label, pem in pems.items():
                handshake_rows(args, certificate_mode(label, pem, args.version, False),
                               certificate_mode(label, pem, args.version, True))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
