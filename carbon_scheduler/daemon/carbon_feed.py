"""Per-region carbon input of the daemon: the latest sample, its history, the level
and the forecast outlook that window planning uses.

A source reports samples in its own time (`Sample.time`, the start of the step
it describes). A replay source plays recorded hours faster than real time, so one
source step lasts `wall_step_seconds` of wall-clock time, which may be much
shorter than `source_step_seconds`. Forecasters work in source time (their daily
and weekly cycles are in source steps); the outlook handed to the planner is laid
out in wall-clock time, because pods' deadlines are wall-clock times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import structlog

from carbon_scheduler.config.types import CarbonSourceKind, RegionSpec
from carbon_scheduler.forecasting import Forecaster
from carbon_scheduler.model import Level
from carbon_scheduler.policy.levels import level_of
from carbon_scheduler.policy.windows import Outlook

log = structlog.get_logger(__name__)

MAX_HISTORY_STEPS = 24 * 7 * 8
"""Source steps of history kept in memory: eight weeks, more than any forecaster
or relative level window reads."""


def wall_step_seconds(region: RegionSpec) -> float:
    """Wall-clock seconds that one source step lasts: `seconds_per_hour` for a
    replayed trace, an hour for live sources."""
    carbon = region.carbon
    if carbon is not None and carbon.kind is CarbonSourceKind.REPLAY and carbon.seconds_per_hour:
        return float(carbon.seconds_per_hour)
    return 3600.0


@dataclass(frozen=True, slots=True)
class FeedSample:
    """A sample as the feed keeps it: source time, value and when it arrived."""

    time: int
    intensity_g_per_kwh: float
    received_at: float


class CarbonFeed:
    """Carbon history and outlook of one region, fed by `record()`."""

    def __init__(
        self,
        region: RegionSpec,
        forecaster: Forecaster,
        *,
        source_step_seconds: int = 3600,
        wall_step_seconds: float = 3600.0,
        horizon_hours: int = 48,
        stale_after_seconds: float | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.region = region
        self.forecaster = forecaster
        self.source_step_seconds = source_step_seconds
        self.wall_step_seconds = wall_step_seconds
        self.horizon_steps = max(1, round(horizon_hours * 3600 / source_step_seconds)) + 24
        self.stale_after_seconds = stale_after_seconds if stale_after_seconds is not None else 3 * wall_step_seconds
        self.clock = clock
        self.times: list[int] = []
        self.values: list[float] = []
        self.latest: FeedSample | None = None
        self.level = Level.MEDIUM
        self.outlook: Outlook | None = None

    def preload(self, samples: list[tuple[int, float]]) -> None:
        """Fill the history from a source's past samples (time, g/kWh), oldest
        first, so levels and forecasts have material from the first minute."""
        for time, value in sorted(samples):
            if not self.times or time > self.times[-1]:
                self.times.append(time)
                self.values.append(value)
        del self.times[: max(0, len(self.times) - MAX_HISTORY_STEPS)]
        del self.values[: max(0, len(self.values) - MAX_HISTORY_STEPS)]
        log.info("carbon_history_loaded", region=self.region.name, samples=len(self.times))

    def record(self, time: int, intensity_g_per_kwh: float) -> bool:
        """Add a sample; return True when it starts a new step (a new outlook was made)."""
        now = self.clock()
        if self.times and time <= self.times[-1]:
            if time == self.times[-1]:
                self.values[-1] = intensity_g_per_kwh  # a revised value for the same step
                self.latest = FeedSample(time, intensity_g_per_kwh, now)
            return False
        self.times.append(time)
        self.values.append(intensity_g_per_kwh)
        if len(self.times) > MAX_HISTORY_STEPS:
            del self.times[: len(self.times) - MAX_HISTORY_STEPS]
            del self.values[: len(self.values) - MAX_HISTORY_STEPS]
        self.latest = FeedSample(time, intensity_g_per_kwh, now)

        history = np.asarray(self.values, dtype=float)
        self.level = level_of(intensity_g_per_kwh, self.region.levels, history)
        forecast = self.forecaster.forecast(history, time, self.source_step_seconds, self.horizon_steps)
        self.outlook = Outlook.build(
            self.region.name, int(now), max(1, round(self.wall_step_seconds)), intensity_g_per_kwh, forecast
        )
        log.info(
            "carbon_sample",
            region=self.region.name,
            time=time,
            intensity_g_per_kwh=intensity_g_per_kwh,
            level=self.level.label,
        )
        return True

    @property
    def intensity(self) -> float | None:
        return None if self.latest is None else self.latest.intensity_g_per_kwh

    @property
    def stale(self) -> bool:
        """True when no sample arrived for `stale_after_seconds` (or none ever)."""
        if self.latest is None:
            return True
        return self.clock() - self.latest.received_at > self.stale_after_seconds

    @property
    def age_seconds(self) -> float | None:
        return None if self.latest is None else self.clock() - self.latest.received_at
