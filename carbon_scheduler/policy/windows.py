"""Window planning for `deferrable` tasks.

An `Outlook` is what the planner knows of one region at a decision: the measured
intensity of the current step followed by a forecast of the next steps. The
planner prices every candidate start (now, and each ledger slot boundary up to the
task's latest start) in every allowed region as power * PUE * integrated
intensity, keeps the candidates whose whole run still has booked room in the
`CapacityLedger`, and returns the cheapest. Ties go to the earlier start, because
starting earlier leaves more slack before the deadline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from carbon_scheduler.policy.decisions import Window
from carbon_scheduler.policy.ledger import CapacityLedger
from carbon_scheduler.model import Task


@dataclass(frozen=True, slots=True)
class Outlook:
    """Known and forecast intensity of one region from the current step on.

    `values[0]` is the measured intensity of the step that starts at `origin`;
    `values[k]` is the forecast for the step starting at `origin + k * step_seconds`.
    Past the last value the last value is held, so a window that runs beyond the
    forecast is still priced (an estimate that grows rougher with length).
    """

    region: str
    origin: int
    step_seconds: int
    values: np.ndarray
    prefix: np.ndarray
    knot_times: np.ndarray
    knot_values: np.ndarray

    @classmethod
    def build(cls, region: str, origin: int, step_seconds: int, current: float, forecast: np.ndarray) -> Outlook:
        values = np.empty(len(forecast) + 1, dtype=float)
        values[0] = current
        values[1:] = forecast
        step_hours = step_seconds / 3600.0
        prefix = np.zeros(values.size + 1, dtype=float)
        np.cumsum(values * step_hours, out=prefix[1:])
        # The cumulative integral is piecewise linear with a knot at every step
        # boundary; one more knot far out holds the last value past the forecast.
        far = 10 * 365 * 86_400
        knot_times = origin + step_seconds * np.arange(values.size + 2, dtype=float)
        knot_times[-1] = knot_times[-2] + far
        knot_values = np.append(prefix, prefix[-1] + far / 3600.0 * values[-1])
        return cls(region, origin, step_seconds, values, prefix, knot_times, knot_values)

    @property
    def end(self) -> int:
        return self.origin + self.values.size * self.step_seconds

    def _cumulative(self, t: float) -> float:
        offset = (t - self.origin) / self.step_seconds
        if offset <= 0:
            return 0.0
        last = self.values.size
        if offset >= last:
            return float(self.prefix[last]) + (offset - last) * self.step_seconds / 3600.0 * float(self.values[-1])
        index = int(offset)
        return float(self.prefix[index]) + (offset - index) * self.step_seconds / 3600.0 * float(self.values[index])

    def integral(self, start: float, end: float) -> float:
        """Intensity integrated over [start, end), in g/kWh * hours."""
        return self._cumulative(end) - self._cumulative(start)

    def integrals(self, starts: np.ndarray, duration: int) -> np.ndarray:
        """`integral(s, s + duration)` for every start s, vectorised."""
        return self.integrals_between(starts, starts + duration)

    def integrals_between(self, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
        """`integral(starts[i], ends[i])` for every i, vectorised."""
        return np.interp(ends, self.knot_times, self.knot_values) - np.interp(starts, self.knot_times, self.knot_values)


_TIE_TOLERANCE = 1e-9
"""Relative difference under which two estimates count as equal: prefix sums
round differently at different offsets, and a tie must go to the earlier start."""


def _cleaner(cost: float, start: int, best: Window) -> bool:
    margin = _TIE_TOLERANCE * abs(best.estimated_g)
    if cost < best.estimated_g - margin:
        return True
    return cost <= best.estimated_g + margin and start < best.start


def latest_start(task: Task, deadline_margin_seconds: int) -> int | None:
    """Latest start that still finishes `deadline_margin_seconds` before the deadline,
    but never before arrival; None when the task has no deadline."""
    if task.deadline is None:
        return None
    return max(task.arrival, task.deadline - task.duration - deadline_margin_seconds)


def plan_window(
    task: Task,
    now: int,
    *,
    last_start: int,
    outlooks: Mapping[str, Outlook],
    power_kw: Mapping[str, float],
    ledger: CapacityLedger,
    headroom_pods: int = 0,
) -> tuple[Window | None, Window | None]:
    """Return the cleanest booked-room window for `task` in the allowed regions of
    `outlooks`, starting between `now` and `last_start`, and the cleanest window
    that starts now. Either is None when no candidate of its kind has room in the
    ledger.
    """
    starts = ledger.slot_starts(now, last_start, include_after=True)
    spans = ledger.spans(starts, task.duration)
    ends = starts + task.duration
    request = task.requirements.request
    best: Window | None = None
    best_now: Window | None = None
    for region, outlook in outlooks.items():
        room = ledger.room(region, spans, request, headroom_pods=headroom_pods)
        if not room.any():
            continue
        costs = outlook.integrals_between(starts, ends)
        costs *= power_kw[region]
        if room[0] and (best_now is None or _cleaner(float(costs[0]), now, best_now)):
            best_now = Window(region, now, now + task.duration, float(costs[0]))
        costs[~room] = np.inf
        lowest = float(costs.min())
        # The first start within rounding of the minimum, so the earliest start wins ties.
        index = int(np.argmax(costs <= lowest + _TIE_TOLERANCE * abs(lowest)))
        cost = float(costs[index])
        start = int(starts[index])
        if best is None or _cleaner(cost, start, best):
            best = Window(region, start, start + task.duration, cost)
    return best, best_now
