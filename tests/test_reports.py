"""Reports of a replay: JSON summary, per-task CSV, terminal table and PNG plots.

The fixture is a hand-built replay on a 48-hour, three-region trace. Its values and
PUEs make every task's emissions a round number of grams, so the expected figures
below are worked out by hand, not taken from the code under test:

- Every task requests 1 vCPU at a flat 100 W/vCPU and no memory, so it draws 0.1 kW
  before PUE. One hour costs eu-west 20 g (PUE 1.0, 200 g/kWh), 5 g in eu-west's
  clean window (hours 24 to 29, 50 g/kWh), us-east 60 g (PUE 1.5, 400 g/kWh) and
  asia-east 36 g (PUE 1.2, 300 g/kWh).
- critical c00..c09 arrive at hours 0..9. The scheduler runs c00..c07 in eu-west
  and c08, c09 in asia-east at once: 8*20 + 2*36 = 232 g. The baseline runs them
  at home (homes cycle eu-west, us-east, asia-east): 4*20 + 3*60 + 3*36 = 368 g.
  The oracle runs all in eu-west: 200 g.
- standard s00..s10 arrive at hours 10..20 and s11 at hour 47. The scheduler runs
  s00..s06 in eu-west at once, s07..s10 in eu-west after 30 minutes, and never
  starts s11: 11*20 = 220 g. Baseline: 4*20 + 4*60 + 4*36 = 464 g. Oracle: 12*20 =
  240 g.
- deferrable d00..d07 arrive at hours 12..19 with a 24-hour deadline, except d06
  whose deadline is 4 hours. The scheduler starts d00..d05 at hours 24..29, d06 at
  hour 24 (missing its deadline at hour 22) and d07 at hour 30: 7*5 + 20 = 55 g.
  Baseline: 3*20 + 3*60 + 2*36 = 312 g. Oracle: d06 at once in eu-west, the rest in
  the clean window: 20 + 7*5 = 55 g.

Totals: scheduler 507 g, baseline 1144 g, oracle 495 g.
"""

from __future__ import annotations

import csv
import io
import json
import re
import struct
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from carbon_scheduler.carbon.traces import Trace
from carbon_scheduler.config.types import Config, EnergyModel, RegionSpec, SchedulerSettings
from carbon_scheduler.model import PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.replay.plots import (
    MAX_PLOTTED_STEPS,
    intensity_view,
    plot_cumulative_emissions,
    plot_distribution,
    plot_intensity,
    write_plots,
)
from carbon_scheduler.replay.results import PolicyRun, ReplayResult, TaskOutcome
from carbon_scheduler.replay.summary import summarize, write_summary
from carbon_scheduler.replay.table import format_duration, print_report, render_table
from carbon_scheduler.replay.taskcsv import HEADER, write_tasks_csv

HOUR = 3600
START = 1_697_846_400  # 2023-10-21T00:00:00Z
REGIONS = ("eu-west", "us-east", "asia-east")
PUE = {"eu-west": 1.0, "us-east": 1.5, "asia-east": 1.2}
FLAT_100_W = EnergyModel(
    watts_per_vcpu_idle=100.0, watts_per_vcpu_busy=100.0, cpu_utilization=0.5, watts_per_gb_memory=0.0
)
ONE_VCPU = PodRequirements(request=Resources(milli_cpu=1000))
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def make_trace(steps: int = 48, *, step_seconds: int = HOUR) -> Trace:
    values = np.empty((3, steps))
    values[0] = 200.0
    values[0, 24:30] = 50.0
    values[1] = 400.0
    values[2] = 300.0
    return Trace(REGIONS, START, step_seconds, values, notes=("hand-made fixture trace",))


def make_config() -> Config:
    regions = tuple(
        RegionSpec(name=name, pue=PUE[name], energy=FLAT_100_W, nodes=()) for name in REGIONS
    )
    return Config(scheduler=SchedulerSettings(), regions=regions)


def make_task(task_id: str, task_class: TaskClass, hour: int, index: int, deadline_hours: int | None) -> Task:
    arrival = START + hour * HOUR
    return Task(
        id=task_id,
        task_class=task_class,
        arrival=arrival,
        duration=HOUR,
        home_region=REGIONS[index % 3],
        requirements=ONE_VCPU,
        deadline=None if deadline_hours is None else arrival + deadline_hours * HOUR,
    )


def ran(trace: Trace, config: Config, task: Task, region: str, start: int) -> TaskOutcome:
    spec = config.region(region)
    power_kw = spec.energy.watts(task.requirements.request) * spec.pue / 1000.0
    end = start + task.duration
    integral = trace.integrate(trace.regions.index(region), start, end)
    return TaskOutcome(
        task=task,
        region=region,
        node=f"{region}-node-1",
        start=start,
        end=end,
        energy_kwh=power_kw * task.duration / HOUR,
        emissions_g=power_kw * integral,
    )


def never_started(task: Task) -> TaskOutcome:
    return TaskOutcome(task=task, region=None, node=None, start=None, end=None, energy_kwh=0.0, emissions_g=0.0)


def make_tasks() -> tuple[Task, ...]:
    critical = [make_task(f"c{i:02d}", TaskClass.CRITICAL, i, i, None) for i in range(10)]
    standard = [make_task(f"s{i:02d}", TaskClass.STANDARD, 10 + i, i, None) for i in range(11)]
    standard.append(make_task("s11", TaskClass.STANDARD, 47, 11, None))
    deferrable = [
        make_task(f"d{i:02d}", TaskClass.DEFERRABLE, 12 + i, i, 4 if i == 6 else 24) for i in range(8)
    ]
    return tuple(critical + standard + deferrable)


def scheduler_outcome(trace: Trace, config: Config, task: Task) -> TaskOutcome:
    number = int(task.id[1:])
    if task.task_class is TaskClass.CRITICAL:
        region = "eu-west" if number < 8 else "asia-east"
        return ran(trace, config, task, region, task.arrival)
    if task.task_class is TaskClass.STANDARD:
        if number == 11:
            return never_started(task)
        wait = 0 if number < 7 else 1800
        return ran(trace, config, task, "eu-west", task.arrival + wait)
    start_hour = {6: 24, 7: 30}.get(number, 24 + number)
    return ran(trace, config, task, "eu-west", START + start_hour * HOUR)


def oracle_outcome(trace: Trace, config: Config, task: Task) -> TaskOutcome:
    number = int(task.id[1:])
    if task.task_class is TaskClass.DEFERRABLE and number != 6:
        return ran(trace, config, task, "eu-west", START + (24 + min(number, 5)) * HOUR)
    return ran(trace, config, task, "eu-west", task.arrival)


def make_result(
    *,
    trace: Trace | None = None,
    expected: dict[str, dict[str, float]] | None = None,
) -> ReplayResult:
    trace = trace or make_trace()
    config = make_config()
    tasks = make_tasks()
    runs = {
        "scheduler": PolicyRun("scheduler", tuple(scheduler_outcome(trace, config, t) for t in tasks)),
        "baseline": PolicyRun("baseline", tuple(ran(trace, config, t, t.home_region, t.arrival) for t in tasks)),
        "oracle": PolicyRun("oracle", tuple(oracle_outcome(trace, config, t) for t in tasks)),
    }
    levels = np.ones(trace.values.shape, dtype=np.int8)
    levels[0, 24:30] = 0
    levels[1, :] = 2
    return ReplayResult(
        trace=trace,
        config=config,
        tasks=tasks,
        runs=runs,
        levels=levels,
        seed=7,
        workload_source="generated",
        forecaster="seasonal-naive",
        expected_distribution=expected or {},
    )


@pytest.fixture
def result() -> ReplayResult:
    return make_result()


# Summary ---------------------------------------------------------------------------


def test_summary_totals(result: ReplayResult) -> None:
    summary = summarize(result)

    assert summary["tasks"] == 30
    assert summary["emissions_kg"] == {"scheduler": 0.507, "baseline": 1.144, "oracle": 0.495}
    assert summary["saving_percent"] == 55.682  # 100 * 637 / 1144
    assert summary["oracle_saving_percent"] == 56.731  # 100 * 649 / 1144
    assert summary["oracle_fraction"] == 0.9815  # 637 / 649
    assert summary["deadline_misses"] == 1
    assert summary["unstarted"] == 1


@pytest.mark.parametrize(
    ("task_class", "expected"),
    [
        pytest.param(
            "critical",
            {
                "tasks": 10,
                "mean_wait_seconds": 0.0,
                "max_wait_seconds": 0,
                "deadline_misses": 0,
                "emissions_kg": 0.232,
                "baseline_emissions_kg": 0.368,
                "unstarted": 0,
            },
            id="critical",
        ),
        pytest.param(
            "standard",
            {
                "tasks": 12,
                "mean_wait_seconds": 654.545,  # 4 * 1800 s over 11 started tasks
                "max_wait_seconds": 1800,
                "deadline_misses": 0,
                "emissions_kg": 0.22,
                "baseline_emissions_kg": 0.464,
                "unstarted": 1,
            },
            id="standard-one-unstarted",
        ),
        pytest.param(
            "deferrable",
            {
                "tasks": 8,
                "mean_wait_seconds": 40050.0,  # (6 * 12 h + 6 h + 11 h) / 8
                "max_wait_seconds": 43200,
                "deadline_misses": 1,
                "emissions_kg": 0.055,
                "baseline_emissions_kg": 0.312,
                "unstarted": 0,
            },
            id="deferrable-one-missed",
        ),
    ],
)
def test_summary_per_class(result: ReplayResult, task_class: str, expected: dict[str, object]) -> None:
    assert summarize(result)["per_class"][task_class] == expected


def test_summary_per_region(result: ReplayResult) -> None:
    summary = summarize(result)

    assert summary["per_region"] == {
        "eu-west": {"critical": 8, "standard": 11, "deferrable": 8},
        "us-east": {"critical": 0, "standard": 0, "deferrable": 0},
        "asia-east": {"critical": 2, "standard": 0, "deferrable": 0},
    }
    assert summary["policies"]["baseline"]["per_region"] == {
        "eu-west": {"critical": 4, "standard": 4, "deferrable": 3},
        "us-east": {"critical": 3, "standard": 4, "deferrable": 3},
        "asia-east": {"critical": 3, "standard": 4, "deferrable": 2},
    }
    assert summary["policies"]["oracle"]["per_region"]["eu-west"] == {
        "critical": 10,
        "standard": 12,
        "deferrable": 8,
    }


def test_summary_policies(result: ReplayResult) -> None:
    policies = summarize(result)["policies"]

    assert list(policies) == ["scheduler", "baseline", "oracle"]
    assert policies["scheduler"]["per_class"] == summarize(result)["per_class"]
    assert policies["baseline"]["emissions_kg"] == 1.144
    assert policies["baseline"]["deadline_misses"] == 0
    assert policies["baseline"]["per_class"]["standard"]["mean_wait_seconds"] == 0.0
    assert policies["oracle"]["emissions_kg"] == 0.495
    assert policies["oracle"]["deadline_misses"] == 0
    # Energy: 29 task-hours at 0.1 kW, 2 of them in asia-east (PUE 1.2).
    assert policies["scheduler"]["energy_kwh"] == 2.94
    assert policies["scheduler"]["unstarted"] == 1


def test_summary_trace_and_inputs(result: ReplayResult) -> None:
    summary = summarize(result)

    assert summary["trace"] == {
        "regions": ["eu-west", "us-east", "asia-east"],
        "start": "2023-10-21T00:00:00Z",
        "end": "2023-10-23T00:00:00Z",
        "step_seconds": 3600,
        "steps": 48,
        "notes": ["hand-made fixture trace"],
    }
    assert summary["seed"] == 7
    assert summary["workload"] == "generated"
    assert summary["forecaster"] == "seasonal-naive"
    assert summary["expected_distribution"] == {}


def test_summary_expected_distribution() -> None:
    expected = {"critical": {"eu-west": 1.0}, "deferrable": {"eu-west": 0.75, "asia-east": 0.25}}
    summary = summarize(make_result(expected=expected))

    assert summary["expected_distribution"] == {
        "critical": {
            "eu-west": {"expected": 1.0, "actual": 0.8},
            "us-east": {"expected": 0.0, "actual": 0.0},
            "asia-east": {"expected": 0.0, "actual": 0.2},
        },
        "deferrable": {
            "eu-west": {"expected": 0.75, "actual": 1.0},
            "us-east": {"expected": 0.0, "actual": 0.0},
            "asia-east": {"expected": 0.25, "actual": 0.0},
        },
    }


def test_summary_oracle_fraction_null_without_headroom(result: ReplayResult) -> None:
    runs = dict(result.runs)
    runs["oracle"] = PolicyRun("oracle", result.runs["baseline"].outcomes)
    summary = summarize(replace(result, runs=runs))

    assert summary["oracle_fraction"] is None
    assert summary["oracle_saving_percent"] == 0.0
    assert summary["saving_percent"] == 55.682


def test_summary_rejects_missing_policy(result: ReplayResult) -> None:
    runs = {policy: run for policy, run in result.runs.items() if policy != "oracle"}

    with pytest.raises(ValueError, match=r"missing: \['oracle'\]"):
        summarize(replace(result, runs=runs))


def test_summary_rejects_outcomes_out_of_order(result: ReplayResult) -> None:
    runs = dict(result.runs)
    runs["baseline"] = PolicyRun("baseline", tuple(reversed(result.runs["baseline"].outcomes)))

    with pytest.raises(ValueError, match="outcome 0 is for task 'd07', expected 'c00'"):
        summarize(replace(result, runs=runs))


def test_summary_rejects_nan_emissions(result: ReplayResult) -> None:
    runs = dict(result.runs)
    outcomes = list(result.runs["scheduler"].outcomes)
    outcomes[3] = replace(outcomes[3], emissions_g=float("nan"))
    runs["scheduler"] = PolicyRun("scheduler", tuple(outcomes))

    with pytest.raises(ValueError, match="task 'c03' has non-finite"):
        summarize(replace(result, runs=runs))


def test_write_summary_byte_identical(tmp_path: Path) -> None:
    first = write_summary(summarize(make_result()), tmp_path / "first.json")
    second = write_summary(summarize(make_result()), tmp_path / "second.json")

    data = first.read_bytes()
    assert data == second.read_bytes()
    assert data.endswith(b"}\n")
    assert not data.endswith(b"\n\n")
    assert str(tmp_path).encode() not in data
    assert b'  "deadline_misses": 1,\n' in data
    parsed = json.loads(data)
    assert list(parsed) == sorted(parsed)
    assert parsed == summarize(make_result())


def test_write_summary_rejects_nan(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        write_summary({"saving_percent": float("nan")}, tmp_path / "summary.json")


# Per-task CSV -----------------------------------------------------------------------


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as stream:
        return list(csv.DictReader(stream))


def test_tasks_csv_layout(result: ReplayResult, tmp_path: Path) -> None:
    path = write_tasks_csv(result, tmp_path / "tasks.csv")
    lines = path.read_text(encoding="utf-8").split("\n")

    assert lines[0] == "policy,task_id,class,home_region,region,node,arrival,start,end,deadline,energy_kwh,emissions_g"
    assert lines[0] == ",".join(HEADER)
    assert lines[-1] == ""
    assert len(lines) == 1 + 90 + 1
    rows = read_csv(path)
    assert [row["policy"] for row in rows] == ["scheduler"] * 30 + ["baseline"] * 30 + ["oracle"] * 30
    assert [row["task_id"] for row in rows[:30]] == [task.id for task in result.tasks]


@pytest.mark.parametrize(
    ("line_number", "expected"),
    [
        pytest.param(
            1,
            "scheduler,c00,critical,eu-west,eu-west,eu-west-node-1,2023-10-21T00:00:00Z,"
            "2023-10-21T00:00:00Z,2023-10-21T01:00:00Z,,0.100000000,20.000000",
            id="critical-no-deadline",
        ),
        pytest.param(
            22,
            "scheduler,s11,standard,asia-east,,,2023-10-22T23:00:00Z,,,,0.000000000,0.000000",
            id="unstarted-empty-cells",
        ),
        pytest.param(
            29,
            "scheduler,d06,deferrable,eu-west,eu-west,eu-west-node-1,2023-10-21T18:00:00Z,"
            "2023-10-22T00:00:00Z,2023-10-22T01:00:00Z,2023-10-21T22:00:00Z,0.100000000,5.000000",
            id="missed-deadline",
        ),
        pytest.param(
            32,
            "baseline,c01,critical,us-east,us-east,us-east-node-1,2023-10-21T01:00:00Z,"
            "2023-10-21T01:00:00Z,2023-10-21T02:00:00Z,,0.150000000,60.000000",
            id="baseline-home-us-east",
        ),
    ],
)
def test_tasks_csv_rows(result: ReplayResult, tmp_path: Path, line_number: int, expected: str) -> None:
    lines = write_tasks_csv(result, tmp_path / "tasks.csv").read_text(encoding="utf-8").split("\n")

    assert lines[line_number] == expected


def test_tasks_csv_emissions_recompute(result: ReplayResult, tmp_path: Path) -> None:
    rows = read_csv(write_tasks_csv(result, tmp_path / "tasks.csv"))
    trace, config = result.trace, result.config
    tasks = {task.id: task for task in result.tasks}

    checked = 0
    for row in rows:
        if not row["start"]:
            assert row["emissions_g"] == "0.000000"
            continue
        spec = config.region(row["region"])
        task = tasks[row["task_id"]]
        start = _parse_utc(row["start"])
        end = _parse_utc(row["end"])
        power_kw = spec.energy.watts(task.requirements.request) / 1000.0
        integral = trace.integrate(trace.regions.index(row["region"]), start, end)

        assert row["emissions_g"] == f"{power_kw * spec.pue * integral:.6f}", row
        assert row["energy_kwh"] == f"{power_kw * spec.pue * (end - start) / HOUR:.9f}", row
        checked += 1
    assert checked == 89


def test_tasks_csv_byte_identical(tmp_path: Path) -> None:
    first = write_tasks_csv(make_result(), tmp_path / "first.csv")
    second = write_tasks_csv(make_result(), tmp_path / "second.csv")

    assert first.read_bytes() == second.read_bytes()


def test_tasks_csv_quotes_commas(result: ReplayResult, tmp_path: Path) -> None:
    tasks = tuple(replace(task, id=f"job,{task.id}") for task in result.tasks)
    runs = {
        policy: PolicyRun(policy, tuple(replace(o, task=t) for o, t in zip(run.outcomes, tasks, strict=True)))
        for policy, run in result.runs.items()
    }
    path = write_tasks_csv(replace(result, tasks=tasks, runs=runs), tmp_path / "tasks.csv")

    assert path.read_text(encoding="utf-8").split("\n")[1].startswith('scheduler,"job,c00",critical,')
    assert read_csv(path)[0]["task_id"] == "job,c00"


def _parse_utc(text: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp())


# Terminal table -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(None, "-", id="none"),
        pytest.param(0, "0s", id="zero"),
        pytest.param(45, "45s", id="seconds"),
        pytest.param(59.6, "1m00s", id="rounds-up-to-minute"),
        pytest.param(125, "2m05s", id="minutes"),
        pytest.param(654.545, "10m55s", id="fractional-minutes"),
        pytest.param(3599.6, "1h00m", id="rounds-up-to-hour"),
        pytest.param(3900, "1h05m", id="hours"),
        pytest.param(40050, "11h08m", id="half-minute-rounds-up"),
        pytest.param(86_399, "1d00h", id="rounds-up-to-day"),
        pytest.param(2 * 86_400 + 3 * 3600, "2d03h", id="days"),
        pytest.param(-90, "-1m30s", id="negative"),
    ],
)
def test_format_duration(seconds: float | None, expected: str) -> None:
    assert format_duration(seconds) == expected


def report_text(summary: dict) -> str:
    console = Console(file=io.StringIO(), width=120)
    print_report(summary, console)
    return console.file.getvalue()


def flat(text: str) -> str:
    """Collapse runs of whitespace, so sentence checks ignore line wrapping."""
    return " ".join(text.split())


def row_cells(text: str, first_cell: str) -> list[str]:
    """Return the cells of the table row whose first cell is `first_cell`."""
    for line in text.splitlines():
        # Tables are drawn without vertical rules: cells are separated by two or
        # more spaces (cells themselves hold at most single spaces).
        cells = [cell.strip() for cell in re.split(r"[│┃|]| {2,}", line)]
        cells = [cell for cell in cells if cell]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no row starting with {first_cell!r} in:\n{text}")


def test_report_per_class_rows(result: ReplayResult) -> None:
    text = report_text(summarize(result))

    # The largest kg value is 0.464, so the column shows 4 significant digits.
    assert row_cells(text, "critical") == ["critical", "10", "0", "0s", "0s", "0", "0.2320", "0.3680", "37.0%"]
    assert row_cells(text, "standard") == ["standard", "12", "1", "10m55s", "30m00s", "0", "0.2200", "0.4640", "52.6%"]
    assert row_cells(text, "deferrable") == [
        "deferrable",
        "8",
        "0",
        "11h08m",
        "12h00m",
        "1",
        "0.0550",
        "0.3120",
        "82.4%",
    ]


def test_report_totals(result: ReplayResult) -> None:
    text = report_text(summarize(result))

    assert row_cells(text, "scheduler") == ["scheduler", "0.507", "55.7%", "1", "1"]
    assert row_cells(text, "baseline (carbon-blind)") == ["baseline (carbon-blind)", "1.144", "-", "0", "0"]
    assert row_cells(text, "oracle (knows the trace)") == ["oracle (knows the trace)", "0.495", "56.7%", "0", "0"]
    assert "The scheduler saved 0.637 kg CO2e (55.7%) against the carbon-blind baseline." in flat(text)
    assert "It reached 98.2% of the oracle's saving." in flat(text)
    assert "Deadline misses: 1, tasks not started: 1." in flat(text)


def test_report_regions_and_header(result: ReplayResult) -> None:
    text = report_text(summarize(result))

    assert row_cells(text, "eu-west") == ["eu-west", "8", "11", "8"]
    assert row_cells(text, "asia-east") == ["asia-east", "2", "0", "0"]
    assert "Replay of 30 tasks (generated workload, seed 7, forecaster seasonal-naive)" in flat(text)
    assert "Trace: eu-west, us-east, asia-east, 2023-10-21T00:00:00Z to 2023-10-23T00:00:00Z, 1h00m steps" in flat(text)


def test_report_expected_shares(result: ReplayResult) -> None:
    expected = {"critical": {"eu-west": 1.0}}
    text = report_text(summarize(make_result(expected=expected)))

    assert "critical (actual/expected)" in text
    assert row_cells(text, "eu-west") == ["eu-west", "8 (80%/100%)", "11", "8"]
    assert row_cells(text, "asia-east") == ["asia-east", "2 (20%/0%)", "0", "0"]


def test_report_plain_on_non_terminal(result: ReplayResult) -> None:
    text = report_text(summarize(result))

    assert "\x1b[" not in text
    assert max(len(line) for line in text.splitlines()) <= 120


def test_report_without_oracle_headroom(result: ReplayResult) -> None:
    runs = dict(result.runs)
    runs["oracle"] = PolicyRun("oracle", result.runs["baseline"].outcomes)
    text = report_text(summarize(replace(result, runs=runs)))

    assert "The oracle could not beat the baseline, so there is no headroom to compare with." in flat(text)
    assert "oracle's saving" not in text


def test_render_table_columns(result: ReplayResult) -> None:
    table = render_table(summarize(result))

    assert [str(column.header) for column in table.columns] == [
        "class",
        "tasks",
        "not started",
        "mean wait",
        "max wait",
        "misses",
        "kg",
        "baseline",
        "saved",
    ]
    assert table.row_count == 3


def test_render_table_hides_empty_not_started(result: ReplayResult) -> None:
    summary = summarize(result)
    for row in summary["per_class"].values():
        row["unstarted"] = 0
    headers = [str(column.header) for column in render_table(summary).columns]
    assert "not started" not in headers
    assert headers[:2] == ["class", "tasks"]


# Plots ---------------------------------------------------------------------------------


def png_size(path: Path) -> tuple[int, int]:
    """Return (width, height) from the PNG's IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.mark.parametrize(
    ("plot", "size"),
    [
        pytest.param(plot_intensity, (1200, 780), id="intensity"),
        pytest.param(plot_cumulative_emissions, (1100, 550), id="cumulative"),
        pytest.param(plot_distribution, (1100, 500), id="distribution"),
    ],
)
def test_plot_writes_png(result: ReplayResult, tmp_path: Path, plot, size: tuple[int, int]) -> None:
    path = plot(result, tmp_path / "plot.png")

    assert path == tmp_path / "plot.png"
    assert png_size(path) == size
    assert 20_000 < path.stat().st_size < 400_000


def test_plot_distribution_with_expected(tmp_path: Path) -> None:
    result = make_result(expected={"critical": {"eu-west": 1.0}, "deferrable": {"eu-west": 0.5, "asia-east": 0.5}})
    path = plot_distribution(result, tmp_path / "distribution.png")

    # A third panel (expected) makes the figure 5 inches wider.
    assert png_size(path) == (1600, 500)


def test_write_plots_names_and_bytes(tmp_path: Path) -> None:
    first = write_plots(make_result(), tmp_path / "first")
    second = write_plots(make_result(), tmp_path / "second" / "nested")

    assert [path.name for path in first] == ["intensity.png", "cumulative_emissions.png", "distribution.png"]
    for one, other in zip(first, second, strict=True):
        data = one.read_bytes()
        assert data[:8] == PNG_SIGNATURE
        assert data == other.read_bytes(), one.name
        assert b"Software" not in data
        assert b"matplotlib" not in data


def test_plot_intensity_rejects_level_shape(result: ReplayResult, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"levels have shape \(3, 47\) but the trace values have shape \(3, 48\)"):
        plot_intensity(replace(result, levels=result.levels[:, :47]), tmp_path / "intensity.png")


def long_result(days: int) -> ReplayResult:
    """The fixture workload at the start of a longer trace that repeats its values."""
    base = make_trace()
    steps = days * 24
    values = np.tile(base.values, (1, steps // base.steps + 1))[:, :steps]
    trace = Trace(REGIONS, START, HOUR, values, notes=("long",))
    return make_result(trace=trace)


def test_intensity_view_short_trace_whole(result: ReplayResult) -> None:
    view = intensity_view(result, np.asarray(result.trace.values), result.levels)

    assert view.first_time == START
    assert view.last_time == START + 48 * HOUR
    assert not view.binned
    assert view.note == ""
    assert view.mean.shape == (3, 48)
    assert len(view.edges) == 49


def test_intensity_view_long_trace_cuts_to_workload() -> None:
    result = long_result(90)
    view = intensity_view(result, np.asarray(result.trace.values), result.levels)

    # Workload: first arrival at START, last end at hour 48 (s11 under the baseline),
    # padded by a day but not before the trace start.
    assert view.first_time == START
    assert view.last_time == START + (48 + 24) * HOUR
    assert view.mean.shape == (3, 72)
    assert view.note == "window 2023-10-21T00:00:00Z to 2023-10-24T00:00:00Z: the workload's span, padded by a day"


def test_intensity_view_bins_long_workload() -> None:
    result = long_result(400)
    tasks = result.tasks + (make_task("late", TaskClass.CRITICAL, 399 * 24, 0, None),)
    runs = {
        policy: PolicyRun(policy, run.outcomes + (ran(result.trace, result.config, tasks[-1], "eu-west", tasks[-1].arrival),))
        for policy, run in result.runs.items()
    }
    result = replace(result, tasks=tasks, runs=runs)
    view = intensity_view(result, np.asarray(result.trace.values), result.levels)

    # 400 days of hours is 9600 steps, so 5 steps go into each point.
    assert view.binned
    assert view.mean.shape == (3, 1920)
    assert view.mean.shape[1] <= MAX_PLOTTED_STEPS
    # The padded workload span covers the whole trace, so no cut is noted.
    assert view.note == "each point averages 5 steps, and the grey band spans their min to max"
    # eu-west's clean window at hours 24..29 falls into bin 4 (hours 20..24) and
    # bin 5 (hours 25..29).
    assert view.mean[0, 0] == 200.0
    assert view.mean[0, 4] == 170.0
    assert view.low[0, 4] == 50.0
    assert view.high[0, 4] == 200.0
    assert view.level[0, 4] == 1
    assert view.mean[0, 5] == 50.0
    assert view.level[0, 5] == 0
    assert view.level[1, 0] == 2


def test_plots_handle_long_trace(tmp_path: Path) -> None:
    paths = write_plots(long_result(400), tmp_path)

    assert png_size(paths[0]) == (1200, 780)
    assert all(path.read_bytes()[:8] == PNG_SIGNATURE for path in paths)


def test_reports_scale_to_100k_tasks(tmp_path: Path) -> None:
    trace = make_trace(24 * 30)
    config = make_config()
    rng = np.random.default_rng(3)
    arrivals = START + rng.integers(0, 28 * 24 * HOUR, size=100_000)
    waits = rng.integers(0, 6 * HOUR, size=100_000)
    regions = rng.integers(0, 3, size=100_000)
    classes = list(TaskClass)
    tasks, scheduler, baseline = [], [], []
    for index in range(100_000):
        task = Task(
            id=f"t{index:06d}",
            task_class=classes[index % 3],
            arrival=int(arrivals[index]),
            duration=HOUR,
            home_region=REGIONS[index % 3],
            requirements=ONE_VCPU,
        )
        tasks.append(task)
        start = int(arrivals[index] + waits[index])
        scheduler.append(
            TaskOutcome(task, REGIONS[regions[index]], "n1", start, start + HOUR, 0.1, 10.0 + index % 7)
        )
        baseline.append(TaskOutcome(task, task.home_region, "n1", task.arrival, task.arrival + HOUR, 0.1, 30.0))
    levels = np.ones(trace.values.shape, dtype=np.int8)
    levels[:, ::5] = 0
    result = ReplayResult(
        trace=trace,
        config=config,
        tasks=tuple(tasks),
        runs={
            "scheduler": PolicyRun("scheduler", tuple(scheduler)),
            "baseline": PolicyRun("baseline", tuple(baseline)),
            "oracle": PolicyRun("oracle", tuple(scheduler)),
        },
        levels=levels,
    )

    began = time.perf_counter()
    summary = summarize(result)
    write_summary(summary, tmp_path / "summary.json")
    write_tasks_csv(result, tmp_path / "tasks.csv")
    paths = write_plots(result, tmp_path)
    elapsed = time.perf_counter() - began

    assert summary["tasks"] == 100_000
    assert summary["policies"]["baseline"]["emissions_kg"] == 3000.0
    assert all(path.stat().st_size > 20_000 for path in paths)
    # A loose bound, so that only a drastic slowdown fails it, such as a Python
    # loop drawing one artist per task.
    assert elapsed < 60, elapsed
