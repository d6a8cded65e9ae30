"""Builders for tasks, nodes and regions in policy and replay tests."""

from __future__ import annotations

import numpy as np

from carbon_scheduler.config.types import Config, RegionSpec, SchedulerSettings
from carbon_scheduler.model import Node, PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.policy.fit import NodeUsage
from carbon_scheduler.policy.placement import RegionView
from carbon_scheduler.policy.windows import Outlook

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
