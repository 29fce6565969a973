"""Which engine a new DTLS association gets, on either side.

On the client, :func:`client_engine`; on the server, :func:`accept` for every datagram from a
peer the server keeps no state for (stateless until a ClientHello brings a valid cookie). Each
uses loadgen's own PSK handshake (:mod:`.psk_client`, :mod:`.psk_server`) when the context's
suites allow it, OpenSSL's (:class:`~.dtls.DtlsEngine`) otherwise.
"""

from __future__ import annotations

from typing import TypeAlias

from OpenSSL import SSL

from loadgen.protocol.dtls_contexts import ClientContext, ServerContext, ServerPeer, check_mtu
from loadgen.protocol.engine import DatagramClient, DatagramEngine
from loadgen.protocol.native import records
from loadgen.protocol.native import server as psk_server
from loadgen.protocol.native.client import DEFAULT_MTU, DEFAULT_RETRANSMIT_CAP, PskChooser, PskClientEngine
from loadgen.protocol.openssl.dtls import DtlsEngine

#: Either kind of engine: OpenSSL's, or loadgen's own PSK handshake (one interface, :mod:`.engine`).
ClientEngine: TypeAlias = DatagramClient
ServerEngine: TypeAlias = DatagramEngine


def client_engine(context: ClientContext, choose: PskChooser, *, mtu: int = DEFAULT_MTU,
                  retransmit_cap: float | None = DEFAULT_RETRANSMIT_CAP) -> ClientEngine:
    """A client engine for one association: loadgen's own PSK handshake when the
    context's suites allow it, OpenSSL's otherwise. Call ``start()`` to send the ClientHello."""
    check_mtu(mtu)
    if context.native_suites is not None:
        return PskClientEngine(context.native_suites, choose, mtu=mtu, retransmit_cap=retransmit_cap)
    return DtlsEngine.client(context, choose, mtu=mtu, retransmit_cap=retransmit_cap)


def accept(
    context: ServerContext | SSL.Context, datagram: bytes, peer: bytes, now: float, *, mtu: int = DEFAULT_MTU,
    light: bool = True,
) -> tuple[ServerEngine | None, list[bytes]]:
    """Handle a datagram from a peer the server keeps no state for, received at ``now``
    (the transport's clock).

    Returns ``(engine, datagrams)``: a new server engine when the datagram is a
    ClientHello with a valid cookie, otherwise ``None`` and the HelloVerifyRequest to
    send back (empty for anything that is not a ClientHello). No state is kept for a
    client before its cookie is verified, and the answer is never larger than the
    request (no amplification).
    """
    check_mtu(mtu)
    if isinstance(context, ServerContext):
        if context.native is not None and light:
            return psk_server.accept(context.native, datagram, peer, now, mtu=mtu)
        context = context.ssl
    if not records.is_client_hello(datagram):
        return None, []
    conn = SSL.Connection(context, None)
    conn.set_app_data(ServerPeer(peer, now))
    conn.set_accept_state()
    try:
        conn.bio_write(datagram)
        conn.DTLSv1_listen()
    except SSL.WantReadError:
        reply = _drain(conn)
        return None, [reply] if reply and len(reply) <= len(datagram) else []
    except SSL.Error:
        return None, []
    engine = DtlsEngine.server(conn, datagram, now, mtu=mtu, light=light)
    return engine, engine.datagrams_to_send()


def _drain(conn: SSL.Connection) -> bytes:
    out = bytearray()
    while True:
        try:
            out += conn.bio_read(65536)
        except SSL.WantReadError:
            return bytes(out)
