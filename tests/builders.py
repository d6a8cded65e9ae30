"""Builders for tasks, nodes and regions in policy and replay tests."""

from __future__ import annotations

import numpy as np

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import AbsoluteLevels, Config, RegionSpec, SchedulerSettings
from carbon_scheduler.forecasting import Forecaster, SeasonalNaive
from carbon_scheduler.model import Node, PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.policy.fit import NodeUsage
from carbon_scheduler.policy.placement import RegionView
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.replay.baseline import run_baseline
from carbon_scheduler.replay.context import ReplayContext
from carbon_scheduler.replay.oracle import run_oracle
from carbon_scheduler.replay.results import PolicyRun
from carbon_scheduler.replay.simulator import run_scheduler

HOUR = 3600
T0 = 1_700_000_000 - 1_700_000_000 % HOUR
GI = 2**30


def node(name: str, cpu: float = 4, memory_gi: int = 16, pods: int = 110, **fields) -> Node:
    return Node(name, Resources(milli_cpu=int(cpu * 1000), memory=memory_gi * GI), pods, **fields)


def region_spec(name: str, *, max_pods: int = 4, nodes: int = 2, **fields) -> RegionSpec:
    return RegionSpec(name=name, max_pods=max_pods, nodes=tuple(node(f"{name}-{i}") for i in range(nodes)), **fields)


def view(name: str, intensity: float | None, *, task_pods: int = 0, max_pods: int = 4, **fields) -> RegionView:
    spec = region_spec(name, max_pods=max_pods)
    usage = {n.name: NodeUsage(Resources(), 0) for n in spec.nodes}
    return RegionView(spec=spec, nodes=spec.nodes, usage=usage, task_pods=task_pods, intensity_g_per_kwh=intensity, **fields)


def task(
    task_class: TaskClass | str = TaskClass.CRITICAL,
    *,
    id: str = "t1",
    arrival: int = T0,
    duration: int = HOUR,
    home: str = "eu-west",
    cpu: float = 1,
    memory_gi: float = 1,
    deadline: int | None = None,
    allowed: tuple[str, ...] | None = None,
    requirements: PodRequirements | None = None,
) -> Task:
    if requirements is None:
        requirements = PodRequirements(request=Resources(milli_cpu=int(cpu * 1000), memory=int(memory_gi * GI)))
    return Task(
        id, TaskClass(task_class), arrival, duration, home, requirements, deadline=deadline, allowed_regions=allowed
    )


def outlook(region: str, values: list[float], origin: int = T0) -> Outlook:
    array = np.asarray(values, dtype=float)
    return Outlook.build(region, origin, HOUR, float(array[0]), array[1:])


def config(*specs: RegionSpec, **settings) -> Config:
    return Config(SchedulerSettings(**settings), tuple(specs))


# Replay builders: traces, regions with chosen node sizes, and a replay of a
# workload under all three policies.


def hourly_trace(values: dict[str, list[float]] | dict[str, np.ndarray], start: int = T0) -> Trace:
    """A trace with one hourly row per region, in the order of `values`."""
    names = tuple(values)
    return Trace(names, start, HOUR, np.array([np.asarray(values[name], dtype=float) for name in names]))


def sized_region(name: str, nodes: tuple[Node, ...] | list[Node], *, max_pods: int = 4, **fields) -> RegionSpec:
    """A region with the given nodes, for tests where node sizes matter."""
    return RegionSpec(name=name, max_pods=max_pods, nodes=tuple(nodes), **fields)


def absolute_levels(low_below: float = 100.0, high_above: float = 400.0) -> AbsoluteLevels:
    """Fixed level thresholds, so a test can tell every step's level from its value."""
    return AbsoluteLevels(low_below_g_per_kwh=low_below, high_above_g_per_kwh=high_above)


def replay_all(
    trace: Trace, cfg: Config, tasks: list[Task], forecaster: Forecaster | None = None
) -> dict[str, PolicyRun]:
    """Run the scheduler (with seasonal-naive forecasts unless `forecaster` is
    given), the baseline and the oracle on one workload, keyed by policy name."""
    context = ReplayContext.build(trace, cfg, tasks)
    return {
        "scheduler": run_scheduler(context, forecaster or SeasonalNaive()),
        "baseline": run_baseline(context),
        "oracle": run_oracle(context),
    }
