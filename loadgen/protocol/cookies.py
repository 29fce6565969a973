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
        self._current = os.urandom(32)
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
            fresh = os.urandom(32)
            # Rotation is lazy: after two or more idle periods the current secret is
            # itself more than one rotation old and must not be accepted either.
            self._previous = self._current if elapsed < 2 * self._rotate_every else fresh
            self._current = fresh
            self._rotated_at = now

    def _derive(self, period: int) -> bytes:
        assert self._seed is not None
        return hmac.new(self._seed, period.to_bytes(8, "big", signed=True), hashlib.sha256).digest()

    @staticmethod
    def _mac(secret: bytes, peer: bytes) -> bytes:
        return hmac.new(secret, peer, hashlib.sha256).digest()[:COOKIE_LEN]

    def make(self, peer: bytes, now: float) -> bytes:
        """Cookie for ``peer`` (an address rendered as bytes, e.g. ``b"127.0.0.1:4433"``) at ``now``."""
        self._maybe_rotate(now)
        return self._mac(self._current, peer)

    def check(self, peer: bytes, cookie: bytes, now: float) -> bool:
        """True when ``cookie`` was made for ``peer`` with the current or previous secret (at ``now``)."""
        self._maybe_rotate(now)
        return any(
            hmac.compare_digest(cookie, self._mac(secret, peer))
            for secret in (self._current, self._previous)
        )
