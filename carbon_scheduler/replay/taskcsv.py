"""Per-task CSV of a replay: one row per task and policy, with enough columns that
anyone can recompute each row's emissions from the trace.

A row's `emissions_g` is the task's power (the region's energy model applied to the
task's requests) times the region's PUE times the trace's intensity integrated over
[start, end). `energy_kwh` is that same facility power times the run time. Times are
RFC 3339 UTC with a `Z` suffix. A cell is empty where the value is None: a task that
never started has no region, node, start or end, and a task without a deadline has
no deadline. Rows come in `POLICIES` order, then task order, so the file is
byte-identical for the same replay.
"""

from __future__ import annotations

import csv
from pathlib import Path

from carbon_scheduler.replay.results import ReplayResult, TaskOutcome
from carbon_scheduler.carbon.traces import format_time
from carbon_scheduler.replay.summary import ordered_runs

HEADER = (
    "policy",
    "task_id",
    "class",
    "home_region",
    "region",
    "node",
    "arrival",
    "start",
    "end",
    "deadline",
    "energy_kwh",
    "emissions_g",
)


def write_tasks_csv(result: ReplayResult, path: str | Path) -> Path:
    """Write one row per task and policy to `path` and return the path.

    Lines end with `\\n` rather than RFC 4180's CRLF, so the file diffs cleanly and
    reads line by line with standard Unix tools. Raises ValueError when the runs do
    not fit the tasks (see `ordered_runs`).
    """
    path = Path(path)
    runs = ordered_runs(result)
    with path.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(HEADER)
        for run in runs:
            writer.writerows(_row(run.policy, outcome) for outcome in run.outcomes)
    return path


def _row(policy: str, outcome: TaskOutcome) -> tuple[str, ...]:
    task = outcome.task
    return (
        policy,
        task.id,
        task.task_class.value,
        task.home_region,
        outcome.region or "",
        outcome.node or "",
        format_time(task.arrival),
        _time_cell(outcome.start),
        _time_cell(outcome.end),
        _time_cell(task.deadline),
        _fixed(outcome.energy_kwh, 9),
        _fixed(outcome.emissions_g, 6),
    )


def _time_cell(seconds: int | None) -> str:
    return "" if seconds is None else format_time(seconds)


def _fixed(value: float, decimals: int) -> str:
    text = f"{value:.{decimals}f}"
    # A tiny negative rounding residue would print as "-0.000000", so zero gets one spelling.
    return text[1:] if text.startswith("-") and float(text) == 0 else text
