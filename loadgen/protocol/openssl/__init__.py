"""OpenSSL's engines through pyOpenSSL memory BIOs: DTLS (:mod:`.dtls`, :mod:`.dtls_watch`) and TLS
(:mod:`.tls`, :mod:`.tls_contexts`, :mod:`.tls_errors`, :mod:`.tls_certificates`).

:mod:`.bindings` is the one module that reaches into cryptography's private OpenSSL bindings
(PSK callbacks, TLS 1.3 PSK session lookup); a test fails loudly if an upgrade removes them.
"""
