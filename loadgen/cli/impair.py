"""``loadgen impair``: the UDP impairment proxy, until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse

from loadgen.cli.serve import wait_for_signal
from loadgen.protocol.errors import ConfigError


def add_impair_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``impair``: where it listens and sends, and one option per impairment (per direction, hidden)."""
    from loadgen.servers.impair import OPTIONS as IMPAIR_OPTIONS

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


def impair_command(args: argparse.Namespace) -> int:
    """``loadgen impair``: proxy until SIGINT / SIGTERM, then its counters; exit 0."""
    import time

    from loadgen.servers import impair

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
    wait_for_signal()
    proxy.stop()
    stats = proxy.stats
    print(f"loadgen: impairment proxy stopped after {time.monotonic() - started:.1f} s, {stats.clients} clients "
          f"({stats.expired} expired, {stats.evicted} evicted)", flush=True)
    for direction in ("up", "down"):
        print(f"loadgen: {impair.counters_line(direction, getattr(stats, direction))}", flush=True)
    return 0
