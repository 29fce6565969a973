"""Transport layer: client glue that moves bytes between engines and sockets (gevent).

:mod:`.dtls_association` (one DTLS association on one connected UDP socket, on gevent loop
watchers), :mod:`.tls_association`, :mod:`.ssl_socket`, :mod:`.ssl_link` and :mod:`.tcp` (TLS
over TCP, Qt's QSslSocket shape), :mod:`.fds` (the open-file reserve) and :mod:`.heap` (keeping
long-lived objects out of full garbage collections). The transports own the clock and pass
``now`` to the engines and the request tracker.
"""
