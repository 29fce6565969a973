"""The reference DTLS server's cost in instructions (valgrind's callgrind): per handshake and per ping.

CPU time on a shared machine moves +-15% between runs; an instruction count does not, so
this is how to A/B a change to the server. ``loadgen serve dtls`` itself runs under
callgrind, driven over loopback by a plain client in this process, one exchange at a time
(nothing is retransmitted, nothing queues): ``--warm`` handshakes and pings, then
``--handshakes`` handshakes, then ``--pings`` pings on one association, callgrind dumping
its counts after each phase (``callgrind_control --dump``). Divided, they are the server's
instructions per handshake (four datagrams in: ClientHello twice, ClientKeyExchange with
Finished, close_notify; three out) and per ping (one in, one out), the user-space side of
the syscalls included, startup and warm-up excluded.

    python benchmarks/bench_server_instructions.py [--handshakes 400] [--pings 4000] [--warm 50]
                                                   [--keep DIR]  (callgrind files for callgrind_annotate)
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadgen.cli.keys import QUICKSTART_KEY  # noqa: E402
from loadgen.protocol import dtls_contexts, dtls_factory  # noqa: E402
from loadgen.protocol.engine import DatagramClient  # noqa: E402

_LISTENING = re.compile(r"listening on (\S+):(\d+)")
#: Short, so that the deadline each handshake leaves in the server's timer heap pops (stale: the
#: peer said close_notify) within the handshakes' phase; 10 s otherwise (no other difference).
_HANDSHAKE_TIMEOUT = 2.0


def _flush(engine: DatagramClient, sock: socket.socket) -> None:
    for datagram in engine.datagrams_to_send():
        sock.send(datagram)


def _connect(address: tuple[str, int]) -> tuple[socket.socket, DatagramClient]:
    """A client socket and engine, handshake done (the server answers within the socket timeout)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(60.0)
    sock.connect(address)
    engine = dtls_factory.client_engine(dtls_contexts.client_context(), lambda hint: (b"bench", QUICKSTART_KEY))
    engine.start(time.monotonic())
    _flush(engine, sock)
    while not engine.handshake_done:
        engine.receive_datagram(sock.recv(65536), time.monotonic())
        if engine.closed:
            raise RuntimeError(f"handshake failed: {engine.error}")
        _flush(engine, sock)
    return sock, engine


def _handshakes(address: tuple[str, int], n: int) -> None:
    for _ in range(n):
        sock, engine = _connect(address)
        engine.close()  # close_notify, as bench_dtls's handshakes end
        _flush(engine, sock)
        sock.close()


def _pings(sock: socket.socket, engine: DatagramClient, n: int) -> None:
    for i in range(n):
        engine.send(b"ping %08d" % i)
        _flush(engine, sock)
        engine.receive_datagram(sock.recv(65536), time.monotonic())
        while engine.next_event() is not None:
            pass


def _dump(pid: int) -> None:
    """Have callgrind write what it counted since the last dump (it answers within a second: the
    server wakes every second)."""
    subprocess.run(["callgrind_control", "--dump", str(pid)], check=True, capture_output=True, timeout=120)


def _instructions(out: Path) -> int:
    totals = re.search(r"^(?:summary|totals): (\d+)", out.read_text(), re.MULTILINE)
    if totals is None:
        raise RuntimeError(f"no totals in {out}")
    return int(totals[1])


def _run(out: Path, warm: int, handshakes: int, pings: int) -> tuple[int, int]:
    """Instructions (Ir) of the server for ``handshakes`` handshakes, then for ``pings`` pings:
    one run under callgrind, dumped after each phase (startup and warm-up go in a dump of their own)."""
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")])),
           "PYTHONHASHSEED": "0"}
    proc = subprocess.Popen(
        # Uncompressed names: each dump reads on its own (callgrind_annotate, or summing by hand).
        ["valgrind", "--tool=callgrind", "--compress-strings=no", "--compress-pos=no", f"--callgrind-out-file={out}",
         sys.executable, "-m", "loadgen", "serve", "dtls", "--host", "127.0.0.1", "--port", "0",
         "--handshake-timeout", str(_HANDSHAKE_TIMEOUT), "--psk-hex", QUICKSTART_KEY.value.hex()],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        found = _LISTENING.search(line)
        if found is None:
            raise RuntimeError(f"server did not start: {line!r}")
        address = (found[1], int(found[2]))
        _handshakes(address, warm)
        sock, engine = _connect(address)
        _pings(sock, engine, warm)
        _dump(proc.pid)  # .1: startup and warm-up
        _handshakes(address, handshakes)
        time.sleep(_HANDSHAKE_TIMEOUT + 0.5)  # each handshake's deadline leaves the server's heap
        _dump(proc.pid)  # .2: the handshakes
        _pings(sock, engine, pings)
        _dump(proc.pid)  # .3: the pings
        sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _instructions(Path(f"{out}.2")), _instructions(Path(f"{out}.3"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--handshakes", type=int, default=400)
    parser.add_argument("--pings", type=int, default=4000)
    parser.add_argument("--warm", type=int, default=50)
    parser.add_argument("--keep", type=Path, default=None, help="keep the callgrind files here")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind not found (apt-get install valgrind)")
        return 1
    with tempfile.TemporaryDirectory(prefix="loadgen-cg-") as tmp:
        where = args.keep or Path(tmp)
        where.mkdir(parents=True, exist_ok=True)
        handshakes, pings = _run(where / "callgrind.out", args.warm, args.handshakes, args.pings)
    per_hs = handshakes / args.handshakes
    per_ping = pings / args.pings
    print(f"# python benchmarks/bench_server_instructions.py {' '.join(sys.argv[1:])}")
    print(f"reference server instructions per handshake: {per_hs / 1e3:8.1f} k  ({args.handshakes} handshakes)")
    print(f"reference server instructions per ping     : {per_ping / 1e3:8.1f} k  ({args.pings} pings)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
