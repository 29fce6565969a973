"""loadgen's own DTLS 1.2 PSK handshake for the PSK AEAD suites (see README, "How the DTLS handshake runs").

:mod:`.handshake` (the engine both sides share), :mod:`.client` and :mod:`.server` (the two
sides' flights), :mod:`.messages` (handshake framing, fragments, reassembly), :mod:`.keys`
(suites and the key schedule), :mod:`.records` (record and alert parsing) and
:mod:`.record_layer` (AEAD records after the handshake).
"""
