"""What all three replay policies share: the regions as placement sees them, the
true intensity for accounting, and the bookkeeping of one task's outcome."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import Config, RegionSpec
from carbon_scheduler.model import ZERO, Task
from carbon_scheduler.policy.energy import emissions_g, energy_kwh, facility_power_kw
from carbon_scheduler.policy.fit import NodeUsage
from carbon_scheduler.policy.placement import RegionView
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.replay.results import TaskOutcome


class ReplayInputError(ValueError):
    """The trace, config and workload of a replay do not fit together."""


@dataclass(frozen=True, slots=True)
class ReplayContext:
    """Inputs of one replay, checked against each other.

    `truth` holds one Outlook per region over the whole trace: the measured values,
    used to account emissions. Past the trace's end the last value is held.
    """

    trace: Trace
    config: Config
    tasks: tuple[Task, ...]
    truth: dict[str, Outlook]

    @classmethod
    def build(cls, trace: Trace, config: Config, tasks: list[Task] | tuple[Task, ...]) -> ReplayContext:
        missing = [name for name in config.region_names if name not in trace.regions]
        if missing:
            raise ReplayInputError(
                f"the trace has no data for region(s) {', '.join(missing)}; "
                f"it has {', '.join(trace.regions)}. Use a trace with every region of the config, "
                "or a config with only the trace's regions"
            )
        for task in tasks:
            _check_task(task, trace, config)
        # Every policy walks tasks in arrival order, so the context keeps them so.
        tasks = sorted(tasks, key=lambda task: (task.arrival, task.id))
        truth = {}
        for name in config.region_names:
            values = trace.values[trace.region_index(name)]
            truth[name] = Outlook.build(name, trace.start, trace.step_seconds, float(values[0]), values[1:])
        return cls(trace, config, tuple(tasks), truth)

    def views(self) -> list[RegionView]:
        """Fresh, empty region views in config order."""
        views = []
        for spec in self.config.regions:
            usage = {node.name: NodeUsage(ZERO, 0) for node in spec.nodes}
            views.append(RegionView(spec=spec, nodes=spec.nodes, usage=usage))
        return views

    def outcome(self, task: Task, region: str, node: str, start: int) -> TaskOutcome:
        """The outcome of running `task` on `node` in `region` from `start` for its
        full duration, with emissions from the measured trace."""
        spec = self.config.region(region)
        power = facility_power_kw(task.requirements.request, spec)
        end = start + task.duration
        grams = emissions_g(power, self.truth[region].integral(start, end))
        return TaskOutcome(task, region, node, start, end, energy_kwh(power, task.duration), grams)


def unstarted(task: Task) -> TaskOutcome:
    return TaskOutcome(task, None, None, None, None, 0.0, 0.0)


def occupy(view: RegionView, node: str, task: Task, sign: int) -> None:
    """Add (sign 1) or remove (sign -1) a running task from a region view."""
    usage = view.usage[node]
    request = task.requirements.request
    usage.requested = usage.requested + request if sign > 0 else usage.requested - request
    usage.pods += sign
    view.task_pods += sign


def _check_task(task: Task, trace: Trace, config: Config) -> None:
    names = config.region_names
    if task.home_region not in names:
        raise ReplayInputError(
            f"task {task.id}: home region {task.home_region!r} is not in the config; known regions: {', '.join(names)}"
        )
    unknown = [region for region in task.allowed_regions or () if region not in names]
    if unknown:
        raise ReplayInputError(
            f"task {task.id}: allowed region(s) {', '.join(unknown)} not in the config; known regions: {', '.join(names)}"
        )
    if not trace.start <= task.arrival < trace.end:
        raise ReplayInputError(
            f"task {task.id}: arrival {task.arrival} is outside the trace "
            f"[{trace.start}, {trace.end}); generate the workload over the trace's span"
        )


def region_spec_map(config: Config) -> dict[str, RegionSpec]:
    return {spec.name: spec for spec in config.regions}


def step_index(trace: Trace, time: int) -> int:
    """Index of the trace step containing `time`, clamped to the trace."""
    index = (time - trace.start) // trace.step_seconds
    return int(np.clip(index, 0, trace.steps - 1))
