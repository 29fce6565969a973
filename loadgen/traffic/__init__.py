"""Workload: what a device sends and how replies are judged (no I/O, time passed in).

:mod:`.payloads` builds what each request carries and the rule a reply must meet;
:mod:`.tracker` decides when to send, tracks the requests outstanding, matches replies,
times requests out and reports facts. Both the DTLS and the TLS transport use it.
"""
