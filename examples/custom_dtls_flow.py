"""A custom DTLS flow: each meter logs in once per connection, then reports readings and reads its
configuration, and every reply is checked.

Against loadgen's reference server (it echoes every message, so an echo is the right reply):

    export METER_PSK=000102030405060708090a0b0c0d0e0f
    loadgen serve dtls --port 5684 --psk-env METER_PSK &
    locust -f examples/custom_dtls_flow.py --headless -u 20 -r 10 -t 10s --host 127.0.0.1:5684

Each step is its own row in Locust's stats and in loadgen's summary ("127.0.0.1:5684 login",
"... report", "... config", and the handshakes). When Locust quits, results/<run>/ holds the
exact summary and report, and the exit status is 1 if any attempt failed.
"""

from __future__ import annotations

import os
import re

from locust import between, task

from loadgen import DtlsUser


class Meter(DtlsUser):
    psk_identity = "meter-{n}"
    psk_key_env = "METER_PSK"
    timeout = float(os.environ.get("METER_TIMEOUT", "2"))
    wait_time = between(0.05, 0.15)
    seq = 0  # this meter's report number

    def on_connect(self) -> None:
        # Runs after every handshake, before the call that connected goes on: a reconnect logs in again.
        self.client.request(f"LOGIN meter-{self.index}".encode(), name="login", expect="echo")

    @task(5)
    def report(self) -> None:
        self.seq += 1
        reading = f"REPORT {self.seq} kwh={self.index * 1.5 + self.seq:.1f}".encode()
        # The reply must carry this report's sequence number (a server acknowledging the wrong one fails it).
        self.client.request(reading, name="report", expect=re.compile(rb"\AREPORT %d " % self.seq))

    @task(1)
    def config(self) -> None:
        self.client.request(b"GET config", name="config", expect=lambda reply: reply.startswith(b"GET"))
