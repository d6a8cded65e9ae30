"""Fill the daemon's Prometheus metrics from a replay, with the daemon's meanings.

`MetricsObserver` is a `SimulationObserver`: the scheduler simulation calls it
for forecasts, decisions, starts and finishes. The pacing loop in
`replay.streaming` sets what changes with the simulated clock alone (intensity,
level, queue gauges and the simulated time) through `publish_step` and
`publish_queues`, and `publish_static` sets what a replay never changes.

The mapping to the daemon's series:

- A `Bind` in the task's home region counts as `bind`, in another region as
  `move`, in `decisions` and in `scheduled`.
- `wait_seconds` observes start minus arrival in simulated seconds, and
  `decision_seconds` the real seconds that `policy.rules.decide` took.
- A finished task adds its energy and emissions under scenario `scheduled` in
  the region where it ran, and the carbon-blind baseline's numbers for the same
  task under `carbon_blind` in the baseline's region.
- `region_up` is 1 for every region and `leader` is 1, because the
  simulation models no API server outages and no leader election.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import Config
from carbon_scheduler.model import Task
from carbon_scheduler.policy.decisions import Bind, Decision, Defer, Unschedulable, Wait
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.replay.results import PolicyRun, TaskOutcome
from carbon_scheduler.telemetry.metrics import (
    FORECAST_HORIZONS_HOURS,
    SCENARIO_CARBON_BLIND,
    SCENARIO_SCHEDULED,
    SchedulerMetrics,
)


def placement_kind(task: Task, region: str) -> str:
    """Return `bind` for a placement in the task's home region, else `move`."""
    return "bind" if region == task.home_region else "move"


def decision_outcome(task: Task, decision: Decision) -> str:
    """Return the `outcome` label of the decisions counter for one decision."""
    if isinstance(decision, Bind):
        return placement_kind(task, decision.region)
    if isinstance(decision, Defer):
        return "defer"
    if isinstance(decision, Wait):
        return "wait"
    if isinstance(decision, Unschedulable):
        return "unschedulable"
    raise TypeError(f"unknown decision type {type(decision).__name__}")


def forecast_at(outlook: Outlook, hours: int) -> float:
    """Return the outlook's intensity for the step `hours` after its origin; past
    the last forecast step the last value holds, as in window planning."""
    index = min(hours * 3600 // outlook.step_seconds, outlook.values.size - 1)
    return float(outlook.values[index])


class MetricsObserver:
    """Counts the scheduler simulation's decisions, placements and finished tasks.

    `baseline` is the carbon-blind run over the same tasks, in the same order, and
    gives each finished task's counterfactual energy and emissions.
    """

    def __init__(self, metrics: SchedulerMetrics, *, baseline: PolicyRun) -> None:
        self.metrics = metrics
        self.baseline = baseline.outcomes

    def on_tick(self, now: int, step: int, outlooks: Mapping[str, Outlook]) -> None:
        for region, outlook in outlooks.items():
            values = {hours: (now + hours * 3600, forecast_at(outlook, hours)) for hours in FORECAST_HORIZONS_HOURS}
            self.metrics.set_forecast(region, values)

    def on_decision(self, task: Task, now: int, decision: Decision, seconds: float) -> None:
        self.metrics.decisions.labels(task.task_class.value, decision_outcome(task, decision)).inc()
        self.metrics.decision_seconds.observe(seconds)

    def on_start(self, index: int, outcome: TaskOutcome) -> None:
        task = outcome.task
        assert outcome.region is not None and outcome.start is not None  # a started task has both
        self.metrics.scheduled.labels(task.task_class.value, outcome.region, placement_kind(task, outcome.region)).inc()
        self.metrics.wait_seconds.labels(task.task_class.value).observe(outcome.start - task.arrival)

    def on_finish(self, index: int, outcome: TaskOutcome) -> None:
        task_class = outcome.task.task_class.value
        assert outcome.region is not None  # a finished task ran somewhere
        self.metrics.add_task_emissions(
            region=outcome.region,
            task_class=task_class,
            scenario=SCENARIO_SCHEDULED,
            energy_kwh=outcome.energy_kwh,
            emissions_g=outcome.emissions_g,
        )
        blind = self.baseline[index]
        # NOTE: a task that never started in the baseline run (its home region
        # stayed full until the simulation ended) adds nothing to carbon_blind, so
        # the saving shown for that task is understated.
        if blind.region is not None:
            self.metrics.add_task_emissions(
                region=blind.region,
                task_class=task_class,
                scenario=SCENARIO_CARBON_BLIND,
                energy_kwh=blind.energy_kwh,
                emissions_g=blind.emissions_g,
            )


def publish_static(
    metrics: SchedulerMetrics, config: Config, expected: Mapping[str, Mapping[str, float]]
) -> None:
    """Create every series at zero and set what a replay never changes: regions
    up, this process the leader, and the expected shares from `--expected`."""
    metrics.prime(config.region_names)
    for region in config.region_names:
        metrics.region_up.labels(region).set(1)
    metrics.leader.set(1)
    for task_class, shares in expected.items():
        for region, share in shares.items():
            metrics.expected_share.labels(task_class, region).set(share)


def publish_step(metrics: SchedulerMetrics, trace: Trace, levels: np.ndarray, config: Config, step: int) -> None:
    """Set intensity and level of every region to trace step `step`. `levels` has
    one row per config region, in config order (`scheduler_levels`)."""
    for row, region in enumerate(config.region_names):
        metrics.set_intensity(region, trace.time_at(step), float(trace.values[trace.region_index(region), step]))
        metrics.level.labels(region).set(int(levels[row, step]))


def publish_queues(metrics: SchedulerMetrics, *, deferred: int, queued: int) -> None:
    """Set the deferred and queue gauges."""
    metrics.deferred.set(deferred)
    metrics.pending.set(queued)
