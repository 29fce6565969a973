"""CoAP (RFC 7252) over DTLS: the message codec, a sans-I/O client endpoint and the workload
the DTLS transport drives for ``requests:`` steps with ``coap:``."""
