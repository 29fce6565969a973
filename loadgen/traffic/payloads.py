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

    def make(name: str, seq: int) -> bytes:
        return template.format(name=name, seq=seq, **fields).encode()

    return make


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
    """Decides whether ``reply`` answers ``ping``: any | echo | regex | prefix."""

    kind: str = "any"
    pattern: bytes = b""

    @classmethod
    def expecting(cls, expect: Expect) -> ReplyRule:
        """The rule for the scenario's ``ping.expect``."""
        if expect.kind == "regex" and expect.regex is not None:
            return cls("regex", expect.regex.pattern)
        if expect.kind == "prefix" and expect.prefix is not None:
            return cls("prefix", expect.prefix)
        return cls(expect.kind)

    def accepts(self, ping: bytes, reply: bytes) -> bool:
        """True when ``reply`` is a valid answer to ``ping``."""
        if self.kind == "any":
            return True
        if self.kind == "echo":
            return reply == ping
        if self.kind == "prefix":
            return reply.startswith(self.pattern)
        if self.kind == "regex":
            return re.search(self.pattern, reply) is not None
        raise ValueError(f"unknown reply rule {self.kind!r}")
