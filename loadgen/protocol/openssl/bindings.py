"""PSK callbacks for pyOpenSSL contexts.

pyOpenSSL has no PSK API, but the cffi bindings it is built on (cryptography's
OpenSSL binding) expose ``SSL_CTX_set_psk_client_callback``,
``SSL_CTX_set_psk_server_callback`` and ``SSL_CTX_use_psk_identity_hint``. This is
the ONLY module that reaches into those private bindings; ``REQUIRED_SYMBOLS`` is
checked by a test so that an upgrade that removes them fails loudly.

The cffi callback objects must outlive the context, otherwise OpenSSL calls freed
memory: they are stored on the context object itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from OpenSSL import SSL
from OpenSSL._util import ffi, lib  # the binding pyOpenSSL itself uses

REQUIRED_SYMBOLS = (
    "SSL_CTX_set_psk_client_callback",
    "SSL_CTX_set_psk_server_callback",
    "SSL_CTX_use_psk_identity_hint",
    "SSL_CTX_set_psk_find_session_callback",
)

#: OpenSSL's client PSK callback, typed: ``callback(connection, hint) -> (identity, key)``, or
#: ``None`` to abort the handshake (the engines wrap a :data:`~loadgen.protocol.credentials.PskChooser` in one).
ClientPskCallback = Callable[[SSL.Connection, "bytes | None"], "tuple[bytes, bytes] | None"]
#: ``lookup(connection, identity) -> key``, or ``None`` for an unknown identity.
ServerLookup = Callable[[SSL.Connection, bytes], "bytes | None"]

_CLIENT_CB = "unsigned int(*)(SSL *, char *, char *, unsigned int, unsigned char *, unsigned int)"
_SERVER_CB = "unsigned int(*)(SSL *, char *, unsigned char *, unsigned int)"
_FIND_SESSION_CB = "int(*)(SSL *, unsigned char *, size_t, SSL_SESSION **)"
#: Where the TLS 1.3 identity probe leaves the identity, whole, for the PSK callback that follows.
_IDENTITY_ATTR = "_loadgen_psk_identity"
#: OpenSSL's PSK_MAX_IDENTITY_LEN: longer identities never reach the PSK callback, so the probe
#: copies no more (a hostile hello may offer a 64 KiB identity).
_MAX_IDENTITY = 256


def missing_symbols() -> list[str]:
    """Names from ``REQUIRED_SYMBOLS`` the installed binding lacks (empty when all good)."""
    return [name for name in REQUIRED_SYMBOLS if not hasattr(lib, name)]


def _connection(ssl: Any) -> SSL.Connection:
    # pyOpenSSL keeps SSL* -> Connection in this (private) weak mapping for its own callbacks.
    return SSL.Connection._reverse_mapping[ssl]


def _keep_alive(context: SSL.Context, callback: Any) -> None:
    kept = getattr(context, "_loadgen_psk_callbacks", None)
    if kept is None:
        kept = []
        context._loadgen_psk_callbacks = kept  # type: ignore[attr-defined]
    kept.append(callback)


def set_client_psk(context: SSL.Context, choose: ClientPskCallback) -> None:
    """Install a PSK client callback on ``context``.

    OpenSSL hands us the server's identity hint (or NULL); ``choose`` returns the
    identity and key for that connection. Exceptions in ``choose`` abort the handshake
    (an exception must never propagate through C code).
    """

    @ffi.callback(_CLIENT_CB)  # type: ignore[untyped-decorator]  # cffi is untyped; the function is typed
    def callback(ssl: Any, hint: Any, identity: Any, max_identity: int, psk: Any, max_psk: int) -> int:
        try:
            chosen = choose(_connection(ssl), ffi.string(hint) if hint != ffi.NULL else None)
            if chosen is None:
                return 0
            ident, key = chosen
            if len(ident) + 1 > max_identity or len(key) > max_psk or not key:
                return 0
            ffi.memmove(identity, ident + b"\0", len(ident) + 1)
            ffi.memmove(psk, key, len(key))
            return len(key)
        except Exception:  # noqa: BLE001 - must not cross the C boundary
            return 0

    _keep_alive(context, callback)
    lib.SSL_CTX_set_psk_client_callback(context._context, callback)


def set_server_psk(context: SSL.Context, lookup: ServerLookup, hint: bytes | None = None, *,
                   tls13: bool = False, offered: Callable[[SSL.Connection], None] | None = None) -> None:
    """Install a PSK server callback (identity -> key) and an optional identity hint.

    Returning ``None`` from ``lookup`` makes OpenSSL fail the handshake with an
    ``unknown_psk_identity`` alert.

    TLS 1.3 (``tls13``): OpenSSL hands the (TLS 1.2-style) callback a C string copy of each
    offered identity, cut at the first NUL, resumption tickets (random bytes) included. A
    ``psk_find_session`` probe that finds nothing sees the identity whole just before, so
    ``lookup`` gets the identity as the client sent it. ``offered(connection)`` is called for
    every identity the client offers, including those OpenSSL never passes to ``lookup``
    (longer than its 256-byte limit), so a failed handshake can tell "offered none we know"
    from "offered none at all".
    """

    @ffi.callback(_SERVER_CB)  # type: ignore[untyped-decorator]  # cffi is untyped
    def callback(ssl: Any, identity: Any, psk: Any, max_psk: int) -> int:
        try:
            conn = _connection(ssl)
            name = ffi.string(identity)
            whole = conn.__dict__.pop(_IDENTITY_ATTR, None)
            if isinstance(whole, bytes) and whole.startswith(name):
                name = whole
            key = lookup(conn, name)
            if not key or len(key) > max_psk:
                return 0
            ffi.memmove(psk, key, len(key))
            return len(key)
        except Exception:  # noqa: BLE001 - must not cross the C boundary
            return 0

    if tls13:
        probe = _identity_probe(offered)
        _keep_alive(context, probe)
        lib.SSL_CTX_set_psk_find_session_callback(context._context, probe)
    _keep_alive(context, callback)
    lib.SSL_CTX_set_psk_server_callback(context._context, callback)
    if hint is not None and not lib.SSL_CTX_use_psk_identity_hint(context._context, hint):
        raise ValueError("OpenSSL refused the PSK identity hint")


def _identity_probe(offered: Callable[[SSL.Connection], None] | None) -> Any:
    """A ``psk_find_session`` callback that finds no session but keeps the offered identity whole
    and tells ``offered`` (see :func:`set_server_psk`). ``Any``: a cffi callback, which cffi does not type."""

    @ffi.callback(_FIND_SESSION_CB)  # type: ignore[untyped-decorator]  # cffi is untyped
    def probe(ssl: Any, identity: Any, length: int, session: Any) -> int:
        try:
            conn = _connection(ssl)
            if offered is not None:
                offered(conn)
            setattr(conn, _IDENTITY_ATTR, bytes(ffi.buffer(identity, min(length, _MAX_IDENTITY))))
        except Exception:  # noqa: BLE001, S110 - must not cross the C boundary; the C string remains
            pass
        session[0] = ffi.NULL  # no session from here: OpenSSL goes on to the PSK server callback
        return 1

    return probe


# -- TLS helpers (same private binding, so they live here too) ---------------------------

#: Symbols the TLS engine needs beyond pyOpenSSL's public API (checked by a test).
TLS_SYMBOLS = (
    "SSL_session_reused",
    "SSL_get0_param",
    "X509_VERIFY_PARAM_set1_host",
    "X509_VERIFY_PARAM_set1_ip",
    "X509_verify_cert_error_string",
    "SSL_get_session",
    "BIO_get_mem_data",  # output_pending / input_pending
    "SSL_pending",
    "SSL_SESSION_get_master_key",  # key_material
    "SSL_get_client_random",
    "SSL_get_server_random",
    "SSL_do_handshake",  # do_handshake
    "SSL_get_error",
)

#: SSL_OP_ALLOW_NO_DHE_KEX: a TLS 1.3 client also offers psk_ke (PSK without (EC)DHE), a server
#: accepts it. The binding does not export these option bits; their values are OpenSSL's ABI.
OP_ALLOW_NO_DHE_KEX = 1 << 10
#: SSL_OP_PREFER_NO_DHE_KEX (OpenSSL 3.3+): a server picks psk_ke whenever the client offers it.
OP_PREFER_NO_DHE_KEX = 1 << 35


def missing_tls_symbols() -> list[str]:
    """Names from ``TLS_SYMBOLS`` the installed binding lacks (empty when all good)."""
    return [name for name in TLS_SYMBOLS if not hasattr(lib, name)]


def session_reused(connection: SSL.Connection) -> bool:
    """True when the connection's handshake resumed a session (pyOpenSSL does not expose this)."""
    return bool(lib.SSL_session_reused(connection._ssl))


def resumed_session(connection: SSL.Connection, offered: SSL.Session | None) -> bool:
    """True when the handshake just completed resumed ``offered``, the session we set (client side).

    ``SSL_session_reused()`` is also true for a TLS 1.3 external PSK: OpenSSL then replaces the
    connection's session with one made from the key, so "resumed" is "reused and still the
    session we offered". Ask right after the handshake (a later NewSessionTicket replaces it too).
    """
    if offered is None or not lib.SSL_session_reused(connection._ssl):
        return False
    return bool(lib.SSL_get_session(connection._ssl) == offered._session)


def set_verify_host(connection: SSL.Connection, host: str) -> None:
    """Make certificate verification check ``host`` (a DNS name or an IP address literal).

    OpenSSL then fails verification with X509_V_ERR_HOSTNAME_MISMATCH (62) or
    X509_V_ERR_IP_ADDRESS_MISMATCH (64), reported through the verify callback like any
    other verify error.
    """
    import ipaddress

    param = lib.SSL_get0_param(connection._ssl)
    try:
        packed = ipaddress.ip_address(host.strip("[]")).packed
    except ValueError:
        ok = lib.X509_VERIFY_PARAM_set1_host(param, host.encode("idna"), 0)
    else:
        ok = lib.X509_VERIFY_PARAM_set1_ip(param, packed, len(packed))
    if not ok:
        raise ValueError(f"OpenSSL refused {host!r} as the name to verify")


def verify_error_string(code: int) -> str:
    """OpenSSL's description of an X509 verify result code, e.g. 10 -> "certificate has expired"."""
    text = lib.X509_verify_cert_error_string(code)
    return ffi.string(text).decode("ascii", "replace") if text != ffi.NULL else f"verify error {code}"


# -- memory BIO levels (TLS hot path) ------------------------------------------------------

def do_handshake(connection: SSL.Connection) -> bool:
    """One step of the handshake: True when it is done, False when it waits for the peer's data.

    pyOpenSSL's ``do_handshake`` raises WantReadError for the waiting, twice per client
    handshake, and an exception costs a few microseconds; anything else raises what pyOpenSSL's
    would (its ``_raise_ssl_error``, which also re-raises a verify or ALPN callback's exception).
    """
    ssl = connection._ssl
    result = lib.SSL_do_handshake(ssl)
    if result == 1:
        return True
    if lib.SSL_get_error(ssl, result) == lib.SSL_ERROR_WANT_READ:
        return False
    connection._raise_ssl_error(ssl, result)
    return True  # pyOpenSSL's do_handshake would have returned: what it says is done

def output_pending(connection: SSL.Connection) -> int:
    """Bytes OpenSSL has written to the connection's outgoing memory BIO and nobody has read yet.

    Lets a reader take exactly what is there in one ``bio_read(n)``, instead of reading until
    pyOpenSSL raises WantReadError with a fresh 64 KiB buffer each time (a few us per ping).
    """
    return int(lib.BIO_get_mem_data(connection._from_ssl, ffi.NULL))


def input_pending(connection: SSL.Connection) -> int:
    """Bytes a ``recv`` could still make progress on: decrypted but unread, or received and not yet processed."""
    return int(lib.SSL_pending(connection._ssl)) + int(lib.BIO_get_mem_data(connection._into_ssl, ffi.NULL))


def key_material(connection: SSL.Connection) -> tuple[bytes, bytes, bytes] | None:
    """The master secret and the client and server randoms of an established TLS 1.2 connection,
    in one go (pyOpenSSL's three methods ask each length first: a quarter of going light), or None."""
    session = lib.SSL_get_session(connection._ssl)
    if session == ffi.NULL:
        return None
    buf = ffi.new("unsigned char[]", 112)  # 48 + 32 + 32
    ssl = connection._ssl
    if (lib.SSL_SESSION_get_master_key(session, buf, 48) != 48 or lib.SSL_get_client_random(ssl, buf + 48, 32) != 32
            or lib.SSL_get_server_random(ssl, buf + 80, 32) != 32):
        return None
    data = bytes(ffi.buffer(buf, 112))
    return data[:48], data[48:80], data[80:]
