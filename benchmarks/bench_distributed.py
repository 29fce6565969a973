"""Distributed scale benchmark: N DTLS associations across Locust worker processes on this machine.

Runs ``loadgen run SCENARIO --processes P`` (built-in server, each client pinging every
--interval s), samples every process's CPU from /proc while it runs, and prints:
associations held, pings answered while holding, ping RTT p50/p99 while holding,
per-process CPU (ramp and hold), worst event-loop lag, workers Locust marked missing,
worker files written, Locust's counts next to loadgen's, and the run's verdict.

    python benchmarks/bench_distributed.py --associations 50000 --processes 3 --ramp-rate 500 --hold 60
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = """name: dist{n}
clients: {{count: {n}, spawn_rate: {rate}}}
run_time: {run_time}s
psk: {{identity: "device-{{n:05d}}", key: "000102030405060708090a0b0c0d0e0f"}}
ping: {{interval: {interval}s, expect: echo}}
outputs: {{results_dir: {results}, report: false}}
"""


def role(cmdline: str) -> str | None:
    if "loadgen" not in cmdline:
        return None
    if " serve " in cmdline:
        return "server"
    if "--worker-index" in cmdline:
        return "worker-" + cmdline.split("--worker-index ")[1].split()[0]
    if " run " in cmdline:
        return "master"
    return None


class CpuSampler(threading.Thread):
    """Every second: CPU % of one core per process of the run (master, workers, server)."""

    def __init__(self, root_pid: int) -> None:
        super().__init__(daemon=True)
        self.root = root_pid
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.done = threading.Event()

    def _pids(self) -> dict[int, str]:
        out = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            name = role(cmd)
            # only this run's processes: the root or its descendants (ppid chain)
            if name and (int(entry) == self.root or int(stat[1]) == self.root):
                out[int(entry)] = name
        return out

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        prev: dict[int, tuple[int, float]] = {}
        start = time.monotonic()
        while not self.done.wait(1.0):
            now = time.monotonic()
            sample = {}
            for pid, name in self._pids().items():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                ticks = int(fields[11]) + int(fields[12])
                if pid in prev:
                    t0, m0 = prev[pid]
                    sample[name] = 100.0 * (ticks - t0) / tick / (now - m0)
                prev[pid] = (ticks, now)
            self.samples.append((now - start, sample))


def mean_cpu(samples: list[tuple[float, dict[str, float]]], first: float, end: float) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for at, sample in samples:
        if first <= at < end:
            for name, value in sample.items():
                sums.setdefault(name, []).append(value)
    return {name: sum(v) / len(v) for name, v in sorted(sums.items())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=50000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--ramp-rate", type=float, default=500.0, help="clients started per second")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to hold them all after the ramp")
    parser.add_argument("--interval", type=float, default=5.0, help="ping interval, seconds")
    parser.add_argument("--results-dir", default=str(ROOT / "results"), help="where the run's results go")
    args = parser.parse_args()
    ramp = args.associations / args.ramp_rate
    run_time = int(ramp + args.hold + 1)
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        results = Path(args.results_dir).resolve()
        before = set(results.iterdir()) if results.exists() else set()
        scenario = Path(tmp) / "dist.yaml"
        scenario.write_text(SCENARIO.format(n=args.associations, rate=args.ramp_rate, run_time=run_time,
                                            interval=args.interval, results=results))
        cmd = [sys.executable, "-m", "loadgen", "run", str(scenario), "--processes", str(args.processes)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        print(f"$ python benchmarks/bench_distributed.py --associations {args.associations} --processes "
              f"{args.processes} --ramp-rate {args.ramp_rate:g} --hold {args.hold:g} --interval {args.interval:g}")
        print(f"  runs: loadgen run SCENARIO --processes {args.processes} ({args.associations} clients at "
              f"{args.ramp_rate:g}/s, run_time {run_time} s, ping every {args.interval:g} s)", flush=True)
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        sampler = CpuSampler(proc.pid)
        sampler.start()
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            if "loadgen: device-" in line:
                continue
            tail.append(line.rstrip())
            if line.startswith(("loadgen: health", "loadgen: verdict", "loadgen: WARNING")) or "locust" in line \
                    or "garbage collection" in line or "marked it missing" in line:
                print("  " + line.rstrip(), flush=True)
        proc.wait()
        sampler.done.set()
        sampler.join()
        runs = sorted(set(results.iterdir()) - before) if results.exists() else []
        if proc.returncode not in (0, 1) or not runs:
            print("\n".join(tail[-30:]))
            return 2
        run_dir = runs[-1]
        summary = json.loads((run_dir / "summary.json").read_text())
        series = json.loads((run_dir / "series.json").read_text())
        return report(args, run_dir, summary, series, sampler, ramp)


def report(args: argparse.Namespace, run_dir: Path, summary: dict, series: dict, sampler: CpuSampler,
           ramp: float) -> int:
    sys.path.insert(0, str(ROOT))
    from loadgen.stats.run import RunStats

    stats = RunStats.from_json(series)
    rows = stats.rows()
    settle = ramp + 10  # the hold, once the last handshakes and their first pings are done
    hold_end = int(ramp + args.hold)  # before the stop (Locust stops every user at once)
    hold_cells, hold_rows = stats.span(int(settle), hold_end)
    ping = hold_cells["ping"]
    hold_attempts = ping.completed + ping.failed
    health = summary.get("health") or {}
    peak = max((r["active"] for r in rows), default=0)
    hs = summary.get("handshake", {})
    print(f"\nresults: {run_dir}")
    print(f"associations held at peak        {peak} of {args.associations} "
          f"(handshakes completed {hs.get('completed')}, failed {hs.get('failed')})")
    if hold_attempts:
        print(f"pings answered while holding     {100 * ping.completed / hold_attempts:.3f}% "
              f"({ping.completed} of {hold_attempts}, seconds {int(settle)}..{hold_end - 1})")
        p50, p99 = ping.percentile(50), ping.percentile(99)
        print(f"ping RTT while holding           p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.1f} ms"
              if p50 is not None and p99 is not None else "ping RTT while holding           -")
    print(f"event-loop lag, worst            {health.get('loop_lag_max_s', 0) * 1000:.0f} ms "
          f"({health.get('seconds_lagging', 0)} s over {health.get('starved_lag_s', 0) * 1000:.0f} ms); "
          f"while stopping {health.get('stop_lag_max_s', 0) * 1000:.0f} ms")
    print(f"workers marked missing           {health.get('workers_marked_missing') or 'none'}; "
          f"worker files missing: {health.get('worker_files_missing') or 'none'}")
    for kind, c in (health.get("counts") or {}).items():
        print(f"{kind + 's':<10} Locust {c['locust']:>9}  loadgen {c['loadgen']:>9}  "
              f"{'equal' if c['locust'] == c['loadgen'] else 'DIFFER'}")
    for label, first, end in (("ramp", 0.0, ramp), ("hold", settle, hold_end)):
        cpu = mean_cpu(sampler.samples, first, end)
        print(f"CPU % of a core, {label:<5}          " + "  ".join(f"{k} {v:.0f}" for k, v in cpu.items())
              + f"  (sum {sum(cpu.values()):.0f} of 200)")
    print(f"verdict: {(summary.get('analysis') or {}).get('verdict')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
