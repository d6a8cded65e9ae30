"""The oracle: a clairvoyant planner that knows the whole trace and workload.

It gives each task the same freedom the scheduler has, no more: a `critical` task
starts at arrival, a `standard` task starts within `standard_max_wait_seconds` of
arrival, and a `deferrable` task starts early enough to finish by its deadline;
all in allowed regions, within the same pod caps and node sizes. Within that, each
task takes the start and region with the lowest measured emissions.

Tasks are planned least flexible first (critical; then tasks with a region
allow-list; then standard; then deferrable; each group by the length of its start
window), each into the room the tasks before it left. Room is counted on a grid of
`slot_seconds` (a minute), and starts are tried every `step_seconds` (five
minutes) and at both ends of each start window. A task whose start window has no room left takes
the earliest start with room after it. Greedy planning can leave a deferrable task
without room before its deadline even though a different order would have fitted
it; such tasks are moved to the front, before the critical ones, and the plan is
made again, up to `max_passes` times.

This makes the oracle a near-optimal clairvoyant schedule, not a proven lower
bound: a scheduler that beats it on some workload shows an oracle fraction above 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.model import ZERO, Resources, Task, TaskClass
from carbon_scheduler.policy.energy import facility_power_kw
from carbon_scheduler.policy.fit import NodeUsage, fit_failures
from carbon_scheduler.policy.ledger import NO_LIMIT, CapacityLedger, RegionCapacity, SlotSpans
from carbon_scheduler.replay.context import ReplayContext, unstarted
from carbon_scheduler.replay.results import PolicyRun, TaskOutcome

_SEARCH_SECONDS = 2 * 86_400


class _Room:
    """Booked room per region (its pod cap) and per node (allocatable pods, CPU
    and memory) on one time grid."""

    def __init__(
        self, regions: tuple[RegionSpec, ...], origin: int, slot_seconds: int, largest: Resources
    ) -> None:
        self.regions = regions
        self.region_ledger = CapacityLedger(
            {spec.name: RegionCapacity(spec.max_pods, NO_LIMIT, NO_LIMIT) for spec in regions},
            origin=origin,
            slot_seconds=slot_seconds,
        )
        node_capacity = {}
        self.nodes: dict[str, list[str]] = {}
        for spec in regions:
            keys = []
            for node in spec.nodes:
                if not node.ready or node.unschedulable:
                    continue
                key = f"{spec.name}/{node.name}"
                node_capacity[key] = RegionCapacity(
                    node.allocatable_pods, node.allocatable.milli_cpu, node.allocatable.memory
                )
                keys.append(key)
            self.nodes[spec.name] = keys
        self.node_ledger = CapacityLedger(node_capacity, origin=origin, slot_seconds=slot_seconds)

        self.specs = {spec.name: spec for spec in regions}
        # Where every node could hold the region's whole pod cap of the largest
        # task, the pod cap always binds first and node checks can be skipped.
        self.nodes_bind = {
            spec.name: not all(
                node.allocatable.milli_cpu >= spec.max_pods * largest.milli_cpu
                and node.allocatable.memory >= spec.max_pods * largest.memory
                and node.allocatable_pods >= spec.max_pods
                for node in spec.nodes
                if node.ready and not node.unschedulable
            )
            for spec in regions
        }

    def eligible(self, task: Task, region: str) -> list[str]:
        """Node keys of `region` where `task` passes every rule but room: taints,
        selectors, affinity, and a size that fits the empty node."""
        spec = self.specs[region]
        requirements = task.requirements
        empty = NodeUsage(ZERO, 0)
        keys = []
        for node in spec.nodes:
            key = f"{region}/{node.name}"
            if key in self.node_ledger.capacity and not fit_failures(requirements, node, empty):
                keys.append(key)
        return keys

    def room(self, region: str, nodes: list[str], spans: SlotSpans, request: Resources) -> np.ndarray:
        """Whether each span has room in the region's pod cap and on one of `nodes`."""
        room = self.region_ledger.room(region, spans, request)
        if not self.nodes_bind[region] or not room.any():
            return room
        on_some_node = np.zeros(room.size, dtype=bool)
        for key in nodes:
            on_some_node |= self.node_ledger.room(key, spans, request)
        return room & on_some_node

    def book(self, region: str, nodes: list[str], start: int, duration: int, request: Resources) -> str:
        """Book the region and the first of `nodes` with room; return the node name."""
        spans = self.node_ledger.spans(np.array([start], dtype=np.int64), duration)
        for key in nodes:
            if self.node_ledger.room(key, spans, request)[0]:
                self.region_ledger.book(region, start, start + duration, request)
                self.node_ledger.book(key, start, start + duration, request)
                return key.split("/", 1)[1]
        raise AssertionError(f"no node of {region} has room at {start}; room was checked first")


def _start_window(task: Task, context: ReplayContext) -> tuple[int, int]:
    settings = context.config.scheduler
    if task.task_class is TaskClass.CRITICAL:
        return task.arrival, task.arrival
    if task.task_class is TaskClass.STANDARD:
        return task.arrival, task.arrival + settings.standard_max_wait_seconds
    deadline = task.deadline if task.deadline is not None else task.arrival + settings.default_deadline_seconds
    return task.arrival, max(task.arrival, deadline - task.duration)


def _order(task: Task, window: tuple[int, int], promoted: bool) -> tuple:
    rank = {TaskClass.CRITICAL: 0, TaskClass.STANDARD: 3, TaskClass.DEFERRABLE: 4}[task.task_class]
    if rank > 0 and task.allowed_regions is not None:
        # An allow-list leaves fewer choices than any wait does: plan those first.
        rank = 2
    if promoted:
        # A task that missed its deadline in an earlier pass goes first, even before
        # critical tasks: they can still choose another region, it had no choice left.
        rank = -1
    return (rank, window[1] - window[0], task.arrival, task.id)


def run_oracle(
    context: ReplayContext,
    *,
    slot_seconds: int = 60,
    step_seconds: int = 300,
    max_passes: int = 8,
    progress: Callable[[int], None] | None = None,
) -> PolicyRun:
    """Plan every task with perfect knowledge of the trace; see the module docstring.

    `progress` is called with the number of tasks planned since its last call;
    a second pass counts its tasks again."""
    promoted: set[int] = set()
    outcomes: list[TaskOutcome] = []
    for _ in range(max_passes):
        outcomes = _plan(context, slot_seconds, step_seconds, promoted, progress)
        missed = {index for index, outcome in enumerate(outcomes) if outcome.missed_deadline}
        if not missed - promoted:
            break
        promoted |= missed
    return PolicyRun("oracle", tuple(outcomes))


def _plan(
    context: ReplayContext,
    slot_seconds: int,
    step_seconds: int,
    promoted: set[int],
    progress: Callable[[int], None] | None,
) -> list[TaskOutcome]:
    trace = context.trace
    largest = Resources(
        milli_cpu=max((task.requirements.request.milli_cpu for task in context.tasks), default=0),
        memory=max((task.requirements.request.memory for task in context.tasks), default=0),
    )
    room = _Room(context.config.regions, trace.start, slot_seconds, largest)
    specs = context.config.regions
    windows = [_start_window(task, context) for task in context.tasks]
    order = sorted(
        range(len(context.tasks)), key=lambda i: _order(context.tasks[i], windows[i], i in promoted)
    )
    outcomes: list[TaskOutcome | None] = [None] * len(context.tasks)

    for planned, index in enumerate(order, start=1):
        if progress is not None and planned % 1000 == 0:
            progress(1000)
        task = context.tasks[index]
        first, last = windows[index]
        nodes = {spec.name: room.eligible(task, spec.name) for spec in specs if task.allows(spec.name)}
        allowed = [spec for spec in specs if nodes.get(spec.name)]
        if not allowed:
            continue  # fits no node even when empty: it never starts, as in the scheduler
        choice = _cheapest(task, context, room, allowed, nodes, first, last, step_seconds)
        search_from = last
        while choice is None:
            # No room in the start window: take the earliest start with room after it.
            choice = _earliest(task, room, allowed, nodes, search_from, step_seconds)
            search_from += _SEARCH_SECONDS
        region, start = choice
        node = room.book(region, nodes[region], start, task.duration, task.requirements.request)
        outcomes[index] = context.outcome(task, region, node, start)

    if progress is not None:
        progress(len(order) % 1000)
    return [o if o is not None else unstarted(t) for o, t in zip(outcomes, context.tasks)]


def _candidates(first: int, last: int, origin: int, step_seconds: int) -> np.ndarray:
    start_step = (first - origin) // step_seconds + 1
    end_step = (last - origin) // step_seconds
    grid = origin + np.arange(start_step, end_step + 1, dtype=np.int64) * step_seconds
    ends = [last] if last != first and (last - origin) % step_seconds else []
    return np.concatenate((np.array([first], dtype=np.int64), grid, np.array(ends, dtype=np.int64)))


def _cheapest(task, context, room, allowed, nodes, first, last, step_seconds) -> tuple[str, int] | None:
    starts = _candidates(first, last, context.trace.start, step_seconds)
    spans = room.region_ledger.spans(starts, task.duration)
    request = task.requirements.request
    best: tuple[float, int, str] | None = None
    for spec in allowed:
        fits = room.room(spec.name, nodes[spec.name], spans, request)
        if not fits.any():
            continue
        power = facility_power_kw(request, spec)
        costs = np.where(fits, power * context.truth[spec.name].integrals(starts, task.duration), np.inf)
        index = int(np.argmin(costs))
        candidate = (float(costs[index]), int(starts[index]), spec.name)
        if best is None or candidate < best:
            best = candidate
    return None if best is None else (best[2], best[1])


def _earliest(task, room, allowed, nodes, after, step_seconds) -> tuple[str, int] | None:
    starts = after + np.arange(1, _SEARCH_SECONDS // step_seconds + 1, dtype=np.int64) * step_seconds
    spans = room.region_ledger.spans(starts, task.duration)
    best: tuple[int, str] | None = None
    for spec in allowed:
        fits = room.room(spec.name, nodes[spec.name], spans, task.requirements.request)
        if fits.any():
            candidate = (int(starts[int(np.argmax(fits))]), spec.name)
            if best is None or candidate < best:
                best = candidate
    return None if best is None else (best[1], best[0])
