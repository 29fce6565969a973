"""Ping payloads and what counts as a valid reply."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

#: Qt's DTLS client example ping.
QT_PING = "I am {name}, please, accept our ping {seq}"

#: ``make(name, seq) -> bytes`` builds ping number ``seq`` of association ``name``.
PayloadMaker = Callable[[str, int], bytes]


def text_payload(template: str = QT_PING, **fields: object) -> PayloadMaker:
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


@dataclass(frozen=True)
class ReplyRule:
    """Decides whether ``reply`` answers ``ping``: any | echo | regex | prefix."""

    kind: str = "any"
    pattern: bytes = b""

    def accepts(self, ping: bytes, reply: bytes) -> bool:
        if self.kind == "any":
            return True
        if self.kind == "echo":
            return reply == ping
        if self.kind == "prefix":
            return reply.startswith(self.pattern)
        if self.kind == "regex":
            return re.search(self.pattern, reply) is not None
        raise ValueError(f"unknown reply rule {self.kind!r}")
