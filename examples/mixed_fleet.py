"""A mixed fleet: DTLS sensors and TLS gateways in one run, three sensors for each gateway (Locust weights).

    export FLEET_PSK=000102030405060708090a0b0c0d0e0f
    loadgen serve dtls --port 5684 --psk-env FLEET_PSK &
    loadgen serve tls --port 8883 --psk-env FLEET_PSK &
    DTLS_TARGET=127.0.0.1:5684 TLS_TARGET=127.0.0.1:8883 \
        locust -f examples/mixed_fleet.py --headless -u 40 -r 20 -t 10s

Each class has its own target (its ``target`` wins over ``--host``), identities and rows: the
summary shows "sensors handshake", "sensors telemetry", "gateways handshake", "gateways status".
"""

from __future__ import annotations

import os

from locust import constant_pacing, task

from loadgen import DtlsUser, TlsUser


class Sensor(DtlsUser):
    weight = 3
    target = os.environ.get("DTLS_TARGET", "127.0.0.1:5684")
    target_name = "sensors"
    psk_identity = "sensor-{n}"
    psk_key_env = "FLEET_PSK"
    wait_time = constant_pacing(0.5)

    @task
    def telemetry(self) -> None:
        self.client.request(f"t={20 + self.index % 7}".encode(), name="telemetry", expect="echo")


class Gateway(TlsUser):
    weight = 1
    target = os.environ.get("TLS_TARGET", "127.0.0.1:8883")
    target_name = "gateways"
    psk_identity = "gateway-{n}"
    psk_key_env = "FLEET_PSK"  # TLS with a PSK; leave it out and set tls = TlsConfig(...) for certificates
    wait_time = constant_pacing(0.5)

    @task
    def status(self) -> None:
        self.client.request(b"STATUS ok", name="status", expect=b"STATUS")
