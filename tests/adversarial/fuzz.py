"""A seeded mutation fuzzer that gets past the cookie check and inside sessions.

tests/test_fuzz.py mutates whole datagrams, so its ClientHellos never carry a valid
cookie for their own address and its records never authenticate: the engines'
handshake parsing, reassembly and replay window never see its input. Here:

* :func:`handshake_datagram` builds what a peer sends *after* its cookie checked out:
  the messages a client sends next (ClientKeyExchange, Finished, a repeated
  ClientHello, anything), mutated in their handshake headers (type, length,
  message_seq, fragment offset and length), fragmented, overlapping, repeated, in
  records with chosen sequence numbers and epochs;
* :func:`mutate_plaintext` picks the content type, plaintext and record number jump
  of one record that the caller seals with a session's real keys, so it authenticates
  and reaches everything behind the record layer;
* :func:`mutate_flight` mutates a server's handshake flight, for the client side.

Everything is drawn from a :class:`random.Random` the caller seeds: a failure replays.
"""

from __future__ import annotations

import random

from loadgen.protocol.native import records
from loadgen.protocol.native.messages import (
    CLIENT_HELLO,
    CLIENT_KEY_EXCHANGE,
    FINISHED,
    HS_HEADER_LEN,
    SERVER_HELLO,
    SERVER_HELLO_DONE,
    SERVER_KEY_EXCHANGE,
    handshake_message,
)

from .hostile import client_hello_body, fragment, record

#: Field values that sit on the edges of their widths.
EDGE_MESSAGE_SEQS = (0, 1, 2, 3, 4, 0x7FFF, 0xFFFD, 0xFFFE, 0xFFFF)
EDGE_RECORD_SEQS = (0, 1, 2, (1 << 32) - 1, 1 << 32, (1 << 48) - 4, (1 << 48) - 2, (1 << 48) - 1)
EDGE_LENGTHS = (0, 1, 2, 12, 255, 256, 16383, 16384, 16385, 65535, (1 << 24) - 1)
HANDSHAKE_TYPES = (CLIENT_HELLO, SERVER_HELLO, 3, 11, SERVER_KEY_EXCHANGE, 13, SERVER_HELLO_DONE, 15,
                   CLIENT_KEY_EXCHANGE, FINISHED, 0, 255)


def _seq(rng: random.Random, choices: tuple[int, ...], top: int) -> int:
    return rng.choice(choices) if rng.random() < 0.5 else rng.randrange(top + 1)


def client_messages(rng: random.Random, cookie: bytes, next_seq: int = 2) -> list[bytes]:
    """Plausible messages of a client after its cookie'd ClientHello (message ``next_seq - 1``)."""
    identity = rng.randbytes(rng.choice((0, 1, 8, 64, 300)))
    return [
        handshake_message(CLIENT_KEY_EXCHANGE, next_seq, len(identity).to_bytes(2, "big") + identity),
        handshake_message(FINISHED, next_seq + 1, rng.randbytes(12)),
        handshake_message(CLIENT_HELLO, next_seq - 1, client_hello_body(cookie)),
        handshake_message(rng.choice(HANDSHAKE_TYPES), rng.randrange(65536), rng.randbytes(rng.randrange(64))),
    ]


def mutate_message(rng: random.Random, message: bytes) -> list[bytes]:
    """One handshake message as hostile fragments: header fields, body, fragmentation."""
    msg_type, body = message[0], message[HS_HEADER_LEN:]
    seq = int.from_bytes(message[4:6], "big")
    kind = rng.randrange(8)
    if kind == 0:  # a header that lies
        length = _seq(rng, EDGE_LENGTHS, (1 << 24) - 1)
        offset = _seq(rng, EDGE_LENGTHS, (1 << 24) - 1)
        return [fragment(rng.choice(HANDSHAKE_TYPES), length, _seq(rng, EDGE_MESSAGE_SEQS, 0xFFFF), offset,
                         body[: rng.randrange(len(body) + 1)])]
    if kind == 1:  # message_seq on the edge
        return [fragment(msg_type, len(body), rng.choice(EDGE_MESSAGE_SEQS), 0, body)]
    if kind == 2:  # body bit flips, truncation, garbage appended (header consistent)
        data = bytearray(body)
        for _ in range(rng.randrange(1, 4)):
            if data:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        data = data[: rng.randrange(len(data) + 1)] + rng.randbytes(rng.choice((0, 0, 1, 50)))
        return [fragment(msg_type, len(data), seq, 0, bytes(data))]
    if kind == 3:  # fragmented, shuffled, some repeated, some overlapping
        total = rng.choice((len(body), 16384, rng.randrange(1, 16385)))
        data = body.ljust(total, b"\x00")[:total]
        pieces = []
        offset = 0
        while offset < total:
            size = rng.randrange(1, 200)
            start = max(0, offset - rng.randrange(0, 8))  # overlap the previous piece a little
            pieces.append(fragment(msg_type, total, seq, start, data[start : offset + size]))
            offset += size
        if not pieces:
            return [message]
        rng.shuffle(pieces)
        keep = pieces[: rng.randrange(1, len(pieces) + 1)]
        return keep + rng.sample(keep, min(len(keep), rng.randrange(3)))
    if kind == 4:  # tiny fragments of a large message
        total = rng.choice((1000, 16384))
        return [fragment(msg_type, total, seq, rng.randrange(total), b"\x00") for _ in range(rng.randrange(1, 300))]
    if kind == 5:  # the same fragment with conflicting types or lengths
        return [fragment(msg_type, len(body), seq, 0, body[:1]),
                fragment(rng.choice(HANDSHAKE_TYPES), len(body) + 1, seq, 1, body[1:])]
    if kind == 6:  # many messages ahead of the expected one
        return [fragment(msg_type, 16384, (seq + i) & 0xFFFF, 0, rng.randbytes(100)) for i in range(rng.randrange(20))]
    return [message]  # as it is (a repeat, or out of order)


def handshake_datagram(rng: random.Random, cookie: bytes, *, next_seq: int = 2, record_seq: int | None = None
                       ) -> bytes:
    """One datagram of mutated handshake records, for a peer whose cookie checked out."""
    out = []
    for _ in range(rng.choice((1, 1, 1, 2, 4))):
        message = rng.choice(client_messages(rng, cookie, next_seq))
        payload = b"".join(mutate_message(rng, message))
        seq = record_seq if record_seq is not None else _seq(rng, EDGE_RECORD_SEQS, (1 << 48) - 1)
        kind = rng.randrange(10)
        if kind == 0:  # an early epoch-1 record (no keys yet): random bytes
            out.append(record(records.HANDSHAKE, rng.randbytes(rng.choice((40, 1000, 16000))), seq=seq, epoch=1))
        elif kind == 1:  # a plaintext alert, any level and description, sometimes malformed
            out.append(record(records.ALERT, rng.randbytes(rng.choice((2, 2, 2, 0, 1, 3))), seq=seq))
        elif kind == 2:  # another content type or epoch carrying the fragments
            out.append(record(rng.choice((20, 23, 24, 0, 255)), payload, seq=seq, epoch=rng.choice((0, 1, 2, 0xFFFF))))
        else:
            out.append(record(records.HANDSHAKE, payload[:65000], seq=seq))
    datagram = b"".join(out)
    return datagram[:65000]


def lying_record(rng: random.Random) -> bytes:
    """A record whose header's length disagrees with what follows."""
    return records.HEADER.pack(rng.choice((20, 21, 22, 23)), records.DTLS_1_2, rng.randrange(3), 0,
                               rng.randrange(65536), rng.choice((0, 1, 60000, 65535))) + rng.randbytes(100)


def mutate_plaintext(rng: random.Random, sample: bytes) -> tuple[int, bytes, int]:
    """``(content_type, plaintext, record number jump)`` of one record to seal with real keys."""
    kind = rng.randrange(10)
    if kind == 0:
        return records.APPLICATION_DATA, rng.randbytes(rng.choice((0, 1, 1100, 16384, 16385, 20000))), 0
    if kind == 1:  # an alert: malformed, or a warning with any description
        body = rng.choice((b"", b"\x01", b"\x01\x00\x00", bytes((1, rng.randrange(1, 256)))))
        return records.ALERT, body, 0
    if kind == 2:  # a handshake message after the handshake: renegotiation, garbage, fragments
        message = rng.choice((handshake_message(CLIENT_HELLO, 1, client_hello_body(b"")),
                              fragment(rng.choice(HANDSHAKE_TYPES), 16384, rng.randrange(65536), 0, b"x" * 100),
                              rng.randbytes(rng.randrange(1, 200))))
        return records.HANDSHAKE, message, 0
    if kind == 3:  # ChangeCipherSpec or a content type nobody knows
        return rng.choice((records.CHANGE_CIPHER_SPEC, 0, 24, 25, 255)), rng.randbytes(rng.randrange(3)), 0
    if kind == 4:  # the record number jumps (the replay window must cope in O(1))
        return records.APPLICATION_DATA, sample, rng.choice((63, 64, 65, 1 << 20, 1 << 33, 1 << 40))
    if kind == 5:  # bit flips in the plaintext (the reply check sees them)
        data = bytearray(sample or b"\x00")
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return records.APPLICATION_DATA, bytes(data), 0
    return records.APPLICATION_DATA, sample, 0


def mutate_flight(rng: random.Random, datagram: bytes) -> bytes:
    """A server's handshake flight datagram with one of its handshake records mutated."""
    found = records.split(datagram)
    if not found:
        return datagram
    index = rng.randrange(len(found))
    out = []
    for i, (content_type, epoch, raw) in enumerate(found):
        if i != index or content_type != records.HANDSHAKE or epoch != 0:
            out.append(raw)
            continue
        seq = int.from_bytes(raw[5:11], "big")
        payload = b"".join(mutate_message(rng, raw[records.HEADER_LEN :]))
        out.append(record(records.HANDSHAKE, payload[:16000], seq=seq))
    return b"".join(out)
