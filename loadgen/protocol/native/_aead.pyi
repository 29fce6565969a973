"""Type stub of the optional C accelerator (``_aead.c``)."""

def p_hash(digest: str, secret: bytes, label: bytes, seed: bytes, length: int) -> bytes:
    """The TLS 1.2 PRF, P_hash(secret, label + seed) to ``length`` bytes (``digest``: sha256 or sha384)."""

class Context:
    """One direction's AEAD (an OpenSSL cipher name, keyed once): seals only or opens only."""

    def __init__(self, cipher: str, key: bytes, encrypt: bool) -> None: ...
    def encrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...
    def decrypt(self, nonce: bytes, data: bytes, associated_data: bytes | None) -> bytes: ...
    def seal_record(self, content_type: int, version: int, epoch_seq: int, fixed_iv: bytes, plaintext: bytes) -> bytes:
        """One whole DTLS record; ``epoch_seq`` is ``epoch << 48 | sequence``."""
    def open_record(self, record: bytes, fixed_iv: bytes, version: int) -> bytes | None:
        """The plaintext of one whole record, or None when it does not authenticate."""
    def seal_tls_record(self, content_type: int, version: int, sequence: int, fixed_iv: bytes,
                        plaintext: bytes) -> bytes:
        """One whole TLS 1.2 record (5-byte header; the sequence number is implicit)."""
    def open_tls_record(self, record: bytes, sequence: int, fixed_iv: bytes, version: int) -> bytes | None:
        """The plaintext of one whole TLS 1.2 record, or None when it does not authenticate."""
