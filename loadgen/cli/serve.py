"""``loadgen serve dtls`` and ``loadgen serve tls``: the reference servers, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from typing import Any

from loadgen.cli.argtypes import positive
from loadgen.cli.keys import KEY_OPTIONS, add_key_options, key_store_from_args, say_keys
from loadgen.protocol.errors import ConfigError
from loadgen.stats.words import failures_text


def add_serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve`` and its two protocols."""
    serve = sub.add_parser("serve", help="run a reference server (dtls or tls) until Ctrl-C")
    serve_sub = serve.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL", title="protocols")
    _dtls_serve_options(serve_sub.add_parser("dtls", help="reference DTLS-PSK server (echo)"))
    _tls_serve_options(serve_sub.add_parser("tls", help="reference TLS server (line echo): "
                                            "certificate and key, or PSK"))


def _dtls_serve_options(sdtls: argparse.ArgumentParser) -> None:
    sdtls.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sdtls.add_argument("--port", type=int, default=5684, help="UDP port; 0 picks a free port (printed)")
    sdtls.add_argument("--hint", default="loadgen", help="PSK identity hint ('' for none)")
    sdtls.add_argument("--reply", choices=("echo", "qt"), default="echo",
                       help="echo each ping, or answer like Qt's server: 'to IDENTITY: PING'")
    sdtls.add_argument("--idle-timeout", type=positive(float), default=60.0, metavar="SECONDS",
                       help="a peer not heard from this long is forgotten (default 60)")
    sdtls.add_argument("--handshake-timeout", type=positive(float), default=10.0, metavar="SECONDS",
                       help="a handshake must complete this long after its ClientHello with a cookie (default 10)")
    sdtls.add_argument("--max-peers", type=positive(int), default=100_000, metavar="N",
                       help="peers with state at most (default 100000); over it, newcomers count server-full")
    sdtls.add_argument("--max-half-open", type=positive(int), default=10_000, metavar="N",
                       help="peers still handshaking at most (default 10000); over it, newcomers count server-full")
    sdtls.add_argument("--mtu", type=int, default=None, metavar="BYTES",
                       help="largest datagram the server sends (default 1200)")
    sdtls.add_argument("--ciphers", default=None,
                       help="DTLS cipher list, OpenSSL syntax (default: the PSK AEAD suites)")
    sdtls.add_argument("--handshake", choices=("loadgen", "openssl"), default="loadgen",
                       help="loadgen's own DTLS PSK handshake (PSK AEAD suites; several times cheaper) "
                            "or always OpenSSL's")
    sdtls.add_argument("--workers", type=positive(int), default=1, metavar="N",
                       help="N server processes on one port (SO_REUSEPORT; default 1)")
    add_key_options(sdtls)
    _throttle_options(sdtls)


def _throttle_options(parser: argparse.ArgumentParser) -> None:
    """``serve dtls`` throttles: an overloaded server, to test capacity planning against."""
    group = parser.add_argument_group("throttles (drop silently above a rate, as an overloaded server would)")
    group.add_argument("--max-handshake-rate", type=positive(float), default=None, metavar="N",
                       help="accept at most N new handshakes per second (ClientHellos with a valid cookie; "
                            "default: no limit)")
    group.add_argument("--max-ping-rate", type=positive(float), default=None, metavar="N",
                       help="answer at most N application-data records (pings) per second (default: no limit)")


def _psk_modes(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated TLS 1.3 PSK modes (``--psk-modes``)."""
    from loadgen.protocol.openssl.tls_contexts import psk_modes_problem

    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    problem = psk_modes_problem(modes)
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return modes


def _tls_serve_options(stls: argparse.ArgumentParser) -> None:
    stls.add_argument("--host", default="127.0.0.1", help="address to listen on")
    stls.add_argument("--port", type=int, default=4433, help="TCP port; 0 picks a free port (printed)")
    stls.add_argument("--cert", metavar="PATH", help="PEM certificate (chain); may hold the key too")
    stls.add_argument("--key", metavar="PATH", help="PEM private key (default: in --cert)")
    stls.add_argument("--ca-file", metavar="PATH", help="CAs for client certificates (used first)")
    stls.add_argument("--ca-dir", metavar="PATH", help="directory of CAs under hashed names (openssl rehash)")
    stls.add_argument("--require-client-cert", action="store_true", help="refuse clients without a valid certificate")
    stls.add_argument("--min-version", choices=("1.2", "1.3"), default="1.2", help="lowest TLS version accepted")
    stls.add_argument("--max-version", choices=("1.2", "1.3"), default="1.3", help="highest TLS version accepted")
    stls.add_argument("--ciphers", default=None, help="TLS 1.2 cipher list (OpenSSL syntax; default: OpenSSL's, "
                                                      "with the PSK suites in PSK mode)")
    stls.add_argument("--ciphersuites", default=None, help="TLS 1.3 ciphersuites (default: OpenSSL's)")
    stls.add_argument("--no-resumption", action="store_true",
                      help="no session tickets, no session cache (default: both on)")
    stls.add_argument("--hint", default="loadgen", help="PSK identity hint, TLS 1.2 ('' for none)")
    stls.add_argument("--psk-modes", type=_psk_modes, default=("psk_dhe_ke", "psk_ke"), metavar="MODES",
                      help="TLS 1.3 PSK key-exchange modes accepted, comma-separated, preferred first: "
                           "psk_dhe_ke (PSK with (EC)DHE, always accepted by OpenSSL), psk_ke (PSK alone) "
                           "(default: psk_dhe_ke,psk_ke)")
    stls.add_argument("--reply", choices=("echo", "qt"), default="echo",
                      help="echo each line, or answer like Qt's server: 'to IDENTITY: LINE'")
    stls.add_argument("--idle-timeout", type=positive(float), default=60.0, metavar="SECONDS",
                      help="each line must complete within this long, and a connection without one "
                           "is closed (default 60)")
    stls.add_argument("--handshake-timeout", type=positive(float), default=10.0, metavar="SECONDS",
                      help="the TLS handshake must complete this long after the TCP connect (default 10)")
    stls.add_argument("--max-connections", type=positive(int), default=None, metavar="N",
                      help="open connections at most; over it, a newcomer is closed at once and counted "
                           "server-full (default: the open-file limit minus 256, leaving files for the rest)")
    add_key_options(stls)  # PSK mode: without --cert, or with --cert when a key option is given too


def serve_command(args: argparse.Namespace) -> int:
    """``loadgen serve dtls|tls``: serve until SIGINT / SIGTERM, then one line of totals; exit 0."""
    if args.protocol == "tls":
        return _serve_tls(args)
    return _serve_dtls(args)


def _serve_dtls(args: argparse.Namespace) -> int:
    from loadgen.protocol import dtls_contexts
    from loadgen.protocol.native.handshake import DEFAULT_MTU
    from loadgen.servers.dtls import DtlsServer

    keys = key_store_from_args(args)

    def make(seed: bytes | None = None) -> DtlsServer:
        return DtlsServer(
            keys, cookie_seed=seed, host=args.host, port=args.port, hint=args.hint.encode() or None,
            reply=args.reply, ciphers=args.ciphers or dtls_contexts.DEFAULT_PSK_CIPHERS, mtu=args.mtu or DEFAULT_MTU,
            idle_timeout=args.idle_timeout, handshake_timeout=args.handshake_timeout, max_peers=args.max_peers,
            max_half_open=args.max_half_open, native=args.handshake == "loadgen",
            max_handshake_rate=args.max_handshake_rate, max_ping_rate=args.max_ping_rate,
        )

    def say() -> None:
        say_keys(args, True)
        _say_throttles(args)

    if args.workers > 1:
        return _serve_dtls_workers(args, make, say)
    stats = _serve_until_signal(make(), "DTLS", args, say)
    print(
        f"loadgen: DTLS server stopped: {stats.handshakes} handshakes, {stats.pings} pings answered, "
        f"{failures_text(stats.failures)}"
        + (f", throttled {stats.throttled_handshakes} handshakes, {stats.throttled_pings} pings"
           if args.max_handshake_rate or args.max_ping_rate else ""),
        flush=True,
    )
    return 0


def _serve_dtls_workers(args: argparse.Namespace, make: Callable[[bytes], Any], say: Callable[[], None]) -> int:
    """``--workers N``: one listening line, one stop line with the totals and each worker's."""
    from loadgen.servers.workers import serve_workers

    def listening(host: str, port: int) -> None:
        print(f"loadgen: DTLS server listening on {host}:{port} ({args.workers} workers)", flush=True)
        say()

    try:
        per_worker = serve_workers(make, args.host, args.port, args.workers, listening)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    failures: dict[str, int] = {}
    for stats in per_worker:
        for code, n in stats.failures.items():
            failures[code] = failures.get(code, 0) + n
    each = ", ".join(f"{s.handshakes}/{s.pings}" for s in per_worker)
    print(f"loadgen: DTLS server stopped: {sum(s.handshakes for s in per_worker)} handshakes, "
          f"{sum(s.pings for s in per_worker)} pings answered, {failures_text(failures)}, "
          f"per worker handshakes/pings: {each}", flush=True)
    return 0


def _serve_tls(args: argparse.Namespace) -> int:
    from loadgen.protocol.openssl.tls_contexts import TlsOptions, server_context
    from loadgen.servers.tls import TlsServer

    psk_given = any(getattr(args, name, None) for name in KEY_OPTIONS)
    keys = key_store_from_args(args) if psk_given or not args.cert else None
    if args.require_client_cert and not (args.cert and (args.ca_file or args.ca_dir)):
        raise ConfigError("--require-client-cert needs --cert and --ca-file or --ca-dir")
    for option, path in (("--cert", args.cert), ("--key", args.key), ("--ca-file", args.ca_file)):
        _check_pem_file(option, path)
    options = TlsOptions(
        min_version=args.min_version, max_version=args.max_version, ciphers=args.ciphers,
        ciphersuites=args.ciphersuites, ca_file=args.ca_file, ca_dir=args.ca_dir, cert_file=args.cert,
        key_file=args.key, verify="require" if args.require_client_cert else "none",
        resumption=not args.no_resumption, psk_modes=args.psk_modes,
    )
    context = server_context(options, keys=keys, hint=args.hint.encode() or None)
    server = TlsServer(context, host=args.host, port=args.port, reply=args.reply, idle_timeout=args.idle_timeout,
                       handshake_timeout=args.handshake_timeout, max_connections=args.max_connections)

    def say() -> None:
        say_keys(args, keys is not None)
        print("loadgen: throttles: none (serve tls has none)", flush=True)

    stats = _serve_until_signal(server, "TLS", args, say)
    print(
        f"loadgen: TLS server stopped: {stats.handshakes} handshakes ({stats.resumed} resumed), "
        f"{stats.pings} pings answered, {failures_text(stats.failures)}",
        flush=True,
    )
    return 0


def _check_pem_file(option: str, path: str | None) -> None:
    """Refuse a PEM path that is not a regular file under the cap before OpenSSL reads it:
    OpenSSL blocks for ever on a FIFO and reads a device such as /dev/zero without end."""
    import os

    from loadgen.protocol.credentials import check_regular
    from loadgen.scenario.convert import PEM_FILE_CAP

    if path is None:
        return
    try:
        reason = check_regular(os.stat(path), PEM_FILE_CAP, "PEM file")
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if reason is not None:
        raise ConfigError(f"{option} {path}: {reason}")


def wait_for_signal() -> None:
    """Block (cooperatively) until SIGINT or SIGTERM arrives."""
    import gevent
    from gevent.event import Event

    done = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, done.set)
    done.wait()


def _say_throttles(args: argparse.Namespace) -> None:
    rates = [f"at most {rate:g} {what}/s" for rate, what in ((args.max_handshake_rate, "handshakes"),
                                                            (args.max_ping_rate, "pings")) if rate]
    print(f"loadgen: throttles: {', '.join(rates) or 'none'} (--max-handshake-rate, --max-ping-rate)", flush=True)


def _serve_until_signal(server: Any, label: str, args: argparse.Namespace, say: Callable[[], None]) -> Any:
    """Start ``server``, say where it listens (its limits), then ``say()`` (keys, throttles: after the
    listening line, which scripts read first), serve until SIGINT/SIGTERM, stop it; its stats."""
    try:
        server.start()
    except OSError as exc:
        raise ConfigError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    host, port = server.address
    print(f"loadgen: {label} server listening on {host}:{port} ({server.describe_limits()})", flush=True)
    say()
    try:
        wait_for_signal()
    finally:
        # stop() never raises for one peer; anything else still must not cost the summary line.
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - the summary below is what the user needs
            from loadgen.stats.throttle import exception_summary

            logging.getLogger("loadgen.server").error("stopping the server: %s", exception_summary(exc))
    return server.stats
