"""summary.md and the run's JUnit cases from known figures: every target's row and the total, cells
escaped, error codes in words, and the verdict case's rules (--exit-code-on-error 0, thresholds)."""

from __future__ import annotations

from locust.env import Environment

from loadgen.capacity import analyze
from loadgen.protocol.errors import PingTimeout
from loadgen.results.markdown import render_markdown
from loadgen.results.run_junit import run_cases
from loadgen.results.summary import RunOutcome
from loadgen.scenario.model import Clients, Scenario, Target, Thresholds
from loadgen.stats.facts import HANDSHAKE, PING, Finished, Started
from loadgen.stats.run import RunStats
from loadgen.stats.sink import StatsSink
from loadgen.stats.thresholds import evaluate
from loadgen.stats.words import counts_text, failures_text

TARGETS = (Target("gw|1", "10.0.0.5", 5684), Target("gw2", "10.0.0.6", 443, protocol="tls"))


def outcome(thresholds: Thresholds) -> RunOutcome:
    """2 handshakes and 18 pings per target, 3 pings of gw|1 timed out, one second long."""
    sink = StatsSink()
    for n in range(40):
        target = TARGETS[n % 2].name
        kind = HANDSHAKE if n < 4 else PING
        sink.record(Started(kind, target))
        error = PingTimeout("t") if n in (4, 6, 8) else None
        sink.record(Finished(kind, target, 0.001 * (n + 1), error))
    stats = RunStats()
    delta = sink.roll(users=2)
    delta.duration = 1.0
    stats.apply(delta)
    scenario = Scenario(name="two", clients=Clients(count=2, spawn_rate=2), run_time=1.0, psk=None,
                        targets=TARGETS, thresholds=thresholds)
    verdicts = evaluate(thresholds, stats, 1.0)
    analysis = analyze(stats, scenario, 1.0, sum(not v.passed for v in verdicts), len(verdicts))
    return RunOutcome(scenario, Environment(), stats, 1.0, verdicts=verdicts, analysis=analysis)


def test_summary_md_rows_per_target_and_total() -> None:
    text = render_markdown(outcome(Thresholds(ping_p99=0.5, error_ratio=0.01)))
    lines = text.splitlines()
    assert lines[0] == "## loadgen: two: FAIL"
    assert "- Targets: `gw|1 = 10.0.0.5:5684` (dtls), `gw2 = 10.0.0.6:443` (tls)" in lines
    assert "| gw\\|1 | ping | 18 | 15 | 3 | 0 | 15.0 |" in text  # the pipe in the name escaped
    assert "| ping-timeout 3 |" in text
    assert "| all | ping | 36 | 33 | 3 | 0 | 33.0 |" in text
    assert "| ping_p99 | pass | " in text and "| error_ratio | FAIL | " in text
    for raw in ("{", "}", "[", "]", "None"):
        assert raw not in text, raw


def test_verdict_case_rules() -> None:
    no_thresholds = outcome(Thresholds())
    verdict, = run_cases(no_thresholds)
    assert verdict.failure == ("FAIL: 3 of 40 attempts failed (ping-timeout 3); no thresholds set: "
                               "any failure fails the run")
    verdict, = run_cases(no_thresholds, failures_fail=False)  # --exit-code-on-error 0
    assert verdict.failure is None and verdict.detail.startswith("FAIL: ")
    # With thresholds they decide: the verdict case passes, the missed threshold fails.
    verdict, ping, errors = run_cases(outcome(Thresholds(ping_p99=0.5, error_ratio=0.01)))
    assert verdict.failure is None and ping.failure is None
    assert errors.name == "error_ratio <= 0.01" and errors.failure is not None
    assert errors.failure.startswith("FAIL error_ratio: 0.075, limit <= 0.01")


def test_lost_counts_fail_the_run_whatever_exit_code_on_error_says() -> None:
    """A run whose worker file is missing, or whose Locust and loadgen counts differ, cannot pass:
    its figures are not the whole run (it said PASS and exited 0)."""
    import dataclasses

    from loadgen.locust.health import Health

    good = outcome(Thresholds(ping_p99=0.5))
    assert good.passed and good.exit_status(3) == 0
    for health in (Health(counts={"ping": {"locust": 36, "loadgen": 35}}),
                   Health(workers=2, worker_files_missing=[1], counts={"ping": {"locust": 36, "loadgen": 36}})):
        lost = dataclasses.replace(good, health=health)
        assert not lost.passed and lost.outcome == "failed"
        assert lost.exit_status(0) == 1 and lost.exit_status(3) == 1
        verdict, _ = run_cases(lost, failures_fail=False)
        assert verdict.failure is not None and verdict.failure.startswith("FAIL: counts were lost (")
        assert "FAIL" in render_markdown(lost)
    scenario = good.scenario
    assert analyze(good.stats, scenario, 1.0, 0, 1, counts_lost=True).verdict.startswith("FAIL: ")
    assert analyze(good.stats, scenario, 1.0, 0, 1).verdict.startswith("PASS: ")


def test_counts_in_words() -> None:
    assert counts_text({}) == "none"
    assert counts_text({"timeout": 1, "psk-key-mismatch": 2, "b": 1}) == "psk-key-mismatch 2, b 1, timeout 1"
    assert failures_text({}) == "0 failures"
    assert failures_text({"timeout": 1, "psk-key-mismatch": 2}) == "3 failures (psk-key-mismatch 2, timeout 1)"
