"""Capacity planning: server throttles, the knee analysis, and a stepped run against a throttled server."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from procs import Procs

from loadgen.capacity import stepped
from loadgen.capacity.knee import find_knee
from loadgen.capacity.steps import KindFigures, StepResult
from loadgen.protocol import dtls_contexts, dtls_factory
from loadgen.protocol.cookies import CookieJar
from loadgen.protocol.credentials import KeyStore, Secret
from loadgen.protocol.openssl import dtls
from loadgen.scenario import Clients, Scenario, Thresholds
from loadgen.servers.ratelimit import TokenBucket, client_hello_has_cookie

KEY_HEX = "000102030405060708090a0b0c0d0e0f"


# -- throttles ----------------------------------------------------------------------


def test_token_bucket_allows_rate_per_second_and_small_bursts() -> None:
    bucket = TokenBucket(200, now=0.0)
    assert bucket.burst == 20
    taken = sum(bucket.take(i / 1000) for i in range(1000))  # 1,000 tries over one second
    assert 200 <= taken <= 220
    idle = TokenBucket(200, now=0.0)
    assert sum(idle.take(5.0) for _ in range(100)) == 20  # a long pause saves up one burst only


#: The time the in-memory engines get: any value, the engines only compare times they were given.
NOW = 1000.0


def test_client_hello_with_cookie_is_told_apart() -> None:
    identity, key = b"dev", Secret(bytes.fromhex(KEY_HEX))
    server_ctx = dtls_contexts.server_context(KeyStore(table={identity: key}), hint=b"h", cookies=CookieJar())
    client = dtls.DtlsEngine.client(dtls_contexts.client_context(), lambda hint: (identity, key))
    client.start(NOW)
    (hello,) = client.datagrams_to_send()
    assert not client_hello_has_cookie(hello)
    engine, replies = dtls_factory.accept(server_ctx, hello, b"127.0.0.1:1", NOW)
    assert engine is None and replies
    client.receive_datagram(replies[0], NOW)
    (hello_again,) = client.datagrams_to_send()
    assert client_hello_has_cookie(hello_again)
    assert not client_hello_has_cookie(b"\x17\xfe\xfd" + bytes(60))  # application data
    assert not client_hello_has_cookie(hello_again[:40])  # truncated


# -- the knee -----------------------------------------------------------------------


def step(n: int, clients: int, throughput: float, *, p95: float = 5.0, errors: float = 0.0,
         cpu: float = 20.0) -> StepResult:
    figures = KindFigures(int(throughput * 6), 0, throughput, 1.0, p95, p95 * 1.5, 0, {})
    none = KindFigures(0, 0, 0.0, None, None, None, 0, {})
    return StepResult(n, clients, 8.0 * (n - 1), 8.0 * n, 8.0 * (n - 1) + 2, 8.0 * n, 6.0, clients, clients,
                      throughput, figures, none, errors, None, cpu, cpu)


def test_knee_is_the_last_step_before_throughput_stops_growing() -> None:
    steps = [step(1, 100, 100), step(2, 140, 140), step(3, 180, 179), step(4, 220, 200, p95=1000),
             step(5, 260, 200, p95=1000)]
    knee = find_knee(steps, Thresholds(), "churn")
    assert knee.limited_by == "server" and knee.knee_step == 3 and knee.broke_step == 4
    assert knee.capacity == 179 and knee.peak == 200
    assert knee.verdict.startswith("Knee at 180 clients: the server sustains 179 handshakes/s")
    assert "throughput 200/s fell behind the offered 220/s" in knee.verdict
    assert "handshake p95 1000 ms" in knee.verdict and "limit is the server's" in knee.verdict
    assert knee.health[4].reasons[-1] == "throughput stopped growing (+0% for +18% offered)"


def test_scenario_thresholds_set_the_knee() -> None:
    steps = [step(1, 100, 100, p95=20), step(2, 200, 200, p95=60), step(3, 300, 300, p95=150)]
    knee = find_knee(steps, Thresholds(handshake_p95=0.1), "churn")
    assert knee.knee_step == 2 and "handshake p95 150 ms > 100 ms" in knee.verdict


def test_a_saturated_generator_is_not_reported_as_the_server_limit() -> None:
    steps = [step(1, 100, 100, cpu=40), step(2, 200, 200, cpu=70), step(3, 300, 230, cpu=97, p95=300)]
    knee = find_knee(steps, Thresholds(), "churn")
    assert knee.limited_by == "generator"
    assert "No server limit found" in knee.verdict and "at least 230 handshakes/s" in knee.verdict
    assert "97% of a core" in knee.verdict


def test_no_knee_within_the_range_and_over_capacity_at_once() -> None:
    fine = [step(1, 100, 100), step(2, 200, 199), step(3, 300, 301)]
    knee = find_knee(fine, Thresholds(), "steady")
    assert knee.limited_by == "not-reached" and "No knee within the tested load" in knee.verdict
    assert "pings/s" in knee.verdict
    broken = [step(1, 100, 100, errors=0.2), step(2, 200, 150, errors=0.3)]
    assert find_knee(broken, Thresholds(), "steady").limited_by == "first-step"


def test_a_capacity_run_stopped_early_does_not_advise_raising_the_load() -> None:
    """Issue 12, defect 10: Ctrl-C during the steps said "No knee within the tested load ... raise the
    load to find its limit", though the later, higher steps were never run."""
    fine = [step(1, 100, 100), step(2, 200, 199)]
    knee = find_knee(fine, Thresholds(), "steady", interrupted=True)
    assert knee.limited_by == "interrupted", knee
    assert "raise the load" not in knee.verdict and "interrupted" in knee.verdict, knee.verdict
    assert "No knee up to 200 clients" in knee.verdict and "run it to its end" in knee.verdict


def test_stepped_stages_reach_each_step_quickly() -> None:
    base = Scenario(name="s", clients=Clients(count=10, spawn_rate=5), run_time=1.0, psk=None)
    scenario = stepped(base, start=100, step=40, steps=5, step_time=8.0)
    assert [s.clients for s in scenario.stages] == [100, 140, 180, 220, 260]
    assert scenario.run_time == 40.0 and scenario.clients.count == 260
    assert all(s.spawn_rate >= 100 for s in scenario.stages)  # a step's clients within ~1 s


# -- against the throttled reference server ------------------------------------------------


LIMIT = 200


def test_capacity_run_finds_the_throttled_servers_handshake_limit(tmp_path: Path, procs: Procs) -> None:
    """The reference server in its own process accepts at most 200 handshakes/s; the knee must say ~200."""
    server = procs.loadgen("serve", "dtls", "--port", "0", "--psk-hex", KEY_HEX, "--max-handshake-rate", LIMIT,
                           label="server")
    port = int(server.wait_for(r"listening on 127\.0\.0\.1:(\d+)")[1])
    scenario = tmp_path / "cap.yaml"
    scenario.write_text(textwrap.dedent(f"""\
        name: cap
        targets: [{{name: ref, host: 127.0.0.1, port: {port}}}]
        clients: {{count: 260, spawn_rate: 100}}
        run_time: 10s
        psk: {{identity: "device-{{n:05d}}", key: "{KEY_HEX}"}}
        outputs: {{results_dir: results}}
        """))
    # Offered 100, 140, 180, 220, 260 handshakes/s, 8 s each: ~40 s.
    run = procs.loadgen("capacity", scenario, "--workload", "churn", "--period", "1s", "--start", 100, "--step", 40,
                        "--steps", 5, "--step-time", "8s", label="capacity")
    status = run.wait(120)
    assert status == 0, run.describe()
    assert "Traceback" not in run.stderr, run.describe()
    verdict = re.search(r"^loadgen: verdict: (.*)$", run.stdout, re.M)
    assert verdict, run.describe()

    (results,) = (tmp_path / "results").iterdir()
    summary = json.loads((results / "summary.json").read_text())
    knee = summary["analysis"]["knee"]
    assert knee["limited_by"] == "server", verdict[1]
    assert abs(knee["capacity"] - LIMIT) <= 0.15 * LIMIT, verdict[1]
    assert knee["peak"] <= LIMIT * 1.1, knee  # the throttle holds: no step got much more through
    assert summary["analysis"]["verdict"] == verdict[1]
    assert summary["outcome"] == "passed", summary["outcome"]
    assert [s["clients"] for s in summary["analysis"]["steps"]] == [100, 140, 180, 220, 260]
    first = summary["analysis"]["steps"][0]
    assert first["throughput"] == pytest.approx(100, rel=0.1), first  # below the limit: all offered load served
    report = (results / "report.html").read_text()
    assert verdict[1].startswith("PASS: Knee at "), verdict[1]  # issue 12: PASS / FAIL / INTERRUPTED first
    assert verdict[1].split(": ", 1)[1].split(":")[0] in report

    server.signal_group(15)
    assert server.wait(15) == 0, server.describe()
    throttled = re.search(r"throttled (\d+) handshakes", server.stdout)
    assert throttled and int(throttled[1]) > 0, server.describe()


@pytest.mark.parametrize(("limited_by", "passed"), [("server", True), ("not-reached", True), ("generator", False),
                                                    ("first-step", False)])
def test_a_stepped_run_is_judged_by_its_knee_as_its_verdict_word_is(limited_by: str, passed: bool) -> None:
    """Failures past the knee are what finding it takes: a stepped run with failed handshakes whose knee
    was found passes (exit 0, outcome passed), as its verdict's PASS says; one whose figures cannot tell
    the capacity fails even with no failure. Before, ``loadgen run`` printed 'PASS: Knee at ...' and exited 1."""
    from loadgen.capacity import Analysis, Knee
    from loadgen.protocol.errors import HandshakeTimeout
    from loadgen.results.summary import RunOutcome
    from loadgen.stats.facts import HANDSHAKE, Finished, Started
    from loadgen.stats.run import RunStats
    from loadgen.stats.sink import StatsSink

    sink = StatsSink()
    for _ in range(3):
        sink.record(Started(HANDSHAKE, "ref"))
        sink.record(Finished(HANDSHAKE, "ref", 0.01, HandshakeTimeout("past the knee")))
    stats = RunStats()
    stats.apply(sink.roll(users=3))
    knee = Knee(verdict="Knee at 100 clients.", unit="handshakes/s", limited_by=limited_by)
    word = "PASS" if passed else "FAIL"
    scenario = Scenario(name="s", clients=Clients(count=3, spawn_rate=3), run_time=10.0, psk=None)
    outcome = RunOutcome(scenario, None, stats, 10.0,  # type: ignore[arg-type]  # no Locust environment needed
                         analysis=Analysis(f"{word}: {knee.verdict}", knee=knee))
    assert stats.handshakes.failed == 3
    assert outcome.passed is passed and outcome.outcome == ("passed" if passed else "failed")
