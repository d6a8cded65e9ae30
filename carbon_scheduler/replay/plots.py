"""PNG plots of a replay: intensity with levels and task starts, cumulative
emissions per policy, and where each class of task started.

Every plot builds its own `Figure` and renders it with the Agg canvas instead of
going through pyplot. No global figure state leaks between calls, and nothing needs
a display. PNGs carry no `Software` or time metadata, so the same replay gives the same bytes
with the same matplotlib and fonts.

Drawing stays fast for 100,000 tasks because tasks are drawn as one scatter per
region and class, never one artist per task, and traces longer than
`LONG_TRACE_SECONDS` are cut to the span of the workload and averaged into at most
`MAX_PLOTTED_STEPS` bins.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.dates as mdates
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from carbon_scheduler.model import Level, TaskClass
from carbon_scheduler.replay.results import POLICIES, ReplayResult
from carbon_scheduler.carbon.traces import format_time
from carbon_scheduler.replay.summary import ordered_runs, region_order
from carbon_scheduler.replay.table import POLICY_LABELS, kg_decimals

DAY_SECONDS = 86_400
LONG_TRACE_SECONDS = 60 * DAY_SECONDS
MAX_PLOTTED_STEPS = 2_000
# Task starts per region above which markers get smaller and translucent.
MARKER_CROWD = 500
DPI = 100

INTENSITY_FILE = "intensity.png"
CUMULATIVE_FILE = "cumulative_emissions.png"
DISTRIBUTION_FILE = "distribution.png"

LEVEL_SHADES = {Level.LOW: ("#1a9850", "low level"), Level.HIGH: ("#d73027", "high level")}
LEVEL_ALPHA = 0.15
CLASS_MARKERS = {
    TaskClass.CRITICAL: ("^", "#7b3294"),
    TaskClass.STANDARD: ("o", "#0571b0"),
    TaskClass.DEFERRABLE: ("s", "#e66101"),
}
POLICY_STYLES = {
    "scheduler": {"color": "#1b7837", "linestyle": "-", "linewidth": 2.0},
    "baseline": {"color": "#555555", "linestyle": "-", "linewidth": 1.5},
    "oracle": {"color": "#2166ac", "linestyle": "--", "linewidth": 1.5},
}
# Paul Tol's "bright" qualitative palette, distinguishable under common colour blindness.
REGION_COLORS = ("#4477aa", "#ee6677", "#228833", "#ccbb44", "#66ccee", "#aa3377", "#bbbbbb")
INTENSITY_LABEL = "g CO₂e/kWh"
TIME_LABEL = "time (UTC)"


def write_plots(result: ReplayResult, out_dir: str | Path) -> list[Path]:
    """Write `intensity.png`, `cumulative_emissions.png` and `distribution.png` into
    `out_dir`, creating it if needed, and return their paths in that order."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return [
        plot_intensity(result, out_dir / INTENSITY_FILE),
        plot_cumulative_emissions(result, out_dir / CUMULATIVE_FILE),
        plot_distribution(result, out_dir / DISTRIBUTION_FILE),
    ]


def plot_intensity(result: ReplayResult, path: str | Path) -> Path:
    """Plot each region's intensity over time, shaded by the level the scheduler saw
    (low green, high red), with the scheduler's task starts marked by class.

    A marker sits at the intensity of the step in which the task started, so a
    deferrable task that waited for a clean window shows up in a trough.
    """
    ordered_runs(result)
    trace = result.trace
    values = np.asarray(trace.values, dtype=float)
    levels = np.asarray(result.levels)
    if levels.shape != values.shape:
        raise ValueError(
            f"levels have shape {levels.shape} but the trace values have shape {values.shape}; "
            "the replay must record one level per region and trace step"
        )

    view = intensity_view(result, values, levels)
    starts = _scheduler_starts(result, view)
    regions = list(trace.regions)

    figure = Figure(figsize=(12, 1.2 + 2.2 * len(regions)), dpi=DPI, layout="constrained")
    axes = figure.subplots(len(regions), 1, sharex=True, sharey=True, squeeze=False)[:, 0]
    top = float(np.nanmax(view.high)) if view.high.size else 1.0
    for region_index, (ax, region) in enumerate(zip(axes, regions, strict=True)):
        _draw_region(ax, region_index, view, starts)
        ax.set_title(region, loc="left", fontsize="medium", fontweight="bold")
        ax.set_ylabel(INTENSITY_LABEL)
        ax.set_ylim(0, top * 1.08 if top > 0 else 1.0)
        ax.set_xlim(view.edges[0], view.edges[-1])
        ax.grid(True, axis="y", alpha=0.3)
    _format_time_axis(axes[-1])

    title = "Carbon intensity per region, level the scheduler saw, and scheduler task starts"
    if view.note:
        title += "\n" + view.note
    figure.suptitle(title)
    figure.legend(handles=_intensity_legend(view.binned), loc="outside lower center", ncols=6, frameon=False)
    return save_png(figure, path)


def plot_cumulative_emissions(result: ReplayResult, path: str | Path) -> Path:
    """Plot cumulative kg CO2e of each policy over time, each task counted at its
    end. Tasks that never ended add nothing."""
    runs = ordered_runs(result)
    to_days = days_converter()
    totals = {run.policy: run.emissions_g / 1000.0 for run in runs}
    decimals = kg_decimals(totals.values())

    series = {}
    for run in runs:
        ends = np.array([o.end for o in run.outcomes if o.end is not None], dtype=np.int64)
        grams = np.array([o.emissions_g for o in run.outcomes if o.end is not None], dtype=float)
        order = np.argsort(ends, kind="stable")
        series[run.policy] = (ends[order], np.cumsum(grams[order]) / 1000.0)

    figure = Figure(figsize=(11, 5.5), dpi=DPI, layout="constrained")
    ax = figure.subplots()
    all_ends = [ends for ends, _ in series.values() if ends.size]
    if all_ends:
        first = min(task.arrival for task in result.tasks)
        last = max(int(ends[-1]) for ends in all_ends)
        for policy in POLICIES:
            ends, cumulative = series[policy]
            # Every line starts at zero at the first arrival and runs flat to the
            # last end of any policy, so the right edge compares the totals.
            x = to_days(np.concatenate(([first], ends, [last])))
            y = np.concatenate(([0.0], cumulative, [cumulative[-1] if cumulative.size else 0.0]))
            label = f"{POLICY_LABELS[policy]}: {totals[policy]:,.{decimals}f} kg"
            ax.plot(x, y, drawstyle="steps-post", label=label, **POLICY_STYLES[policy])
        ax.legend(loc="upper left", title="total emissions")
        # A little room on the right keeps a jump at the last end visible.
        margin = max(last - first, 3600) * 0.02
        ax.set_xlim(float(to_days(first)), float(to_days(last + margin)))
        _format_time_axis(ax)
    else:
        ax.text(0.5, 0.5, "no task finished under any policy", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel(TIME_LABEL)

    ax.set_ylim(bottom=0)
    ax.set_ylabel("cumulative emissions (kg CO₂e)")
    ax.grid(True, alpha=0.3)
    ax.set_title("Cumulative emissions by task end time")
    return save_png(figure, path)


def plot_distribution(result: ReplayResult, path: str | Path) -> Path:
    """Plot the share of each class's started tasks per region as grouped bars:
    the scheduler, the carbon-blind baseline for reference, and the expected
    distribution when the result has one. Bars are labelled with task counts."""
    ordered_runs(result)
    regions = region_order(result)
    class_names = [task_class.value for task_class in TaskClass]
    class_names += sorted(set(result.expected_distribution).difference(class_names))

    panels = [
        (POLICY_LABELS[policy], *started_counts(result, policy, class_names, regions))
        for policy in ("scheduler", "baseline")
    ]
    if result.expected_distribution:
        expected = np.array(
            [
                [100.0 * float(result.expected_distribution.get(name, {}).get(region, 0.0)) for region in regions]
                for name in class_names
            ]
        )
        panels.append(("expected", expected, None))

    figure = Figure(figsize=(5.0 * len(panels) + 1.0, 5.0), dpi=DPI, layout="constrained")
    axes = figure.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    width = 0.8 / max(len(regions), 1)
    positions = np.arange(len(class_names), dtype=float)
    for ax, (title, shares, counts) in zip(axes, panels, strict=True):
        for region_index, region in enumerate(regions):
            offset = (region_index - (len(regions) - 1) / 2) * width
            bars = ax.bar(
                positions + offset,
                shares[:, region_index],
                width,
                color=REGION_COLORS[region_index % len(REGION_COLORS)],
                label=region,
            )
            if counts is not None:
                labels = [str(count) if count else "" for count in counts[:, region_index]]
            else:
                labels = [f"{share:.0f}%" if share else "" for share in shares[:, region_index]]
            ax.bar_label(bars, labels=labels, fontsize="x-small", padding=1)

        if counts is not None:
            ticks = [f"{name}\nn={int(total)}" for name, total in zip(class_names, counts.sum(axis=1), strict=True)]
        else:
            ticks = class_names
        ax.set_xticks(positions, ticks)
        if counts is None:
            for position, name in zip(positions, class_names, strict=True):
                if name not in result.expected_distribution:
                    ax.text(position, 2, "not given", ha="center", va="bottom", fontsize="small", color="#777777")
        ax.set_title(title)
        ax.set_ylim(0, 110)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("share of the class's started tasks (%)")

    figure.suptitle("Where each class of task started (bar labels: task counts)")
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside right upper", title="region", frameon=False)
    return save_png(figure, path)


@dataclass(frozen=True, slots=True)
class IntensityView:
    """The part of the trace to draw, possibly averaged into bins.

    `edges` has one more element than each row of `mean`: bin i spans
    [edges[i], edges[i + 1]) in matplotlib date units. `low` and `high` are the
    per-bin minimum and maximum, equal to `mean` when nothing was averaged.
    `level` is each bin's most frequent level. `note` describes how the view differs
    from the raw trace, one line per difference, and is empty when it does not.
    """

    edges: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    level: np.ndarray
    first_time: int
    last_time: int
    binned: bool
    note: str


def intensity_view(result: ReplayResult, values: np.ndarray, levels: np.ndarray) -> IntensityView:
    trace = result.trace
    step = int(trace.step_seconds)
    steps = values.shape[1]
    first, last = 0, steps
    notes = []

    if steps * step > LONG_TRACE_SECONDS and result.tasks:
        # A year of hourly data squeezed into 1200 pixels is a solid band. The
        # workload's own span, padded by a day each side, is the part that matters.
        span_start, span_end = _workload_span(result)
        first = max(0, (span_start - DAY_SECONDS - trace.start) // step)
        last = min(steps, -(-(span_end + DAY_SECONDS - trace.start) // step))
        if last <= first:
            first, last = 0, steps
        elif first > 0 or last < steps:
            notes.append(
                f"window {format_time(trace.start + first * step)} to {format_time(trace.start + last * step)}: "
                "the workload's span, padded by a day"
            )

    window = values[:, first:last]
    window_levels = levels[:, first:last]
    bin_steps = max(1, math.ceil((last - first) / MAX_PLOTTED_STEPS))
    bin_starts = np.arange(0, last - first, bin_steps)
    if bin_steps == 1:
        mean = low = high = window
        level = window_levels.astype(int)
    else:
        counts = np.diff(np.append(bin_starts, last - first))
        mean = np.add.reduceat(window, bin_starts, axis=1) / counts
        low = np.minimum.reduceat(window, bin_starts, axis=1)
        high = np.maximum.reduceat(window, bin_starts, axis=1)
        per_level = np.stack(
            [np.add.reduceat((window_levels == int(value)).astype(int), bin_starts, axis=1) for value in Level]
        )
        level = per_level.argmax(axis=0)
        notes.append(f"each point averages {bin_steps} steps, and the grey band spans their min to max")

    times = trace.start + (first + np.append(bin_starts, last - first)) * step
    return IntensityView(
        edges=days_converter()(times),
        mean=mean,
        low=low,
        high=high,
        level=level,
        first_time=int(trace.start + first * step),
        last_time=int(trace.start + last * step),
        binned=bin_steps > 1,
        note="\n".join(notes),
    )


def _workload_span(result: ReplayResult) -> tuple[int, int]:
    earliest = min(task.arrival for task in result.tasks)
    latest = max(max(task.arrival, task.deadline or task.arrival) for task in result.tasks)
    for run in result.runs.values():
        ends = [outcome.end for outcome in run.outcomes if outcome.end is not None]
        if ends:
            latest = max(latest, max(ends))
    return earliest, latest


@dataclass(frozen=True, slots=True)
class _Starts:
    """Scheduler task starts inside the drawn window, as parallel arrays."""

    x: np.ndarray
    y: np.ndarray
    region: np.ndarray
    task_class: np.ndarray


def _scheduler_starts(result: ReplayResult, view: IntensityView) -> _Starts:
    trace = result.trace
    region_index = {region: index for index, region in enumerate(trace.regions)}
    class_index = {task_class: index for index, task_class in enumerate(TaskClass)}
    started = [
        o
        for o in result.runs["scheduler"].outcomes
        if o.start is not None and o.region in region_index and view.first_time <= o.start < view.last_time
    ]
    times = np.array([o.start for o in started], dtype=np.int64)
    regions = np.array([region_index[o.region] for o in started], dtype=np.int64)
    classes = np.array([class_index[o.task.task_class] for o in started], dtype=np.int64)
    step_index = np.clip((times - trace.start) // trace.step_seconds, 0, trace.steps - 1)
    intensities = np.asarray(trace.values, dtype=float)[regions, step_index] if started else np.zeros(0)
    return _Starts(days_converter()(times), intensities, regions, classes)


def _draw_region(ax: Axes, region_index: int, view: IntensityView, starts: _Starts) -> None:
    edges = view.edges
    level = view.level[region_index]
    for value, (color, _) in LEVEL_SHADES.items():
        spans = runs_of(level == int(value), edges)
        if spans:
            ax.broken_barh(spans, (0, 1), transform=ax.get_xaxis_transform(), color=color, alpha=LEVEL_ALPHA, lw=0)

    if view.binned:
        ax.fill_between(
            edges[:-1],
            view.low[region_index],
            view.high[region_index],
            step="post",
            color="#333333",
            alpha=0.15,
            linewidth=0,
        )
    # Repeat the last value at the final edge so the last step is drawn full width.
    mean = view.mean[region_index]
    ax.plot(edges, np.append(mean, mean[-1]), drawstyle="steps-post", color="#333333", linewidth=1.0)

    in_region = starts.region == region_index
    # Thousands of large opaque markers would hide each other and the line, so
    # markers shrink and fade as their count grows past MARKER_CROWD. A dense cloud
    # still shows at which intensity each class started.
    crowding = math.sqrt(MARKER_CROWD / max(int(np.count_nonzero(in_region)), 1))
    size = float(np.clip(30.0 * crowding, 4.0, 30.0))
    alpha = float(np.clip(0.9 * crowding, 0.3, 0.9))
    for index, task_class in enumerate(TaskClass):
        mask = in_region & (starts.task_class == index)
        if not mask.any():
            continue
        marker, color = CLASS_MARKERS[task_class]
        ax.scatter(
            starts.x[mask],
            starts.y[mask],
            s=size,
            marker=marker,
            color=color,
            alpha=alpha,
            edgecolors="white" if crowding >= 1 else "none",
            linewidths=0.5,
            zorder=3,
        )


def runs_of(mask: np.ndarray, edges: np.ndarray) -> list[tuple[float, float]]:
    """Return (start, width) of each run of True in `mask`, in the units of `edges`."""
    padded = np.concatenate(([False], mask, [False])).astype(np.int8)
    changes = np.flatnonzero(np.diff(padded))
    begins, ends = changes[0::2], changes[1::2]
    return [(float(edges[b]), float(edges[e] - edges[b])) for b, e in zip(begins, ends, strict=True)]


def _intensity_legend(binned: bool) -> list[Line2D | Patch]:
    handles: list[Line2D | Patch] = [
        Line2D([], [], color="#333333", linewidth=1.0, label="mean intensity" if binned else "intensity")
    ]
    handles += [Patch(color=color, alpha=LEVEL_ALPHA * 2, label=label) for color, label in LEVEL_SHADES.values()]
    handles += [
        Line2D([], [], marker=marker, color=color, linestyle="none", markersize=6, label=f"{task_class.value} start")
        for task_class, (marker, color) in CLASS_MARKERS.items()
    ]
    return handles


def started_counts(
    result: ReplayResult, policy: str, class_names: Sequence[str], regions: Sequence[str]
) -> tuple[np.ndarray, np.ndarray]:
    """Return (percent of each class's started tasks, counts), both shaped
    (classes, regions)."""
    row = {name: index for index, name in enumerate(class_names)}
    column = {region: index for index, region in enumerate(regions)}
    counts = np.zeros((len(class_names), len(regions)), dtype=np.int64)
    for outcome in result.runs[policy].outcomes:
        if outcome.region is not None:
            counts[row[outcome.task.task_class.value], column[outcome.region]] += 1
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(100.0 * counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    return shares, counts


def days_converter() -> Callable[[np.ndarray | int], np.ndarray]:
    """Return a function from Unix seconds to matplotlib date numbers.

    The offset is read at call time because matplotlib's date epoch is a setting
    (`date.epoch`) that a user may have changed.
    """
    epoch = mdates.date2num(datetime(1970, 1, 1, tzinfo=UTC))

    def to_days(seconds: np.ndarray | int) -> np.ndarray:
        return np.asarray(seconds, dtype=float) / DAY_SECONDS + epoch

    return to_days


def _format_time_axis(ax: Axes) -> None:
    locator = mdates.AutoDateLocator(tz=UTC)
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=UTC))
    ax.set_xlabel(TIME_LABEL)


def save_png(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    FigureCanvasAgg(figure)
    # Dropping `Software` leaves a PNG with no version or time metadata in it.
    figure.savefig(path, format="png", dpi=DPI, metadata={"Software": None})
    return path
