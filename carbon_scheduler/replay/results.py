"""What a replay produces: one outcome per task and policy, plus the inputs that
the reports need to draw and recompute them."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import Config
from carbon_scheduler.model import Task, TaskClass

POLICIES = ("scheduler", "baseline", "oracle")


@dataclass(frozen=True, slots=True)
class TaskOutcome:
    """Where and when one task ran under one policy.

    `region`, `node`, `start` and `end` are None when the task never started before
    the simulation ended. `emissions_g` integrates the trace's intensity over
    [start, end) times the task's power and its region's PUE.
    """

    task: Task
    region: str | None
    node: str | None
    start: int | None
    end: int | None
    energy_kwh: float
    emissions_g: float

    @property
    def wait_seconds(self) -> int | None:
        return None if self.start is None else self.start - self.task.arrival

    @property
    def missed_deadline(self) -> bool:
        """True when the task has a deadline and did not finish by it."""
        deadline = self.task.deadline
        if deadline is None:
            return False
        return self.end is None or self.end > deadline


@dataclass(frozen=True, slots=True)
class PolicyRun:
    """All task outcomes of one policy, in task order."""

    policy: str
    outcomes: tuple[TaskOutcome, ...]

    @property
    def emissions_g(self) -> float:
        return sum(outcome.emissions_g for outcome in self.outcomes)

    def by_class(self, task_class: TaskClass) -> list[TaskOutcome]:
        return [o for o in self.outcomes if o.task.task_class is task_class]


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """A finished replay.

    `levels` has the carbon level (`Level` values) that the scheduler saw for each
    region and trace step, shape (regions, steps), aligned with `trace.values`.
    `expected_distribution` maps class name to region name to the share (0..1) of
    that class the user expects in that region, or is empty when not given.
    """

    trace: Trace
    config: Config
    tasks: tuple[Task, ...]
    runs: dict[str, PolicyRun]
    levels: np.ndarray
    seed: int | None = None
    workload_source: str = "generated"
    forecaster: str = "seasonal-naive"
    expected_distribution: dict[str, dict[str, float]] = field(default_factory=dict)
