"""``serve dtls --workers N``: N server processes on one UDP port (SO_REUSEPORT).

The kernel spreads datagrams over the workers' sockets by the 4-tuple's hash, so each peer's
association stays in one process. The workers share the cookie seed, so a cookie made by one
verifies in any. The parent binds every socket before forking (no race for the port, port 0
works), prints one address, forwards SIGINT/SIGTERM, and reaps every child within a bound.
"""

from __future__ import annotations

import json
import os
import signal
import socket as _stdsocket
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict

from loadgen.servers.dtls import DtlsServer, ServerStats
from loadgen.servers.udp import bind_udp

#: How long the parent waits for a worker's totals after SIGTERM before it kills the worker.
STOP_TIMEOUT = 10.0
_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def serve_workers(make_server: Callable[[bytes], DtlsServer], host: str, port: int, count: int,
                  listening: Callable[[str, int], None]) -> list[ServerStats]:
    """Run ``count`` workers (``make_server(seed)`` each) until SIGINT/SIGTERM; each worker's stats."""
    seed = os.urandom(32)
    socks = [bind_udp(host, port, reuse_port=True)]
    port = socks[0].getsockname()[1]
    socks += [bind_udp(host, port, reuse_port=True) for _ in range(count - 1)]
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)  # until every child is forked and we wait
    children: list[tuple[int, int]] = []
    try:
        for index in range(count):
            read_end, write_end = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_end)
                _worker(make_server, seed, socks, index, write_end)
            os.close(write_end)
            children.append((pid, read_end))
    finally:
        for sock in socks:
            sock.close()
    listening(host, port)
    try:
        signal.sigwait(_SIGNALS)
    finally:
        results = [_reap(pid, read_end) for pid, read_end in children]
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    return results


def _worker(make_server: Callable[[bytes], DtlsServer], seed: bytes, socks: list[_stdsocket.socket], index: int,
            out: int) -> None:
    """In the child: serve on socket ``index`` until SIGTERM, write the totals as JSON, exit."""
    code = 1
    try:
        from loadgen.cli.serve import wait_for_signal
        from loadgen.servers.launcher import _die_with_parent

        _die_with_parent()
        import gevent

        gevent.reinit()
        mine = socks[index]
        for i, sock in enumerate(socks):
            if i != index:
                sock.close()
        server = make_server(seed)
        server.start(mine)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
        wait_for_signal()
        server.stop()
        stats = asdict(server.stats)
        os.write(out, json.dumps(stats).encode())
        code = 0
    finally:
        os._exit(code)


def _reap(pid: int, read_end: int) -> ServerStats:
    """Stop one worker (SIGTERM, then SIGKILL after :data:`STOP_TIMEOUT`) and read its totals."""
    import select

    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    data = b""
    with os.fdopen(read_end, "rb", buffering=0) as pipe:
        ready, _, _ = select.select([pipe], [], [], STOP_TIMEOUT)
        if ready:
            data = pipe.read(1 << 20) or b""
    if not data:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    os.waitpid(pid, 0)
    stats = ServerStats()
    if data:
        raw = json.loads(data)
        for name, value in raw.items():
            setattr(stats, name, value)
        stats.failures = Counter(raw["failures"])
    else:
        stats.failures["worker-lost"] += 1
    return stats
