"""A small RFC 7252 message codec: header, token, options, payload; Block2 and uint option values.

Written for the hot path (a request is a few bytes of header and pre-encoded options; a
response is decoded once): aiocoap's ``Message`` costs ~7 us to build and encode and ~4.5 us
to decode one here, several times what this does. Tested against aiocoap's encoding
(tests/test_coap_message.py). :func:`decode` never raises anything but :class:`CoapFormatError`,
whatever the bytes: a peer's garbage is a clear, bounded failure, never a crash.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from loadgen.protocol.errors import CoapFormatError

# Message types (RFC 7252 3).
CON: Final = 0
NON: Final = 1
ACK: Final = 2
RST: Final = 3
TYPE_NAMES: Final = ("CON", "NON", "ACK", "RST")

# Codes as ints: class << 5 | detail ("2.05" = 69).
EMPTY: Final = 0
METHODS: Final = {"GET": 1, "POST": 2, "PUT": 3, "DELETE": 4, "FETCH": 5, "PATCH": 6, "iPATCH": 7}
CONTENT: Final = 69  # 2.05

# Option numbers (RFC 7252 5.10, RFC 7641, RFC 7959).
IF_MATCH: Final = 1
URI_HOST: Final = 3
ETAG: Final = 4
IF_NONE_MATCH: Final = 5
OBSERVE: Final = 6
URI_PORT: Final = 7
LOCATION_PATH: Final = 8
URI_PATH: Final = 11
CONTENT_FORMAT: Final = 12
MAX_AGE: Final = 14
URI_QUERY: Final = 15
ACCEPT: Final = 17
LOCATION_QUERY: Final = 20
BLOCK2: Final = 23
BLOCK1: Final = 27
SIZE2: Final = 28
PROXY_URI: Final = 35
PROXY_SCHEME: Final = 39
SIZE1: Final = 60
NO_RESPONSE: Final = 258
#: The options this client understands: a critical option (odd number) outside this set in a
#: response makes it unacceptable (RFC 7252 5.4.1).
KNOWN_OPTIONS: Final = frozenset({IF_MATCH, URI_HOST, ETAG, IF_NONE_MATCH, OBSERVE, URI_PORT, LOCATION_PATH, URI_PATH,
                                  CONTENT_FORMAT, MAX_AGE, URI_QUERY, ACCEPT, LOCATION_QUERY, BLOCK2, BLOCK1, SIZE2,
                                  PROXY_URI, PROXY_SCHEME, SIZE1, NO_RESPONSE})

MAX_TOKEN: Final = 8
PAYLOAD_MARKER: Final = 0xFF


def code_text(code: int) -> str:
    """``69`` -> ``"2.05"``."""
    return f"{code >> 5}.{code & 31:02d}"


#: ``code_text`` of every code, by code: the text of a response's code without formatting it.
CODE_TEXTS: Final = tuple(code_text(code) for code in range(256))


def code_int(text: str) -> int:
    """``"2.05"`` -> ``69``; a method name (``"GET"``) gives its code. ValueError for anything else."""
    if text in METHODS:
        return METHODS[text]
    klass, dot, detail = text.partition(".")
    if not dot or not klass.isdigit() or not detail.isdigit() or len(detail) != 2:
        raise ValueError(f"not a CoAP code: {text!r} (expected c.dd, e.g. 2.05)")
    c, d = int(klass), int(detail)
    if c > 7 or d > 31:
        raise ValueError(f"not a CoAP code: {text!r} (class 0..7, detail 0..31)")
    return c << 5 | d


def encode_uint(value: int) -> bytes:
    """A uint option value: big-endian, shortest form (0 is empty)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big") if value else b""


def decode_uint(value: bytes) -> int:
    return int.from_bytes(value, "big")


def encode_block(num: int, more: bool, szx: int) -> bytes:
    """A Block1/Block2 value (RFC 7959 2.2): NUM, M, SZX (size = 2 ** (szx + 4))."""
    if not 0 <= szx <= 6:
        raise ValueError(f"block SZX {szx} not in 0..6")
    return encode_uint(num << 4 | (8 if more else 0) | szx)


def decode_block(value: bytes) -> tuple[int, bool, int]:
    """(NUM, M, SZX) of a block option value; CoapFormatError when it is longer than 3 bytes or SZX is 7."""
    if len(value) > 3:
        raise CoapFormatError(f"block option of {len(value)} bytes (at most 3)")
    raw = decode_uint(value)
    if raw & 7 == 7:
        raise CoapFormatError("block option with the reserved SZX 7")
    return raw >> 4, bool(raw & 8), raw & 7


def block_szx(size: int) -> int:
    """The SZX of a block size (16, 32, ..., 1024); ValueError for other sizes."""
    if size not in (16, 32, 64, 128, 256, 512, 1024):
        raise ValueError(f"block size {size} is not a power of two in 16..1024")
    return size.bit_length() - 5


Options = tuple[tuple[int, bytes], ...]


# Made once per datagram received: not frozen, as Finished (a frozen dataclass's __init__
# costs about a microsecond more); no code changes a message once made.
@dataclass(slots=True)
class Message:
    """One CoAP message. ``options`` are (number, value) pairs sorted by number (repeated
    numbers keep their order), as :func:`decode` gives them and :func:`encode` wants them."""

    mtype: int
    code: int
    mid: int
    token: bytes = b""
    options: Options = ()
    payload: bytes = b""

    def option(self, number: int) -> bytes | None:
        """The first value of option ``number`` (None: absent)."""
        for n, value in self.options:
            if n == number:
                return value
        return None

    def options_of(self, number: int) -> list[bytes]:
        return [value for n, value in self.options if n == number]

    @property
    def code_text(self) -> str:
        return CODE_TEXTS[self.code]


def _ext(value: int) -> tuple[int, bytes]:
    """An option delta or length: its 4-bit nibble and the extended bytes (RFC 7252 3.1)."""
    if value < 13:
        return value, b""
    if value < 269:
        return 13, bytes((value - 13,))
    if value < 65805:
        return 14, (value - 269).to_bytes(2, "big")
    raise ValueError(f"option delta or length {value} too large")


def encode_options(options: Options) -> bytes:
    """The options part of a message (``options`` sorted by number)."""
    out = bytearray()
    last = 0
    for number, value in options:
        if number < last:
            raise ValueError(f"options out of order: {number} after {last}")
        d, dext = _ext(number - last)
        n, lext = _ext(len(value))
        out.append(d << 4 | n)
        out += dext
        out += lext
        out += value
        last = number
    return bytes(out)


def header(mtype: int, code: int, mid: int, token: bytes) -> bytes:
    """The 4-byte header and the token."""
    if len(token) > MAX_TOKEN:
        raise ValueError(f"token of {len(token)} bytes (at most 8)")
    return bytes((0x40 | mtype << 4 | len(token), code, mid >> 8 & 0xFF, mid & 0xFF)) + token


def encode(message: Message) -> bytes:
    """The wire form of ``message``."""
    out = header(message.mtype, message.code, message.mid, message.token) + encode_options(message.options)
    return out + b"\xff" + message.payload if message.payload else out


def empty(mtype: int, mid: int) -> bytes:
    """An empty message (ACK, RST, or a CON ping: RFC 7252 4.3)."""
    return bytes((0x40 | mtype << 4, 0, mid >> 8 & 0xFF, mid & 0xFF))


def decode(data: bytes) -> Message:
    """Parse one datagram. Raises :class:`CoapFormatError` (only) when it is no CoAP message."""
    if len(data) < 4:
        raise CoapFormatError(f"{len(data)} bytes: shorter than a CoAP header")
    first, code = data[0], data[1]
    if first >> 6 != 1:
        raise CoapFormatError(f"version {first >> 6} (CoAP is 1)")
    tkl = first & 15
    if tkl > MAX_TOKEN:
        raise CoapFormatError(f"token length {tkl} (at most 8)")
    end = 4 + tkl
    if len(data) < end:
        raise CoapFormatError(f"token of {tkl} bytes truncated")
    mtype, mid, token = first >> 4 & 3, data[2] << 8 | data[3], data[4:end]
    if code == EMPTY and (tkl or len(data) > 4):
        raise CoapFormatError("empty message with a token, options or payload")
    options, payload = _decode_options(data, end) if len(data) > end else ((), b"")
    return Message(mtype, code, mid, token, options, payload)


def _decode_options(data: bytes, pos: int) -> tuple[Options, bytes]:
    """The options from ``pos`` on and the payload after the marker."""
    options: list[tuple[int, bytes]] = []
    number, size = 0, len(data)
    while pos < size:
        byte = data[pos]
        pos += 1
        if byte == PAYLOAD_MARKER:
            if pos == size:
                raise CoapFormatError("payload marker without a payload")
            return tuple(options), data[pos:]
        delta, pos = _read_ext(data, pos, byte >> 4)
        length, pos = _read_ext(data, pos, byte & 15)
        end = pos + length
        if end > size:
            raise CoapFormatError(f"option {number + delta} claims {length} bytes, {size - pos} left")
        number += delta
        options.append((number, data[pos:end]))
        pos = end
    return tuple(options), b""


def _read_ext(data: bytes, pos: int, nibble: int) -> tuple[int, int]:
    if nibble < 13:
        return nibble, pos
    if nibble == 13:
        if pos >= len(data):
            raise CoapFormatError("option header truncated")
        return data[pos] + 13, pos + 1
    if nibble == 14:
        if pos + 2 > len(data):
            raise CoapFormatError("option header truncated")
        return (data[pos] << 8 | data[pos + 1]) + 269, pos + 2
    raise CoapFormatError("option nibble 15 outside the payload marker")


def path_options(path: str) -> Options:
    """Uri-Path options of ``path`` ("/a/b" -> a, b; "/" -> none)."""
    return tuple((URI_PATH, segment.encode()) for segment in path.strip("/").split("/") if segment)
