"""Rolling-origin backtest of forecasters on a recorded trace.

At every origin step `o` (every `issue_every_steps` steps), each forecaster gets one
region's values up to and including step `o`, exactly as the replay simulator
calls it, and predicts steps `o + 1 .. o + horizon`. The forecasts are kept in one
(origins, horizon) array per region and forecaster, and the errors are computed
from those arrays at the end in a few vector operations:

- MAE: mean absolute error in g/kWh, per horizon step.
- MAPE: mean of |forecast - actual| / actual, in percent, per horizon step. Steps
  whose actual value is 0 have no percentage error; they are left out of the MAPE
  (not of the MAE) and counted in `zero_actuals`.

Every forecaster is called at the same origins, so their errors are comparable. The only
thing timed is the forecast calls, and that time is reported per forecaster.

This module needs only the shape of a trace (`TraceLike`), so it does not depend on
the trace reader, and tests can pass any object with those four fields.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from carbon_scheduler.forecasting.base import DAY_SECONDS, Forecaster

TABLE_HORIZONS = (1, 6, 12, 24)
"""Horizon steps shown as columns by `format_table`, where the backtest has them."""

JSON_DECIMALS = 3


class TraceLike(Protocol):
    """The part of a trace that `backtest` reads: one row of `values` (g/kWh) per
    region, step `i` starting at `start + i * step_seconds` (Unix seconds)."""

    regions: Sequence[str]
    start: int
    step_seconds: int
    values: np.ndarray


@dataclass(frozen=True, eq=False)
class BacktestResult:
    """Errors of each forecaster on each region, per horizon step.

    `mae` (g/kWh) and `mape` (percent) have shape (regions, forecasters, horizon),
    and index [r, f, h - 1] contains the error of forecaster f on region r, h steps
    after the origin. `mape` is NaN where every actual value was 0.
    `zero_actuals` (regions, horizon) counts the target steps left out of the MAPE
    because their actual value was 0. `origin_times` holds the Unix time of each
    origin step, the same for every region. `seconds` is the wall time spent in
    each forecaster's calls, summed over regions.
    """

    regions: tuple[str, ...]
    forecasters: tuple[str, ...]
    horizon: int
    step_seconds: int
    issue_every_steps: int
    min_history_steps: int
    origin_times: np.ndarray
    mae: np.ndarray
    mape: np.ndarray
    zero_actuals: np.ndarray
    seconds: np.ndarray

    @property
    def origins(self) -> int:
        """Number of origins per region."""
        return len(self.origin_times)

    def _indices(self, region: str, forecaster: str) -> tuple[int, int]:
        if region not in self.regions:
            raise KeyError(f"unknown region {region!r}; the result has {', '.join(self.regions)}")
        if forecaster not in self.forecasters:
            raise KeyError(
                f"unknown forecaster {forecaster!r}; the result has {', '.join(self.forecasters)}"
            )
        return self.regions.index(region), self.forecasters.index(forecaster)

    def mean_mape(self, region: str, forecaster: str) -> float:
        """MAPE in percent averaged over horizon steps 1..`horizon`."""
        r, f = self._indices(region, forecaster)
        return float(np.mean(self.mape[r, f]))

    def mean_mae(self, region: str, forecaster: str) -> float:
        """MAE in g/kWh averaged over horizon steps 1..`horizon`."""
        r, f = self._indices(region, forecaster)
        return float(np.mean(self.mae[r, f]))

    def microseconds_per_call(self, forecaster: str) -> float:
        """Mean wall time of one forecast call."""
        f = self.forecasters.index(forecaster)
        calls = self.origins * len(self.regions)
        return float(self.seconds[f]) / calls * 1e6


def select_origins(
    trace: TraceLike,
    *,
    horizon: int,
    issue_every_steps: int,
    min_history_steps: int,
    start: int | None,
    end: int | None,
) -> np.ndarray:
    """Return the origin steps: at least `min_history_steps` known steps, at or after
    `start`, and every target step inside the trace and ending by `end`."""
    steps = trace.values.shape[1]
    step = trace.step_seconds
    first = min_history_steps - 1
    if start is not None:
        first = max(first, -(-(start - trace.start) // step))
    last = steps - 1 - horizon
    if end is not None:
        # The last target step, origin + horizon, must end at or before `end`.
        last = min(last, (end - trace.start) // step - 1 - horizon)
    if last < first:
        raise ValueError(
            f"the trace has no origin to backtest: it has {steps} steps, and each origin "
            f"needs {min_history_steps} steps of history and {horizon} steps after it "
            f"inside [start, end); use a longer trace, a wider range, or a smaller "
            "min_history_steps or horizon"
        )
    return np.arange(first, last + 1, issue_every_steps)


def _check_arguments(
    trace: TraceLike, forecasters: Sequence[Forecaster], horizon: int, issue_every_steps: int, min_history_steps: int
) -> None:
    if not forecasters:
        raise ValueError("no forecasters to backtest; pass at least one")
    names = [forecaster.name for forecaster in forecasters]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"forecaster names must be unique; repeated: {', '.join(repeated)}")
    if horizon < 1:
        raise ValueError(f"horizon must be at least 1 step, got {horizon}")
    if issue_every_steps < 1:
        raise ValueError(f"issue_every_steps must be at least 1, got {issue_every_steps}")
    if min_history_steps < 1:
        raise ValueError(f"min_history_steps must be at least 1, got {min_history_steps}")
    values = np.asarray(trace.values)
    if values.ndim != 2 or values.shape[0] != len(trace.regions):
        raise ValueError(
            f"trace values must have shape ({len(trace.regions)}, steps), got {values.shape}"
        )


def forecast_all(
    forecaster: Forecaster,
    series: np.ndarray,
    origins: np.ndarray,
    origin_times: np.ndarray,
    step_seconds: int,
    horizon: int,
    region: str,
) -> tuple[np.ndarray, float]:
    """Call `forecaster` at every origin; return the forecasts and the seconds spent."""
    forecasts = np.empty((len(origins), horizon))
    elapsed = 0.0
    for row, (origin, moment) in enumerate(zip(origins.tolist(), origin_times.tolist())):
        history = series[: origin + 1]
        began = time.perf_counter()
        forecast = forecaster.forecast(history, moment, step_seconds, horizon)
        elapsed += time.perf_counter() - began
        if np.shape(forecast) != (horizon,):
            raise ValueError(
                f"forecaster {forecaster.name!r} returned shape {np.shape(forecast)} for "
                f"{region} at {format_utc(moment)}; expected ({horizon},)"
            )
        forecasts[row] = forecast
    bad_rows = np.flatnonzero(~np.isfinite(forecasts).all(axis=1))
    if bad_rows.size:
        moment = int(origin_times[bad_rows[0]])
        raise ValueError(
            f"forecaster {forecaster.name!r} returned a non-finite value for {region} at "
            f"{format_utc(moment)}"
        )
    return forecasts, elapsed


def backtest(
    trace: TraceLike,
    forecasters: Sequence[Forecaster],
    *,
    horizon: int = 24,
    issue_every_steps: int = 1,
    min_history_steps: int | None = None,
    start: int | None = None,
    end: int | None = None,
    progress: Callable[[str, str], None] | None = None,
) -> BacktestResult:
    """Backtest `forecasters` on every region of `trace` from rolling origins.

    `min_history_steps` is the number of known steps an origin needs, by default
    one week of steps, because replay also starts its forecaster with a week of
    history. `start` and `end` (Unix seconds) bound the scored period: origins lie
    at or after `start`, and the last target step of each ends by `end`. History
    before `start` is still given to the forecasters. `progress`, if given, is
    called with (region, forecaster name) after each pass.

    Raises ValueError when no origin fits, or when a forecaster returns a forecast
    of the wrong shape or with a non-finite value.
    """
    if min_history_steps is None:
        min_history_steps = max(1, 7 * DAY_SECONDS // trace.step_seconds)
    _check_arguments(trace, forecasters, horizon, issue_every_steps, min_history_steps)
    origins = select_origins(
        trace,
        horizon=horizon,
        issue_every_steps=issue_every_steps,
        min_history_steps=min_history_steps,
        start=start,
        end=end,
    )
    step = trace.step_seconds
    origin_times = trace.start + origins * step
    targets = origins[:, None] + np.arange(1, horizon + 1)[None, :]

    shape = (len(trace.regions), len(forecasters), horizon)
    mae = np.empty(shape)
    mape = np.empty(shape)
    zero_actuals = np.empty((len(trace.regions), horizon), dtype=np.int64)
    seconds = np.zeros(len(forecasters))
    for r, region in enumerate(trace.regions):
        # A float copy, so forecasters read a plain contiguous array however the
        # trace stores its values.
        series = np.array(trace.values[r], dtype=float)
        actual = series[targets]
        positive = actual > 0
        zero_actuals[r] = (~positive).sum(axis=0)
        scored = positive.sum(axis=0)
        safe_actual = np.where(positive, actual, 1.0)
        for f, forecaster in enumerate(forecasters):
            forecasts, elapsed = forecast_all(
                forecaster, series, origins, origin_times, step, horizon, region
            )
            seconds[f] += elapsed
            error = np.abs(forecasts - actual)
            mae[r, f] = error.mean(axis=0)
            percent = np.where(positive, error / safe_actual, 0.0).sum(axis=0) * 100.0
            with np.errstate(invalid="ignore", divide="ignore"):
                mape[r, f] = np.where(scored > 0, percent / scored, np.nan)
            if progress is not None:
                progress(region, forecaster.name)

    return BacktestResult(
        regions=tuple(trace.regions),
        forecasters=tuple(forecaster.name for forecaster in forecasters),
        horizon=horizon,
        step_seconds=step,
        issue_every_steps=issue_every_steps,
        min_history_steps=min_history_steps,
        origin_times=origin_times,
        mae=mae,
        mape=mape,
        zero_actuals=zero_actuals,
        seconds=seconds,
    )


# ---------------------------------------------------------------- reporting


def format_utc(moment: int) -> str:
    """Format Unix seconds as `2023-01-01T00:00:00Z`."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def _cell(value: float, best: float, decimals: int) -> str:
    if math.isnan(value):
        return "n/a"
    text = f"{value:.{decimals}f}"
    # Compare the printed figures, so ties on screen are all marked.
    return f"**{text}**" if text == f"{best:.{decimals}f}" else text


def _region_table(result: BacktestResult, r: int) -> list[str]:
    horizons = [h for h in TABLE_HORIZONS if h <= result.horizon]
    mean_label = f"mean 1-{result.horizon}"
    columns = [f"MAPE % h{h}" for h in horizons] + [f"MAPE % {mean_label}"]
    columns += [f"MAE h{h}" for h in horizons] + [f"MAE {mean_label}"]

    def figures(errors: np.ndarray) -> np.ndarray:
        # One row per forecaster: the chosen horizons, then the mean.
        picked = errors[:, [h - 1 for h in horizons]]
        return np.column_stack([picked, errors.mean(axis=1)])

    mape = figures(result.mape[r])
    mae = figures(result.mae[r])
    with np.errstate(invalid="ignore"):
        best_mape = np.nanmin(mape, axis=0) if np.isfinite(mape).any() else mape[0]
    best_mae = mae.min(axis=0)

    lines = [
        "| forecaster | " + " | ".join(columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    for f, name in enumerate(result.forecasters):
        cells = [_cell(v, b, 2) for v, b in zip(mape[f], best_mape)]
        cells += [_cell(v, b, 1) for v, b in zip(mae[f], best_mae)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def format_table(result: BacktestResult, *, timings: bool = True) -> str:
    """Render the result as Markdown tables.

    Each region gets a table with MAPE (percent) and MAE (g/kWh) at horizons 1, 6,
    12 and 24 and their mean over every horizon step, with the best of each column
    in bold. A last table gives each forecaster's mean MAPE averaged over regions
    and, if `timings`, its time per call, which varies from run to run."""
    first, last = int(result.origin_times[0]), int(result.origin_times[-1])
    lines = [
        f"{result.origins} origins per region, every {result.issue_every_steps} step(s) of "
        f"{result.step_seconds} s, from {format_utc(first)} to {format_utc(last)}; "
        f"horizon {result.horizon} steps; best of each column in bold.",
    ]
    for r, region in enumerate(result.regions):
        lines += ["", f"### {region}", ""]
        lines += _region_table(result, r)
        excluded = int(result.zero_actuals[r].sum())
        if excluded:
            lines += ["", f"{excluded} target steps with an actual value of 0 are left out of the MAPE."]

    with np.errstate(invalid="ignore"):
        overall = np.nanmean(result.mape.mean(axis=2), axis=0) if np.isfinite(result.mape).any() else None
    lines += ["", "### all regions", ""]
    header = f"| forecaster | MAPE % mean 1-{result.horizon}, averaged over regions |"
    rule = "|---|---:|"
    if timings:
        header += " µs per call |"
        rule += "---:|"
    lines += [header, rule]
    for f, name in enumerate(result.forecasters):
        value = "n/a" if overall is None else _cell(float(overall[f]), float(np.nanmin(overall)), 2)
        row = f"| {name} | {value} |"
        if timings:
            row += f" {result.microseconds_per_call(name):.1f} |"
        lines.append(row)
    return "\n".join(lines) + "\n"


def _rounded(values: np.ndarray) -> list[float | None]:
    return [None if math.isnan(v) else round(v, JSON_DECIMALS) for v in values.tolist()]


def _rounded_mean(values: np.ndarray) -> float | None:
    if np.isnan(values).any():
        return None
    return round(float(values.mean()), JSON_DECIMALS)


def result_to_json(result: BacktestResult) -> dict:
    """Return the errors as plain data for JSON.

    `regions[region][forecaster]` contains `mae_g_per_kwh` and `mape_percent` as lists
    over horizon steps 1..`horizon` and their means (`*_mean`), rounded to 3
    decimals, with null where a MAPE has no data. `zero_actuals[region]` counts the
    target steps left out of that region's MAPE. Keys are sorted and wall times are
    left out, so equal inputs give equal output."""
    regions: dict[str, dict] = {}
    zero_actuals: dict[str, int] = {}
    for r, region in sorted(enumerate(result.regions), key=lambda item: item[1]):
        per_forecaster: dict[str, dict] = {}
        for f, name in sorted(enumerate(result.forecasters), key=lambda item: item[1]):
            per_forecaster[name] = {
                "mae_g_per_kwh": _rounded(result.mae[r, f]),
                "mae_g_per_kwh_mean": _rounded_mean(result.mae[r, f]),
                "mape_percent": _rounded(result.mape[r, f]),
                "mape_percent_mean": _rounded_mean(result.mape[r, f]),
            }
        regions[region] = per_forecaster
        zero_actuals[region] = int(result.zero_actuals[r].sum())
    return {
        "first_origin": format_utc(int(result.origin_times[0])),
        "horizon_steps": result.horizon,
        "issue_every_steps": result.issue_every_steps,
        "last_origin": format_utc(int(result.origin_times[-1])),
        "min_history_steps": result.min_history_steps,
        "origins": result.origins,
        "regions": regions,
        "step_seconds": result.step_seconds,
        "zero_actuals": zero_actuals,
    }
