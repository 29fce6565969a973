"""Converters for scalar values of a scenario: numbers, durations, strings, files, templates, addresses.

Each is a :data:`~loadgen.scenario.convert.Conv` (or makes one): ``(ctx, node, key_path)`` to a
checked value, or a :class:`~loadgen.scenario.errors.ScenarioError` pointing at the node. The
mappings and lists they sit in are :mod:`loadgen.scenario.convert`'s.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import string as _string
from pathlib import Path
from typing import Any

from yaml.nodes import Node, ScalarNode

from loadgen.protocol.credentials import Secret, check_regular, parse_hex
from loadgen.protocol.errors import ConfigError
from loadgen.scenario.convert import HEXISH, TEXTUAL_TAGS, Conv, Ctx, expected, items, show
from loadgen.scenario.syntax import parse_duration

NAME = re.compile(r"[A-Za-z0-9_.-]+")
# All-hex "names" are refused: that is a key pasted where its variable's name belongs.
ENV_NAME = re.compile(r"(?![0-9a-fA-F]{16,}$)[A-Za-z_][A-Za-z0-9_]*")
_DURATION_TEXT = "a duration like '5s' or '250ms'"
_MAX_POOL = 65536  # a source address range larger than this is almost surely a typo
_MAX_WIDTH = 65535  # in a template's format spec: as large as any datagram, and no larger


def _bounds(kind: str, lo: float | None, hi: float | None, above: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    return f"{kind} {'>' if above else '>='} {lo}" if lo is not None else kind


def integer(lo: int | None = None, hi: int | None = None) -> Conv:
    """An int (not a bool) within the given bounds."""
    what = _bounds("an integer", lo, hi)

    def conv(ctx: Ctx, node: Node, path: str) -> int:
        v = ctx.value(node)
        if type(v) is not int or (lo is not None and v < lo) or (hi is not None and v > hi):
            expected(ctx, node, path, what)
        return v

    return conv


def number(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Conv:
    """A finite int or float, as float; ``above``: strictly greater than ``lo``."""
    what = _bounds("a number", lo, hi, above)

    def conv(ctx: Ctx, node: Node, path: str) -> float:
        v = ctx.value(node)
        if type(v) not in (int, float) or not math.isfinite(v):
            expected(ctx, node, path, what)
        if (lo is not None and (v <= lo if above else v < lo)) or (hi is not None and v > hi):
            expected(ctx, node, path, what)
        return float(v)

    return conv


def duration(*, zero_ok: bool = False) -> Conv:
    """Seconds as float, from a number or a string like "30s", "250ms", "2m", "1h30m"; > 0 unless ``zero_ok``."""

    def conv(ctx: Ctx, node: Node, path: str) -> float:
        v = ctx.value(node)
        if isinstance(v, str):
            v = parse_duration(v)
        if type(v) not in (int, float) or not math.isfinite(v):
            expected(ctx, node, path, _DURATION_TEXT)
        if v < 0 or (v == 0 and not zero_ok):
            expected(ctx, node, path, f"a duration {'>=' if zero_ok else '>'} 0")
        return float(v)

    return conv


def string(pattern: re.Pattern[str] | None = None, what: str = "a string", *, empty_ok: bool = False) -> Conv:
    """A YAML string (not a number or bool), optionally matching ``pattern`` in full."""

    def conv(ctx: Ctx, node: Node, path: str) -> str:
        v = ctx.value(node)
        if not isinstance(v, str) or (not v and not empty_ok) or (pattern and not pattern.fullmatch(v)):
            expected(ctx, node, path, what)
        return v

    return conv


def choice(*options: Any) -> Conv:
    """One of ``options`` (all of one type)."""
    what = "one of " + ", ".join(map(repr, options))

    def conv(ctx: Ctx, node: Node, path: str) -> Any:
        v = ctx.value(node)
        if type(v) is not type(options[0]) or v not in options:
            expected(ctx, node, path, what)
        return v

    return conv


def version(*options: str) -> Conv:
    """A version like "1.2": unquoted, YAML reads it as a float, so take the source text."""
    what = "one of " + ", ".join(f'"{o}"' for o in options)

    def conv(ctx: Ctx, node: Node, path: str) -> str:
        if node.tag not in TEXTUAL_TAGS or node.value not in options:
            expected(ctx, node, path, what)
        return str(node.value)  # a scalar's source text

    return conv


def boolean(ctx: Ctx, node: Node, path: str) -> bool:
    """true or false."""
    v = ctx.value(node)
    if not isinstance(v, bool):
        expected(ctx, node, path, "true or false")
    return v


def hex_bytes(*, secret: bool) -> Conv:
    """Hex bytes; an unquoted all-digit key is read by YAML as an int, so take the source text."""

    def conv(ctx: Ctx, node: Node, path: str) -> Secret | bytes:
        if node.tag not in TEXTUAL_TAGS:
            expected(ctx, node, path, "a hex string", secret=secret)
        try:
            value = parse_hex(node.value, where=path)
        except ConfigError:
            expected(ctx, node, path, "a hex string", secret=secret)
        return value if secret else value.value

    return conv


def regular_file(cap: int, what: str) -> Conv:
    """An existing regular file of at most ``cap`` bytes, relative to the scenario's directory;
    stored absolute. Checked with ``stat`` alone: a device or a FIFO is never opened here."""

    def conv(ctx: Ctx, node: Node, path: str) -> Path:
        text = string()(ctx, node, path)
        resolved = Path(os.path.abspath(ctx.base / os.path.expanduser(text)))
        shown = "it" if HEXISH.fullmatch(text) else resolved
        try:
            info = os.stat(resolved)
        except FileNotFoundError:
            ctx.fail(node, path, f"expected an existing file, got {show(text)} (not found: {shown})")
        except OSError as exc:
            ctx.fail(node, path, f"expected an existing file, got {show(text)} ({shown}: {exc.strerror})")
        problem = check_regular(info, cap, what)
        if problem:
            ctx.fail(node, path, f"{show(text)}: {problem}")
        return resolved

    return conv


def template(**sample: Any) -> Conv:
    """A str.format template, checked by formatting it with sample values."""
    known = ", ".join(sample)

    def conv(ctx: Ctx, node: Node, path: str) -> str:
        text: str = string()(ctx, node, path)
        try:
            for _, _, spec, _ in _string.Formatter().parse(text):
                # Checked before formatting: "{n:>9999999999}" would allocate 10 GB to check.
                if spec and any(int(width) > _MAX_WIDTH for width in re.findall(r"\d+", spec)):
                    ctx.fail(node, path, f"bad template {show(text)}: a width or precision over {_MAX_WIDTH}")
            text.format(**sample)
        except KeyError as exc:
            ctx.fail(node, path, f"unknown template field {{{exc.args[0]}}} (known fields: {known})")
        except (IndexError, ValueError, AttributeError, TypeError) as exc:
            ctx.fail(node, path, f"bad template {show(text)}: {exc} (known fields: {known})")
        return text

    return conv


def regex(ctx: Ctx, node: Node, path: str) -> re.Pattern[bytes]:
    """A regular expression, compiled now (over bytes) so that a bad one fails at load time.

    DOTALL: replies are bytes, often binary, and ``.`` must match every byte, 0x0a included
    (without it a binary reply whose sequence number is 10 failed as ``bad-reply``)."""
    text = string()(ctx, node, path)
    try:
        return re.compile(text.encode(), re.DOTALL)  # replies are bytes
    except re.error as exc:
        ctx.fail(node, path, f"bad regular expression {show(text)}: {exc}")


def addresses(ctx: Ctx, node: Node, path: str) -> tuple[str, ...]:
    """IPv4/IPv6 literals or ranges "first-last", as one string or a list; expanded in order."""
    entries = [(node, path)] if isinstance(node, ScalarNode) else items(ctx, node, path)
    what = "an IP address or a range like '127.0.0.1-127.0.0.20'"
    pool: list[str] = []
    for item, where in entries:
        text = string(what=what)(ctx, item, where)
        try:
            first, _, last = text.partition("-")
            lo, hi = ipaddress.ip_address(first.strip()), ipaddress.ip_address((last or first).strip())
        except ValueError:
            expected(ctx, item, where, what)
        if lo.version != hi.version or not 0 <= int(hi) - int(lo) < _MAX_POOL:
            expected(ctx, item, where, f"an ascending range of one IP version (at most {_MAX_POOL})")
        if len(pool) + int(hi) - int(lo) + 1 > _MAX_POOL:  # checked before expanding: many ranges add up
            ctx.fail(item, where, f"expected at most {_MAX_POOL} source addresses in all, got more by this range")
        pool.extend(str(type(lo)(i)) for i in range(int(lo), int(hi) + 1))  # keep v6 as v6
    return tuple(pool)


PORT = integer(1, 65535)
HOST = string(what="a host name or IP address")
