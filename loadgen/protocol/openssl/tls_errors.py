"""What a TLS 1.3 PSK handshake failure stands for when OpenSSL's own code misleads.

The codes themselves (and the reason-to-code table) live in :mod:`loadgen.protocol.errors`, the
reason comes from :mod:`.connection`; this module corrects the TLS 1.3 PSK cases, where the alert a
peer sends does not say what went wrong.
"""

from __future__ import annotations

from loadgen.protocol.errors import LoadgenError, PskKeyMismatch, PskModeMismatch, PskUnknownIdentity


def tls13_psk_error(error: LoadgenError, reason: str, *, is_client: bool, modes: tuple[str, ...],
                    key_found: bool, psk_only: bool, offers: int = 0) -> LoadgenError | None:
    """The PSK error a TLS 1.3 handshake failure stands for, when OpenSSL's own code misleads."""
    if is_client:
        return _client_error(error, reason, modes)
    if error.code == "tls-no-suitable-key-share" and key_found and "psk_ke" not in modes:
        return PskModeMismatch(f"{reason} (local): the client's PSK is known but it shares no key-exchange "
                               "group with us, and psk_modes does not accept psk_ke")
    if error.code == "tls-no-suitable-signature-algorithm" and psk_only and not key_found and offers:
        # OpenSSL looks at the identities only when the client's PSK modes include one we take.
        return PskUnknownIdentity(f"{reason} (local): the client offered {offers} TLS 1.3 PSK "
                                  f"identit{'y' if offers == 1 else 'ies'}, none of them one we know")
    if error.code == "tls-no-suitable-signature-algorithm" and psk_only and not key_found:
        return PskModeMismatch(f"{reason} (local): the client offered no TLS 1.3 PSK we could take "
                               f"(none we know, or only in a mode other than {', '.join(modes)})")
    return None


def _client_error(error: LoadgenError, reason: str, modes: tuple[str, ...]) -> LoadgenError | None:
    """A client's side of :func:`tls13_psk_error`: the server's alert after we offered a PSK."""
    if error.code == "tls-illegal-parameter":
        # OpenSSL servers before 3.2 answer a binder that does not verify (the keys differ)
        # with illegal_parameter (later ones with decrypt_error, already psk-key-mismatch).
        return PskKeyMismatch(f"{reason} (peer) after we offered a TLS 1.3 PSK: "
                              "the binder did not verify, the server's key for our identity differs")
    if error.code == "tls-handshake-failure":
        # TLS 1.3 has no unknown_psk_identity alert: a server that does not know the identity
        # ignores the PSK and fails for want of a certificate. A server that knows it but needs
        # psk_ke (no key-exchange group in common) fails with the same alert.
        if "psk_ke" in modes:
            return PskUnknownIdentity(f"{reason} (peer) after we offered a TLS 1.3 PSK: the server probably "
                                      "does not know our identity (or shares no key-exchange group "
                                      "with us and takes no psk_ke)")
        return PskModeMismatch(f"{reason} (peer) after we offered a TLS 1.3 PSK in psk_dhe_ke mode only: "
                               "the server needs psk_ke (no key-exchange group in common), "
                               "or does not know our identity")
    return None
