"""The text syntax of durations and ``HOST:PORT`` addresses: one reading for scenario files and options.

A scenario's ``interval: 250ms``, ``loadgen run -t 1h30m`` and ``loadgen impair --delay 20ms``
all go through :func:`parse_duration`; ``--prometheus``, ``--builtin-address`` and the
impairment proxy's ``--listen`` / ``--to`` through :func:`parse_host_port`. Callers apply
their own bounds (zero allowed or not) and raise their own kind of error.

A leaf module (standard library only): the command line imports it before anything
heavy, so ``loadgen --help`` stays quick and gevent's monkey-patching can still come first.
"""

from __future__ import annotations

import ipaddress
import re

from loadgen.protocol.errors import ConfigError

#: Seconds per duration unit ("ms" is tried before "m": "500ms" is not 500 minutes and a second).
#: A peer's address as ``recvfrom`` gives it: ``(host, port)``, or with IPv6 ``(host, port, flowinfo, scope_id)``.
SockAddr = tuple[str, int] | tuple[str, int, int, int]

UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_NUMBER = r"(\d+(?:\.\d*)?|\.\d+)"
_PART = re.compile(rf"{_NUMBER}\s*(ms|s|m|h)")
# A bare number (seconds), or number-unit parts chained as Locust's -t chains them ("1h30m").
# No two adjacent \s* (as in "\s*(unit)?\s*"): blanks before a wrong character would be split
# between them every way, quadratic in their number.
_DURATION = re.compile(rf"\s*(?:{_NUMBER}\s*|(?:{_NUMBER}\s*(?:ms|s|m|h))+\s*)")


def parse_duration(text: str) -> float | None:
    """Seconds from ``10``, ``10s``, ``500ms``, ``2m``, ``1.5h`` or ``1h30m``, or None when ``text`` is not a
    duration. A bare number is seconds; blanks may stand around it and between a number and its unit."""
    if not _DURATION.fullmatch(text):
        return None
    parts = _PART.findall(text)
    return sum(float(number) * UNITS[unit] for number, unit in parts) if parts else float(text)


def parse_host_port(text: str, where: str, *, default_host: str | None = None, literal_ip: bool = False,
                    lowest_port: int = 0) -> tuple[str, int]:
    """``(host, port)`` from ``HOST:PORT`` or ``[V6]:PORT``; raises :class:`ConfigError` naming ``where``.

    With a ``default_host``, the host may be left out (``:PORT`` or ``PORT``); without one it is
    required. ``literal_ip``: the host must be an IP address (``localhost`` reads as 127.0.0.1),
    for sockets that compare the addresses they see with it.
    """
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host and default_host is not None:
        host, sep = default_host, sep or ":"
    if literal_ip and host == "localhost":
        host = "127.0.0.1"
    ok = bool(sep and host) and port.isascii() and port.isdigit() and lowest_port <= int(port) <= 65535
    if ok and literal_ip:
        try:
            ipaddress.ip_address(host)
        except ValueError:
            ok = False
    if not ok:
        what = "HOST:PORT with an IP address" if literal_ip else "HOST:PORT"
        raise ConfigError(f"{where}: expected {what} and a port {lowest_port}..65535, got {text!r}")
    return host, int(port)


def format_host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 host in brackets (``[::1]:5684``): what :func:`parse_host_port` reads."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
