"""DTLS 1.2 record headers (RFC 6347 4.1) and the alert table: parsing and building records.

Both engine families use it: the native handshake splits and packs datagrams with it, and the
OpenSSL engine peeks at headers to classify what arrived (e.g. an encrypted Finished
that OpenSSL silently discarded) and to build the one plaintext alert the server sends
when a client's Finished does not decrypt. Protected records after the handshake are
:mod:`.record_layer`'s.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import NamedTuple

HEADER = struct.Struct("!BHHIHH")  # type, version, epoch, seq (48 bits as 32+16), length
HEADER_LEN = 13

CHANGE_CIPHER_SPEC = 20
ALERT = 21
HANDSHAKE = 22
APPLICATION_DATA = 23

DTLS_1_2 = 0xFEFD
DTLS_1_0 = 0xFEFF

#: RFC 6347 4.1: the record sequence number is a 48-bit field; past it nothing can be numbered.
MAX_SEQUENCE = (1 << 48) - 1
#: RFC 5246 6.2.1: a record carries at most 2^14 bytes of plaintext (record_overflow otherwise).
MAX_PLAINTEXT = 1 << 14
#: RFC 5246 6.2.3: a protected record may add at most 2048 bytes to its plaintext; a record whose
#: length field says more is malformed, and is skipped without a look at its bytes.
MAX_RECORD_LEN = MAX_PLAINTEXT + 2048

ALERT_WARNING = 1
ALERT_FATAL = 2
# Alert descriptions the engines send (RFC 5246 7.2, RFC 4279); every one is named in ALERT_NAMES.
CLOSE_NOTIFY, UNEXPECTED_MESSAGE, HANDSHAKE_FAILURE, ILLEGAL_PARAMETER = 0, 10, 40, 47
DECODE_ERROR, DECRYPT_ERROR, PROTOCOL_VERSION, UNKNOWN_PSK_IDENTITY = 50, 51, 70, 115
#: Alert descriptions (RFC 5246 7.2, RFC 4279, RFC 7507, RFC 8446 6) by number, in OpenSSL's
#: wording (so both engine kinds give an alert the same code); any other number is "unknown".
ALERT_NAMES = {
    0: "close notify", 10: "unexpected message", 20: "bad record mac", 21: "decryption failed",
    22: "record overflow", 30: "decompression failure", 40: "handshake failure", 41: "no certificate",
    42: "bad certificate", 43: "unsupported certificate", 44: "certificate revoked", 45: "certificate expired",
    46: "certificate unknown", 47: "illegal parameter", 48: "unknown ca", 49: "access denied",
    50: "decode error", 51: "decrypt error", 60: "export restriction", 70: "protocol version",
    71: "insufficient security", 80: "internal error", 86: "inappropriate fallback", 90: "user canceled",
    100: "no renegotiation", 109: "missing extension", 110: "unsupported extension",
    111: "certificate unobtainable", 112: "unrecognized name", 113: "bad certificate status response",
    114: "bad certificate hash value", 115: "unknown psk identity", 116: "certificate required",
    120: "no application protocol",
}


class Record(NamedTuple):
    content_type: int
    version: int
    epoch: int
    sequence: int
    length: int


def records(datagram: bytes) -> Iterator[Record]:
    """Yield the record headers in ``datagram``; stops quietly at the first malformed one
    (records longer than :data:`MAX_RECORD_LEN` are skipped)."""
    offset = 0
    while offset + HEADER_LEN <= len(datagram):
        ctype, version, epoch, seq_hi, seq_lo, length = HEADER.unpack_from(datagram, offset)
        if offset + HEADER_LEN + length > len(datagram):
            return
        if length <= MAX_RECORD_LEN:
            yield Record(ctype, version, epoch, (seq_hi << 16) | seq_lo, length)
        offset += HEADER_LEN + length


def split(datagram: bytes, limit: int | None = None) -> list[tuple[int, int, bytes]]:
    """``(content_type, epoch, record bytes)`` for each whole record in ``datagram``.

    The lean form of :func:`records` (with each record's bytes) for the per-datagram
    hot paths; stops quietly at the first malformed record, skips records longer than
    :data:`MAX_RECORD_LEN`, and stops after ``limit`` records when given (a hostile
    datagram can hold thousands of tiny ones).
    """
    found = []
    offset = 0
    end = len(datagram)
    while offset + HEADER_LEN <= end:
        content_type, _, epoch, _, _, length = HEADER.unpack_from(datagram, offset)
        stop = offset + HEADER_LEN + length
        if stop > end:
            break
        if length <= MAX_RECORD_LEN:
            found.append((content_type, epoch, datagram[offset:stop]))
            if limit is not None and len(found) >= limit:
                break
        offset = stop
    return found


def pack_datagrams(data: bytes, mtu: int) -> list[bytes]:
    """Cut a run of records into datagrams of at most ``mtu`` bytes, at record boundaries.

    Each record must already fit the MTU (the engines size them so); bytes that are not
    record-shaped travel as they are in the last datagram.
    """
    if len(data) <= mtu:
        return [data]  # the common case: one record or one small flight
    datagrams: list[bytes] = []
    start = end = 0
    for rec in records(data):
        size = HEADER_LEN + rec.length
        if end - start + size > mtu and end > start:
            datagrams.append(data[start:end])
            start = end
        end += size
    end = len(data)
    if end > start:
        datagrams.append(data[start:end])
    return datagrams


def is_one_record(data: bytes) -> bool:
    """True when ``data`` is exactly one record (its header's length field covers the rest)."""
    return len(data) == HEADER_LEN + int.from_bytes(data[11:13], "big")


def starts_plaintext_handshake(datagram: bytes) -> bool:
    """True when ``datagram`` starts with an epoch-0 (unencrypted) handshake record."""
    return len(datagram) > HEADER_LEN and datagram[0] == HANDSHAKE and datagram[3:5] == b"\x00\x00"


def is_client_hello(datagram: bytes) -> bool:
    """True when ``datagram`` starts with an epoch-0 handshake record holding a ClientHello."""
    return starts_plaintext_handshake(datagram) and datagram[HEADER_LEN] == 1  # handshake type client_hello


def plaintext_alert(description: int, sequence: int, version: int = DTLS_1_2) -> bytes:
    """A fatal epoch-0 alert record with the given record sequence number; empty when the
    number does not fit the 48-bit field (the record numbers ran out: no alert can be sent)."""
    if sequence > MAX_SEQUENCE:
        return b""
    return HEADER.pack(ALERT, version, 0, sequence >> 16, sequence & 0xFFFF, 2) + bytes(
        (ALERT_FATAL, description)
    )
