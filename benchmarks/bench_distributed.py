"""Distributed scale benchmark: N DTLS associations across Locust worker processes on this machine.

Runs ``loadgen run SCENARIO --processes P`` (built-in server, each client pinging every
--interval s), samples every process's CPU from /proc while it runs, and prints:
associations held, pings answered while holding, ping RTT p50/p99 while holding,
per-process CPU (ramp and hold), worst event-loop lag, workers Locust marked missing,
worker files written, Locust's counts next to loadgen's, CPU per ping all-in (workers with
the master, and the server) next to the same run's ping microbenchmark (``bench_dtls.pings``,
back to back, measured after the distributed run) and memory per association, and the verdict.

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

from floors import wake_up, wake_ups

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
        #: Resident memory (bytes) per process: the baseline (the last reading before its first
        #: association's socket, sampled every 0.1 s until then: the process is up, imports
        #: done, nothing held yet), every reading after (seconds, bytes), and the highest.
        self.rss_base: dict[str, int] = {}
        self.rss_series: dict[str, list[tuple[float, int]]] = {}
        self.rss_peak: dict[str, int] = {}
        #: Per second: how often each process has slept and woken so far (floors.wake_ups).
        self.wakes: list[tuple[float, dict[str, int]]] = []
        self._fds_idle: dict[str, int] = {}
        self.done = threading.Event()

    def _pids(self) -> dict[int, str]:
        """This run's processes (the root and its descendants) by role; the server's workers
        (serve --workers) are the server too."""
        parents, names = {}, {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry)] = int(stat[1])
            name = role(cmd)
            if name:
                names[int(entry)] = name

        def ours(pid: int) -> bool:
            while pid > 1:
                if pid == self.root:
                    return True
                pid = parents.get(pid, 0)
            return False

        return {pid: name for pid, name in names.items() if ours(pid)}

    def run(self) -> None:
        tick = os.sysconf("SC_CLK_TCK")
        prev: dict[int, tuple[int, float]] = {}
        start = last = time.monotonic()
        while not self.done.wait(0.1 if len(self.rss_series) < len(self.rss_base) or not self.rss_base else 1.0):
            now = time.monotonic()
            pids = self._pids()
            self._watch_baselines(pids, now - start)
            if now - last < 0.95:
                continue
            last = now
            sample = {}
            woken: dict[str, int] = {}
            for pid, name in pids.items():
                try:
                    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                except OSError:
                    continue
                ticks = int(fields[11]) + int(fields[12])
                try:
                    woken[name] = woken.get(name, 0) + wake_ups(pid)
                except OSError:
                    pass
                if pid in prev:
                    t0, m0 = prev[pid]
                    sample[name] = sample.get(name, 0.0) + 100.0 * (ticks - t0) / tick / (now - m0)
                prev[pid] = (ticks, now)
            self.samples.append((now - start, sample))
            self.wakes.append((now - start, woken))

    def _watch_baselines(self, pids: dict[int, str], at: float) -> None:
        """RSS of each process: its baseline until its first association, then the series. A worker's
        first association is its first socket beyond the few it opens while starting; the server
        keeps one socket, so its baseline ends with the first worker's. The server's workers
        (serve --workers) are summed as the server."""
        sizes: dict[str, tuple[int, int]] = {}
        for pid, name in pids.items():
            if name == "master":
                continue  # it holds no association
            try:
                rss = int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
                fds = len(os.listdir(f"/proc/{pid}/fd")) if name.startswith("worker") else 0
            except OSError:
                continue
            before = sizes.get(name, (0, 0))
            sizes[name] = (before[0] + rss, before[1] + fds)
        for name, (rss, fds) in sizes.items():
            if name in self.rss_series:
                self.rss_series[name].append((at, rss))
                self.rss_peak[name] = max(self.rss_peak[name], rss)
            elif name.startswith("worker") and fds > self._fds_idle.setdefault(name, fds) + 5 or \
                    name == "server" and self.rss_series:
                self.rss_series[name] = [(at, rss)]
                self.rss_peak[name] = max(self.rss_base.get(name, rss), rss)
            else:
                self._fds_idle[name] = min(self._fds_idle.get(name, fds), fds)
                self.rss_base[name] = rss


def wakes_between(wakes: list[tuple[float, dict[str, int]]], first: float, end: float) -> dict[str, int]:
    """Wake-ups of each process between the samples nearest ``first`` and ``end``."""
    inside = [counts for at, counts in wakes if first <= at < end]
    if len(inside) < 2:
        return {}
    return {name: inside[-1][name] - inside[0].get(name, 0) for name in inside[-1]}


def mean_cpu(samples: list[tuple[float, dict[str, float]]], first: float, end: float) -> dict[str, float]:
    sums: dict[str, list[float]] = {}
    for at, sample in samples:
        if first <= at < end:
            for name, value in sample.items():
                sums.setdefault(name, []).append(value)
    return {name: sum(v) / len(v) for name, v in sorted(sums.items())}


def memory_growth(sampler: CpuSampler, hold_end: float) -> tuple[dict[str, int], dict[str, int]]:
    """Bytes the workers (summed) and the server grew beyond their baselines: at the end of the hold
    (the last reading before ``hold_end`` s, before the stop) and at their highest."""
    held, topped = {"workers": 0, "server": 0}, {"workers": 0, "server": 0}
    for name, series in sampler.rss_series.items():
        key = "workers" if name.startswith("worker") else name
        if key not in held or name not in sampler.rss_base:
            continue
        before_stop = [rss for at, rss in series if at < hold_end] or [series[0][1]]
        held[key] += before_stop[-1] - sampler.rss_base[name]
        topped[key] += sampler.rss_peak[name] - sampler.rss_base[name]
    return held, topped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--associations", type=int, default=50000)
    parser.add_argument("--processes", type=int, default=3)
    parser.add_argument("--ramp-rate", type=float, default=500.0, help="clients started per second")
    parser.add_argument("--hold", type=float, default=60.0, help="seconds to hold them all after the ramp")
    parser.add_argument("--interval", type=float, default=5.0, help="ping interval, seconds")
    parser.add_argument("--server-workers", type=int, default=1,
                        help="the built-in server's processes (loadgen run --server-workers)")
    parser.add_argument("--results-dir", default=str(ROOT / "results"), help="where the run's results go")
    parser.add_argument("--micro-seconds", type=float, default=5.0,
                        help="length of the same-run ping microbenchmark (bench_dtls.pings), 0: skip it")
    args = parser.parse_args()
    ramp = args.associations / args.ramp_rate
    run_time = int(ramp + args.hold + 1)
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        results = Path(args.results_dir).resolve()
        before = set(results.iterdir()) if results.exists() else set()
        scenario = Path(tmp) / "dist.yaml"
        scenario.write_text(SCENARIO.format(n=args.associations, rate=args.ramp_rate, run_time=run_time,
                                            interval=args.interval, results=results))
        cmd = [sys.executable, "-m", "loadgen", "run", str(scenario), "--processes", str(args.processes),
               "--server-workers", str(args.server_workers)]
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        print(f"$ python benchmarks/bench_distributed.py --associations {args.associations} --processes "
              f"{args.processes} --ramp-rate {args.ramp_rate:g} --hold {args.hold:g} --interval {args.interval:g}"
              f" --server-workers {args.server_workers}")
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
        return report(args, run_dir, summary, series, sampler, ramp, micro(args.micro_seconds))


def micro(seconds: float) -> tuple[float, float] | None:
    """The same run's microbenchmark: client and server CPU seconds per ping, 200 associations
    pinging back to back against one reference server (``bench_dtls.pings``)."""
    if seconds <= 0:
        return None
    sys.path.insert(0, str(ROOT))
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_dtls import pings, process_cpu

    from loadgen.cli.keys import QUICKSTART_KEY
    from loadgen.servers.launcher import ServerProcess

    server = ServerProcess(["--psk-hex", QUICKSTART_KEY.value.hex()])
    with server as address:
        assert server.pid is not None
        s0 = process_cpu(server.pid)
        per_cpu, _, totals = pings(address, 200, seconds)
        s1 = process_cpu(server.pid)
    return 1 / per_cpu, (s1 - s0) / max(totals.pings.completed, 1)


def report(args: argparse.Namespace, run_dir: Path, summary: dict, series: dict, sampler: CpuSampler,
           ramp: float, micro_costs: tuple[float, float] | None) -> int:
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
    hold_cpu = mean_cpu(sampler.samples, settle, hold_end)
    per_second = hold_attempts / max(hold_end - int(settle), 1)
    if per_second:
        workers = sum(v for k, v in hold_cpu.items() if k.startswith("worker")) + hold_cpu.get("master", 0.0)
        costs = {"workers+master": workers / 100 / per_second, "server": hold_cpu.get("server", 0.0) / 100 / per_second}
        for (label, cost), base in zip(costs.items(), micro_costs or (None, None), strict=True):
            same_run = (f"; microbenchmark in the same run {base * 1e6:.1f} us ({cost / base:.2f}x)"
                        if base else "")
            print(f"CPU per ping all-in, {label:<15} {cost * 1e6:6.1f} us ({per_second:.0f} pings/s while holding)"
                  + same_run)
        woken = wakes_between(sampler.wakes, settle, hold_end)
        pings_held = per_second * max(hold_end - int(settle), 1)
        if woken:
            load_wakes = sum(v for k, v in woken.items() if k.startswith("worker") or k == "master")
            floor = wake_up(2.0)
            print(f"wake-ups per ping while holding  workers+master {load_wakes / pings_held:.2f}, server "
                  f"{woken.get('server', 0) / pings_held:.2f}; one sleep and wake-up of an idle loop costs "
                  f"{floor * 1e6:.1f} us of CPU here (floors.wake_up)")
    if peak:
        held, topped = memory_growth(sampler, hold_end)
        print(f"memory per association           workers {held['workers'] / peak / 1024:.1f} KiB, server "
              f"{held['server'] / peak / 1024:.1f} KiB (RSS at the end of the hold beyond each process's "
              f"baseline: its RSS before its first association)")
        print(f"memory per association, peak     workers {topped['workers'] / peak / 1024:.1f} KiB, server "
              f"{topped['server'] / peak / 1024:.1f} KiB (highest RSS, the stop included)")
    print(f"verdict: {(summary.get('analysis') or {}).get('verdict')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
