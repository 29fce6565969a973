"""The DTLS 1.2 record layer for application data, after OpenSSL finished the handshake.

Why: an established OpenSSL DTLS connection holds about 50 KiB (record-layer buffers
it keeps for the connection's lifetime), which caps how many associations a process
can hold. Once the handshake is over, all an association needs is its keys, two
sequence numbers and a replay window. We take the negotiated secrets from the
connection, derive the key block (RFC 5246 5, 6.3), drop the ``SSL`` object, and seal
and open records here with ``cryptography``'s AEAD ciphers (RFC 6347 4.1, RFC 5288,
RFC 6655, RFC 7905). Only AEAD suites are handled; anything else stays in OpenSSL.

GCM and ChaCha20-Poly1305 go through the optional C accelerator ``_aead`` when it was built at
install (see ``setup.py``): one OpenSSL context per direction, 1.2 KiB, where a ``cryptography``
object keeps an encryption and a decryption context, 2.4 KiB, and a record layer needs one object
per direction (:data:`ACCELERATED` says which is in use; ``LOADGEN_PURE_PYTHON=1`` refuses the
accelerator, for tests and comparisons).
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESCCM, AESGCM, ChaCha20Poly1305

from loadgen.protocol.errors import LocalProtocolError
from loadgen.protocol.native import records

if TYPE_CHECKING:
    from hashlib import _Hash

try:
    if os.environ.get("LOADGEN_PURE_PYTHON"):
        raise ImportError("LOADGEN_PURE_PYTHON is set")
    from loadgen.protocol.native import _aead
except ImportError:  # not built (no gcc or OpenSSL headers at install), or refused
    _aead = None  # type: ignore[assignment]

#: Whether GCM and ChaCha20-Poly1305 records, and the PRF, go through the C accelerator.
ACCELERATED = _aead is not None

#: ``hashlib.sha256`` and its kind: ``factory()`` or ``factory(data)`` gives a hash object.
HashFactory = Callable[..., "_Hash"]

_EPOCH_SEQ = struct.Struct("!HHI")  # epoch, then the 48-bit sequence number as 16 + 32 bits
_AAD_TAIL = struct.Struct("!BHH")  # type, version, plaintext length
_SEAL_HEAD = struct.Struct("!BH8sH")  # a sealed record's header: type, version, epoch + sequence, length
WINDOW = 64  # replay window (RFC 6347 4.1.2.6)
_WINDOW_MASK = (1 << WINDOW) - 1


class Aead(Protocol):
    """What ``cryptography``'s AEAD ciphers (AESGCM, AESCCM, ChaCha20Poly1305) have in common."""

    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...


@dataclass(frozen=True)
class Suite:
    """What the record layer needs to know about one AEAD cipher suite."""

    key_len: int
    fixed_iv_len: int  # 4 (salt; 8-byte explicit nonce per record) or 12 (ChaCha20: no explicit nonce)
    tag_len: int
    aead: Callable[[bytes], Aead]  # factory(key) -> AEAD object
    prf_hash: HashFactory = hashlib.sha256
    evp: str = ""  # OpenSSL's name of the AEAD, for the accelerator ("": cryptography's class always)

    def direction(self, key: bytes, *, seals: bool) -> Aead:
        """The AEAD for one direction: the accelerator's context, keyed for sealing or for opening
        only, when it is built and has this cipher; else ``cryptography``'s object."""
        if self.evp and _aead is not None:
            return _aead.Context(self.evp, key, seals)
        return self.aead(key)


def _ccm(tag: int) -> Callable[[bytes], Aead]:
    return lambda key: AESCCM(key, tag_length=tag)


#: OpenSSL cipher names -> suite parameters. Both PSK and ECDHE/DHE variants share them.
SUITES: dict[str, Suite] = {}
for _kx in ("PSK", "DHE-PSK", "ECDHE-PSK", "RSA-PSK", "ECDHE-ECDSA", "ECDHE-RSA", "DHE-RSA"):
    SUITES[f"{_kx}-AES128-GCM-SHA256"] = Suite(16, 4, 16, AESGCM, evp="AES-128-GCM")
    SUITES[f"{_kx}-AES256-GCM-SHA384"] = Suite(32, 4, 16, AESGCM, hashlib.sha384, evp="AES-256-GCM")
    SUITES[f"{_kx}-CHACHA20-POLY1305"] = Suite(32, 12, 16, ChaCha20Poly1305, evp="ChaCha20-Poly1305")
    SUITES[f"{_kx}-AES128-CCM"] = Suite(16, 4, 16, _ccm(16))
    SUITES[f"{_kx}-AES256-CCM"] = Suite(32, 4, 16, _ccm(16))
    SUITES[f"{_kx}-AES128-CCM8"] = Suite(16, 4, 8, _ccm(8))
    SUITES[f"{_kx}-AES256-CCM8"] = Suite(32, 4, 8, _ccm(8))


class Prf:
    """The TLS 1.2 PRF keyed with one secret: ``Prf(secret)(label, seed, length)`` is
    P_hash(secret, label + seed) (RFC 5246 5).

    With the C accelerator the whole expansion is one call (``_aead.p_hash``: a handshake
    side's PRF took 10 us in Python, where the hashing is 1.5). Else, and for :meth:`mac`,
    HMAC (RFC 2104) is spelled out over hashlib: the keyed inner and outer states are
    computed once per secret (on first use) and copied per block, a third of what
    ``hmac.digest`` costs per block (an OpenSSL 3 MAC fetch each time). Keep one per master
    secret: the key block and both Finished messages come from it.
    """

    __slots__ = ("_secret", "_hash", "_digest", "_states")

    def __init__(self, secret: bytes, hash_fn: HashFactory = hashlib.sha256) -> None:
        self._secret = secret
        self._hash = hash_fn
        self._digest = _P_HASH_DIGESTS.get(hash_fn)  # None: the Python path
        self._states: tuple[_Hash, _Hash] | None = None

    def _keyed(self) -> tuple[_Hash, _Hash]:
        inner, outer = self._hash(), self._hash()
        secret = self._secret
        if len(secret) > inner.block_size:
            secret = self._hash(secret).digest()
        key = secret.ljust(inner.block_size, b"\x00")
        inner.update(key.translate(_IPAD))
        outer.update(key.translate(_OPAD))
        self._states = inner, outer
        return inner, outer

    def mac(self, message: bytes) -> bytes:
        """HMAC(secret, message), from the keyed states."""
        inner, outer = self._states or self._keyed()
        inner = inner.copy()
        inner.update(message)
        outer = outer.copy()
        outer.update(inner.digest())
        return outer.digest()

    def __call__(self, label: bytes, seed: bytes, length: int) -> bytes:
        if _aead is not None and (digest := self._digest) is not None:  # read per call: tests switch backends
            return _aead.p_hash(digest, self._secret, label, seed, length)
        seed = label + seed
        out = b""
        a = seed
        while len(out) < length:
            a = self.mac(a)
            out += self.mac(a + seed)
        return out[:length]


#: The digests ``_aead.p_hash`` takes, by hashlib factory (another hash takes the Python path).
_P_HASH_DIGESTS: dict[object, str] = {hashlib.sha256: "sha256", hashlib.sha384: "sha384"}


def prf(secret: bytes, label: bytes, seed: bytes, length: int, hash_fn: HashFactory = hashlib.sha256) -> bytes:
    """The TLS 1.2 PRF, once (see :class:`Prf`)."""
    return Prf(secret, hash_fn)(label, seed, length)


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def keys(suite: Suite, master_key: bytes | Prf, *, client_random: bytes, server_random: bytes,
         is_client: bool) -> tuple[Aead, Aead, bytes, bytes]:
    """One side's ``(sealer, opener, write_iv, read_iv)`` from the master secret's key block
    (RFC 5246 6.3: the client's write key, the server's, then their fixed IVs). DTLS 1.2 and
    TLS 1.2 derive them alike."""
    n_key, n_iv = suite.key_len, suite.fixed_iv_len
    master = master_key if isinstance(master_key, Prf) else Prf(master_key, suite.prf_hash)
    block = master(b"key expansion", server_random + client_random, 2 * (n_key + n_iv))
    client_key, server_key = block[:n_key], block[n_key : 2 * n_key]
    client_iv, server_iv = block[2 * n_key : 2 * n_key + n_iv], block[2 * n_key + n_iv :]
    write_key, read_key = (client_key, server_key) if is_client else (server_key, client_key)
    write_iv, read_iv = (client_iv, server_iv) if is_client else (server_iv, client_iv)
    return suite.direction(write_key, seals=True), suite.direction(read_key, seals=False), write_iv, read_iv


def whole_records(aead: Aead) -> bool:
    """Whether ``aead`` is the accelerator's context, which seals and opens whole records
    (header, nonce and associated data in C as well)."""
    return _aead is not None and isinstance(aead, _aead.Context)


class RecordLayer:
    """Seals and opens epoch-1 records for one side of an established association."""

    # One per association for as long as it is up: slots, not a dict.
    __slots__ = ("_write_iv", "_read_iv", "_sealer", "_opener", "_explicit", "_tag_len", "overhead", "_version",
                 "_epoch", "_write_seq", "_read_top", "_read_window", "_whole")

    def __init__(self, suite: Suite, *, master_key: bytes | Prf, client_random: bytes, server_random: bytes,
                 is_client: bool, write_seq: int, read_seq: int, version: int = records.DTLS_1_2) -> None:
        self._sealer, self._opener, self._write_iv, self._read_iv = keys(
            suite, master_key, client_random=client_random, server_random=server_random, is_client=is_client)
        # The accelerator seals and opens whole records (header, nonce, associated data in C as well).
        self._whole = whole_records(self._sealer)
        self._explicit = suite.fixed_iv_len == 4
        self._tag_len = suite.tag_len
        #: Bytes a record adds to its plaintext besides the header (explicit nonce, tag).
        self.overhead = (8 if self._explicit else 0) + suite.tag_len
        self._version = version
        self._epoch = 1
        self._write_seq = write_seq  # next sequence number to use
        self._read_top = read_seq  # highest sequence number accepted so far
        self._read_window = 1  # bit i set: (read_top - i) seen

    @property
    def can_seal(self) -> bool:
        """False once the sequence numbers are used up (:meth:`seal` would raise)."""
        return self._write_seq <= records.MAX_SEQUENCE

    def _nonce(self, iv: bytes, epoch_seq: bytes, explicit: bytes) -> bytes:
        if self._explicit:
            return iv + explicit
        # RFC 7905: the 64-bit record sequence number, left-padded, XORed into the 12-byte IV.
        return bytes(a ^ b for a, b in zip(iv, b"\x00\x00\x00\x00" + epoch_seq, strict=True))

    def seal(self, content_type: int, plaintext: bytes) -> bytes:
        """One encrypted record carrying ``plaintext``.

        Raises LocalProtocolError once the 48-bit sequence numbers are used up (RFC 6347
        4.1: a sequence number must never repeat under one key).
        """
        seq = self._write_seq
        if seq > records.MAX_SEQUENCE:
            raise LocalProtocolError("record sequence numbers exhausted: the association cannot send any more")
        self._write_seq = seq + 1
        if self._whole:
            return self._sealer.seal_record(  # type: ignore[attr-defined,no-any-return]  # an _aead.Context
                content_type, self._version, self._epoch << 48 | seq, self._write_iv, plaintext)
        epoch_seq = _EPOCH_SEQ.pack(self._epoch, seq >> 32, seq & 0xFFFFFFFF)
        aad = epoch_seq + _AAD_TAIL.pack(content_type, self._version, len(plaintext))
        if self._explicit:
            sealed = self._sealer.encrypt(self._write_iv + epoch_seq, plaintext, aad)
            return _SEAL_HEAD.pack(content_type, self._version, epoch_seq, 8 + len(sealed)) + epoch_seq + sealed
        sealed = self._sealer.encrypt(self._nonce(self._write_iv, epoch_seq, b""), plaintext, aad)
        return _SEAL_HEAD.pack(content_type, self._version, epoch_seq, len(sealed)) + sealed

    def open(self, record: bytes) -> tuple[int, bytes] | None:
        """``(content_type, plaintext)`` of one epoch-1 record, or None if it must be dropped
        (wrong epoch, replayed, or failing authentication: DTLS drops such records silently)."""
        if len(record) < records.HEADER_LEN or record[3:5] != b"\x00\x01":
            return None
        seq = int.from_bytes(record[5:11], "big")
        if seq <= self._read_top and not self._fresh(seq):
            return None
        if self._whole:
            opened = self._opener.open_record(record, self._read_iv, self._version)  # type: ignore[attr-defined]
            if opened is None:
                return None
            self._accept(seq)
            return record[0], opened
        epoch_seq = record[3:11]
        if self._explicit:  # the 8-byte explicit nonce first
            nonce, ciphertext = self._read_iv + record[13:21], record[21:]
        else:
            nonce, ciphertext = self._nonce(self._read_iv, epoch_seq, b""), record[13:]
        if not self._tag_len <= len(ciphertext) <= records.MAX_PLAINTEXT + self._tag_len:
            return None  # too short to hold a tag, or more plaintext than a record may carry
        aad = epoch_seq + _AAD_TAIL.pack(record[0], self._version, len(ciphertext) - self._tag_len)
        try:
            plaintext = self._opener.decrypt(nonce, ciphertext, aad)
        except InvalidTag:
            return None
        self._accept(seq)
        return record[0], plaintext

    def open_datagram(self, datagram: bytes) -> list[tuple[int, bytes]]:
        """``(content_type, plaintext)`` of each application-data or alert record in
        ``datagram`` that is fresh and authentic; everything else is dropped."""
        if records.is_one_record(datagram) and datagram[0] == records.APPLICATION_DATA:
            opened = self.open(datagram)  # the hot path: one record, one ping or reply
            return [opened] if opened is not None else []
        found = []
        for content_type, _, raw in records.split(datagram):
            if content_type in (records.APPLICATION_DATA, records.ALERT) and (opened := self.open(raw)):
                found.append(opened)
        return found

    def _fresh(self, seq: int) -> bool:
        if seq > self._read_top:
            return True
        offset = self._read_top - seq
        return offset < WINDOW and not (self._read_window >> offset) & 1

    def _accept(self, seq: int) -> None:
        if seq > self._read_top:
            shift = seq - self._read_top
            # A jump past the window leaves only the new top seen; shifting by the jump
            # itself would build a J-bit integer (a peer picks J up to 2^48).
            self._read_window = 1 if shift >= WINDOW else ((self._read_window << shift) | 1) & _WINDOW_MASK
            self._read_top = seq
        else:
            self._read_window |= 1 << (self._read_top - seq)
