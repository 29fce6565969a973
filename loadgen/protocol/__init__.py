"""Protocol layer: bytes in, datagrams and events out; no sockets, no gevent, no clock.

:mod:`.engine` (the engine base and the :class:`~.engine.DatagramEngine` interface the
transports use), :mod:`.events` (what an engine reports), :mod:`.errors` (the one error
hierarchy and its stable codes), :mod:`.credentials` (pre-shared keys and their sources),
:mod:`.cookies` (stateless DTLS cookies), :mod:`.dtls_contexts` and :mod:`.dtls_factory`
(which DTLS engine an association gets). Two engine families sit below: :mod:`.native`
(loadgen's own DTLS 1.2 PSK handshake and record layer) and :mod:`.openssl` (pyOpenSSL
memory BIOs, whose DTLS retransmission timer is the one clock we cannot pass in).
"""
