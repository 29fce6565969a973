"""DTLS 1.2 engines over pyOpenSSL memory BIOs (no sockets, no gevent; OpenSSL keeps its own retransmit clock).

Shape borrowed from aioquic (see :mod:`.engine`): ``receive_datagram(data, now)`` /
``datagrams_to_send()`` / ``get_timer()`` (absolute) / ``handle_timer(now)`` plus
``next_event()``. The transport moves bytes, owns the clock and re-arms the timer;
everything else happens here, which is what lets tests wire a client and a server back
to back in memory and drop chosen datagrams.

The contexts the engines come from are :mod:`.dtls_contexts`'s, which engine a new association
gets (this one, or loadgen's own PSK handshake) :mod:`.dtls_factory`'s, and what this engine
reads off the records going by :mod:`.dtls_watch`'s.
"""

from __future__ import annotations

from OpenSSL import SSL

from loadgen.protocol.dtls_contexts import ClientContext, ServerPeer, check_mtu
from loadgen.protocol.errors import LoadgenError, LocalProtocolError, error_from_openssl
from loadgen.protocol.events import ConnectionClosed, ConnectionFailed, HandshakeCompleted
from loadgen.protocol.native import record_layer, records
from loadgen.protocol.native.client import DEFAULT_MTU, DEFAULT_RETRANSMIT_CAP, PskChooser
from loadgen.protocol.native.record_layer import RecordLayer
from loadgen.protocol.openssl.connection import openssl_reason, read_application_data
from loadgen.protocol.openssl.dtls_watch import DtlsWatch, claims_too_much


class DtlsEngine(DtlsWatch):
    """One DTLS association (client or server side) over memory BIOs."""

    # Class-level defaults for what only some instances set: once the instances of a class
    # have used more than ~30 attribute names, their dicts are no longer shared (CPython):
    # ~1.3 KiB more per association.
    _max_peer_message_seq: int | None = None  # server: see server()
    _retransmit_cap: float | None = None  # client: see __init__
    _light = True  # False: keep OpenSSL for application data (tests)

    def __init__(self, connection: SSL.Connection, *, is_client: bool, mtu: int = DEFAULT_MTU,
                 light: bool = True, retransmit_cap: float | None = None) -> None:
        check_mtu(mtu)
        super().__init__(mtu)
        self._conn: SSL.Connection = connection
        self.is_client = is_client
        connection.set_ciphertext_mtu(mtu)
        # Bookkeeping that turns silent DTLS failures into a clear error code.
        self._finished_sent = 0  # client: flights carrying our ChangeCipherSpec
        self._retransmits_before_finished = 0  # client: retransmissions before our first Finished
        self._heard_after_finished = 0
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

    @classmethod
    def server(cls, conn: SSL.Connection, client_hello: bytes, now: float, *, mtu: int = DEFAULT_MTU,
               light: bool = True) -> DtlsEngine:
        """The server engine for ``conn``, whose ``client_hello`` brought a valid cookie
        (:func:`.dtls_factory.accept`): answers it at ``now`` (the transport's clock)."""
        engine = cls(conn, is_client=False, mtu=mtu, light=light)
        # The client's plaintext messages after this ClientHello: its ClientKeyExchange (the
        # Finished is encrypted). OpenSSL buffers messages numbered several ahead, each at the
        # length its fragment claims: fragments numbered further than one more are dropped.
        hello_seq = client_hello[records.HEADER_LEN + 4 : records.HEADER_LEN + 6]
        engine._max_peer_message_seq = int.from_bytes(hello_seq, "big") + 2
        engine._advance_handshake(None, now)
        engine._pull_outgoing(now)
        engine._note_timer(now)
        return engine

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
        if not self.handshake_done and claims_too_much(datagram, self._max_peer_message_seq):
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
                self._fail(error_from_openssl(openssl_reason(exc), remote=False))
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
            raise LocalProtocolError(f"cannot send {len(data)} bytes: {openssl_reason(exc)}") from None
        self._pull_outgoing()

    def forget_chooser(self) -> None:
        """A client's PSK callback is the connection's app data: dropped when the association ends."""
        conn = getattr(self, "_conn", None)  # a light engine has let OpenSSL's connection go
        if self.is_client and conn is not None:  # a server's app data is its peer's state (peer_identity)
            conn.set_app_data(None)  # a Python attribute of pyOpenSSL's: no call into OpenSSL

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
            reason = openssl_reason(exc)
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
        read_application_data(self._conn, self._events.append, self._fail, self._closed_by_peer,
                              single_record=single_record)

    def _closed_by_peer(self) -> None:
        self.closed = True
        self._events.append(ConnectionClosed())

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

    def _fail(self, error: LoadgenError) -> None:
        self._pull_outgoing()
        self.closed = True
        self.error = error
        self._events.append(ConnectionFailed(error))


_BIO_READ_SIZE = 65536
