"""A Locust LoadTestShape built from a scenario's ramp stages."""

from __future__ import annotations

from locust import LoadTestShape

from loadgen.scenario import Stage


class StagesShape(LoadTestShape):
    """Each stage holds ``clients`` (reached at ``spawn_rate``) for its ``duration``; then the run ends."""

    def __init__(self, stages: tuple[Stage, ...]) -> None:
        super().__init__()  # type: ignore[no-untyped-call]  # locust is untyped
        self.stages = stages

    def tick(self) -> tuple[int, float] | None:
        elapsed: float = self.get_run_time()  # type: ignore[no-untyped-call]  # locust is untyped
        end = 0.0
        for stage in self.stages:
            end += stage.duration
            if elapsed < end:
                return stage.clients, stage.spawn_rate
        return None
