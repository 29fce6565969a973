"""The native DTLS 1.2 PSK handshake's suites and key schedule (RFC 4279 2, RFC 7627 4).

Which OpenSSL cipher names loadgen handshakes itself (:data:`NATIVE_SUITES`), and the
secrets both sides derive from the pre-shared key; the PRF and the record keys are
:mod:`.record_layer`'s.
"""

from __future__ import annotations

import functools
from typing import Any

from loadgen.protocol.native.record_layer import SUITES, Prf, Suite

#: IANA numbers of the PSK AEAD suites handled natively, by OpenSSL name.
NATIVE_SUITES = {
    "PSK-AES128-GCM-SHA256": 0x00A8,
    "PSK-AES256-GCM-SHA384": 0x00A9,
    "PSK-CHACHA20-POLY1305": 0xCCAB,
    "PSK-AES128-CCM": 0xC0A4,
    "PSK-AES256-CCM": 0xC0A5,
    "PSK-AES128-CCM8": 0xC0A8,
    "PSK-AES256-CCM8": 0xC0A9,
}
SUITE_NAMES = {code: name for name, code in NATIVE_SUITES.items()}


def native_suites(ciphers: str) -> tuple[int, ...] | None:
    """The suites of an OpenSSL cipher list when loadgen handles every one, else None."""
    names = [n.strip() for n in ciphers.split(":") if n.strip() and not n.strip().startswith("@")]
    if not names or any(n.upper() not in NATIVE_SUITES for n in names):
        return None
    return tuple(dict.fromkeys(NATIVE_SUITES[n.upper()] for n in names))


def suite(code: int) -> Suite:
    return SUITES[SUITE_NAMES[code]]

def premaster_secret(psk: bytes) -> bytes:
    """RFC 4279 2: with plain PSK the "other secret" is as many zero bytes as the key."""
    n = len(psk).to_bytes(2, "big")
    return n + bytes(len(psk)) + n + psk


@functools.lru_cache(maxsize=256)
def _premaster_prf(psk: bytes, hash_fn: Any) -> Prf:
    """The PRF keyed with a PSK's premaster secret: the same for every handshake with that key
    (a server's one shared key, a client's per-user keys), so its HMAC states are made once."""
    return Prf(premaster_secret(psk), hash_fn)


def master_secret(psk: bytes, hash_fn: Any, *, session_hash: bytes | None, randoms: bytes) -> bytes:
    """RFC 7627 4 when both sides agreed to the extended master secret, else RFC 5246 8.1."""
    if session_hash is not None:
        return _premaster_prf(psk, hash_fn)(b"extended master secret", session_hash, 48)
    return _premaster_prf(psk, hash_fn)(b"master secret", randoms, 48)
