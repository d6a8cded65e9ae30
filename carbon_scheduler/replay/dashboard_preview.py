"""A single PNG with the panels of the Grafana dashboards, drawn from a replay.

Grafana cannot run everywhere the project is read, so this module draws the same
six panels from a `ReplayResult`, under the titles the dashboards use:

1. carbon intensity by region, with the level each region had (low, high),
2. the forecast issued `FORECAST_HORIZON_SECONDS` ahead against the measured intensity,
3. tasks by class and region, with the expected distribution as markers,
4. deferrable tasks waiting over time, and the p50 and p95 wait per class,
5. cumulative emissions of the scheduler and of the carbon-blind baseline,
6. grams saved per hour or per day, by task end time.

The data of every panel comes from a public function that does no drawing, so
tests can check the numbers exactly. Drawing reuses the palette, the binned
trace view and the metadata-free PNG writer of `replay.plots`. With the same
inputs, matplotlib version and fonts, two renders match except that Agg's
antialiasing may round a few edge pixels of a line one colour level apart.

The number of artists depends on the regions and the time buckets, never on the
number of tasks. Tasks become NumPy arrays, and each panel draws a few lines, bar
groups or collections. Long traces are averaged into at most `MAX_PLOTTED_STEPS`
points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from pathlib import Path

import matplotlib
import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure, SubFigure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import EngFormatter, MaxNLocator

from carbon_scheduler.carbon.traces import format_time
from carbon_scheduler.forecasting import Forecaster, make_forecaster
# The backtest's rolling-origin loop is reused so that the project has one
# forecasting loop.
from carbon_scheduler.forecasting.backtest import forecast_all, select_origins
from carbon_scheduler.model import Level, TaskClass
from carbon_scheduler.replay.plots import (
    DPI,
    INTENSITY_LABEL,
    LEVEL_ALPHA,
    LEVEL_SHADES,
    MAX_PLOTTED_STEPS,
    POLICY_STYLES,
    REGION_COLORS,
    TIME_LABEL,
    days_converter,
    intensity_view,
    IntensityView,
    runs_of,
    save_png,
    started_counts,
)
from carbon_scheduler.replay.results import ReplayResult
from carbon_scheduler.replay.summary import ordered_runs, region_order
from carbon_scheduler.replay.table import POLICY_LABELS, format_duration, kg_decimals

HOUR_SECONDS = 3600
DAY_SECONDS = 86_400

FORECAST_HORIZON_SECONDS = DAY_SECONDS
"""Lead time of the plotted forecast: a day, the longest horizon that the daemon
exports as a forecast gauge (`telemetry.metrics.FORECAST_HORIZONS_HOURS`)."""

HOURLY_BUCKETS_UP_TO_SECONDS = 3 * DAY_SECONDS
"""Spans up to this length get hourly savings buckets and longer ones daily
buckets, so a replay of a few days still shows dozens of bars and a year shows
about 365."""

WAIT_PERCENTILES = (50, 95)

TITLE_INTENSITY = "Carbon intensity by region"
TITLE_FORECAST = "Forecast 24 h ahead against actual"
TITLE_TASKS = "Where each class went"
TITLE_DEFERRED = "Deferred pods and wait times"
TITLE_EMISSIONS = "Cumulative emissions: scheduled against carbon-blind"
BUCKET_NAMES = {HOUR_SECONDS: "hour", DAY_SECONDS: "day"}
TITLE_SAVED = {seconds: f"Grams CO2eq saved per {name}" for seconds, name in BUCKET_NAMES.items()}

FIGURE_INCHES = (15.0, 17.0)
FIGURE_PIXELS = (round(FIGURE_INCHES[0] * DPI), round(FIGURE_INCHES[1] * DPI))
"""Width and height of the PNG in pixels."""

# Sizes chosen so that text stays legible when a README shows the image at
# about 900 pixels wide, a little over half its real size.
_STYLE = {
    "font.size": 14,
    "axes.titlesize": 14,
    "axes.labelsize": 13,
    "xtick.labelsize": 12,
    "ytick.labelsize": 12,
    "legend.fontsize": 12,
    "figure.titlesize": 17,
}
_PANEL_FACE = "#f6f7f9"
_PANEL_EDGE = "#c8ccd2"
_FORECAST_COLOR = "#222222"
_SAVED_COLOR = "#1a9850"
_LOST_COLOR = "#d73027"
_EXPECTED_COLOR = "#111111"


# Panel data -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StepSeries:
    """A piecewise-constant series over time.

    `values[i]` applies from `times[i]` (Unix seconds, strictly increasing) until
    `times[i + 1]`, and the last value applies from then on. Before `times[0]` the
    series is 0.
    """

    times: np.ndarray
    values: np.ndarray

    def at(self, moments: Sequence[int] | np.ndarray) -> np.ndarray:
        """Evaluate the series at each of `moments` (Unix seconds)."""
        positions = np.searchsorted(self.times, np.asarray(moments), side="right") - 1
        padded = np.concatenate(([0], self.values))
        return padded[positions + 1]


@dataclass(frozen=True, slots=True)
class ForecastComparison:
    """Forecasts of one forecaster next to the intensity that followed.

    `target_times` contains the start (Unix seconds) of each forecast trace step.
    `measured` and `forecast` have shape (regions, targets) in g/kWh, rows in
    `regions` order. The forecaster issued each value `horizon_seconds` before its
    target step started, from the trace up to and including the origin step, the
    same history the replay simulator gives it at that step.
    """

    forecaster: str
    regions: tuple[str, ...]
    horizon_seconds: int
    target_times: np.ndarray
    measured: np.ndarray
    forecast: np.ndarray

    def mean_absolute_error(self) -> np.ndarray:
        """Mean absolute error per region in g/kWh, NaN for a region without targets."""
        if self.target_times.size == 0:
            return np.full(len(self.regions), np.nan)
        return np.abs(self.forecast - self.measured).mean(axis=1)


@dataclass(frozen=True, slots=True)
class TaskCounts:
    """Started tasks per class and region, with the expected counts.

    `started` has shape (classes, regions). `expected` has the same shape and is
    the expected share of each class times that class's started tasks. It is NaN in
    the rows of classes that have no expected distribution, and None when the
    replay has no expected distribution at all.
    """

    classes: tuple[str, ...]
    regions: tuple[str, ...]
    started: np.ndarray
    expected: np.ndarray | None


@dataclass(frozen=True, slots=True)
class BucketedEmissions:
    """Emissions of the baseline and the scheduler per time bucket, in grams.

    Bucket i spans [starts[i], starts[i] + bucket_seconds) in Unix seconds, and the
    buckets are aligned to multiples of `bucket_seconds` since the Unix epoch, so
    daily buckets start at midnight UTC. A task counts in the bucket of its end
    time under each policy, as a Prometheus counter increases when a task finishes.
    """

    bucket_seconds: int
    starts: np.ndarray
    baseline_g: np.ndarray
    scheduler_g: np.ndarray

    @property
    def saved_g(self) -> np.ndarray:
        """Baseline minus scheduler grams per bucket; negative where the scheduler emitted more."""
        return self.baseline_g - self.scheduler_g


def forecast_comparison(
    result: ReplayResult,
    forecaster: Forecaster,
    *,
    first_time: int,
    last_time: int,
    horizon_seconds: int = FORECAST_HORIZON_SECONDS,
    max_points: int = MAX_PLOTTED_STEPS,
) -> ForecastComparison:
    """Forecast every trace step that starts in [first_time, last_time) and ends
    by `last_time`, from `horizon_seconds` earlier.

    The horizon is rounded to whole trace steps, at least one. When more than
    `max_points` steps qualify, the forecaster is called only at every k-th
    origin so that at most `max_points` remain. The comparison is empty when the
    trace has no step with enough history before it.
    """
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    trace = result.trace
    step = int(trace.step_seconds)
    horizon = max(1, round(horizon_seconds / step))
    values = np.asarray(trace.values, dtype=float)
    regions = tuple(trace.regions)

    try:
        origins = select_origins(
            trace,
            horizon=horizon,
            issue_every_steps=1,
            min_history_steps=1,
            start=first_time - horizon * step,
            end=last_time,
        )
    except ValueError:
        # No step in the window has an origin `horizon` steps before it.
        empty = np.zeros((len(regions), 0))
        return ForecastComparison(forecaster.name, regions, horizon * step, np.zeros(0, dtype=np.int64), empty, empty)

    origins = origins[:: max(1, math.ceil(len(origins) / max_points))]
    origin_times = trace.start + origins * step
    targets = origins + horizon
    measured = values[:, targets]
    forecast = np.empty_like(measured)
    for row, region in enumerate(regions):
        # The backtest's rolling-origin loop gives the forecaster values[:origin + 1] only.
        forecasts, _ = forecast_all(forecaster, values[row], origins, origin_times, step, horizon, region)
        forecast[row] = forecasts[:, horizon - 1]
    return ForecastComparison(
        forecaster=forecaster.name,
        regions=regions,
        horizon_seconds=horizon * step,
        target_times=trace.start + targets * step,
        measured=measured,
        forecast=forecast,
    )


def task_counts(result: ReplayResult) -> TaskCounts:
    """Count the scheduler's started tasks per class and region, and scale the
    expected distribution to those counts."""
    regions = region_order(result)
    for shares in result.expected_distribution.values():
        regions += sorted(set(shares).difference(regions))
    class_names = [task_class.value for task_class in TaskClass]
    _, started = started_counts(result, "scheduler", class_names, regions)

    expected = None
    if result.expected_distribution:
        expected = np.full(started.shape, np.nan)
        class_totals = started.sum(axis=1)
        for row, name in enumerate(class_names):
            shares = result.expected_distribution.get(name)
            if shares is None:
                continue
            expected[row] = [float(shares.get(region, 0.0)) * class_totals[row] for region in regions]
    return TaskCounts(tuple(class_names), tuple(regions), started, expected)


def deferred_waiting(result: ReplayResult, *, policy: str = "scheduler") -> StepSeries:
    """Count the deferrable tasks waiting under `policy` over time.

    A task waits at time t when arrival <= t < start. A task that never started
    waits from its arrival on.
    """
    arrivals = []
    starts = []
    for outcome in result.runs[policy].outcomes:
        if outcome.task.task_class is not TaskClass.DEFERRABLE:
            continue
        arrivals.append(outcome.task.arrival)
        if outcome.start is not None:
            starts.append(outcome.start)

    moments = np.array(arrivals + starts, dtype=np.int64)
    changes = np.concatenate((np.ones(len(arrivals)), -np.ones(len(starts))))
    times, slots = np.unique(moments, return_inverse=True)
    # Changes at the same moment are summed first, so a task that starts when it
    # arrives never counts as waiting.
    per_time = np.bincount(slots, weights=changes, minlength=len(times))
    return StepSeries(times, np.cumsum(per_time).round().astype(np.int64))


def wait_percentiles(result: ReplayResult, *, policy: str = "scheduler") -> dict[str, np.ndarray | None]:
    """Return the `WAIT_PERCENTILES` of each class's waits in seconds under `policy`.

    Waits are measured over started tasks with NumPy's default linear
    interpolation. A class without started tasks maps to None.
    """
    waits: dict[str, list[int]] = {task_class.value: [] for task_class in TaskClass}
    for outcome in result.runs[policy].outcomes:
        if outcome.wait_seconds is not None:
            waits[outcome.task.task_class.value].append(outcome.wait_seconds)
    return {
        name: np.percentile(np.array(values, dtype=float), WAIT_PERCENTILES) if values else None
        for name, values in waits.items()
    }


def cumulative_emissions(result: ReplayResult, policy: str) -> StepSeries:
    """Sum the grams of `policy`'s tasks by end time; tasks that never ended add nothing."""
    ended = [(outcome.end, outcome.emissions_g) for outcome in result.runs[policy].outcomes if outcome.end is not None]
    ends = np.array([end for end, _ in ended], dtype=np.int64)
    grams = np.array([emissions for _, emissions in ended], dtype=float)
    times, slots = np.unique(ends, return_inverse=True)
    return StepSeries(times, np.cumsum(np.bincount(slots, weights=grams, minlength=len(times))))


def emissions_by_bucket(result: ReplayResult, *, bucket_seconds: int) -> BucketedEmissions:
    """Sum the baseline's and the scheduler's grams per bucket of task end time.

    The buckets run from the first to the last bucket that any finished task of
    either policy falls in, with zeros in between. The arrays are empty when no
    task finished.
    """
    if bucket_seconds < 1:
        raise ValueError(f"bucket_seconds must be a positive number of seconds, got {bucket_seconds}")
    per_policy = {}
    for policy in ("baseline", "scheduler"):
        outcomes = [outcome for outcome in result.runs[policy].outcomes if outcome.end is not None]
        buckets = np.array([outcome.end // bucket_seconds for outcome in outcomes], dtype=np.int64)
        grams = np.array([outcome.emissions_g for outcome in outcomes], dtype=float)
        per_policy[policy] = (buckets, grams)

    all_buckets = np.concatenate([buckets for buckets, _ in per_policy.values()])
    if all_buckets.size == 0:
        empty = np.zeros(0)
        return BucketedEmissions(bucket_seconds, np.zeros(0, dtype=np.int64), empty, empty)
    first, last = int(all_buckets.min()), int(all_buckets.max())
    sums = {
        policy: np.bincount(buckets - first, weights=grams, minlength=last - first + 1)
        for policy, (buckets, grams) in per_policy.items()
    }
    return BucketedEmissions(
        bucket_seconds=bucket_seconds,
        starts=np.arange(first, last + 1, dtype=np.int64) * bucket_seconds,
        baseline_g=sums["baseline"],
        scheduler_g=sums["scheduler"],
    )


def saving_bucket_seconds(first_time: int, last_time: int) -> int:
    """Return the savings bucket size in seconds: an hour for spans up to
    `HOURLY_BUCKETS_UP_TO_SECONDS`, else a day."""
    return HOUR_SECONDS if last_time - first_time <= HOURLY_BUCKETS_UP_TO_SECONDS else DAY_SECONDS


# Drawing --------------------------------------------------------------------------


def write_dashboard_preview(
    result: ReplayResult, path: str | Path, *, forecaster: Forecaster | None = None
) -> Path:
    """Draw the six dashboard panels of `result` into one PNG of `FIGURE_PIXELS`
    at `path`, creating its folder if needed, and return the path.

    `forecaster` draws the forecast panel. By default it is a new instance of the
    forecaster the replay planned with (`result.forecaster`). Raises ValueError
    when the runs do not fit the tasks (see `summary.ordered_runs`), the levels do
    not fit the trace, or the forecaster returns an invalid forecast.
    """
    with matplotlib.rc_context(_STYLE):
        figure = _build_figure(result, forecaster)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Matplotlib creates tick labels while saving, so saving must also happen
        # inside the style.
        return save_png(figure, path)


def _build_figure(result: ReplayResult, forecaster: Forecaster | None) -> Figure:
    ordered_runs(result)
    values = np.asarray(result.trace.values, dtype=float)
    levels = np.asarray(result.levels)
    if levels.shape != values.shape:
        raise ValueError(
            f"levels have shape {levels.shape} but the trace values have shape {values.shape}; "
            "the replay must record one level per region and trace step"
        )
    if forecaster is None:
        forecaster = make_forecaster(result.forecaster)

    view = intensity_view(result, values, levels)
    first_time, last_time = _time_range(result, view)
    to_days = days_converter()
    limits = (float(to_days(first_time)), float(to_days(last_time)))

    figure = Figure(figsize=FIGURE_INCHES, dpi=DPI, layout="constrained")
    panels = figure.subfigures(3, 2, wspace=0.02, hspace=0.02)
    for panel in panels.flat:
        panel.set_facecolor(_PANEL_FACE)
        panel.set_edgecolor(_PANEL_EDGE)
        panel.set_linewidth(1.0)

    _draw_intensity(panels[0, 0], result, view, limits)
    comparison = forecast_comparison(result, forecaster, first_time=view.first_time, last_time=view.last_time)
    _draw_forecast(panels[0, 1], comparison, limits)
    _draw_tasks(panels[1, 0], task_counts(result))
    _draw_deferred(panels[1, 1], deferred_waiting(result), wait_percentiles(result), limits)
    _draw_emissions(panels[2, 0], result, limits)
    bucket_seconds = saving_bucket_seconds(first_time, last_time)
    _draw_saved(panels[2, 1], emissions_by_bucket(result, bucket_seconds=bucket_seconds), limits)

    figure.suptitle(
        f"Replay of {len(result.tasks):,} tasks, {format_time(first_time)} to {format_time(last_time)}: "
        "the Grafana dashboard panels",
        fontweight="bold",
    )
    return figure


def _time_range(result: ReplayResult, view: IntensityView) -> tuple[int, int]:
    """Return the span every time panel shows: the plotted trace window, widened to
    any arrival or end outside it."""
    first, last = view.first_time, view.last_time
    if result.tasks:
        first = min(first, min(task.arrival for task in result.tasks))
    for policy in ("scheduler", "baseline"):
        ends = [outcome.end for outcome in result.runs[policy].outcomes if outcome.end is not None]
        if ends:
            last = max(last, max(ends))
    return first, last


def _panel_title(panel: SubFigure, title: str) -> None:
    panel.suptitle(title, x=0.01, ha="left", fontweight="bold")


def _format_time_axis(ax: Axes) -> None:
    # At most six ticks, because the narrowest panel has room for no more month names.
    locator = mdates.AutoDateLocator(tz=UTC, minticks=3, maxticks=6)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel(TIME_LABEL)


def _region_color(index: int) -> str:
    return REGION_COLORS[index % len(REGION_COLORS)]


def _draw_intensity(panel: SubFigure, result: ReplayResult, view: IntensityView, limits: tuple[float, float]) -> None:
    _panel_title(panel, TITLE_INTENSITY)
    regions = list(result.trace.regions)
    lines, strip = panel.subplots(2, 1, sharex=True, height_ratios=(3.2, 0.35 + 0.3 * len(regions)))

    for index, region in enumerate(regions):
        mean = view.mean[index]
        # Repeat the last value at the final edge so the last step is drawn full width.
        lines.plot(
            view.edges,
            np.append(mean, mean[-1]),
            drawstyle="steps-post",
            color=_region_color(index),
            linewidth=1.4,
            label=region,
        )
    lines.set_ylabel(INTENSITY_LABEL)
    # Headroom above the highest value keeps the legend off the lines.
    lines.set_ylim(0, max(float(np.nanmax(view.mean)), 1.0) * 1.25)
    lines.grid(True, alpha=0.3)
    lines.legend(loc="upper left", ncols=len(regions), frameon=True)
    if view.binned:
        bin_seconds = round((view.last_time - view.first_time) / view.mean.shape[1])
        lines.set_title(f"mean of each {format_duration(bin_seconds)}", loc="right", fontsize="small")

    # One row per region shows its level, as a Grafana state timeline does.
    for index in range(len(regions)):
        for value, (color, _) in LEVEL_SHADES.items():
            spans = runs_of(view.level[index] == int(value), view.edges)
            if spans:
                strip.broken_barh(spans, (index - 0.4, 0.8), color=color, alpha=LEVEL_ALPHA * 3, linewidth=0)
    strip.set_yticks(range(len(regions)), regions)
    strip.set_ylim(len(regions) - 0.5, -0.5)
    strip.set_xlim(*limits)
    strip.tick_params(axis="y", length=0)
    handles = [Patch(color=color, alpha=LEVEL_ALPHA * 3, label=label) for color, label in LEVEL_SHADES.values()]
    handles.append(Patch(facecolor="none", edgecolor="#999999", label=f"{Level.MEDIUM.label} level (unshaded)"))
    panel.legend(handles=handles, loc="outside lower center", ncols=3, frameon=False)
    _format_time_axis(strip)


def _draw_forecast(panel: SubFigure, comparison: ForecastComparison, limits: tuple[float, float]) -> None:
    _panel_title(panel, TITLE_FORECAST)
    regions = comparison.regions
    axes = panel.subplots(len(regions), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    hours = comparison.horizon_seconds / HOUR_SECONDS
    lead = f"{hours:g} h" if hours >= 1 else format_duration(comparison.horizon_seconds)

    if comparison.target_times.size == 0:
        for ax in axes:
            ax.set_yticks([])
        axes[0].text(
            0.5,
            0.5,
            f"the trace has no step with {lead} of history before it in this window",
            ha="center",
            va="center",
            transform=axes[0].transAxes,
        )
    else:
        x = days_converter()(comparison.target_times)
        errors = comparison.mean_absolute_error()
        for index, (ax, region) in enumerate(zip(axes, regions, strict=True)):
            ax.plot(x, comparison.measured[index], color=_region_color(index), linewidth=2.4)
            # Dashed lines drew many different pixels from one save to the next in
            # one process (matplotlib 3.11.2, Agg), so the forecast is a thin solid line.
            ax.plot(x, comparison.forecast[index], color=_FORECAST_COLOR, linewidth=1.1)
            ax.text(
                0.005,
                0.95,
                f"{region}: MAE {errors[index]:.0f} {INTENSITY_LABEL}",
                transform=ax.transAxes,
                ha="left",
                va="top",
                fontsize="medium",
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none", "pad": 1.5},
            )
            ax.set_ylim(bottom=0)
            ax.yaxis.set_major_locator(MaxNLocator(3))
            ax.grid(True, alpha=0.3)
        axes[len(axes) // 2].set_ylabel(INTENSITY_LABEL)
        panel.legend(
            handles=[
                Line2D([], [], color=_region_color(0), linewidth=2.4, label="measured (colour per region)"),
                Line2D([], [], color=_FORECAST_COLOR, linewidth=1.1, label=f"{comparison.forecaster}, issued {lead} ahead"),
            ],
            loc="outside lower center",
            ncols=2,
            frameon=False,
        )
    axes[-1].set_xlim(*limits)
    _format_time_axis(axes[-1])


def _draw_tasks(panel: SubFigure, counts: TaskCounts) -> None:
    _panel_title(panel, TITLE_TASKS)
    ax = panel.subplots()
    regions = counts.regions
    positions = np.arange(len(counts.classes), dtype=float)
    width = 0.8 / max(len(regions), 1)
    offsets = (np.arange(len(regions)) - (len(regions) - 1) / 2) * width

    for index, region in enumerate(regions):
        bars = ax.bar(positions + offsets[index], counts.started[:, index], width, color=_region_color(index), label=region)
        ax.bar_label(bars, labels=[f"{count:,}" for count in counts.started[:, index]], fontsize="small", padding=2)

    if counts.expected is not None:
        x = (positions[:, None] + offsets[None, :]).ravel()
        y = counts.expected.ravel()
        has_expected = ~np.isnan(y)
        # One LineCollection draws every marker: a bar-wide dash at the expected count.
        ax.hlines(
            y[has_expected],
            x[has_expected] - width / 2,
            x[has_expected] + width / 2,
            colors=_EXPECTED_COLOR,
            linewidths=3,
            zorder=3,
            label="expected",
        )

    totals = counts.started.sum(axis=1)
    ax.set_xticks(positions, [f"{name}\n{int(total):,} started" for name, total in zip(counts.classes, totals, strict=True)])
    ax.set_ylabel("tasks started (scheduler)")
    top = float(counts.started.max()) if counts.started.size else 0.0
    if counts.expected is not None and np.isfinite(counts.expected).any():
        top = max(top, float(np.nanmax(counts.expected)))
    # Headroom above the tallest bar keeps the one-row legend off the bars.
    ax.set_ylim(0, max(top, 1.0) * 1.3)
    ax.yaxis.set_major_formatter(EngFormatter(sep=""))
    ax.grid(True, axis="y", alpha=0.3)
    legend_entries = len(regions) + (1 if counts.expected is not None else 0)
    ax.legend(loc="upper center", ncols=legend_entries)


def _draw_deferred(
    panel: SubFigure,
    waiting: StepSeries,
    percentiles: dict[str, np.ndarray | None],
    limits: tuple[float, float],
) -> None:
    _panel_title(panel, TITLE_DEFERRED)
    queue, waits = panel.subplots(1, 2, width_ratios=(2.2, 1.1))

    to_days = days_converter()
    if waiting.times.size:
        # Start at zero on the left edge and hold the last count to the right edge.
        x = np.concatenate(([limits[0]], to_days(waiting.times), [limits[1]]))
        y = np.concatenate(([0], waiting.values, [waiting.values[-1]]))
        queue.fill_between(x, y, step="post", color=REGION_COLORS[0], alpha=0.25, linewidth=0)
        queue.plot(x, y, drawstyle="steps-post", color=REGION_COLORS[0], linewidth=1.2)
    else:
        queue.text(0.5, 0.5, "no deferrable tasks", ha="center", va="center", transform=queue.transAxes)
    queue.set_ylabel("deferrable tasks waiting")
    queue.set_ylim(bottom=0)
    queue.yaxis.set_major_locator(MaxNLocator(integer=True))
    queue.set_xlim(*limits)
    queue.grid(True, alpha=0.3)
    _format_time_axis(queue)

    # Waits span seconds (critical) to hours (deferrable), which no shared bar
    # scale shows well, so the percentiles are a table.
    waits.axis("off")
    cells = [
        [format_duration(seconds) for seconds in values] if values is not None else ["none started"] * len(WAIT_PERCENTILES)
        for values in percentiles.values()
    ]
    table = waits.table(
        cellText=cells,
        rowLabels=list(percentiles),
        colLabels=[f"p{percentile}" for percentile in WAIT_PERCENTILES],
        colWidths=[0.45] * len(WAIT_PERCENTILES),
        loc="center",
        cellLoc="center",
    )
    table.auto_set_font_size(False)
    table.set_fontsize(matplotlib.rcParams["font.size"])
    table.scale(1.0, 2.2)
    # The table is centred, so a title at the top of the axes would float far above it.
    waits.set_title("wait per class\n(started tasks)", fontsize="medium", y=0.7)


def _draw_emissions(panel: SubFigure, result: ReplayResult, limits: tuple[float, float]) -> None:
    _panel_title(panel, TITLE_EMISSIONS)
    ax = panel.subplots()
    to_days = days_converter()

    series = {policy: cumulative_emissions(result, policy) for policy in ("baseline", "scheduler")}
    totals = {policy: float(line.values[-1]) / 1000.0 if line.values.size else 0.0 for policy, line in series.items()}
    decimals = kg_decimals(totals.values())
    for policy, line in series.items():
        # Every line starts at zero on the left edge and runs flat to the right edge.
        x = np.concatenate(([limits[0]], to_days(line.times), [limits[1]]))
        y = np.concatenate(([0.0], line.values / 1000.0, [totals[policy]]))
        label = f"{POLICY_LABELS[policy]}: {totals[policy]:,.{decimals}f} kg"
        ax.plot(x, y, drawstyle="steps-post", label=label, **POLICY_STYLES[policy])

    top = max(totals.values())
    saved = totals["baseline"] - totals["scheduler"]
    title = "no baseline emissions to compare"
    if totals["baseline"] > 0:
        # The arrow spans the gap between the totals at the right edge, and the
        # legend title gives its size, where no line can run through the text.
        ax.annotate(
            "",
            xy=(limits[1], totals["scheduler"]),
            xytext=(limits[1], totals["baseline"]),
            arrowprops={"arrowstyle": "<->", "color": "#333333", "linewidth": 1.5, "shrinkA": 0, "shrinkB": 0},
        )
        title = f"saved {saved:,.{decimals}f} kg ({100.0 * saved / totals['baseline']:.1f} %)"
    ax.set_ylim(0, max(top, 1e-9) * 1.1)
    ax.set_ylabel("emissions by task end (kg CO₂e)")
    ax.set_xlim(limits[0], limits[1] + 0.015 * (limits[1] - limits[0]))
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", title=title, title_fontproperties={"weight": "bold"})
    _format_time_axis(ax)


def _draw_saved(panel: SubFigure, buckets: BucketedEmissions, limits: tuple[float, float]) -> None:
    _panel_title(panel, TITLE_SAVED[buckets.bucket_seconds])
    ax = panel.subplots()
    to_days = days_converter()
    width = buckets.bucket_seconds / DAY_SECONDS

    grams = EngFormatter(unit="g", places=1)
    saved = buckets.saved_g
    if saved.size:
        x = to_days(buckets.starts)
        gained = saved >= 0
        # One bar call per sign, so the legend gets one entry per colour.
        ax.bar(x[gained], saved[gained], width * 0.9, align="edge", color=_SAVED_COLOR, label="saved")
        ax.bar(x[~gained], saved[~gained], width * 0.9, align="edge", color=_LOST_COLOR, label="emitted more")
        ax.axhline(0, color="#333333", linewidth=0.8)
        ax.text(
            0.01,
            0.97,
            f"{grams(float(saved.sum()))} saved in {saved.size} {BUCKET_NAMES[buckets.bucket_seconds]}s",
            transform=ax.transAxes,
            ha="left",
            va="top",
            bbox={"facecolor": "white", "alpha": 0.85, "edgecolor": "none"},
        )
        ax.legend(loc="upper right")
    else:
        ax.text(0.5, 0.5, "no task finished", ha="center", va="center", transform=ax.transAxes)
    ax.yaxis.set_major_formatter(EngFormatter(unit="g"))
    ax.set_ylabel("baseline − scheduler (CO₂e)")
    ax.set_xlim(limits[0], limits[1] + width)
    ax.grid(True, axis="y", alpha=0.3)
    _format_time_axis(ax)
