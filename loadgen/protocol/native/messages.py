"""Handshake messages on the wire, for the native DTLS 1.2 PSK handshake (RFC 6347 4.2, RFC 5246 7.4).

The vocabulary (message types, extensions, alert descriptions), framing a message and cutting
it into fragments, parsing fragments out of a record, and the :class:`Reassembler` that puts
the peer's fragments (fragmented, reordered, repeated) back into whole messages, within limits
that bound what a hostile or broken peer can make one association hold or spend.
"""

from __future__ import annotations

import struct
from bisect import bisect_left, bisect_right

from loadgen.protocol.native import records

# Handshake message types (RFC 5246 7.4, RFC 6347 4.3.2).
CLIENT_HELLO, SERVER_HELLO, HELLO_VERIFY_REQUEST = 1, 2, 3
SERVER_KEY_EXCHANGE, SERVER_HELLO_DONE, CLIENT_KEY_EXCHANGE, FINISHED = 12, 14, 16, 20
HS_HEADER_LEN = 12  # type, length (3), message_seq (2), fragment_offset (3), fragment_length (3)
EXT_EXTENDED_MASTER_SECRET = 0x0017
EXT_RENEGOTIATION_INFO = 0xFF01
RENEGOTIATION_SCSV = 0x00FF
VERSION = records.DTLS_1_2.to_bytes(2, "big")
VERIFY_DATA_LEN = 12

# -- limits: what a peer, hostile or broken, can make one association hold or spend ------------
#: RFC 6347 4.2.2: message_seq is a 16-bit field; a peer whose numbering would pass it is refused.
MAX_MESSAGE_SEQ = 0xFFFF
#: The longest handshake message body accepted, fragmented or not. PSK handshake messages are
#: small: the longest carry an identity (ClientKeyExchange) or a hint (ServerKeyExchange), which
#: OpenSSL caps at 128 and 256 bytes; 4 KiB leaves room for far longer ones (RFC 4279 allows
#: 64 KiB, nobody uses that) while bounding what one message can make us buffer.
MAX_MESSAGE_LEN = 4096
#: Handshake messages buffered per association, partial or complete: a flight has at most three
#: (ServerHello, ServerKeyExchange, ServerHelloDone), the rest is room for reordering.
MAX_BUFFERED_MESSAGES = 8
#: Message bytes buffered per association; a partial message counts its whole length from its
#: first fragment on. Four messages of the longest length fit (a real flight holds a few hundred
#: bytes); anything past it is dropped (the peer retransmits), so a hostile peer cannot make us
#: hold more.
MAX_REASSEMBLY_BYTES = 16 * 1024
#: Disjoint received byte ranges kept per partial message. Real fragmentation arrives in order or
#: a few pieces reordered (a handful of ranges); a fragment that would make more is dropped (the
#: peer's retransmission brings it again), which keeps the cost of a fragment independent of the
#: message length.
MAX_FRAGMENT_RANGES = 16
#: Handshake records read from one datagram, and fragments from one record: a flight is a handful
#: of records of one message each, while a hostile 64 KB datagram can hold 4,600 tiny records or
#: 5,000 one-byte fragments; the rest of such a datagram is ignored.
MAX_RECORDS_PER_DATAGRAM = 32
MAX_FRAGMENTS_PER_RECORD = 8


def handshake_message(msg_type: int, seq: int, body: bytes) -> bytes:
    """One unfragmented DTLS handshake message (also its form in the transcript hash)."""
    n = len(body)
    # One struct call for the header (fragment offset 0, fragment length n): each side builds
    # and hashes a dozen of these per handshake.
    return _FRAGMENT_HEADER.pack(msg_type, n >> 16, n & 0xFFFF, seq, 0, 0, n >> 16, n & 0xFFFF) + body


def fragment_message(message: bytes, room: int) -> list[bytes]:
    """``message`` (one whole handshake message) as fragments of at most ``room`` body bytes."""
    if len(message) - HS_HEADER_LEN <= room:
        return [message]  # the usual case: it fits (no slices made)
    header, body = message[:HS_HEADER_LEN], message[HS_HEADER_LEN:]
    return [header[:6] + offset.to_bytes(3, "big") + len(chunk).to_bytes(3, "big") + chunk
            for offset in range(0, len(body), room) for chunk in (body[offset : offset + room],)]

def parse_extensions(data: bytes) -> set[int]:
    """Extension types in a hello's extension block (which may be absent)."""
    if not data:
        return set()
    total = int.from_bytes(data[:2], "big")
    if total != len(data) - 2:
        raise ValueError("extension block length")
    found = set()
    offset = 2
    while offset < len(data):
        ext_type = int.from_bytes(data[offset : offset + 2], "big")
        size = int.from_bytes(data[offset + 2 : offset + 4], "big")
        offset += 4 + size
        if offset > len(data):
            raise ValueError("extension length")
        found.add(ext_type)
    return found


#: A handshake fragment's header, 24-bit fields split in 8 + 16 bits (RFC 6347 4.2.2).
_FRAGMENT_HEADER = struct.Struct("!BBHHBHBH")

#: ``(msg_type, length of the whole message, message_seq, fragment_offset, fragment bytes)``
Fragment = tuple[int, int, int, int, bytes]


def fragments(data: bytes, limit: int = MAX_FRAGMENTS_PER_RECORD) -> list[Fragment]:
    """The handshake fragments in one record's payload (at most ``limit``); stops quietly at a
    malformed one, or one of a message longer than :data:`MAX_MESSAGE_LEN`.

    Plain tuples and one struct call per fragment: this runs for every handshake record.
    """
    found: list[Fragment] = []
    offset = 0
    end = len(data)
    while offset + HS_HEADER_LEN <= end and len(found) < limit:
        msg_type, len_hi, len_lo, seq, off_hi, off_lo, frag_hi, frag_lo = _FRAGMENT_HEADER.unpack_from(data, offset)
        length, frag_offset, frag_len = len_hi << 16 | len_lo, off_hi << 16 | off_lo, frag_hi << 16 | frag_lo
        start = offset + HS_HEADER_LEN
        if start + frag_len > end or frag_offset + frag_len > length or length > MAX_MESSAGE_LEN:
            break
        found.append((msg_type, length, seq, frag_offset, data[start : start + frag_len]))
        offset = start + frag_len
    return found


#: A record header and the handshake header of the (first) message it holds, in one unpack: type,
#: version, epoch, sequence (16 + 32 bits), length; msg_type, length (8 + 16 bits), message_seq,
#: fragment offset (8 + 16), fragment length (8 + 16). The server's ClientHello parse uses it too.
RECORD_AND_MESSAGE_HEADERS = struct.Struct("!BHHHIHBBHHBHBH")
#: ``(msg_type, message_seq, body, whole message)``
WholeMessage = tuple[int, int, bytes, bytes]


def whole_messages(datagram: bytes, limit: int = MAX_RECORDS_PER_DATAGRAM) -> list[WholeMessage] | None:
    """The messages of a datagram made only of epoch-0 handshake records that each hold one whole,
    unfragmented message (a flight as every peer sends it), in one pass; None for any other datagram,
    which the general path (records, fragments, the :class:`Reassembler`) then takes."""
    found: list[WholeMessage] = []
    offset = 0
    end = len(datagram)
    unpack = RECORD_AND_MESSAGE_HEADERS.unpack_from
    while offset < end:
        if offset + RECORD_AND_MESSAGE_HEADERS.size > end or len(found) >= limit:
            return None
        (content_type, _, epoch, _, _, record_len, msg_type, len_hi, len_lo, seq, off_hi, off_lo, frag_hi,
         frag_lo) = unpack(datagram, offset)
        length = len_hi << 16 | len_lo
        stop = offset + records.HEADER_LEN + record_len
        if (content_type != records.HANDSHAKE or epoch or record_len != HS_HEADER_LEN + length or off_hi or off_lo
                or (frag_hi << 16 | frag_lo) != length or length > MAX_MESSAGE_LEN or stop > end):
            return None
        whole = datagram[offset + records.HEADER_LEN : stop]
        found.append((msg_type, seq, whole[HS_HEADER_LEN:], whole))
        offset = stop
    return found or None


#: What filing a record's fragments reports (:meth:`Reassembler.add_record`), as bits: a fragment
#: of a message already handed out (the peer repeated a flight), a message became whole (there
#: may be one to hand out), a cap refused a fragment (the rest of the datagram is not read).
REPEATED, READY, REFUSED = 1, 2, 4


class _Partial:
    """A message whose fragments are still coming: its bytes and the disjoint byte ranges
    received so far (``starts[i]:ends[i]``, sorted, never touching: neighbours merge)."""

    __slots__ = ("msg_type", "body", "starts", "ends")

    def __init__(self, msg_type: int, length: int) -> None:
        self.msg_type = msg_type
        self.body = bytearray(length)
        self.starts: list[int] = []
        self.ends: list[int] = []

    def receive(self, offset: int, source: bytes, start: int, size: int) -> bool | None:
        """File ``source[start : start + size]`` at ``offset``: True once the message is whole,
        None when the fragment was dropped because it would make more than
        :data:`MAX_FRAGMENT_RANGES` ranges. A fragment whose bytes are all here already costs
        two comparisons (no copy, no merge): hostile floods are mostly that."""
        low, high = offset, offset + size
        starts, ends = self.starts, self.ends
        first = bisect_left(ends, low)  # the first range that ends at or after our start
        if first < len(starts) and starts[first] <= low and high <= ends[first]:
            return False  # a duplicate
        stop = bisect_right(starts, high)  # past the last range that starts at or before our end
        if len(starts) - (stop - first) + 1 > MAX_FRAGMENT_RANGES:
            return None
        if first < stop:  # overlapping or touching ranges merge with ours
            low, high = min(low, starts[first]), max(high, ends[stop - 1])
        starts[first:stop] = [low]
        ends[first:stop] = [high]
        self.body[offset : offset + size] = source[start : start + size]
        return high - low == len(self.body)


class Reassembler:
    """The peer's handshake fragments in, whole messages out in message_seq order.

    ``next_seq`` is the message to hand out next; a side that does not know it yet
    (the client before the ServerHello) leaves it None and calls :meth:`start_at`.
    Bounded whatever the peer sends: :data:`MAX_BUFFERED_MESSAGES` messages,
    :data:`MAX_REASSEMBLY_BYTES` bytes, :data:`MAX_FRAGMENT_RANGES` ranges per message,
    so memory and the cost of a fragment do not grow with what the peer claims.
    """

    def __init__(self, next_seq: int | None = None) -> None:
        self.next_seq = next_seq
        self._complete: dict[int, tuple[int, bytes]] = {}
        self._partial: dict[int, _Partial] = {}

    @property
    def empty(self) -> bool:
        """Nothing held, whole or partial."""
        return not self._complete and not self._partial

    @property
    def buffered(self) -> int:
        """Message bytes held, partial (their whole length) and complete: at most
        :data:`MAX_BUFFERED_MESSAGES` to add up, so summed when asked rather than kept."""
        return sum(len(m) for _, m in self._complete.values()) + sum(len(p.body) for p in self._partial.values())

    def add(self, fragment: Fragment) -> bool:
        """File one fragment; True when it belongs to a message already handed out."""
        msg_type, length, seq, offset, data = fragment
        return bool(self._file(msg_type, length, seq, offset, data, 0, len(data)) & REPEATED)

    def add_record(self, payload: bytes, start: int = 0, skip: int = -1) -> int:
        """File the handshake fragments of one record's payload (``payload[start:]``), as
        :func:`fragments` finds them; returns :data:`REPEATED`, :data:`READY` and
        :data:`REFUSED` bits. Stops at the first fragment a cap refused. Fragments of message
        type ``skip`` are dropped (the record's epoch may not carry that message).

        The server's hot path for hostile input (a datagram of tiny fragments): fragments are
        filed as they are parsed, and a duplicate's bytes are never copied.
        """
        flags = 0
        offset = start
        end = len(payload)
        count = 0
        partials = self._partial
        unpack = _FRAGMENT_HEADER.unpack_from
        while offset + HS_HEADER_LEN <= end and count < MAX_FRAGMENTS_PER_RECORD:
            msg_type, len_hi, len_lo, seq, off_hi, off_lo, frag_hi, frag_lo = unpack(payload, offset)
            length, frag_offset, frag_len = len_hi << 16 | len_lo, off_hi << 16 | off_lo, frag_hi << 16 | frag_lo
            body = offset + HS_HEADER_LEN
            offset = body + frag_len
            count += 1
            if offset > end or frag_offset + frag_len > length or length > MAX_MESSAGE_LEN:
                break
            if msg_type == skip:
                continue
            # Inline, the case a flood is made of: bytes of a partial message already here.
            # (A partial message is always inside the window of message numbers.)
            partial = partials.get(seq)
            if partial is not None and frag_len and partial.msg_type == msg_type and len(partial.body) == length:
                ends = partial.ends
                i = bisect_left(ends, frag_offset)
                if i < len(ends) and partial.starts[i] <= frag_offset and frag_offset + frag_len <= ends[i]:
                    continue
            flags |= self._file(msg_type, length, seq, frag_offset, payload, body, frag_len)
            if flags & REFUSED:
                break
        return flags

    def _file(self, msg_type: int, length: int, seq: int, offset: int, source: bytes, start: int, size: int) -> int:
        """File the fragment ``source[start : start + size]`` (bytes copied only if kept)."""
        if self.next_seq is not None:
            if seq < self.next_seq:
                return REPEATED
            if seq >= self.next_seq + MAX_BUFFERED_MESSAGES:
                return REFUSED  # far ahead of anything a flight holds
        partial = self._partial.get(seq)
        if partial is None:
            if seq in self._complete or length > MAX_MESSAGE_LEN:
                return 0
            held = len(self._complete) + len(self._partial)  # none held: nothing to sum (the common case)
            if held >= MAX_BUFFERED_MESSAGES or (held and self.buffered + length > MAX_REASSEMBLY_BYTES):
                return REFUSED
            if offset == 0 and size == length:  # the common case: not fragmented
                self._complete[seq] = (msg_type, source[start : start + size] if start or size != len(source)
                                       else source)
                return READY
            if not size:
                return 0
            partial = self._partial[seq] = _Partial(msg_type, length)
        elif partial.msg_type != msg_type or len(partial.body) != length or not size:
            return 0
        whole = partial.receive(offset, source, start, size)
        if whole is None:
            return REFUSED
        if whole:
            self._complete[seq] = (msg_type, bytes(partial.body))
            del self._partial[seq]
            return READY
        return 0

    def start_at(self, msg_type: int) -> bool:
        """Start handing out at the buffered message of ``msg_type``; False if none is complete."""
        seq = next((s for s, (t, _) in self._complete.items() if t == msg_type), None)
        if seq is None:
            return False
        self.next_seq = seq
        for early in [s for s in self._complete if s < seq]:
            del self._complete[early]
        for early in [s for s in self._partial if s < seq]:
            del self._partial[early]
        return True

    def pop(self) -> tuple[int, int, bytes] | None:
        """``(type, message_seq, body)`` of the next message once it is complete."""
        if self.next_seq is None or (message := self._complete.pop(self.next_seq, None)) is None:
            return None
        self.next_seq += 1
        return message[0], self.next_seq - 1, message[1]
