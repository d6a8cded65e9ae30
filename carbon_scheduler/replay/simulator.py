"""Discrete-event simulation of the carbon-aware scheduler over a trace.

Events, processed in time order (and at equal times in this order, so room freed
by a finishing task is visible to everything else at that instant):

1. `FINISH`: a task ends; its node and region get room back.
2. `TICK`: a new trace step begins. The scheduler sees the step's measured
   intensity and level, asks the forecaster for the steps ahead using only the
   trace up to this step, and checks whether a deferred task should start early.
3. `ARRIVAL`: a task is submitted.
4. `WAKE`: a deferred task's planned window begins; it is planned again.
5. `TIMEOUT`: a `standard` task has waited the maximum for room in its region.

After each event the tasks that wait for room are retried, in the order
critical, deferrable past its latest start (earliest latest start first),
standard waiting for its region, then the rest. Every decision comes from
`policy.rules.decide`, the same function the daemon calls.

`run()` processes every event at once. A caller that paces the simulation
against a wall clock (`replay --serve-metrics`) calls `begin()`, then `step()`
while `next_time()` is not None, then `result()`. An optional observer (see
`replay.observer`) sees forecasts, decisions, starts and finishes as they happen.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from carbon_scheduler.forecasting import Forecaster
from carbon_scheduler.model import Level, Task, TaskClass
from carbon_scheduler.policy.decisions import Bind, Defer, Unschedulable, Wait, Window
from carbon_scheduler.policy.ledger import CapacityLedger, region_capacity
from carbon_scheduler.policy.levels import level_series
from carbon_scheduler.policy.placement import RegionView
from carbon_scheduler.policy.energy import power_matrix
from carbon_scheduler.policy.rules import decide, start_early_mask
from carbon_scheduler.policy.windows import Outlook, latest_start
from carbon_scheduler.replay.context import ReplayContext, occupy, unstarted
from carbon_scheduler.replay.observer import SimulationObserver
from carbon_scheduler.replay.results import PolicyRun, TaskOutcome

FINISH, TICK, ARRIVAL, WAKE, TIMEOUT = range(5)

Progress = Callable[[int], None]


@dataclass(slots=True)
class _Deferred:
    window: Window
    version: int


def scheduler_levels(context: ReplayContext) -> np.ndarray:
    """Level of every region and step as the scheduler sees it, shape (regions,
    steps) in config order, each step judged on the past only."""
    trace = context.trace
    rows = []
    for spec in context.config.regions:
        values = trace.values[trace.region_index(spec.name)]
        rows.append(level_series(values, spec.levels, trace.step_seconds))
    return np.array(rows, dtype=np.int8)


class SchedulerSimulation:
    """One run of the scheduler policy. Call `run()` once, or `begin()` and then
    `step()` until `next_time()` returns None."""

    def __init__(
        self,
        context: ReplayContext,
        forecaster: Forecaster,
        *,
        levels: np.ndarray | None = None,
        progress: Progress | None = None,
        observer: SimulationObserver | None = None,
    ) -> None:
        self.context = context
        self.trace = context.trace
        self.settings = context.config.scheduler
        self.forecaster = forecaster
        self.levels = scheduler_levels(context) if levels is None else levels
        self.progress = progress
        self.observer = observer
        self.views: list[RegionView] = context.views()
        self.view_by_name = {view.name: view for view in self.views}
        self.rows = {view.name: self.trace.region_index(view.name) for view in self.views}
        self.level_rows = {name: row for row, name in enumerate(context.config.region_names)}
        capacity = {spec.name: region_capacity(spec.max_pods, spec.nodes) for spec in context.config.regions}
        self.ledger = CapacityLedger(capacity, origin=self.trace.start)
        step = self.trace.step_seconds
        longest = max((task.duration for task in context.tasks), default=step)
        self.horizon_steps = (self.settings.planning_horizon_hours * 3600 + longest) // step + 1

        tasks = context.tasks
        self.durations = np.fromiter((task.duration for task in tasks), dtype=np.int64, count=len(tasks))
        self.power = power_matrix(tasks, [view.spec for view in self.views])
        self.allowed = np.array([[task.allows(view.name) for view in self.views] for task in tasks], dtype=bool).reshape(
            len(tasks), len(self.views)
        )
        self.last_arrival = max((task.arrival for task in tasks), default=0)
        self.outcomes: list[TaskOutcome | None] = [None] * len(context.tasks)
        self.events: list[tuple[int, int, int, int, int]] = []
        self.sequence = 0
        self.outlooks: dict[str, Outlook] = {}
        self.deferred: dict[int, _Deferred] = {}
        self.waiting: dict[int, str] = {}
        self.pending: dict[int, tuple] = {}
        self.running: dict[int, tuple[str, str]] = {}
        self.versions: dict[int, int] = {}
        self.timeouts: set[int] = set()
        self.handled = 0
        self.begun = False

    # Event queue ----------------------------------------------------------------

    def _push(self, time: int, kind: int, index: int, version: int = 0) -> None:
        self.sequence += 1
        heapq.heappush(self.events, (time, kind, self.sequence, index, version))

    def run(self) -> PolicyRun:
        self.begin()
        while self.events:
            self.step()
        return self.result()

    def begin(self) -> None:
        """Queue every arrival and the first trace step; call once, before `step()`."""
        if self.begun:
            raise RuntimeError("the simulation has already begun; a SchedulerSimulation runs once")
        self.begun = True
        tasks = self.context.tasks
        for index, task in enumerate(tasks):
            self._push(task.arrival, ARRIVAL, index)
        if tasks:
            first_step = (min(t.arrival for t in tasks) - self.trace.start) // self.trace.step_seconds
            self._push(self.trace.time_at(int(first_step)), TICK, int(first_step))

    def next_time(self) -> int | None:
        """Simulated time of the next event, or None when the simulation is over."""
        return self.events[0][0] if self.events else None

    def step(self) -> int:
        """Process the next event and return its simulated time."""
        now, kind, _, index, version = heapq.heappop(self.events)
        if kind == FINISH:
            self._finish(index)
            self._retry(now)
        elif kind == TICK:
            self._tick(now, index)
        elif kind == ARRIVAL:
            self._attempt(index, now)
            self.handled += 1
            if self.progress is not None and self.handled % 1000 == 0:
                self.progress(1000)
        elif kind == WAKE:
            self._wake(index, now, version)
        elif kind == TIMEOUT:
            if self.waiting.pop(index, None) is not None:
                self._attempt(index, now)
        return now

    def result(self) -> PolicyRun:
        """Return the outcome of every task; call once no event is left."""
        if self.events:
            raise RuntimeError(f"the simulation still has {len(self.events)} events; step() until next_time() is None")
        if self.progress is not None:
            self.progress(self.handled % 1000)
        tasks = self.context.tasks
        return PolicyRun(
            "scheduler",
            tuple(o if o is not None else unstarted(t) for o, t in zip(self.outcomes, tasks)),
        )

    @property
    def deferred_count(self) -> int:
        """Tasks sleeping until a planned low-carbon window."""
        return len(self.deferred)

    @property
    def queued_count(self) -> int:
        """Tasks that arrived and have not started: deferred, waiting for room in
        their region, or unschedulable for now."""
        return len(self.deferred) + len(self.waiting) + len(self.pending)

    # Handlers -------------------------------------------------------------------

    def _tick(self, now: int, step: int) -> None:
        trace = self.trace
        for view in self.views:
            row = self.rows[view.name]
            values = trace.values[row]
            view.intensity_g_per_kwh = float(values[step])
            view.level = Level(int(self.levels[self.level_rows[view.name], step]))
            forecast = self.forecaster.forecast(values[: step + 1], now, trace.step_seconds, self.horizon_steps)
            self.outlooks[view.name] = Outlook.build(view.name, now, trace.step_seconds, float(values[step]), forecast)
        if self.observer is not None:
            self.observer.on_tick(now, step, self.outlooks)

        if self.deferred and any(view.level is Level.LOW for view in self.views):
            indices = np.fromiter(self.deferred, dtype=np.int64, count=len(self.deferred))
            early = start_early_mask(
                now,
                self.durations[indices],
                [self.deferred[int(index)].window for index in indices],
                self.power[indices],
                self.allowed[indices],
                self.views,
                self.outlooks,
            )
            for index in indices[early]:
                self._release(int(index))
                self._attempt(int(index), now)

        # Stop ticking once nothing can use a new sample any more.
        unfinished = self.deferred or self.waiting or self.pending
        if step + 1 < trace.steps and (unfinished or self._arrivals_left(now)):
            self._push(trace.time_at(step + 1), TICK, step + 1)

    def _arrivals_left(self, now: int) -> bool:
        return self.last_arrival > now

    def _wake(self, index: int, now: int, version: int) -> None:
        deferred = self.deferred.get(index)
        if deferred is None or deferred.version != version:
            return  # planned again since, or already started
        self._release(index)
        self._attempt(index, now)

    def _finish(self, index: int) -> None:
        region, node = self.running.pop(index)
        occupy(self.view_by_name[region], node, self.context.tasks[index], -1)
        if self.observer is not None:
            outcome = self.outcomes[index]
            assert outcome is not None  # a running task has an outcome
            self.observer.on_finish(index, outcome)

    # Decisions ------------------------------------------------------------------

    def _attempt(self, index: int, now: int) -> bool:
        """Decide for one task and carry the decision out; True when it started."""
        task = self.context.tasks[index]
        if self.observer is None:
            decision = decide(task, now, self.views, self.settings, outlooks=self.outlooks, ledger=self.ledger)
        else:
            started = time.perf_counter()
            decision = decide(task, now, self.views, self.settings, outlooks=self.outlooks, ledger=self.ledger)
            self.observer.on_decision(task, now, decision, time.perf_counter() - started)
        if isinstance(decision, Bind):
            self._start(index, now, decision.region, decision.node)
            return True
        if isinstance(decision, Defer):
            version = self.versions.get(index, 0) + 1
            self.versions[index] = version
            window = decision.window
            self.ledger.book(window.region, window.start, window.end, task.requirements.request)
            self.deferred[index] = _Deferred(window, version)
            self._push(decision.until, WAKE, index, version)
        elif isinstance(decision, Wait):
            self.waiting[index] = decision.region
            if index not in self.timeouts:
                self.timeouts.add(index)
                self._push(decision.until, TIMEOUT, index)
        elif isinstance(decision, Unschedulable):
            self.pending[index] = self._priority(task, now)
        return False

    def _priority(self, task: Task, now: int) -> tuple:
        """Order of tasks waiting for room: critical first, then deferrable tasks by
        latest start (earliest deadline first), then standard ones by arrival. A
        deferrable task only waits for room once its planned window has come, so
        it goes ahead of standard tasks, which have no deadline."""
        if task.task_class is TaskClass.CRITICAL:
            return (0, task.arrival)
        if task.task_class is TaskClass.DEFERRABLE:
            latest = latest_start(task, self.settings.deadline_margin_seconds)
            return (1, latest if latest is not None else task.arrival)
        return (2, task.arrival)

    def _start(self, index: int, now: int, region: str, node: str) -> None:
        task = self.context.tasks[index]
        self.pending.pop(index, None)
        self.waiting.pop(index, None)
        occupy(self.view_by_name[region], node, task, 1)
        self.ledger.book(region, now, now + task.duration, task.requirements.request)
        self.running[index] = (region, node)
        outcome = self.context.outcome(task, region, node, now)
        self.outcomes[index] = outcome
        self._push(now + task.duration, FINISH, index)
        if self.observer is not None:
            self.observer.on_start(index, outcome)

    def _release(self, index: int) -> None:
        deferred = self.deferred.pop(index)
        task = self.context.tasks[index]
        self.ledger.release(deferred.window.region, deferred.window.start, deferred.window.end, task.requirements.request)

    def _retry(self, now: int) -> None:
        """Retry tasks that wait for room, most urgent first, until no region has room."""
        if not self.pending and not self.waiting:
            return
        if all(view.full or not view.up for view in self.views):
            return
        ordered = sorted(self.pending, key=self.pending.__getitem__)
        urgent = [index for index in ordered if self.pending[index][0] < 2]
        rest = [index for index in ordered if self.pending[index][0] >= 2]
        for index in urgent + list(self.waiting) + rest:
            if all(view.full or not view.up for view in self.views):
                return
            if index in self.waiting:
                region = self.view_by_name[self.waiting[index]]
                if region.full:
                    continue
                del self.waiting[index]
            elif index in self.pending:
                del self.pending[index]
            else:
                continue
            self._attempt(index, now)


def run_scheduler(
    context: ReplayContext,
    forecaster: Forecaster,
    *,
    levels: np.ndarray | None = None,
    progress: Progress | None = None,
) -> PolicyRun:
    """Run the carbon-aware scheduler over the context's workload and trace."""
    return SchedulerSimulation(context, forecaster, levels=levels, progress=progress).run()
