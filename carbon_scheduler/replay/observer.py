"""The hook interface through which a replay's scheduler simulation reports what
happens while it runs.

`SchedulerSimulation` calls an observer synchronously, inside the event that
causes each call, so an observer gets its calls in simulated-time order. The
metrics exporter (`replay.metrics_observer`) and the InfluxDB writer
(`replay.influx_writer`) implement it; `Observers` fans one call out to several.
Observers must not change the simulation's state or the objects they are given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

from carbon_scheduler.model import Task
from carbon_scheduler.policy.decisions import Decision
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.replay.results import TaskOutcome


class SimulationObserver(Protocol):
    """Callbacks of one scheduler simulation, in simulated-time order."""

    def on_tick(self, now: int, step: int, outlooks: Mapping[str, Outlook]) -> None:
        """Receive the forecasts that the scheduler issued when trace step `step` began at `now`."""
        ...

    def on_decision(self, task: Task, now: int, decision: Decision, seconds: float) -> None:
        """Receive one decision of the policy for `task`, which took `seconds` of real (wall-clock) time."""
        ...

    def on_start(self, index: int, outcome: TaskOutcome) -> None:
        """Receive the start of the task at `index` of the context's tasks, as `outcome` describes it."""
        ...

    def on_finish(self, index: int, outcome: TaskOutcome) -> None:
        """Receive the end of the task at `index`, with the `outcome` given to `on_start`."""
        ...


class Observers:
    """Several observers behind one, called in the order given."""

    def __init__(self, observers: Sequence[SimulationObserver]) -> None:
        self._observers = tuple(observers)

    def on_tick(self, now: int, step: int, outlooks: Mapping[str, Outlook]) -> None:
        for observer in self._observers:
            observer.on_tick(now, step, outlooks)

    def on_decision(self, task: Task, now: int, decision: Decision, seconds: float) -> None:
        for observer in self._observers:
            observer.on_decision(task, now, decision, seconds)

    def on_start(self, index: int, outcome: TaskOutcome) -> None:
        for observer in self._observers:
            observer.on_start(index, outcome)

    def on_finish(self, index: int, outcome: TaskOutcome) -> None:
        for observer in self._observers:
            observer.on_finish(index, outcome)
