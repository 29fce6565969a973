"""The TLS 1.2 record layer for application data, after OpenSSL finished the handshake.

Why: as for DTLS (:mod:`.record_layer`), an established OpenSSL connection is a large object,
and each record through pyOpenSSL costs several calls into it (write, read the memory BIO,
write the peer's bytes into the other BIO, read until it says "want read"). Once the handshake
is over a client needs its keys and two sequence numbers: this seals and opens TLS 1.2 AEAD
records (RFC 5246 6.2, RFC 5288, RFC 7905) over a byte stream, in one call each when the C
accelerator is built. The sequence numbers are implicit (both sides count from the record
after their Finished), so any record that does not authenticate ends the connection, as
OpenSSL does, with the alert and the error OpenSSL would give (``failure`` below).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

from cryptography.exceptions import InvalidTag

from loadgen.protocol.errors import LoadgenError, error_from_openssl
from loadgen.protocol.native import records
from loadgen.protocol.native.record_layer import Prf, Suite, keys, whole_records

TLS_1_2 = 0x0303
HEADER_LEN = 5
_HEADER = struct.Struct("!BHH")  # type, version, length
_AAD = struct.Struct("!QBHH")  # sequence number, type, version, plaintext length
#: A sequence number must never wrap (RFC 5246 6.1): past it the connection cannot send.
MAX_SEQUENCE = (1 << 64) - 1
HELLO_REQUEST = b"\x00\x00\x00\x00"  # a server asking to renegotiate (RFC 5246 7.4.1.1)
# Alert descriptions (RFC 5246 7.2) this layer sends besides records' own.
BAD_RECORD_MAC, RECORD_OVERFLOW, INTERNAL_ERROR, NO_RENEGOTIATION = 20, 22, 80, 100


class RecordError(Exception):
    """A record that ends the connection: the alert to send and OpenSSL's reason for it."""

    def __init__(self, alert: int, reason: str, *, remote: bool = False) -> None:
        super().__init__(reason)
        self.alert, self.reason, self.remote = alert, reason, remote

    def error(self) -> LoadgenError:
        """The error this ends the connection with: the same code OpenSSL's engine gives."""
        return error_from_openssl(self.reason, remote=self.remote)


class TlsRecordLayer:
    """Seals and opens the application-data epoch's records of one side of a TLS 1.2 connection."""

    # One per connection for as long as it is up: slots, not a dict.
    __slots__ = ("_sealer", "_opener", "_write_iv", "_read_iv", "_whole", "_explicit", "_tag_len", "_overhead",
                 "_write_seq", "_read_seq", "_in")

    def __init__(self, suite: Suite, *, master_key: bytes | Prf, client_random: bytes, server_random: bytes,
                 is_client: bool, write_seq: int = 1, read_seq: int = 1) -> None:
        """``write_seq`` / ``read_seq``: the next sequence numbers, 1 after a handshake (each
        side's Finished was record 0 of the epoch)."""
        self._sealer, self._opener, self._write_iv, self._read_iv = keys(
            suite, master_key, client_random=client_random, server_random=server_random, is_client=is_client)
        self._whole = whole_records(self._sealer)
        self._explicit = suite.fixed_iv_len == 4
        self._tag_len = suite.tag_len
        self._overhead = (8 if self._explicit else 0) + suite.tag_len  # explicit nonce and tag
        self._write_seq = write_seq
        self._read_seq = read_seq
        self._in = b""  # the start of a record whose end has not arrived (at most one record)

    @property
    def can_seal(self) -> bool:
        """False once the sequence numbers are used up (:meth:`seal` would raise)."""
        return self._write_seq <= MAX_SEQUENCE

    def seal(self, content_type: int, plaintext: bytes) -> bytes:
        """``plaintext`` as records of at most 2^14 bytes each (one record when it fits)."""
        if len(plaintext) <= records.MAX_PLAINTEXT:
            return self._seal_one(content_type, plaintext)
        view = memoryview(plaintext)
        return b"".join(self._seal_one(content_type, bytes(view[i : i + records.MAX_PLAINTEXT]))
                        for i in range(0, len(view), records.MAX_PLAINTEXT))

    def alert(self, description: int, *, fatal: bool = True) -> bytes:
        """One sealed alert record (``b""`` when no sequence number is left to number it)."""
        if not self.can_seal:
            return b""
        level = records.ALERT_FATAL if fatal else records.ALERT_WARNING
        return self._seal_one(records.ALERT, bytes((level, description)))

    def receive(self, data: bytes) -> Iterator[tuple[int, bytes]]:
        """``(content_type, plaintext)`` of each whole record ``data`` completes, in order; a partial
        record waits for the rest. Raises :class:`RecordError` at the record that ends the connection,
        after the ones before it were handed over (as OpenSSL delivers what came before a bad record)."""
        if not self._in and len(data) >= HEADER_LEN and len(data) == HEADER_LEN + (data[3] << 8 | data[4]):
            yield self._open(data)  # the hot path: one whole record, one reply
            return
        buffered = self._in + data if self._in else data
        start, end = 0, len(buffered)
        while end - start >= HEADER_LEN:
            length = buffered[start + 3] << 8 | buffered[start + 4]
            if length > records.MAX_RECORD_LEN:  # checked before waiting for it: bounds the buffer
                raise RecordError(RECORD_OVERFLOW, "encrypted length too long")
            if end - start < HEADER_LEN + length:
                break
            record = buffered[start : start + HEADER_LEN + length]
            start += HEADER_LEN + length
            self._in = buffered[start:]  # consumed so far, should the caller stop at this record
            yield self._open(record)
        if end - start >= 3 and buffered[start + 1 : start + 3] != b"\x03\x03":
            raise RecordError(records.PROTOCOL_VERSION, "wrong version number")
        self._in = buffered[start:]

    # -- internals ----------------------------------------------------------

    def _seal_one(self, content_type: int, plaintext: bytes) -> bytes:
        seq = self._write_seq
        if seq > MAX_SEQUENCE:
            raise RecordError(INTERNAL_ERROR, "record sequence numbers exhausted")
        self._write_seq = seq + 1
        if self._whole:
            return self._sealer.seal_tls_record(  # type: ignore[attr-defined,no-any-return]  # an _aead.Context
                content_type, TLS_1_2, seq, self._write_iv, plaintext)
        aad = _AAD.pack(seq, content_type, TLS_1_2, len(plaintext))
        explicit = seq.to_bytes(8, "big")
        sealed = self._sealer.encrypt(self._nonce(self._write_iv, explicit), plaintext, aad)
        if self._explicit:
            return _HEADER.pack(content_type, TLS_1_2, 8 + len(sealed)) + explicit + sealed
        return _HEADER.pack(content_type, TLS_1_2, len(sealed)) + sealed

    def _nonce(self, iv: bytes, explicit: bytes) -> bytes:
        if self._explicit:
            return iv + explicit
        # RFC 7905: the 64-bit sequence number, left-padded, XORed into the 12-byte IV.
        return bytes(a ^ b for a, b in zip(iv, b"\x00\x00\x00\x00" + explicit, strict=True))

    def _open(self, record: bytes) -> tuple[int, bytes]:
        """One whole record (header included), checked in OpenSSL's order: version, length, MAC."""
        if record[1:3] != b"\x03\x03":
            raise RecordError(records.PROTOCOL_VERSION, "wrong version number")
        if len(record) - HEADER_LEN > records.MAX_RECORD_LEN:
            raise RecordError(RECORD_OVERFLOW, "encrypted length too long")
        if len(record) - HEADER_LEN - self._overhead > records.MAX_PLAINTEXT:
            raise RecordError(RECORD_OVERFLOW, "data length too long")
        seq = self._read_seq
        content_type = record[0]
        if self._whole:
            plaintext = self._opener.open_tls_record(record, seq, self._read_iv, TLS_1_2)  # type: ignore[attr-defined]
        else:
            plaintext = self._open_python(record, seq)
        if plaintext is None:
            raise RecordError(BAD_RECORD_MAC, "decryption failed or bad record mac")
        self._read_seq = seq + 1
        return content_type, plaintext

    def _open_python(self, record: bytes, seq: int) -> bytes | None:
        explicit = 8 if self._explicit else 0
        body = record[HEADER_LEN + explicit :]
        if not self._tag_len <= len(body) <= records.MAX_PLAINTEXT + self._tag_len:
            return None
        nonce = self._nonce(self._read_iv, record[HEADER_LEN : HEADER_LEN + 8] if explicit else seq.to_bytes(8, "big"))
        aad = _AAD.pack(seq, record[0], TLS_1_2, len(body) - self._tag_len)
        try:
            return self._opener.decrypt(nonce, body, aad)
        except InvalidTag:
            return None
