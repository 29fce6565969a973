"""Acceptance: DTLS handshakes through 20% loss each way (the impairment proxy, seeded).

1,000 associations in this process (gevent) handshake with the reference server running
in another process (``dtls_server`` fixture) through an in-process
:class:`~loadgen.servers.impair.ImpairmentProxy`; each association closes right after its
handshake result (:meth:`DtlsAssociation.handshake_once`), at most ``CONCURRENCY`` at
a time. At least 99% must complete within the default handshake timeout, and every
attempt must be accounted for exactly. The seed fixes the proxy's sequence of loss
decisions; with 250 clients at once, which datagram meets which decision still varies
from run to run.
"""

from __future__ import annotations

import math
import time
from collections import Counter

import gevent
import pytest
from gevent.pool import Pool

from loadgen.protocol import dtls_contexts
from loadgen.protocol.credentials import Secret
from loadgen.scenario.model import DtlsConfig
from loadgen.servers.impair import Impairment, ImpairmentProxy
from loadgen.stats.facts import HANDSHAKE, Fact, Finished
from loadgen.stats.sink import StatsSink
from loadgen.transport.dtls_association import DtlsAssociation

pytestmark = pytest.mark.slow

ASSOCIATIONS = 1000
LOSS = 0.2  # each way
SEED = 20240607
CONCURRENCY = 250
#: The acceptance criterion (issue 7), with the default handshake timeout. OpenSSL's retransmit
#: timer starts at 1 s and doubles (RFC 6347): in 30 s a flight got at most 5 transmissions
#: (t = 0, 1, 3, 7, 15 s) and about 98.2% completed (19 runs); the 60 s default allows a sixth
#: (t = 31 s), which is what a lossy path needs: a round trip succeeds with p = 0.64 here.
REQUIRED = 0.99
#: Every handshake ends by itself within the handshake timeout; this bounds the whole run.
RUN_LIMIT = 150.0


class Timeline(StatsSink):
    """A StatsSink that also keeps each handshake's outcome: (elapsed, error code or None, retransmits)."""

    def __init__(self) -> None:
        super().__init__()
        self.handshake_results: list[tuple[float, str | None, int]] = []

    def record(self, fact: Fact) -> None:
        super().record(fact)
        if isinstance(fact, Finished) and fact.kind == HANDSHAKE:
            code = fact.error.code if fact.error is not None else None
            self.handshake_results.append((fact.elapsed, code, fact.retransmits))


def _udp_receive_errors() -> int | None:
    """The kernel's UDP RcvbufErrors (loss the proxy did not choose), or None if unreadable."""
    try:
        with open("/proc/net/snmp") as snmp:
            rows = [line.split() for line in snmp if line.startswith("Udp:")]
        return int(rows[1][rows[0].index("RcvbufErrors")])
    except (OSError, ValueError, IndexError):
        return None


def _share(results: list[tuple[float, str | None, int]], within: float) -> float:
    return sum(1 for elapsed, code, _ in results if code is None and elapsed <= within) / ASSOCIATIONS


@pytest.mark.timeout(RUN_LIMIT + 60)
def test_handshakes_complete_through_twenty_percent_loss_each_way(dtls_server):
    settings = DtlsConfig()  # the defaults: 60 s handshake timeout, 16 retransmits
    key = Secret(bytes.fromhex(dtls_server.key_hex))
    context = dtls_contexts.client_context()
    timeline = Timeline()
    proxy = ImpairmentProxy(dtls_server.address, up=Impairment(loss=LOSS), down=Impairment(loss=LOSS),
                            seed=SEED).start()
    kernel_drops = _udp_receive_errors()
    outcomes: list[str | None] = []

    def handshake(assoc: DtlsAssociation) -> None:
        error = assoc.handshake_once()
        outcomes.append(error.code if error is not None else None)

    started = time.monotonic()
    pool = Pool(CONCURRENCY)
    try:
        with gevent.Timeout(RUN_LIMIT, False):
            for i in range(ASSOCIATIONS):
                assoc = DtlsAssociation(f"lossy{i}", "reference", proxy.address, context, timeline,
                                        identity=f"lossy{i}".encode(), key=key, settings=settings)
                pool.spawn(handshake, assoc)  # waits for a free slot: at most CONCURRENCY at once
            pool.join()
    finally:
        pool.kill(block=True, timeout=15)
        proxy.stop()
    elapsed = time.monotonic() - started
    if kernel_drops is not None:
        kernel_drops = (_udp_receive_errors() or 0) - kernel_drops

    summary = dtls_server.stop_and_summarize()
    hs = timeline.handshakes
    results = timeline.handshake_results
    done_times = sorted(e for e, code, _ in results if code is None) or [math.nan]
    retransmits = Counter(r for _, code, r in results if code is None)
    up, down = proxy.stats.up, proxy.stats.down
    print(
        f"\n{ASSOCIATIONS} handshakes through {LOSS:.0%} loss each way (seed {SEED}), run {elapsed:.1f} s: "
        f"{hs.completed} completed ({hs.completed / ASSOCIATIONS:.2%}), failed {dict(hs.failures)}, "
        f"{hs.in_flight} in flight; completed within 1/2/4/8/16/30/60 s: "
        + " / ".join(f"{_share(results, t):.1%}" for t in (1, 2, 4, 8, 16, 30, 60))
        + f"; p50 {done_times[len(done_times) // 2]:.2f} s, p99 {done_times[int(len(done_times) * 0.99)]:.2f} s, "
        f"max {done_times[-1]:.2f} s; retransmits per completed handshake {dict(sorted(retransmits.items()))}; "
        f"failures by (code, elapsed s, retransmits) "
        f"{dict(Counter((c, round(e), r) for e, c, r in results if c is not None))}; "
        f"the server completed {summary.handshakes}; proxy up {up.as_dict()}, down {down.as_dict()}; "
        f"kernel UDP receive-buffer drops meanwhile (any process) {kernel_drops}"
    )

    # The run ended by itself (every handshake finished within its own timeout).
    assert elapsed < RUN_LIMIT, f"run did not finish within {RUN_LIMIT:g} s"
    # Exact accounting: every association reported its handshake exactly once.
    assert len(outcomes) == ASSOCIATIONS
    assert hs.attempted == ASSOCIATIONS and len(results) == ASSOCIATIONS
    assert hs.completed + hs.failed + hs.in_flight == hs.attempted and hs.in_flight == 0
    assert Counter(outcomes) == Counter(code for _, code, _ in results)
    assert summary.handshakes >= hs.completed, summary.line
    # The proxy really dropped about 20% each way.
    assert abs(up.dropped / (up.dropped + up.forwarded) - LOSS) < 0.02, up
    assert abs(down.dropped / (down.dropped + down.forwarded) - LOSS) < 0.02, down
    # The acceptance criterion.
    assert hs.completed >= REQUIRED * ASSOCIATIONS, (
        f"only {hs.completed} of {ASSOCIATIONS} handshakes completed within "
        f"{settings.handshake_timeout:g} s through {LOSS:.0%} loss each way"
    )
    # The key is right: a handshake lost to loss must say so, not blame the key.
    assert set(hs.failures) <= {"handshake-timeout"}, dict(hs.failures)
