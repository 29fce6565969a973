"""``loadgen serve dtls --workers N``: N real server processes on one UDP port (SO_REUSEPORT)."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import gevent
import pytest
from procs import Procs

from loadgen.cli.keys import QUICKSTART_KEY
from loadgen.protocol import dtls_contexts
from loadgen.protocol.cookies import CookieJar
from loadgen.servers.launcher import ServerProcess
from loadgen.stats.sink import StatsSink
from loadgen.transport.dtls_association import DtlsAssociation

pytestmark = pytest.mark.timeout(60)

PEER = b"127.0.0.1:40000"
CLIENTS = 40  # each from its own source port: all of them on one worker has odds 2**-39


def test_workers_sharing_a_seed_accept_each_others_cookies_and_expire_them() -> None:
    seed = os.urandom(32)
    one, two, stranger = CookieJar(10.0, seed=seed), CookieJar(10.0, seed=seed), CookieJar(10.0, seed=os.urandom(32))
    cookie = one.make(PEER, now=1000.0)
    assert two.check(PEER, cookie, now=1001.0)  # made by one worker, checked by another
    assert two.check(PEER, cookie, now=1015.0)  # the previous period's secret is still accepted
    assert not two.check(PEER, cookie, now=1021.0)  # two periods on: expired
    assert not two.check(b"127.0.0.1:40001", cookie, now=1001.0)  # bound to the address
    assert not stranger.check(PEER, cookie, now=1001.0)  # another seed, another server


def _children(pid: int) -> set[int]:
    kids = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[1]) == pid:
                kids.add(int(entry))
    return kids


def test_two_workers_on_one_port_share_the_peers_and_report_each() -> None:
    server = ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex(), "--workers", "2"])
    totals = StatsSink()
    context = dtls_contexts.client_context()
    with server as address:
        assert server.pid is not None
        workers = _children(server.pid)
        assert len(workers) == 2, workers
        assocs = [DtlsAssociation(f"w{i}", "workers", address, context, totals, identity=b"w-%d" % i,
                                  key=QUICKSTART_KEY, message_level=logging.WARNING) for i in range(CLIENTS)]
        gevent.joinall([gevent.spawn(a.handshake_once) for a in assocs], timeout=30)
        assert totals.handshakes.completed == CLIENTS, dict(totals.handshakes.failures)
    # One stop line: the totals, then each worker's handshakes/pings.
    found = re.search(r"stopped: (\d+) handshakes, .* 0 failures, per worker handshakes/pings: (\d+)/0, (\d+)/0",
                      server.summary)
    assert found is not None, server.summary
    total, first, second = map(int, found.groups())
    assert total == first + second == CLIENTS, server.summary
    assert first > 0 and second > 0, server.summary  # the kernel spread the peers over both
    for pid in workers:  # every worker is gone
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_a_run_with_server_workers_spreads_its_clients_over_the_built_in_servers(procs: Procs,
                                                                                 tmp_path: Path) -> None:
    # `loadgen run --server-workers 2`: the built-in server is two processes on one port, and the
    # run's summary carries the server's stop line with each worker's share.
    scenario = tmp_path / "two.yaml"
    scenario.write_text(f"""name: two
clients: {{count: {CLIENTS}, spawn_rate: 200}}
run_time: 3s
psk: {{identity: "device-{{n:05d}}", key: "{QUICKSTART_KEY.value.hex()}"}}
ping: {{interval: 500ms, expect: echo}}
outputs: {{results_dir: results, report: false}}
""")
    run = procs.loadgen("run", scenario, "--server-workers", "2")
    assert run.wait(60) == 0, run.describe()
    (results,) = (tmp_path / "results").iterdir()
    summary = json.loads((results / "summary.json").read_text())
    assert summary["handshake"]["completed"] == CLIENTS and summary["ping"]["failed"] == 0, summary["handshake"]
    shares = re.search(r"per worker handshakes/pings: (\d+)/(\d+), (\d+)/(\d+)$", summary["server"])
    assert shares is not None, summary["server"]
    first, first_pings, second, second_pings = map(int, shares.groups())
    assert first + second == CLIENTS and first > 0 and second > 0, summary["server"]
    assert first_pings + second_pings >= summary["ping"]["completed"], summary["server"]  # each answered once


def test_server_workers_must_be_positive(procs: Procs, tmp_path: Path) -> None:
    scenario = tmp_path / "none.yaml"
    scenario.write_text(f'name: none\nclients: {{count: 1}}\nrun_time: 1s\n'
                        f'psk: {{identity: "d", key: "{QUICKSTART_KEY.value.hex()}"}}\n')
    run = procs.loadgen("run", scenario, "--server-workers", "0")
    assert run.wait(30) == 2, run.describe()
    assert "--server-workers must be positive" in run.stderr and "Traceback" not in run.stderr
