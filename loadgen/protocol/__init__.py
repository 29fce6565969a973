"""Protocol layer: TLS/DTLS engines over memory BIOs. No sockets, no gevent, no clocks
beyond what OpenSSL keeps for its retransmit timer."""
