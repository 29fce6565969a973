"""The traffic sections of a scenario: ``ping``, ``requests`` (request steps, plain or CoAP) and ``coap``.

Part of :mod:`loadgen.scenario.loader` (the same tables of converters, the same located
errors), kept apart because request steps carry their own cross-field rules: what an
``expect`` may check depends on the step's payload (a sequence number echoed needs a binary
payload that carries one; a response code needs a CoAP request), and CoAP requests need
DTLS targets (checked by :func:`check_request_targets` once the targets are known).
"""

from __future__ import annotations

import re
from dataclasses import replace

from yaml.nodes import MappingNode, Node, ScalarNode

from loadgen.scenario import model as m
from loadgen.scenario.convert import (
    STD,
    TEXTUAL_TAGS,
    Ctx,
    Fields,
    exactly_one,
    expected,
    items,
    join,
    list_of,
    optional,
    section,
)
from loadgen.scenario.scalars import (
    boolean,
    choice,
    duration,
    hex_bytes,
    integer,
    number,
    regex,
    string,
    template,
)

#: The sample fields a payload or CoAP text template is checked with.
_FIELDS = {"name": "gw1-0", "seq": 0, "n": 0, "target": "gw1"}
#: A CoAP response code: class 2 (success), 4 (client error) or 5 (server error), detail 00..31.
_CODE = re.compile(r"[245]\.([0-2][0-9]|3[01])")
_CODE_TEXT = 'a CoAP response code like "2.05" (class 2, 4 or 5, detail 00..31)'
_STEP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,100}")
#: Stats rows a step may not take: the handshake's.
_RESERVED = ("handshake",)
MAX_IN_FLIGHT = 1000


def _build_payload(ctx: Ctx, rec: Fields) -> m.Payload:
    kind = exactly_one(ctx, rec, ("text", "hex"))
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


def _code(ctx: Ctx, node: Node, path: str) -> str:
    """A CoAP response code "c.dd"; unquoted, YAML reads 2.05 as a float, so take the source text."""
    if node.tag not in TEXTUAL_TAGS or not _CODE.fullmatch(str(node.value)):
        expected(ctx, node, path, _CODE_TEXT)
    return str(node.value)


_EXPECT_MAP = section({
    "regex": regex,
    "prefix": hex_bytes(secret=False),
    "code": _code,
    "seq_offset": integer(0),
    "seq_width": choice(1, 2, 4, 8),
})


def expect(ctx: Ctx, node: Node, path: str) -> m.Expect:
    """``any``, ``echo``, or a mapping: at most one of regex / prefix, a CoAP ``code``, and the
    request's sequence number echoed at ``seq_offset`` (checked against the payload by the caller)."""
    if isinstance(node, MappingNode):
        rec: Fields = _EXPECT_MAP(ctx, node, path)
        v = rec.values
        if not v:
            expected(ctx, node, path, "at least one of regex, prefix, code, seq_offset")
        if "regex" in v and "prefix" in v:
            ctx.fail(rec.nodes["prefix"], path, "expected at most one of regex, prefix, got regex and prefix")
        if "seq_width" in v and "seq_offset" not in v:
            ctx.fail(*rec.at("seq_width"), "seq_width needs seq_offset")
        kind: m.ExpectKind = "regex" if "regex" in v else "prefix" if "prefix" in v else "any"
        return m.Expect(kind=kind, regex=v.get("regex"), prefix=v.get("prefix"), code=v.get("code"),
                        seq_offset=v.get("seq_offset"), seq_width=v.get("seq_width", 2))
    if ctx.value(node) not in ("any", "echo"):
        expected(ctx, node, path, "'any', 'echo' or a mapping of regex, prefix, code, seq_offset, seq_width")
    return m.Expect(kind=ctx.value(node))


def _inner(rec: Fields, key: str, inner: str) -> tuple[Node, str]:
    """The node of ``key.inner`` (a key of a mapping inside ``rec``), or of ``key`` when absent."""
    node, path = rec.at(key)
    if isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, ScalarNode) and key_node.value == inner:
                return value_node, join(path, inner)
    return node, join(path, inner)


def _checked_expect(ctx: Ctx, rec: Fields, payload: m.Payload | None, coap: m.CoapRequest | None) -> m.Expect:
    """The section's ``expect``, checked against what the request carries."""
    got: m.Expect = rec.values.get("expect", m.Expect())
    if got.code is not None:
        if coap is None:
            ctx.fail(*_inner(rec, "expect", "code"), "only for CoAP requests (a plain reply has no response code)")
        if coap.ping:
            ctx.fail(*_inner(rec, "expect", "code"), "a CoAP ping is answered by RST: it has no response code")
    if got.seq_offset is None:
        return got
    where = _inner(rec, "expect", "seq_offset")
    if coap is not None:
        ctx.fail(*where, "CoAP replies are matched by token: seq_offset is for binary payloads")
    if payload is None or payload.data is None or payload.seq_offset is None:
        ctx.fail(*where, "needs a hex payload with seq_offset: the request must carry its sequence number"
                         " for the reply to echo it")
    width_given = _inner(rec, "expect", "seq_width")[0] is not rec.at("expect")[0]
    return got if width_given else replace(got, seq_width=payload.seq_width)


def _build_ping(ctx: Ctx, rec: Fields) -> m.PingConfig:
    payload: m.Payload = rec.values.get("payload", m.Payload())
    return m.PingConfig(**{**rec.values, "expect": _checked_expect(ctx, rec, payload, None)})


PAYLOAD = section(
    {
        "text": template(**_FIELDS),
        "hex": hex_bytes(secret=False),
        "seq_offset": integer(0),
        "seq_width": choice(1, 2, 4, 8),
    },
    build=_build_payload,
)
PING = section(
    {
        "interval": duration(),
        "jitter": number(0, 1),
        "timeout": optional(duration()),
        "max_missed": integer(1),
        "payload": PAYLOAD,
        "expect": expect,
    },
    build=_build_ping,
)

# --- CoAP requests -------------------------------------------------------------------------


def _path(ctx: Ctx, node: Node, path: str) -> str:
    text: str = template(**_FIELDS)(ctx, node, path)
    if not text.startswith("/"):
        expected(ctx, node, path, "a path starting with '/' (e.g. /sensors/temp)")
    return text


#: What a CoAP ping (an empty CON message) cannot take.
_NOT_WITH_PING = ("method", "path", "query", "payload", "content_format", "accept", "observe", "observe_for",
                  "block_size")


def _build_coap_request(ctx: Ctx, rec: Fields) -> m.CoapRequest:
    v = rec.values
    if v.get("ping"):
        for key in (*_NOT_WITH_PING, "type"):
            if key in v and not (key == "type" and v[key] == "CON"):
                ctx.fail(*rec.at(key), f"a CoAP ping is an empty CON message: it takes no {key}")
    if "observe_for" in v and not v.get("observe"):
        ctx.fail(*rec.at("observe_for"), "observe_for needs observe: true")
    method = v.get("method", "GET")
    if v.get("observe") and method not in ("GET", "FETCH"):
        ctx.fail(*rec.at("observe"), f"expected GET or FETCH to observe (RFC 7641), got {method}")
    fields = {key: value for key, value in v.items() if key != "type"}
    return m.CoapRequest(**fields, confirmable=v.get("type", "CON") == "CON")


COAP_REQUEST = section(
    {
        "method": choice("GET", "POST", "PUT", "DELETE", "FETCH", "PATCH", "iPATCH"),
        "path": _path,
        "query": list_of(template(**_FIELDS)),
        "payload": PAYLOAD,
        "content_format": integer(0, 65535),
        "accept": integer(0, 65535),
        "type": choice("CON", "NON"),
        "observe": boolean,
        "observe_for": duration(),
        "block_size": choice(16, 32, 64, 128, 256, 512, 1024),
        "ping": boolean,
    },
    build=_build_coap_request,
)
COAP = section(
    {"ack_timeout": duration(), "ack_random_factor": number(1), "max_retransmit": integer(0, 20)},
    build=m.CoapConfig,
)

# --- request steps -------------------------------------------------------------------------


def _build_step(ctx: Ctx, rec: Fields) -> m.RequestStep:
    v = rec.values
    exactly_one(ctx, rec, ("payload", "coap"))
    schedule = sorted((key for key in ("interval", "weight", "once") if key in v and (key != "once" or v[key])),
                      key=lambda key: rec.nodes[key].start_mark.index)  # in file order: the error points at the later
    if len(schedule) > 1:
        got = " and ".join(schedule)
        ctx.fail(*rec.at(schedule[1]), f"expected at most one of interval, weight, once: true, got {got}")
    if v.get("once") and "in_flight" in v:
        ctx.fail(*rec.at("in_flight"), "a once step sends one request: in_flight is for repeated steps")
    payload, coap = v.get("payload"), v.get("coap")
    step_expect = _checked_expect(ctx, rec, payload, coap)
    return m.RequestStep(**{**v, "name": v.get("name", ""), "expect": step_expect})


STEP = section(
    {
        "name": string(_STEP_NAME, "a name of 1 to 100 printable characters"),
        "payload": PAYLOAD,
        "coap": COAP_REQUEST,
        "expect": expect,
        "interval": duration(),
        "weight": number(0, above=True),
        "once": boolean,
        "in_flight": integer(1, MAX_IN_FLIGHT),
        "timeout": duration(),
    },
    build=_build_step,
)


def _default_name(step: m.RequestStep, index: int) -> str:
    coap = step.coap
    if coap is None:
        return f"request {index + 1}"
    return "CoAP ping" if coap.ping else f"{coap.method} {coap.path}"


def requests(ctx: Ctx, node: Node, path: str) -> tuple[m.RequestStep, ...]:
    """The ``requests:`` list: names filled in and unique, plain and CoAP steps not mixed."""
    steps: list[m.RequestStep] = []
    names: dict[str, int] = {}
    for i, (item, where) in enumerate(items(ctx, node, path)):
        step: m.RequestStep = STEP(ctx, item, where)
        if not step.name:
            step = replace(step, name=_default_name(step, i))
        name_node = _value_node(item, "name")
        if step.name in _RESERVED:
            ctx.fail(name_node, join(where, "name"), f"{step.name!r} is the handshake's stats row: pick another name")
        if step.name in names:
            hint = "" if name_node is not item else " (give the steps names)"
            ctx.fail(name_node, join(where, "name"),
                     f"duplicate step name {step.name!r} (also {path}[{names[step.name]}]){hint}")
        names[step.name] = i
        if steps and (step.coap is None) != (steps[0].coap is None):
            ctx.fail(item, where, "plain payload steps and CoAP steps cannot be mixed in one list: a CoAP exchange"
                                  " is matched by its token, a plain request by order or its echoed sequence number,"
                                  " and one association reads its replies one way")
        steps.append(step)
    _check_echo_room(ctx, node, path, steps)
    return tuple(steps)


def _value_node(node: Node, key: str) -> Node:
    """The value node of ``key`` in mapping ``node`` (``node`` itself when absent)."""
    for key_node, value_node in node.value if isinstance(node, MappingNode) else ():
        if isinstance(key_node, ScalarNode) and key_node.tag == STD + "str" and key_node.value == key:
            return value_node
    return node


def _check_echo_room(ctx: Ctx, node: Node, path: str, steps: list[m.RequestStep]) -> None:
    """Every request of an association may be outstanding at once and they share one sequence
    number: a reply's echoed number must tell them apart within its ``seq_width`` bytes."""
    total = sum(1 if step.once else step.in_flight for step in steps)
    for i, step in enumerate(steps):
        if step.expect.seq_offset is not None and total >= 1 << (8 * step.expect.seq_width):
            ctx.fail(node.value[i], f"{path}[{i}].expect.seq_width",
                     f"{total} requests may be in flight, more than a {step.expect.seq_width}-byte sequence"
                     " number tells apart: use a wider one or fewer in_flight")


def check_request_targets(ctx: Ctx, rec: Fields, targets: list[m.Target], key: str = "requests") -> None:
    """CoAP steps need DTLS targets that speak CoAP: not TLS ones (CoAP over TLS, RFC 8323, is not
    supported), nor the built-in reference server (it echoes, it does not answer CoAP)."""
    steps: tuple[m.RequestStep, ...] = rec.values.get(key, ())
    if not steps or steps[0].coap is None:
        return
    node, path = rec.at(key)
    if not targets:
        ctx.fail(node, path, "CoAP requests need targets running a CoAP-over-DTLS server (the built-in reference"
                             " server only echoes): add targets")
    for target in targets:
        if target.protocol != "dtls":
            ctx.fail(node, path, f"CoAP requests need DTLS targets (CoAP over TLS is not supported),"
                                 f" got target {target.name!r} with protocol {target.protocol}")
