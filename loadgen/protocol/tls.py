"""TLS engines over pyOpenSSL memory BIOs (no sockets, no gevent), and their contexts.

Same shape as :mod:`loadgen.protocol.dtls`: the transport feeds received bytes with
:meth:`TlsEngine.receive_data` (and :meth:`TlsEngine.receive_eof` when TCP says EOF),
sends whatever :meth:`TlsEngine.data_to_send` returns, and reads events with
:meth:`TlsEngine.next_event`. TCP retransmits for us, so there is no timer.

Contexts cover QtSSLSocket's settings: CA file (used first) and CA directory (hashed
names), certificate and key paths (one file may hold both), cipher restriction, verify
modes, hostname checking, protocol version bounds, session resumption and SNI; or PSK,
for TLS 1.2 PSK suites and for TLS 1.3 external PSKs. For TLS 1.3, OpenSSL falls back
to the TLS 1.2-style PSK callbacks when no ``psk_use_session`` callback is set and
then uses the key with SHA-256 suites only, which is why PSK contexts offer just those.
"""

from __future__ import annotations

import hashlib
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from OpenSSL import SSL, crypto

from .. import psk as bindings  # the one module touching private OpenSSL bindings
from ..credentials import KeyStore, PskChooser
from ..errors import (
    ConfigError,
    LoadgenError,
    LocalProtocolError,
    PeerClosed,
    PskKeyMismatch,
    PskModeMismatch,
    PskUnknownIdentity,
    cert_error,
    error_from_openssl,
)
from .dtls import DEFAULT_PSK_CIPHERS
from .events import ConnectionClosed, ConnectionFailed, DataReceived, Event, HandshakeCompleted

VERSIONS = {"1.2": SSL.TLS1_2_VERSION, "1.3": SSL.TLS1_3_VERSION}
#: TLS 1.3 suites usable with a callback PSK (OpenSSL binds such a key to SHA-256).
PSK_TLS13_SUITES = "TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256"
#: Largest plaintext per SSL_write (one TLS record).
_RECORD = 16384

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
            state: _ConnState = conn.get_app_data()
            if state.chooser is None:
                return None
            identity, key = state.chooser(hint)
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
            state: _ConnState = conn.get_app_data()
            if state.psk_offers > MAX_PSK_IDENTITIES:
                return None  # a client offers one or two; the rest of a hostile list costs no lookup
            state.identity = identity
            key = store.key_for(identity)
            state.psk_unknown = key is None
            # Told apart from a resumed ticket: OpenSSL says "reused" for both in TLS 1.3.
            state.external_psk = key is not None
            return key.value if key is not None else None

        def offered(conn: SSL.Connection) -> None:
            state: _ConnState = conn.get_app_data()
            state.psk_offers += 1

        bindings.set_server_psk(ctx, lookup, hint, tls13=True, offered=offered)
    return TlsContext(ctx, options, is_server=True, psk=keys is not None)


def _base(method: int, options: TlsOptions, *, psk_only: bool, psk_too: bool) -> SSL.Context:
    ctx = SSL.Context(method)
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
    _load_certificates(ctx, options)
    if options.verify == "none":
        ctx.set_verify(SSL.VERIFY_NONE)
    else:
        mode = SSL.VERIFY_PEER
        if options.verify == "require":
            mode |= SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        ctx.set_verify(mode, _verify_callback)
    return ctx


def _load_certificates(ctx: SSL.Context, options: TlsOptions) -> None:
    def load(what: str, path: str | Path, action: Callable[[], object]) -> None:
        try:
            action()
        except (SSL.Error, OSError, TypeError) as exc:
            raise ConfigError(f"cannot load {what} {path}: {_reason(exc) if isinstance(exc, SSL.Error) else exc}") \
                from None

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
    if not ok and isinstance(state, _ConnState) and state.verify_failure is None:
        state.verify_failure = (errno, depth)
        state.failed_certificate = cert.to_cryptography()
    return bool(ok)


class SessionCache:
    """Client sessions kept for resumption, by key (e.g. host, port, server name); LRU-bounded.

    A session can only be resumed through the context that made it (pyOpenSSL enforces
    this), so keep one cache per client context.
    """

    def __init__(self, maxsize: int = 1024) -> None:
        self._sessions: OrderedDict[Hashable, SSL.Session] = OrderedDict()
        self._maxsize = maxsize

    def get(self, key: Hashable) -> SSL.Session | None:
        session = self._sessions.get(key)
        if session is not None:
            self._sessions.move_to_end(key)
        return session

    def put(self, key: Hashable, session: SSL.Session | None) -> None:
        if session is None:
            self._sessions.pop(key, None)
            return
        self._sessions[key] = session
        self._sessions.move_to_end(key)
        while len(self._sessions) > self._maxsize:
            self._sessions.popitem(last=False)

    def __len__(self) -> int:
        return len(self._sessions)


@dataclass(frozen=True)
class CertificateInfo:
    """What QtSSLSocket shows of a certificate; names in Qt's ``/KEY=value/...`` form."""

    subject: str
    issuer: str
    not_before: datetime
    not_after: datetime
    sha256_fingerprint: str  # colon-separated upper-case hex
    serial_number: int
    alt_names: tuple[str, ...] = ()

    @classmethod
    def from_x509(cls, cert: x509.Certificate) -> CertificateInfo:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            alt_names = tuple(str(v) for v in san.get_values_for_type(x509.DNSName)) + tuple(
                str(v) for v in san.get_values_for_type(x509.IPAddress))
        except x509.ExtensionNotFound:
            alt_names = ()
        digest = hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest().upper()
        return cls(
            subject=_qt_name(cert.subject), issuer=_qt_name(cert.issuer),
            not_before=cert.not_valid_before_utc, not_after=cert.not_valid_after_utc,
            sha256_fingerprint=":".join(digest[i:i + 2] for i in range(0, len(digest), 2)),
            serial_number=cert.serial_number, alt_names=alt_names,
        )


def _qt_name(name: x509.Name) -> str:
    return "".join(f"/{attr.rfc4514_attribute_name}={attr.value!s}" for rdn in name.rdns for attr in rdn)


@dataclass(frozen=True)
class CertCheckFailed:
    """Event: the peer's certificate failed verification (QtSSLSocket's certCheckFailed).

    ``code`` is OpenSSL's X509 verify result, ``description`` its text. A
    :class:`ConnectionFailed` with the coded ``cert-*`` error follows.
    """

    code: int
    description: str
    depth: int


TlsEvent = Event | CertCheckFailed


@dataclass
class _ConnState:
    """Per-connection data the context callbacks reach through the connection's app data."""

    chooser: PskChooser | None = None
    identity: bytes | None = None  # PSK identity sent (client) or received (server)
    psk_unknown: bool = False  # server: the identity had no key
    psk_offers: int = 0  # server: TLS 1.3 PSK identities the client offered (0: none, or none in a mode we take)
    external_psk: bool = False  # server: our callback gave a key (a full PSK handshake, not a resumption)
    offered: SSL.Session | None = None  # client: the session set for resumption
    verify_failure: tuple[int, int] | None = None  # (X509 verify code, depth)
    failed_certificate: x509.Certificate | None = None  # the one that failed verification


#: OpenSSL reasons that only say which layer gave up; the one before them says why.
_GENERIC_REASONS = frozenset({"record layer failure", "cipher operation failed"})


def _reason(exc: SSL.Error) -> str:
    if isinstance(exc, SSL.SysCallError):
        # pyOpenSSL's (errno, name) pair, e.g. (-1, 'Unexpected EOF'): OpenSSL failed without
        # a reason in its error queue (an over-long handshake message length, say). Over
        # memory BIOs no system call of ours failed: its errno is whatever was left over.
        return "unexpected eof"
    errors = exc.args[0] if exc.args else []
    if errors and isinstance(errors, list) and isinstance(errors[0], tuple):
        reasons = [str(e[2]) for e in errors if len(e) > 2 and e[2]]
        specific = [r for r in reasons if r not in _GENERIC_REASONS]
        return (specific or reasons or ["unknown TLS error"])[-1]
    return str(exc) or "unknown TLS error"


def _tls13_psk_error(error: LoadgenError, reason: str, *, is_client: bool, modes: tuple[str, ...],
                     key_found: bool, psk_only: bool, offers: int = 0) -> LoadgenError | None:
    """The PSK error a TLS 1.3 handshake failure stands for, when OpenSSL's own code misleads."""
    if is_client:
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


def _is_text(identity: bytes) -> bool:
    """A PSK identity is text (RFC 4279: UTF-8); an OpenSSL ticket is a hundred random
    bytes or more, never all printable UTF-8 in practice."""
    try:
        return identity.decode("utf-8").isprintable()
    except UnicodeDecodeError:
        return False


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


class TlsEngine:
    """One TLS connection (client or server side) over memory BIOs."""

    def __init__(self, connection: SSL.Connection, context: TlsContext, state: _ConnState, *,
                 is_client: bool) -> None:
        self._conn = connection
        self._context = context
        self._state = state
        self.is_client = is_client
        self._events: deque[TlsEvent] = deque()
        self._outgoing = bytearray()
        self.handshake_done = False
        self.closed = False
        self.peer_closed = False  # the peer ended the connection (close_notify or TCP EOF)
        self.error: LoadgenError | None = None
        self._resumed = False

    # -- construction -------------------------------------------------------

    @classmethod
    def client(cls, context: TlsContext, *, server_name: str | None = None, verify_name: str | None = None,
               session: SSL.Session | None = None, psk: PskChooser | None = None) -> TlsEngine:
        """A client engine; :meth:`start` queues the ClientHello.

        ``server_name`` goes into SNI (unless it is an IP address) and is the name the
        certificate must carry when the context verifies; ``verify_name`` overrides the
        latter. ``session`` (from :attr:`session` of an earlier engine on the same
        context) is offered for resumption when the context has resumption on.
        """
        if context.is_server:
            raise LocalProtocolError("a client engine needs a client context")
        if context.psk and psk is None:
            raise LocalProtocolError("a PSK context needs a PSK chooser per connection")
        conn = SSL.Connection(context.ssl, None)
        state = _ConnState(chooser=psk)
        conn.set_app_data(state)
        if server_name and not _is_ip(server_name):
            conn.set_tlsext_host_name(server_name.encode("idna"))
        name = verify_name or server_name
        options = context.options
        if options.verify != "none" and options.check_hostname and name:
            bindings.set_verify_host(conn, name)
        if session is not None and options.resumption:
            try:
                conn.set_session(session)
            except ValueError:  # made by another context: cannot resume it here
                pass
            else:
                state.offered = session
        conn.set_connect_state()
        return cls(conn, context, state, is_client=True)

    @classmethod
    def server(cls, context: TlsContext) -> TlsEngine:
        """A server engine waiting for a ClientHello."""
        if not context.is_server:
            raise LocalProtocolError("a server engine needs a server context")
        conn = SSL.Connection(context.ssl, None)
        state = _ConnState()
        conn.set_app_data(state)
        conn.set_accept_state()
        return cls(conn, context, state, is_client=False)

    def start(self) -> None:
        """Begin the handshake (client: queues the ClientHello; server: nothing to do)."""
        if self.is_client and not self.handshake_done and not self.closed:
            self._advance_handshake()

    # -- inputs -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer; read events with :meth:`next_event`."""
        if self.closed or not data:
            return
        self._conn.bio_write(data)
        if not self.handshake_done:
            self._advance_handshake()
        if self.handshake_done and not self.closed:
            self._read_application_data()
        self._pull_outgoing()

    def receive_eof(self) -> None:
        """The transport saw end of stream (TCP FIN) from the peer."""
        if self.closed:
            return
        if not self.handshake_done:
            self._fail(PeerClosed("connection closed by the peer during the handshake"))
            return
        # No close_notify first: a truncation, which for line-based pings changes nothing.
        self.closed = self.peer_closed = True
        self._events.append(ConnectionClosed())

    def send(self, data: bytes) -> None:
        """Encrypt application data (any length: TLS cuts it into records)."""
        if not self.handshake_done or self.closed:
            raise LocalProtocolError("cannot send: TLS connection not established")
        view = memoryview(data)
        try:
            while view:
                sent = self._conn.send(view[:_RECORD])
                view = view[sent:]
        except SSL.Error as exc:
            raise LocalProtocolError(f"cannot send {len(data)} bytes: {_reason(exc)}") from None
        self._pull_outgoing()

    def close(self) -> None:
        """Queue close_notify and stop (a session stays resumable only after this)."""
        if self.closed:
            return
        self.closed = True
        if self.handshake_done:
            try:
                self._conn.shutdown()
            except SSL.Error:
                pass
            self._pull_outgoing()

    # -- outputs ------------------------------------------------------------

    def next_event(self) -> TlsEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self) -> bytes:
        """Everything queued for the peer since the last call."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    @property
    def context(self) -> TlsContext:
        return self._context

    @property
    def cipher(self) -> str | None:
        return self._conn.get_cipher_name()

    @property
    def version(self) -> str:
        return self._conn.get_protocol_version_name()

    @property
    def resumed(self) -> bool:
        """The handshake resumed an earlier session (a ticket or a session id), never true for a
        TLS 1.3 external PSK, which OpenSSL also calls "reused"."""
        return self._resumed

    @property
    def session(self) -> SSL.Session | None:
        """Client: the session to offer next time; resumable after :meth:`close` (TLS 1.3:
        once the server's tickets have been received, which happens with the first reply)."""
        return self._conn.get_session() if self.handshake_done else None

    @property
    def psk_identity(self) -> bytes | None:
        """The PSK identity sent (client) or presented by the client (server)."""
        return self._state.identity

    @property
    def server_name(self) -> str | None:
        """Server side: the name the client sent in SNI."""
        name = self._conn.get_servername()
        return name.decode("ascii", "replace") if name else None

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        """The peer's certificate; after a failed check, the certificate that failed it."""
        return self._conn.get_peer_certificate(as_cryptography=True) or self._state.failed_certificate

    @property
    def available_ciphers(self) -> list[str]:
        """TLS 1.2 cipher names this connection may negotiate (QtSSLSocket's ciphers())."""
        return self._conn.get_cipher_list()

    @property
    def local_certificate(self) -> x509.Certificate | None:
        return self._conn.get_certificate(as_cryptography=True)

    # -- internals ----------------------------------------------------------

    def _advance_handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            self._pull_outgoing()
            return
        except SSL.Error as exc:
            self._fail(self._handshake_error(exc))
            return
        self.handshake_done = True
        reused = bindings.session_reused(self._conn)
        if self.is_client:
            self._resumed = bindings.resumed_session(self._conn, self._state.offered)
        else:
            self._resumed = reused and not self._state.external_psk
        if self.is_client and self._context.psk and self.peer_certificate is not None and not reused:
            # A TLS 1.3 server that does not know our identity may fall back to its certificate.
            self._fail(PskUnknownIdentity("the server ignored our PSK identity and sent a certificate"))
            return
        self._events.append(
            HandshakeCompleted(cipher=self.cipher or "", version=self.version, psk_identity=self._state.identity,
                               retransmits=0, resumed=self.resumed)
        )

    def _handshake_error(self, exc: SSL.Error) -> LoadgenError:
        state = self._state
        if state.verify_failure is not None:
            code, depth = state.verify_failure
            description = bindings.verify_error_string(code)
            self._events.append(CertCheckFailed(code, description, depth))
            return cert_error(code, description, depth)
        if state.psk_unknown:
            return PskUnknownIdentity("no key for the client's PSK identity (local)")
        reason = _reason(exc)
        error = error_from_openssl(reason, remote="alert" in reason)
        options = self._context.options
        if self._context.psk and options.max_version == "1.3":
            tls13 = _tls13_psk_error(error, reason, is_client=self.is_client, modes=options.psk_modes,
                                     key_found=state.external_psk, psk_only=options.cert_file is None,
                                     offers=state.psk_offers)
            if tls13 is not None:
                return tls13
        return error

    def _read_application_data(self) -> None:
        while True:
            try:
                data = self._conn.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.peer_closed = True
                self.close()  # answer close_notify with ours, as TLS asks
                self._events.append(ConnectionClosed())
                return
            except SSL.Error as exc:
                reason = _reason(exc)
                self._fail(error_from_openssl(reason, remote="alert" in reason))
                return
            if data:
                self._events.append(DataReceived(data))

    def _pull_outgoing(self) -> None:
        while True:
            try:
                chunk = self._conn.bio_read(65536)
            except SSL.WantReadError:
                return
            if not chunk:
                return
            self._outgoing += chunk

    def _fail(self, error: LoadgenError) -> None:
        self._pull_outgoing()  # the alert OpenSSL queued for the peer
        self.closed = True
        self.error = error
        self._events.append(ConnectionFailed(error))
