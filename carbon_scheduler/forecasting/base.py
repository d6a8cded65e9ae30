"""The forecaster interface and the two naive baselines every other forecaster
must beat.

A forecaster is pure: it gets a region's past intensities and returns the next
`horizon` steps. It keeps no state between calls, so replay and backtests can call
it at any origin and never see the future.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

DAY_SECONDS = 86_400


class Forecaster(Protocol):
    """Predicts the intensity of the steps after the last known one.

    `history` holds one region's intensities in g/kWh, oldest first, and its last
    element is the step that starts at `last_time` (Unix seconds). The result has
    `horizon` values: for the steps starting at `last_time + step_seconds`,
    `last_time + 2 * step_seconds`, and so on.
    """

    name: str

    def forecast(
        self, history: np.ndarray, last_time: int, step_seconds: int, horizon: int
    ) -> np.ndarray: ...


class Persistence:
    """Every future step equals the last known one."""

    name = "persistence"

    def forecast(
        self, history: np.ndarray, last_time: int, step_seconds: int, horizon: int
    ) -> np.ndarray:
        return np.full(horizon, float(history[-1]))


class SeasonalNaive:
    """Every future step equals the same time of day one day earlier; the last known
    day repeats for horizons past one day. Falls back to persistence while less than
    a day of history exists."""

    name = "seasonal-naive"

    def forecast(
        self, history: np.ndarray, last_time: int, step_seconds: int, horizon: int
    ) -> np.ndarray:
        period = max(1, DAY_SECONDS // step_seconds)
        if len(history) < period:
            return Persistence().forecast(history, last_time, step_seconds, horizon)
        last_day = np.asarray(history[-period:], dtype=float)
        repeats = -(-horizon // period)
        return np.tile(last_day, repeats)[:horizon]
