"""Turn YAML nodes into checked Python values, with errors that point at the node.

The building blocks of :mod:`loadgen.scenario.loader`. A converter (:data:`Conv`) takes
``(ctx, node, key_path)`` and returns a value or raises :class:`ScenarioError`; a
:func:`section` is a table of them for one mapping. Values that look like key
material are never echoed in a message (see :func:`show`).
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import string as _string
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..credentials import Secret, check_regular, parse_hex
from ..errors import ConfigError
from ..syntax import parse_duration
from .errors import ScenarioError

STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(STD + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_ALLOWED_TAGS = _SCALAR_TAGS | {STD + "map", STD + "seq"}
_TEXTUAL = frozenset(STD + t for t in ("str", "int", "float"))  # scalars whose source text we may take
NAME = re.compile(r"[A-Za-z0-9_.-]+")
# All-hex "names" are refused: that is a key pasted where its variable's name belongs.
ENV_NAME = re.compile(r"(?![0-9a-fA-F]{16,}$)[A-Za-z_][A-Za-z0-9_]*")
_DURATION_TEXT = "a duration like '5s' or '250ms'"
_MAX_POOL = 65536  # a source address range larger than this is almost surely a typo
_MAX_WIDTH = 65535  # in a template's format spec: as large as any datagram, and no larger
#: Largest certificate, private key or CA bundle accepted (the Mozilla bundle is about 220 KiB).
PEM_FILE_CAP = 16 << 20
# A string like this is never echoed, wherever it appears: it is probably a key pasted in the wrong place.
# The leading blanks are taken by the class unless a 0x follows them: a separate \s* before it made
# blanks followed by a wrong character quadratic (the same strings match).
HEXISH = re.compile(r"(?:\s*0[xX])?[0-9a-fA-F:\s]{16,}")

Conv = Callable[["Ctx", Node, str], Any]


class Ctx:
    """Per-file state: where errors point and what relative paths are relative to."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.source = Path(os.path.abspath(file))
        self.base = self.source.parent
        self._constructor = SafeConstructor()

    def fail(self, node: Node, path: str, message: str) -> NoReturn:
        raise ScenarioError(self.file, node.start_mark.line + 1, path, message)

    def value(self, node: Node) -> Any:
        """The Python value of a scalar (only plain tags reach here); collections stay nodes."""
        if not isinstance(node, ScalarNode):
            return node
        if node.tag == STD + "timestamp":  # no key takes a date: `description: 2024-05-01` is text
            return node.value
        try:
            return self._constructor.construct_object(node)
        except (ValueError, yaml.YAMLError):  # defensive: the resolver's regexes should prevent this
            return node.value


@dataclass
class Fields:
    """The fields of one checked YAML mapping: converted values and the nodes they came from (for later errors)."""

    node: MappingNode
    path: str
    values: dict[str, Any]
    nodes: dict[str, Node]

    def at(self, key: str) -> tuple[Node, str]:
        """The node of ``key`` (or of the mapping when absent) and its key path."""
        return self.nodes.get(key, self.node), join(self.path, key)


def join(path: str, key: str) -> str:
    """``"ping"`` + ``"interval"`` -> ``"ping.interval"``; a key that looks like a key is masked."""
    key = "<not shown>" if HEXISH.fullmatch(key) else key
    return f"{path}.{key}" if path else key


def show(text: str, *, secret: bool = False) -> str:
    """``text`` quoted for a message, unless it is (or looks like) key material."""
    if secret or HEXISH.fullmatch(text):
        return f"a value of {len(text)} characters (not shown)"
    if not text:
        return "an empty string"
    return repr(text if len(text) <= 60 else text[:57] + "...")


def _describe(node: Node, *, secret: bool = False) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    tag = node.tag.removeprefix(STD)
    if tag == "str" or secret:
        return show(node.value, secret=secret)
    if tag == "bool":
        return f"{node.value} (a boolean)"
    return "null" if tag == "null" else str(node.value)


def expected(ctx: Ctx, node: Node, path: str, what: str, *, secret: bool = False) -> NoReturn:
    """Fail with "expected WHAT, got DESCRIPTION OF NODE" (``secret``: never show the value)."""
    ctx.fail(node, path, f"expected {what}, got {_describe(node, secret=secret)}")


def _bounds(kind: str, lo: float | None, hi: float | None, above: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    return f"{kind} {'>' if above else '>='} {lo}" if lo is not None else kind


# --- scalar converters ------------------------------------------------------------------


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
        if node.tag not in _TEXTUAL or node.value not in options:
            expected(ctx, node, path, what)
        return str(node.value)  # a scalar's source text

    return conv


def boolean(ctx: Ctx, node: Node, path: str) -> bool:
    """true or false."""
    v = ctx.value(node)
    if not isinstance(v, bool):
        expected(ctx, node, path, "true or false")
    return v


def optional(conv: Conv) -> Conv:
    """``conv``, or None for null."""

    def opt(ctx: Ctx, node: Node, path: str) -> Any:
        return None if node.tag == STD + "null" else conv(ctx, node, path)

    return opt


def hex_bytes(*, secret: bool) -> Conv:
    """Hex bytes; an unquoted all-digit key is read by YAML as an int, so take the source text."""

    def conv(ctx: Ctx, node: Node, path: str) -> Secret | bytes:
        if node.tag not in _TEXTUAL:
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
    """A regular expression, compiled now (over bytes) so that a bad one fails at load time."""
    text = string()(ctx, node, path)
    try:
        return re.compile(text.encode())  # replies are bytes
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


# --- collections --------------------------------------------------------------------------


def items(ctx: Ctx, node: Node, path: str) -> list[tuple[Node, str]]:
    """The (node, key path) of each list item; null is an empty list."""
    if node.tag == STD + "null":
        return []
    if not isinstance(node, SequenceNode):
        expected(ctx, node, path, "a list")
    return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]


def list_of(item: Conv) -> Conv:
    """A list (or null), each item converted by ``item``; a tuple."""

    def conv(ctx: Ctx, node: Node, path: str) -> tuple[Any, ...]:
        return tuple(item(ctx, n, p) for n, p in items(ctx, node, path))

    return conv


def _check_fields(ctx: Ctx, node: Node, path: str, fields: dict[str, Conv], required: Iterable[str]) -> Fields:
    if not isinstance(node, MappingNode):
        expected(ctx, node, path, "a mapping")
    rec = Fields(node, path, {}, {})
    for key_node, value_node in node.value:
        if not (isinstance(key_node, ScalarNode) and key_node.tag == STD + "str"):
            expected(ctx, key_node, path, "a string key")
        key = key_node.value
        where = join(path, key)
        if key in rec.nodes:
            ctx.fail(key_node, where, "duplicate key")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "expected one of " + ", ".join(fields)
            ctx.fail(key_node, where, f"unknown key {show(key)}, {hint}")
        rec.nodes[key] = value_node
        rec.values[key] = fields[key](ctx, value_node, where)
    for key in required:
        if key not in rec.nodes:
            ctx.fail(node, join(path, key), "required key is missing")
    return rec


def section(fields: dict[str, Conv], required: Iterable[str] = (), build: Any = None) -> Conv:
    """A mapping with exactly the keys of ``fields`` (unknown keys fail with a "did you mean" hint).

    ``build`` is a dataclass (called with the converted values), ``f(ctx, record)`` for
    cross-field checks, or None to return the :class:`Fields` itself.
    """

    def conv(ctx: Ctx, node: Node, path: str) -> Any:
        rec = _check_fields(ctx, node, path, fields, required)
        if build is None:
            return rec
        return build(**rec.values) if isinstance(build, type) else build(ctx, rec)

    return conv


def exactly_one(ctx: Ctx, rec: Fields, names: tuple[str, ...]) -> str:
    """The one key of ``names`` present in ``rec``; fails when none or several are."""
    given = [k for k in names if k in rec.nodes]
    if len(given) != 1:
        node = rec.nodes[given[1]] if given else rec.node
        got = " and ".join(given) if given else "none"
        ctx.fail(node, rec.path, f"expected exactly one of {', '.join(names)}, got {got}")
    return given[0]


def check_tags(ctx: Ctx, root: Node) -> None:
    """Reject every non-plain tag up front, wherever it is (nothing is ever constructed from one)."""
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # aliases share nodes; also stops recursive anchors
            continue
        seen.add(id(node))
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace(STD, "!!")
            ctx.fail(node, path, f"unsupported YAML tag {tag!r} (scenarios are plain data)")
        if isinstance(node, SequenceNode):
            children = [(c, f"{path}[{i}]") for i, c in enumerate(node.value)]
        elif isinstance(node, MappingNode):
            # Only a scalar key names a path: str() of a collection key would expand every alias
            # under it (nine levels of nine references: 387 million leaves); _check_fields refuses it later.
            children = [p for k, val in node.value
                        for p in ((k, path), (val, join(path, k.value if isinstance(k, ScalarNode) else "<key>")))]
        else:
            children = []
        stack.extend(reversed(children))
