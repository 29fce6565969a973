"""How a run runs (:class:`RunOptions`), what it runs against (:func:`endpoints`) and its Locust Environment."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from locust import User, argument_parser
from locust.env import Environment

from loadgen.capacity import Workload
from loadgen.capacity.workload import churn_user_classes
from loadgen.locust.shape import StagesShape
from loadgen.locust.users import Endpoint, PingUser, Session, user_classes
from loadgen.scenario import Scenario, Target
from loadgen.servers.launcher import ServerProcess, builtin_server

BUILTIN_TARGET = Target(name="builtin", host="127.0.0.1", port=0, protocol="dtls")


@dataclass(frozen=True)
class RunOptions:
    """How to run: headless or web; local, master (with or without child workers) or worker."""

    web: bool = False
    web_host: str = "127.0.0.1"
    web_port: int = 8089
    processes: int = 0  # > 0: start this many worker processes and be their master
    master: bool = False
    worker: bool = False
    master_host: str = "127.0.0.1"
    master_port: int = 5557
    expect_workers: int = 1
    worker_index: int | None = None  # device numbering: n = index + k * workers
    workers: int | None = None
    builtin_address: tuple[str, int] | None = None  # the master's built-in server, for workers
    run_dir: Path | None = None  # workers write worker-<index>.json here
    workload: Workload = "steady"  # steady: connect and ping; churn: a handshake per client per period
    period: float = 1.0  # churn: seconds between one client's handshakes
    server_workers: int = 1  # the built-in server's processes on its one port (serve dtls --workers)

    @property
    def distributed(self) -> bool:
        """A master: of worker processes it starts (``processes``) or of workers that connect to it."""
        return self.master or self.processes > 0


#: A local headless run (frozen: safe as a default argument).
LOCAL_RUN = RunOptions()


class _HighSpawnRateFilter(logging.Filter):
    """Locust warns about spawn rates above 100/s (meant for heavy HTTP users); ours are cheap."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "spawn rate is very high" not in record.getMessage()


@contextlib.contextmanager
def endpoints(scenario: Scenario, options: RunOptions) -> Iterator[tuple[list[Endpoint], ServerProcess | None]]:
    """The scenario's targets, or the built-in server (started here for the run, or the master's)."""
    if scenario.targets:
        yield [Endpoint(t, (t.host, t.port)) for t in scenario.targets], None
        return
    if options.builtin_address is not None:
        yield [Endpoint(BUILTIN_TARGET, options.builtin_address)], None
        return
    if options.worker:
        raise ValueError("a worker for a scenario without targets needs --builtin-address (the master prints it)")
    server = builtin_server(scenario, options.server_workers)
    with server as address:
        yield [Endpoint(BUILTIN_TARGET, address)], server


def make_environment(scenario: Scenario, eps: list[Endpoint], options: RunOptions = LOCAL_RUN
                     ) -> tuple[Environment, Session]:
    """A Locust Environment whose user classes (one, or one per device group) are bound to a fresh Session."""
    runners_log = logging.getLogger("locust.runners")
    if not any(isinstance(f, _HighSpawnRateFilter) for f in runners_log.filters):
        runners_log.addFilter(_HighSpawnRateFilter())
    env = Environment(shape_class=StagesShape(scenario.stages) if scenario.stages else None)
    # Defaults the web UI shows in its start form.
    parser = argument_parser.get_empty_argument_parser()
    argument_parser.setup_parser_arguments(parser)  # Locust's, unannotated
    env.parsed_options = parser.parse_args(
        ["--users", str(scenario.clients.count), "--spawn-rate", str(scenario.clients.spawn_rate)]
    )
    session = Session(scenario, env, eps, index_offset=options.worker_index,
                      index_stride=options.workers or 1)
    classes: list[type[User]] = []
    classes += churn_user_classes(session, options.period) if options.workload == "churn" \
        else user_classes(PingUser, scenario, "Device", session=session)
    env.user_classes = classes
    return env, session
