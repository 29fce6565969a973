"""What :class:`~.dtls.DtlsEngine` reads off the DTLS records it hands OpenSSL and takes from it.

OpenSSL reports none of it: the record numbers (where loadgen's record layer continues the
numbering once established), our ChangeCipherSpec records and the peer's Finished that did
not decrypt (which turn a silent wrong key into a clear error code), HelloVerifyRequests that
keep bringing new cookies (a loop), and handshake fragments that claim more than a PSK
handshake needs (dropped before OpenSSL buffers what they claim).
"""

from __future__ import annotations

from loadgen.protocol.engine import EngineBase
from loadgen.protocol.errors import LoadgenError, PskKeyMismatch
from loadgen.protocol.native import record_layer, records
from loadgen.protocol.native import server as psk_server
from loadgen.protocol.native.client import MAX_HELLO_VERIFY_REQUESTS, hello_verify_loop, timeout_error
from loadgen.protocol.native.messages import HELLO_VERIFY_REQUEST, HS_HEADER_LEN, MAX_MESSAGE_LEN


def claims_too_much(datagram: bytes, max_message_seq: int | None) -> bool:
    """True when a plaintext handshake fragment in ``datagram`` claims a message longer than
    :data:`~loadgen.protocol.native.messages.MAX_MESSAGE_LEN` (a PSK handshake has none), or
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


class DtlsWatch(EngineBase):
    """The engine's bookkeeping of the records going by (inputs and outputs both): see the module.

    :class:`~.dtls.DtlsEngine`'s ``__init__`` sets this state, interleaved with its own: CPython
    (3.11) keeps instance dicts shared only while attributes are first set in one order, and that
    order is the one memory per association was measured with.
    """

    is_client: bool
    # Bookkeeping that turns silent DTLS failures into a clear error code.
    _finished_sent: int  # client: flights carrying our ChangeCipherSpec
    _retransmits_before_finished: int  # client: retransmissions before our first Finished
    _heard_after_finished: int  # client: the peer's plaintext handshake records since our first Finished
    _ccs_sent: int  # both: our epoch-0 ChangeCipherSpec records
    _bad_finished: int  # server: client Finished that did not decrypt
    _ccs_seen: bool  # server: the client's ChangeCipherSpec arrived
    _last_epoch0_seq: int  # server: for our own plaintext alert
    # Record numbers, where loadgen's record layer continues OpenSSL's (DtlsEngine._go_light).
    _epoch1_sent: int  # highest epoch-1 sequence number we sent (our Finished)
    _epoch1_seen: int  # highest epoch-1 sequence number the peer sent (inside the replay window)
    _peer_epoch0_top: int  # highest epoch-0 handshake record number the peer sent
    _cookie: bytes  # client: the latest HelloVerifyRequest's cookie
    _hello_verify_requests: int  # client: those with a new cookie

    def timeout_error(self) -> LoadgenError:
        """The error to report when the transport's handshake deadline passes.

        DTLS drops records it cannot decrypt, so a wrong key looks like silence after
        our Finished; say so rather than "timeout" once it is the likely cause.
        """
        return timeout_error(self.retransmits, self._finished_sent, self._retransmits_before_finished,
                             self._heard_after_finished)

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
                if self._finished_sent and not self.handshake_done:
                    self._heard_after_finished += 1  # the server repeats its flight: alive, still handshaking
                repeated |= rec.sequence <= self._peer_epoch0_top
                self._peer_epoch0_top = max(self._peer_epoch0_top, rec.sequence)
        return repeated

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
        """End the association with ``error`` (the engine's)."""
        raise NotImplementedError
