"""The public API (``loadgen.__all__``): every name resolves, importing it is free, and a client
built from it alone handshakes and pings a real reference server, counted exactly and in Locust."""

from __future__ import annotations

import subprocess
import sys

import gevent
import locust  # noqa: F401 - gevent's monkey-patching first, as in a locustfile
from locust.env import Environment

import loadgen
from loadgen.protocol.credentials import KeyStore
from loadgen.servers.dtls import DtlsServer

SCENARIO = """
name: api
targets: [{name: gw, host: 127.0.0.1, port: 1, protocol: dtls}]
clients: {count: 1}
run_time: 1s
psk: {identity: "device-{n}", key: "000102030405060708090a0b0c0d0e0f"}
ping: {interval: 0.1s, jitter: 0, expect: echo}
"""


def test_every_public_name_resolves() -> None:
    missing = [name for name in loadgen.__all__ if getattr(loadgen, name, None) is None]
    assert not missing


def test_importing_loadgen_loads_nothing_heavy() -> None:
    code = "import sys, loadgen; print(sorted(m for m in ('gevent', 'OpenSSL', 'locust', 'yaml') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_a_client_from_the_public_api_pings_the_reference_server() -> None:
    scenario = loadgen.parse_scenario(SCENARIO, "api.yaml")
    assert scenario.psk is not None
    identity, key = b"device-0", scenario.psk.store.key_for(b"device-0")
    assert key is not None
    server = DtlsServer(KeyStore(shared=key), reply="echo").start()
    env = Environment()
    fired: list[tuple[str, object]] = []
    env.events.request.add_listener(lambda name, exception, **_: fired.append((name, exception)))
    exact = loadgen.StatsSink()
    both = loadgen.FanOut([exact, loadgen.LocustSink(env.events.request, "DTLS")])
    assoc = loadgen.DtlsAssociation("device-0", "gw", server.address, loadgen.dtls_client_context(), both,
                                    identity=identity, key=key, settings=scenario.dtls,
                                    ping=loadgen.traffic_plan(scenario.ping))
    try:
        greenlet = gevent.spawn(assoc.run)
        gevent.sleep(1.0)
        greenlet.kill()
    finally:
        assoc.close()
        server.stop()
    assert exact.handshakes.completed == 1 and exact.pings.completed >= 5 and exact.pings.failed == 0
    locust_pings = sum(1 for name, exc in fired if name.endswith("ping") and exc is None)
    assert locust_pings == exact.pings.completed
