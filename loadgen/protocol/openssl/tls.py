"""TLS engines over pyOpenSSL memory BIOs (no sockets, no gevent).

Same shape as :mod:`loadgen.protocol.openssl.dtls`: the transport feeds received bytes with
:meth:`TlsEngine.receive_data` (and :meth:`TlsEngine.receive_eof` when TCP says EOF),
sends whatever :meth:`TlsEngine.data_to_send` returns, and reads events with
:meth:`TlsEngine.next_event`. TCP retransmits for us, so there is no timer.

The contexts engines are made from are :mod:`loadgen.protocol.openssl.tls_contexts`'s; how a failure
becomes a loadgen error is :mod:`loadgen.protocol.openssl.tls_errors`'s. A :class:`SessionCache`
keeps a client's sessions between connections, for resumption.
"""

from __future__ import annotations

import functools
import ipaddress
from collections import OrderedDict, deque
from collections.abc import Hashable

from cryptography import x509
from OpenSSL import SSL

from loadgen.protocol.credentials import PskChooser
from loadgen.protocol.errors import (
    LoadgenError,
    LocalProtocolError,
    PeerClosed,
    PskUnknownIdentity,
    cert_error,
    error_from_openssl,
)
from loadgen.protocol.events import (
    CertCheckFailed,
    ConnectionClosed,
    ConnectionFailed,
    DataReceived,
    HandshakeCompleted,
    TlsEvent,
)
from loadgen.protocol.native import records
from loadgen.protocol.native.record_layer import SUITES
from loadgen.protocol.native.tls_record_layer import HELLO_REQUEST, NO_RENEGOTIATION, RecordError, TlsRecordLayer
from loadgen.protocol.openssl import bindings  # the one module touching private OpenSSL bindings
from loadgen.protocol.openssl.connection import openssl_reason, read_application_data
from loadgen.protocol.openssl.tls_contexts import ConnState, TlsContext
from loadgen.protocol.openssl.tls_errors import tls13_psk_error

#: Largest plaintext per SSL_write (one TLS record).
_RECORD = 16384


CLIENT_HELLO = b"\x01"  # the handshake type of a client asking to renegotiate (RFC 5246 7.4.1.2)


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


@functools.lru_cache(maxsize=256)
def _sni(server_name: str) -> bytes | None:
    """The SNI to send for ``server_name``: none for an address literal (RFC 6066 3). Cached: a run
    has a few names, and parsing one per connection (a ValueError for a host name) cost ~5 us."""
    try:
        ipaddress.ip_address(server_name.strip("[]"))
    except ValueError:
        return server_name.encode("idna")
    return None


class TlsEngine:
    """One TLS connection (client or server side) over memory BIOs.

    A *light* engine (``light=True``) hands a TLS 1.2 AEAD connection's records to
    :class:`~loadgen.protocol.native.tls_record_layer.TlsRecordLayer` once the handshake is over and
    frees OpenSSL's connection, as the DTLS engine does: a ping then costs two calls, not a dozen
    into pyOpenSSL, and the connection a few hundred bytes, not OpenSSL's buffers. It keeps the
    cipher, the version, the PSK identity, a client's session and a server's peer certificate (what
    the reference server answers with); the local certificate, a client's peer certificate, SNI and
    the cipher list go with the connection (None and []). Anything else (TLS 1.3, another suite,
    input left over after the handshake) stays in OpenSSL. A client goes light when its handshake
    completes, a server at the first application data either side sends (so a connection that only
    handshakes never pays for the keys). A renegotiation is declined with a
    no_renegotiation warning (a server's HelloRequest, as OpenSSL's client would not; a client's
    ClientHello, as OpenSSL's server does by default).
    """

    def __init__(self, connection: SSL.Connection, context: TlsContext, state: ConnState, *,
                 is_client: bool, light: bool = False) -> None:
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
        self._light = light
        #: A light server goes light at the first application data either way, not at the handshake's
        #: end: a connection that only handshakes (a handshake storm) then never pays for it.
        self._defer_light = False
        self._records: TlsRecordLayer | None = None
        #: light: the cipher, the version, a client's session and a server's peer certificate
        self._kept: tuple[str, str, SSL.Session | None, x509.Certificate | None] = ("", "", None, None)

    # -- construction -------------------------------------------------------

    @classmethod
    def client(cls, context: TlsContext, *, server_name: str | None = None, verify_name: str | None = None,
               session: SSL.Session | None = None, choose: PskChooser | None = None,
               light: bool = False) -> TlsEngine:
        """A client engine; :meth:`start` queues the ClientHello.

        ``server_name`` goes into SNI (unless it is an IP address) and is the name the
        certificate must carry when the context verifies; ``verify_name`` overrides the
        latter. ``session`` (from :attr:`session` of an earlier engine on the same
        context) is offered for resumption when the context has resumption on.
        ``light``: see the class.
        """
        if context.is_server:
            raise LocalProtocolError("a client engine needs a client context")
        if context.psk and choose is None:
            raise LocalProtocolError("a PSK context needs a PSK chooser per connection")
        conn = SSL.Connection(context.ssl, None)
        state = ConnState(choose=choose)
        conn.set_app_data(state)
        if server_name and (sni := _sni(server_name)) is not None:
            conn.set_tlsext_host_name(sni)
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
        return cls(conn, context, state, is_client=True, light=light)

    @classmethod
    def server(cls, context: TlsContext, *, light: bool = False) -> TlsEngine:
        """A server engine waiting for a ClientHello; ``light``: see the class."""
        if not context.is_server:
            raise LocalProtocolError("a server engine needs a server context")
        conn = SSL.Connection(context.ssl, None)
        state = ConnState()
        conn.set_app_data(state)
        conn.set_accept_state()
        return cls(conn, context, state, is_client=False, light=light)

    def start(self) -> None:
        """Begin the handshake (client: queues the ClientHello; server: nothing to do)."""
        if self.is_client and not self.handshake_done and not self.closed:
            self._advance_handshake()

    # -- inputs -------------------------------------------------------------

    def receive_data(self, data: bytes) -> None:
        """Feed bytes received from the peer; read events with :meth:`next_event`."""
        if self.closed or not data:
            return
        if self._defer_light:
            self._defer_light = False
            if data[0] == records.APPLICATION_DATA:  # else (an alert, a close) OpenSSL's, as it came
                self._go_light()
        if self._records is not None:
            self._receive_records(self._records, data)
            return
        self._conn.bio_write(data)
        if not self.handshake_done:
            self._advance_handshake()
            if self._records is not None:
                return  # gone light: nothing was left for OpenSSL to read
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
        if self._defer_light:  # a server that speaks first: nothing has been numbered since the handshake
            self._defer_light = False
            self._go_light()
        if self._records is not None:
            try:
                self._outgoing += self._records.seal(records.APPLICATION_DATA, data)
            except RecordError as exc:
                raise LocalProtocolError(f"cannot send {len(data)} bytes: {exc.reason}") from None
            return
        view = memoryview(data)
        try:
            while view:
                sent = self._conn.send(view[:_RECORD])
                view = view[sent:]
        except SSL.Error as exc:
            raise LocalProtocolError(f"cannot send {len(data)} bytes: {openssl_reason(exc)}") from None
        self._pull_outgoing()

    def forget_chooser(self) -> None:
        """Drop the PSK chooser (its owner's callback, usually a bound method): a connection that is
        over never calls it again, and kept it makes a cycle engine <-> owner that only a full
        garbage collection frees, never once the heap is frozen. Called on close and failure, and
        by the association when it ends otherwise (a transport error the engine never saw)."""
        self._state.choose = None

    def close(self) -> None:
        """Queue close_notify and stop (a session stays resumable only after this)."""
        self.forget_chooser()
        if self.closed:
            return
        self.closed = True
        self._defer_light = False
        if self._records is not None:
            self._outgoing += self._records.alert(records.CLOSE_NOTIFY, fatal=False)
        elif self.handshake_done:
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
        return self._kept[0] if self._records is not None else self._conn.get_cipher_name()

    @property
    def version(self) -> str:
        return self._kept[1] if self._records is not None else self._conn.get_protocol_version_name()

    @property
    def light(self) -> bool:
        """True once application data runs through loadgen's record layer (OpenSSL's object freed)."""
        return self._records is not None

    @property
    def resumed(self) -> bool:
        """The handshake resumed an earlier session (a ticket or a session id), never true for a
        TLS 1.3 external PSK, which OpenSSL also calls "reused"."""
        return self._resumed

    @property
    def session(self) -> SSL.Session | None:
        """Client: the session to offer next time; resumable after :meth:`close` (TLS 1.3:
        once the server's tickets have been received, which happens with the first reply)."""
        if self._records is not None:
            return self._kept[2]
        return self._conn.get_session() if self.handshake_done else None

    @property
    def psk_identity(self) -> bytes | None:
        """The PSK identity sent (client) or presented by the client (server)."""
        return self._state.identity

    @property
    def server_name(self) -> str | None:
        """Server side: the name the client sent in SNI."""
        if self._records is not None:
            return None
        name = self._conn.get_servername()
        return name.decode("ascii", "replace") if name else None

    @property
    def peer_certificate(self) -> x509.Certificate | None:
        """The peer's certificate; after a failed check, the certificate that failed it."""
        if self._records is not None:
            return self._kept[3]
        return self._conn.get_peer_certificate(as_cryptography=True) or self._state.failed_certificate

    @property
    def available_ciphers(self) -> list[str]:
        """TLS 1.2 cipher names this connection may negotiate (QtSSLSocket's ciphers())."""
        return [] if self._records is not None else self._conn.get_cipher_list()

    @property
    def local_certificate(self) -> x509.Certificate | None:
        return None if self._records is not None else self._conn.get_certificate(as_cryptography=True)

    # -- internals ----------------------------------------------------------

    def _advance_handshake(self) -> None:
        try:
            if not bindings.do_handshake(self._conn):  # waiting for the peer
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
        if self._light:
            if self.is_client:
                self._go_light()
            else:  # unless the client's first data came with its Finished (then OpenSSL keeps it)
                self._defer_light = not bindings.input_pending(self._conn)

    def _go_light(self) -> None:
        """Hand a TLS 1.2 AEAD connection's records to our record layer and free OpenSSL's connection."""
        conn = self._conn
        cipher, version = conn.get_cipher_name() or "", conn.get_protocol_version_name()
        suite = SUITES.get(cipher)
        # Input OpenSSL has not read yet would be numbered by it: then it keeps the connection.
        if version != "TLSv1.2" or suite is None or bindings.input_pending(conn):
            return
        material = bindings.key_material(conn)
        if material is None:
            return
        master, client_random, server_random = material
        self._pull_outgoing()  # our Finished
        # Each side's Finished was record 0 of the new keys: both count on from 1.
        self._records = TlsRecordLayer(suite, master_key=master, client_random=client_random,
                                       server_random=server_random, is_client=self.is_client)
        if self.is_client:
            self._kept = (cipher, version, conn.get_session() if self._context.options.resumption else None, None)
        else:
            self._kept = (cipher, version, None, conn.get_peer_certificate(as_cryptography=True))
        # Freed without a shutdown, OpenSSL would mark the session not resumable (ssl_clear_bad_session).
        conn.set_shutdown(SSL.SENT_SHUTDOWN | SSL.RECEIVED_SHUTDOWN)
        del self._conn  # the SSL object and its buffers go with the last reference

    def _receive_records(self, layer: TlsRecordLayer, data: bytes) -> None:
        """What a light engine does with received bytes: application data, alerts, and a
        renegotiation declined (RFC 5246 7.4.1.1 and 7.4.1.2); anything else ends the connection
        as OpenSSL would (``unexpected message``)."""
        try:
            for content_type, plaintext in layer.receive(data):
                if content_type == records.APPLICATION_DATA:
                    if plaintext:
                        self._events.append(DataReceived(plaintext))
                elif content_type == records.ALERT:
                    if len(plaintext) != 2:
                        raise RecordError(records.UNEXPECTED_MESSAGE, "invalid alert")
                    level, description = plaintext
                    if description == records.CLOSE_NOTIFY:
                        self._closed_by_peer()
                        return
                    if level != records.ALERT_WARNING:
                        name = records.ALERT_NAMES.get(description, "unknown")
                        self._fail(error_from_openssl(f"ssl/tls alert {name}", remote=True))
                        return
                elif content_type == records.HANDSHAKE and (
                        plaintext == HELLO_REQUEST if self.is_client else plaintext[:1] == CLIENT_HELLO):
                    self._outgoing += layer.alert(NO_RENEGOTIATION, fatal=False)
                elif content_type == records.CHANGE_CIPHER_SPEC:
                    raise RecordError(records.UNEXPECTED_MESSAGE, "ccs received early")
                elif content_type == records.HANDSHAKE:
                    raise RecordError(records.UNEXPECTED_MESSAGE, "unexpected message")
                else:
                    raise RecordError(records.UNEXPECTED_MESSAGE, "unexpected record")
        except RecordError as exc:
            self._outgoing += layer.alert(exc.alert)
            self._fail(exc.error())

    def _handshake_error(self, exc: SSL.Error) -> LoadgenError:
        state = self._state
        if state.verify_failure is not None:
            code, depth = state.verify_failure
            description = bindings.verify_error_string(code)
            self._events.append(CertCheckFailed(code, description, depth))
            return cert_error(code, description, depth)
        if state.psk_unknown:
            return PskUnknownIdentity("no key for the client's PSK identity (local)")
        reason = openssl_reason(exc)
        error = error_from_openssl(reason, remote="alert" in reason)
        options = self._context.options
        if self._context.psk and options.max_version == "1.3":
            tls13 = tls13_psk_error(error, reason, is_client=self.is_client, modes=options.psk_modes,
                                    key_found=state.external_psk, psk_only=options.cert_file is None,
                                    offers=state.psk_offers)
            if tls13 is not None:
                return tls13
        return error

    def _read_application_data(self) -> None:
        conn = self._conn
        read_application_data(conn, self._events.append, self._fail, self._closed_by_peer,
                              more=lambda: bindings.input_pending(conn) > 0)

    def _closed_by_peer(self) -> None:
        self.peer_closed = True
        self.close()  # answer close_notify with ours, as TLS asks
        self._events.append(ConnectionClosed())

    def _pull_outgoing(self) -> None:
        # Exactly what the BIO holds, in one read: reading until WantReadError cost an exception
        # and a 64 KiB buffer per call, several times per ping.
        if self._records is not None:
            return  # no OpenSSL connection any more: records are sealed straight into _outgoing
        pending = bindings.output_pending(self._conn)
        if pending:
            self._outgoing += self._conn.bio_read(pending)

    def _fail(self, error: LoadgenError) -> None:
        self.forget_chooser()
        self._pull_outgoing()  # the alert OpenSSL queued for the peer
        self.closed = True
        self.error = error
        self._events.append(ConnectionFailed(error))
