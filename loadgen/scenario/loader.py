"""Scenario YAML -> validated :class:`~loadgen.scenario.model.Scenario`.

``yaml.compose`` with the SafeLoader builds a node tree without constructing any
object, so a tag like ``!!python/object/apply`` can never run code, and every node
keeps its line number for error messages. Each section is a table of converters;
a converter takes ``(ctx, node, key_path)`` and returns a checked value or raises
:class:`ScenarioError`. Cross-field checks run in the section's ``build`` function.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import yaml
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from ..credentials import KeyStore, Secret, key_from_env, key_from_file, parse_hex
from ..errors import ConfigError
from . import model as m
from .errors import ScenarioError

_STD = "tag:yaml.org,2002:"
_SCALAR_TAGS = frozenset(_STD + t for t in ("str", "int", "float", "bool", "null", "timestamp"))
_ALLOWED_TAGS = _SCALAR_TAGS | {_STD + "map", _STD + "seq"}
_TEXTUAL = frozenset(_STD + t for t in ("str", "int", "float"))  # scalars whose source text we may take
_NAME = re.compile(r"[A-Za-z0-9_.-]+")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_DURATION_TEXT = "a duration like '5s' or '250ms'"
_MAX_POOL = 65536  # a source address range larger than this is almost surely a typo

Conv = Callable[["_Ctx", Node, str], Any]


class _Ctx:
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
        try:
            return self._constructor.construct_object(node)
        except (ValueError, yaml.YAMLError):  # e.g. an impossible date such as 2024-02-30
            return node.value


@dataclass
class _Record:
    """A checked mapping: converted values and the nodes they came from (for later errors)."""

    node: MappingNode
    path: str
    values: dict[str, Any]
    nodes: dict[str, Node]

    def at(self, key: str) -> tuple[Node, str]:
        """The node of ``key`` (or of the mapping when absent) and its key path."""
        return self.nodes.get(key, self.node), _join(self.path, key)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _describe(node: Node, *, secret: bool = False) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    if secret:  # never echo what may be key material
        return f"a value of {len(node.value)} characters (not shown)"
    tag = node.tag.removeprefix(_STD)
    if tag == "str":
        text = node.value if len(node.value) <= 60 else node.value[:57] + "..."
        return repr(text) if text else "an empty string"
    return {"null": "null", "bool": f"{node.value} (a boolean)"}.get(tag, node.value)


def _expected(ctx: _Ctx, node: Node, path: str, what: str, *, secret: bool = False) -> NoReturn:
    ctx.fail(node, path, f"expected {what}, got {_describe(node, secret=secret)}")


def _bounds(kind: str, lo: float | None, hi: float | None, above: bool = False) -> str:
    if lo is not None and hi is not None:
        return f"{kind} from {lo} to {hi}"
    return f"{kind} {'>' if above else '>='} {lo}" if lo is not None else kind


# --- scalar converters ------------------------------------------------------------------


def _integer(lo: int | None = None, hi: int | None = None) -> Conv:
    what = _bounds("an integer", lo, hi)

    def conv(ctx: _Ctx, node: Node, path: str) -> int:
        v = ctx.value(node)
        if type(v) is not int or (lo is not None and v < lo) or (hi is not None and v > hi):
            _expected(ctx, node, path, what)
        return v

    return conv


def _number(lo: float | None = None, hi: float | None = None, *, above: bool = False) -> Conv:
    what = _bounds("a number", lo, hi, above)

    def conv(ctx: _Ctx, node: Node, path: str) -> float:
        v = ctx.value(node)
        if type(v) not in (int, float) or not math.isfinite(v):
            _expected(ctx, node, path, what)
        if (lo is not None and (v <= lo if above else v < lo)) or (hi is not None and v > hi):
            _expected(ctx, node, path, what)
        return float(v)

    return conv


def _duration(*, zero_ok: bool = False) -> Conv:
    def conv(ctx: _Ctx, node: Node, path: str) -> float:
        v = ctx.value(node)
        match = _DURATION.fullmatch(v) if isinstance(v, str) else None
        if match:
            v = float(match[1]) * _UNITS[match[2]]
        elif type(v) not in (int, float) or not math.isfinite(v):
            _expected(ctx, node, path, _DURATION_TEXT)
        if v < 0 or (v == 0 and not zero_ok):
            _expected(ctx, node, path, f"a duration {'>=' if zero_ok else '>'} 0")
        return float(v)

    return conv


def _string(
    pattern: re.Pattern[str] | None = None, what: str = "a string", *, empty_ok: bool = False
) -> Conv:
    def conv(ctx: _Ctx, node: Node, path: str) -> str:
        v = ctx.value(node)
        if not isinstance(v, str) or (not v and not empty_ok) or (pattern and not pattern.fullmatch(v)):
            _expected(ctx, node, path, what)
        return v

    return conv


def _choice(*options: Any) -> Conv:
    what = "one of " + ", ".join(map(repr, options))

    def conv(ctx: _Ctx, node: Node, path: str) -> Any:
        v = ctx.value(node)
        if type(v) is not type(options[0]) or v not in options:
            _expected(ctx, node, path, what)
        return v

    return conv


def _version(*options: str) -> Conv:
    """A version like "1.2": unquoted, YAML reads it as a float, so take the source text."""
    what = "one of " + ", ".join(f'"{o}"' for o in options)

    def conv(ctx: _Ctx, node: Node, path: str) -> str:
        if node.tag not in _TEXTUAL or node.value not in options:
            _expected(ctx, node, path, what)
        return node.value

    return conv


def _boolean(ctx: _Ctx, node: Node, path: str) -> bool:
    v = ctx.value(node)
    if not isinstance(v, bool):
        _expected(ctx, node, path, "true or false")
    return v


def _optional(conv: Conv) -> Conv:
    def opt(ctx: _Ctx, node: Node, path: str) -> Any:
        return None if node.tag == _STD + "null" else conv(ctx, node, path)

    return opt


def _hex(*, secret: bool) -> Conv:
    """Hex bytes; an unquoted all-digit key is read by YAML as an int, so take the source text."""

    def conv(ctx: _Ctx, node: Node, path: str) -> Secret | bytes:
        if node.tag not in _TEXTUAL:
            _expected(ctx, node, path, "a hex string", secret=secret)
        try:
            value = parse_hex(node.value, where=path)
        except ConfigError:
            _expected(ctx, node, path, "a hex string", secret=secret)
        return value if secret else value.value

    return conv


def _file(ctx: _Ctx, node: Node, path: str) -> Path:
    """An existing file, relative to the scenario's directory; stored absolute."""
    text = _string()(ctx, node, path)
    resolved = Path(os.path.abspath(ctx.base / os.path.expanduser(text)))
    if not resolved.is_file():
        ctx.fail(node, path, f"expected an existing file, got {text!r} (not found: {resolved})")
    return resolved


def _template(**sample: Any) -> Conv:
    """A str.format template, checked by formatting it with sample values."""
    known = ", ".join(sample)

    def conv(ctx: _Ctx, node: Node, path: str) -> str:
        text = _string()(ctx, node, path)
        try:
            text.format(**sample)
        except KeyError as exc:
            ctx.fail(node, path, f"unknown template field {{{exc.args[0]}}} (known fields: {known})")
        except (IndexError, ValueError, AttributeError, TypeError) as exc:
            ctx.fail(node, path, f"bad template {text!r}: {exc} (known fields: {known})")
        return text

    return conv


def _regex(ctx: _Ctx, node: Node, path: str) -> re.Pattern[bytes]:
    text = _string()(ctx, node, path)
    try:
        return re.compile(text.encode())  # replies are bytes
    except re.error as exc:
        ctx.fail(node, path, f"bad regular expression {text!r}: {exc}")


def _addresses(ctx: _Ctx, node: Node, path: str) -> tuple[str, ...]:
    """IPv4/IPv6 literals or ranges "first-last", as one string or a list; expanded in order."""
    items = [(node, path)] if isinstance(node, ScalarNode) else _items(ctx, node, path)
    what = "an IP address or a range like '127.0.0.1-127.0.0.20'"
    pool: list[str] = []
    for item, where in items:
        text = _string(what=what)(ctx, item, where)
        try:
            first, _, last = text.partition("-")
            lo, hi = ipaddress.ip_address(first.strip()), ipaddress.ip_address((last or first).strip())
        except ValueError:
            _expected(ctx, item, where, what)
        if lo.version != hi.version or hi < lo or int(hi) - int(lo) >= _MAX_POOL:
            _expected(ctx, item, where, f"an ascending range of one IP version (at most {_MAX_POOL})")
        pool.extend(str(ipaddress.ip_address(i)) for i in range(int(lo), int(hi) + 1))
    return tuple(pool)


_PORT = _integer(1, 65535)
_HOST = _string(what="a host name or IP address")


# --- collections --------------------------------------------------------------------------


def _items(ctx: _Ctx, node: Node, path: str) -> list[tuple[Node, str]]:
    if node.tag == _STD + "null":
        return []
    if not isinstance(node, SequenceNode):
        _expected(ctx, node, path, "a list")
    return [(item, f"{path}[{i}]") for i, item in enumerate(node.value)]


def _list(item: Conv) -> Conv:
    def conv(ctx: _Ctx, node: Node, path: str) -> tuple[Any, ...]:
        return tuple(item(ctx, n, p) for n, p in _items(ctx, node, path))

    return conv


def _record(ctx: _Ctx, node: Node, path: str, fields: dict[str, Conv], required: Iterable[str]) -> _Record:
    if not isinstance(node, MappingNode):
        _expected(ctx, node, path, "a mapping")
    rec = _Record(node, path, {}, {})
    for key_node, value_node in node.value:
        if not (isinstance(key_node, ScalarNode) and key_node.tag == _STD + "str"):
            _expected(ctx, key_node, path, "a string key")
        key = key_node.value
        where = _join(path, key)
        if key in rec.nodes:
            ctx.fail(key_node, where, "duplicate key")
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"did you mean {close[0]!r}?" if close else "expected one of " + ", ".join(fields)
            ctx.fail(key_node, where, f"unknown key {key!r}, {hint}")
        rec.nodes[key] = value_node
        rec.values[key] = fields[key](ctx, value_node, where)
    for key in required:
        if key not in rec.nodes:
            ctx.fail(node, _join(path, key), "required key is missing")
    return rec


def _section(fields: dict[str, Conv], required: Iterable[str] = (), build: Any = None) -> Conv:
    """A mapping converter; ``build`` is a dataclass (fed the values) or ``f(ctx, record)``."""

    def conv(ctx: _Ctx, node: Node, path: str) -> Any:
        rec = _record(ctx, node, path, fields, required)
        if build is None:
            return rec
        return build(**rec.values) if isinstance(build, type) else build(ctx, rec)

    return conv


def _exactly_one(ctx: _Ctx, rec: _Record, names: tuple[str, ...]) -> str:
    given = [k for k in names if k in rec.nodes]
    if len(given) != 1:
        node = rec.nodes[given[1]] if given else rec.node
        got = " and ".join(given) if given else "none"
        ctx.fail(node, rec.path, f"expected exactly one of {', '.join(names)}, got {got}")
    return given[0]


# --- sections with cross-field rules ------------------------------------------------------


def _load_secret(ctx: _Ctx, rec: _Record, kind: str) -> tuple[Secret, str | None]:
    """Resolve an inline / env / file key source now, so a bad one fails at load time."""
    value = rec.values[kind]
    if isinstance(value, Secret):
        return value, None
    node, path = rec.at(kind)
    try:
        if kind.endswith("_env"):
            return key_from_env(value), value
        return key_from_file(value), str(value)
    except ConfigError as exc:
        ctx.fail(node, path, exc.args[0])


def _build_psk(ctx: _Ctx, rec: _Record) -> m.PskConfig:
    source = _exactly_one(ctx, rec, ("key", "key_env", "key_file", "derive", "csv"))
    v = rec.values
    common = {"identity": v.get("identity", "device-{n:05d}"), "hint": v.get("hint", "loadgen")}
    if source == "derive":
        drec: _Record = rec.values["derive"]
        kind = _exactly_one(ctx, drec, ("master", "master_env", "master_file"))
        master, location = _load_secret(ctx, drec, kind)
        length = drec.values.get("length", 16)
        store = KeyStore(master=master, derived_length=length)
        extra = {"location": location, "master_source": kind, "length": length}
        return m.PskConfig(**common, source=source, store=store, **extra)
    if source == "csv":
        node, path = rec.at("csv")
        try:
            store = KeyStore.from_csv(rec.values["csv"])
        except ConfigError as exc:
            ctx.fail(node, path, exc.args[0])
        first = common["identity"].format(n=0)
        if store.key_for(first.encode()) is None:  # catches a template that does not match the file
            ctx.fail(node, path, f"identity {first!r} of client 0 is not in the CSV file")
        return m.PskConfig(**common, source=source, store=store, location=str(rec.values["csv"]))
    key, location = _load_secret(ctx, rec, source)
    return m.PskConfig(**common, source=source, store=KeyStore(shared=key), location=location)


def _build_tls(ctx: _Ctx, rec: _Record) -> m.TlsConfig:
    tls = m.TlsConfig(**rec.values)
    if float(tls.min_version) > float(tls.max_version):
        ctx.fail(*rec.at("max_version"), f"expected a version >= min_version {tls.min_version}")
    if tls.key_file and not tls.cert_file:
        ctx.fail(*rec.at("key_file"), "key_file needs cert_file")
    return tls


def _build_payload(ctx: _Ctx, rec: _Record) -> m.Payload:
    kind = _exactly_one(ctx, rec, ("text", "hex"))
    v = rec.values
    if kind == "text":
        for key in ("seq_offset", "seq_width"):
            if key in v:
                ctx.fail(*rec.at(key), "only allowed with hex (put {seq} in the text instead)")
        return m.Payload(text=v["text"])
    if "seq_width" in v and "seq_offset" not in v:
        ctx.fail(*rec.at("seq_width"), "seq_width needs seq_offset")
    offset, width, size = v.get("seq_offset"), v.get("seq_width", 2), len(v["hex"])
    if offset is not None and offset + width > size:
        what = f"the {width}-byte sequence number inside the {size}-byte payload"
        got = f"offset {offset} (bytes {offset}..{offset + width - 1})"
        ctx.fail(*rec.at("seq_offset"), f"expected {what}, got {got}")
    return m.Payload(text=None, data=v["hex"], seq_offset=offset, seq_width=width)


_EXPECT_MAP = _section({"regex": _regex, "prefix": _hex(secret=False)})


def _expect(ctx: _Ctx, node: Node, path: str) -> m.Expect:
    if isinstance(node, MappingNode):
        rec = _EXPECT_MAP(ctx, node, path)
        kind = _exactly_one(ctx, rec, ("regex", "prefix"))
        return m.Expect(kind=kind, **{kind: rec.values[kind]})
    if ctx.value(node) not in ("any", "echo"):
        _expected(ctx, node, path, "'any', 'echo', {regex: ...} or {prefix: hex}")
    return m.Expect(kind=ctx.value(node))


_TARGET = _section(
    {
        "name": _string(_NAME, "a name of letters, digits, '_', '.' and '-'"),
        "host": _HOST,
        "port": _PORT,
        "protocol": _choice("dtls", "tls"),
        "weight": _number(0, above=True),
        "server_name": _optional(_string()),
    },
    required=("name", "host", "port"),
)
_CLIENTS = _section(
    {
        "count": _integer(1),
        "spawn_rate": _number(0, above=True),
        "connect": _choice("one", "all"),
        "source_addresses": _addresses,
    }
)
_STAGE = _section(
    {"duration": _duration(), "clients": _integer(0), "spawn_rate": _number(0, above=True)},
    required=("duration", "clients"),
)
_DERIVE = _section(
    {
        "master": _hex(secret=True),
        "master_env": _string(_ENV_NAME, "an environment variable name"),
        "master_file": _file,
        "length": _integer(1, 32),
    }
)
_PSK = _section(
    {
        "identity": _template(n=0),
        "hint": _string(empty_ok=True),
        "key": _hex(secret=True),
        "key_env": _string(_ENV_NAME, "an environment variable name"),
        "key_file": _file,
        "derive": _DERIVE,
        "csv": _file,
    },
    build=_build_psk,
)
_DTLS = _section(
    {
        "version": _version("1.2"),
        "ciphers": _string(),
        "mtu": _integer(256, 65507),
        "handshake_timeout": _duration(),
        "max_retransmits": _integer(0),
    },
    build=m.DtlsConfig,
)
_TLS = _section(
    {
        "min_version": _version("1.2", "1.3"),
        "max_version": _version("1.2", "1.3"),
        "ciphers": _optional(_string()),
        "resumption": _boolean,
        "ca_file": _optional(_file),
        "cert_file": _optional(_file),
        "key_file": _optional(_file),
        "verify": _choice("none", "peer"),
        "handshake_timeout": _duration(),
    },
    build=_build_tls,
)
_PAYLOAD = _section(
    {
        "text": _template(name="gw1-0", seq=0, n=0, target="gw1"),
        "hex": _hex(secret=False),
        "seq_offset": _integer(0),
        "seq_width": _choice(1, 2, 4, 8),
    },
    build=_build_payload,
)
_PING = _section(
    {
        "interval": _duration(),
        "jitter": _number(0, 1),
        "timeout": _optional(_duration()),
        "payload": _PAYLOAD,
        "expect": _expect,
    },
    build=m.PingConfig,
)
_RECONNECT = _section(
    {
        "policy": _choice("never", "on-failure", "always"),
        "delay": _duration(zero_ok=True),
        "max_attempts": _optional(_integer(1)),
    },
    build=m.ReconnectConfig,
)
_THRESHOLDS = _section(
    {
        "handshake_p95": _optional(_duration()),
        "handshake_p99": _optional(_duration()),
        "ping_p99": _optional(_duration()),
        "error_ratio": _optional(_number(0, 1)),
        "min_handshake_rate": _optional(_number(0)),
    },
    build=m.Thresholds,
)
_OUTPUTS = _section(
    {
        "results_dir": lambda ctx, node, path: Path(_string()(ctx, node, path)),  # resolved at run time
        "csv": _boolean,
        "json": _boolean,
        "report": _boolean,
        "prometheus": _optional(_section({"host": _HOST, "port": _PORT}, build=m.PrometheusConfig)),
        "statsd": _optional(
            _section({"host": _HOST, "port": _PORT, "prefix": _string()}, build=m.StatsdConfig)
        ),
    },
    build=m.Outputs,
)


def _build_scenario(ctx: _Ctx, rec: _Record) -> m.Scenario:
    v = rec.values
    targets: list[m.Target] = []
    for trec in v.get("targets", ()):
        if any(t.name == trec.values["name"] for t in targets):
            ctx.fail(*trec.at("name"), f"duplicate target name {trec.values['name']!r}")
        targets.append(m.Target(**trec.values))

    stage_recs: tuple[_Record, ...] = v.get("stages", ())
    crec: _Record | None = v.get("clients")
    cv = crec.values if crec else {}
    count = cv.get("count")
    if count is None:
        if not stage_recs:
            node = crec.node if crec else rec.node
            ctx.fail(node, "clients.count", "required key is missing (give clients.count or stages)")
        count = max(1, *(s.values["clients"] for s in stage_recs))
    clients = m.Clients(**{**cv, "count": count, "spawn_rate": cv.get("spawn_rate", float(count))})
    stages = tuple(m.Stage(**{"spawn_rate": clients.spawn_rate, **s.values}) for s in stage_recs)

    run_time = v.get("run_time", sum(s.duration for s in stages))
    if not run_time:
        ctx.fail(rec.node, "run_time", "required key is missing (give run_time or stages)")
    if "psk" not in v and (not targets or any(t.protocol == "dtls" for t in targets)):
        ctx.fail(rec.node, "psk", "required key is missing (DTLS clients need a pre-shared key)")

    sections = ("dtls", "tls", "ping", "reconnect", "thresholds", "outputs")
    return m.Scenario(
        name=v["name"],
        description=v.get("description", ""),
        targets=tuple(targets),
        clients=clients,
        stages=stages,
        run_time=run_time,
        psk=v.get("psk"),
        source=ctx.source,
        **{k: v[k] for k in sections if k in v},
    )


_SCENARIO = _section(
    {
        "name": _string(_NAME, "a name of letters, digits, '_', '.' and '-'"),
        "description": _string(empty_ok=True),
        "targets": _list(_TARGET),
        "clients": _CLIENTS,
        "stages": _list(_STAGE),
        "run_time": _duration(),
        "psk": _PSK,
        "dtls": _DTLS,
        "tls": _TLS,
        "ping": _PING,
        "reconnect": _RECONNECT,
        "thresholds": _THRESHOLDS,
        "outputs": _OUTPUTS,
    },
    required=("name",),
    build=_build_scenario,
)


# --- entry points ---------------------------------------------------------------------


def _check_tags(ctx: _Ctx, root: Node) -> None:
    """Reject every non-plain tag up front, wherever it is (nothing is ever constructed from one)."""
    seen: set[int] = set()
    stack: list[tuple[Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:  # aliases share nodes; also stops recursive anchors
            continue
        seen.add(id(node))
        if node.tag not in _ALLOWED_TAGS:
            tag = node.tag.replace(_STD, "!!")
            ctx.fail(node, path, f"unsupported YAML tag {tag!r} (scenarios are plain data)")
        if isinstance(node, SequenceNode):
            children = [(c, f"{path}[{i}]") for i, c in enumerate(node.value)]
        elif isinstance(node, MappingNode):
            children = [p for k, val in node.value for p in ((k, path), (val, _join(path, str(k.value))))]
        else:
            children = []
        stack.extend(reversed(children))


def parse_scenario(text: str, filename: str) -> m.Scenario:
    """Validate scenario YAML ``text``; ``filename`` is used in errors and to resolve relative paths."""
    ctx = _Ctx(filename)
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "syntax error"
        if "'\\t'" in problem:
            problem += " (indent with spaces, not tabs)"
        line = mark.line + 1 if mark else 0
        raise ScenarioError(filename, line, "", f"malformed YAML: {problem}") from None
    except yaml.YAMLError as exc:  # ReaderError: a character YAML does not allow
        position = getattr(exc, "position", None)
        line = text.count("\n", 0, position) + 1 if position is not None else 0
        raise ScenarioError(filename, line, "", f"malformed YAML: {exc}") from None
    if root is None:
        raise ScenarioError(filename, 1, "", "expected a mapping of scenario keys, got an empty file")
    _check_tags(ctx, root)
    if not isinstance(root, MappingNode):
        _expected(ctx, root, "", "a mapping of scenario keys (name, clients, ...) at the top level")
    return _SCENARIO(ctx, root, "")


def load_scenario(path: str | os.PathLike[str]) -> m.Scenario:
    """Read and validate the scenario file at ``path``; every problem raises :class:`ScenarioError`."""
    filename = os.fspath(path)
    try:
        data = Path(filename).read_bytes()
    except OSError as exc:
        raise ScenarioError(filename, 0, "", f"cannot read the file: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ScenarioError(filename, line, "", "not UTF-8 text") from None
    return parse_scenario(text, filename)
