"""The dashboard preview PNG of a replay: the numbers behind each panel, the file
it writes, and the `replay --dashboard-png` option.

The fixture is a hand-made replay on a 72-hour, two-region hourly trace. Outcomes
carry round emissions in grams instead of values integrated from the trace, so
every expected figure below is worked out by hand (H = one hour after START):

| task | class      | arrival | scheduler                      | baseline              |
|------|------------|---------|--------------------------------|-----------------------|
| c1   | critical   | H0      | eu-west H0..H1, 10 g           | us-east H0..H1, 30 g  |
| s1   | standard   | H2      | eu-west H2:30..H3:30, 10 g     | eu-west H2..H3, 20 g  |
| d1   | deferrable | H1      | us-east H5..H6, 5 g            | eu-west H1..H2, 25 g  |
| d2   | deferrable | H3      | eu-west H3..H4, 8 g            | eu-west H3..H4, 8 g   |
| d3   | deferrable | H4      | never started                  | us-east H4..H5, 12 g  |
| d4   | deferrable | H26     | eu-west H28..H29, 4 g          | eu-west H26..H27, 14 g|

Totals: scheduler 37 g, baseline 109 g, so 72 g saved.
"""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
from matplotlib.text import Text

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import Config, RegionSpec, SchedulerSettings
from carbon_scheduler.forecasting import SeasonalNaive
from carbon_scheduler.model import PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.replay import dashboard_preview
from carbon_scheduler.replay.dashboard_preview import (
    DAY_SECONDS,
    FIGURE_PIXELS,
    HOUR_SECONDS,
    StepSeries,
    cumulative_emissions,
    deferred_waiting,
    emissions_by_bucket,
    forecast_comparison,
    saving_bucket_seconds,
    task_counts,
    wait_percentiles,
    write_dashboard_preview,
)
from carbon_scheduler.replay.results import PolicyRun, ReplayResult, TaskOutcome

REPO = Path(__file__).resolve().parents[1]
H = HOUR_SECONDS
START = 1_697_846_400  # 2023-10-21T00:00:00Z, a midnight
STEPS = 72
REGIONS = ("eu-west", "us-east")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_trace(steps: int = STEPS) -> Trace:
    # Linear ramps: a forecast that repeats the value 24 steps back misses by
    # exactly 24 (eu-west) and 48 (us-east) g/kWh.
    hours = np.arange(steps, dtype=float)
    return Trace(REGIONS, START, H, np.array([100.0 + hours, 200.0 + 2.0 * hours]))


def make_task(task_id: str, task_class: TaskClass, arrival_hour: int) -> Task:
    return Task(
        id=task_id,
        task_class=task_class,
        arrival=START + arrival_hour * H,
        duration=H,
        home_region="eu-west",
        requirements=PodRequirements(request=Resources(milli_cpu=1000)),
    )


def ran(task: Task, region: str, start: int, grams: float) -> TaskOutcome:
    return TaskOutcome(task, region, f"{region}-node", start, start + task.duration, 0.1, grams)


def never_started(task: Task) -> TaskOutcome:
    return TaskOutcome(task, None, None, None, None, 0.0, 0.0)


TASKS = (
    make_task("c1", TaskClass.CRITICAL, 0),
    make_task("s1", TaskClass.STANDARD, 2),
    make_task("d1", TaskClass.DEFERRABLE, 1),
    make_task("d2", TaskClass.DEFERRABLE, 3),
    make_task("d3", TaskClass.DEFERRABLE, 4),
    make_task("d4", TaskClass.DEFERRABLE, 26),
)


def make_result(*, expected: dict[str, dict[str, float]] | None = None) -> ReplayResult:
    c1, s1, d1, d2, d3, d4 = TASKS
    scheduler = (
        ran(c1, "eu-west", START, 10.0),
        ran(s1, "eu-west", START + 2 * H + 1800, 10.0),
        ran(d1, "us-east", START + 5 * H, 5.0),
        ran(d2, "eu-west", START + 3 * H, 8.0),
        never_started(d3),
        ran(d4, "eu-west", START + 28 * H, 4.0),
    )
    baseline = (
        ran(c1, "us-east", START, 30.0),
        ran(s1, "eu-west", START + 2 * H, 20.0),
        ran(d1, "eu-west", START + 1 * H, 25.0),
        ran(d2, "eu-west", START + 3 * H, 8.0),
        ran(d3, "us-east", START + 4 * H, 12.0),
        ran(d4, "eu-west", START + 26 * H, 14.0),
    )
    trace = make_trace()
    levels = np.ones(trace.values.shape, dtype=np.int8)
    levels[0, 30:40] = 0
    levels[1, 10:20] = 2
    config = Config(SchedulerSettings(), tuple(RegionSpec(name=name, nodes=()) for name in REGIONS))
    return ReplayResult(
        trace=trace,
        config=config,
        tasks=TASKS,
        runs={
            "scheduler": PolicyRun("scheduler", scheduler),
            "baseline": PolicyRun("baseline", baseline),
            "oracle": PolicyRun("oracle", scheduler),
        },
        levels=levels,
        forecaster="seasonal-naive",
        expected_distribution=expected or {},
    )


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    # The IHDR chunk comes first: length, type, then width and height.
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# Deferred tasks and waits ----------------------------------------------------------


@pytest.mark.parametrize(
    ("hour", "waiting"),
    [
        pytest.param(0, 0, id="before-any-arrival"),
        pytest.param(1, 1, id="d1-arrives"),
        pytest.param(3, 1, id="d2-arrives-and-starts-at-once"),
        pytest.param(4, 2, id="d3-arrives"),
        pytest.param(5, 1, id="d1-starts"),
        pytest.param(25, 1, id="d3-never-starts"),
        pytest.param(26, 2, id="d4-arrives"),
        pytest.param(28, 1, id="d4-starts"),
        pytest.param(71, 1, id="end-of-trace"),
    ],
)
def test_deferred_waiting_counts(hour: int, waiting: int) -> None:
    series = deferred_waiting(make_result())

    assert series.at([START + hour * H])[0] == waiting


def test_deferred_waiting_change_points() -> None:
    series = deferred_waiting(make_result())

    assert series.times.tolist() == [START + hour * H for hour in (1, 3, 4, 5, 26, 28)]
    assert series.values.tolist() == [1, 1, 2, 1, 2, 1]


def test_deferred_waiting_counts_baseline() -> None:
    # The baseline starts every deferrable task when it arrives.
    series = deferred_waiting(make_result(), policy="baseline")

    assert series.values.tolist() == [0, 0, 0, 0]


def test_wait_percentiles_per_class() -> None:
    percentiles = wait_percentiles(make_result())

    assert percentiles["critical"].tolist() == [0.0, 0.0]
    assert percentiles["standard"].tolist() == [1800.0, 1800.0]
    # Deferrable waits of started tasks: 0, 2 h and 4 h. Linear interpolation puts
    # p95 at 1.9 of the way along the sorted waits: 7200 + 0.9 * 7200.
    assert percentiles["deferrable"].tolist() == [7200.0, 13680.0]


def test_wait_percentiles_none_without_started_tasks() -> None:
    result = make_result()
    scheduler = result.runs["scheduler"]
    outcomes = tuple(never_started(o.task) if o.task.task_class is TaskClass.CRITICAL else o for o in scheduler.outcomes)
    runs = dict(result.runs, scheduler=PolicyRun("scheduler", outcomes))

    percentiles = wait_percentiles(replace(result, runs=runs))

    assert percentiles["critical"] is None
    assert percentiles["standard"] is not None


# Where each class went --------------------------------------------------------


def test_task_counts_per_class_and_region() -> None:
    counts = task_counts(make_result())

    assert counts.classes == ("critical", "standard", "deferrable")
    assert counts.regions == REGIONS
    assert counts.started.tolist() == [[1, 0], [1, 0], [2, 1]]
    assert counts.expected is None


def test_task_counts_expected_markers() -> None:
    counts = task_counts(make_result(expected={"deferrable": {"eu-west": 0.25, "us-east": 0.75}}))

    assert counts.expected is not None
    # Three deferrable tasks started, so the shares become 0.75 and 2.25 tasks.
    assert counts.expected[2].tolist() == [0.75, 2.25]
    assert np.isnan(counts.expected[0]).all()
    assert np.isnan(counts.expected[1]).all()


# Emissions and savings ------------------------------------------------------------


def test_cumulative_emissions_by_end_time() -> None:
    series = cumulative_emissions(make_result(), "scheduler")

    assert series.times.tolist() == [START + H, START + 3 * H + 1800, START + 4 * H, START + 6 * H, START + 29 * H]
    assert series.values.tolist() == [10.0, 20.0, 28.0, 33.0, 37.0]


def test_cumulative_emissions_sums_equal_end_times() -> None:
    result = make_result()
    baseline = list(result.runs["baseline"].outcomes)
    # Move d1 to end with c1 at H1.
    baseline[2] = ran(TASKS[2], "eu-west", START, 25.0)
    runs = dict(result.runs, baseline=PolicyRun("baseline", tuple(baseline)))

    series = cumulative_emissions(replace(result, runs=runs), "baseline")

    assert series.times.tolist() == [START + hour * H for hour in (1, 3, 4, 5, 27)]
    assert series.values.tolist() == [55.0, 75.0, 83.0, 95.0, 109.0]


def test_grams_saved_per_hour() -> None:
    buckets = emissions_by_bucket(make_result(), bucket_seconds=H)

    assert buckets.starts[0] == START + H
    assert buckets.starts[-1] == START + 29 * H
    saved = dict(zip(((buckets.starts - START) // H).tolist(), buckets.saved_g.tolist(), strict=True))
    expected = {1: 20.0, 2: 25.0, 3: 10.0, 4: 0.0, 5: 12.0, 6: -5.0, 27: 14.0, 29: -4.0}
    for hour in range(1, 30):
        assert saved[hour] == expected.get(hour, 0.0), f"hour {hour}"
    assert buckets.saved_g.sum() == 72.0


def test_grams_saved_per_day() -> None:
    buckets = emissions_by_bucket(make_result(), bucket_seconds=DAY_SECONDS)

    assert buckets.starts.tolist() == [START, START + DAY_SECONDS]
    assert buckets.baseline_g.tolist() == [95.0, 14.0]
    assert buckets.scheduler_g.tolist() == [33.0, 4.0]
    assert buckets.saved_g.tolist() == [62.0, 10.0]


def test_grams_saved_empty_without_finished_tasks() -> None:
    result = make_result()
    runs = {policy: PolicyRun(policy, tuple(never_started(t) for t in TASKS)) for policy in result.runs}

    buckets = emissions_by_bucket(replace(result, runs=runs), bucket_seconds=H)

    assert buckets.starts.size == 0
    assert buckets.saved_g.size == 0


def test_grams_saved_rejects_bad_bucket() -> None:
    with pytest.raises(ValueError, match="bucket_seconds must be a positive number of seconds, got 0"):
        emissions_by_bucket(make_result(), bucket_seconds=0)


@pytest.mark.parametrize(
    ("span", "bucket"),
    [
        pytest.param(H, H, id="an-hour"),
        pytest.param(3 * DAY_SECONDS, H, id="three-days"),
        pytest.param(3 * DAY_SECONDS + 1, DAY_SECONDS, id="past-three-days"),
        pytest.param(365 * DAY_SECONDS, DAY_SECONDS, id="a-year"),
    ],
)
def test_saving_bucket_size(span: int, bucket: int) -> None:
    assert saving_bucket_seconds(START, START + span) == bucket


# Forecast 24 h ahead against actual -----------------------------------------------


def test_forecast_comparison_day_ahead() -> None:
    result = make_result()
    values = np.asarray(result.trace.values)

    comparison = forecast_comparison(result, SeasonalNaive(), first_time=START, last_time=START + STEPS * H)

    # Targets need an origin 24 steps earlier, so they are steps 24..71, and
    # seasonal-naive repeats the value 24 steps back.
    assert comparison.horizon_seconds == DAY_SECONDS
    assert comparison.target_times.tolist() == [START + step * H for step in range(24, STEPS)]
    assert comparison.measured.tolist() == values[:, 24:].tolist()
    assert comparison.forecast.tolist() == values[:, : STEPS - 24].tolist()
    assert comparison.mean_absolute_error().tolist() == [24.0, 48.0]


class RecordingForecaster:
    """Persistence that records what history it was given at each origin."""

    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, float]] = []

    def forecast(self, history: np.ndarray, last_time: int, step_seconds: int, horizon: int) -> np.ndarray:
        self.calls.append((len(history), last_time, float(history[-1])))
        return np.full(horizon, float(history[-1]))


def test_forecast_comparison_uses_past_only() -> None:
    result = make_result()
    recorder = RecordingForecaster()

    comparison = forecast_comparison(
        result, recorder, first_time=START + 30 * H, last_time=START + 40 * H, horizon_seconds=6 * H
    )

    assert comparison.target_times.tolist() == [START + step * H for step in range(30, 40)]
    # Region after region, the origin is 6 steps before each target, and the
    # history ends at the origin step.
    origins = list(range(24, 34))
    assert recorder.calls[: len(origins)] == [
        (origin + 1, START + origin * H, 100.0 + origin) for origin in origins
    ]
    assert recorder.calls[len(origins) :] == [
        (origin + 1, START + origin * H, 200.0 + 2.0 * origin) for origin in origins
    ]


def test_forecast_comparison_thins_long_windows() -> None:
    comparison = forecast_comparison(
        make_result(), SeasonalNaive(), first_time=START, last_time=START + STEPS * H, max_points=10
    )

    # 48 targets thinned to every 5th: steps 24, 29, ..., 69.
    assert comparison.target_times.tolist() == [START + step * H for step in range(24, STEPS, 5)]


def test_forecast_comparison_empty_without_history() -> None:
    result = replace(make_result(), trace=make_trace(steps=20), levels=np.ones((2, 20), dtype=np.int8))

    comparison = forecast_comparison(result, SeasonalNaive(), first_time=START, last_time=START + 20 * H)

    assert comparison.target_times.size == 0
    assert comparison.measured.shape == (2, 0)
    assert np.isnan(comparison.mean_absolute_error()).all()


def test_step_series_before_first_time() -> None:
    series = StepSeries(np.array([10, 20]), np.array([3, 5]))

    assert series.at([0, 9, 10, 19, 20, 99]).tolist() == [0, 0, 3, 3, 5, 5]


# The PNG ---------------------------------------------------------------------------


def test_preview_png_size(tmp_path: Path) -> None:
    path = write_dashboard_preview(make_result(), tmp_path / "nested" / "dashboards.png")

    assert path == tmp_path / "nested" / "dashboards.png"
    assert png_size(path) == FIGURE_PIXELS


def test_preview_renders_repeat(tmp_path: Path) -> None:
    result = make_result(expected={"deferrable": {"eu-west": 0.25, "us-east": 0.75}})

    first_path = write_dashboard_preview(result, tmp_path / "first.png")
    second_path = write_dashboard_preview(result, tmp_path / "second.png")
    first = first_path.read_bytes()

    # Agg's antialiasing rounds a few edge pixels differently from one render to
    # the next (one colour level), so the pixels are compared, not the bytes.
    first_pixels = (matplotlib.image.imread(first_path) * 255).round().astype(int)
    second_pixels = (matplotlib.image.imread(second_path) * 255).round().astype(int)
    assert first_pixels.shape == second_pixels.shape
    difference = np.abs(first_pixels - second_pixels)
    assert difference.max() <= 1
    assert np.count_nonzero(difference.any(axis=2)) <= 20
    assert b"Software" not in first
    assert b"tIME" not in first


def test_preview_rejects_levels_shape(tmp_path: Path) -> None:
    result = replace(make_result(), levels=np.ones((2, 10), dtype=np.int8))

    with pytest.raises(ValueError, match=r"levels have shape \(2, 10\) but the trace values have shape \(2, 72\)"):
        write_dashboard_preview(result, tmp_path / "bad.png")


def test_preview_rejects_unknown_forecaster(tmp_path: Path) -> None:
    result = replace(make_result(), forecaster="crystal-ball")

    with pytest.raises(ValueError, match="unknown forecaster 'crystal-ball'"):
        write_dashboard_preview(result, tmp_path / "bad.png")


def panel_titles(result: ReplayResult) -> list[str]:
    figure = dashboard_preview._build_figure(result, SeasonalNaive())
    return [panel._suptitle.get_text() for panel in figure.subfigs]


def test_preview_panel_titles() -> None:
    assert panel_titles(make_result()) == [
        "Carbon intensity by region",
        "Forecast 24 h ahead against actual",
        "Where each class went",
        "Deferred pods and wait times",
        "Cumulative emissions: scheduled against carbon-blind",
        "Grams CO2eq saved per hour",
    ]


def test_preview_daily_savings_title() -> None:
    result = replace(make_result(), trace=make_trace(steps=24 * 5), levels=np.ones((2, 24 * 5), dtype=np.int8))

    assert panel_titles(result)[-1] == "Grams CO2eq saved per day"


def test_preview_empty_workload(tmp_path: Path) -> None:
    result = replace(make_result(), tasks=(), runs={policy: PolicyRun(policy, ()) for policy in make_result().runs})

    path = write_dashboard_preview(result, tmp_path / "empty.png")

    assert png_size(path) == FIGURE_PIXELS


def many_tasks_result(count: int) -> ReplayResult:
    """The fixture's trace and config with `count` deferrable tasks, each waiting an hour."""
    result = make_result()
    tasks = tuple(make_task(f"t{i}", TaskClass.DEFERRABLE, i % 60) for i in range(count))
    outcomes = tuple(ran(task, REGIONS[i % 2], task.arrival + H, 1.0) for i, task in enumerate(tasks))
    runs = {policy: PolicyRun(policy, outcomes) for policy in result.runs}
    return replace(result, tasks=tasks, runs=runs)


def count_drawn_artists(result: ReplayResult) -> int:
    """Count the figure's artists other than text and axis ticks, whose number
    follows the value range instead of the data size."""
    figure = dashboard_preview._build_figure(result, SeasonalNaive())
    ticks = set()
    for ax in figure.axes:
        for axis in (ax.xaxis, ax.yaxis):
            for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                ticks.update(id(artist) for artist in tick.findobj())
    return sum(1 for artist in figure.findobj() if id(artist) not in ticks and not isinstance(artist, Text))


def test_preview_artists_independent_of_tasks() -> None:
    # Both workloads end tasks in the same 60 hourly buckets, so only an artist
    # per task could make the counts differ.
    assert count_drawn_artists(many_tasks_result(6000)) == count_drawn_artists(many_tasks_result(600))


# The command line ------------------------------------------------------------------


def run_replay(tmp_path: Path, png: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "carbon_scheduler.cli", "replay", "traces/demo.csv", "--days", "2"]
    command += ["--quiet", "--no-plots", "--out", str(tmp_path / "out"), "--dashboard-png", str(png)]
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)


def test_replay_writes_dashboard_png(tmp_path: Path) -> None:
    png = tmp_path / "docs" / "dashboards.png"

    run = run_replay(tmp_path, png)

    assert run.returncode == 0, run.stderr
    assert png_size(png) == FIGURE_PIXELS
    assert str(png) in run.stdout.replace("\n", "")
    assert not (tmp_path / "out" / "intensity.png").exists()


def test_replay_dashboard_png_unwritable(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the PNG's folder should be\n", encoding="utf-8")

    run = run_replay(tmp_path, blocker / "dashboards.png")

    assert run.returncode == 2
    assert f"{blocker / 'dashboards.png'} cannot be written, because {blocker} is a file, not a folder" in run.stderr
    assert "Traceback" not in run.stderr


def test_preview_titles_name_dashboard_panels() -> None:
    """Each preview panel is titled as a Grafana panel or row, so a reader finds it."""
    dashboards = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"
    grafana_titles: set[str] = set()
    for path in dashboards.glob("*.json"):
        grafana_titles.update(panel["title"] for panel in json.loads(path.read_text())["panels"])

    for title in panel_titles(make_result()):
        assert title.removesuffix(" per hour") in grafana_titles, title
