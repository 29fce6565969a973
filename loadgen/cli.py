"""The ``loadgen`` command: run, serve, validate.

Errors in user input end with a one-line message naming the place and exit status
2; never a traceback. Every exit status is in the README's "Exit status" table.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import cli_stats
from .credentials import KeyStore, Secret, derive_key, key_from_env, key_from_file, parse_hex
from .errors import ConfigError

if TYPE_CHECKING:
    from .scenario import Scenario

EXIT_USAGE = 2
EXIT_THRESHOLD = 1  # a threshold failed (or the default --exit-code-on-error)
EXIT_INTERRUPTED = 130  # Ctrl-C outside a run (a run stopped by Ctrl-C ends normally and writes its results)

#: ``loadgen`` alone, and ``loadgen --help``: an example per command.
EXAMPLES = """\
examples:
  loadgen run scenarios/quickstart.yaml               a headless run (results under results/<run-id>/)
  loadgen run scenarios/quickstart.yaml -u 500 -t 1m  the same with 500 clients for a minute
  loadgen run scenarios/quickstart.yaml --web         Locust's web UI at http://127.0.0.1:8089
  loadgen validate scenarios/multi-peer.yaml          check a scenario without running it
  loadgen serve dtls --port 5684 --psk-env MY_PSK     the reference DTLS server
  loadgen serve tls --scenario scenarios/tls.yaml     the TLS server scenarios/tls.yaml expects
  loadgen capacity scenarios/quickstart.yaml          step the load up, find the knee
  loadgen report results/<run-id>                     rebuild a run's report.html
  loadgen impair --to 127.0.0.1:5684 --loss 0.05      a lossy network in front of a server
  locust -f "$(loadgen locustfile)" --scenario scenarios/quickstart.yaml
"""
_T = TypeVar("_T")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps descriptions and epilogs as written, and ends an option's help with its default
    unless the help names it already, there is none (None) or the option is a switch."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (not action.option_strings or action.nargs == 0 or "default" in text or text == argparse.SUPPRESS
                or action.default in (None, argparse.SUPPRESS)):
            return text
        return f"{text} (default: %(default)s)"


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    """``parser`` and every subcommand's parser under it, depth first."""
    yield parser
    for action in parser._actions:  # noqa: SLF001 - argparse has no public walk
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for child in dict.fromkeys(action.choices.values()):  # aliases share one parser
                yield from parsers(child)


def version() -> str:
    """loadgen's version: the installed package's metadata (pyproject.toml), else the module's."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("loadgen")
    except PackageNotFoundError:
        from . import __version__

        return __version__


def _key_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("pre-shared keys (one of; default: the public quickstart demo key, "
                                      "with a notice)")
    keys = group.add_mutually_exclusive_group()
    keys.add_argument("--psk-hex", metavar="HEX", help="one key for every identity (visible in ps: prefer --psk-env)")
    keys.add_argument("--psk-env", metavar="VAR", help="environment variable holding a hex key")
    keys.add_argument("--psk-file", metavar="PATH", help="file holding the key (hex text or raw bytes)")
    keys.add_argument("--psk-csv", metavar="PATH", help="CSV of identity,hex-key rows")
    keys.add_argument("--scenario", metavar="FILE",
                      help="take the keys and identity hint from a scenario's psk section")
    keys.add_argument("--psk-master-env", metavar="VAR",
                      help="derive per-identity keys: HMAC-SHA256(master, identity) with the master from VAR")
    group.add_argument("--derive-length", type=int, default=16, metavar="N", help="derived key length in bytes")


def key_store_from_args(args: argparse.Namespace) -> KeyStore:
    """The KeyStore the key options describe (default: the quickstart key)."""
    if getattr(args, "scenario", None):
        from .scenario import load_scenario

        psk = load_scenario(args.scenario).psk
        if psk is None:
            raise ConfigError(f"{args.scenario}: the scenario has no psk section")
        args.hint = psk.hint
        return psk.store
    if args.psk_csv:
        return _from_option("--psk-csv", KeyStore.from_csv, args.psk_csv)
    if args.psk_master_env:
        master = key_from_env(args.psk_master_env)
        derive_key(master, b"check", args.derive_length)  # validates the length early
        return KeyStore(master=master, derived_length=args.derive_length)
    if args.psk_hex:
        return KeyStore(shared=parse_hex(args.psk_hex, where="--psk-hex"))
    if args.psk_env:
        return KeyStore(shared=key_from_env(args.psk_env))
    if args.psk_file:
        return KeyStore(shared=_from_option("--psk-file", key_from_file, args.psk_file))
    return KeyStore(shared=QUICKSTART_KEY)


def _from_option(option: str, load: Callable[[str], _T], path: str) -> _T:
    """``load(path)``, its errors prefixed with the option that named the file."""
    try:
        return load(path)
    except ConfigError as exc:
        raise ConfigError(f"{option}: {exc.args[0]}") from None


#: The demo key of scenarios/quickstart.yaml, used by `serve` when no key option is given. Not a secret.
QUICKSTART_KEY = Secret(bytes.fromhex("000102030405060708090a0b0c0d0e0f"))

#: Said by ``serve`` on stderr when no key option chose a key (stdout says only that it is the demo key).
DEMO_KEY_NOTICE = ("WARNING: no key option given, so this server uses the PUBLIC DEMO KEY of scenarios/quickstart.yaml "
                   "(also in scenarios/tls.yaml): fine on loopback, never anywhere else. Clients with another key "
                   "fail with psk-key-mismatch: give the clients' key with --scenario FILE (a scenario's psk "
                   "section), --psk-env VAR, --psk-file PATH, --psk-csv PATH or --psk-master-env VAR.")


def key_source(args: argparse.Namespace) -> str | None:
    """Where the key options took the server's keys from, never the keys (None: no option, the demo key)."""
    if getattr(args, "scenario", None):
        return f"the psk section of {args.scenario} (--scenario)"
    for option, what in (("psk_csv", "identities and keys from the CSV file {} (--psk-csv)"),
                         ("psk_master_env", "derived per identity from the master key in ${} (--psk-master-env, "
                                            f"{args.derive_length}-byte keys)"),
                         ("psk_hex", "one key for every identity, given inline (--psk-hex: visible in ps)"),
                         ("psk_env", "one key for every identity, from ${} (--psk-env)"),
                         ("psk_file", "one key for every identity, from the file {} (--psk-file)")):
        value = getattr(args, option, None)
        if value:
            return what.format(value) if option != "psk_hex" else what
    return None


def _say_keys(args: argparse.Namespace, psk: bool) -> None:
    """The ``serve`` line that says where the keys come from (loud, on stderr too, for the demo key)."""
    if not psk:
        print(f"loadgen: keys: certificate {args.cert} (no PSK)", flush=True)
        return
    source = key_source(args)
    if source is None:
        print("loadgen: keys: the PUBLIC DEMO KEY of scenarios/quickstart.yaml (no key option given: see stderr)",
              flush=True)
        print(f"loadgen: {DEMO_KEY_NOTICE}", file=sys.stderr, flush=True)
    else:
        print(f"loadgen: keys: {source}" + (f"; certificate {args.cert}" if getattr(args, "cert", None) else ""),
              flush=True)


def _positive(kind: type) -> Any:
    """An argparse type: a number of ``kind`` that must be > 0."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _psk_modes(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated TLS 1.3 PSK modes (``--psk-modes``)."""
    from .protocol.tls import psk_modes_problem

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
    stls.add_argument("--idle-timeout", type=_positive(float), default=60.0, metavar="SECONDS",
                      help="each line must complete within this long, and a connection without one "
                           "is closed (default 60)")
    stls.add_argument("--handshake-timeout", type=_positive(float), default=10.0, metavar="SECONDS",
                      help="the TLS handshake must complete this long after the TCP connect (default 10)")
    stls.add_argument("--max-connections", type=_positive(int), default=None, metavar="N",
                      help="open connections at most; over it, a newcomer is closed at once and counted "
                           "server-full (default: the open-file limit minus 256, leaving files for the rest)")
    _key_options(stls)  # PSK mode: without --cert, or with --cert when a key option is given too


def build_parser() -> argparse.ArgumentParser:
    """The whole command line; every option's help ends with its default (see :class:`HelpFormatter`)."""
    parser = argparse.ArgumentParser(prog="loadgen", epilog=EXAMPLES,
                                     description="A load generator for DTLS and TLS services.")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)")
    parser.add_argument("--version", action="version", version=f"loadgen {version()}",
                        help="print loadgen's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    serve = sub.add_parser("serve", help="run a reference server (dtls or tls) until Ctrl-C")
    serve_sub = serve.add_subparsers(dest="protocol", required=True, metavar="PROTOCOL", title="protocols")
    sdtls = serve_sub.add_parser("dtls", help="reference DTLS-PSK server (echo)")
    sdtls.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sdtls.add_argument("--port", type=int, default=5684, help="UDP port; 0 picks a free port (printed)")
    sdtls.add_argument("--hint", default="loadgen", help="PSK identity hint ('' for none)")
    sdtls.add_argument("--reply", choices=("echo", "qt"), default="echo",
                       help="echo each ping, or answer like Qt's server: 'to IDENTITY: PING'")
    sdtls.add_argument("--idle-timeout", type=_positive(float), default=60.0, metavar="SECONDS",
                       help="a peer not heard from this long is forgotten (default 60)")
    sdtls.add_argument("--handshake-timeout", type=_positive(float), default=10.0, metavar="SECONDS",
                       help="a handshake must complete this long after its ClientHello with a cookie (default 10)")
    sdtls.add_argument("--max-peers", type=_positive(int), default=100_000, metavar="N",
                       help="peers with state at most (default 100000); over it, newcomers count server-full")
    sdtls.add_argument("--max-half-open", type=_positive(int), default=10_000, metavar="N",
                       help="peers still handshaking at most (default 10000); over it, newcomers count server-full")
    sdtls.add_argument("--mtu", type=int, default=None, metavar="BYTES",
                       help="largest datagram the server sends (default 1200)")
    sdtls.add_argument("--ciphers", default=None,
                       help="DTLS cipher list, OpenSSL syntax (default: the PSK AEAD suites)")
    sdtls.add_argument("--handshake", choices=("loadgen", "openssl"), default="loadgen",
                       help="loadgen's own DTLS PSK handshake (PSK AEAD suites; several times cheaper) "
                            "or always OpenSSL's")
    _key_options(sdtls)
    cli_stats.add_throttle_options(sdtls)
    _tls_serve_options(serve_sub.add_parser("tls", help="reference TLS server (line echo): "
                                            "certificate and key, or PSK"))

    run = sub.add_parser("run", help="run a scenario: headless (default), --web, or distributed")
    run.add_argument("scenario", help="the scenario file (YAML)")
    load = run.add_argument_group("load (override the scenario; not with its stages)")
    load.add_argument("-u", "--users", type=_positive(int), default=None, metavar="N",
                      help="clients (default: the scenario's clients.count)")
    load.add_argument("-r", "--spawn-rate", type=_positive(float), default=None, metavar="R",
                      help="clients started per second (default: the scenario's clients.spawn_rate)")
    load.add_argument("-t", "--run-time", type=cli_stats.duration, default=None, metavar="TIME",
                      help="how long the run lasts: 90, 30s, 2m, 1h30m, 500ms (default: the scenario's run_time)")
    run.add_argument("--exit-code-on-error", type=_exit_status, default=EXIT_THRESHOLD, metavar="N",
                     help="exit status when any handshake or ping failed and the scenario has no thresholds "
                          "(thresholds decide when it has them)")
    run.add_argument("--web", action="store_true", help="serve Locust's web UI instead of starting at once")
    run.add_argument("--web-host", default="127.0.0.1", help="--web: address of the web UI")
    run.add_argument("--web-port", type=int, default=8089, help="--web: port of the web UI")
    run.add_argument("--processes", type=int, default=0, metavar="N",
                     help="start N Locust worker processes on this machine and act as their master (default 0: none)")
    run.add_argument("--master", action="store_true", help="be a Locust master; workers connect to it")
    run.add_argument("--expect-workers", type=int, default=1, metavar="N",
                     help="master: wait for N workers before a headless run starts")
    run.add_argument("--master-port", type=int, default=5557, help="master: the port workers connect to")
    run.add_argument("--worker", action="store_true", help="be a Locust worker of a master")
    run.add_argument("--master-host", default="127.0.0.1", help="worker: the master's address")
    run.add_argument("--workers", type=int, default=None, metavar="N",
                     help="worker: how many workers there are (keeps device numbers dense: n = index + k*N; "
                          "default: numbered by the master)")
    run.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    run.add_argument("--builtin-address", default=None, metavar="HOST:PORT",
                     help="worker: the master's built-in server (printed by the master; default: the "
                          "scenario's targets)")
    run.add_argument("--run-dir", default=None, help=argparse.SUPPRESS)
    cli_stats.add_workload_options(run)
    cli_stats.add_output_options(run)
    cli_stats.add_commands(sub)  # capacity, report

    sub.add_parser("locustfile", help="print the path of loadgen's locustfile (for plain `locust -f`)")

    validate = sub.add_parser("validate", help="check a scenario file without running it")
    validate.add_argument("scenario", help="the scenario file (YAML)")

    from .impair import OPTIONS as IMPAIR_OPTIONS

    impair = sub.add_parser("impair", help="UDP impairment proxy: loss, delay, duplication, reordering, corruption")
    impair.add_argument("--listen", default="127.0.0.1:6000", metavar="HOST:PORT",
                        help="where clients send to; port 0 picks a free port")
    impair.add_argument("--to", required=True, metavar="HOST:PORT", help="where datagrams go (the server; required)")
    impair.add_argument("--seed", default=None, help="seed for reproducible runs (default: random, printed)")
    impair.add_argument("--max-clients", default="10000", metavar="N", help="client mappings kept at most")
    impair.add_argument("--idle-timeout", default="60s", metavar="TIME", help="a client mapping idle this long expires")
    both = impair.add_argument_group("impairments, both directions (--up-X / --down-X: client->server / back only)")
    for name, (metavar, text) in IMPAIR_OPTIONS.items():
        flag = name.replace("_", "-")
        help_text = text if "default" in text else f"{text} (default: none)"
        both.add_argument(f"--{flag}", metavar=metavar, help=help_text)
        both.add_argument(f"--up-{flag}", metavar=metavar, help=argparse.SUPPRESS)
        both.add_argument(f"--down-{flag}", metavar=metavar, help=argparse.SUPPRESS)
    for each in parsers(parser):
        each.formatter_class = HelpFormatter
    return parser


def _exit_status(text: str) -> int:
    """An argparse type: an exit status, 0..255."""
    if not text.isdigit() or int(text) > 255:
        raise argparse.ArgumentTypeError(f"expected an exit status 0..255, got {text!r}")
    return int(text)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``loadgen`` command; returns its exit status (the README's "Exit status" table)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # `loadgen` alone: what there is to do, and nothing done (a usage error, as argparse's)
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.captureWarnings(True)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "run":
            return _run(args)
        if args.command == "locustfile":
            from . import locustfile

            print(locustfile.__file__)
            return 0
        if args.command == "validate":
            return _validate(args)
        if args.command == "capacity":
            return cli_stats.capacity(args)
        if args.command == "report":
            return cli_stats.report(args)
        if args.command == "impair":
            return _impair(args)
    except ConfigError as exc:
        print(f"loadgen: {exc.args[0]}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return EXIT_USAGE


def _run(args: argparse.Namespace) -> int:
    import locust  # noqa: F401 - monkey-patches the standard library for gevent; must come first

    from .runner import RunOptions, run
    from .scenario import load_scenario

    scenario = with_load_options(cli_stats.apply_output_options(load_scenario(args.scenario), args), args)
    if args.processes < 0 or (args.workers is not None and args.workers < 1):
        raise ConfigError("--processes and --workers must be positive")
    builtin = None
    if args.builtin_address:
        host, _, port = args.builtin_address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigError(f"--builtin-address: expected HOST:PORT, got {args.builtin_address!r}")
        builtin = (host.strip("[]"), int(port))
    options = RunOptions(
        web=args.web, web_host=args.web_host, web_port=args.web_port, processes=args.processes,
        master=args.master, worker=args.worker, master_host=args.master_host, master_port=args.master_port,
        expect_workers=args.expect_workers, worker_index=args.worker_index,
        workers=args.workers, builtin_address=builtin,
        run_dir=Path(args.run_dir) if args.run_dir else None, workload=args.workload, period=args.period,
    )
    outcome = run(scenario, options)
    if outcome.passed:
        return 0
    return EXIT_THRESHOLD if outcome.verdicts else args.exit_code_on_error


def with_load_options(scenario: Scenario, args: argparse.Namespace) -> Scenario:
    """``scenario`` with ``-u``, ``-r`` and ``-t`` applied. A scenario with stages is refused them:
    its stages set clients, spawn rates and the run's length, and which to override would be a guess."""
    given = [flag for flag, value in (("-u/--users", args.users), ("-r/--spawn-rate", args.spawn_rate),
                                      ("-t/--run-time", args.run_time)) if value is not None]
    if not given:
        return scenario
    if scenario.stages:
        raise ConfigError(f"{', '.join(given)}: {args.scenario} has stages, which set the clients, spawn rates "
                          "and run time; edit its stages, or remove them to use -u, -r and -t")
    clients = dataclasses.replace(scenario.clients, count=args.users or scenario.clients.count,
                                  spawn_rate=args.spawn_rate or scenario.clients.spawn_rate)
    return dataclasses.replace(scenario, clients=clients, run_time=args.run_time or scenario.run_time)


def _validate(args: argparse.Namespace) -> int:
    from .scenario import load_scenario

    scenario = load_scenario(args.scenario)
    print(f"{args.scenario}: scenario {scenario.name!r} is valid")
    from .limits import advice

    for problem in advice(scenario):  # what `loadgen run` would stop at (exit 2)
        print(f"loadgen: WARNING: on this machine `loadgen run` would not start: {problem}")
    return 0


def _serve_tls(args: argparse.Namespace) -> int:

    from .protocol import tls
    from .transport.tls_server import TlsServer

    psk_given = any(getattr(args, name, None) for name in (
        "psk_hex", "psk_env", "psk_file", "psk_csv", "scenario", "psk_master_env"))
    keys = key_store_from_args(args) if psk_given or not args.cert else None
    if args.require_client_cert and not (args.cert and (args.ca_file or args.ca_dir)):
        raise ConfigError("--require-client-cert needs --cert and --ca-file or --ca-dir")
    for option, path in (("--cert", args.cert), ("--key", args.key), ("--ca-file", args.ca_file)):
        _check_pem_file(option, path)
    options = tls.TlsOptions(
        min_version=args.min_version, max_version=args.max_version, ciphers=args.ciphers,
        ciphersuites=args.ciphersuites, ca_file=args.ca_file, ca_dir=args.ca_dir, cert_file=args.cert,
        key_file=args.key, verify="require" if args.require_client_cert else "none",
        resumption=not args.no_resumption, psk_modes=args.psk_modes,
    )
    context = tls.server_context(options, keys=keys, hint=args.hint.encode() or None)
    server = TlsServer(context, host=args.host, port=args.port, reply=args.reply, idle_timeout=args.idle_timeout,
                       handshake_timeout=args.handshake_timeout, max_connections=args.max_connections)

    def say() -> None:
        _say_keys(args, keys is not None)
        print("loadgen: throttles: none (serve tls has none)", flush=True)

    stats = _serve_until_signal(server, "TLS", args, say)
    print(
        f"loadgen: TLS server stopped: {stats.handshakes} handshakes ({stats.resumed} resumed), "
        f"{stats.pings} pings answered, {sum(stats.failures.values())} failures {dict(stats.failures)}",
        flush=True,
    )
    return 0


def _check_pem_file(option: str, path: str | None) -> None:
    """Refuse a PEM path that is not a regular file under the cap before OpenSSL reads it:
    OpenSSL blocks for ever on a FIFO and reads a device such as /dev/zero without end."""
    import os

    from .credentials import check_regular
    from .scenario.convert import PEM_FILE_CAP

    if path is None:
        return
    try:
        reason = check_regular(os.stat(path), PEM_FILE_CAP, "PEM file")
    except OSError as exc:
        reason = exc.strerror or str(exc)
    if reason is not None:
        raise ConfigError(f"{option} {path}: {reason}")


def _wait_for_signal() -> None:
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
        _wait_for_signal()
    finally:
        # stop() never raises for one peer; anything else still must not cost the summary line.
        try:
            server.stop()
        except Exception as exc:  # noqa: BLE001 - the summary below is what the user needs
            from .throttle import exception_summary

            logging.getLogger("loadgen.server").error("stopping the server: %s", exception_summary(exc))
    return server.stats


def _serve(args: argparse.Namespace) -> int:
    if args.protocol == "tls":
        return _serve_tls(args)

    from .protocol import dtls
    from .transport.dtls_server import DtlsServer

    keys = key_store_from_args(args)
    server = DtlsServer(
        keys,
        host=args.host,
        port=args.port,
        hint=args.hint.encode() or None,
        reply=args.reply,
        ciphers=args.ciphers or dtls.DEFAULT_PSK_CIPHERS,
        mtu=args.mtu or dtls.DEFAULT_MTU,
        idle_timeout=args.idle_timeout,
        handshake_timeout=args.handshake_timeout,
        max_peers=args.max_peers,
        max_half_open=args.max_half_open,
        native=args.handshake == "loadgen",
        max_handshake_rate=args.max_handshake_rate,
        max_ping_rate=args.max_ping_rate,
    )

    def say() -> None:
        _say_keys(args, True)
        _say_throttles(args)

    stats = _serve_until_signal(server, "DTLS", args, say)
    print(
        f"loadgen: DTLS server stopped: {stats.handshakes} handshakes, {stats.pings} pings answered, "
        f"{sum(stats.failures.values())} failures {dict(stats.failures)}"
        + (f", throttled {stats.throttled_handshakes} handshakes, {stats.throttled_pings} pings"
           if args.max_handshake_rate or args.max_ping_rate else ""),
        flush=True,
    )
    return 0


def _impair(args: argparse.Namespace) -> int:
    import time

    from . import impair

    up, down = impair.impairments_from_options(vars(args))
    listen = impair.parse_address(args.listen, "--listen", any_port=True)
    target = impair.parse_address(args.to, "--to")
    if args.seed is not None and not args.seed.isdigit():
        raise ConfigError(f"--seed: expected a whole number >= 0, got {args.seed!r}")
    max_clients = impair.parse_size(args.max_clients, "--max-clients")
    idle_timeout = impair.parse_duration(args.idle_timeout, "--idle-timeout")
    if idle_timeout <= 0:
        raise ConfigError(f"--idle-timeout: expected a time > 0, got {args.idle_timeout!r}")
    proxy = impair.ImpairmentProxy(target, listen=listen, up=up, down=down, max_clients=max_clients,
                                   seed=int(args.seed) if args.seed is not None else None, idle_timeout=idle_timeout)
    try:
        proxy.start()
    except OSError as exc:
        raise ConfigError(f"--listen: cannot listen on {args.listen}: {exc.strerror}") from None
    started = time.monotonic()
    print(f"loadgen: impairment proxy on {impair.format_address(proxy.address)} -> {impair.format_address(target)}",
          flush=True)
    print(f"loadgen: seed {proxy.seed}; up: {up.describe()}; down: {down.describe()}", flush=True)
    _wait_for_signal()
    proxy.stop()
    stats = proxy.stats
    print(f"loadgen: impairment proxy stopped after {time.monotonic() - started:.1f} s, {stats.clients} clients "
          f"({stats.expired} expired, {stats.evicted} evicted)", flush=True)
    for direction in ("up", "down"):
        print(f"loadgen: {impair.counters_line(direction, getattr(stats, direction))}", flush=True)
    return 0
