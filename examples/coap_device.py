"""A CoAP device (CoAP over DTLS with a PSK) that registers once per connection and observes a
resource of the server's, then reports telemetry and reads its configuration now and then.

Against libcoap's example server (Debian package libcoap3-bin), whose /example_data takes PUTs
and whose /time is observable:

    coap-server-openssl -A 127.0.0.1 -p 5683 -k device-secret -h hint &    # DTLS on 5684
    export DEVICE_PSK=$(printf device-secret | xxd -p)                      # the key, as hex
    locust -f examples/coap_device.py --headless -u 20 -r 10 -t 10s --host coaps://127.0.0.1:5684

For your own server, point COAP_REGISTER and COAP_REPORT at its paths (e.g. /rd and /3303/0/5700).
Rows: "<target> register", "clock" (the Observe registration), "clock notification" (one per
notification, its time the interval since the previous one), "report", "config", and the
handshakes; the summary counts CoAP retransmissions and response codes.
"""

from __future__ import annotations

import os

from locust import between, task

from loadgen import CoapUser

REGISTER = os.environ.get("COAP_REGISTER", "/example_data")
REPORT = os.environ.get("COAP_REPORT", "/example_data")
JSON = 50  # Content-Format application/json


class Device(CoapUser):
    psk_identity = "device-{n}"
    psk_key_env = "DEVICE_PSK"
    timeout = 10.0  # a CON unanswered for 10 s fails as coap-timeout (retransmitted meanwhile)
    wait_time = between(0.2, 0.4)
    reports = 0

    def on_connect(self) -> None:
        # Every new DTLS association registers first; any 2.xx answers it (a 4.xx/5.xx fails as bad-reply).
        self.client.put(REGISTER, f'{{"ep":"device-{self.index}","lt":300}}'.encode(), content_format=JSON,
                        name="register")
        # Then keep watching the server's clock: its notifications are counted as they come (while the
        # tasks run), until the association ends. (observe(path, duration=s) watches for s seconds instead.)
        self.clock = self.client.observe("/time", name="clock", expect_code="2.05")

    @task(8)
    def report(self) -> None:
        self.reports += 1
        reading = f'{{"n":{self.reports},"temp":{20 + self.index % 5}.5}}'.encode()
        self.client.put(REPORT, reading, content_format=JSON, name="report")

    @task(2)
    def config(self) -> None:
        self.client.get("/", name="config", expect_code="2.05")
