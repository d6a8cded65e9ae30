"""Carbon levels, absolute and relative."""

import numpy as np
import pytest

from carbon_scheduler.config.types import AbsoluteLevels, RelativeLevels
from carbon_scheduler.model import Level
from carbon_scheduler.policy.levels import level_of, level_series

ABSOLUTE = AbsoluteLevels(low_below_g_per_kwh=100, high_above_g_per_kwh=300)


@pytest.mark.parametrize(
    ("intensity", "expected"),
    [
        pytest.param(99.9, Level.LOW, id="below-low"),
        pytest.param(100.0, Level.MEDIUM, id="at-low-threshold"),
        pytest.param(299.9, Level.MEDIUM, id="below-high"),
        pytest.param(300.0, Level.HIGH, id="at-high-threshold"),
    ],
)
def test_absolute_levels(intensity, expected):
    assert level_of(intensity, ABSOLUTE) is expected


def test_relative_levels_follow_own_history():
    history = np.array([100.0, 200, 300, 400, 500, 600])
    thresholds = RelativeLevels(low_below_percentile=33, high_above_percentile=67, history_hours=168)
    assert level_of(150.0, thresholds, np.append(history, 150.0)) is Level.LOW
    assert level_of(550.0, thresholds, np.append(history, 550.0)) is Level.HIGH
    assert level_of(350.0, thresholds, np.append(history, 350.0)) is Level.MEDIUM


def test_relative_without_history_is_medium():
    assert level_of(1.0, RelativeLevels(), None) is Level.MEDIUM


def test_relative_window_forgets_old_history():
    thresholds = RelativeLevels(history_hours=3)
    history = np.array([1000.0, 1000, 1000, 10, 20, 30])
    # Only the last three values count, so 30 is the highest of its window.
    assert level_of(30.0, thresholds, history) is Level.HIGH


@pytest.mark.parametrize("thresholds", [ABSOLUTE, RelativeLevels(history_hours=24)], ids=["absolute", "relative"])
def test_level_series_matches_level_of(thresholds):
    rng = np.random.default_rng(7)
    values = rng.uniform(50, 500, size=200)
    series = level_series(values, thresholds, 3600)
    expected = [int(level_of(values[i], thresholds, values[: i + 1])) for i in range(values.size)]
    assert series.tolist() == expected


def test_level_series_half_hour_steps_window():
    thresholds = RelativeLevels(history_hours=2)
    values = np.array([500.0, 400, 300, 200, 100, 900])
    series = level_series(values, thresholds, 1800)
    # Two hours at 30-minute steps is a window of four samples.
    assert series[-1] == int(level_of(900.0, thresholds, np.array([300.0, 200, 100, 900]))) == Level.HIGH
