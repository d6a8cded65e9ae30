"""Run the three policies of a replay side by side.

The scheduler, the baseline and the oracle are independent simulations over the
same inputs, so on a machine with more than one core they run in worker
processes. Workers are forked, so they inherit the replay's inputs without
copying them through pickles, and they send back only each task's placement
(region, node, start); the parent rebuilds the outcomes with the same accounting
code, so the result is identical to a run in one process.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from carbon_scheduler.forecasting import make_forecaster
from carbon_scheduler.replay.baseline import run_baseline
from carbon_scheduler.replay.context import ReplayContext, unstarted
from carbon_scheduler.replay.oracle import run_oracle
from carbon_scheduler.replay.results import POLICIES, PolicyRun
from carbon_scheduler.replay.simulator import run_scheduler

Placement = tuple[str | None, str | None, int | None]
Progress = Callable[[str, int], None]

# Set in the parent just before forking; workers read their inputs from here.
_INPUTS: dict[str, object] = {}


def _simulate(policy: str, progress: Callable[[int], None] | None) -> PolicyRun:
    context: ReplayContext = _INPUTS["context"]  # type: ignore[assignment]
    if policy == "scheduler":
        forecaster = make_forecaster(_INPUTS["forecaster"])  # type: ignore[arg-type]
        return run_scheduler(context, forecaster, levels=_INPUTS["levels"], progress=progress)  # type: ignore[arg-type]
    if policy == "oracle":
        return run_oracle(context, progress=progress)
    return run_baseline(context, progress=progress)


def _worker(policy: str) -> list[Placement]:
    counter = _INPUTS["counters"][policy]  # type: ignore[index]

    def advance(count: int) -> None:
        with counter.get_lock():
            counter.value += count

    run = _simulate(policy, advance)
    return [(o.region, o.node, o.start) for o in run.outcomes]


def _rebuild(policy: str, context: ReplayContext, placements: list[Placement]) -> PolicyRun:
    outcomes = []
    for task, (region, node, start) in zip(context.tasks, placements):
        if region is None or node is None or start is None:
            outcomes.append(unstarted(task))
        else:
            outcomes.append(context.outcome(task, region, node, start))
    return PolicyRun(policy, tuple(outcomes))


def default_jobs() -> int:
    """Worker processes to use: one per policy, at most one per available core."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(len(POLICIES), cores))


def run_policies(
    context: ReplayContext,
    forecaster: str,
    levels: np.ndarray,
    *,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> dict[str, PolicyRun]:
    """Run scheduler, baseline and oracle; in `jobs` worker processes when more
    than one and the platform can fork, otherwise one after the other here."""
    jobs = default_jobs() if jobs is None else jobs
    _INPUTS.update(context=context, forecaster=forecaster, levels=levels)
    try:
        if jobs <= 1 or "fork" not in multiprocessing.get_all_start_methods():
            return {policy: _simulate(policy, _advance(progress, policy)) for policy in POLICIES}
        return _run_forked(context, jobs, progress)
    finally:
        _INPUTS.clear()


def _advance(progress: Progress | None, policy: str) -> Callable[[int], None] | None:
    if progress is None:
        return None
    return lambda count: progress(policy, count)


def _run_forked(context: ReplayContext, jobs: int, progress: Progress | None) -> dict[str, PolicyRun]:
    fork = multiprocessing.get_context("fork")
    counters = {policy: fork.Value("q", 0) for policy in POLICIES}
    _INPUTS["counters"] = counters
    reported = dict.fromkeys(POLICIES, 0)
    # The slowest policies start first so the pool finishes as early as possible.
    order = ("scheduler", "oracle", "baseline")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=fork) as pool:
        futures: dict[str, Future[list[Placement]]] = {policy: pool.submit(_worker, policy) for policy in order}
        while not all(future.done() for future in futures.values()):
            time.sleep(0.1)
            _report(progress, counters, reported)
        _report(progress, counters, reported)
        placements = {policy: futures[policy].result() for policy in POLICIES}
    return {policy: _rebuild(policy, context, placements[policy]) for policy in POLICIES}


def _report(progress: Progress | None, counters: dict, reported: dict[str, int]) -> None:
    if progress is None:
        return
    for policy, counter in counters.items():
        value = counter.value
        if value > reported[policy]:
            progress(policy, value - reported[policy])
            reported[policy] = value
