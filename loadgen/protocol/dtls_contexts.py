"""What all DTLS associations of one side share: the OpenSSL contexts and the native configuration.

A :class:`ClientContext` or :class:`ServerContext` serves thousands of associations: the OpenSSL
context (PSK callbacks, HMAC cookies bound to the peer, ciphers, DTLS 1.2 only) and, when every
configured suite is one loadgen handshakes itself, what that handshake needs. The engines built
from them are :mod:`.dtls_factory`'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from OpenSSL import SSL

from loadgen.protocol.cookies import CookieJar
from loadgen.protocol.credentials import KeyStore
from loadgen.protocol.errors import LocalProtocolError
from loadgen.protocol.native import records
from loadgen.protocol.native import server as psk_server
from loadgen.protocol.native.keys import native_suites
from loadgen.protocol.openssl import bindings as psk

#: PSK suites with AEAD ciphers (CCM8 is the common IoT/CoAP choice).
DEFAULT_PSK_CIPHERS = (
    "PSK-AES128-GCM-SHA256:PSK-AES256-GCM-SHA384:PSK-CHACHA20-POLY1305:"
    "PSK-AES128-CCM:PSK-AES128-CCM8"
)
#: OpenSSL ignores a smaller MTU on memory BIOs (its smallest probe size, 256), and the
#: handshake then fails with an unhelpful "unexpected EOF": refuse it up front instead.
MIN_MTU = 256


@dataclass(frozen=True)
class ClientContext:
    """What all client associations to DTLS targets share.

    ``ssl`` is the OpenSSL context, whose connections take their PSK from each
    connection's :data:`~.psk_client.PskChooser` (its app data). ``native_suites`` is set when every
    configured suite is one :mod:`.psk_client` handshakes itself (much cheaper than
    OpenSSL); :func:`.dtls_factory.client_engine` then uses that engine.
    """

    ssl: SSL.Context
    native_suites: tuple[int, ...] | None


def client_context(ciphers: str = DEFAULT_PSK_CIPHERS, *, native: bool = True) -> ClientContext:
    """A DTLS 1.2 client context for ``ciphers`` (OpenSSL syntax); one serves thousands
    of associations. ``native=False`` keeps every handshake in OpenSSL."""
    ctx = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    _common_setup(ctx, ciphers)

    def choose(conn: SSL.Connection, hint: bytes | None) -> tuple[bytes, bytes] | None:
        identity, key = conn.get_app_data()(hint)
        return identity, key.value

    psk.set_client_psk(ctx, choose)
    return ClientContext(ctx, native_suites(ciphers) if native else None)


@dataclass
class ServerPeer:
    """What the server knows about one peer: its address and, later, its PSK identity; ``now``
    is the time of the ClientHello being answered (the transport's), for the cookie jar."""

    address: bytes
    now: float = 0.0
    identity: bytes | None = None


@dataclass(frozen=True)
class ServerContext:
    """What all server associations share: the OpenSSL context and, when every
    configured suite is one :mod:`.psk_server` handshakes itself, that configuration
    (:func:`.dtls_factory.accept` then uses it)."""

    ssl: SSL.Context
    native: psk_server.ServerConfig | None


def server_context(
    keys: KeyStore,
    *,
    hint: bytes | None = None,
    ciphers: str = DEFAULT_PSK_CIPHERS,
    cookies: CookieJar | None = None,
    native: bool = True,
) -> ServerContext:
    """A DTLS 1.2 server context: PSK lookup in ``keys``, HMAC cookies bound to the peer.
    ``native=False`` keeps every handshake in OpenSSL."""
    ctx = SSL.Context(SSL.DTLS_SERVER_METHOD)
    _common_setup(ctx, ciphers)
    jar = cookies or CookieJar()

    def lookup(conn: SSL.Connection, identity: bytes) -> bytes | None:
        peer: ServerPeer = conn.get_app_data()
        peer.identity = identity
        key = keys.key_for(identity)
        return key.value if key is not None else None

    psk.set_server_psk(ctx, lookup, hint)
    # The cookie callbacks cannot see the peer address with memory BIOs: the server
    # puts it in the connection's app data before it feeds the datagram.
    ctx.set_cookie_generate_callback(lambda conn: jar.make(conn.get_app_data().address, conn.get_app_data().now))
    ctx.set_cookie_verify_callback(lambda conn, c: jar.check(conn.get_app_data().address, c,
                                                             conn.get_app_data().now))
    suites = native_suites(ciphers) if native else None
    return ServerContext(ctx, psk_server.ServerConfig(keys, hint, suites, jar) if suites else None)


def _common_setup(ctx: SSL.Context, ciphers: str) -> None:
    ctx.set_min_proto_version(records.DTLS_1_2)
    ctx.set_max_proto_version(records.DTLS_1_2)
    # Our MTU is set explicitly; never let OpenSSL query a (memory) BIO for one.
    ctx.set_options(SSL.OP_NO_QUERY_MTU | SSL.OP_NO_TICKET)
    # Idle associations hold no 16 KiB read/write buffers: memory per association is
    # what limits how many one process holds.
    ctx.set_mode(SSL.MODE_RELEASE_BUFFERS)
    if "CCM8" in ciphers.upper() and "@SECLEVEL" not in ciphers.upper():
        # OpenSSL 3.2+ allows CCM8 (8-byte tag) only at security level 0; otherwise it
        # stays in the list but is silently never offered nor accepted.
        ciphers += ":@SECLEVEL=0"
    try:
        ctx.set_cipher_list(ciphers.encode())
    except SSL.Error:
        raise LocalProtocolError(f"no usable cipher in {ciphers!r}") from None


def check_mtu(mtu: int) -> None:
    """Refuse an MTU below :data:`MIN_MTU` (see there why)."""
    if mtu < MIN_MTU:
        raise LocalProtocolError(f"MTU {mtu} is below the DTLS minimum of {MIN_MTU} bytes")
