"""A reference DTLS server that also records which PSK identity each peer used.

    python tests/run_scenarios/identity_server.py SCENARIO.yaml

Keys and hint come from the scenario's psk section (like the built-in server). Prints
``identity-server listening on HOST:PORT``; on SIGTERM/SIGINT prints one JSON line
``{"handshakes": N, "identities": {"host:port": "identity", ...}}`` and exits, so a
test can check that no two associations (e.g. in different worker processes) used the
same device identity.
"""

from __future__ import annotations

import json
import signal
import sys

import gevent
from gevent.event import Event

from loadgen.scenario import load_scenario
from loadgen.servers.dtls import DtlsServer


class IdentityServer(DtlsServer):
    """Echo server remembering each peer address's identity once its handshake is done."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.identities: dict[str, str] = {}

    def _after_input(self, peer, addr) -> None:  # type: ignore[no-untyped-def]
        super()._after_input(peer, addr)
        key = f"{addr[0]}:{addr[1]}"
        if peer.engine.handshake_done and key not in self.identities and peer.engine.peer_identity:
            self.identities[key] = peer.engine.peer_identity.decode("utf-8", "replace")


def main(path: str) -> int:
    psk = load_scenario(path).psk
    assert psk is not None, "the scenario needs a psk section"
    server = IdentityServer(psk.store, host="127.0.0.1", port=0, hint=psk.hint.encode() or None)
    server.start()
    host, port = server.address
    print(f"identity-server listening on {host}:{port}", flush=True)
    done = Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        gevent.signal_handler(signum, done.set)
    done.wait()
    handshakes = server.stats.handshakes
    server.stop()
    print(json.dumps({"handshakes": handshakes, "identities": server.identities}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
