"""Turn YAML nodes into checked Python values, with errors that point at the node.

The building blocks of :mod:`loadgen.scenario.loader`. A converter (:data:`Conv`) takes
``(ctx, node, key_path)`` and returns a value or raises :class:`ScenarioError`; a
:func:`section` is a table of them for one mapping. Here: the per-file context, the
messages, and mappings and lists; the scalar converters are :mod:`.scalars`. Values that look like key
material are never echoed in a message (see :func:`show`).
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from loadgen.scenario.errors import ScenarioError

STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(STD + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_ALLOWED_TAGS = _SCALAR_TAGS | {STD + "map", STD + "seq"}
TEXTUAL_TAGS = frozenset(STD + t for t in ("str", "int", "float"))  # scalars whose source text we may take
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


def optional(conv: Conv) -> Conv:
    """``conv``, or None for null."""

    def opt(ctx: Ctx, node: Node, path: str) -> Any:
        return None if node.tag == STD + "null" else conv(ctx, node, path)

    return opt



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
