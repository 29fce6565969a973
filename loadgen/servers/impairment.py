"""What the impairment proxy does to each datagram, and how ``loadgen impair`` options say it.

Sans-I/O: :func:`impair` takes one datagram, the direction's :class:`Impairment`, its seeded
``random.Random`` and its :class:`Counters`, and says which bytes go on and after which
waits (:mod:`loadgen.servers.impair` sends them). With a fixed seed and the same datagrams in the
same order the same draws are made, so the same datagrams are dropped, delayed, duplicated,
held back, corrupted. The order per datagram is in :mod:`loadgen.servers.impair`'s module doc.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from loadgen.protocol.errors import ConfigError
from loadgen.scenario.syntax import format_host_port, parse_host_port
from loadgen.scenario.syntax import parse_duration as parse_duration_text

Address = tuple[str, int]

#: Jitter distributions: "uniform" draws delay +- jitter, "normal" draws N(delay, jitter).
DISTRIBUTIONS = ("uniform", "normal")
_PROBABILITIES = ("loss", "duplicate", "reorder", "corrupt")
_DELAYS = ("delay", "jitter", "reorder_delay")


@dataclass(frozen=True)
class Impairment:
    """What happens to datagrams in one direction. Probabilities in 0..1, times in seconds."""

    loss: float = 0.0
    delay: float = 0.0
    jitter: float = 0.0
    duplicate: float = 0.0
    reorder: float = 0.0
    corrupt: float = 0.0
    truncate: int | None = None  # datagrams longer than this many bytes are cut to it
    distribution: str = "uniform"  # of the jitter
    reorder_delay: float = 0.010  # how much longer a reordered datagram is held back

    def __post_init__(self) -> None:
        for name in _PROBABILITIES:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0.0 <= value <= 1.0):
                raise ValueError(f"{name}: expected a probability between 0 and 1, got {value!r}")
        for name in _DELAYS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name}: expected a time >= 0 in seconds, got {value!r}")
        if self.truncate is not None and not (isinstance(self.truncate, int) and self.truncate >= 1):
            raise ValueError(f"truncate: expected a size >= 1 in bytes, got {self.truncate!r}")
        if self.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution: expected one of {', '.join(DISTRIBUTIONS)}, got {self.distribution!r}")

    def describe(self) -> str:
        """A short human summary, e.g. ``loss 20%, delay 20 ms +- 5 ms (uniform)``; ``none`` when clear."""
        parts = [f"{name} {getattr(self, name) * 100:.4g}%" for name in _PROBABILITIES if getattr(self, name)]
        if self.delay or self.jitter:
            jitter = f" +- {self.jitter * 1000:.4g} ms ({self.distribution})" if self.jitter else ""
            parts.append(f"delay {self.delay * 1000:.4g} ms{jitter}")
        if self.reorder:
            parts.append(f"reorder hold {self.reorder_delay * 1000:.4g} ms")
        if self.truncate is not None:
            parts.append(f"truncate to {self.truncate} bytes")
        return ", ".join(parts) or "none"


@dataclass
class Counters:
    """What one direction did. ``forwarded`` counts datagrams sent on, copies included."""

    forwarded: int = 0
    dropped: int = 0
    duplicated: int = 0
    reordered: int = 0
    corrupted: int = 0
    truncated: int = 0
    send_errors: int = 0  # could not be sent (socket error, or the client mapping was gone)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


#: Datagrams pass unchanged.
NO_IMPAIRMENT = Impairment()


def impair(data: bytes, imp: Impairment, rng: random.Random, counters: Counters) -> tuple[bytes, list[float]]:
    """The bytes to send on (truncated, corrupted) and one wait in seconds per copy to send; no
    waits when the datagram is lost. Counts what it did in ``counters`` (not ``forwarded``)."""
    if imp.loss and rng.random() < imp.loss:
        counters.dropped += 1
        return data, []
    if imp.truncate is not None and len(data) > imp.truncate:
        data = data[: imp.truncate]
        counters.truncated += 1
    if imp.corrupt and data and rng.random() < imp.corrupt:
        buf = bytearray(data)
        buf[rng.randrange(len(buf))] ^= rng.randrange(1, 256)
        data = bytes(buf)
        counters.corrupted += 1
    copies = 1
    if imp.duplicate and rng.random() < imp.duplicate:
        copies = 2
        counters.duplicated += 1
    hold = 0.0
    if imp.reorder and rng.random() < imp.reorder:
        hold = imp.reorder_delay
        counters.reordered += 1
    return data, [_delay(imp, rng) + hold for _ in range(copies)]


def _delay(imp: Impairment, rng: random.Random) -> float:
    if not imp.jitter:
        return imp.delay
    if imp.distribution == "normal":
        return max(0.0, rng.gauss(imp.delay, imp.jitter))
    return max(0.0, imp.delay + rng.uniform(-imp.jitter, imp.jitter))


# -- command-line values ------------------------------------------------------

#: The impairment options of ``loadgen impair``: field -> (metavar, help).
OPTIONS: dict[str, tuple[str, str]] = {
    "loss": ("P", "probability a datagram is dropped"),
    "delay": ("TIME", "added one-way delay, e.g. 20ms or 0.02s (a bare number is seconds)"),
    "jitter": ("TIME", "delay varies by this much (see --distribution)"),
    "distribution": ("NAME", "jitter distribution: uniform (delay +- jitter) or normal (sd = jitter)"),
    "duplicate": ("P", "probability a datagram is sent twice"),
    "reorder": ("P", "probability a datagram is held back so later ones overtake it"),
    "reorder_delay": ("TIME", "how much longer a reordered datagram is held back (default 10ms)"),
    "corrupt": ("P", "probability one random byte of a datagram is changed"),
    "truncate": ("BYTES", "datagrams longer than this are cut to this size (and still sent)"),
}


def parse_probability(text: str, option: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value <= 1.0:
        raise ConfigError(f"{option}: expected a probability between 0 and 1, got {text!r}")
    return value


def parse_duration(text: str, option: str) -> float:
    """Seconds from ``20ms``, ``0.02s`` or ``0.02`` (see :func:`loadgen.scenario.syntax.parse_duration`).

    Never negative.
    """
    value = parse_duration_text(text)
    if value is None or not math.isfinite(value):
        raise ConfigError(f"{option}: expected a time >= 0 like '20ms' or '0.5s', got {text!r}")
    return value


def parse_size(text: str, option: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ConfigError(f"{option}: expected a size in bytes >= 1, got {text!r}")
    return int(text)


def parse_address(text: str, option: str, *, any_port: bool = False) -> Address:
    """``HOST:PORT`` or ``[V6]:PORT`` with a literal IP (or ``localhost``); port 0 only if ``any_port``."""
    return parse_host_port(text, option, literal_ip=True, lowest_port=0 if any_port else 1)


def format_address(address: Address) -> str:
    return format_host_port(*address)


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "loss": parse_probability, "duplicate": parse_probability, "reorder": parse_probability,
    "corrupt": parse_probability, "delay": parse_duration, "jitter": parse_duration,
    "reorder_delay": parse_duration, "truncate": parse_size,
}


def impairments_from_options(options: Mapping[str, str | None]) -> tuple[Impairment, Impairment]:
    """``(up, down)`` from command-line text: ``loss`` sets both, ``up_loss`` / ``down_loss`` one.

    Raises :class:`ConfigError` naming the option.
    """
    chosen: dict[str, dict[str, Any]] = {"up": {}, "down": {}}
    for name in OPTIONS:
        for prefix, directions in (("", ("up", "down")), ("up_", ("up",)), ("down_", ("down",))):
            text = options.get(prefix + name)
            if text is None:
                continue
            option = "--" + (prefix + name).replace("_", "-")
            if name == "distribution":
                if text not in DISTRIBUTIONS:
                    raise ConfigError(f"{option}: expected one of {', '.join(DISTRIBUTIONS)}, got {text!r}")
                value: Any = text
            else:
                value = _PARSERS[name](text, option)
            for direction in directions:  # the one-direction options come later: they win
                chosen[direction][name] = value
    return Impairment(**chosen["up"]), Impairment(**chosen["down"])


def counters_line(direction: str, counters: Counters) -> str:
    return f"{direction}: " + ", ".join(f"{name} {value}" for name, value in counters.as_dict().items())

