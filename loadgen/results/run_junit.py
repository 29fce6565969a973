"""A finished run as JUnit test cases (``loadgen run --junit FILE``, ``loadgen capacity --junit FILE``).

- One case per threshold (classname ``loadgen.thresholds``), failed when the threshold is not met, its
  message naming the observed figure and the limit (``FAIL ping_p99: 12.3 ms, limit <= 5.0 ms, ...``).
- One case for the run itself (classname ``loadgen.run``, name ``verdict``), always there, so a run
  without thresholds still shows CI its outcome. It fails when the run's verdict is FAIL and thresholds
  do not already say so (no thresholds and failed attempts; a stepped run judged by its knee), when no
  attempt ended (every one in flight at the stop: nothing was measured), and when the run was
  interrupted: a run stopped before its planned end did not show that the server holds the planned
  load, so CI must not count it as passed.
- A stepped run (``capacity``, or stepped ``stages``) is judged by its knee, as its exit status is:
  only the verdict case, with every step's health in its text (a threshold failing past the knee is
  what finding the knee takes, not a failure).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

from loadgen.capacity import planned_time
from loadgen.results.junit import Case, write
from loadgen.stats.thresholds import Verdict
from loadgen.stats.words import counts_text

if TYPE_CHECKING:
    from loadgen.results.summary import RunOutcome

THRESHOLDS = "loadgen.thresholds"
RUN = "loadgen.run"


def _limit(v: Verdict) -> str:
    value = f"{v.limit * 1000:g} ms" if v.unit == "s" else f"{v.limit:g}{v.unit}"
    return f"{v.name} {'<=' if v.upper else '>='} {value}" + (f" [{v.kind}]" if v.kind else "")


def threshold_case(v: Verdict, verdict_sentence: str) -> Case:
    """One threshold: named by its limit (stable from run to run, for CI's history), the observed figure in
    the message."""
    return Case(_limit(v), THRESHOLDS, failure=None if v.passed else v.describe(),
                detail=v.describe() if v.passed else f"{v.describe()}\n{verdict_sentence}")


def _steps_text(outcome: RunOutcome) -> str:
    knee = outcome.analysis.knee if outcome.analysis is not None else None
    if knee is None:
        return ""
    return "\n".join(f"step {h.step}: {'healthy' if h.healthy else 'unhealthy: ' + '; '.join(h.reasons)}"
                     for h in knee.health)


def _failed_attempts(outcome: RunOutcome) -> str:
    """``3 of 3 attempts failed (psk-key-mismatch 3); no thresholds set: any failure fails the run``."""
    cells = outcome.stats.kinds.values()
    codes: Counter[str] = Counter()
    for cell in cells:
        codes.update(cell.failures)
    ended = sum(cell.completed + cell.failed for cell in cells)
    return (f"FAIL: {sum(codes.values())} of {ended} attempts failed ({counts_text(codes)}); "
            "no thresholds set: any failure fails the run")


def verdict_case(outcome: RunOutcome, failures_fail: bool = True) -> Case:
    """The run's own case (see the module's docstring). ``failures_fail=False`` (``--exit-code-on-error 0``):
    failed attempts in a run without thresholds do not fail it."""
    sentence = outcome.analysis.verdict if outcome.analysis is not None else outcome.outcome
    stepped = outcome.analysis is not None and outcome.analysis.knee is not None
    detail = "\n".join(filter(None, [sentence, _steps_text(outcome)]))
    failure: str | None = None
    if outcome.interrupted:
        failure = (f"INTERRUPTED: stopped after {outcome.elapsed:.0f} s of the planned "
                   f"{planned_time(outcome.scenario):.0f} s; the figures cover the part that ran")
    elif outcome.counts_lost:  # with --exit-code-on-error 0 too: it still exits 1
        from loadgen.results.summary import counts_lost_text

        failure = f"FAIL: {counts_lost_text(outcome.counts_lost)}"
    elif not outcome.passed and stepped:
        failure = sentence
    elif outcome.measured_nothing:  # with --exit-code-on-error 0 too: it still exits 1
        from loadgen.results.summary import nothing_ended_text

        failure = f"FAIL: {nothing_ended_text(outcome)}"
    elif not outcome.passed and not outcome.verdicts and failures_fail:
        failure = _failed_attempts(outcome)
    return Case("verdict", RUN, failure=failure, detail=detail, seconds=outcome.elapsed)


def run_cases(outcome: RunOutcome, failures_fail: bool = True) -> list[Case]:
    """The verdict case, then one per threshold (none for a stepped run: its knee judges it)."""
    cases = [verdict_case(outcome, failures_fail)]
    if outcome.analysis is None or outcome.analysis.knee is None:
        sentence = outcome.analysis.verdict if outcome.analysis is not None else ""
        cases += [threshold_case(v, sentence) for v in outcome.verdicts]
    return cases


def write_run_junit(path: Path, outcome: RunOutcome, failures_fail: bool = True) -> None:
    """``path``: the run's cases in one suite named ``loadgen <scenario name>``."""
    write(path, f"loadgen {outcome.scenario.name}", run_cases(outcome, failures_fail))
