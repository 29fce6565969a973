"""Exact statistics: per-target cells, per-second deltas, and their merge across simulated workers.

The property that matters: percentiles a master computes from its workers' merged
deltas equal those of one HDR histogram fed every raw sample, and are within the HDR
precision (3 significant digits) of the raw samples' own percentiles.
"""

from __future__ import annotations

import json
import math
import random

import msgpack
import pytest
from hdrh.histogram import HdrHistogram

from loadgen.protocol.errors import HandshakeTimeout, PingTimeout
from loadgen.scenario import Thresholds
from loadgen.stats.cells import HDR_RANGE, PERCENTILES, Cell, latency_us
from loadgen.stats.facts import HANDSHAKE, PING, Ended, Finished, Message, Started
from loadgen.stats.run import RunStats
from loadgen.stats.sink import SecondDelta, StatsSink
from loadgen.stats.thresholds import evaluate

WORKERS = 4
SECONDS = 5
TARGETS = ("gw1", "gw2")


def raw_percentile(values: list[float], p: float) -> float:
    """The sample at percentile p (nearest rank), as HDR defines it."""
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def simulate() -> tuple[list[list[SecondDelta]], dict[tuple[int, str], list[float]], dict[str, int]]:
    """WORKERS sinks fed known latencies for SECONDS seconds; returns their deltas and the raw samples."""
    rng = random.Random(5)
    raw: dict[tuple[int, str], list[float]] = {}
    ended: dict[str, int] = dict.fromkeys(TARGETS, 0)
    per_worker: list[list[SecondDelta]] = []
    for worker in range(WORKERS):
        sink = StatsSink()
        deltas = []
        for second in range(SECONDS):
            for n in range(200 + 50 * worker):
                target = TARGETS[n % 2]
                kind = HANDSHAKE if n % 5 == 0 else PING
                # Spread over four decades so the percentiles differ and HDR buckets matter.
                elapsed = rng.choice([0.0004, 0.002, 0.03, 0.4]) * rng.uniform(0.5, 2.0)
                sink.record(Started(kind, target))
                if n % 37 == 0:
                    error = HandshakeTimeout("t") if kind == HANDSHAKE else PingTimeout("t")
                    sink.record(Finished(kind, target, elapsed, error, retransmits=2))
                else:
                    sink.record(Finished(kind, target, elapsed, sent_bytes=10, received_bytes=12, retransmits=1))
                    raw.setdefault((second, kind), []).append(elapsed)
                    raw.setdefault((-1, f"{kind}@{target}"), []).append(elapsed)
                if kind == HANDSHAKE and n % 3 == 0 and n % 37:
                    sink.record(Ended(target))
                    ended[target] += 1
                sink.record(Message(20, "dev", "ignored"))
            delta = sink.roll(users=10 + worker)
            delta.index = second  # a test cannot wait real seconds: pin the index
            deltas.append(delta)
        per_worker.append(deltas)
    return per_worker, raw, ended


def over_the_wire(delta: SecondDelta) -> SecondDelta:
    """What a master receives: Locust sends custom messages as msgpack."""
    return SecondDelta.from_wire(msgpack.unpackb(msgpack.packb(delta.to_wire()), raw=False))


def hdr_of(values: list[float]) -> HdrHistogram:
    hist = HdrHistogram(*HDR_RANGE)
    for v in values:
        hist.record_value(latency_us(v))
    return hist


@pytest.fixture(scope="module")
def merged() -> tuple[RunStats, dict[tuple[int, str], list[float]], dict[str, int]]:
    per_worker, raw, ended = simulate()
    master = RunStats()
    # Workers' messages interleave in any order at the master.
    messages = [d for deltas in per_worker for d in deltas]
    random.Random(1).shuffle(messages)
    for delta in messages:
        master.apply(over_the_wire(delta))
    return master, raw, ended


def test_merged_percentiles_equal_those_of_all_raw_samples(merged) -> None:
    master, raw, _ = merged
    for kind in (HANDSHAKE, PING):
        samples = [v for (second, k), vs in raw.items() if second >= 0 and k == kind for v in vs]
        reference = hdr_of(samples)
        cell = master.kinds[kind]
        assert cell.completed == len(samples)
        for _, p in PERCENTILES:
            got = cell.percentile(p)
            assert got is not None
            # Exactly what one histogram of every raw sample says ...
            assert got == reference.get_value_at_percentile(p) / 1e6, (kind, p)
            # ... which is the raw percentile to HDR's 3 significant digits.
            assert got == pytest.approx(raw_percentile(samples, p), rel=2e-3, abs=2e-6), (kind, p)


def test_per_target_cells_are_exact(merged) -> None:
    master, raw, ended = merged
    for target in TARGETS:
        for kind in (HANDSHAKE, PING):
            samples = raw[(-1, f"{kind}@{target}")]
            cell = master.cell(kind, target)
            assert cell.completed == len(samples)
            assert cell.percentile(99) == hdr_of(samples).get_value_at_percentile(99) / 1e6
            assert cell.attempted == cell.completed + cell.failed
            assert set(cell.failures) == {"handshake-timeout" if kind == HANDSHAKE else "ping-timeout"}
        handshakes = master.cell(HANDSHAKE, target)
        assert handshakes.ended == ended[target]
        assert master.active(target) == handshakes.completed - ended[target]
    assert master.active() == sum(master.active(t) for t in TARGETS)
    assert master.targets == list(TARGETS)


def test_each_second_merges_by_index_across_workers(merged) -> None:
    master, raw, _ = merged
    rows = master.rows()
    assert [r["second"] for r in rows] == list(range(SECONDS))
    active = 0
    for row in rows:
        assert row["processes"] == WORKERS
        assert row["users"] == sum(10 + w for w in range(WORKERS))
        for kind in (HANDSHAKE, PING):
            samples = raw[(row["second"], kind)]
            assert row[kind]["completed"] == len(samples)
            reference = hdr_of(samples)
            for name, p in PERCENTILES:
                assert row[kind][name] == reference.get_value_at_percentile(p) / 1000.0, (row["second"], kind, name)
        active += row["handshake"]["completed"] - row["handshake"]["ended"]
        assert row["active"] == active
    assert rows[-1]["active"] == master.active()


def test_totals_equal_the_sum_of_the_seconds(merged) -> None:
    master, _, _ = merged
    rows = master.rows()
    for kind in (HANDSHAKE, PING):
        total = master.kinds[kind]
        assert total.completed == sum(r[kind]["completed"] for r in rows)
        assert total.failed == sum(r[kind]["failed"] for r in rows)
        assert total.retransmits == sum(r[kind]["retransmits"] for r in rows)


def test_series_json_round_trip_keeps_everything(merged) -> None:
    master, _, _ = merged
    again = RunStats.from_json(json.loads(json.dumps(master.to_json())))
    assert again.rows() == master.rows()
    for key, cell in master.totals.items():
        twin = again.totals[key]
        assert (twin.completed, twin.failed, twin.ended, dict(twin.failures)) == \
            (cell.completed, cell.failed, cell.ended, dict(cell.failures))
        assert twin.percentiles_ms() == cell.percentiles_ms()


def test_span_merges_a_window_of_seconds_exactly(merged) -> None:
    master, raw, _ = merged
    cells, rows = master.span(1, 4)
    assert [r.index for r in rows] == [1, 2, 3]
    samples = [v for s in (1, 2, 3) for v in raw[(s, PING)]]
    assert cells[PING].completed == len(samples)
    assert cells[PING].percentile(95) == hdr_of(samples).get_value_at_percentile(95) / 1e6


def test_thresholds_judge_merged_run_stats(merged) -> None:
    master, _, _ = merged
    verdicts = evaluate(Thresholds(ping_p99=10.0, error_ratio=0.0), master, elapsed=SECONDS)
    assert [v.name for v in verdicts] == ["ping_p99", "error_ratio"]
    assert verdicts[0].passed and not verdicts[1].passed


def test_packed_cells_add_like_live_ones() -> None:
    a, b = Cell(), Cell()
    for v in (0.001, 0.002, 0.5):
        a.histogram = a.histogram or HdrHistogram(*HDR_RANGE)
        a.histogram.record_value(latency_us(v))
        a.completed += 1
    b.add(a)
    b.pack()
    assert b.histogram is None and b.packed
    c = Cell()
    c.add(b)
    c.add(a)
    assert c.completed == 6 and c.percentile(100) == a.percentile(100)


def test_sink_roll_measures_time_and_cpu_and_starts_afresh() -> None:
    sink = StatsSink()
    sink.record(Started(PING, "t"))
    first = sink.roll(users=3)
    second = sink.roll()
    assert first.index == 0 and second.index == 1
    assert first.cells[(PING, "t")].attempted == 1 and not second.cells
    assert first.duration >= 0 and first.cpu >= 0 and first.users == 3
    sink.reset()
    assert sink.roll().index == 0


def test_sink_reads_what_it_counted_since_the_last_roll() -> None:
    """Tests and benchmarks read a sink's totals per kind over all targets (snapshots), as RunStats has them."""
    sink = StatsSink()
    assert sink.handshakes.attempted == 0 and set(sink.kinds) == {HANDSHAKE, PING}
    for target, elapsed in (("a", 0.001), ("b", 0.003)):
        sink.record(Started(HANDSHAKE, target))
        sink.record(Finished(HANDSHAKE, target, elapsed, sent_bytes=5, retransmits=1))
    sink.record(Started(PING, "a"))
    sink.record(Finished(PING, "a", 0.5, PingTimeout("t")))
    hs = sink.handshakes
    assert (hs.attempted, hs.completed, hs.failed, hs.in_flight, hs.sent_bytes, hs.retransmits) == (2, 2, 0, 0, 10, 2)
    assert hs.percentile(100) == hdr_of([0.001, 0.003]).get_value_at_percentile(100) / 1e6
    assert dict(sink.pings.failures) == {"ping-timeout": 1} and sink.kinds[PING].failed == 1
    hs.completed += 100  # a snapshot: the sink's own cells are untouched
    assert sink.handshakes.completed == 2
    delta = sink.roll()
    run = RunStats()
    run.apply(delta)
    assert run.handshakes.to_wire() == hs.to_wire() | {"completed": 2}
    assert sink.handshakes.attempted == 0 and sink.pings.failed == 0  # counting starts afresh
