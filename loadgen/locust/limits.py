"""Sockets a run needs, against what this machine gives: checked before a run, summed up during it.

Every client association holds one socket (a connected UDP socket for DTLS, a TCP connection
for TLS), so a process with N devices needs N x (associations per device) open files, and each
source address one local port per socket. Past the open-file limit ``socket()`` fails with
EMFILE; past the port range ``connect()`` or ``bind()`` fails. Before a run :func:`prepare`
raises the soft open-file limit to the hard one and, when the plan still does not fit, stops
with the numbers and the fix. During a run, attempts that find no socket fail as
``socket-error`` and :class:`ShortageLog` sums them up in one line every 10 s.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import resource
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from loadgen.protocol.errors import ConfigError, SocketsExhausted
from loadgen.scenario import Scenario
from loadgen.stats.facts import Fact, Finished
from loadgen.stats.throttle import ThrottledLog

log = logging.getLogger("loadgen")

#: Open files a load process needs besides its client sockets: the interpreter, gevent's hub,
#: Locust (web UI connections, the master/worker link), exporters, the built-in server's pipes
#: and the results files. A local run has about 20 open before its first client.
HEADROOM = 100

#: Share of a source address's ephemeral ports one run may fill: the kernel finds a free port by
#: random search, which gets slow when the range is nearly full (and the machine has other sockets).
PORT_SHARE = 0.7

#: Set to 1 to run even when the plan does not fit (clients left without a socket count socket-error).
IGNORE_ENV = "LOADGEN_IGNORE_LIMITS"


def ephemeral_ports() -> int:
    """How many local ports the kernel hands out to unbound sockets (net.ipv4.ip_local_port_range)."""
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
        return high - low + 1
    except (OSError, ValueError):
        return 28232  # Linux's default range, 32768-60999


def spread_sources(scenario: Scenario, builtin: bool) -> Scenario:
    """A run against the built-in server with more DTLS clients than one source address has ports
    gets several loopback source addresses (127.0.0.1, .2, ...), round-robin by device.

    Every connected UDP socket takes one of the ``ephemeral_ports()`` (28,232 by default) of its
    source address; past that ``connect()`` fails with EAGAIN after scanning the whole range (~1 ms
    of kernel CPU each, retried by every client left out). The master and each worker apply this to
    the same scenario, so they agree on the pool.
    """
    if not builtin or scenario.clients.source_addresses:
        return scenario
    per_address = max(1, int(ephemeral_ports() * PORT_SHARE))
    needed = math.ceil(peak_clients(scenario) / per_address)
    if needed <= 1:
        return scenario
    pool = tuple(f"127.0.0.{i}" for i in range(1, min(needed, 254) + 1))
    return dataclasses.replace(scenario, clients=dataclasses.replace(scenario.clients, source_addresses=pool))


def peak_clients(scenario: Scenario) -> int:
    """The most devices the run has at once: ``clients.count``, or the largest stage."""
    return max([scenario.clients.count, *(s.clients for s in scenario.stages)])


def associations_per_client(scenario: Scenario) -> int:
    """Sockets one device holds: one, or one per target with ``connect: all``."""
    return len(scenario.targets) if scenario.clients.connect == "all" and scenario.targets else 1


@dataclass(frozen=True)
class Plan:
    """Sockets per process and local ports per source address a run needs."""

    clients: int  # devices at the peak, over all processes
    per_client: int  # sockets each device holds
    processes: int  # processes the devices are divided over (on this machine)
    headroom: int  # other open files of a load process
    dtls_ports: int  # local UDP ports per source address (this machine)
    tls_ports: int  # local TCP ports per source address (per target when unbound)
    addresses: int  # source addresses (1: the kernel's choice)

    @property
    def clients_per_process(self) -> int:
        return math.ceil(self.clients / max(1, self.processes))

    @property
    def open_files(self) -> int:
        """Open files the busiest load process needs."""
        return self.clients_per_process * self.per_client + self.headroom


def plan(scenario: Scenario, processes: int = 1, users: int | None = None, open_now: int = 0) -> Plan:
    """The run's needs: ``users`` devices (default: the scenario's peak) over ``processes``;
    ``open_now``: files this process has open already (counted into the headroom)."""
    clients = users if users is not None else peak_clients(scenario)
    per_client = associations_per_client(scenario)
    targets = scenario.targets
    addresses = max(1, len(scenario.clients.source_addresses))
    dtls_sockets, tls_sockets = _sockets_by_protocol(scenario, clients)
    # UDP: every connected socket takes a port of its source address. TCP: a bound socket too;
    # an unbound one only per destination (the kernel reuses a port for another 4-tuple).
    tls_share = tls_sockets if scenario.clients.source_addresses else max(
        (_share(scenario, t.name) * clients for t in targets if t.protocol == "tls"), default=0)
    return Plan(clients=clients, per_client=per_client, processes=max(1, processes), headroom=HEADROOM + open_now,
                dtls_ports=math.ceil(dtls_sockets / addresses), tls_ports=math.ceil(tls_share / addresses),
                addresses=addresses)


def _share(scenario: Scenario, name: str) -> float:
    """Devices per device of the run that talk to target ``name``."""
    targets = scenario.targets
    if scenario.clients.connect == "all" or len(targets) == 1:
        return 1.0
    total = sum(t.weight for t in targets)
    return sum(t.weight for t in targets if t.name == name) / total if total else 0.0


def _sockets_by_protocol(scenario: Scenario, clients: int) -> tuple[int, int]:
    if not scenario.targets:
        return clients, 0  # the built-in server speaks DTLS
    dtls = sum(_share(scenario, t.name) for t in scenario.targets if t.protocol == "dtls")
    tls = sum(_share(scenario, t.name) for t in scenario.targets if t.protocol == "tls")
    return math.ceil(clients * dtls), math.ceil(clients * tls)


def problems(p: Plan, open_file_limit: int, hard_limit: int, ports: int) -> list[str]:
    """What does not fit, each with its numbers and its fix; empty when the plan fits."""
    found = []
    if p.open_files > open_file_limit:
        room = max(1, open_file_limit - p.headroom)
        processes = math.ceil(p.clients * p.per_client / room)
        where = "one process" if p.processes == 1 else f"each of {p.processes} processes"
        sockets = f"{p.clients_per_process} clients" + (f" x {p.per_client} targets" if p.per_client > 1 else "")
        fix = f"run with --processes {processes} ({math.ceil(p.clients / processes)} clients per process"
        fix += ", on more machines if this one has fewer cores)" if processes > (os.cpu_count() or 1) else ")"
        raise_hint = "raise the hard limit (ulimit -Hn, LimitNOFILE=, /etc/security/limits.conf) " \
                     f"to at least {p.open_files}"
        found.append(f"{sockets} need {p.open_files} open files in {where} ({p.open_files - p.headroom} sockets + "
                     f"{p.headroom} for Locust and loadgen), but a process may open {open_file_limit} "
                     f"(RLIMIT_NOFILE; hard limit {hard_limit}): {fix}, or {raise_hint}")
    for proto, needed in (("UDP", p.dtls_ports), ("TCP", p.tls_ports)):
        if needed > ports:
            more = math.ceil(needed * p.addresses / ports)
            found.append(f"{needed} {proto} sockets per source address exceed its {ports} local ports "
                         f"(net.ipv4.ip_local_port_range): give at least {more} clients.source_addresses")
    return found


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft open-file limit to the hard one (at most fs.nr_open); returns (soft, hard) after."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard
    if target == resource.RLIM_INFINITY:
        try:
            target = int(Path("/proc/sys/fs/nr_open").read_text())
        except (OSError, ValueError):
            target = 1 << 20
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, hard
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (OSError, ValueError):
        return soft, hard
    return target, hard


def advice(scenario: Scenario, processes: int = 1) -> list[str]:
    """What would not fit in a run of ``scenario`` here (the soft limit raised to the hard one, as a run does);
    nothing is changed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit = soft if hard == resource.RLIM_INFINITY else max(soft, hard)
    scenario = spread_sources(scenario, builtin=not scenario.targets)
    return problems(plan(scenario, processes, open_now=_open_files()), limit, hard, ephemeral_ports())


def _open_files() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return 0


def prepare(scenario: Scenario, out: TextIO, *, processes: int = 1, users: int | None = None,
            strict: bool = True) -> Scenario:
    """Before a run: spread built-in-server clients over loopback addresses, raise the open-file
    limit, and check the plan. What does not fit raises :class:`ConfigError` (exit 2) when
    ``strict`` (and ``LOADGEN_IGNORE_LIMITS`` is not set), else it is printed as a warning.
    Returns the scenario to run (with its source addresses)."""
    scenario = spread_sources(scenario, builtin=not scenario.targets)
    soft, hard = raise_open_file_limit()
    found = problems(plan(scenario, processes, users, _open_files()), soft, hard, ephemeral_ports())
    if not found:
        return scenario
    if strict and os.environ.get(IGNORE_ENV, "") in ("", "0"):
        raise ConfigError("the run does not fit this machine's limits, so it was not started:\n  "
                          + "\n  ".join(found) + f"\n  ({IGNORE_ENV}=1 runs anyway: clients left without "
                          "a socket count socket-error)")
    for problem in found:
        print(f"loadgen: WARNING: {problem}; clients left without a socket count socket-error", file=out, flush=True)
    return scenario


class ShortageLog:
    """A sink: attempts that failed for want of a socket (:class:`SocketsExhausted`), summed up
    in at most one log line per ``interval`` with counts per reason, instead of a line per device."""

    facts = (Finished,)

    def __init__(self, interval: float = 10.0) -> None:
        self._log = ThrottledLog(log, interval=interval, burst=1)
        self._counts: Counter[str] = Counter()

    def record(self, fact: Fact) -> None:
        if type(fact) is not Finished or fact.error is None or not isinstance(fact.error, SocketsExhausted):
            return
        self._counts[fact.error.reason] += 1
        reasons = ", ".join(f"{reason}: {n}" for reason, n in self._counts.most_common())
        self._log.log(logging.WARNING, "out-of-sockets",
                      "loadgen: %d %s attempts found no socket so far (%s), counted socket-error; "
                      "see the limits loadgen checked before the run", sum(self._counts.values()),
                      fact.kind, reasons)
