"""Tests of the forecasters, the rolling-origin backtest and its reports."""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from carbon_scheduler.carbon.traces import Trace, read_trace, write_trace
from carbon_scheduler.forecast_command import run_backtest_command
from carbon_scheduler.forecasting import (
    FORECASTERS,
    DailyProfile,
    HorizonBlend,
    LinearAutoregressive,
    Persistence,
    SeasonalNaive,
    WeeklyProfile,
    make_forecaster,
)
from carbon_scheduler.forecasting.backtest import backtest, format_table, result_to_json

SHARED_TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"

H = 3600
DAY = 24
WEEK = 168
T0 = 1_640_995_200  # 2022-01-01T00:00:00Z, a Saturday

DEFAULT_FORECASTER = "profile-ar-blend"
NAMES = sorted(FORECASTERS)
NEW_NAMES = ["daily-profile", "weekly-profile", "autoregressive", "profile-ar-blend"]


@dataclass(frozen=True)
class Grid:
    """A minimal trace for `backtest`, built without the CSV reader."""

    regions: tuple[str, ...]
    start: int
    step_seconds: int
    values: np.ndarray


def realistic_series(steps: int, *, seed: int = 7) -> np.ndarray:
    """A positive series with a daily and a weekly cycle, a wandering level and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(steps)
    daily = 40 * np.sin(2 * np.pi * t / DAY)
    weekly = 25 * (np.floor(t / DAY) % 7 >= 5)
    level = np.cumsum(rng.normal(0, 3, steps))
    level -= np.linspace(0, level[-1], steps)  # keep the walk near zero
    return 300 + daily - weekly + level + rng.normal(0, 5, steps)


def daily_sine(steps: int) -> np.ndarray:
    t = np.arange(steps)
    return 200 + 50 * np.sin(2 * np.pi * t / DAY)


def forecast(forecaster, history: np.ndarray, horizon: int = 24) -> np.ndarray:
    last_time = T0 + (len(history) - 1) * H
    return forecaster.forecast(history, last_time, H, horizon)


# ---------------------------------------------------------------- every forecaster


def test_registry_lists_new_forecasters():
    for name in NEW_NAMES:
        assert name in FORECASTERS
        assert make_forecaster(name).name == name


def test_registry_rejects_unknown_name():
    with pytest.raises(ValueError, match="unknown forecaster 'prophet'; use one of: autoregressive"):
        make_forecaster("prophet")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("length", [1, 2, 5, 23, 24, 25, 100, 167, 168, 169, 700, 1009, 3000])
@pytest.mark.parametrize("horizon", [1, 24, 48])
def test_forecast_has_horizon_finite_values(name, length, horizon):
    history = realistic_series(length)
    result = forecast(make_forecaster(name), history, horizon)
    assert result.shape == (horizon,)
    assert np.isfinite(result).all()
    assert (result >= 0).all()


@pytest.mark.parametrize("name", NAMES)
def test_forecast_leaves_history_unchanged(name):
    history = realistic_series(2000)
    history.setflags(write=False)  # any write raises
    before = history.copy()
    forecast(make_forecaster(name), history, 48)
    assert np.array_equal(history, before)


@pytest.mark.parametrize("name", NAMES)
def test_forecast_ignores_data_after_origin(name):
    """A forecaster that peeked past the end of its slice (through the base array of
    a numpy view) would see the changed future and forecast differently."""
    series = realistic_series(3000)
    changed = series.copy()
    origin = 2000
    changed[origin + 1 :] = 10_000.0
    forecaster = make_forecaster(name)
    original = forecast(forecaster, series[: origin + 1], 48)
    after_change = forecast(forecaster, changed[: origin + 1], 48)
    from_copy = forecast(forecaster, changed[: origin + 1].copy(), 48)
    assert np.array_equal(original, after_change)
    assert np.array_equal(original, from_copy)


@pytest.mark.parametrize("name", NAMES)
def test_forecast_is_stateless(name):
    forecaster = make_forecaster(name)
    series = realistic_series(2500)
    first = forecast(forecaster, series[:2000], 24)
    forecast(forecaster, series, 48)  # a call on other data in between
    again = forecast(forecaster, series[:2000], 24)
    assert np.array_equal(first, again)


@pytest.mark.parametrize("name", NAMES)
def test_single_value_gives_persistence(name):
    result = forecast(make_forecaster(name), np.array([123.0]), 5)
    assert np.allclose(result, 123.0, rtol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_constant_series_forecast_constant(name):
    result = forecast(make_forecaster(name), np.full(2000, 250.0), 48)
    assert np.allclose(result, 250.0, rtol=1e-9)


@pytest.mark.parametrize("name", NEW_NAMES)
@pytest.mark.parametrize(
    "bad, message",
    [
        pytest.param(-5.0, "invalid intensity -5.0 g/kWh in history, 0 step", id="negative"),
        pytest.param(math.nan, "invalid intensity nan g/kWh in history, 0 step", id="nan"),
        pytest.param(math.inf, "invalid intensity inf g/kWh in history, 0 step", id="infinite"),
    ],
)
def test_invalid_last_value_raises(name, bad, message):
    history = realistic_series(2000)
    history[-1] = bad
    with pytest.raises(ValueError, match=message):
        forecast(make_forecaster(name), history, 24)


@pytest.mark.parametrize("name", NEW_NAMES)
@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"history": np.array([])}, "history is empty", id="empty"),
        pytest.param({"horizon": 0}, "horizon must be at least 1 step, got 0", id="horizon-0"),
        pytest.param({"step_seconds": 0}, "step_seconds must be positive, got 0", id="step-0"),
    ],
)
def test_invalid_request_raises(name, kwargs, message):
    arguments = {"history": realistic_series(500), "last_time": T0, "step_seconds": H, "horizon": 24}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=message):
        make_forecaster(name).forecast(**arguments)


@pytest.mark.parametrize(
    "factory, message",
    [
        pytest.param(lambda: WeeklyProfile(days=0), "days and weeks must be at least 1", id="days-0"),
        pytest.param(lambda: WeeklyProfile(weekly_weight=1.5), "weekly_weight must lie in", id="weight"),
        pytest.param(lambda: WeeklyProfile(decay_per_hour=-0.1), "decay_per_hour must lie in", id="decay"),
        pytest.param(lambda: LinearAutoregressive(window_days=0), "window_days must be positive", id="window"),
        pytest.param(lambda: HorizonBlend(near_weight=2), "near_weight must lie in", id="near-weight"),
        pytest.param(lambda: HorizonBlend(half_life_hours=0), "half_life_hours must be positive", id="half-life"),
    ],
)
def test_invalid_knob_raises(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0, max_value=2000, allow_nan=False), min_size=1, max_size=400),
    horizon=st.integers(min_value=1, max_value=60),
    step_seconds=st.sampled_from([300, 900, 1800, 3600, 7200, 86_400, 172_800]),
    name=st.sampled_from(NAMES),
)
def test_any_valid_history_gives_valid_forecast(values, horizon, step_seconds, name):
    history = np.array(values)
    result = make_forecaster(name).forecast(history, T0, step_seconds, horizon)
    assert result.shape == (horizon,)
    assert np.isfinite(result).all()
    assert (result >= 0).all()


# ---------------------------------------------------------------- short history and exact cases


@pytest.mark.parametrize("name", ["daily-profile", "weekly-profile"])
def test_profile_under_a_day_holds_last_value(name):
    history = realistic_series(20)
    result = forecast(make_forecaster(name), history, 30)
    assert np.array_equal(result, np.full(30, history[-1]))


@pytest.mark.parametrize("name", ["daily-profile", "weekly-profile"])
@pytest.mark.parametrize("days", [2, 3, 6])
def test_profile_under_a_week_repeats_daily_cycle(name, days):
    """With whole days of a pure daily cycle the profile is exact, and the weekly
    part, which has no week of history yet, must not disturb it."""
    history = daily_sine(days * DAY + 1)
    result = forecast(make_forecaster(name), history, 48)
    expected = daily_sine(days * DAY + 1 + 48)[-48:]
    assert np.allclose(result, expected, rtol=1e-9)


@pytest.mark.parametrize("name", ["daily-profile", "weekly-profile"])
def test_profile_one_day_covers_first_day_only(name):
    """One day and one step of history: steps 1..24 have a daily analogue, steps
    25..30 would need two days and hold the last value."""
    history = daily_sine(DAY + 1)
    result = forecast(make_forecaster(name), history, 30)
    assert np.allclose(result[:DAY], daily_sine(2 * DAY + 1)[-DAY:], rtol=1e-9)
    assert np.array_equal(result[DAY:], np.full(6, history[-1]))


def test_profile_uses_partial_weeks_for_far_steps():
    """With 8 days of history a 48-step forecast has a weekly analogue for steps
    1..24 only (lag 168 reaches back 7 days, but steps 25..48 would need data
    before the start); every step must still be finite and close to the cycle."""
    history = daily_sine(8 * DAY)
    result = forecast(WeeklyProfile(), history, 48)
    expected = daily_sine(8 * DAY + 48)[-48:]
    assert np.allclose(result, expected, rtol=1e-9)


def test_weekly_profile_follows_weekend_drop():
    """A series that is 100 lower on two days of each week: the weekly profile
    forecasts the drop, the daily profile cannot."""
    steps = 8 * WEEK
    t = np.arange(steps + DAY)
    series = 400.0 - 100.0 * (np.floor(t / DAY) % 7 >= 5)
    # End the history on the last hour before a weekend day.
    origin = int(np.flatnonzero((np.floor(t / DAY) % 7 == 4) & (t % DAY == DAY - 1) & (t > 6 * WEEK))[0])
    history = series[: origin + 1]
    actual = series[origin + 1 : origin + 1 + DAY]
    weekly = forecast(WeeklyProfile(weekly_weight=1.0), history, DAY)
    daily = forecast(DailyProfile(), history, DAY)
    assert np.allclose(weekly, actual, rtol=1e-9)
    assert np.abs(daily - actual).mean() > 50


def test_level_correction_fades_with_decay():
    """A series one step above its flat past: the deviation decays by
    decay_per_hour each step."""
    history = np.full(30 * DAY, 100.0)
    history[-1] = 200.0
    result = forecast(DailyProfile(decay_per_hour=0.5), history, 4)
    # In log(1 + x): log(201) - log(101) fades by half each step.
    deviation = math.log(201) - math.log(101)
    expected = [math.expm1(math.log(101) + deviation * 0.5**h) for h in range(1, 5)]
    assert np.allclose(result, expected, rtol=1e-12)


def test_decay_is_per_hour_whatever_the_step():
    history = np.full(30 * DAY * 2, 100.0)
    history[-1] = 200.0
    half_hourly = DailyProfile(decay_per_hour=0.25).forecast(history, T0, 1800, 2)
    deviation = math.log(201) - math.log(101)
    expected = [math.expm1(math.log(101) + deviation * 0.5**h) for h in (1, 2)]
    assert np.allclose(half_hourly, expected, rtol=1e-12)


def test_autoregressive_fits_linear_recurrence():
    """y[t] = 0.5*y[t-1] + 0.5*y[t-24] + 10 with no noise: the fit recovers it and
    the iterated forecast follows the recurrence."""
    steps = 1200
    y = np.empty(steps + 48)
    y[:DAY] = 100 + 30 * np.sin(2 * np.pi * np.arange(DAY) / DAY)
    for t in range(DAY, len(y)):
        y[t] = 0.5 * y[t - 1] + 0.5 * y[t - DAY] + 10
    result = forecast(LinearAutoregressive(), y[:steps], 48)
    assert np.allclose(result, y[steps:], rtol=1e-5)


def test_autoregressive_clips_runaway_fit():
    """A series that doubles every step makes an explosive fit; forecasts stay
    within twice the largest value of the training window."""
    history = 1.5 ** (np.arange(400) % 40)
    result = forecast(LinearAutoregressive(), history, 48)
    assert result.max() <= 2 * history[-672:].max()
    assert result.min() >= 0


def test_blend_weights_near_forecaster_by_horizon():
    class Constant:
        def __init__(self, name, value):
            self.name, self.value = name, value

        def forecast(self, history, last_time, step_seconds, horizon):
            return np.full(horizon, self.value)

    blend = HorizonBlend(Constant("near", 100.0), Constant("far", 0.0), near_weight=0.5, half_life_hours=2)
    result = forecast(blend, np.ones(10), 5)
    assert np.allclose(result, [50.0, 50 * 0.5**0.5, 25.0, 25 * 0.5**0.5, 12.5])


# ---------------------------------------------------------------- backtest


class Recording:
    """Wraps a forecaster and records what it received and returned."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.calls: list[tuple[int, int, float]] = []
        self.forecasts: list[np.ndarray] = []

    def forecast(self, history, last_time, step_seconds, horizon):
        self.calls.append((len(history), last_time, float(history[-1])))
        result = self.inner.forecast(history, last_time, step_seconds, horizon)
        self.forecasts.append(result)
        return result


def grid(*rows: np.ndarray, start: int = T0, step: int = H) -> Grid:
    regions = tuple(f"region-{i}" for i in range(len(rows)))
    return Grid(regions, start, step, np.vstack(rows))


def test_backtest_daily_sine_seasonal_naive_exact():
    result = backtest(grid(daily_sine(30 * DAY)), [SeasonalNaive(), Persistence()])
    assert result.mae[0, 0].max() < 1e-9
    assert result.mape[0, 0].max() < 1e-9
    # Persistence misses by the change of the sine over h hours, on average
    # 100/pi * |sin(pi*h/24)| * ... which is far from 0 at 12 h.
    assert result.mae[0, 1, 11] > 30


def test_backtest_ramp_gives_known_persistence_errors():
    """On y = 100 + t, persistence misses step h by exactly h."""
    steps = 400
    series = 100.0 + np.arange(steps)
    result = backtest(grid(series), [Persistence()], horizon=6, min_history_steps=10)
    origins = np.arange(9, steps - 6)
    assert result.origins == len(origins)
    for h in range(1, 7):
        assert result.mae[0, 0, h - 1] == pytest.approx(h)
        expected_mape = np.mean(h / (100.0 + origins + h)) * 100
        assert result.mape[0, 0, h - 1] == pytest.approx(expected_mape, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs, first_origin, last_origin, count",
    [
        pytest.param({}, 167, 975, 809, id="defaults"),
        pytest.param({"min_history_steps": 1}, 0, 975, 976, id="min-history-1"),
        pytest.param({"issue_every_steps": 24}, 167, 167 + 24 * 33, 34, id="every-24"),
        pytest.param({"start": T0 + 500 * H}, 500, 975, 476, id="start"),
        pytest.param({"start": T0 + 500 * H + 1}, 501, 975, 475, id="start-mid-step"),
        pytest.param({"end": T0 + 600 * H}, 167, 575, 409, id="end"),
        pytest.param({"horizon": 48}, 167, 951, 785, id="horizon-48"),
    ],
)
def test_backtest_origins(kwargs, first_origin, last_origin, count):
    recorder = Recording(Persistence())
    result = backtest(grid(realistic_series(1000)), [recorder], **kwargs)
    assert result.origins == count
    assert result.origin_times[0] == T0 + first_origin * H
    assert result.origin_times[-1] == T0 + last_origin * H
    assert recorder.calls[0][0] == first_origin + 1
    assert recorder.calls[-1][0] == last_origin + 1


def test_backtest_passes_history_up_to_origin():
    series = realistic_series(400)
    recorder = Recording(Persistence())
    backtest(grid(series), [recorder], min_history_steps=50)
    for length, last_time, last_value in recorder.calls:
        assert last_time == T0 + (length - 1) * H
        assert last_value == series[length - 1]


@pytest.mark.parametrize("name", NAMES)
def test_backtest_forecasts_unchanged_by_future(name):
    """Scrambling every value after step 900 leaves the forecasts of origins that
    end before it unchanged."""
    series = realistic_series(1400)
    changed = series.copy()
    changed[900:] = np.random.default_rng(3).uniform(0, 5000, 500)
    first = Recording(make_forecaster(name))
    second = Recording(make_forecaster(name))
    backtest(grid(series), [first], issue_every_steps=7, end=T0 + 1400 * H)
    backtest(grid(changed), [second], issue_every_steps=7, end=T0 + 1400 * H)
    compared = 0
    for (length, _, _), a, b in zip(first.calls, first.forecasts, second.forecasts):
        if length <= 900:
            assert np.array_equal(a, b)
            compared += 1
    assert compared > 50


def test_backtest_errors_per_region():
    """Two regions, one a pure daily cycle and one a ramp: errors land in the right
    row."""
    result = backtest(grid(daily_sine(600), 100.0 + np.arange(600)), [SeasonalNaive(), Persistence()])
    assert result.regions == ("region-0", "region-1")
    assert result.mae[0, 0].max() < 1e-9
    assert result.mae[1, 1, 0] == pytest.approx(1.0)
    assert result.mae[1, 0, 0] == pytest.approx(24.0)  # a ramp is 24 higher each day


def test_backtest_leaves_zero_actuals_out_of_mape():
    series = np.full(400, 100.0)
    series[300] = 0.0
    result = backtest(grid(series), [Persistence()], horizon=3, min_history_steps=10)
    # Step 300 is the target h steps ahead of origin 300 - h, for h = 1, 2, 3.
    assert result.zero_actuals[0].tolist() == [1, 1, 1]
    # The only scored miss is origin 300, which holds 0 while the actual is 100:
    # 100 % error, averaged over the origins minus the one left-out target.
    scored = result.origins - 1
    assert result.mape[0, 0].tolist() == pytest.approx([100.0 / scored] * 3)
    # The MAE keeps the zero: origin 299 misses step 300 by 100, origin 300
    # misses step 301 by 100.
    assert result.mae[0, 0, 0] == pytest.approx(200.0 / result.origins)


def test_backtest_mape_nan_when_all_actuals_zero():
    result = backtest(grid(np.zeros(300)), [Persistence()], horizon=2, min_history_steps=5)
    assert np.isnan(result.mape).all()
    assert result.mae.max() == 0.0
    payload = result_to_json(result)
    assert payload["regions"]["region-0"]["persistence"]["mape_percent"] == [None, None]
    assert payload["regions"]["region-0"]["persistence"]["mape_percent_mean"] is None
    assert "n/a" in format_table(result)


def test_backtest_too_short_trace_raises():
    with pytest.raises(ValueError, match="has 100 steps, and each origin needs 168 steps of history"):
        backtest(grid(realistic_series(100)), [Persistence()])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        pytest.param({"horizon": 0}, "horizon must be at least 1 step", id="horizon"),
        pytest.param({"issue_every_steps": 0}, "issue_every_steps must be at least 1", id="every"),
        pytest.param({"min_history_steps": 0}, "min_history_steps must be at least 1", id="history"),
    ],
)
def test_backtest_invalid_arguments_raise(kwargs, message):
    with pytest.raises(ValueError, match=message):
        backtest(grid(realistic_series(500)), [Persistence()], **kwargs)


def test_backtest_rejects_repeated_names():
    with pytest.raises(ValueError, match="forecaster names must be unique; repeated: persistence"):
        backtest(grid(realistic_series(500)), [Persistence(), Persistence()])


def test_backtest_rejects_no_forecasters():
    with pytest.raises(ValueError, match="no forecasters to backtest"):
        backtest(grid(realistic_series(500)), [])


class Broken:
    name = "broken"

    def __init__(self, output):
        self.output = output

    def forecast(self, history, last_time, step_seconds, horizon):
        return self.output(horizon)


@pytest.mark.parametrize(
    "output, message",
    [
        pytest.param(lambda h: np.ones(h - 1), r"returned shape \(23,\) for region-0 at 2022-01-07T23:00:00Z", id="short"),
        pytest.param(lambda h: 5.0, r"returned shape \(\) for region-0", id="scalar"),
        pytest.param(lambda h: np.full(h, np.nan), "non-finite value for region-0 at 2022-01-07T23:00:00Z", id="nan"),
    ],
)
def test_backtest_rejects_bad_forecasts(output, message):
    with pytest.raises(ValueError, match=message):
        backtest(grid(realistic_series(500)), [Broken(output)])


def test_backtest_reports_progress():
    seen = []
    backtest(
        grid(realistic_series(300), realistic_series(300, seed=2)),
        [Persistence(), SeasonalNaive()],
        progress=lambda region, name: seen.append((region, name)),
    )
    assert seen == [
        ("region-0", "persistence"),
        ("region-0", "seasonal-naive"),
        ("region-1", "persistence"),
        ("region-1", "seasonal-naive"),
    ]


def test_backtest_times_forecasters():
    result = backtest(grid(realistic_series(500)), [Persistence(), WeeklyProfile()])
    assert (result.seconds > 0).all()
    assert result.microseconds_per_call("weekly-profile") > 0


# ---------------------------------------------------------------- reports


@pytest.fixture(scope="module")
def small_result():
    return backtest(
        grid(realistic_series(900), daily_sine(900)),
        [Persistence(), SeasonalNaive(), WeeklyProfile()],
        issue_every_steps=5,
    )


def test_json_lists_every_horizon(small_result):
    payload = result_to_json(small_result)
    assert sorted(payload["regions"]) == ["region-0", "region-1"]
    entry = payload["regions"]["region-1"]["weekly-profile"]
    assert sorted(entry) == ["mae_g_per_kwh", "mae_g_per_kwh_mean", "mape_percent", "mape_percent_mean"]
    assert len(entry["mape_percent"]) == 24
    assert len(entry["mae_g_per_kwh"]) == 24
    region = small_result.regions.index("region-0")
    forecaster = small_result.forecasters.index("persistence")
    persistence = payload["regions"]["region-0"]["persistence"]
    assert persistence["mape_percent"][23] == round(float(small_result.mape[region, forecaster, 23]), 3)
    assert persistence["mae_g_per_kwh_mean"] == round(small_result.mean_mae("region-0", "persistence"), 3)
    assert payload["horizon_steps"] == 24
    assert payload["origins"] == small_result.origins
    assert payload["first_origin"] == "2022-01-07T23:00:00Z"
    assert payload["zero_actuals"] == {"region-0": 0, "region-1": 0}


def test_json_is_deterministic(small_result):
    again = backtest(
        grid(realistic_series(900), daily_sine(900)),
        [Persistence(), SeasonalNaive(), WeeklyProfile()],
        issue_every_steps=5,
    )
    first = json.dumps(result_to_json(small_result), sort_keys=True)
    second = json.dumps(result_to_json(again), sort_keys=True)
    assert first == second
    # Keys come out sorted even without sort_keys.
    assert json.dumps(result_to_json(small_result)) == first


def test_table_marks_best_per_column(small_result):
    text = format_table(small_result)
    assert "### region-0" in text
    assert "### region-1" in text
    assert "| forecaster | MAPE % h1 | MAPE % h6 | MAPE % h12 | MAPE % h24 | MAPE % mean 1-24 |" in text
    # On the pure daily cycle seasonal-naive is exact, so it is best in every column.
    region_1 = text.split("### region-1")[1].split("###")[0]
    naive_row = next(line for line in region_1.splitlines() if line.startswith("| seasonal-naive"))
    assert naive_row.count("**0.00**") == 5
    assert naive_row.count("**0.0**") == 5
    assert "µs per call" in text
    assert "µs per call" not in format_table(small_result, timings=False)


def test_table_shows_only_horizons_computed():
    result = backtest(grid(realistic_series(400)), [Persistence()], horizon=6)
    text = format_table(result)
    assert "MAPE % h6 | MAPE % mean 1-6 |" in text
    assert "h12" not in text
    assert "h24" not in text


def test_result_lookup_rejects_unknown_names(small_result):
    with pytest.raises(KeyError, match="unknown region 'mars'"):
        small_result.mean_mape("mars", "persistence")
    with pytest.raises(KeyError, match="unknown forecaster 'oracle'"):
        small_result.mean_mape("region-0", "oracle")


# ---------------------------------------------------------------- command


@pytest.fixture
def trace_file(tmp_path) -> Path:
    values = np.vstack([realistic_series(20 * DAY), realistic_series(20 * DAY, seed=9)])
    trace = Trace(("north", "south"), T0, H, np.round(values, 2))
    path = tmp_path / "trace.csv"
    write_trace(trace, path)
    return path


def test_command_prints_table_and_writes_json(trace_file, tmp_path):
    output = io.StringIO()
    json_path = tmp_path / "backtest.json"
    status = run_backtest_command(
        trace_file, json_path, ["persistence", "weekly-profile"], Console(file=output, width=200)
    )
    assert status == 0
    text = output.getvalue()
    assert "### north" in text
    assert "| weekly-profile |" in text
    assert f"wrote {json_path}" in text
    payload = json.loads(json_path.read_text())
    assert sorted(payload["regions"]["south"]) == ["persistence", "weekly-profile"]


def test_command_defaults_to_every_forecaster(trace_file):
    output = io.StringIO()
    assert run_backtest_command(trace_file, console=Console(file=output, width=200)) == 0
    for name in NAMES:
        assert f"| {name} |" in output.getvalue()


@pytest.mark.parametrize(
    "arguments, message",
    [
        pytest.param({"forecasters": ["prophet"]}, "error: unknown forecaster 'prophet'", id="unknown-forecaster"),
        pytest.param({"trace_path": "missing.csv"}, "error:", id="missing-trace"),
    ],
)
def test_command_input_errors_exit_2(trace_file, capsys, arguments, message):
    call = {"trace_path": trace_file, "console": Console(file=io.StringIO())}
    call.update(arguments)
    assert run_backtest_command(**call) == 2
    assert message in capsys.readouterr().err


def test_command_short_trace_exits_2(tmp_path, capsys):
    trace = Trace(("north",), T0, H, realistic_series(3 * DAY)[None, :])
    path = tmp_path / "short.csv"
    write_trace(trace, path)
    assert run_backtest_command(path, console=Console(file=io.StringIO())) == 2
    assert "no origin to backtest" in capsys.readouterr().err


def test_command_unwritable_json_exits_1(trace_file, tmp_path, capsys):
    json_path = tmp_path / "missing-folder" / "out.json"
    status = run_backtest_command(trace_file, json_path, ["persistence"], Console(file=io.StringIO()))
    assert status == 1
    assert f"error: cannot write {json_path}" in capsys.readouterr().err


# ---------------------------------------------------------------- recorded traces


@pytest.fixture(scope="module")
def demo_60_days():
    path = SHARED_TRACES / "demo.csv"
    if not path.is_file():
        pytest.fail(f"{path} is missing; the recorded traces must sit in ../shared/traces")
    trace = read_trace(path)
    return trace.slice(trace.start, trace.start + 60 * 86_400)


def test_default_beats_naive_on_recorded_traces(demo_60_days):
    """On the first 60 days of 2022 (GB, PJM and KR), the default forecaster has a
    lower MAPE than both naive baselines at the 24th hour and over hours 1-24, in
    every region."""
    result = backtest(demo_60_days, [Persistence(), SeasonalNaive(), make_forecaster(DEFAULT_FORECASTER)])
    assert result.regions == ("asia-east", "eu-west", "us-east")
    for region in result.regions:
        r = result.regions.index(region)
        chosen = result.mape[r, 2]
        for baseline in (0, 1):
            assert chosen[23] < result.mape[r, baseline, 23], (region, result.forecasters[baseline])
            assert chosen.mean() < result.mape[r, baseline].mean(), (region, result.forecasters[baseline])
