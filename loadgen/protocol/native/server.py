"""loadgen's own DTLS 1.2 PSK server handshake (see :mod:`.psk_handshake` for why).

:func:`accept` is the stateless front door: a ClientHello without a valid cookie gets
a HelloVerifyRequest no larger than itself and leaves no state behind (RFC 6347
4.2.1); one with a valid cookie creates a :class:`PskServerEngine`. Beyond the four
flights: the extended master secret (RFC 7627) and secure renegotiation indication
(RFC 5746) when the client offers them, buffering of a Finished that overtakes its
ClientKeyExchange, and the same wrong-key verdict as the OpenSSL engine (the client's
Finished fails to decrypt twice: a plaintext decrypt_error alert).
"""

from __future__ import annotations

import functools
import hmac
import os
import struct
from dataclasses import dataclass
from typing import NamedTuple

from loadgen.protocol.cookies import CookieJar
from loadgen.protocol.credentials import KeyStore
from loadgen.protocol.errors import PskKeyMismatch
from loadgen.protocol.events import HandshakeCompleted
from loadgen.protocol.native import records
from loadgen.protocol.native.handshake import DEFAULT_MTU, HandshakeEngine
from loadgen.protocol.native.messages import (
    CLIENT_KEY_EXCHANGE,
    EXT_EXTENDED_MASTER_SECRET,
    EXT_RENEGOTIATION_INFO,
    FINISHED,
    HELLO_VERIFY_REQUEST,
    HS_HEADER_LEN,
    MAX_MESSAGE_LEN,
    MAX_MESSAGE_SEQ,
    RECORD_AND_MESSAGE_HEADERS,
    RENEGOTIATION_SCSV,
    SERVER_HELLO,
    SERVER_HELLO_DONE,
    SERVER_KEY_EXCHANGE,
    VERIFY_DATA_LEN,
    VERSION,
    Reassembler,
    handshake_message,
    parse_extensions,
)
from loadgen.protocol.native.record_layer import Prf
from loadgen.protocol.native.records import (
    DECODE_ERROR,
    DECRYPT_ERROR,
    HANDSHAKE_FAILURE,
    PROTOCOL_VERSION,
    UNEXPECTED_MESSAGE,
    UNKNOWN_PSK_IDENTITY,
)

#: Wrong-key verdicts need this many undecryptable Finished flights (one could be corruption).
BAD_FINISHED_LIMIT = 2
#: Epoch-1 records kept while their ClientKeyExchange is still missing (reordering), in count
#: and bytes: the one that can overtake it is the client's Finished (about 60 bytes); the
#: room covers its retransmissions, not the 64 KB records a hostile peer would send.
EARLY_RECORDS = 4
EARLY_RECORD_BYTES = 1024
#: After the ClientHello the server numbers up to four messages of its own (ServerHello,
#: ServerKeyExchange, ServerHelloDone, Finished): a ClientHello whose message_seq leaves no
#: room for them in 16 bits is dropped (real clients send 0 or 1).
MAX_HELLO_MESSAGE_SEQ = MAX_MESSAGE_SEQ - 3
#: The server continues the client's record numbering (RFC 6347 4.2.1): a ClientHello numbered
#: this close to 2^48 is dropped, leaving 65,536 record numbers for the server's flights and
#: their retransmissions (real clients start at 0).
MAX_HELLO_RECORD_SEQ = records.MAX_SEQUENCE - 0xFFFF
#: The HelloVerifyRequest speaks DTLS 1.0 whatever is negotiated later (RFC 6347 4.2.1).
_HVR_VERSION = records.DTLS_1_0
_DTLS_MAJOR = 0xFE  # every DTLS version number starts with it (TLS's with 0x03)


@dataclass(frozen=True)
class ServerConfig:
    """What every native server association shares: keys, hint, suites (in the client's
    order of preference, restricted to these) and the cookie jar."""

    keys: KeyStore
    hint: bytes | None
    suites: tuple[int, ...]
    cookies: CookieJar


class ClientHello(NamedTuple):
    record_seq: int
    message_seq: int
    message: bytes  # the whole handshake message: the transcript starts with it
    version: int
    random: bytes
    cookie: bytes
    suites: tuple[int, ...]
    compression: bytes
    extensions: set[int]


def hello_cookie_span(data: bytes, at: int = 0) -> tuple[int, int]:
    """Where the cookie of the ClientHello body starting at ``data[at]`` lies: ``(start, end)``.

    Reads only the session id's and the cookie's length bytes, so it works on a first
    fragment too; raises IndexError when ``data`` ends before the cookie's length byte.
    """
    sid_end = at + 35 + data[at + 34]  # version (2), random (32), session id length (1) and the id
    return sid_end + 1, sid_end + 1 + data[sid_end]


_HEADERS_LEN = records.HEADER_LEN + HS_HEADER_LEN


#: Where a whole ClientHello lies in its datagram (:func:`hello_frame`): record_seq, message_seq, the
#: message's end, and its cookie's start and end.
HelloFrame = tuple[int, int, int, int, int]


def hello_frame(datagram: bytes) -> HelloFrame | None:
    """The frame of the ClientHello a datagram starts with, or None (not one, cut short, or
    fragmented: like OpenSSL's ``DTLSv1_listen``, a ClientHello must arrive whole).

    Reads the headers, the version's first byte and the cookie's place only: all a cookieless
    ClientHello (the first of every handshake, and what a flood is made of) needs for its
    HelloVerifyRequest. The rest is read once the cookie checks (:func:`parse_client_hello`)."""
    if len(datagram) < _HEADERS_LEN:
        return None
    (content_type, version, epoch, seq_hi, seq_lo, record_len, msg_type, len_hi, len_lo, message_seq,
     off_hi, off_lo, frag_hi, frag_lo) = RECORD_AND_MESSAGE_HEADERS.unpack_from(datagram)
    length = len_hi << 16 | len_lo
    end = _HEADERS_LEN + length
    if (content_type != records.HANDSHAKE or epoch or msg_type != 1 or version >> 8 != _DTLS_MAJOR
            or off_hi or off_lo or (frag_hi << 16 | frag_lo) != length or length > MAX_MESSAGE_LEN
            or records.HEADER_LEN + record_len > len(datagram) or end > records.HEADER_LEN + record_len):
        return None  # not a whole ClientHello in its record (fragmented, or cut short)
    try:
        if datagram[_HEADERS_LEN] != _DTLS_MAJOR:
            return None  # a TLS version inside a DTLS record
        cookie_start, cookie_end = hello_cookie_span(datagram, _HEADERS_LEN)
    except IndexError:
        return None
    if cookie_end > end:
        return None
    return seq_hi << 32 | seq_lo, message_seq, end, cookie_start, cookie_end


def parse_client_hello(datagram: bytes, frame: HelloFrame | None = None) -> ClientHello | None:
    """The ClientHello a datagram starts with, or None (not one, malformed, or fragmented);
    ``frame``: its :func:`hello_frame`, when the caller has it already.

    The server parses one per handshake, once its cookie checked: one unpack for both headers
    (:func:`hello_frame`), the suites in one more."""
    if frame is None and (frame := hello_frame(datagram)) is None:
        return None
    record_seq, message_seq, end, cookie_start, cookie_end = frame
    body = datagram[_HEADERS_LEN:end]
    at = cookie_end - _HEADERS_LEN  # offsets in the body from here
    try:
        n_suites = int.from_bytes(body[at : at + 2], "big")
        suites_end = at + 2 + n_suites
        compression_end = suites_end + 1 + body[suites_end]
        if compression_end > len(body) or n_suites % 2:
            return None
        extensions = parse_extensions(body[compression_end:])
    except (IndexError, ValueError):
        return None
    # Whole and unfragmented, the record's payload is the message as the transcript has it.
    return ClientHello(record_seq, message_seq, datagram[records.HEADER_LEN : end],
                       int.from_bytes(body[:2], "big"), body[2:34], datagram[cookie_start:cookie_end],
                       struct.unpack_from(f"!{n_suites // 2}H", body, at + 2),
                       body[suites_end + 1 : compression_end], extensions)


def hello_verify_request(cookie: bytes, record_seq: int) -> bytes:
    """The HelloVerifyRequest; it reuses the ClientHello's record number (RFC 6347 4.2.1)."""
    body = _HVR_VERSION.to_bytes(2, "big") + bytes((len(cookie),)) + cookie
    message = handshake_message(HELLO_VERIFY_REQUEST, 0, body)
    return records.HEADER.pack(records.HANDSHAKE, _HVR_VERSION, 0, record_seq >> 16, record_seq & 0xFFFF,
                               len(message)) + message


def accept(config: ServerConfig, datagram: bytes, peer: bytes, now: float, *, mtu: int = DEFAULT_MTU
           ) -> tuple[PskServerEngine | None, list[bytes]]:
    """Handle a datagram from a peer the server keeps no state for (see :func:`.dtls_factory.accept`)."""
    frame = hello_frame(datagram)
    if frame is None or frame[1] > MAX_HELLO_MESSAGE_SEQ or frame[0] > MAX_HELLO_RECORD_SEQ:
        return None, []
    record_seq, _, _, cookie_start, cookie_end = frame
    if cookie_start == cookie_end or not config.cookies.check(peer, datagram[cookie_start:cookie_end], now):
        # The rest of this ClientHello is read only once it comes back with its cookie.
        reply = hello_verify_request(config.cookies.make(peer, now), record_seq)
        return None, [reply] if len(reply) <= len(datagram) else []
    hello = parse_client_hello(datagram, frame)
    if hello is None:
        return None, []
    engine = PskServerEngine(config, hello, now, mtu=mtu)
    return engine, engine.datagrams_to_send()


# Server states.
_CLIENT_KEY_EXCHANGE, _FINISHED, _DONE = range(3)


class PskServerEngine(HandshakeEngine):
    """One server association, created by :func:`accept` from a ClientHello with a valid cookie
    received at ``now`` (the transport's clock)."""

    is_client = False

    def __init__(self, config: ServerConfig, hello: ClientHello, now: float, *, mtu: int = DEFAULT_MTU) -> None:
        super().__init__(mtu=mtu, retransmit_cap=None)
        self._now = now
        self._keys = config.keys
        self._state = _CLIENT_KEY_EXCHANGE
        self._identity: bytes | None = None
        self._client_random = hello.random
        self._server_random = os.urandom(32)
        # Our numbering continues the client's, so no record or message number repeats
        # the stateless HelloVerifyRequest's (RFC 6347 4.2.1, 4.2.2).
        self._epoch0_seq = hello.record_seq
        self._inbox = Reassembler(next_seq=hello.message_seq + 1)
        self._extended_master_secret = EXT_EXTENDED_MASTER_SECRET in hello.extensions
        self._master: Prf | None = None
        self._expected_client_finished = b""
        self._finished_seq = 0  # message_seq of our Finished, after the ServerHelloDone
        self._early: list[bytes] = []  # epoch-1 records that came before the keys
        self._bad_finished = 0
        code = next((c for c in hello.suites if c in config.suites), None)
        if hello.version > records.DTLS_1_2:  # DTLS versions count down: 0xFEFF is 1.0
            self._fail_local("unsupported protocol", PROTOCOL_VERSION)
        elif code is None or 0 not in hello.compression:
            self._fail_local("no shared cipher", HANDSHAKE_FAILURE)
        else:
            self._suite_code = code
            self._send_server_hello(hello, config.hint)

    @property
    def peer_identity(self) -> bytes | None:
        """The PSK identity the client presented."""
        return self._identity

    # -- flights ------------------------------------------------------------

    def _send_server_hello(self, hello: ClientHello, hint: bytes | None) -> None:
        renegotiation = RENEGOTIATION_SCSV in hello.suites or EXT_RENEGOTIATION_INFO in hello.extensions
        head, tail, rest = _server_flight(self._suite_code, self._extended_master_secret, renegotiation, hint,
                                          hello.message_seq)
        messages = (head + self._server_random + tail, *rest)
        self._finished_seq = hello.message_seq + len(messages)
        self._start_transcript(hello.message, *messages)
        self._new_flight([(records.HANDSHAKE, 0, m) for m in messages])

    def _forget_handshake(self) -> None:
        super()._forget_handshake()
        self._master = None
        self._early = []
        self._expected_client_finished = b""
        del self._inbox  # only handshake messages go there

    # -- client messages ----------------------------------------------------

    def _on_handshake_record(self, payload: bytes, start: int = 0, *, encrypted: bool) -> int:
        # The Finished is the first message under the new keys (RFC 5246 7.4.9): one in the clear
        # is dropped, as a record of the wrong epoch (RFC 6347 4.1.2.7; OpenSSL drops it too).
        return self._inbox.add_record(payload, start, skip=-1 if encrypted else FINISHED)

    def _advance(self) -> None:
        while not self.closed and not self.handshake_done and (message := self._inbox.pop()) is not None:
            msg_type, seq, body = message
            if self._state == _CLIENT_KEY_EXCHANGE and msg_type == CLIENT_KEY_EXCHANGE:
                self._on_client_key_exchange(handshake_message(msg_type, seq, body), body)
            elif self._state == _FINISHED and msg_type == FINISHED:
                self._on_client_finished(handshake_message(msg_type, seq, body), body)
            else:
                self._fail_local("unexpected message", UNEXPECTED_MESSAGE)

    def _on_client_key_exchange(self, message: bytes, body: bytes) -> None:
        n = int.from_bytes(body[:2], "big")
        if len(body) < 2 or len(body) != 2 + n:
            self._fail_local("decode error", DECODE_ERROR)
            return
        self._identity = body[2:]
        key = self._keys.key_for(self._identity)
        if key is None:
            self._fail_local("psk identity not found", UNKNOWN_PSK_IDENTITY)
            return
        self._master, session_hash = self._derive_keys(message, key.value)
        assert self._records is not None  # _derive_keys made it
        self._expected_client_finished = self._master(b"client finished", session_hash, VERIFY_DATA_LEN)
        self._state = _FINISHED
        self._flight = []  # our ServerHello flight is answered: no timer
        early, self._early = self._early, []
        for record in early:  # a Finished that overtook this message: _advance() takes it next
            opened = self._records.open(record)
            if opened is not None and opened[0] == records.HANDSHAKE:
                self._on_handshake_record(opened[1], encrypted=True)  # _advance()'s loop takes what is READY

    def _on_client_finished(self, message: bytes, verify_data: bytes) -> None:
        if not hmac.compare_digest(verify_data, self._expected_client_finished):
            self._fail_local("digest check failed", DECRYPT_ERROR)
            return
        assert self._master is not None  # the Finished comes after the ClientKeyExchange
        self._hash.update(message)
        verify = self._master(b"server finished", self._hash.digest(), VERIFY_DATA_LEN)
        finished = handshake_message(FINISHED, self._finished_seq, verify)
        start = len(self._outgoing)
        self._new_flight([(records.CHANGE_CIPHER_SPEC, 0, b"\x01"), (records.HANDSHAKE, 1, finished)])
        if self.closed:  # the flight could not be numbered
            return
        self._final_flight = bytes(self._outgoing[start:])  # sent again when the client repeats its flight
        self._state = _DONE
        self._established(HandshakeCompleted(cipher=self.cipher or "", version="DTLSv1.2",
                                             psk_identity=self._identity, retransmits=self.retransmits))

    def _on_undecryptable(self, record: bytes) -> None:
        if self._state == _CLIENT_KEY_EXCHANGE:
            if len(self._early) < EARLY_RECORDS and sum(map(len, self._early)) + len(record) <= EARLY_RECORD_BYTES:
                self._early.append(record)
            return
        if self._state != _FINISHED or record[0] != records.HANDSHAKE:
            return
        # With the keys from the client's own identity, its Finished did not decrypt:
        # with PSK that means the keys differ (once could be corruption on the way).
        self._bad_finished += 1
        if self._bad_finished >= BAD_FINISHED_LIMIT:
            self._fail(PskKeyMismatch("client Finished did not decrypt: the pre-shared keys differ"), DECRYPT_ERROR)


@functools.lru_cache(maxsize=256)
def _server_flight(suite_code: int, extended_master_secret: bool, renegotiation: bool, hint: bytes | None,
                   seq: int) -> tuple[bytes, bytes, tuple[bytes, ...]]:
    """The ServerHello flight but the server random: the ServerHello's bytes before it and after it,
    then the messages after the ServerHello (ServerKeyExchange with the hint, ServerHelloDone).

    The same for every association of a server but its message_seq (the ClientHello's: 1 after a
    HelloVerifyRequest), so it is made once."""
    extensions = b""
    if extended_master_secret:
        extensions += EXT_EXTENDED_MASTER_SECRET.to_bytes(2, "big") + b"\x00\x00"
    if renegotiation:
        extensions += EXT_RENEGOTIATION_INFO.to_bytes(2, "big") + b"\x00\x01\x00"  # empty: first handshake
    random = bytes(32)  # its place
    body = b"".join((
        VERSION, random, b"\x00",  # no session id: no resumption
        suite_code.to_bytes(2, "big"), b"\x00",
        len(extensions).to_bytes(2, "big"), extensions,
    ))
    hello = handshake_message(SERVER_HELLO, seq, body)
    at = HS_HEADER_LEN + len(VERSION)
    rest = []
    if hint:
        seq += 1
        rest.append(handshake_message(SERVER_KEY_EXCHANGE, seq, len(hint).to_bytes(2, "big") + hint))
    rest.append(handshake_message(SERVER_HELLO_DONE, seq + 1, b""))
    return hello[:at], hello[at + len(random) :], tuple(rest)
