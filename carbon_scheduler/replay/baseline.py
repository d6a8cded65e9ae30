"""The carbon-blind baseline: what the cluster does without this scheduler.

Each task starts at once in its home region on the least allocated node that fits;
when the home region is full it stays Pending there and is retried, oldest
first, whenever a pod finishes, as kube-scheduler would do. It respects the same pod caps and node
sizes as the scheduler, so the two are compared on equal capacity. A task whose
allow-list excludes its home region runs in the first allowed region.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable

from carbon_scheduler.model import Task
from carbon_scheduler.policy.placement import find_node
from carbon_scheduler.replay.context import ReplayContext, occupy, unstarted
from carbon_scheduler.replay.results import PolicyRun, TaskOutcome


def baseline_region(task: Task, region_names: tuple[str, ...]) -> str:
    if task.allows(task.home_region):
        return task.home_region
    assert task.allowed_regions  # a task that allows nothing was rejected earlier
    return next(name for name in region_names if name in task.allowed_regions)


def run_baseline(context: ReplayContext, *, progress: Callable[[int], None] | None = None) -> PolicyRun:
    views = {view.name: view for view in context.views()}
    names = context.config.region_names
    outcomes: list[TaskOutcome | None] = [None] * len(context.tasks)
    queues: dict[str, deque[int]] = {name: deque() for name in names}
    finishes: list[tuple[int, int, str, str]] = []

    def try_start(index: int, now: int) -> bool:
        task = context.tasks[index]
        region = baseline_region(task, names)
        choice = find_node(task, views[region])
        if choice.node is None:
            return False
        occupy(views[region], choice.node, task, 1)
        outcomes[index] = context.outcome(task, region, choice.node, now)
        heapq.heappush(finishes, (now + task.duration, index, region, choice.node))
        return True

    def finish_until(time: int) -> None:
        while finishes and finishes[0][0] <= time:
            end, index, region, node = heapq.heappop(finishes)
            occupy(views[region], node, context.tasks[index], -1)
            queue = queues[region]
            for waiting in list(queue):
                if views[region].full:
                    break
                if try_start(waiting, end):
                    queue.remove(waiting)

    for index, task in enumerate(context.tasks):
        if progress is not None and index % 1000 == 999:
            progress(1000)
        finish_until(task.arrival)
        region = baseline_region(task, names)
        if not try_start(index, task.arrival):
            queues[region].append(index)
    finish_until(2**62)
    if progress is not None:
        progress(len(context.tasks) % 1000)

    return PolicyRun("baseline", tuple(o if o is not None else unstarted(t) for o, t in zip(outcomes, context.tasks)))
