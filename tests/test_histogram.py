"""The stats' HDR histogram records each latency in the bucket hdrh itself would.

:class:`loadgen.stats.cells.Histogram` inlines hdrh's counts-index arithmetic (hdrh's own
took ~1.5 us per recording, one per completed ping). A wrong bucket would shift every percentile a
report, a threshold or ``loadgen compare`` reads, so it is checked against hdrh's own
``record_value`` on the range's edges, every power of two and random values.
"""

from __future__ import annotations

import random

from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from loadgen.stats.cells import HDR_RANGE, PERCENTILES, Histogram, new_histogram

HIGHEST = HDR_RANGE[1]


def edge_values() -> list[int]:
    """0, 1, the top of the range and just past it, and each power of two with its neighbours."""
    values = [0, 1, 2, 3, HIGHEST - 1, HIGHEST, HIGHEST + 1, 2 * HIGHEST, 2**62]
    for bit in range(1, 40):
        values += [2**bit - 1, 2**bit, 2**bit + 1]
    return values


def both(values: list[int]) -> tuple[HdrHistogram, Histogram]:
    """hdrh's histogram and ours, fed the same values; each recording must agree on its result."""
    theirs, ours = HdrHistogram(*HDR_RANGE), new_histogram()
    assert isinstance(ours, Histogram)
    for value in values:
        assert ours.record_value(value) == theirs.record_value(value), value
    return theirs, ours


def assert_same(theirs: HdrHistogram, ours: Histogram) -> None:
    assert list(ours.counts) == list(theirs.counts)
    assert ours.get_total_count() == theirs.get_total_count()
    assert ours.get_min_value() == theirs.get_min_value()
    assert ours.get_max_value() == theirs.get_max_value()
    wanted = [p for _, p in PERCENTILES]
    assert ours.get_percentile_to_value_dict(wanted) == theirs.get_percentile_to_value_dict(wanted)


def test_every_edge_value_lands_in_hdrhs_bucket() -> None:
    values = edge_values()
    theirs, ours = both(values)
    assert_same(theirs, ours)
    # Every value in the range is counted; far past its top hdrh drops the value (record_value
    # is False), and so do we.
    in_range = sum(1 for v in values if v <= HIGHEST)
    assert in_range <= ours.get_total_count() < len(values)
    assert new_histogram().record_value(2**62) is False


def test_a_hundred_thousand_random_latencies_make_the_same_percentiles() -> None:
    rng = random.Random(7)
    # Loopback pings (tens of us), WAN round trips (ms) and timeouts (s): log-uniform over the range.
    values = [int(10 ** rng.uniform(0, 9.5)) for _ in range(100_000)]
    theirs, ours = both(values)
    assert_same(theirs, ours)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2 * HIGHEST), min_size=1, max_size=50),
       st.integers(min_value=1, max_value=1000))
def test_counts_and_weights_match_hdrh(values: list[int], count: int) -> None:
    theirs, ours = HdrHistogram(*HDR_RANGE), new_histogram()
    for value in values:
        assert ours.record_value(value, count) == theirs.record_value(value, count)
    assert_same(theirs, ours)


def test_merged_and_encoded_histograms_keep_every_count() -> None:
    """Workers' histograms are encoded, sent and added on the master: ours survive both."""
    first, second = new_histogram(), new_histogram()
    for value in (5, 70, 900, 12_000):
        first.record_value(value)
        second.record_value(value * 3)
    decoded = HdrHistogram.decode(second.encode())
    first.add(decoded)
    reference = HdrHistogram(*HDR_RANGE)
    for value in (5, 70, 900, 12_000, 15, 210, 2700, 36_000):
        reference.record_value(value)
    assert list(first.counts) == list(reference.counts)
    assert first.get_total_count() == 8


def test_a_dropped_histogram_frees_its_counts_without_a_garbage_collection() -> None:
    """Each second of a run makes cells whose histograms are packed, shipped or merged and then dropped.

    hdrh's histogram and its encoder (which holds the ~190 kB counts array) referred to each other,
    so a dropped one waited for a full collection, which a load process with a frozen heap rarely
    runs: 40-50 of them, 8-10 MB, piled up in each process of a 30 s run. Here 40 "seconds" of cells
    go through what the stats do with them, with the collector off: what they leave behind must be
    far less than one second's histogram each.
    """
    import gc
    import tracemalloc

    from loadgen.stats.cells import Cell

    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        total = Cell()
        before = tracemalloc.get_traced_memory()[0]
        for second in range(40):
            cell = Cell()
            cell.completed = 1
            cell.histogram = new_histogram()
            cell.histogram.record_value(1000 + second)
            wire = Cell.from_wire(cell.to_wire())  # shipped to the master
            cell.pack()  # packed when its second is over
            total.add(wire)  # merged into the run's totals (unpacks a decoded histogram)
            total.add(cell)
            del cell, wire
        left = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        gc.enable()
    assert left < 1_000_000, f"{left / 1e6:.1f} MB left behind by 40 seconds of dropped histograms"
    assert total.hist() is not None and total.hist().get_total_count() == 80
