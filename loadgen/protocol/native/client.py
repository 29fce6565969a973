"""loadgen's own DTLS 1.2 PSK client handshake (see :mod:`.psk_handshake` for why).

Beyond the four flights: the extended master secret (RFC 7627) when the server agrees,
the renegotiation SCSV (RFC 5746), a new ClientHello for a changed cookie, and a
wrong-key verdict when our Finished goes unanswered.
"""

from __future__ import annotations

import functools
import hmac
import os

from loadgen.protocol.credentials import PskChooser
from loadgen.protocol.errors import (
    HandshakeTimeout,
    HelloVerifyLoop,
    LoadgenError,
    LocalProtocolError,
    ProtocolViolation,
    PskKeyMismatch,
)
from loadgen.protocol.events import HandshakeCompleted
from loadgen.protocol.native import records
from loadgen.protocol.native.handshake import DEFAULT_MTU, HandshakeEngine
from loadgen.protocol.native.keys import NATIVE_SUITES, native_suites
from loadgen.protocol.native.messages import (
    CLIENT_HELLO,
    CLIENT_KEY_EXCHANGE,
    EXT_EXTENDED_MASTER_SECRET,
    FINISHED,
    HELLO_VERIFY_REQUEST,
    MAX_MESSAGE_SEQ,
    READY,
    RENEGOTIATION_SCSV,
    REPEATED,
    SERVER_HELLO,
    SERVER_HELLO_DONE,
    SERVER_KEY_EXCHANGE,
    VERIFY_DATA_LEN,
    VERSION,
    Fragment,
    Reassembler,
    WholeMessage,
    fragments,
    handshake_message,
    parse_extensions,
    whole_messages,
)
from loadgen.protocol.native.records import (
    DECODE_ERROR,
    DECRYPT_ERROR,
    HANDSHAKE_FAILURE,
    ILLEGAL_PARAMETER,
    UNEXPECTED_MESSAGE,
)

__all__ = ["DEFAULT_MTU", "DEFAULT_RETRANSMIT_CAP", "MAX_HELLO_VERIFY_REQUESTS", "NATIVE_SUITES", "PskChooser",
           "PskClientEngine", "hello_verify_loop", "native_suites", "timeout_error"]

#: The longest an unanswered handshake flight waits before it is sent again.
DEFAULT_RETRANSMIT_CAP = 2.0
#: A client that sent its Finished this many times without an answer probably has the wrong key.
UNANSWERED_FINISHED_LIMIT = 3
#: HelloVerifyRequests with a new cookie answered per handshake. A real server sends one (two
#: if its cookie secret rotated in between); each answer is a new ClientHello at once, so a
#: server that sends a new cookie every time would otherwise get ClientHellos as fast as the
#: client can make them (~33,000/s from 5 clients) until the handshake deadline.
MAX_HELLO_VERIFY_REQUESTS = 5
#: After a ServerHello numbered ``s`` the server still numbers its ServerHelloDone and its
#: Finished: ``s`` must leave room for them in 16 bits.
_MAX_SERVER_HELLO_SEQ = MAX_MESSAGE_SEQ - 2


def hello_verify_loop(count: int) -> HelloVerifyLoop:
    """The error for a server that keeps answering ClientHellos with new cookies."""
    return HelloVerifyLoop(f"{count} HelloVerifyRequests with a new cookie each: the server never accepts one")


def timeout_error(retransmits: int, finished_sent: int, retransmits_before_finished: int,
                  heard_after_finished: int, clear_finished: int = 0) -> LoadgenError:
    """The error for a handshake that ran out of time.

    ``clear_finished``: Finished messages the server sent in the clear (epoch 0), dropped as
    DTLS drops a record of the wrong epoch: a broken server, named as such before any guess.

    DTLS drops records it cannot decrypt, so a wrong key looks like silence after our
    Finished; say so only once it is the likely cause: the Finished went out several
    times, every earlier flight was answered at once, and the server kept repeating its
    own flight meanwhile (``heard_after_finished`` records: it is alive and still waits
    for a Finished it could read, as OpenSSL and libcoap do). A server that went quiet
    after our Finished is not telling us about the key: our Finished flights were lost,
    or it gave up the handshake on its own timeout (the reference server's is 10 s,
    shorter than a lossy path may need) and now ignores a flight it has no state for.
    """
    if clear_finished:
        return HandshakeTimeout(f"no handshake after {retransmits} retransmissions: the server sent its Finished "
                                f"unencrypted (epoch 0, {clear_finished} times), which DTLS drops: a broken server")
    if (finished_sent >= UNANSWERED_FINISHED_LIMIT and retransmits_before_finished == 0
            and heard_after_finished > 0):
        return PskKeyMismatch(
            f"peer never answered our Finished ({finished_sent} transmissions) and kept repeating its own "
            "flight: the pre-shared key is probably wrong"
        )
    if finished_sent:
        return HandshakeTimeout(f"no handshake after {retransmits} retransmissions: the server was silent after "
                                f"our Finished ({finished_sent} transmissions), lost on the way or the server gave "
                                "the handshake up (its own handshake timeout)")
    return HandshakeTimeout(f"no handshake after {retransmits} retransmissions")


# Client states.
_HELLO, _SERVER_FLIGHT, _FINISHED, _DONE = range(4)
#: The server's flight, by message type, with the PSK hint's ServerKeyExchange and without.
_FLIGHT_WITH_HINT = [SERVER_HELLO, SERVER_KEY_EXCHANGE, SERVER_HELLO_DONE]
_FLIGHT_WITHOUT_HINT = [SERVER_HELLO, SERVER_HELLO_DONE]
_SERVER_HELLO_BYTE = bytes((SERVER_HELLO,))
_FIRST_TYPE = records.HEADER_LEN  # where a datagram's first record's first message type is


class PskClientEngine(HandshakeEngine):
    """One client association: the handshake here, then :class:`RecordLayer` for data."""

    is_client = True
    __slots__ = ("_suites", "_choose", "_cookie", "_hello_verify_requests", "_hello", "_hello_seq", "_inbox",
                 "_hint", "_expected_server_finished", "_finished_sent", "_retransmits_before_finished",
                 "_heard_after_finished", "_clear_finished")

    def __init__(self, suites: tuple[int, ...], choose: PskChooser, *, mtu: int = DEFAULT_MTU,
                 retransmit_cap: float | None = DEFAULT_RETRANSMIT_CAP) -> None:
        if not suites:
            raise LocalProtocolError("no cipher suite to offer")
        super().__init__(mtu=mtu, retransmit_cap=retransmit_cap)
        self._suites = suites
        self._choose = choose
        self._state = _HELLO
        self._client_random = os.urandom(32)
        self._cookie = b""
        self._hello_verify_requests = 0  # with a new cookie each
        self._hello = b""  # our latest ClientHello message: the transcript starts with it
        self._hello_seq = 0  # its message_seq; our later messages follow it
        self._inbox = Reassembler()  # the server's numbering is known from its ServerHello on
        self._hint: bytes | None = None
        self._expected_server_finished = b""
        self._finished_sent = 0
        self._retransmits_before_finished = 0
        self._heard_after_finished = 0  # the server's plaintext handshake records since our Finished
        self._clear_finished = 0  # the server's Finished messages in the clear (dropped)

    def start(self, now: float) -> None:
        """Begin the handshake at ``now`` (the transport's clock): queues the ClientHello."""
        self._now = now
        self._send_hello()

    @property
    def peer_identity(self) -> bytes | None:
        return None  # a server-side notion

    def timeout_error(self) -> LoadgenError:
        """The error to report when the transport's handshake deadline passes."""
        return timeout_error(self.retransmits, self._finished_sent, self._retransmits_before_finished,
                             self._heard_after_finished, self._clear_finished)

    # -- flights ------------------------------------------------------------

    def _send_hello(self) -> None:
        body = b"".join((
            VERSION, self._client_random, b"\x00",  # no session id: loadgen does not resume DTLS
            bytes((len(self._cookie),)), self._cookie, _hello_tail(self._suites),
        ))
        # The ClientHello that answers a HelloVerifyRequest is message 1 (RFC 6347 4.2.2).
        self._hello_seq = 1 if self._cookie else 0
        self._hello = handshake_message(CLIENT_HELLO, self._hello_seq, body)
        self._new_flight([(records.HANDSHAKE, 0, self._hello)])

    def _transmit_flight(self, *, retransmission: bool) -> None:
        super()._transmit_flight(retransmission=retransmission)
        if self._state == _FINISHED:
            if self._finished_sent == 0:
                self._retransmits_before_finished = self.retransmits
            self._finished_sent += 1

    def _forget_handshake(self) -> None:
        super()._forget_handshake()
        self._hello = self._cookie = self._expected_server_finished = b""
        self._hint = None
        del self._inbox  # only handshake messages go there
        self.forget_chooser()  # no cycle engine <-> association once up

    def forget_chooser(self) -> None:
        """Drop the association's PSK callback (see :class:`~loadgen.protocol.engine.DatagramClient`)."""
        if hasattr(self, "_choose"):  # a slot: gone once the handshake is up
            del self._choose

    # -- server messages ----------------------------------------------------

    def receive_datagram(self, datagram: bytes, now: float) -> None:
        """Feed one datagram from the peer, received at ``now`` (see :class:`HandshakeEngine`)."""
        # The server's flight, as every server sends it: one datagram of whole messages, a record each.
        # Taken in one pass, it skips the record split, the fragment parser and the reassembler (5 us
        # of the client's 32 in memory); anything else takes the general path.
        if (self._state == _HELLO and datagram[_FIRST_TYPE : _FIRST_TYPE + 1] == _SERVER_HELLO_BYTE
                and not self.closed and self._inbox.empty):
            messages = whole_messages(datagram)
            if messages is not None and self._take_server_flight(messages, now):
                return
        super().receive_datagram(datagram, now)

    def _take_server_flight(self, messages: list[WholeMessage], now: float) -> bool:
        """Handle ``messages`` as the general path would, if they are exactly the server's flight in
        order (ServerHello, its key exchange if any, ServerHelloDone, numbered one after the other);
        False, and nothing done, otherwise."""
        types = [m[0] for m in messages]
        if types != _FLIGHT_WITH_HINT and types != _FLIGHT_WITHOUT_HINT:
            return False
        first = messages[0][1]
        if first > _MAX_SERVER_HELLO_SEQ or any(m[1] != first + i for i, m in enumerate(messages)):
            return False  # the general path says why, or waits for what is missing
        self._now = now
        inbox = self._inbox
        for msg_type, seq, body, whole in messages:
            inbox.next_seq = seq + 1  # as if the reassembler had handed it out
            if msg_type == SERVER_HELLO:
                self._on_server_hello(whole, body)
            elif msg_type == SERVER_KEY_EXCHANGE:
                self._hash.update(whole)
                self._on_server_key_exchange(body)
            else:
                self._hash.update(whole)
                self._on_server_hello_done()
            if self.closed:
                break
        return True

    def _on_handshake_record(self, payload: bytes, start: int = 0, *, encrypted: bool) -> int:
        repeated = False
        heard = self._state == _FINISHED and not encrypted  # the server repeats its flight: alive, handshaking
        for fragment in fragments(payload[start:] if start else payload):
            if fragment[0] == HELLO_VERIFY_REQUEST and not encrypted:
                repeated |= self._on_hello_verify_request(fragment)
            elif fragment[0] == FINISHED and not encrypted:
                # The Finished is the first message under the new keys (RFC 5246 7.4.9): one in the
                # clear is dropped, as a record of the wrong epoch (RFC 6347 4.1.2.7; OpenSSL drops it
                # too), and counted: a handshake that times out on it says why.
                self._clear_finished += 1
                heard = False  # not a repeat of the server's first flight
            else:
                repeated |= self._inbox.add(fragment)
        if heard:
            self._heard_after_finished += 1
        return READY | (REPEATED if repeated else 0)  # READY: the client's _advance also looks for its ServerHello

    def _on_hello_verify_request(self, fragment: Fragment) -> bool:
        """Answer a HelloVerifyRequest; True when it repeats one already answered."""
        _, length, _, _, body = fragment
        if self._state != _HELLO or len(body) != length or len(body) < 3 or len(body) < 3 + body[2]:
            return False
        cookie = body[3 : 3 + body[2]]
        if cookie == self._cookie:
            return True
        self._hello_verify_requests += 1
        if self._hello_verify_requests > MAX_HELLO_VERIFY_REQUESTS:
            self._fail(hello_verify_loop(self._hello_verify_requests), HANDSHAKE_FAILURE)
            return False
        self._cookie = cookie
        self._send_hello()
        return False

    def _advance(self) -> None:
        if self._inbox.next_seq is None and not self._inbox.start_at(SERVER_HELLO):
            return
        while not self.closed and not self.handshake_done and (message := self._inbox.pop()) is not None:
            msg_type, seq, body = message
            # The whole message (what the transcript hashes) is made only where it is hashed.
            if self._state == _FINISHED and msg_type == FINISHED:
                self._on_server_finished(body)
            elif self._state == _HELLO and msg_type == SERVER_HELLO:
                if seq > _MAX_SERVER_HELLO_SEQ:
                    self._fail(ProtocolViolation(f"ServerHello numbered {seq}: the rest of the handshake "
                                                 "cannot be numbered in 16 bits"), ILLEGAL_PARAMETER)
                    return
                self._on_server_hello(handshake_message(msg_type, seq, body), body)
            elif self._state == _SERVER_FLIGHT and msg_type == SERVER_KEY_EXCHANGE:
                self._hash.update(handshake_message(msg_type, seq, body))
                self._on_server_key_exchange(body)
            elif self._state == _SERVER_FLIGHT and msg_type == SERVER_HELLO_DONE:
                self._hash.update(handshake_message(msg_type, seq, body))
                self._on_server_hello_done()
            else:
                self._fail_local("unexpected message", UNEXPECTED_MESSAGE)

    def _on_server_hello(self, message: bytes, body: bytes) -> None:
        try:
            version, server_random = body[0:2], body[2:34]
            sid_end = 35 + body[34]
            code = int.from_bytes(body[sid_end : sid_end + 2], "big")
            compression = body[sid_end + 2]
            extensions = parse_extensions(body[sid_end + 3 :])
        except (IndexError, ValueError):
            self._fail_local("decode error", DECODE_ERROR)
            return
        if len(server_random) != 32 or version != VERSION:
            self._fail_local("unsupported protocol", ILLEGAL_PARAMETER)
            return
        if code not in self._suites or compression != 0:
            self._fail_local("wrong cipher returned", ILLEGAL_PARAMETER)
            return
        self._suite_code = code
        self._server_random = server_random
        self._extended_master_secret = EXT_EXTENDED_MASTER_SECRET in extensions
        self._start_transcript(self._hello, message)
        self._state = _SERVER_FLIGHT
        # The ClientHello stays on its timer until the server's flight is complete (its
        # ServerHelloDone): if the rest of that flight is lost, our repeat asks for it again.

    def _on_server_key_exchange(self, body: bytes) -> None:
        if len(body) < 2 or len(body) != 2 + int.from_bytes(body[:2], "big"):
            self._fail_local("decode error", DECODE_ERROR)
            return
        self._hint = body[2:] or None

    def _on_server_hello_done(self) -> None:
        try:
            identity, key = self._choose(self._hint)
        except Exception:  # noqa: BLE001 - the user's key lookup failed: as OpenSSL does, no PSK
            self._fail_local("psk identity not found", HANDSHAKE_FAILURE)
            return
        cke = handshake_message(CLIENT_KEY_EXCHANGE, self._hello_seq + 1, len(identity).to_bytes(2, "big") + identity)
        master, session_hash = self._derive_keys(cke, key.value)
        finished = handshake_message(FINISHED, self._hello_seq + 2,
                                     master(b"client finished", session_hash, VERIFY_DATA_LEN))
        self._hash.update(finished)
        self._expected_server_finished = master(b"server finished", self._hash.digest(), VERIFY_DATA_LEN)
        self._state = _FINISHED
        self._new_flight([(records.HANDSHAKE, 0, cke), (records.CHANGE_CIPHER_SPEC, 0, b"\x01"),
                          (records.HANDSHAKE, 1, finished)])

    def _on_server_finished(self, verify_data: bytes) -> None:
        if not hmac.compare_digest(verify_data, self._expected_server_finished):
            self._fail_local("digest check failed", DECRYPT_ERROR)
            return
        self._state = _DONE
        self._established(HandshakeCompleted(cipher=self.cipher or "", version="DTLSv1.2", psk_identity=None,
                                             retransmits=self.retransmits))


@functools.lru_cache(maxsize=64)
def _hello_tail(suites: tuple[int, ...]) -> bytes:
    """The part of our ClientHello after the cookie: the same for every association."""
    codes = b"".join(code.to_bytes(2, "big") for code in (*suites, RENEGOTIATION_SCSV))
    extensions = EXT_EXTENDED_MASTER_SECRET.to_bytes(2, "big") + b"\x00\x00"
    return b"".join((
        len(codes).to_bytes(2, "big"), codes,
        b"\x01\x00",  # compression: null only
        len(extensions).to_bytes(2, "big"), extensions,
    ))

