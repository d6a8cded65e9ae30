"""The JSON summary of a replay: emissions and savings per policy, waits and
deadline misses per class, where each class ran, and the trace it ran on.

The summary is meant to be diffed and kept as a CI artefact, so it is a pure
function of the replay result. Every float is rounded to a fixed number of decimals,
keys are written sorted and times are RFC 3339 UTC. Nothing about the run itself
(wall-clock time, host, absolute paths) goes in, so two runs on the same inputs give
byte-identical files.

Savings compare each policy with the carbon-blind baseline, which starts every task
at once in its home region. The oracle knows the whole trace, so its saving is the
most any policy could have saved; `oracle_fraction` says how much of that the
scheduler reached.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from carbon_scheduler.carbon.traces import format_time
from carbon_scheduler.model import TaskClass
from carbon_scheduler.replay.results import POLICIES, PolicyRun, ReplayResult, TaskOutcome

KG_DECIMALS = 6
KWH_DECIMALS = 6
PERCENT_DECIMALS = 3
FRACTION_DECIMALS = 4
SHARE_DECIMALS = 4
SECONDS_DECIMALS = 3


def ordered_runs(result: ReplayResult) -> list[PolicyRun]:
    """Return the result's runs in `POLICIES` order, after checking that they fit.

    Every policy in `POLICIES` must be present and no other, and each run must hold
    one outcome per task in task order, because every report lines runs up task by
    task. Raises ValueError naming what does not fit.
    """
    missing = [policy for policy in POLICIES if policy not in result.runs]
    unknown = sorted(policy for policy in result.runs if policy not in POLICIES)
    if missing or unknown:
        raise ValueError(
            f"replay result has runs {sorted(result.runs)}, expected exactly {list(POLICIES)} "
            f"(missing: {missing}, unknown: {unknown}); run every policy before writing reports"
        )

    runs = []
    for policy in POLICIES:
        run = result.runs[policy]
        if len(run.outcomes) != len(result.tasks):
            raise ValueError(
                f"policy {policy!r} has {len(run.outcomes)} outcomes for {len(result.tasks)} tasks; "
                "a run needs exactly one outcome per task"
            )
        for index, (task, outcome) in enumerate(zip(result.tasks, run.outcomes, strict=True)):
            if outcome.task.id != task.id:
                raise ValueError(
                    f"policy {policy!r} outcome {index} is for task {outcome.task.id!r}, "
                    f"expected {task.id!r}; outcomes must follow task order"
                )
            if not math.isfinite(outcome.emissions_g) or not math.isfinite(outcome.energy_kwh):
                raise ValueError(
                    f"policy {policy!r} task {task.id!r} has non-finite energy_kwh={outcome.energy_kwh} "
                    f"or emissions_g={outcome.emissions_g}; check the trace for NaN values"
                )
        runs.append(run)
    return runs


def region_order(result: ReplayResult) -> list[str]:
    """Return the regions to report: the config's in file order, then any other region
    of the trace or of an outcome, sorted by name."""
    regions = list(result.config.region_names)
    extra = set(result.trace.regions)
    for run in result.runs.values():
        extra.update(outcome.region for outcome in run.outcomes if outcome.region is not None)
    regions.extend(sorted(extra.difference(regions)))
    return regions


def summarize(result: ReplayResult) -> dict[str, Any]:
    """Build the JSON-ready summary of a replay.

    Top-level `per_class`, `per_region` and `deadline_misses` describe the scheduler;
    `policies` contains the same figures for every policy. See the module docstring for
    the rounding and determinism rules. Raises ValueError when the runs do not fit
    the tasks (see `ordered_runs`).
    """
    runs = ordered_runs(result)
    regions = region_order(result)
    baseline = result.runs["baseline"]

    policies = {run.policy: _policy_summary(run, baseline, regions) for run in runs}
    emissions_g = {run.policy: run.emissions_g for run in runs}
    scheduler_saving_g = emissions_g["baseline"] - emissions_g["scheduler"]
    oracle_saving_g = emissions_g["baseline"] - emissions_g["oracle"]
    scheduler = policies["scheduler"]

    return {
        "seed": result.seed,
        "workload": result.workload_source,
        "forecaster": result.forecaster,
        "tasks": len(result.tasks),
        "emissions_kg": {policy: _kg(grams) for policy, grams in emissions_g.items()},
        "saving_percent": _saving_percent(emissions_g["baseline"], emissions_g["scheduler"]),
        "oracle_saving_percent": _saving_percent(emissions_g["baseline"], emissions_g["oracle"]),
        # A fraction of nothing is undefined: when the oracle cannot beat the
        # baseline there is no headroom to measure the scheduler against.
        "oracle_fraction": (
            _round(scheduler_saving_g / oracle_saving_g, FRACTION_DECIMALS) if oracle_saving_g > 0 else None
        ),
        "deadline_misses": scheduler["deadline_misses"],
        "unstarted": scheduler["unstarted"],
        "per_class": scheduler["per_class"],
        "per_region": scheduler["per_region"],
        "policies": policies,
        "trace": _trace_summary(result),
        "expected_distribution": _expected_distribution(result, regions),
    }


def write_summary(summary: Mapping[str, Any], path: str | Path) -> Path:
    """Write `summary` as JSON with sorted keys, indent 2 and a trailing newline.

    NaN and infinity are rejected with ValueError because JSON has no spelling for
    them. Returns the path written.
    """
    path = Path(path)
    text = json.dumps(summary, sort_keys=True, indent=2, allow_nan=False, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _policy_summary(run: PolicyRun, baseline: PolicyRun, regions: list[str]) -> dict[str, Any]:
    per_class = {
        task_class.value: _class_summary(run.by_class(task_class), baseline.by_class(task_class))
        for task_class in TaskClass
    }
    return {
        "emissions_kg": _kg(run.emissions_g),
        "energy_kwh": _round(sum(outcome.energy_kwh for outcome in run.outcomes), KWH_DECIMALS),
        "deadline_misses": sum(1 for outcome in run.outcomes if outcome.missed_deadline),
        "unstarted": sum(1 for outcome in run.outcomes if outcome.start is None),
        "per_class": per_class,
        "per_region": _per_region(run.outcomes, regions),
    }


def _class_summary(outcomes: list[TaskOutcome], baseline: list[TaskOutcome]) -> dict[str, Any]:
    # Waits are measured over started tasks only. Tasks that never started are
    # counted in `unstarted` instead of being given an invented wait.
    waits = [outcome.wait_seconds for outcome in outcomes if outcome.wait_seconds is not None]
    return {
        "tasks": len(outcomes),
        "mean_wait_seconds": _round(sum(waits) / len(waits), SECONDS_DECIMALS) if waits else None,
        "max_wait_seconds": max(waits) if waits else None,
        "deadline_misses": sum(1 for outcome in outcomes if outcome.missed_deadline),
        "emissions_kg": _kg(sum(outcome.emissions_g for outcome in outcomes)),
        "baseline_emissions_kg": _kg(sum(outcome.emissions_g for outcome in baseline)),
        "unstarted": len(outcomes) - len(waits),
    }


def _per_region(outcomes: Iterable[TaskOutcome], regions: list[str]) -> dict[str, dict[str, int]]:
    counts = {region: {task_class.value: 0 for task_class in TaskClass} for region in regions}
    for outcome in outcomes:
        if outcome.region is not None:
            counts[outcome.region][outcome.task.task_class.value] += 1
    return counts


def _trace_summary(result: ReplayResult) -> dict[str, Any]:
    trace = result.trace
    return {
        "regions": list(trace.regions),
        "start": format_time(trace.start),
        "end": format_time(trace.end),
        "step_seconds": trace.step_seconds,
        "steps": trace.steps,
        "notes": list(trace.notes),
    }


def _expected_distribution(result: ReplayResult, regions: list[str]) -> dict[str, dict[str, dict[str, float | None]]]:
    """Pair each expected share with the scheduler's actual share of that class's
    started tasks per region. Regions the user left out are expected at 0."""
    if not result.expected_distribution:
        return {}

    per_region = _per_region(result.runs["scheduler"].outcomes, regions)
    table: dict[str, dict[str, dict[str, float | None]]] = {}
    for class_name, expected_shares in result.expected_distribution.items():
        started = sum(per_region[region].get(class_name, 0) for region in regions)
        names = regions + sorted(set(expected_shares).difference(regions))
        table[class_name] = {
            region: {
                "expected": _round(float(expected_shares.get(region, 0.0)), SHARE_DECIMALS),
                "actual": (
                    _round(per_region.get(region, {}).get(class_name, 0) / started, SHARE_DECIMALS)
                    if started
                    else None
                ),
            }
            for region in names
        }
    return table


def _saving_percent(baseline_g: float, policy_g: float) -> float | None:
    if baseline_g <= 0:
        return None
    return _round(100.0 * (baseline_g - policy_g) / baseline_g, PERCENT_DECIMALS)


def _kg(grams: float) -> float:
    return _round(grams / 1000.0, KG_DECIMALS)


def _round(value: float, decimals: int) -> float:
    # `or 0.0` turns -0.0 into 0.0, which JSON would otherwise print as "-0.0".
    return round(value, decimals) or 0.0
