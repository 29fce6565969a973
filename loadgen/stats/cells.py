"""One cell of exact statistics: counters and an HDR latency histogram of one kind of attempt.

A :class:`Cell` is what the stats keep per (kind, target) for the whole run, per second
and per step. Cells add up exactly (counters are sums, HDR histograms merge without
loss), which is what makes a master's percentiles equal to those of all raw samples.

A cell's histogram is created on the first success (most per-second cells of an idle
target never need one), and may be *packed* into its compressed encoding: a live HDR
histogram holds ~190 kB of counts, its encoding a few hundred bytes, so an hour of
per-second cells fits in memory.
"""

from __future__ import annotations

import weakref
from collections import Counter
from typing import Any

from hdrh.codec import HdrHistogramEncoder
from hdrh.histogram import HdrHistogram

from loadgen.stats.facts import HANDSHAKE, PING, is_notification

#: Latencies are kept in microseconds, 1 us .. 1 h, to 3 significant digits.
HDR_RANGE = (1, 3_600_000_000, 3)
#: The percentiles reports show, named as in summary.json since issue 3 ("p100" is the maximum).
PERCENTILES: tuple[tuple[str, float], ...] = tuple((f"p{p:g}", p) for p in (50.0, 90.0, 95.0, 99.0, 99.9, 100.0))


#: A cell counts at most this many distinct response codes; any further code counts as :data:`OTHER_CODE`
#: (a CoAP code is one byte, but a hostile server choosing them must not grow a cell without bound).
MAX_CODES = 32
OTHER_CODE = "other"


def count_code(codes: Counter[str], code: str, n: int = 1) -> None:
    """Add ``n`` replies with response ``code`` to ``codes``, within :data:`MAX_CODES` distinct codes."""
    if code in codes or len(codes) < MAX_CODES - 1 or code == OTHER_CODE:
        codes[code] += n
    else:
        codes[OTHER_CODE] += n


class Histogram(HdrHistogram):  # type: ignore[misc]  # hdrh has no type hints
    """An HDR histogram whose :meth:`record_value` is one call, not four, and that dies when dropped.

    hdrh finds a value's counts index through three helper methods (and a ``bin()`` string for
    the leading zeros), and the exact stats record every completed attempt: ~1.5 us of a ping's
    client CPU on this machine. The same arithmetic inlined, with ``int.bit_length`` for the
    leading zeros, gives the same index for every value, 3x cheaper (``tests/test_histogram.py``
    checks it against hdrh's own).

    hdrh's histogram and its encoder (which owns the ~190 kB counts array) refer to each other,
    so a dropped histogram was freed only by a full garbage collection. Every second makes and
    drops a few (each second's cells, packed or shipped to the master), and a load process whose
    heap is frozen (:mod:`loadgen.transport.heap`) runs a full collection rarely: 40-50 of them,
    8-10 MB, waited in each process of a 30 s run. The encoder refers to its histogram weakly here:
    no cycle, freed at once.
    """

    min_value: int
    max_value: int

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.encoder.histogram = weakref.proxy(self)

    @classmethod
    def decode(cls, encoded: bytes) -> Histogram:
        """``HdrHistogram.decode`` (base64-wrapped), as this class (hdrh's makes an ``HdrHistogram``)."""
        hdr_payload = HdrHistogramEncoder.decode(encoded, True)
        payload = hdr_payload.payload
        return cls(payload.lowest_trackable_value, payload.highest_trackable_value, payload.significant_figures,
                   hdr_payload=hdr_payload)

    def record_value(self, value: int, count: int = 1) -> bool:
        """Count ``value`` (an int) ``count`` times; False (nothing counted) outside the range, as hdrh."""
        if value < 0:
            return False
        shift, unit = self.sub_bucket_half_count_magnitude, self.unit_magnitude
        bucket = (value | self.sub_bucket_mask).bit_length() - unit - shift - 1
        index = ((bucket + 1) << shift) + (value >> (bucket + unit)) - self.sub_bucket_half_count
        if index >= self.counts_len:
            return False
        self.counts[index] += count
        self.total_count += count
        if value < self.min_value:
            self.min_value = value
        if value > self.max_value:
            self.max_value = value
        return True


def new_histogram() -> HdrHistogram:
    return Histogram(*HDR_RANGE)


def latency_us(seconds: float) -> int:
    """The HDR value recorded for a latency: whole microseconds, at least 1."""
    return max(1, int(seconds * 1e6))


class Cell:
    """Counters and an exact latency histogram of one kind of attempt (of one target, second or step, or summed)."""

    __slots__ = ("attempted", "completed", "failures", "retransmits", "resumed", "sent_bytes", "received_bytes",
                 "ended", "rsts", "codes", "histogram", "packed")

    #: Plain integer counters, in wire order.
    COUNTERS = ("attempted", "completed", "retransmits", "resumed", "sent_bytes", "received_bytes", "ended")

    def __init__(self) -> None:
        self.attempted = 0
        self.completed = 0
        self.failures: Counter[str] = Counter()
        self.retransmits = 0
        self.resumed = 0
        self.sent_bytes = 0
        self.received_bytes = 0
        self.ended = 0  # handshake cells: established associations that ended
        self.rsts = 0  # attempts answered by a CoAP reset (code "RST" or error coap-reset)
        self.codes: Counter[str] = Counter()  # replies by response code ("2.05"), bounded: see count_code
        self.histogram: HdrHistogram | None = None
        self.packed: bytes = b""  # the histogram's encoding while ``histogram`` is None

    # -- derived figures -------------------------------------------------------

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    @property
    def in_flight(self) -> int:
        return self.attempted - self.completed - self.failed

    def hist(self) -> HdrHistogram | None:
        """The latency histogram (unpacked if need be), or None when nothing succeeded."""
        if self.histogram is None and self.packed:
            self.histogram = Histogram.decode(self.packed)
            self.packed = b""
        return self.histogram

    def percentile(self, p: float) -> float | None:
        """Latency at percentile ``p`` (0..100) of completed attempts, in seconds."""
        hist = self.hist()
        if hist is None or hist.get_total_count() == 0:
            return None
        return float(hist.get_value_at_percentile(p)) / 1e6

    def percentiles_ms(self) -> dict[str, float | None]:
        """The report's percentiles (:data:`PERCENTILES`) in milliseconds, None without data."""
        hist = self.hist()
        if hist is None or hist.get_total_count() == 0:
            return {name: None for name, _ in PERCENTILES}
        values = hist.get_percentile_to_value_dict([p for _, p in PERCENTILES])
        return {name: values[p] / 1000.0 for name, p in PERCENTILES}

    def mean(self) -> float | None:
        """Mean latency in seconds (from the histogram, so to its 3 significant digits)."""
        hist = self.hist()
        if hist is None or hist.get_total_count() == 0:
            return None
        return float(hist.get_mean_value()) / 1e6

    # -- combining ---------------------------------------------------------------

    def add(self, other: Cell) -> None:
        """Add ``other`` into this cell, exactly."""
        self.attempted += other.attempted
        self.completed += other.completed
        self.retransmits += other.retransmits
        self.resumed += other.resumed
        self.sent_bytes += other.sent_bytes
        self.received_bytes += other.received_bytes
        self.ended += other.ended
        self.rsts += other.rsts
        if other.failures:
            self.failures.update(other.failures)
        for code, n in other.codes.items():
            count_code(self.codes, code, n)
        theirs = other.hist()
        if theirs is not None and theirs.get_total_count():
            mine = self.hist()
            if mine is None:
                mine = self.histogram = new_histogram()
            mine.add(theirs)

    def pack(self) -> None:
        """Keep the histogram only in its compact encoding until it is needed again."""
        if self.histogram is not None:
            self.packed = self.histogram.encode() if self.histogram.get_total_count() else b""
            self.histogram = None

    def copy(self) -> Cell:
        twin = Cell()
        twin.add(self)
        return twin

    # -- wire (Locust messages are msgpack; JSON files hold the same dict) ------------

    def to_wire(self) -> dict[str, Any]:
        data: dict[str, Any] = {name: getattr(self, name) for name in self.COUNTERS}
        data["failures"] = dict(self.failures)
        # Absent on the wire and in files when zero: cells of plain runs keep the shape they had.
        if self.rsts:
            data["rsts"] = self.rsts
        if self.codes:
            data["codes"] = dict(self.codes)
        if self.histogram is not None:
            data["hdr"] = self.histogram.encode() if self.histogram.get_total_count() else b""
        else:
            data["hdr"] = self.packed
        return data

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Cell:
        cell = cls()
        for name in cls.COUNTERS:
            setattr(cell, name, int(data.get(name, 0)))
        cell.failures.update(data.get("failures", {}))
        cell.rsts = int(data.get("rsts", 0))
        for code, n in dict(data.get("codes") or {}).items():
            count_code(cell.codes, str(code), int(n))
        hdr = data.get("hdr") or b""
        cell.packed = hdr.encode("ascii") if isinstance(hdr, str) else bytes(hdr)
        return cell

    def to_json(self) -> dict[str, Any]:
        """:meth:`to_wire` with the histogram as text (its encoding is base64 already)."""
        data = self.to_wire()
        data["hdr"] = data["hdr"].decode("ascii")
        return data

    def shows_codes(self, kind: str) -> bool:
        """Whether figures of this cell of ``kind`` carry response codes and RSTs: request kinds do; a
        plain run's handshakes and pings only when they have any (their outputs keep their old shape)."""
        return kind not in (HANDSHAKE, PING) or bool(self.codes) or bool(self.rsts)

    def summary(self, elapsed: float | None = None, kind: str = "") -> dict[str, Any]:
        """Plain figures for JSON summaries and web pages (latencies in ms). With ``kind``: response
        codes and RSTs as :meth:`shows_codes` says, and a notification kind's percentiles as
        ``interval_ms`` (the time between notifications) instead of ``latency_ms``."""
        out: dict[str, Any] = {
            "attempted": self.attempted, "completed": self.completed, "failed": self.failed,
            "in_flight": self.in_flight, "errors": dict(self.failures), "retransmits": self.retransmits,
            "resumed": self.resumed, "sent_bytes": self.sent_bytes, "received_bytes": self.received_bytes,
        }
        if kind and self.shows_codes(kind):
            out["rsts"] = self.rsts
            out["codes"] = dict(self.codes.most_common())
        if elapsed is not None:
            out["rate_per_s"] = self.completed / max(elapsed, 1e-9)
        out["interval_ms" if is_notification(kind) else "latency_ms"] = self.percentiles_ms()
        return out
