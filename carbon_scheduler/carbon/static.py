"""Static source: one fixed intensity, for tests and for regions without a data feed.

The value applies at every time, so the source reports it in hourly steps: `latest()`
returns a sample for the hour that contains the current time, and `history()`
one sample per hour that has begun, so relative levels and forecasters see a
regular series. It has no forecast of its own.
"""

from __future__ import annotations

import math

from carbon_scheduler.carbon.source import Clock, check_history_range
from carbon_scheduler.store.base import ForecastPoint, Sample

NAME = "static"
STEP_SECONDS = 3600


class StaticSource:
    """Intensity `intensity_g_per_kwh` for `region` at all times."""

    name = NAME

    def __init__(self, *, region: str, intensity_g_per_kwh: float, clock: Clock) -> None:
        if isinstance(intensity_g_per_kwh, bool) or not isinstance(
            intensity_g_per_kwh, (int, float)
        ):
            raise TypeError(f"intensity_g_per_kwh must be a number, got {intensity_g_per_kwh!r}")
        if not (math.isfinite(intensity_g_per_kwh) and intensity_g_per_kwh >= 0):
            raise ValueError(
                f"intensity_g_per_kwh must be a finite number >= 0, got {intensity_g_per_kwh!r}"
            )
        self.region = region
        self.intensity_g_per_kwh = float(intensity_g_per_kwh)
        self._clock = clock

    def _sample(self, moment: int) -> Sample:
        return Sample(self.region, moment, self.intensity_g_per_kwh, NAME)

    async def latest(self) -> Sample:
        now = math.floor(self._clock.time())
        return self._sample(now // STEP_SECONDS * STEP_SECONDS)

    async def history(self, start: int, end: int) -> list[Sample]:
        start, end = check_history_range(start, end)
        now = math.floor(self._clock.time())
        first = -(-start // STEP_SECONDS) * STEP_SECONDS
        stop = min(end, now + 1)
        return [self._sample(moment) for moment in range(first, stop, STEP_SECONDS)]

    async def forecast(self) -> list[ForecastPoint] | None:
        return None

    async def aclose(self) -> None:
        return None
