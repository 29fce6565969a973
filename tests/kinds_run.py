"""A run of several request kinds and device groups, made of facts fed into real stats sinks.

Two "workers" (each its own :class:`StatsSink`) count facts of the kinds a CoAP fleet has:
handshakes, a once-only ``register``, ``GET /sensors/temp`` (2.05 replies, 4.04 replies that
fail, RSTs, timeouts after CoAP retransmissions), Observe notifications of ``GET /time`` and a
plain payload step ``telemetry``, on targets ``sensors@gw1``, ``sensors@gw2`` and ``meters@gw1``
(device groups). Their per-second deltas go over msgpack, as to a Locust master, and merge into
one :class:`RunStats`. A :class:`Ledger` counts the same facts with plain Python integers: what the
tests compare every output to.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgpack

from loadgen.protocol.errors import BadReply, LoadgenError, PingTimeout
from loadgen.scenario.model import (
    Clients,
    CoapRequest,
    DeviceGroup,
    Outputs,
    Payload,
    RequestStep,
    Scenario,
    Thresholds,
)
from loadgen.stats.facts import HANDSHAKE, Ended, Finished, Started, scenario_kinds
from loadgen.stats.run import RunStats
from loadgen.stats.sink import SecondDelta, StatsSink

SENSORS = ("sensors@gw1", "sensors@gw2")
METERS = ("meters@gw1",)
TEMP = "GET /sensors/temp"
NOTIFY = "GET /time notification"
KINDS = (HANDSHAKE, "register", TEMP, "GET /time", NOTIFY, "telemetry")
SECONDS = 2


def reset_error() -> LoadgenError:
    """The error of a request answered by a CoAP reset (the coap part's class has this code)."""
    return LoadgenError("reset by the server", code="coap-reset")


@dataclass
class Tally:
    """What the ledger counted of one (kind, target)."""

    attempted: int = 0
    completed: int = 0
    retransmits: int = 0
    rsts: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    elapsed: list[float] = field(default_factory=list)


class Ledger:
    """Counts facts on an independent path (plain integers) and passes them on to a sink."""

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], Tally] = {}

    def tally(self, kind: str, target: str) -> Tally:
        return self.tallies.setdefault((kind, target), Tally())

    def kind(self, kind: str) -> Tally:
        """A kind's tallies over all targets."""
        total = Tally()
        for (k, _), t in self.tallies.items():
            if k == kind:
                total.attempted += t.attempted
                total.completed += t.completed
                total.retransmits += t.retransmits
                total.rsts += t.rsts
                total.errors.update(t.errors)
                total.codes.update(t.codes)
                total.elapsed += t.elapsed
        return total

    def attempt(self, sinks: list[StatsSink], fact: Finished) -> None:
        t = self.tally(fact.kind, fact.target)
        t.attempted += 1
        t.retransmits += fact.retransmits
        if fact.code is not None:
            t.codes[fact.code] += 1
        if fact.code == "RST" or (fact.error is not None and fact.error.code == "coap-reset"):
            t.rsts += 1
        if fact.error is None:
            t.completed += 1
            t.elapsed.append(fact.elapsed)
        else:
            t.errors[fact.error.code] += 1
        for sink in sinks:
            sink.record(Started(fact.kind, fact.target))
            sink.record(fact)


def _sensor_request(n: int, target: str) -> Finished:
    """The n-th GET /sensors/temp: mostly 2.05, some 4.04 (failed), RSTs and timeouts."""
    case = n % 7
    if case == 3:
        return Finished(TEMP, target, 0.004, BadReply("expected 2.05, got 4.04"), code="4.04")
    if case == 5:
        return Finished(TEMP, target, 0.003, reset_error(), code="RST")
    if case == 6 and n % 2:
        return Finished(TEMP, target, 9.0, PingTimeout("no reply"), retransmits=4)
    if case == 6:
        return Finished(TEMP, target, 0.2, reset_error())  # a reset reported without a code
    return Finished(TEMP, target, 0.001 * (1 + n % 11), code="2.05", retransmits=1 if case == 1 else 0)


def _feed_second(sinks: list[StatsSink], ledger: Ledger, worker: int, second: int) -> None:
    clients = 3 + worker
    for target in (*SENSORS, *METERS):
        for client in range(clients):
            n = (worker * 100 + second * 10 + client) * 13
            if second == 0:
                ledger.attempt(sinks, Finished(HANDSHAKE, target, 0.02 + 0.001 * client, retransmits=client % 2))
            if target in METERS:
                for j in range(2):
                    error = PingTimeout("no reply") if (n + j) % 9 == 0 else None
                    ledger.attempt(sinks, Finished("telemetry", target, 0.003, error, sent_bytes=20))
                continue
            if second == 0:
                ledger.attempt(sinks, Finished("register", target, 0.005, code="2.01"))
                ledger.attempt(sinks, Finished("GET /time", target, 0.004, code="2.05"))
            for j in range(5):
                ledger.attempt(sinks, _sensor_request(n + j, target))
            if second:  # a notification's "elapsed" is the interval since the previous one
                ledger.attempt(sinks, Finished(NOTIFY, target, 5.0 + 0.01 * client, code="2.05"))
    if second == SECONDS - 1:
        for sink in sinks:
            sink.record(Ended(SENSORS[0]))


def wire(delta: SecondDelta) -> SecondDelta:
    """What a master receives: Locust sends custom messages as msgpack."""
    return SecondDelta.from_wire(msgpack.unpackb(msgpack.packb(delta.to_wire()), raw=False))


def scenario(results: Path) -> Scenario:
    """The fleet's scenario: two device groups with their request steps (what the stats declare)."""
    sensors = (RequestStep("register", coap=CoapRequest(method="POST", path="/rd"), once=True),
               RequestStep(TEMP, coap=CoapRequest(path="/sensors/temp"), interval=1.0),
               RequestStep("GET /time", coap=CoapRequest(path="/time", observe=True), once=True))
    meters = (RequestStep("telemetry", payload=Payload(text="t {seq}"), interval=0.5),)
    return Scenario(name="fleet", clients=Clients(count=10, spawn_rate=10), run_time=float(SECONDS), psk=None,
                    devices=(DeviceGroup("sensors", requests=sensors), DeviceGroup("meters", requests=meters)),
                    thresholds=Thresholds(ping_p99=0.008, error_ratio=0.5),
                    outputs=dataclasses.replace(Outputs(), results_dir=results))


@dataclass
class KindsRun:
    stats: RunStats  # merged from both workers' deltas, over the wire
    single: StatsSink  # one sink that got every fact (never rolled): what the merge must equal
    ledger: Ledger
    scenario: Scenario


def kinds_run(results: Path) -> KindsRun:
    """Both workers' seconds, merged as a master merges them (see the module doc)."""
    ledger, single = Ledger(), StatsSink()
    plan = scenario(results)
    stats = RunStats(scenario_kinds(plan))
    for worker in range(2):
        sink = StatsSink()
        for second in range(SECONDS):
            _feed_second([sink, single], ledger, worker, second)
            delta = sink.roll(users=3 + worker)
            delta.index = second  # a test cannot wait real seconds: pin the index
            delta.duration = 1.0
            stats.apply(wire(delta))
    return KindsRun(stats, single, ledger, plan)



def write_run(run_dir: Path) -> Path:
    """The run's results directory (summary.json, series.json, timeseries.csv, report.html), as a run writes it.

    Imports Locust (its environment holds Locust's request counts): a process that already imported
    ssl (the browser tests' selenium) calls this in a child process (``python kinds_run.py DIR``).
    """
    from locust.env import Environment

    from loadgen.results.files import write_results
    from loadgen.results.summary import RunOutcome
    from loadgen.stats.thresholds import evaluate

    run = kinds_run(run_dir.parent)
    outcome = RunOutcome(run.scenario, Environment(), run.stats, 2.0,
                         verdicts=evaluate(run.scenario.thresholds, run.stats, 2.0))
    run_dir.mkdir(parents=True, exist_ok=True)
    return write_results(outcome, run_dir)


def serve_web() -> None:
    """Locust's web UI on 127.0.0.1 (a free port, printed) with loadgen's tab showing this run, until killed.

    Locust's real UI and runner (a local runner whose users do nothing): the browser test starts
    them and reads the tab's rows as Locust's UI renders them from its ``/stats/requests`` polls.
    """
    import gevent
    from locust import User, constant, task
    from locust.env import Environment

    from loadgen.locust.webui import install

    class Idle(User):  # Locust's UI shows its tabs once a run started: users that do nothing
        wait_time = constant(60)
        host = "127.0.0.1"

        @task
        def idle(self) -> None:
            pass

    env = Environment(user_classes=[Idle])
    env.create_local_runner()
    web_ui = env.create_web_ui("127.0.0.1", 0)
    install(web_ui, kinds_run(Path("results")).stats)
    for _ in range(200):  # the server binds in its greenlet: at most 10 s
        if web_ui.server is not None and web_ui.server.started:
            break
        gevent.sleep(0.05)
    assert web_ui.server is not None and web_ui.greenlet is not None
    print(f"web UI at http://127.0.0.1:{web_ui.server.address[1]}", flush=True)
    web_ui.greenlet.join()


if __name__ == "__main__":
    import sys

    if sys.argv[1] == "web":
        del sys.argv[1:]  # Locust reads the command line too
        serve_web()
    else:
        write_run(Path(sys.argv[1]))
