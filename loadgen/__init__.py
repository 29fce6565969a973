"""loadgen: a load generator for DTLS and TLS services (gevent + pyOpenSSL + Locust)."""

__version__ = "0.1.0"
