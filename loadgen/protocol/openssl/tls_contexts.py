"""TLS contexts: what one is made of (:class:`TlsOptions`), and building the pyOpenSSL
contexts many :class:`~loadgen.protocol.openssl.tls.TlsEngine` share, with their callbacks.

Contexts cover QtSSLSocket's settings: CA file (used first) and CA directory (hashed
names), certificate and key paths (one file may hold both), cipher restriction, verify
modes, hostname checking, protocol version bounds, session resumption and SNI; or PSK,
for TLS 1.2 PSK suites and for TLS 1.3 external PSKs. For TLS 1.3, OpenSSL falls back
to the TLS 1.2-style PSK callbacks when no ``psk_use_session`` callback is set and
then uses the key with SHA-256 suites only, which is why PSK contexts offer just those.

The callbacks reach the connection they run for through its app data, a :class:`ConnState`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from OpenSSL import SSL, crypto

from loadgen.protocol.credentials import KeyStore, PskChooser
from loadgen.protocol.dtls_contexts import DEFAULT_PSK_CIPHERS
from loadgen.protocol.errors import ConfigError
from loadgen.protocol.openssl import bindings  # the one module touching private OpenSSL bindings
from loadgen.protocol.openssl.connection import openssl_reason

VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
#: TLS 1.3 suites usable with a callback PSK (OpenSSL binds such a key to SHA-256).
PSK_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"

VerifyMode = Literal["none", "peer", "require"]
#: TLS 1.3 PSK key-exchange modes (RFC 8446 4.2.9): with (EC)DHE, or the PSK alone.
PSK_MODES = ("psk_dhe_ke", "psk_ke")
#: TLS 1.3 PSK identities of one ClientHello the server looks up (a client offers a ticket and
#: its external identity); a hostile hello offering 1,500 gets the rest refused unlooked-up.
MAX_PSK_IDENTITIES = 8


def psk_modes_problem(modes: tuple[str, ...]) -> str | None:
    """What is wrong with a ``psk_modes`` list for OpenSSL, or None when it can be used."""
    unknown = [m for m in modes if m not in PSK_MODES]
    if unknown:
        return f"unknown PSK mode {unknown[0]!r} (expected psk_dhe_ke, psk_ke)"
    if len(set(modes)) != len(modes):
        return "a PSK mode is listed twice"
    if "psk_dhe_ke" not in modes:
        # OpenSSL always offers and accepts psk_dhe_ke; psk_ke can only be added (and preferred).
        return "psk_dhe_ke must be one of the modes: OpenSSL always offers and accepts it (psk_ke can be added)"
    return None


@dataclass(frozen=True)
class TlsOptions:
    """What a TLS context is made of (QtSSLSocket's setters, plus versions and resumption).

    ``verify``: ``none`` checks nothing; ``peer`` verifies the peer's certificate (a server
    asks for a client certificate but accepts a client without one); ``require`` is
    ``peer`` and, on a server, refuses clients without a certificate.
    """

    min_version: Literal["1.2", "1.3"] = "1.2"
    max_version: Literal["1.2", "1.3"] = "1.3"
    ciphers: str | None = None  # TLS 1.2 cipher list (OpenSSL syntax); None = OpenSSL's default
    ciphersuites: str | None = None  # TLS 1.3 suites; None = OpenSSL's default (SHA-256 only with PSK)
    ca_file: str | Path | None = None
    ca_dir: str | Path | None = None  # hashed names (``openssl rehash``), searched after ca_file
    cert_file: str | Path | None = None
    key_file: str | Path | None = None  # None: the key is in cert_file
    verify: VerifyMode = "none"
    check_hostname: bool = True  # client, when verifying: the certificate must name the host
    resumption: bool = True
    #: TLS 1.3 PSK key-exchange modes (external PSKs and resumed tickets alike). A client offers
    #: psk_ke too when listed; a server accepts it when listed, and prefers it when listed first.
    psk_modes: tuple[str, ...] = PSK_MODES


@dataclass(frozen=True, eq=False)
class TlsContext:
    """A configured pyOpenSSL context and what it was built from; share one per many engines."""

    ssl: SSL.Context = field(repr=False)
    options: TlsOptions
    is_server: bool
    psk: bool


def client_context(options: TlsOptions = TlsOptions(), *, psk_mode: bool = False) -> TlsContext:
    """A client context; with ``psk_mode`` each engine needs a :data:`PskChooser`."""
    ctx = _base(SSL.TLS_CLIENT_METHOD, options, psk_only=psk_mode, psk_too=psk_mode)
    if psk_mode:

        def choose(conn: SSL.Connection, hint: bytes | None) -> tuple[bytes, bytes] | None:
            state: ConnState = conn.get_app_data()
            if state.choose is None:
                return None
            identity, key = state.choose(hint)
            state.identity = identity
            return identity, key.value

        bindings.set_client_psk(ctx, choose)
    return TlsContext(ctx, options, is_server=False, psk=psk_mode)


def server_context(options: TlsOptions = TlsOptions(), *, keys: KeyStore | None = None,
                   hint: bytes | None = None) -> TlsContext:
    """A server context: certificate and key from ``options``, PSKs from ``keys``, or both."""
    if options.cert_file is None and keys is None:
        raise ConfigError("a TLS server needs a certificate and key, or pre-shared keys")
    ctx = _base(SSL.TLS_SERVER_METHOD, options, psk_only=options.cert_file is None, psk_too=keys is not None)
    # Needed to resume sessions of clients that sent a certificate; harmless otherwise.
    ctx.set_session_id(b"loadgen")
    if not options.resumption:
        ctx.set_options(SSL.OP_NO_TICKET)
        ctx.set_session_cache_mode(SSL.SESS_CACHE_OFF)
    if keys is not None:
        store = keys

        def lookup(conn: SSL.Connection, identity: bytes) -> bytes | None:
            if not _is_text(identity):
                # A TLS 1.3 resumption ticket: OpenSSL asks about every offered identity, tickets
                # too, before it tries to decrypt them. A store that has a key for any identity
                # (shared, derived) would turn the resumption into an external PSK that fails.
                # (The identity comes whole, NULs included: see bindings.set_server_psk.)
                return None
            state: ConnState = conn.get_app_data()
            if state.psk_offers > MAX_PSK_IDENTITIES:
                return None  # a client offers one or two; the rest of a hostile list costs no lookup
            state.identity = identity
            key = store.key_for(identity)
            state.psk_unknown = key is None
            # Told apart from a resumed ticket: OpenSSL says "reused" for both in TLS 1.3.
            state.external_psk = key is not None
            return key.value if key is not None else None

        def offered(conn: SSL.Connection) -> None:
            state: ConnState = conn.get_app_data()
            state.psk_offers += 1

        bindings.set_server_psk(ctx, lookup, hint, tls13=True, offered=offered)
    return TlsContext(ctx, options, is_server=True, psk=keys is not None)


def _base(method: int, options: TlsOptions, *, psk_only: bool, psk_too: bool) -> SSL.Context:
    ctx = SSL.Context(method)
    _set_versions(ctx, method, options)
    _set_ciphers(ctx, options, psk_only=psk_only, psk_too=psk_too)
    _load_certificates(ctx, options)
    if options.verify == "none":
        ctx.set_verify(SSL.VERIFY_NONE)
    else:
        mode = SSL.VERIFY_PEER
        if options.verify == "require":
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_verify(mode, _verify_callback)
    return ctx


def _set_versions(ctx: SSL.Context, method: int, options: TlsOptions) -> None:
    """Version bounds, and the TLS 1.3 PSK modes and tickets that go with them."""
    low, high = VERSIONS[options.min_version], VERSIONS[options.max_version]
    if low > high:
        raise ConfigError(f"TLS min_version {options.min_version} is above max_version {options.max_version}")
    ctx.set_min_proto_version(low)
    ctx.set_max_proto_version(high)
    ctx.set_options(SSL.OP_NO_RENEGOTIATION)
    problem = psk_modes_problem(options.psk_modes)
    if problem is not None:
        raise ConfigError(f"TLS psk_modes: {problem}")
    if "psk_ke" in options.psk_modes:
        ctx.set_options(bindings.OP_ALLOW_NO_DHE_KEX)
        if method == SSL.TLS_SERVER_METHOD and options.psk_modes[0] == "psk_ke":
            ctx.set_options(bindings.OP_PREFER_NO_DHE_KEX)
    if method == SSL.TLS_CLIENT_METHOD and not options.resumption:
        ctx.set_options(SSL.OP_NO_TICKET)


def _set_ciphers(ctx: SSL.Context, options: TlsOptions, *, psk_only: bool, psk_too: bool) -> None:
    ciphers = options.ciphers
    if ciphers is None and psk_too:
        ciphers = DEFAULT_PSK_CIPHERS if psk_only else f"DEFAULT:{DEFAULT_PSK_CIPHERS}"
    if ciphers is not None:
        if "CCM8" in ciphers.upper() and "@SECLEVEL" not in ciphers.upper():
            ciphers += ":@SECLEVEL=0"  # OpenSSL 3.2+ offers CCM8 (8-byte tag) only at level 0
        try:
            ctx.set_cipher_list(ciphers.encode())
        except SSL.Error:
            raise ConfigError(f"no usable TLS 1.2 cipher in {ciphers!r}") from None
    suites = options.ciphersuites or (PSK_TLS13_SUITES if psk_only else None)
    if suites is not None:
        try:
            ctx.set_tls13_ciphersuites(suites.encode())
        except SSL.Error:
            raise ConfigError(f"no usable TLS 1.3 ciphersuite in {suites!r}") from None


def _load_certificates(ctx: SSL.Context, options: TlsOptions) -> None:
    def load(what: str, path: str | Path, action: Callable[[], object]) -> None:
        try:
            action()
        except (SSL.Error, OSError, TypeError) as exc:
            why = openssl_reason(exc) if isinstance(exc, SSL.Error) else exc
            raise ConfigError(f"cannot load {what} {path}: {why}") from None

    # The CA file is loaded into the store up front; the directory is searched by hashed
    # name only for issuers not found there, so the file's CAs are used first (as in Qt).
    if options.ca_file is not None:
        load("CA file", options.ca_file, lambda: ctx.load_verify_locations(str(options.ca_file)))
    if options.ca_dir is not None:
        load("CA directory", options.ca_dir, lambda: ctx.load_verify_locations(None, str(options.ca_dir)))
    if options.verify != "none" and options.ca_file is None and options.ca_dir is None:
        ctx.set_default_verify_paths()
    if options.cert_file is not None:
        key = options.key_file or options.cert_file
        load("certificate", options.cert_file, lambda: ctx.use_certificate_chain_file(str(options.cert_file)))
        load("private key", key, lambda: ctx.use_privatekey_file(str(key)))
        load("private key", key, ctx.check_privatekey)
    elif options.key_file is not None:
        raise ConfigError("a TLS key file needs a certificate file")


def _verify_callback(conn: SSL.Connection, cert: crypto.X509, errno: int, depth: int, ok: int) -> bool:
    # Keep the first failure: that is the verify result Qt's certCheckFailed reports. OpenSSL
    # forgets a certificate that failed, so keep it too (Qt's peerCertificate() shows it).
    state = conn.get_app_data()
    if not ok and isinstance(state, ConnState) and state.verify_failure is None:
        state.verify_failure = (errno, depth)
        state.failed_certificate = cert.to_cryptography()
    return bool(ok)


@dataclass
class ConnState:
    """Per-connection data the context callbacks reach through the connection's app data."""

    choose: PskChooser | None = None
    identity: bytes | None = None  # PSK identity sent (client) or received (server)
    psk_unknown: bool = False  # server: the identity had no key
    psk_offers: int = 0  # server: TLS 1.3 PSK identities the client offered (0: none, or none in a mode we take)
    external_psk: bool = False  # server: our callback gave a key (a full PSK handshake, not a resumption)
    offered: SSL.Session | None = None  # client: the session set for resumption
    verify_failure: tuple[int, int] | None = None  # (X509 verify code, depth)
    failed_certificate: x509.Certificate | None = None  # the one that failed verification


def _is_text(identity: bytes) -> bool:
    """A PSK identity is text (RFC 4279: UTF-8); an OpenSSL ticket is a hundred random
    bytes or more, never all printable UTF-8 in practice."""
    try:
        return identity.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False
