"""The reference servers and the impairment proxy (``loadgen serve``, ``loadgen impair``).

:mod:`.dtls` and :mod:`.tls` (the DTLS and TLS echo servers: every loop survives any one peer,
every buffer has a bound), :mod:`.ratelimit` (per-source handshake and ping limits),
:mod:`.launcher` (the built-in server as a child process), :mod:`.impair` (the UDP impairment
proxy's sockets) and :mod:`.impairment` (what it does to a datagram; no I/O).
"""
