"""A hand-built TLS 1.3 ClientHello with external PSKs, for the hostile-identity tests.

The hello is RFC 8446's: supported_versions 1.3, an X25519 key share, psk_key_exchange_modes
and the pre_shared_key extension last, its binders computed with the real key (RFC 8446 4.2.11.2:
HMAC over the transcript hash of the hello truncated before the binders list). So a test can
offer identities a client would never send and still get past the binder check when it wants to,
and a control hello (a known identity, the right key) proves the server answers it with a
ServerHello: the builder is right, and what a hostile hello gets is the server's own doing.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import socket
import struct
import time

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

TLS_AES_128_GCM_SHA256 = 0x1301
PSK_KE, PSK_DHE_KE = 0, 1
HANDSHAKE, ALERT = 22, 21
SERVER_HELLO = 2
#: The largest plaintext record (RFC 8446 5.1): a bigger hello is split over several records.
MAX_RECORD = 16384


def _u8(data: bytes) -> bytes:
    return struct.pack("!B", len(data)) + data


def _u16(data: bytes) -> bytes:
    return struct.pack("!H", len(data)) + data


def _extension(kind: int, body: bytes) -> bytes:
    return struct.pack("!H", kind) + _u16(body)


def _expand_label(secret: bytes, label: bytes, context: bytes, length: int) -> bytes:
    info = struct.pack("!H", length) + _u8(b"tls13 " + label) + _u8(context)
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.digest(secret, block + info + bytes([counter]), "sha256")
        out, counter = out + block, counter + 1
    return out[:length]


def binder(key: bytes, truncated_hello: bytes) -> bytes:
    """The external-PSK binder of ``truncated_hello`` (SHA-256, the default PSK hash)."""
    early = hmac.digest(b"\0" * 32, key, "sha256")
    binder_key = _expand_label(early, b"ext binder", hashlib.sha256(b"").digest(), 32)
    finished_key = _expand_label(binder_key, b"finished", b"", 32)
    return hmac.digest(finished_key, hashlib.sha256(truncated_hello).digest(), "sha256")


def client_hello(identities: list[bytes], key: bytes, *, modes: tuple[int, ...] = (PSK_DHE_KE,)) -> bytes:
    """A ClientHello handshake message offering ``identities``, every binder made with ``key``."""
    share = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    extensions = b"".join((
        _extension(43, _u8(struct.pack("!H", 0x0304))),                      # supported_versions
        _extension(10, _u16(struct.pack("!H", 0x001D))),                      # supported_groups: x25519
        _extension(13, _u16(struct.pack("!HH", 0x0403, 0x0804))),             # signature_algorithms
        _extension(51, _u16(struct.pack("!H", 0x001D) + _u16(share))),        # key_share
        _extension(45, _u8(bytes(modes))),                                    # psk_key_exchange_modes
    ))
    offered = b"".join(_u16(identity) + struct.pack("!I", 0) for identity in identities)
    psk_ext_len = 2 + len(offered) + 2 + len(identities) * 33  # identities, binders (u8 length + 32 bytes each)
    head = (struct.pack("!H", 0x0303) + os.urandom(32) + _u8(os.urandom(32))
            + _u16(struct.pack("!H", TLS_AES_128_GCM_SHA256)) + _u8(b"\0"))
    ext_block_len = len(extensions) + 4 + psk_ext_len
    body_len = len(head) + 2 + ext_block_len
    truncated = (bytes([1]) + struct.pack("!I", body_len)[1:] + head + struct.pack("!H", ext_block_len)
                 + extensions + struct.pack("!HH", 41, psk_ext_len) + _u16(offered))
    one = _u8(binder(key, truncated))
    return truncated + _u16(one * len(identities))


def records(message: bytes) -> bytes:
    """``message`` as plaintext handshake records, split at the record size limit."""
    return b"".join(struct.pack("!BHH", HANDSHAKE, 0x0301, len(chunk)) + chunk
                    for chunk in (message[i:i + MAX_RECORD] for i in range(0, len(message), MAX_RECORD)))


def first_record_type(address: tuple[str, int], message: bytes, timeout: float = 10.0) -> int | None:
    """Send ``message`` to a TLS server; the type of the first record it answers with (None: it closed)."""
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(records(message))
        deadline = time.monotonic() + timeout
        data = b""
        while len(data) < 1 and time.monotonic() < deadline:
            try:
                chunk = sock.recv(5)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            data += chunk
        return data[0] if data else None
