"""Replay simulator: properties of the scheduler, baseline and oracle on generated
workloads, cases on hand-made traces with known results, and determinism.

Generated traces are hourly and four days long. Tasks arrive from the second day
on, so the seasonal-naive forecaster always has a full day of history. Checks
recompute capacity from the outcomes alone (which task ran where and when) and
never reuse the simulator's own bookkeeping, so a bookkeeping bug cannot hide
itself.

Starts and ends are half-open: a task occupies [start, end), so a task that ends
at t frees its room for a task that starts at t, as the simulator's event order
(finishes first) does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from carbon_scheduler.carbon.traces import Trace, write_trace
from carbon_scheduler.config.types import Config, RegionSpec, RelativeLevels, SchedulerSettings
from carbon_scheduler.forecasting import SeasonalNaive, make_forecaster
from carbon_scheduler.model import Node, Task, TaskClass
from carbon_scheduler.replay.baseline import run_baseline
from carbon_scheduler.replay.context import ReplayContext
from carbon_scheduler.replay.oracle import run_oracle
from carbon_scheduler.replay.results import PolicyRun, TaskOutcome
from carbon_scheduler.replay.run import ReplayOptions, replay
from carbon_scheduler.replay.simulator import run_scheduler
from carbon_scheduler.replay.summary import summarize, write_summary
from carbon_scheduler.replay.workload_generator import generate_workload

from tests.builders import (
    HOUR,
    T0,
    absolute_levels,
    config,
    hourly_trace,
    node,
    region_spec,
    replay_all,
    sized_region,
    task,
)

DAY = 86_400
START = T0 - T0 % DAY
"""Midnight UTC, so hand-made traces read as clock hours."""
TRACE_DAYS = 4
FIRST_ARRIVAL = START + DAY
REGION_NAMES = ("eu-west", "us-east", "asia-east")
SLOT = 300
"""Slot length of the capacity ledger and of the oracle's time grid, in seconds."""

POLICY_RUNNERS: dict[str, Callable[[ReplayContext], PolicyRun]] = {
    "scheduler": lambda context: run_scheduler(context, SeasonalNaive()),
    "baseline": run_baseline,
    "oracle": run_oracle,
}


# Generated inputs -------------------------------------------------------------


@dataclass(frozen=True)
class Inputs:
    """One generated replay: a trace, a config and tasks sorted by arrival."""

    trace: Trace
    config: Config
    tasks: list[Task]
    trace_seed: int
    """Seed of `random_trace`, printed so a failing example can be rebuilt."""

    def context(self) -> ReplayContext:
        return ReplayContext.build(self.trace, self.config, self.tasks)

    def __repr__(self) -> str:
        regions = ", ".join(
            f"{spec.name}(max_pods={spec.max_pods}, nodes={[_node_text(n) for n in spec.nodes]})"
            for spec in self.config.regions
        )
        tasks = "\n  ".join(_task_text(t) for t in self.tasks)
        return f"Inputs(regions: {regions}; random_trace seed {self.trace_seed}\n  {tasks})"


def _node_text(n: Node) -> str:
    return f"{n.name}:{n.allocatable.milli_cpu}m/{n.allocatable.memory // 2**20}Mi/{n.allocatable_pods}pods"


def _task_text(t: Task) -> str:
    request = t.requirements.request
    return (
        f"{t.id} {t.task_class.value} arrival=+{t.arrival - FIRST_ARRIVAL}s duration={t.duration}s "
        f"deadline=arrival+{None if t.deadline is None else t.deadline - t.arrival}s cpu={request.milli_cpu}m "
        f"memory={request.memory // 2**20}Mi home={t.home_region} allowed={t.allowed_regions}"
    )


def random_trace(seed: int, names: Sequence[str]) -> Trace:
    """Hourly intensities drawn uniformly from 20 to 600 g/kWh: no daily pattern,
    so seasonal-naive forecasts are often wrong."""
    rng = np.random.default_rng(seed)
    return hourly_trace({name: rng.uniform(20, 600, TRACE_DAYS * 24) for name in names}, start=START)


@st.composite
def small_regions(draw) -> tuple[RegionSpec, ...]:
    """One to three regions with small nodes, so pod caps, node pod counts, CPU and
    memory all bind at times."""
    count = draw(st.integers(1, 3))
    levels = draw(st.sampled_from([RelativeLevels(), absolute_levels(150.0, 400.0)]))
    specs = []
    for name in REGION_NAMES[:count]:
        nodes = [
            node(
                f"{name}-{i}",
                cpu=draw(st.sampled_from([1, 2, 4])),
                memory_gi=draw(st.sampled_from([2, 4, 8])),
                pods=draw(st.integers(1, 4)),
            )
            for i in range(draw(st.integers(1, 2)))
        ]
        specs.append(sized_region(name, nodes, max_pods=draw(st.integers(1, 4)), levels=levels))
    return tuple(specs)


def generated_task(names: Sequence[str], classes: Sequence[str], span: int) -> st.SearchStrategy[Task]:
    @st.composite
    def build(draw) -> Task:
        task_class = draw(st.sampled_from(classes))
        arrival = FIRST_ARRIVAL + draw(st.integers(0, span - 1))
        duration = 60 * draw(st.integers(1, 240))
        deadline = None
        if task_class == "deferrable":
            deadline = arrival + duration + 60 * draw(st.integers(0, 20 * 60))
        allowed = draw(st.none() | st.lists(st.sampled_from(names), min_size=1, max_size=len(names), unique=True))
        return task(
            task_class,
            arrival=arrival,
            duration=duration,
            home=draw(st.sampled_from(names)),
            cpu=draw(st.sampled_from([0.25, 0.5, 1, 2])),
            memory_gi=draw(st.sampled_from([0.5, 1, 2, 4])),
            deadline=deadline,
            allowed=None if allowed is None else tuple(allowed),
        )

    return build()


def numbered(tasks: Iterable[Task]) -> list[Task]:
    """Give tasks unique ids and sort them by arrival, as workload files are."""
    renamed = [replace(t, id=f"t{i:02d}") for i, t in enumerate(tasks)]
    return sorted(renamed, key=lambda t: (t.arrival, t.id))


@st.composite
def mixed_inputs(
    draw, *, classes: Sequence[str] = ("critical", "standard", "deferrable"), max_tasks: int = 25
) -> Inputs:
    """Up to `max_tasks` tasks of `classes` arriving within six hours (crowded) or
    two days, on small regions and a random trace."""
    specs = draw(small_regions())
    names = [spec.name for spec in specs]
    span = draw(st.sampled_from([6 * HOUR, 2 * DAY]))
    tasks = draw(st.lists(generated_task(names, classes, span), min_size=1, max_size=max_tasks))
    seed = draw(st.integers(0, 2**32 - 1))
    return Inputs(random_trace(seed, names), config(*specs), numbered(tasks), seed)


# Capacity recomputed from outcomes ---------------------------------------------


def running_at(outcomes: Iterable[TaskOutcome], time: int, *, besides: TaskOutcome | None = None) -> list[TaskOutcome]:
    return [o for o in outcomes if o is not besides and o.start is not None and o.start <= time < o.end]


def node_has_room(candidate: Task, spec_node: Node, on_node: Sequence[TaskOutcome]) -> bool:
    """Whether `candidate` fits `spec_node` next to the tasks running on it, by CPU,
    memory and pod count."""
    request = candidate.requirements.request
    cpu = sum(o.task.requirements.request.milli_cpu for o in on_node) + request.milli_cpu
    memory = sum(o.task.requirements.request.memory for o in on_node) + request.memory
    return (
        cpu <= spec_node.allocatable.milli_cpu
        and memory <= spec_node.allocatable.memory
        and len(on_node) + 1 <= spec_node.allocatable_pods
    )


def region_has_room(candidate: Task, spec: RegionSpec, running: Sequence[TaskOutcome]) -> bool:
    """Whether `candidate` may start in `spec` now: under the pod cap and with a
    node that fits it."""
    in_region = [o for o in running if o.region == spec.name]
    if len(in_region) >= spec.max_pods:
        return False
    return any(node_has_room(candidate, n, [o for o in in_region if o.node == n.name]) for n in spec.nodes)


def capacity_violations(run: PolicyRun, cfg: Config) -> list[str]:
    """Every interval edge at which a region runs more task pods than `max_pods` or
    a node runs pods that request more CPU, memory or pods than it has."""
    started = [o for o in run.outcomes if o.start is not None]
    edges = sorted({o.start for o in started} | {o.end for o in started})
    problems = []
    for time in edges:
        running = running_at(started, time)
        for spec in cfg.regions:
            in_region = [o for o in running if o.region == spec.name]
            if len(in_region) > spec.max_pods:
                problems.append(f"{spec.name} runs {len(in_region)} pods > max_pods {spec.max_pods} at {time}")
            for n in spec.nodes:
                on_node = [o for o in in_region if o.node == n.name]
                cpu = sum(o.task.requirements.request.milli_cpu for o in on_node)
                memory = sum(o.task.requirements.request.memory for o in on_node)
                if cpu > n.allocatable.milli_cpu or memory > n.allocatable.memory or len(on_node) > n.allocatable_pods:
                    problems.append(f"{n.name} runs {len(on_node)} pods requesting {cpu}m and {memory} bytes at {time}")
    return problems


# Slot-grid room, for the oracle -------------------------------------------------


def slot_range(start: int, end: int, origin: int) -> range:
    """Slots that [start, end) touches on the grid of SLOT seconds from `origin`."""
    first = (start - origin) // SLOT
    last = -((origin - end) // SLOT)
    return range(first, max(last, first + 1))


def oracle_candidates(first: int, last: int, origin: int) -> list[int]:
    """Start times the oracle tries in [first, last]: both ends and every slot
    boundary between them."""
    grid = range(origin + ((first - origin) // SLOT + 1) * SLOT, last + 1, SLOT)
    return sorted({first, last, *grid})


def slot_room(candidate: Task, start: int, spec: RegionSpec, others: Sequence[TaskOutcome], origin: int) -> bool:
    """Whether `candidate` started at `start` in `spec` fits every slot of its run
    under the pod cap and on one node, counting each other task in every slot it
    touches (as the oracle books). Counting tasks the oracle planned later as well
    only makes room rarer, so an assert that relies on room stays sound."""
    needed_slots = set(slot_range(start, start + candidate.duration, origin))
    in_region = [
        o
        for o in others
        if o.region == spec.name and o.start is not None and needed_slots & set(slot_range(o.start, o.end, origin))
    ]
    for slot in needed_slots:
        in_slot = [o for o in in_region if slot in slot_range(o.start, o.end, origin)]
        if len(in_slot) + 1 > spec.max_pods:
            return False

    def node_fits_every_slot(n: Node) -> bool:
        on_node = [o for o in in_region if o.node == n.name]
        return all(
            node_has_room(candidate, n, [o for o in on_node if slot in slot_range(o.start, o.end, origin)])
            for slot in needed_slots
        )

    return any(node_fits_every_slot(n) for n in spec.nodes)


def oracle_had_room(candidate: Task, first: int, last: int, run: PolicyRun, cfg: Config, origin: int) -> bool:
    """Whether some start in [first, last] and some allowed region had room for
    `candidate` on the oracle's grid, given every other task's outcome."""
    outcome_of = {o.task.id: o for o in run.outcomes}
    others = [o for o in run.outcomes if o is not outcome_of[candidate.id]]
    return any(
        slot_room(candidate, start, spec, others, origin)
        for start in oracle_candidates(first, last, origin)
        for spec in cfg.regions
        if candidate.allows(spec.name)
    )


def test_capacity_check_finds_overflow() -> None:
    """The capacity check itself reports a region over its pod cap and a node over
    its CPU, so the properties below can fail."""
    trace = hourly_trace({"eu-west": [100.0] * 24}, start=START)
    cfg = config(sized_region("eu-west", [node("eu-west-0", cpu=1, memory_gi=2, pods=3)], max_pods=2))
    tasks = [task("critical", id=f"c{i}", arrival=START, cpu=0.5, memory_gi=0.5) for i in range(3)]
    context = ReplayContext.build(trace, cfg, tasks)
    run = PolicyRun("hand-made", tuple(context.outcome(t, "eu-west", "eu-west-0", START) for t in context.tasks))

    problems = capacity_violations(run, cfg)

    assert f"eu-west runs 3 pods > max_pods 2 at {START}" in problems
    assert f"eu-west-0 runs 3 pods requesting 1500m and {3 * 2**29} bytes at {START}" in problems


def test_room_checks_follow_intervals() -> None:
    """Room frees exactly when a run ends, and on the oracle's grid the slot in
    which a run ends stays taken until the next slot boundary."""
    trace = hourly_trace({"eu-west": [100.0] * 24}, start=START)
    spec = region_spec("eu-west", max_pods=1)
    cfg = config(spec)
    running = task("critical", id="running", arrival=START)
    candidate = task("critical", id="candidate", arrival=START + 1800, duration=600)
    context = ReplayContext.build(trace, cfg, [running, candidate])
    outcome = context.outcome(running, "eu-west", "eu-west-0", START + 1810)  # ends at 01:30:10

    assert not region_has_room(candidate, spec, running_at([outcome], START + HOUR))
    assert region_has_room(candidate, spec, running_at([outcome], START + HOUR + 1810))
    assert not slot_room(candidate, START + HOUR + 1810, spec, [outcome], START)
    assert slot_room(candidate, START + HOUR + 2100, spec, [outcome], START)
    assert slot_room(candidate, START + 1200, spec, [outcome], START)
    assert oracle_candidates(START + 10, START + 900, START) == [START + 10, START + 300, START + 600, START + 900]


# Properties ---------------------------------------------------------------------

PROPERTY_SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("policy", list(POLICY_RUNNERS))
@PROPERTY_SETTINGS
@given(inputs=mixed_inputs())
def test_capacity_never_exceeded(policy: str, inputs: Inputs) -> None:
    """No region runs more than `max_pods` task pods at once and no node runs pods
    that request more CPU, memory or pods than it has, under every policy."""
    run = POLICY_RUNNERS[policy](inputs.context())

    assert capacity_violations(run, inputs.config) == []


@pytest.mark.parametrize("policy", list(POLICY_RUNNERS))
@PROPERTY_SETTINGS
@given(inputs=mixed_inputs())
def test_outcomes_respect_task(policy: str, inputs: Inputs) -> None:
    """Every task starts in an allowed region on one of its nodes, or never starts.
    No task starts before it arrives, and every run lasts exactly its duration."""
    run = POLICY_RUNNERS[policy](inputs.context())
    nodes = {spec.name: {n.name for n in spec.nodes} for spec in inputs.config.regions}

    assert [o.task.id for o in run.outcomes] == [t.id for t in inputs.tasks]
    for outcome in run.outcomes:
        if outcome.start is None:
            assert (outcome.region, outcome.node, outcome.end) == (None, None, None)
            continue
        assert outcome.task.allows(outcome.region), outcome
        assert outcome.node in nodes[outcome.region], outcome
        assert outcome.start >= outcome.task.arrival, outcome
        assert outcome.end - outcome.start == outcome.task.duration, outcome


@PROPERTY_SETTINGS
@given(inputs=mixed_inputs())
def test_critical_waits_only_without_room(inputs: Inputs) -> None:
    """A critical task that did not start at its arrival found every allowed region
    at its pod cap or without a fitting node at that instant.

    Room is recomputed from the other tasks running at the arrival. Tasks that
    started at that same second after it count too, which can only make regions
    look fuller, so the check never blames the scheduler wrongly."""
    run = run_scheduler(inputs.context(), SeasonalNaive())

    for outcome in run.by_class(TaskClass.CRITICAL):
        critical = outcome.task
        if outcome.start == critical.arrival:
            continue
        running = running_at(run.outcomes, critical.arrival, besides=outcome)
        open_regions = [
            spec.name
            for spec in inputs.config.regions
            if critical.allows(spec.name) and region_has_room(critical, spec, running)
        ]
        assert open_regions == [], f"{critical.id} waited from {critical.arrival} to {outcome.start}"


@PROPERTY_SETTINGS
@given(inputs=mixed_inputs())
def test_oracle_respects_class_freedoms(inputs: Inputs) -> None:
    """The oracle starts a critical task at its arrival, a standard task within
    `standard_max_wait_seconds` and a deferrable task early enough for its deadline
    whenever its grid of 5-minute slots has room for that.

    The oracle books every slot that a run touches, so room is judged on that grid.
    A task that arrives 10 s after a slot began can find the slot full even when a
    pod finished at its arrival."""
    run = run_oracle(inputs.context())
    settings_ = inputs.config.scheduler
    origin = inputs.trace.start

    for outcome in run.outcomes:
        item = outcome.task
        if item.task_class is TaskClass.CRITICAL:
            last, on_time = item.arrival, outcome.start == item.arrival
        elif item.task_class is TaskClass.STANDARD:
            last = item.arrival + settings_.standard_max_wait_seconds
            on_time = outcome.start is not None and outcome.start <= last
        else:
            assert item.deadline is not None
            last = max(item.arrival, item.deadline - item.duration)
            on_time = not outcome.missed_deadline
        if not on_time:
            assert not oracle_had_room(item, item.arrival, last, run, inputs.config, origin), (
                f"{item.id} ({item.task_class.value}) started at {outcome.start} though room existed "
                f"between {item.arrival} and {last}"
            )


# Deadlines on workloads the scheduler can always serve ---------------------------


def window_overlap_fits(tasks: Sequence[Task], pods: int) -> bool:
    """Whether at no instant more than `pods` tasks are between their arrival and
    their deadline, with both rounded out to the 5-minute slot grid.

    This is the earliest-deadline-first check that stays true whatever start each
    task picks inside its window. Every task may be running at any moment of its
    window, so an EDF schedule (in fact any schedule) never finds the pods taken.
    """
    events = []
    for item in tasks:
        assert item.deadline is not None
        events.append((item.arrival - (item.arrival - START) % SLOT, 1))
        events.append((START + -(-(item.deadline - START) // SLOT) * SLOT, -1))
    running = 0
    for _, change in sorted(events):
        running += change
        if running > pods:
            return False
    return True


@st.composite
def feasible_deferrable_inputs(draw) -> Inputs:
    """Deferrable tasks of 500m CPU and 1Gi, which fit any node of the default
    regions, arriving within 12 hours, with at least the deadline margin of slack,
    and whose windows never overlap more than the regions' pod caps allow."""
    caps = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3))
    names = REGION_NAMES[: len(caps)]
    settings_ = SchedulerSettings()
    rows = draw(
        st.lists(
            st.tuples(
                st.integers(0, 12 * HOUR),
                st.integers(5, 180),
                st.integers(0, 6 * 60),
                st.sampled_from(names),
            ),
            min_size=1,
            max_size=20,
        )
    )
    tasks = []
    for offset, minutes, slack_minutes, home in rows:
        arrival = FIRST_ARRIVAL + offset
        duration = 60 * minutes
        deadline = arrival + duration + settings_.deadline_margin_seconds + 60 * slack_minutes
        tasks.append(
            task("deferrable", arrival=arrival, duration=duration, home=home, cpu=0.5, memory_gi=1, deadline=deadline)
        )
    tasks = numbered(tasks)
    assume(window_overlap_fits(tasks, sum(caps)))
    specs = [region_spec(name, max_pods=cap) for name, cap in zip(names, caps)]
    seed = draw(st.integers(0, 2**32 - 1))
    return Inputs(random_trace(seed, names), config(*specs), tasks, seed)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(inputs=feasible_deferrable_inputs())
def test_feasible_deadlines_always_met(inputs: Inputs) -> None:
    """On deferrable workloads whose task windows never overlap beyond the pod caps,
    neither the scheduler nor the oracle misses a deadline.

    A weaker condition, that starting every task at its arrival fits, is not enough
    for an online scheduler. A task deferred into a clean hour takes a pod that a
    task arriving later with little slack needs, and the scheduler cannot see that
    task coming (test_deferral_can_crowd_out_later_arrival shows a case)."""
    context = inputs.context()
    scheduler = run_scheduler(context, SeasonalNaive())
    oracle = run_oracle(context)

    assert [o.task.id for o in scheduler.outcomes if o.missed_deadline] == []
    assert [o.task.id for o in oracle.outcomes if o.missed_deadline] == []


def fits_when_started_at_arrival(tasks: Sequence[Task], pods: int) -> bool:
    """Whether starting every task at its arrival keeps at most `pods` running in
    every 5-minute slot."""
    events = []
    for item in tasks:
        events.append((item.arrival - (item.arrival - START) % SLOT, 1))
        end = item.arrival + item.duration
        events.append((START + -(-(end - START) // SLOT) * SLOT, -1))
    running = 0
    for _, change in sorted(events):
        running += change
        if running > pods:
            return False
    return True


# Twelve deferrable tasks in three regions of max_pods 3. Starting each at its
# arrival meets every deadline. Random search found the case, and dropping tasks
# one at a time while an oracle task stayed late reduced it.
ORACLE_MISS_TRACE = {
    "eu-west": [571, 113, 427, 159, 376, 168, 287, 248, 58, 383, 412, 530],
    "us-east": [381, 234, 475, 571, 209, 178, 543, 351, 279, 219, 499, 123],
    "asia-east": [117, 416, 332, 353, 49, 425, 370, 421, 147, 482, 289, 47],
}
ORACLE_MISS_TASKS = [  # id, arrival, duration and deadline in seconds from the trace start
    ("d013", 6142, 7260, 17455),
    ("d021", 6571, 2880, 13110),
    ("d024", 7769, 7860, 19772),
    ("d012", 8830, 10140, 22772),
    ("d030", 10277, 6720, 20866),
    ("d006", 12229, 8700, 24870),
    ("d027", 12805, 5640, 22244),
    ("d029", 13703, 6960, 24681),
    ("d020", 13899, 10200, 27762),
    ("d003", 14151, 5520, 23323),
    ("d002", 14291, 7860, 26105),
    ("d007", 16710, 1740, 22157),
]


def test_oracle_meets_deadlines_that_fit_at_arrival() -> None:
    """The oracle plans again with late tasks moved to the front until none is
    late. This workload needs five such passes before every deadline is met."""
    trace = hourly_trace({name: [float(v) for v in values] for name, values in ORACLE_MISS_TRACE.items()}, start=START)
    cfg = config(*(region_spec(name, max_pods=3) for name in ORACLE_MISS_TRACE))
    tasks = [
        task("deferrable", id=name, arrival=START + a, duration=d, deadline=START + dl, cpu=0.5, memory_gi=1)
        for name, a, d, dl in ORACLE_MISS_TASKS
    ]
    assert fits_when_started_at_arrival(tasks, 9)
    run = run_oracle(ReplayContext.build(trace, cfg, tasks))

    assert [o.task.id for o in run.outcomes if o.missed_deadline] == []


def test_deferral_can_crowd_out_later_arrival() -> None:
    """Documents why the deadline property needs non-overlapping windows.

    One region with one pod: task a (2 hours, deadline in 14 hours) waits for the
    clean hours 03:00-05:00. Task b arrives at 03:01 with a 30-minute run and one
    minute more than the deadline margin of slack. Starting both at arrival would
    meet both deadlines (the baseline does). But task a already runs in the only
    pod, so b starts at 05:00 and ends after its deadline at 04:32."""
    day = [300.0] * 24
    day[3] = day[4] = 50.0
    trace = hourly_trace({"eu-west": day * 3}, start=START)
    cfg = config(region_spec("eu-west", max_pods=1))
    margin = cfg.scheduler.deadline_margin_seconds
    a = task("deferrable", id="a", arrival=FIRST_ARRIVAL, duration=2 * HOUR, deadline=FIRST_ARRIVAL + 14 * HOUR)
    b_arrival = FIRST_ARRIVAL + 3 * HOUR + 60
    b = task("deferrable", id="b", arrival=b_arrival, duration=1800, deadline=b_arrival + 1800 + margin + 60)

    runs = replay_all(trace, cfg, [a, b])
    scheduler = {o.task.id: o for o in runs["scheduler"].outcomes}
    baseline = {o.task.id: o for o in runs["baseline"].outcomes}

    assert fits_when_started_at_arrival([a, b], 1)
    assert scheduler["a"].start == FIRST_ARRIVAL + 3 * HOUR
    assert scheduler["b"].start == FIRST_ARRIVAL + 5 * HOUR
    assert scheduler["b"].missed_deadline
    assert not baseline["b"].missed_deadline
    assert not any(o.missed_deadline for o in runs["oracle"].outcomes)


# Scheduler against the carbon-blind baseline -----------------------------------

EMISSIONS_TOLERANCE = 0.15
"""Largest excess of the scheduler's emissions over the baseline's that
test_scheduler_close_to_baseline accepts, as a fraction of the baseline."""


def daily_trace(rng: np.random.Generator, names: Sequence[str]) -> Trace:
    """Four days of a daily cosine per region, with day-to-day changes that make
    yesterday a poor forecast of today.

    Each region has a mean of 100-450 g/kWh and a swing of up to 60 % of it. Every
    day after the first shifts the phase by up to `jump` hours (up to 12, which
    turns yesterday's dip into today's peak) and the level by up to `drift`, and
    every hour carries multiplicative noise of up to `noise`.
    """
    noise, drift, jump = rng.uniform(0, 0.5), rng.uniform(0, 0.3), rng.uniform(0, 12)
    hours = np.arange(24)
    values = {}
    for name in names:
        mean = rng.uniform(100, 450)
        swing = rng.uniform(0, 0.6) * mean
        phase = rng.uniform(0, 24)
        days = []
        for day in range(TRACE_DAYS):
            shift = rng.uniform(-jump, jump) if day else 0.0
            level = mean * (1 + rng.uniform(-drift, drift))
            days.append(level + swing * np.cos(2 * np.pi * (hours - phase - shift) / 24))
        series = np.concatenate(days) * rng.uniform(1 - noise, 1 + noise, TRACE_DAYS * 24)
        values[name] = np.maximum(series, 1.0)
    return hourly_trace(values, start=START)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**32 - 1), forecaster=st.sampled_from(["seasonal-naive", "persistence"]))
def test_scheduler_close_to_baseline(seed: int, forecaster: str) -> None:
    """The scheduler emits at most 15 % more than the carbon-blind baseline on the
    same workload of at least 20 generated tasks, with room for every task at once.

    The scheduler can lose to the baseline in two ways that this test keeps. A
    deferred task waits for a window that the forecast got wrong, because
    seasonal-naive repeats yesterday and these traces shift phase by up to 12 hours
    from one day to the next. Critical and standard tasks rank regions by the
    current hour's intensity, and a run of several hours can outlast that ranking.
    Over 6,000 seeds of this test's generator the worst ratio was 1.03 with
    seasonal-naive forecasts, and over 3,000 seeds 1.08 with persistence forecasts.
    These are estimates for this family of inputs, not a bound.

    Two cases stay out because their loss is not forecast error. With pod caps that
    bind, a standard task takes a dirtier region after its maximum wait while the
    baseline queues at home for hours. That cost 9 % at most over 1,500 seeds with
    caps of 1 to 3, but 42 % on a heavier workload with runs of up to 4 hours. On
    workloads of a few tasks one unlucky task decides the ratio (up to 4.3 on
    hourly noise without a daily pattern). The seed drives numpy instead of
    Hypothesis strategies, so Hypothesis does not shrink toward such tiny
    workloads, and `derandomize` fixes the sample.
    """
    rng = np.random.default_rng(seed)
    names = REGION_NAMES
    trace = daily_trace(rng, names)
    roomy = config(*(sized_region(name, [node(f"{name}-0", cpu=64, memory_gi=256)], max_pods=100) for name in names))
    tasks = generate_workload(
        roomy, start=FIRST_ARRIVAL, end=FIRST_ARRIVAL + 2 * DAY, seed=int(rng.integers(2**31)), tasks_per_hour=0.8
    )
    assume(len(tasks) >= 20)
    context = ReplayContext.build(trace, roomy, tasks)

    scheduler = run_scheduler(context, make_forecaster(forecaster)).emissions_g
    baseline = run_baseline(context).emissions_g

    assert scheduler <= baseline * (1 + EMISSIONS_TOLERANCE), f"scheduler {scheduler:.3f} g, baseline {baseline:.3f} g"


# Input order ------------------------------------------------------------------


def test_baseline_respects_cap_for_unsorted_tasks() -> None:
    """The baseline walks tasks in arrival order. Given f, l, g in that list order,
    walking them as listed would free f's pod when l arrives at 03:00 and then
    start g at 01:00 beside f, two pods in a region of max_pods 1."""
    trace = hourly_trace({"eu-west": [100.0] * 12, "us-east": [100.0] * 12}, start=START)
    cfg = config(region_spec("eu-west", max_pods=1), region_spec("us-east", max_pods=1))
    tasks = [
        task("critical", id="f", arrival=START, duration=2 * HOUR, home="eu-west"),
        task("critical", id="l", arrival=START + 3 * HOUR, duration=HOUR, home="us-east"),
        task("critical", id="g", arrival=START + HOUR, duration=HOUR, home="eu-west"),
    ]

    run = run_baseline(ReplayContext.build(trace, cfg, tasks))

    assert capacity_violations(run, cfg) == []
    assert {o.task.id: o.start for o in run.outcomes}["g"] == START + 2 * HOUR


def test_scheduler_reads_current_intensity_for_unsorted_tasks() -> None:
    """The scheduler keeps reading new trace steps until the last arrival, not
    until the arrival of the last task in list order. Otherwise `late` would be
    placed on the intensities of 00:00, when eu-west was the cleaner region."""
    eu_west = [100.0] * 2 + [500.0] * 10
    trace = hourly_trace({"eu-west": eu_west, "us-east": [300.0] * 12}, start=START)
    cfg = config(region_spec("eu-west"), region_spec("us-east"))
    late = task("critical", id="late", arrival=START + 5 * HOUR, duration=600)
    early = task("critical", id="early", arrival=START, duration=600)

    run = run_scheduler(ReplayContext.build(trace, cfg, [late, early]), SeasonalNaive())
    placed = {o.task.id: o.region for o in run.outcomes}

    assert placed == {"early": "eu-west", "late": "us-east"}


# Hand-made traces with known results -------------------------------------------


def repeated_day(day: Sequence[float], days: int = 3) -> list[float]:
    """The same 24 hourly values every day, so seasonal-naive forecasts are exact."""
    assert len(day) == 24
    return list(day) * days


def day_with(base: float, **hours: float) -> list[float]:
    """24 hourly values of `base`, except `h5=50.0` style overrides by hour."""
    values = [base] * 24
    for key, value in hours.items():
        values[int(key[1:])] = value
    return values


def at(hour: float) -> int:
    """Time `hour` hours into the second day of a hand-made trace."""
    return FIRST_ARRIVAL + round(hour * HOUR)


LOW_BELOW_100 = absolute_levels(100.0, 400.0)


def test_deferrable_starts_at_known_dip() -> None:
    """A deferrable task arriving at 00:30 waits for eu-west's one clean hour at
    05:00, which seasonal-naive forecasts exactly, and starts on the hour."""
    trace = hourly_trace(
        {
            "eu-west": repeated_day(day_with(300.0, h5=50.0)),
            "us-east": repeated_day(day_with(350.0)),
        },
        start=START,
    )
    cfg = config(region_spec("eu-west", levels=LOW_BELOW_100), region_spec("us-east", levels=LOW_BELOW_100))
    item = task("deferrable", arrival=at(0.5), duration=HOUR, deadline=at(12))

    [outcome] = run_scheduler(ReplayContext.build(trace, cfg, [item]), SeasonalNaive()).outcomes

    assert outcome.region == "eu-west"
    assert outcome.start == at(5)
    assert outcome.end == at(6)


def test_critical_waits_for_first_finish() -> None:
    """With both regions at their pod cap of 1, a critical task waits and starts
    the moment the first running task ends, in the region that task left."""
    trace = hourly_trace({"eu-west": [100.0] * 72, "us-east": [200.0] * 72}, start=START)
    cfg = config(region_spec("eu-west", max_pods=1), region_spec("us-east", max_pods=1))
    tasks = [
        task("critical", id="long", arrival=at(0), duration=2 * HOUR),
        task("critical", id="short", arrival=at(0), duration=HOUR, home="us-east"),
        task("critical", id="late", arrival=at(10 / 60), duration=1800),
    ]

    run = run_scheduler(ReplayContext.build(trace, cfg, tasks), SeasonalNaive())
    placed = {o.task.id: (o.region, o.start) for o in run.outcomes}

    assert placed == {
        "long": ("eu-west", at(0)),
        "short": ("us-east", at(0)),
        "late": ("us-east", at(1)),
    }


@dataclass
class StandardCase:
    name: str
    blockers: list[tuple[float, float]]
    """Critical tasks (arrival hour, run hours) that take the regions greenest first."""
    region: str
    start: float


STANDARD_CASES = [
    StandardCase("blocker outlasts the wait: next region", [(0, 2)], "us-east", 10 / 60 + 0.25),
    StandardCase("room frees within the wait: stays", [(0, 20 / 60)], "eu-west", 20 / 60),
    StandardCase("every region full after the wait: first finish", [(0, 2), (0, 1)], "us-east", 1),
]


@pytest.mark.parametrize("case", STANDARD_CASES, ids=lambda case: case.name)
def test_standard_waits_then_moves(case: StandardCase) -> None:
    """A standard task arriving at 00:10 waits for the greenest region (eu-west,
    max_pods 1) for at most standard_max_wait_seconds (900 s), then takes the
    greenest region with room."""
    trace = hourly_trace({"eu-west": [100.0] * 72, "us-east": [200.0] * 72}, start=START)
    cfg = config(
        region_spec("eu-west", max_pods=1), region_spec("us-east", max_pods=1), standard_max_wait_seconds=900
    )
    blockers = [
        task("critical", id=f"blocker-{i}", arrival=at(hour), duration=round(hours * HOUR))
        for i, (hour, hours) in enumerate(case.blockers)
    ]
    standard = task("standard", id="standard", arrival=at(10 / 60), duration=HOUR)

    run = run_scheduler(ReplayContext.build(trace, cfg, [*blockers, standard]), SeasonalNaive())
    outcome = {o.task.id: o for o in run.outcomes}["standard"]

    assert outcome.region == case.region
    assert outcome.start == at(case.start)


def test_deferred_tasks_spread_over_two_clean_hours() -> None:
    """Four deferrable tasks share a clean region with a pod cap of 2. The first two
    book the cleanest hour (05:00, 50 g/kWh). The capacity ledger then sends the
    other two to the second-cleanest hour, 04:00 (60 g/kWh), which comes before it.
    Planning without the ledger would put all four at 05:00, and the two that find
    no room there would only get the dirty hours after it."""
    trace = hourly_trace(
        {
            "eu-west": repeated_day(day_with(300.0, h4=60.0, h5=50.0)),
            "us-east": repeated_day(day_with(500.0)),
        },
        start=START,
    )
    cfg = config(
        region_spec("eu-west", max_pods=2, levels=LOW_BELOW_100),
        region_spec("us-east", max_pods=2, levels=LOW_BELOW_100),
    )
    tasks = [
        task("deferrable", id=f"d{i}", arrival=at(minute / 60), duration=HOUR, deadline=at(12))
        for i, minute in enumerate((10, 20, 30, 40))
    ]

    run = run_scheduler(ReplayContext.build(trace, cfg, tasks), SeasonalNaive())
    placed = {o.task.id: (o.region, o.start) for o in run.outcomes}

    assert placed == {
        "d0": ("eu-west", at(5)),
        "d1": ("eu-west", at(5)),
        "d2": ("eu-west", at(4)),
        "d3": ("eu-west", at(4)),
    }


@dataclass
class EarlyCase:
    name: str
    eu_west_at_2: float
    """eu-west's intensity at 02:00 on the replayed day; the day before it was 300."""
    region: str
    start: float


EARLY_CASES = [
    EarlyCase("no surprise: planned window", 300.0, "us-east", 5),
    EarlyCase("low and cleaner than plan: starts early", 30.0, "eu-west", 2),
    EarlyCase("low but dirtier than plan: keeps plan", 80.0, "us-east", 5),
]


@pytest.mark.parametrize("case", EARLY_CASES, ids=lambda case: case.name)
def test_early_start_when_region_turns_low(case: EarlyCase) -> None:
    """A deferrable task plans us-east's 05:00 dip (40 g/kWh), which yesterday's
    values forecast. When eu-west turns `low` (below 100 g/kWh) at 02:00 without
    warning, the task starts there at once if running there is at least as clean
    as the plan."""
    history = day_with(300.0)
    replayed = day_with(300.0, h2=case.eu_west_at_2)
    trace = hourly_trace(
        {
            "eu-west": history + replayed + history,
            "us-east": repeated_day(day_with(300.0, h5=40.0)),
        },
        start=START,
    )
    cfg = config(region_spec("eu-west", levels=LOW_BELOW_100), region_spec("us-east", levels=LOW_BELOW_100))
    item = task("deferrable", arrival=at(0.5), duration=HOUR, deadline=at(12))

    [outcome] = run_scheduler(ReplayContext.build(trace, cfg, [item]), SeasonalNaive()).outcomes

    assert outcome.region == case.region
    assert outcome.start == at(case.start)


# Determinism ------------------------------------------------------------------


def test_summary_identical_across_runs_and_jobs(tmp_path) -> None:
    """The JSON summary of the same replay is byte-identical across two runs in one
    process and a run split over two worker processes."""
    rng = np.random.default_rng(2024)
    days = 12  # a week of history, two days of workload, two days of tail
    trace = hourly_trace({name: rng.uniform(20, 600, days * 24) for name in REGION_NAMES}, start=START)
    trace_path = tmp_path / "trace.csv"
    write_trace(trace, trace_path)
    cfg = config(*(region_spec(name, max_pods=2) for name in REGION_NAMES))
    options = ReplayOptions(trace=trace_path, seed=11, days=2)

    texts = []
    for run_index, jobs in enumerate((1, 1, 2)):
        result = replay(options, cfg, jobs=jobs)
        path = write_summary(summarize(result), tmp_path / f"summary-{run_index}.json")
        texts.append(path.read_bytes())

    summary = json.loads(texts[0])
    assert summary["tasks"] > 100
    assert summary["per_class"]["deferrable"]["tasks"] > 0
    assert texts[1] == texts[0]
    assert texts[2] == texts[0]
