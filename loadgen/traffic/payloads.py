"""Ping payloads and what counts as a valid reply, built from the scenario's ``ping`` section."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass

from loadgen.scenario.model import Expect, Payload

#: ``make(name, seq) -> bytes`` builds ping number ``seq`` of association ``name``.
PayloadMaker = Callable[[str, int], bytes]

#: Template fields that differ per device or target (next to ``name`` and ``seq``, which differ per ping).
DEVICE_FIELDS = frozenset({"n", "target"})


def text_payload(template: str, **fields: object) -> PayloadMaker:
    """A UTF-8 text ping; ``template`` may use {name}, {seq} and any of ``fields``."""
    fast = _percent_template(template, fields)
    if fast is not None:
        return fast

    def make(name: str, seq: int) -> bytes:
        return template.format(name=name, seq=seq, **fields).encode()

    return make


def _percent_template(template: str, fields: dict[str, object]) -> PayloadMaker | None:
    """``template`` as a %-format over (name, seq), the same text as ``str.format`` gives, or None
    when it needs ``str.format`` (a conversion, a format spec, an attribute or index, a field
    that is unknown or malformed: ``str.format`` then says what is wrong, at the first ping).

    Made once per ping: ``str.format`` with keywords costs ~5.7k instructions, ``%`` over a
    tuple ~2.4k (callgrind), 2.4% of a ping's client instructions. ``{name}`` and ``{seq}``
    format as ``str()`` of a str and an int, exactly what ``%s`` gives; the per-device fields
    are constants here and go into the literal text."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError:
        return None
    pieces: list[str] = []
    order: list[str] = []
    for literal, field, spec, conversion in parsed:
        pieces.append(literal.replace("%", "%%"))
        if field is None:
            continue
        if spec or conversion:
            return None
        if field in ("name", "seq"):
            pieces.append("%s")
            order.append(field)
        elif field in fields and field.isidentifier():
            pieces.append(format(fields[field]).replace("%", "%%"))
        else:
            return None  # positional ({} or {0}), attribute, index or unknown: str.format's business
    fmt = "".join(pieces)
    args = tuple(order)
    if args == ("name", "seq"):
        return lambda name, seq: (fmt % (name, seq)).encode()
    if args == ("name",):
        return lambda name, seq: (fmt % (name,)).encode()
    if args == ("seq",):
        return lambda name, seq: (fmt % (seq,)).encode()
    if not args:
        payload = (fmt % ()).encode()
        return lambda name, seq: payload
    return lambda name, seq: (fmt % tuple(name if arg == "name" else seq for arg in args)).encode()


def binary_payload(template: bytes, seq_offset: int | None = None, seq_width: int = 2) -> PayloadMaker:
    """A binary ping with a big-endian sequence number of ``seq_width`` bytes at ``seq_offset``.

    Enough to model e.g. a CoAP ping (the message id is the sequence field).
    """
    if seq_offset is not None and seq_offset + seq_width > len(template):
        raise ValueError("sequence field does not fit inside the payload")
    modulus = 1 << (8 * seq_width)

    def make(name: str, seq: int) -> bytes:
        if seq_offset is None:
            return template
        field = (seq % modulus).to_bytes(seq_width, "big")
        return template[:seq_offset] + field + template[seq_offset + seq_width :]

    return make


def payload_maker(payload: Payload, **fields: object) -> PayloadMaker:
    """The maker for the scenario's ``ping.payload``; ``fields`` are the text template's
    per-device fields (``n``, ``target``) next to the ``name`` and ``seq`` every ping gets."""
    if payload.data is not None:
        return binary_payload(payload.data, payload.seq_offset, payload.seq_width)
    return text_payload(payload.text or "", **fields)


def uses_device_fields(payload: Payload) -> bool:
    """True when the ping text uses ``{n}`` or ``{target}``: only then does a device need a
    payload maker of its own (thousands share one otherwise)."""
    text = payload.text
    if payload.data is not None or not text:
        return False
    return any(field is not None and field.split(".")[0].split("[")[0] in DEVICE_FIELDS
               for _, field, _, _ in string.Formatter().parse(text))


@dataclass(frozen=True, slots=True)
class ReplyRule:
    """Decides whether ``reply`` answers request number ``seq``: any | echo | regex | prefix,
    and, with ``seq_offset``, the request's sequence number echoed there (big-endian, ``seq_width`` bytes).

    Regexes match with DOTALL whoever compiled them: replies are bytes, and ``.`` must match 0x0a too.
    """

    kind: str = "any"
    prefix: bytes = b""
    regex: re.Pattern[bytes] | None = None
    seq_offset: int | None = None
    seq_width: int = 2

    @classmethod
    def expecting(cls, expect: Expect) -> ReplyRule:
        """The rule for a scenario's ``expect`` (the ping's or a request step's)."""
        offset, width = expect.seq_offset, expect.seq_width
        if expect.kind == "regex" and expect.regex is not None:
            pattern = re.compile(expect.regex.pattern, expect.regex.flags | re.DOTALL)
            return cls("regex", regex=pattern, seq_offset=offset, seq_width=width)
        if expect.kind == "prefix" and expect.prefix is not None:
            return cls("prefix", prefix=expect.prefix, seq_offset=offset, seq_width=width)
        return cls(expect.kind, seq_offset=offset, seq_width=width)

    def accepts(self, request: bytes, reply: bytes) -> bool:
        """True when ``reply``'s bytes meet the rule (any, echo of ``request``, prefix, regex); the
        sequence number is :meth:`check`'s (CoAP judges its response payloads with this alone)."""
        kind = self.kind
        if kind == "any":
            return True
        if kind == "echo":
            return reply == request
        if kind == "prefix":
            return reply.startswith(self.prefix)
        if kind == "regex":
            assert self.regex is not None
            return self.regex.search(reply) is not None
        raise ValueError(f"unknown reply rule {kind!r}")

    def check(self, request: bytes, reply: bytes, seq: int) -> str | None:
        """None when ``reply`` is a valid answer to ``request`` (number ``seq``), else why it is not."""
        kind = self.kind
        # accepts() inlined for the two common rules: this runs once per reply.
        if not (kind == "any" or (reply == request if kind == "echo" else self.accepts(request, reply))):
            return f"reply of {len(reply)} bytes does not match rule {self.kind}"
        if self.seq_offset is None:
            return None
        echoed = self.echoed(reply)
        if echoed is None:
            first, last = self.seq_offset, self.seq_offset + self.seq_width - 1
            return f"reply of {len(reply)} bytes is too short to carry the sequence number (bytes {first}..{last})"
        want = seq % (1 << (8 * self.seq_width))
        if echoed != want:
            return f"reply carries sequence number {echoed} at byte {self.seq_offset}, expected {want}"
        return None

    def echoed(self, reply: bytes) -> int | None:
        """The sequence number ``reply`` carries at ``seq_offset`` (None: no such field, or too short)."""
        offset = self.seq_offset
        if offset is None or len(reply) < offset + self.seq_width:
            return None
        return int.from_bytes(reply[offset : offset + self.seq_width], "big")

    def names(self, request: bytes, seq: int, reply: bytes) -> bool:
        """True when ``reply`` is recognisably the answer to ``request``: its echoed sequence number
        is ``seq``'s (with ``seq_offset``), else the reply is the request's own bytes (an echo).
        Tells a late reply to a timed-out request from a bad one."""
        if self.seq_offset is None:
            return reply == request
        return self.echoed(reply) == seq % (1 << (8 * self.seq_width))
