"""The three class rules, as pure functions of what the scheduler knows now.

- `critical`: never waits for carbon. Bound at once in the greenest allowed region
  with room; with no room anywhere it is `Unschedulable` and retried when room frees.
- `standard`: goes to the greenest allowed region. When that region is full the
  task waits there, up to `standard_max_wait_seconds` after its arrival, then takes
  the greenest region with room. A region where the task can never fit (selector,
  taints, affinity) is not worth waiting for and is passed over.
- `deferrable`: sleeps until the cleanest window that the forecast shows before its
  latest start, or starts now when now is at least as clean. Windows are booked in
  the capacity ledger so deferred tasks spread over green hours instead of piling
  into one. From its latest start on, the task is urgent and placed like a
  `critical` one, so it finishes by its deadline whenever any allowed region has
  room.

The daemon and the replay simulator both call `decide`; the caller books and
releases ledger capacity as the decision says (see `policy.decisions`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from carbon_scheduler.config.types import SchedulerSettings
from carbon_scheduler.model import Level, Task, TaskClass
from carbon_scheduler.policy.decisions import Bind, Decision, Defer, Unschedulable, Wait, Window
from carbon_scheduler.policy.energy import facility_power_kw
from carbon_scheduler.policy.ledger import CapacityLedger
from carbon_scheduler.policy.placement import (
    NO_INTENSITY,
    RegionView,
    candidate_regions,
    first_fit,
    find_node,
)
from carbon_scheduler.policy.windows import Outlook, latest_start, plan_window


def decide(
    task: Task,
    now: int,
    regions: Sequence[RegionView],
    settings: SchedulerSettings,
    *,
    outlooks: Mapping[str, Outlook] | None = None,
    ledger: CapacityLedger | None = None,
) -> Decision:
    """Decide what to do with `task` at time `now`, by its class.

    Only `deferrable` tasks use the outlooks and the ledger. Critical and standard
    tasks take physical room even where deferred tasks booked it: measured on the
    demo workload, guarding bookings from them cost far more carbon (they were
    pushed to dirtier regions) than the few deadlines it saved, and a displaced
    deferred task plans again when it wakes.
    """
    if task.task_class is TaskClass.CRITICAL:
        return decide_critical(task, regions)
    if task.task_class is TaskClass.STANDARD:
        return decide_standard(task, now, regions, settings)
    if outlooks is None or ledger is None:
        raise ValueError("deferrable tasks need outlooks and a capacity ledger")
    return decide_deferrable(task, now, regions, settings, outlooks=outlooks, ledger=ledger)


def decide_critical(
    task: Task, regions: Sequence[RegionView], *, reason: str = "greenest region with room"
) -> Bind | Unschedulable:
    """Bind in the greenest allowed region that has room, or report why none has."""
    ranked, reasons = candidate_regions(task, regions)
    region, choice, tried = first_fit(task, ranked)
    reasons.update(tried)
    if region is None:
        return Unschedulable(reasons)
    assert choice.node is not None
    return _bind(region, choice.node, reason)


def decide_standard(task: Task, now: int, regions: Sequence[RegionView], settings: SchedulerSettings) -> Decision:
    """Bind in the greenest allowed region, wait there for room while the wait is
    under the maximum, then take the greenest region with room."""
    ranked, reasons = candidate_regions(task, regions)
    wait_until = task.arrival + settings.standard_max_wait_seconds
    for region in ranked:
        choice = find_node(task, region)
        if choice.node is not None:
            return _bind(region, choice.node, "greenest region")
        reasons[region.name] = choice.reasons
        if choice.transient and region.intensity_g_per_kwh is not None:
            if now < wait_until:
                return Wait(region.name, wait_until, f"waiting for room in the greenest region {region.name}")
            break
    return decide_critical(task, regions, reason="greenest region with room after the maximum wait")


def decide_deferrable(
    task: Task,
    now: int,
    regions: Sequence[RegionView],
    settings: SchedulerSettings,
    *,
    outlooks: Mapping[str, Outlook],
    ledger: CapacityLedger,
) -> Decision:
    """Start now, or defer to the cleanest window with booked room before the
    latest start; from the latest start on, place like a `critical` task."""
    latest = latest_start(task, settings.deadline_margin_seconds)
    if latest is None:
        latest = task.arrival + settings.default_deadline_seconds - task.duration
    if now >= latest:
        return decide_critical(task, regions, reason="deadline near: greenest region with room")

    ranked, reasons = candidate_regions(task, regions)
    usable = {region.name: region for region in ranked if region.name in outlooks}
    for region in ranked:
        if region.name not in outlooks:
            reasons[region.name] = (NO_INTENSITY,)
    if not usable:
        return decide_critical(task, regions, reason="no forecast for any allowed region")

    power = {name: _power(task, region) for name, region in usable.items()}
    # Windows beyond the planning horizon are not priced: the forecast does not
    # reach them, and the task plans again when it wakes.
    last_start = min(latest, now + settings.planning_horizon_hours * 3600)
    window, now_window = None, None
    for headroom in range(settings.deferrable_headroom_pods, -1, -1):
        window, now_window = plan_window(
            task,
            now,
            last_start=last_start,
            outlooks={name: outlooks[name] for name in usable},
            power_kw=power,
            ledger=ledger,
            headroom_pods=headroom,
        )
        if window is not None:
            break
    if window is None:
        # Booked capacity is full until the latest start: start wherever room is now,
        # because waiting cannot make a free window appear.
        return decide_critical(task, regions, reason="no booked room before the deadline: greenest region with room")
    start_now_g = None if now_window is None else now_window.estimated_g
    if window.start > now and start_now_g is not None:
        # A forecast gain smaller than this is within forecast error: waiting for it
        # risks the deadline for nothing, so the task starts now.
        if window.estimated_g >= start_now_g * (1 - settings.defer_min_saving_percent / 100):
            window = now_window
    if window.start > now:
        return Defer(window.start, window, start_now_g, f"cleanest forecast window in {window.region}")

    region = usable[window.region]
    choice = find_node(task, region)
    if choice.node is not None:
        return _bind(region, choice.node, "starting now is the cleanest option", window=window)
    # Booked room but no node fits right now (fragmentation, or a pod that outlived
    # its expected duration): take any region with room instead of waiting.
    return decide_critical(task, regions, reason="cleanest region full: greenest region with room")


def start_early_mask(
    now: int,
    durations: np.ndarray,
    windows: Sequence[Window],
    power_kw: np.ndarray,
    allowed: np.ndarray,
    regions: Sequence[RegionView],
    outlooks: Mapping[str, Outlook],
) -> np.ndarray:
    """For deferred tasks, whether each should start now: True when some allowed
    region is at level `low`, has room, and running there from now is at least as
    clean as the task's planned window under the latest forecast.

    Arrays are per task: `durations` in seconds, `power_kw` and `allowed` of shape
    (tasks, regions) in the order of `regions`. Vectorised over tasks, because it
    runs for every deferred task at every new sample.
    """
    count = len(windows)
    result = np.zeros(count, dtype=bool)
    open_low = [
        column
        for column, region in enumerate(regions)
        if region.level is Level.LOW and region.up and not region.full and region.name in outlooks
    ]
    if count == 0 or not open_low:
        return result

    column_of = {region.name: column for column, region in enumerate(regions)}
    rows = np.arange(count)
    starts = np.fromiter((window.start for window in windows), dtype=float, count=count)
    ends = np.fromiter((window.end for window in windows), dtype=float, count=count)
    plan_columns = np.fromiter((column_of.get(window.region, -1) for window in windows), dtype=np.int64, count=count)

    planned = np.full(count, np.inf)
    for column, region in enumerate(regions):
        outlook = outlooks.get(region.name)
        mask = plan_columns == column
        if outlook is None or not mask.any():
            continue
        integral = np.interp(ends[mask], outlook.knot_times, outlook.knot_values) - np.interp(
            starts[mask], outlook.knot_times, outlook.knot_values
        )
        planned[mask] = power_kw[rows[mask], column] * integral
    # A plan whose region lost its forecast or vanished is always worth redoing.
    result |= plan_columns < 0

    for column in open_low:
        outlook = outlooks[regions[column].name]
        finish = np.interp(now + durations, outlook.knot_times, outlook.knot_values)
        begin = float(np.interp(now, outlook.knot_times, outlook.knot_values))
        now_g = power_kw[:, column] * (finish - begin)
        result |= allowed[:, column] & (now_g <= planned)
    return result


def _power(task: Task, region: RegionView) -> float:
    return facility_power_kw(task.requirements.request, region.spec)


def _bind(region: RegionView, node: str, reason: str, *, window: Window | None = None) -> Bind:
    intensity = region.intensity_g_per_kwh if region.intensity_g_per_kwh is not None else float("nan")
    return Bind(region.name, node, intensity, reason, window)
