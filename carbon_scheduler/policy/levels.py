"""Carbon levels: `low`, `medium` or `high` for a region's current intensity.

Absolute thresholds compare against fixed g/kWh. Relative thresholds compare against
percentiles of the region's own trailing history, so every grid has its own green
hours. The current sample is part of the history it is judged against, which keeps
a single sample well defined (it is then `medium`, neither below the low percentile
nor at or above the high one).
"""

from __future__ import annotations

import numpy as np

from carbon_scheduler.config.types import AbsoluteLevels, LevelThresholds, RelativeLevels
from carbon_scheduler.model import Level


def level_of(intensity: float, thresholds: LevelThresholds, history: np.ndarray | None = None) -> Level:
    """Return the level of `intensity` (g/kWh).

    `history` holds the region's past intensities, oldest first, ending with the
    current sample; relative thresholds use its last `history_hours` hours at hourly
    steps. Without history, relative thresholds return `medium`.
    """
    if isinstance(thresholds, AbsoluteLevels):
        if intensity < thresholds.low_below_g_per_kwh:
            return Level.LOW
        if intensity >= thresholds.high_above_g_per_kwh:
            return Level.HIGH
        return Level.MEDIUM

    if history is None or len(history) < 2:
        return Level.MEDIUM
    window = np.asarray(history[-thresholds.history_hours :], dtype=float)
    low, high = np.percentile(window, [thresholds.low_below_percentile, thresholds.high_above_percentile])
    if intensity < low:
        return Level.LOW
    if intensity >= high:
        return Level.HIGH
    return Level.MEDIUM


def level_series(values: np.ndarray, thresholds: LevelThresholds, step_seconds: int) -> np.ndarray:
    """Return the level (as int8 `Level` values) of every step of one region's series.

    Step i is judged only on steps up to and including i, exactly as `level_of`
    judges a live sample, so replay sees no future data.
    """
    values = np.asarray(values, dtype=float)
    if isinstance(thresholds, AbsoluteLevels):
        levels = np.full(values.shape, Level.MEDIUM, dtype=np.int8)
        levels[values < thresholds.low_below_g_per_kwh] = Level.LOW
        levels[values >= thresholds.high_above_g_per_kwh] = Level.HIGH
        return levels
    return _relative_level_series(values, thresholds, step_seconds)


def _relative_level_series(values: np.ndarray, thresholds: RelativeLevels, step_seconds: int) -> np.ndarray:
    window = max(1, round(thresholds.history_hours * 3600 / step_seconds))
    levels = np.full(values.shape, Level.MEDIUM, dtype=np.int8)
    if values.size < 2:
        return levels
    quantiles = [thresholds.low_below_percentile, thresholds.high_above_percentile]

    # The first window-1 steps have a shorter history; judge them one by one.
    head = min(window - 1, values.size)
    for i in range(1, head):
        low, high = np.percentile(values[: i + 1], quantiles)
        levels[i] = _classify(values[i], low, high)
    if values.size >= window:
        windows = np.lib.stride_tricks.sliding_window_view(values, window)
        low, high = np.percentile(windows, quantiles, axis=1)
        current = values[window - 1 :]
        tail = np.full(current.shape, Level.MEDIUM, dtype=np.int8)
        tail[current < low] = Level.LOW
        tail[current >= high] = Level.HIGH
        levels[window - 1 :] = tail
    return levels


def _classify(value: float, low: float, high: float) -> Level:
    if value < low:
        return Level.LOW
    if value >= high:
        return Level.HIGH
    return Level.MEDIUM
