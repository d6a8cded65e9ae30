"""Replay source: a recorded trace played faster than real time, for live demos.

Wall time maps linearly to trace time. At wall time `started_at` the replay is
`start_offset_seconds` into the trace, and every wall second advances the trace
by 3600 / `seconds_per_hour` seconds: with `seconds_per_hour = 10` an hour of
trace passes in 10 s and a day in 4 minutes. At the end of the trace the replay
loops to its beginning, and before `started_at` it runs backwards the same way,
so `history()` can fill a relative-levels window at start-up.

Samples carry wall times, not trace times, because the daemon compares them with
its own clock. Trace step n covers trace seconds [n*step, (n+1)*step). It becomes
a sample with the trace's value for that step, at the wall time its replay
began (rounded down to the second). Every region replayed with the same
`started_at`, offset and speed switches steps at the same instant, which is why
the factory passes one `started_at` to all of them.

The trace must not make a step shorter than one wall second, because sample
times are whole seconds. There is no forecast: the daemon's forecaster predicts
from history, as it does for any source without one.
"""

from __future__ import annotations

import math

from carbon_scheduler.carbon.source import Clock, check_history_range
from carbon_scheduler.carbon.traces import Trace, format_time
from carbon_scheduler.store.base import ForecastPoint, Sample

NAME = "replay"
SECONDS_PER_HOUR = 3600.0
# Absorbs float rounding where wall time lands exactly on a step boundary.
_EPSILON = 1e-9
# history() rejects larger requests, which would build millions of samples.
MAX_HISTORY_SAMPLES = 1_000_000


class ReplaySource:
    """Region `trace_region` of `trace` (by default the row named `region`), replayed
    at `seconds_per_hour` wall seconds per trace hour."""

    name = NAME

    def __init__(
        self,
        *,
        region: str,
        trace: Trace,
        clock: Clock,
        seconds_per_hour: float,
        trace_region: str | None = None,
        start_offset_seconds: float = 0.0,
        started_at: float | None = None,
    ) -> None:
        if not (math.isfinite(seconds_per_hour) and seconds_per_hour > 0):
            raise ValueError(
                f"seconds_per_hour must be a positive number, got {seconds_per_hour!r}"
            )
        step = trace.step_seconds
        wall_step = step * seconds_per_hour / SECONDS_PER_HOUR
        if wall_step < 1:
            raise ValueError(
                f"seconds_per_hour {seconds_per_hour:g} plays one {step} s trace step in "
                f"{wall_step:g} s of wall time, but sample times are whole seconds; use "
                f"seconds_per_hour >= {SECONDS_PER_HOUR / step:g}"
            )
        duration = trace.steps * step
        if not (math.isfinite(start_offset_seconds) and 0 <= start_offset_seconds < duration):
            raise ValueError(
                f"start offset {start_offset_seconds:g} s is outside the trace, which covers "
                f"{duration} s from {format_time(trace.start)} to {format_time(trace.end)}"
            )

        self.region = region
        self.trace_region = trace_region or region
        self._values: list[float] = trace.values[trace.region_index(self.trace_region)].tolist()
        self._trace_start = trace.start
        self._step = step
        self._duration = duration
        self._speed = SECONDS_PER_HOUR / seconds_per_hour
        self._offset = float(start_offset_seconds)
        self._clock = clock
        self.started_at = clock.time() if started_at is None else float(started_at)

    def _elapsed(self, wall: float) -> float:
        """Trace seconds since the trace start at wall time `wall`, not wrapped."""
        return self._offset + (wall - self.started_at) * self._speed

    def _step_number(self, wall: float) -> int:
        """Number of the step played at `wall`, counting loops (negative before the trace)."""
        return math.floor(self._elapsed(wall) / self._step + _EPSILON)

    def _wall_start(self, number: int) -> int:
        return math.floor(
            self.started_at + (number * self._step - self._offset) / self._speed + 1e-6
        )

    def _sample(self, number: int) -> Sample:
        value = self._values[number % len(self._values)]
        return Sample(self.region, self._wall_start(number), value, NAME)

    def trace_time(self, wall: float | None = None) -> int:
        """Return the trace timestamp (Unix seconds) played at wall time `wall`, by
        default now, for dashboards that show where the replay is."""
        moment = self._clock.time() if wall is None else wall
        return self._trace_start + math.floor(self._elapsed(moment) % self._duration)

    async def latest(self) -> Sample:
        return self._sample(self._step_number(self._clock.time()))

    async def history(self, start: int, end: int) -> list[Sample]:
        start, end = check_history_range(start, end)
        now = self._clock.time()
        last_wall = min(end, now)
        if last_wall < start:
            return []
        first = self._step_number(start)
        last = self._step_number(last_wall)
        if last - first + 1 > MAX_HISTORY_SAMPLES:
            raise ValueError(
                f"history from {start} to {end} spans {last - first + 1} replayed steps, more "
                f"than {MAX_HISTORY_SAMPLES}; ask for a shorter range"
            )
        samples = []
        for number in range(first, last + 1):
            moment = self._wall_start(number)
            if start <= moment < end and moment <= now:
                samples.append(self._sample(number))
        return samples

    async def forecast(self) -> list[ForecastPoint] | None:
        return None

    async def aclose(self) -> None:
        return None
