"""Forecast combinations.

`HorizonBlend` averages a forecaster that is best in the first hours with one that
is best further out, with a weight on the first that fades with the horizon. On the
recorded traces the autoregression is the better one-step forecaster (it follows
the momentum of the last hours) and the weekly profile the better day-ahead one,
so each gets the horizons where it is stronger.
"""

from __future__ import annotations

import numpy as np

from carbon_scheduler.forecasting.autoregressive import LinearAutoregressive
from carbon_scheduler.forecasting.base import Forecaster
from carbon_scheduler.forecasting.profile import HOUR_SECONDS, WeeklyProfile, check_request


class HorizonBlend:
    """`near_weight * 0.5**((h - 1) / half_life)` of `near` plus the rest of `far`,
    for the step `h` hours ahead (h = 1 for the first step).

    Knobs, chosen by backtest (`benchmarks/forecast_backtest.py`):
    - `near_weight`: weight of `near` at the first step (0.5).
    - `half_life_hours`: horizon over which that weight halves (8 hours).
    """

    name = "profile-ar-blend"

    def __init__(
        self,
        near: Forecaster | None = None,
        far: Forecaster | None = None,
        *,
        near_weight: float = 0.5,
        half_life_hours: float = 8.0,
    ) -> None:
        if not 0.0 <= near_weight <= 1.0:
            raise ValueError(f"near_weight must lie in [0, 1], got {near_weight}")
        if half_life_hours <= 0:
            raise ValueError(f"half_life_hours must be positive, got {half_life_hours}")
        self.near = LinearAutoregressive() if near is None else near
        self.far = WeeklyProfile() if far is None else far
        self.near_weight = near_weight
        self.half_life_hours = half_life_hours

    def forecast(
        self, history: np.ndarray, last_time: int, step_seconds: int, horizon: int
    ) -> np.ndarray:
        check_request(history, step_seconds, horizon)
        hours_ahead = np.arange(horizon) * (step_seconds / HOUR_SECONDS)
        weight = self.near_weight * 0.5 ** (hours_ahead / self.half_life_hours)
        near = self.near.forecast(history, last_time, step_seconds, horizon)
        far = self.far.forecast(history, last_time, step_seconds, horizon)
        return weight * near + (1.0 - weight) * far
