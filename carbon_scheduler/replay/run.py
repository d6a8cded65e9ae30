"""Run a whole replay: load the inputs, simulate the three policies, write the
reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from carbon_scheduler.carbon.traces import Trace, read_trace
from carbon_scheduler.config.types import PROVIDER_FORECASTER, Config, SchedulerSettings
from carbon_scheduler.forecasting import make_forecaster
from carbon_scheduler.model import Task, TaskClass
from carbon_scheduler.replay.context import ReplayContext, ReplayInputError
from carbon_scheduler.replay.parallel import run_policies
from carbon_scheduler.replay.results import ReplayResult
from carbon_scheduler.replay.simulator import scheduler_levels
from carbon_scheduler.replay.workload import load_workload
from carbon_scheduler.replay.workload_generator import generate_workload

if TYPE_CHECKING:
    # Imported for the annotation only, so a plain replay never loads the
    # Prometheus client and the store.
    from carbon_scheduler.replay.streaming import StreamedReplay

log = structlog.get_logger(__name__)

WARMUP_SECONDS = 7 * 86_400
"""Trace time before the first generated arrival, so relative levels and the
forecaster start with a week of history."""

DEFAULT_DAYS = 28.0
"""Span of a generated workload: four weeks show daily and weekly patterns and
replay in seconds; `--days` asks for more."""

TAIL_SECONDS = 2 * 86_400
"""Trace time kept after the last generated arrival, so deferred tasks run inside
the trace."""


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    """What to replay. `workload` is a workload file, or None to generate one with
    `seed` and `tasks_per_hour` over `days` days of the trace (None for all of it).
    `expected` is a JSON file of expected shares per class and region, or None.
    `zone_map` renames trace regions (Electricity Maps zone ids) to config regions."""

    trace: Path | tuple[Path, ...]
    seed: int = 1
    days: float | None = DEFAULT_DAYS
    workload: Path | None = None
    tasks_per_hour: float | None = None
    forecaster: str | None = None
    expected: Path | None = None
    zone_map: dict[str, str] | None = None


Progress = Callable[[str, int], None]


def load_inputs(options: ReplayOptions, config: Config) -> tuple[Trace, list[Task], str]:
    """Read the trace and the workload (or generate it); return them and a short
    description of the workload's origin for the summary."""
    trace = read_trace(options.trace, regions=config.region_names, zone_map=options.zone_map)
    if options.workload is not None:
        return trace, load_workload(options.workload, config), options.workload.name

    start = trace.start + WARMUP_SECONDS
    end = trace.end - TAIL_SECONDS
    if options.days is not None:
        if not 0 < options.days < float("inf"):
            raise ReplayInputError(f"--days must be a positive number of days or 'all', got {options.days}")
        end = min(end, start + round(options.days * 86_400))
    if end <= start:
        days = (WARMUP_SECONDS + TAIL_SECONDS) // 86_400
        raise ReplayInputError(
            f"the trace covers {trace.steps} steps, too short to generate a workload: "
            f"it needs more than {days} days (a week of history before the first task and two days after "
            "the last); use a longer trace or give a workload file with --workload"
        )
    extra = {} if options.tasks_per_hour is None else {"tasks_per_hour": options.tasks_per_hour}
    tasks = generate_workload(config, start=start, end=end, seed=options.seed, **extra)
    return trace, tasks, "generated"


def load_expected(path: Path | None, config: Config) -> dict[str, dict[str, float]]:
    """Read expected shares per class and region: {"critical": {"eu-west": 0.5, ...}, ...}."""
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ReplayInputError(f"cannot read the expected distribution {path}: {error}") from error
    classes = {task_class.value for task_class in TaskClass}
    if not isinstance(data, dict):
        raise ReplayInputError(f"{path}: expected a JSON object of class -> region -> share")
    expected: dict[str, dict[str, float]] = {}
    for name, shares in data.items():
        if name not in classes:
            raise ReplayInputError(f"{path}: unknown class {name!r}; use {', '.join(sorted(classes))}")
        if not isinstance(shares, dict):
            raise ReplayInputError(f"{path}: {name}: expected an object of region -> share")
        for region, share in shares.items():
            if region not in config.region_names:
                raise ReplayInputError(
                    f"{path}: {name}.{region}: unknown region; known: {', '.join(config.region_names)}"
                )
            if not isinstance(share, int | float) or not 0 <= share <= 1:
                raise ReplayInputError(f"{path}: {name}.{region}: share must be a number from 0 to 1, got {share!r}")
        expected[name] = {region: float(share) for region, share in shares.items()}
    return expected


def replay(
    options: ReplayOptions,
    config: Config,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
    stream: StreamedReplay | None = None,
) -> ReplayResult:
    """Simulate the scheduler, the carbon-blind baseline and the oracle, in up to
    `jobs` worker processes (default: one per policy and core). With `stream`, the
    policies run in this process instead, the scheduler event by event with the
    stream's metrics and store observing it, and `jobs` is ignored."""
    trace, tasks, workload_source = load_inputs(options, config)
    expected = load_expected(options.expected, config)
    forecaster_name = options.forecaster or config.scheduler.forecaster
    if forecaster_name == PROVIDER_FORECASTER:
        # A recorded trace carries no provider forecast, so the replay plans on the
        # model forecaster that the daemon falls back to.
        forecaster_name = SchedulerSettings().forecaster
        log.warning("replay_provider_forecast_unavailable", forecaster=forecaster_name)
    make_forecaster(forecaster_name)  # fails early on an unknown name
    context = ReplayContext.build(trace, config, tasks)
    log.info("replay_started", trace=str(options.trace), tasks=len(tasks), forecaster=forecaster_name, seed=options.seed)

    levels = scheduler_levels(context)
    if stream is None:
        runs = run_policies(context, forecaster_name, levels, jobs=jobs, progress=progress)
    else:
        runs = stream.run(context, forecaster_name, levels, expected=expected, progress=progress)
    log.info("replay_finished", tasks=len(tasks))
    return ReplayResult(
        trace=trace,
        config=config,
        tasks=context.tasks,
        runs=runs,
        levels=levels,
        seed=options.seed if options.workload is None else None,
        workload_source=workload_source,
        forecaster=forecaster_name,
        expected_distribution=expected,
    )
