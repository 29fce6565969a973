"""Stateless DTLS cookies (RFC 6347 4.2.1): HMAC of the peer address, rotating secret.

The server answers a cookieless ClientHello with a HelloVerifyRequest and keeps no
state; only a ClientHello that echoes a valid cookie for its source address creates
per-peer state. Secrets rotate so a captured cookie expires; the previous secret is
still accepted so a rotation never fails a handshake in flight.
"""

from __future__ import annotations

import hashlib
import hmac
import os

from loadgen.protocol.native.record_layer import Prf

COOKIE_LEN = 16


class CookieJar:
    """Makes and checks cookies bound to a peer address.

    It reads no clock: ``now`` (seconds, the caller's clock) comes with each use, and the
    first secret's period starts at the first use.
    """

    def __init__(self, rotate_every: float = 60.0, *, seed: bytes | None = None) -> None:
        """``seed``: several server processes on one port (``serve dtls --workers``) share it, so
        a cookie made by one verifies in any: the secrets are then derived from the seed and the
        period's number on the caller's clock (``time.monotonic``, one clock for every process)."""
        self._rotate_every = rotate_every
        self._seed = seed
        self._period = -1
        # Secrets as keyed HMAC states (Prf): a cookie is then two hash copies, not an HMAC
        # set up from its key each time (1.4 against 4.3 us; the server makes one and checks
        # one per handshake).
        self._current = Prf(os.urandom(32))
        self._previous = self._current
        self._rotated_at: float | None = None

    def _maybe_rotate(self, now: float) -> None:
        if self._seed is not None:
            period = int(now // self._rotate_every)
            if period != self._period:
                self._period = period
                self._current = self._derive(period)
                self._previous = self._derive(period - 1)
            return
        if self._rotated_at is None:
            self._rotated_at = now
        elapsed = now - self._rotated_at
        if elapsed >= self._rotate_every:
            fresh = Prf(os.urandom(32))
            # Rotation is lazy: after two or more idle periods the current secret is
            # itself more than one rotation old and must not be accepted either.
            self._previous = self._current if elapsed < 2 * self._rotate_every else fresh
            self._current = fresh
            self._rotated_at = now

    def _derive(self, period: int) -> Prf:
        assert self._seed is not None
        return Prf(hmac.new(self._seed, period.to_bytes(8, "big", signed=True), hashlib.sha256).digest())

    def make(self, peer: bytes, now: float) -> bytes:
        """Cookie for ``peer`` (an address rendered as bytes, e.g. ``b"127.0.0.1:4433"``) at ``now``."""
        self._maybe_rotate(now)
        return self._current.mac(peer)[:COOKIE_LEN]

    def check(self, peer: bytes, cookie: bytes, now: float) -> bool:
        """True when ``cookie`` was made for ``peer`` with the current or previous secret (at ``now``)."""
        self._maybe_rotate(now)
        if hmac.compare_digest(cookie, self._current.mac(peer)[:COOKIE_LEN]):
            return True
        previous = self._previous
        return previous is not self._current and hmac.compare_digest(cookie, previous.mac(peer)[:COOKIE_LEN])
