"""The optional C accelerator for the record layer's AEAD (``loadgen/protocol/native/_aead.c``),
against ``cryptography``'s classes, which it replaces where it is built.

It must give the same bytes for every key, nonce, plaintext and associated data; refuse any record
whose ciphertext, tag, nonce or associated data was changed (never returning the unauthentic
plaintext); seal only with a sealing context and open only with an opening one; and cost less memory
per association, which is why it exists. The record layer's own tests run over both backends
(``tests/test_record_layer.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import sys

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.protocol.native import record_layer

if not record_layer.ACCELERATED:
    if os.environ.get("LOADGEN_REQUIRE_ACCELERATOR"):
        raise RuntimeError("the C accelerator was not built (LOADGEN_REQUIRE_ACCELERATOR is set: CI builds it)")
    pytest.skip("the C accelerator was not built at install", allow_module_level=True)

from loadgen.protocol.native._aead import Context, p_hash  # noqa: E402 - only where it was built

#: OpenSSL's name, key length, and cryptography's class for the same AEAD.
AEADS = [("AES-128-GCM", 16, AESGCM), ("AES-256-GCM", 32, AESGCM), ("ChaCha20-Poly1305", 32, ChaCha20Poly1305)]


@pytest.mark.parametrize(("name", "key_len", "reference"), AEADS)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_seals_and_opens_exactly_as_cryptography_does(name: str, key_len: int, reference: type,
                                                       data: st.DataObject) -> None:
    key = data.draw(st.binary(min_size=key_len, max_size=key_len))
    nonce = data.draw(st.binary(min_size=12, max_size=12))
    plaintext = data.draw(st.binary(max_size=2000))
    aad = data.draw(st.binary(max_size=40))
    ours_seal, ours_open, theirs = Context(name, key, True), Context(name, key, False), reference(key)
    sealed = ours_seal.encrypt(nonce, plaintext, aad)
    assert sealed == theirs.encrypt(nonce, plaintext, aad)
    assert ours_open.decrypt(nonce, sealed, aad) == plaintext
    # A context is keyed once and used for many records: the next record is not the last one's.
    assert ours_seal.encrypt(nonce, plaintext, aad) == sealed


@pytest.mark.parametrize(("name", "key_len", "reference"), AEADS)
def test_any_changed_byte_of_a_record_is_refused(name: str, key_len: int, reference: type) -> None:
    key, nonce, aad, plaintext = os.urandom(key_len), os.urandom(12), os.urandom(13), os.urandom(48)
    sealed = reference(key).encrypt(nonce, plaintext, aad)
    opener = Context(name, key, False)
    for i in range(len(sealed)):  # every byte of the ciphertext and of the tag
        forged = bytearray(sealed)
        forged[i] ^= 0x01
        with pytest.raises(InvalidTag):
            opener.decrypt(nonce, bytes(forged), aad)
    with pytest.raises(InvalidTag):
        opener.decrypt(nonce, sealed, aad[:-1] + bytes([aad[-1] ^ 0x80]))
    with pytest.raises(InvalidTag):
        opener.decrypt(bytes([nonce[0] ^ 1]) + nonce[1:], sealed, aad)
    for short in (b"", sealed[:15]):  # too short to hold a tag
        with pytest.raises(InvalidTag):
            opener.decrypt(nonce, short, aad)
    # Refusals leave the context usable: the authentic record still opens.
    assert opener.decrypt(nonce, sealed, aad) == plaintext


def test_a_context_works_one_way_and_refuses_what_it_cannot_be() -> None:
    key, nonce = os.urandom(16), os.urandom(12)
    sealer, opener = Context("AES-128-GCM", key, True), Context("AES-128-GCM", key, False)
    with pytest.raises(TypeError, match="cannot open"):
        sealer.decrypt(nonce, sealer.encrypt(nonce, b"x", b""), b"")
    with pytest.raises(TypeError, match="cannot seal"):
        opener.encrypt(nonce, b"x", b"")
    with pytest.raises(ValueError, match="12 bytes"):
        sealer.encrypt(b"short", b"x", b"")
    for name, key_len in (("AES-128-GCM", 15), ("AES-128-CBC", 16), ("no-such-cipher", 16)):
        with pytest.raises(ValueError, match="not an AEAD cipher"):
            Context(name, os.urandom(key_len), True)
    assert opener.decrypt(nonce, sealer.encrypt(nonce, b"ping", None), None) == b"ping"


def test_the_record_layer_uses_it_for_gcm_and_chacha_and_cryptography_for_ccm() -> None:
    for cipher, accelerated in (("PSK-AES128-GCM-SHA256", True), ("ECDHE-PSK-CHACHA20-POLY1305", True),
                                ("PSK-AES128-CCM8", False)):
        layer = record_layer.RecordLayer(record_layer.SUITES[cipher], master_key=os.urandom(48),
                                         client_random=os.urandom(32), server_random=os.urandom(32),
                                         is_client=True, write_seq=0, read_seq=0)
        assert isinstance(layer._sealer, Context) is accelerated, cipher  # noqa: SLF001
        assert isinstance(layer._opener, Context) is accelerated, cipher  # noqa: SLF001


_RSS = """
import os, sys
from loadgen.protocol.native import record_layer
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
suite = record_layer.SUITES["PSK-AES128-GCM-SHA256"]
key = os.urandom(16)
before = rss()
held = [(suite.direction(key, seals=True), suite.direction(key, seals=False)) for _ in range(20000)]
print((rss() - before) / len(held))
"""


def _bytes_per_pair(pure: bool) -> float:
    env = {**os.environ, "LOADGEN_PURE_PYTHON": "1" if pure else ""}
    out = subprocess.run([sys.executable, "-c", _RSS], env=env, capture_output=True, text=True, timeout=60,
                         check=True)
    return float(out.stdout)


def test_an_association_s_two_directions_cost_half_the_memory_of_cryptographys() -> None:
    """Measured in fresh processes (freed memory would be reused): cryptography's AESGCM keeps both an
    encryption and a decryption context, ~2.4 KiB an object, two per association."""
    ours, theirs = _bytes_per_pair(pure=False), _bytes_per_pair(pure=True)
    assert ours < 0.6 * theirs, (ours, theirs)
    assert ours < 3000, ours


def _layers(cipher: str, monkeypatch: pytest.MonkeyPatch) -> tuple[record_layer.RecordLayer, ...]:
    """A client and a server record layer through the accelerator, and the same two through cryptography."""
    keys = {"master_key": bytes(range(48)), "client_random": bytes(32), "server_random": bytes(range(32)),
            "write_seq": 1, "read_seq": 0}  # epoch 1 record 0 was the Finished
    suite = record_layer.SUITES[cipher]
    fast = (record_layer.RecordLayer(suite, is_client=True, **keys), record_layer.RecordLayer(suite, is_client=False,
                                                                                              **keys))
    with monkeypatch.context() as m:
        m.setattr(record_layer, "_aead", None)
        pure = (record_layer.RecordLayer(suite, is_client=True, **keys),
                record_layer.RecordLayer(suite, is_client=False, **keys))
    assert fast[0]._whole and not pure[0]._whole  # noqa: SLF001
    return (*fast, *pure)


@pytest.mark.parametrize("cipher", ["PSK-AES128-GCM-SHA256", "PSK-AES256-GCM-SHA384", "PSK-CHACHA20-POLY1305"])
def test_whole_records_are_the_bytes_the_python_record_layer_makes(cipher: str,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """seal_record / open_record build the header, nonce and associated data in C: the same records as the
    Python path's, byte for byte, each side opening the other's; forged, truncated or replayed ones dropped."""
    fast_client, fast_server, pure_client, pure_server = _layers(cipher, monkeypatch)
    for i in range(300):
        plaintext, content_type = os.urandom(i % 97), (23, 21)[i % 2]
        sealed = fast_client.seal(content_type, plaintext)
        assert sealed == pure_client.seal(content_type, plaintext), i
        assert pure_server.open(sealed) == (content_type, plaintext)
        assert fast_server.open(bytes([sealed[0] ^ 1]) + sealed[1:]) is None  # the type is authenticated
        forged = bytearray(sealed)
        forged[-1 - i % len(sealed[13:])] ^= 0x40  # somewhere in the explicit nonce, ciphertext or tag
        assert fast_server.open(bytes(forged)) is None, i
        assert fast_server.open(sealed[:13 + i % 24]) is None, i  # too short to hold a tag
        assert fast_server.open(sealed) == (content_type, plaintext), i
        assert fast_server.open(sealed) is None, i  # a replay
        reply = pure_server.seal(23, plaintext[::-1])
        assert fast_server.seal(23, plaintext[::-1]) == reply
        assert fast_client.open(reply) == (23, plaintext[::-1])


# -- the TLS 1.2 PRF (p_hash) ------------------------------------------------------------------

def rfc5246_p_hash(digest: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """RFC 5246 5 as written there, over the standard library's hmac: the reference."""
    seed = label + seed
    out, a = b"", seed
    while len(out) < length:
        a = hmac.digest(secret, a, digest)
        out += hmac.digest(secret, a + seed, digest)
    return out[:length]


@settings(max_examples=300, deadline=None)
@given(digest=st.sampled_from(["sha256", "sha384"]), secret=st.binary(max_size=300), label=st.binary(max_size=40),
       seed=st.binary(max_size=200), length=st.integers(0, 1024))
def test_p_hash_is_rfc5246s_prf(digest: str, secret: bytes, label: bytes, seed: bytes, length: int) -> None:
    """Secrets shorter and longer than the digest's block (64 or 128 bytes: hashed first), any output length."""
    assert p_hash(digest, secret, label, seed, length) == rfc5246_p_hash(digest, secret, label, seed, length)


def test_p_hash_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="no digest md5"):
        p_hash("md5", b"k", b"l", b"s", 12)
    for length in (-1, 1025):
        with pytest.raises(ValueError, match="over 1024 bytes"):
            p_hash("sha256", b"k", b"l", b"s", length)
    with pytest.raises(ValueError, match="over 1024 bytes"):
        p_hash("sha256", b"k", b"l" * 600, b"s" * 425, 12)


def test_the_prf_goes_through_p_hash_and_the_pure_python_path_gives_the_same_bytes(monkeypatch) -> None:
    """A handshake's PRF (master secret, key block, Finished) is p_hash where it is built; the
    pure-Python path (LOADGEN_PURE_PYTHON=1, another process) derives the same bytes."""
    from loadgen.protocol.native import _aead

    calls: list[str] = []
    real = _aead.p_hash
    monkeypatch.setattr(_aead, "p_hash", lambda digest, *args: calls.append(digest) or real(digest, *args))
    secret, seed = bytes(range(48)), bytes(range(64, 128))
    ours = [record_layer.Prf(secret, h)(b"key expansion", seed, 104) for h in (hashlib.sha256, hashlib.sha384)]
    assert calls == ["sha256", "sha384"]
    script = ("import hashlib, sys; from loadgen.protocol.native import record_layer as r; assert not r.ACCELERATED; "
              f"print(*[r.Prf({secret!r}, h)(b'key expansion', {seed!r}, 104).hex() "
              "for h in (hashlib.sha256, hashlib.sha384)])")
    pure = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "LOADGEN_PURE_PYTHON": "1"}, check=True).stdout.split()
    assert pure == [b.hex() for b in ours]
