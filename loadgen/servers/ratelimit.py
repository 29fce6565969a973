"""Rate limits for the reference server: token buckets, and telling a ClientHello with a cookie apart.

An overloaded server does not answer what it has no capacity for: datagrams over the
limit are dropped silently, and clients see what they would see in real life (a
retransmission after a second, a ping timeout). With these the reference server has a
known capacity, which is what capacity planning is tested against.
"""

from __future__ import annotations

from loadgen.protocol.native import records
from loadgen.protocol.native.messages import HS_HEADER_LEN
from loadgen.protocol.native.server import hello_cookie_span


class TokenBucket:
    """``rate`` tokens per second, at most ``burst`` saved up; :meth:`take` spends one if there is one."""

    def __init__(self, rate: float, burst: float | None = None, now: float = 0.0) -> None:
        if rate <= 0:
            raise ValueError(f"a rate limit must be > 0, not {rate}")
        self.rate = rate
        # A tenth of a second's worth (at least one): smooths timer jitter without letting a
        # whole second's burst through at once, which would blur the limit being measured.
        self.burst = burst if burst is not None else max(1.0, rate / 10)
        self._tokens = self.burst
        self._last = now

    def take(self, now: float) -> bool:
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False


def client_hello_has_cookie(datagram: bytes) -> bool:
    """True for a ClientHello (first fragment) carrying a non-empty cookie: a handshake in earnest.

    The cookieless first ClientHello only costs the server a stateless HelloVerifyRequest,
    so the handshake limit counts the second one, which makes the server keep state.
    """
    if not records.is_client_hello(datagram):
        return False
    try:
        start, end = hello_cookie_span(datagram, records.HEADER_LEN + HS_HEADER_LEN)
    except IndexError:  # the fragment ends before the cookie's length
        return False
    return end > start
