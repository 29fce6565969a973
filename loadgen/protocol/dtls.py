"""DTLS 1.2 engines over pyOpenSSL memory BIOs (no sockets, no gevent, no clock).

Shape borrowed from aioquic (see :mod:`.engine`): ``receive_datagram(data, now)`` /
``datagrams_to_send()`` / ``get_timer()`` (absolute) / ``handle_timer(now)`` plus
``next_event()``. The transport moves bytes, owns the clock and re-arms the timer;
everything else happens here, which is what lets tests wire a client and a server back
to back in memory and drop chosen datagrams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from OpenSSL import SSL

from .. import psk
from ..credentials import KeyStore
from ..errors import (
    LoadgenError,
    LocalProtocolError,
    PskKeyMismatch,
    error_from_openssl,
)
from . import psk_server, record_layer, records
from .cookies import CookieJar
from .engine import DatagramClient, DatagramEngine, EngineBase
from .events import ConnectionClosed, ConnectionFailed, DataReceived, HandshakeCompleted
from .psk_client import (
    DEFAULT_MTU,
    DEFAULT_RETRANSMIT_CAP,
    MAX_HELLO_VERIFY_REQUESTS,
    PskChooser,
    PskClientEngine,
    hello_verify_loop,
    native_suites,
    timeout_error,
)
from .psk_handshake import HELLO_VERIFY_REQUEST, HS_HEADER_LEN, MAX_MESSAGE_LEN
from .record_layer import RecordLayer

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
    connection's :data:`PskChooser` (its app data). ``native_suites`` is set when every
    configured suite is one :mod:`.psk_client` handshakes itself (much cheaper than
    OpenSSL); :func:`client_engine` then uses that engine.
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


def client_engine(context: ClientContext, choose: PskChooser, *, mtu: int = DEFAULT_MTU,
                  retransmit_cap: float | None = DEFAULT_RETRANSMIT_CAP) -> ClientEngine:
    """A client engine for one association: loadgen's own PSK handshake when the
    context's suites allow it, OpenSSL's otherwise. Call ``start()`` to send the ClientHello."""
    _check_mtu(mtu)
    if context.native_suites is not None:
        return PskClientEngine(context.native_suites, choose, mtu=mtu, retransmit_cap=retransmit_cap)
    return DtlsEngine.client(context, choose, mtu=mtu, retransmit_cap=retransmit_cap)


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
    (:func:`accept` then uses it)."""

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


def _claims_too_much(datagram: bytes, max_message_seq: int | None) -> bool:
    """True when a plaintext handshake fragment in ``datagram`` claims a message longer than
    :data:`~loadgen.protocol.psk_handshake.MAX_MESSAGE_LEN` (a PSK handshake has none), or
    numbered past ``max_message_seq`` (when given).

    OpenSSL allocates a reassembly buffer of the claimed length (up to its ~100 KiB handshake
    message maximum) for each of the next several messages: ~220 KiB per association from a
    dozen one-byte fragments. Its maximum (``SSL_CTX_set_max_cert_list``, a macro over
    ``SSL_CTX_ctrl``) is out of reach: the binding exposes no ``SSL_CTX_ctrl`` and OpenSSL is
    linked into it with hidden symbols. So such a datagram never reaches OpenSSL.
    """
    for content_type, epoch, raw in records.split(datagram):
        if content_type != records.HANDSHAKE or epoch != 0:
            continue
        offset, end = records.HEADER_LEN, len(raw)
        while offset + HS_HEADER_LEN <= end:
            if int.from_bytes(raw[offset + 1 : offset + 4], "big") > MAX_MESSAGE_LEN:
                return True
            if max_message_seq is not None and int.from_bytes(raw[offset + 4 : offset + 6], "big") > max_message_seq:
                return True
            offset += HS_HEADER_LEN + int.from_bytes(raw[offset + 9 : offset + 12], "big")
    return False


def _reason(exc: SSL.Error) -> str:
    if isinstance(exc, SSL.SysCallError):
        # pyOpenSSL's (errno, name) pair, e.g. (-1, 'Unexpected EOF'): OpenSSL failed without
        # a reason in its error queue (an over-long handshake message length, say). Over
        # memory BIOs no system call of ours failed: its errno is whatever was left over.
        return "unexpected eof"
    errors = exc.args[0] if exc.args else []
    if errors and isinstance(errors, list) and isinstance(errors[0], tuple):
        return errors[-1][2] or "unknown TLS error"
    return str(exc) or "unknown TLS error"


class DtlsEngine(EngineBase):
    """One DTLS association (client or server side) over memory BIOs."""

    # Class-level defaults for what only some instances set: once the instances of a class
    # have used more than ~30 attribute names, their dicts are no longer shared (CPython):
    # ~1.3 KiB more per association.
    _max_peer_message_seq: int | None = None  # server: see accept()
    _retransmit_cap: float | None = None  # client: see __init__
    _light = True  # False: keep OpenSSL for application data (tests)

    def __init__(self, connection: SSL.Connection, *, is_client: bool, mtu: int = DEFAULT_MTU,
                 light: bool = True, retransmit_cap: float | None = None) -> None:
        _check_mtu(mtu)
        super().__init__(mtu)
        self._conn: SSL.Connection = connection
        self.is_client = is_client
        connection.set_ciphertext_mtu(mtu)
        # Bookkeeping that turns silent DTLS failures into a clear error code.
        self._finished_sent = 0  # client: flights carrying our ChangeCipherSpec
        self._retransmits_before_finished = 0  # client: retransmissions before our first Finished
        self._ccs_sent = 0  # both: our epoch-0 ChangeCipherSpec records
        self._bad_finished = 0  # server: client Finished that did not decrypt
        self._ccs_seen = False  # server: the client's ChangeCipherSpec arrived
        self._last_epoch0_seq = -1  # server: for our own plaintext alert
        # After the handshake, application data can run through our own record layer
        # and the (large) OpenSSL connection is dropped: see record_layer.py.
        if not light:  # else the class default
            self._light = False
        self._records: RecordLayer | None = None
        self._epoch1_sent = -1  # highest epoch-1 sequence number we sent (our Finished)
        self._epoch1_seen = -1  # highest epoch-1 sequence number the peer sent
        self._established: tuple[str, str, bytes | None, int] | None = None  # cipher, version, identity, mtu
        # Our latest handshake flight, re-sent as is (1) when the peer repeats a flight we
        # already answered (its copy, or a duplicate: our answer was probably lost), and
        # (2) on the client, whenever the flight went unanswered for ``retransmit_cap``
        # seconds: OpenSSL's timer doubles 1, 2, 4 ... 32 s, too slow for lossy paths.
        self._flight = bytearray()
        self._flight_fresh = True
        if retransmit_cap is not None:  # else the class default
            self._retransmit_cap = retransmit_cap
        # OpenSSL's retransmission timer runs on OpenSSL's own clock (no binding drives it):
        # its deadline on the transport's clock, as of the latest input (see _note_timer).
        self._openssl_due: float | None = None
        self._peer_epoch0_top = -1
        self._cookie = b""  # client: the latest HelloVerifyRequest's cookie
        self._hello_verify_requests = 0  # client: those with a new cookie

    # -- construction -------------------------------------------------------

    @classmethod
    def client(cls, context: ClientContext | SSL.Context, choose: PskChooser, *, mtu: int = DEFAULT_MTU,
               light: bool = True, retransmit_cap: float | None = DEFAULT_RETRANSMIT_CAP) -> DtlsEngine:
        """An OpenSSL client engine; call :meth:`start` to send the ClientHello."""
        conn = SSL.Connection(context.ssl if isinstance(context, ClientContext) else context, None)
        conn.set_app_data(choose)
        conn.set_connect_state()
        return cls(conn, is_client=True, mtu=mtu, light=light, retransmit_cap=retransmit_cap)

    def start(self, now: float) -> None:
        """Begin the handshake (client) at ``now`` (the transport's clock): queues the ClientHello."""
        self._flight_fresh = True
        self._advance_handshake(None, now)
        self._note_timer(now)

    # -- inputs -------------------------------------------------------------

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """Feed one datagram from the peer, received at ``now`` (the transport's clock);
        read events with :meth:`next_event`."""
        if self.closed:
            return
        if self._records is not None:
            self._receive_established(self._records, datagram, now)
            return
        if self.is_client and not self.handshake_done and self._hello_verify_loop(datagram):
            return
        if not self.handshake_done and _claims_too_much(datagram, self._max_peer_message_seq):
            return  # hostile (or broken): it would only make OpenSSL allocate
        try:
            self._conn.bio_write(datagram)
        except SSL.Error:
            return
        repeated = False
        if not self.handshake_done:
            repeated = self._note_incoming(datagram)
            self._flight_fresh = True
        was_done = self.handshake_done
        pending_before = len(self._outgoing)
        ccs_before = self._ccs_sent
        if not self.handshake_done:
            self._advance_handshake(datagram, now)
        if self.handshake_done and not self.closed:
            self._read_application_data(single_record=records.is_one_record(datagram))
        self._pull_outgoing(now)
        if was_done and self._ccs_sent > ccs_before:
            # OpenSSL re-sent our final flight because the peer retransmitted its own
            # (our CCS+Finished was lost): a retransmission, without a timer.
            self.retransmits += 1
        if repeated and not self.handshake_done and not self.closed and len(self._outgoing) == pending_before:
            self._resend_flight(now)  # the peer repeated itself and OpenSSL stayed silent
        if self.handshake_done and not was_done and not self.closed:
            self._go_light(now)
        if not was_done:
            self._note_timer(now)

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` is due (handshake retransmission), on the transport's clock, or None."""
        if self.closed or self._records is not None:
            return None
        due = self._openssl_due
        if self._retransmit_cap is not None and self._flight and not self.handshake_done:
            copy_due = self._sent_at + self._retransmit_cap
            due = copy_due if due is None else min(due, copy_due)
        return due

    def handle_timer(self, now: float) -> None:
        """Retransmit the last flight if its timer has expired by ``now``: OpenSSL's (which
        also asks OpenSSL's own clock), or our cap on how long a flight goes unanswered."""
        if self.closed or self._records is not None:
            return
        self._flight_fresh = True
        if self._openssl_due is not None and now >= self._openssl_due:
            try:
                if self._conn.DTLSv1_handle_timeout():
                    self.retransmits += 1
                    self._pull_outgoing(now)  # OpenSSL's renumbered retransmission becomes the flight
                    self._note_timer(now)
                    return
            except SSL.Error as exc:
                self._fail(error_from_openssl(_reason(exc), remote=False))
                return
        if (self._retransmit_cap is not None and self._flight and not self.handshake_done
                and now >= self._sent_at + self._retransmit_cap):
            self._resend_flight(now)
        self._note_timer(now)

    def send(self, data: bytes) -> None:
        """Encrypt application data into one record (must fit the MTU)."""
        if not self.handshake_done or self.closed:
            raise LocalProtocolError("cannot send: association not established")
        if len(data) > self.cleartext_mtu:
            # OpenSSL would build one record larger than the MTU (IP fragmentation).
            raise LocalProtocolError(
                f"cannot send {len(data)} bytes: at most {self.cleartext_mtu} fit one datagram"
            )
        if self._records is not None:
            self._outgoing += self._records.seal(records.APPLICATION_DATA, data)
            return
        try:
            self._conn.send(data)
        except SSL.Error as exc:
            raise LocalProtocolError(f"cannot send {len(data)} bytes: {_reason(exc)}") from None
        self._pull_outgoing()

    def close(self) -> None:
        """Send close_notify (Qt: shutdown alert) and stop."""
        if self.closed:
            return
        self.closed = True
        if self._records is not None:
            if self._records.can_seal:  # else no close_notify can be numbered: none is sent
                self._outgoing += self._records.seal(records.ALERT, bytes((records.ALERT_WARNING,
                                                                           records.CLOSE_NOTIFY)))
            return
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass
        self._pull_outgoing()

    # -- outputs ------------------------------------------------------------

    @property
    def cipher(self) -> str | None:
        if self._established is not None:
            return self._established[0]
        return self._conn.get_cipher_name()

    @property
    def peer_identity(self) -> bytes | None:
        """Server side: the PSK identity the client presented."""
        if self._established is not None:
            return self._established[2]
        data = self._conn.get_app_data()
        return data.identity if isinstance(data, ServerPeer) else None

    @property
    def cleartext_mtu(self) -> int:
        if self._established is not None:
            return self._established[3]
        return self._conn.get_cleartext_mtu()

    @property
    def light(self) -> bool:
        """True once application data runs through loadgen's record layer (OpenSSL's object freed)."""
        return self._records is not None

    def timeout_error(self) -> LoadgenError:
        """The error to report when the transport's handshake deadline passes.

        DTLS drops records it cannot decrypt, so a wrong key looks like silence after
        our Finished; say so rather than "timeout" once it is the likely cause.
        """
        return timeout_error(self.retransmits, self._finished_sent, self._retransmits_before_finished)

    # -- internals ----------------------------------------------------------

    def _advance_handshake(self, datagram: bytes | None, now: float) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            if datagram is not None and not self.is_client:
                self._check_client_finished(datagram)
            self._pull_outgoing(now)
            return
        except SSL.Error as exc:
            reason = _reason(exc)
            self._fail(error_from_openssl(reason, remote="alert" in reason))
            return
        self.handshake_done = True
        ident = self.peer_identity if not self.is_client else None
        self._events.append(
            HandshakeCompleted(
                cipher=self.cipher or "",
                version=self._conn.get_protocol_version_name(),
                psk_identity=ident,
                retransmits=self.retransmits,
            )
        )

    def _check_client_finished(self, datagram: bytes) -> None:
        finished = False
        for rec in records.records(datagram):
            if rec.content_type == records.CHANGE_CIPHER_SPEC and rec.epoch == 0:
                self._ccs_seen = True
            elif rec.content_type == records.HANDSHAKE and rec.epoch == 1:
                finished = True
        # After the client's ChangeCipherSpec, an epoch-1 handshake record is its
        # Finished; if the handshake still did not complete, it did not decrypt,
        # which with PSK means the keys differ. (Peers may send CCS and Finished in
        # separate datagrams; a Finished that overtakes its CCS is buffered, not counted.)
        if not (finished and self._ccs_seen):
            return
        self._bad_finished += 1
        if self._bad_finished >= psk_server.BAD_FINISHED_LIMIT:
            self._outgoing += records.plaintext_alert(records.DECRYPT_ERROR, self._last_epoch0_seq + 1)
            self._fail(PskKeyMismatch("client Finished did not decrypt: the pre-shared keys differ"))

    def _hello_verify_loop(self, datagram: bytes) -> bool:
        """Count the HelloVerifyRequests with a new cookie (OpenSSL answers each with a new
        ClientHello at once); True, and the association failed, once past the cap."""
        for content_type, epoch, raw in records.split(datagram):
            body = raw[records.HEADER_LEN + HS_HEADER_LEN :]
            if (content_type != records.HANDSHAKE or epoch != 0 or len(body) < 3
                    or raw[records.HEADER_LEN] != HELLO_VERIFY_REQUEST):
                continue
            cookie = body[3 : 3 + body[2]]
            if cookie != self._cookie:
                self._cookie = cookie
                self._hello_verify_requests += 1
        if self._hello_verify_requests <= MAX_HELLO_VERIFY_REQUESTS:
            return False
        self._fail(hello_verify_loop(self._hello_verify_requests))
        return True

    def _note_incoming(self, datagram: bytes) -> bool:
        """Track the peer's record numbers; True when it repeated a handshake record."""
        repeated = False
        for rec in records.records(datagram):
            if rec.epoch == 1:
                # Unauthenticated here: anyone can forge a number up to 2^48 - 1, which would
                # become our record layer's highest seen and make the session deaf. Before we
                # finish, the peer's epoch-1 records are its Finished and its retransmissions
                # (numbered from 0): only numbers inside the replay window count, and a forged
                # one there costs at most the one real record with the same number.
                if rec.sequence < record_layer.WINDOW:
                    self._epoch1_seen = max(self._epoch1_seen, rec.sequence)
            elif rec.content_type == records.HANDSHAKE:
                repeated |= rec.sequence <= self._peer_epoch0_top
                self._peer_epoch0_top = max(self._peer_epoch0_top, rec.sequence)
        return repeated

    def _resend_flight(self, now: float) -> None:
        self._outgoing += self._flight
        self.retransmits += 1
        self._sent_at = now

    def _note_timer(self, now: float) -> None:
        """OpenSSL's retransmission timer as a deadline on the transport's clock: OpenSSL says how
        long it has left by its own clock, counted from the time of the input just handled."""
        remaining = None if self.closed or self._records is not None else self._conn.DTLSv1_get_timeout()
        self._openssl_due = None if remaining is None else now + remaining

    def _go_light(self, now: float) -> None:
        """Hand application data to our record layer and free OpenSSL's connection."""
        conn = self._conn
        self._established = (conn.get_cipher_name() or "", conn.get_protocol_version_name(),
                             self.peer_identity, conn.get_cleartext_mtu())
        suite = record_layer.SUITES.get(self._established[0])
        if not self._light or suite is None or self._epoch1_sent < 0 or self._epoch1_seen < 0:
            self._established = None
            return
        master, client_random, server_random = conn.master_key(), conn.client_random(), conn.server_random()
        if master is None or client_random is None or server_random is None:
            self._established = None
            return
        self._records = RecordLayer(
            suite, master_key=master, client_random=client_random,
            server_random=server_random, is_client=self.is_client,
            write_seq=self._epoch1_sent + 1, read_seq=self._epoch1_seen,
        )
        if not self.is_client:
            self._final_flight = bytes(self._outgoing)  # CCS+Finished, re-sent if the client repeats its flight
            self._sent_at = now  # when the final flight went out
        del self._conn  # the SSL object and its buffers go with the last reference

    def _read_application_data(self, single_record: bool = False) -> None:
        while True:
            try:
                data = self._conn.recv(65536)
            except SSL.WantReadError:
                return
            except SSL.ZeroReturnError:
                self.closed = True
                self._events.append(ConnectionClosed())
                return
            except SSL.Error as exc:
                reason = _reason(exc)
                self._fail(error_from_openssl(reason, remote="alert" in reason))
                return
            if data:
                self._events.append(DataReceived(data))
                if single_record:
                    return  # the datagram held one record and we have it: skip the read that would fail

    def _pull_outgoing(self, now: float | None = None) -> None:
        """Move what OpenSSL wrote to ``_outgoing``; before the handshake is done it is also our
        latest flight, sent at ``now`` (None: the association is closing, its flight is over)."""
        if self._records is not None:
            return  # no OpenSSL connection any more: records are sealed straight into _outgoing
        while True:
            try:
                chunk = self._conn.bio_read(_BIO_READ_SIZE)
            except SSL.WantReadError:
                break
            self._note_outgoing(chunk)
            self._outgoing += chunk
            if not self.handshake_done:
                if self._flight_fresh:
                    self._flight = bytearray()
                    self._flight_fresh = False
                self._flight += chunk
                if now is not None:
                    self._sent_at = now
            if len(chunk) < _BIO_READ_SIZE:
                break  # a memory BIO hands over everything pending at once

    def _note_outgoing(self, chunk: bytes) -> None:
        if self.handshake_done and chunk[0] == records.APPLICATION_DATA and records.is_one_record(chunk):
            return  # the hot path: one encrypted record, nothing to learn from its header
        for rec in records.records(chunk):
            if rec.epoch == 1:
                self._epoch1_sent = max(self._epoch1_sent, rec.sequence)
            if rec.epoch == 0:
                if rec.content_type == records.CHANGE_CIPHER_SPEC:
                    self._ccs_sent += 1
                    if self.is_client:
                        if self._finished_sent == 0:
                            self._retransmits_before_finished = self.retransmits
                        self._finished_sent += 1
                self._last_epoch0_seq = max(self._last_epoch0_seq, rec.sequence)

    def _fail(self, error: LoadgenError) -> None:
        self._pull_outgoing()
        self.closed = True
        self.error = error
        self._events.append(ConnectionFailed(error))


_BIO_READ_SIZE = 65536

#: Either kind of engine: OpenSSL's, or loadgen's own PSK handshake (one interface, :mod:`.engine`).
ClientEngine: TypeAlias = DatagramClient
ServerEngine: TypeAlias = DatagramEngine


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
    _check_mtu(mtu)
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
    engine = DtlsEngine(conn, is_client=False, mtu=mtu, light=light)
    # The client's plaintext messages after this ClientHello: its ClientKeyExchange (the
    # Finished is encrypted). OpenSSL buffers messages numbered several ahead, each at the
    # length its fragment claims: fragments numbered further than one more are dropped.
    engine._max_peer_message_seq = int.from_bytes(datagram[records.HEADER_LEN + 4 : records.HEADER_LEN + 6], "big") + 2
    engine._advance_handshake(None, now)
    engine._pull_outgoing(now)
    engine._note_timer(now)
    return engine, engine.datagrams_to_send()


def _check_mtu(mtu: int) -> None:
    if mtu < MIN_MTU:
        raise LocalProtocolError(f"MTU {mtu} is below the DTLS minimum of {MIN_MTU} bytes")


def _drain(conn: SSL.Connection) -> bytes:
    out = bytearray()
    while True:
        try:
            out += conn.bio_read(65536)
        except SSL.WantReadError:
            return bytes(out)
