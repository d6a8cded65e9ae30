"""A seeded generator of synthetic workloads for the replay simulator.

The same config, time span, seed, rate and mix always give the same tasks, because
every random draw comes from one `numpy.random.Generator(PCG64(seed))` in a fixed
order. All draws are vectorised with numpy, so building the Task objects is most of
the cost (tests/test_workload.py requires 100,000 tasks in under 2 seconds).

Default mix (`WorkloadMix()`; each field's docstring gives its reason):

- classes: 20% critical, 40% standard, 40% deferrable;
- arrivals: a Poisson process at `tasks_per_hour` on average (default 8). The rate
  during 09:00-17:00 UTC is twice the rate of the other hours, scaled so that the
  24-hour average stays `tasks_per_hour`;
- home region: uniform over the config's regions;
- CPU request: 250m, 500m, 1 or 2 cores with shares 30/35/25/10%;
- memory request: 256Mi, 512Mi, 1Gi, 2Gi or 4Gi with shares 20/30/25/15/10%;
- run time: lognormal with median 40 min and log-space sigma 0.6 (mean about 48
  min), rounded to whole minutes and clipped to [5 min, 4 h];
- deferrable deadlines: uniform 6-24 h after arrival in whole minutes, and never
  sooner than run time + 1 h. Critical and standard tasks get no deadline;
- data residency: 10% of tasks may run only in their home region, or in their home
  region and one other region (half of them each).

Arrival times are whole seconds in [start, end). Task ids are `task-000001`, ... in
arrival order, so sorting by (arrival, id) keeps that order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

import numpy as np

from carbon_scheduler.config.types import Config
from carbon_scheduler.model import PodRequirements, Resources, Task, TaskClass

HOUR_SECONDS = 3600
DAY_HOURS = 24
MEBIBYTE = 2**20

DEFAULT_TASKS_PER_HOUR = 8.0
"""Mean arrivals per hour. The demo has three regions of `max_pods = 4`, so 12 task
pods can run at once. At 8 arrivals per hour of about 48 minutes each, about 6.4 run
on average and 9.6 in business hours. That fills the greenest region's 4 slots often,
so the class rules matter, while the queue still drains. At 12 per hour, business
hours would need 14.4 slots, more than the 12 that exist, so a backlog would build up
every working day."""

# Class order of the share fields and of the drawn class indices.
_CLASSES = (TaskClass.CRITICAL, TaskClass.STANDARD, TaskClass.DEFERRABLE)


@dataclass(frozen=True, slots=True)
class WorkloadMix:
    """Shape of a generated workload. Shares are fractions that sum to 1."""

    critical_share: float = 0.2
    """Fraction of critical tasks, kept a minority so that most work can follow the
    carbon signal."""

    standard_share: float = 0.4
    """Fraction of standard tasks."""

    deferrable_share: float = 0.4
    """Fraction of deferrable tasks: a large share, so that the savings from waiting
    for low-carbon windows are visible."""

    business_hours_utc: tuple[int, int] = (9, 17)
    """Start and end hour (UTC, end exclusive) of the daily rush."""

    business_hours_factor: float = 2.0
    """Arrival rate in business hours relative to the other hours, because people
    submit most work during their working day."""

    cpu_millicores: tuple[int, ...] = (250, 500, 1000, 2000)
    """CPU requests in millicores, in the round sizes that pod specs are written with."""

    cpu_shares: tuple[float, ...] = (0.3, 0.35, 0.25, 0.1)
    """Fraction of tasks for each entry of `cpu_millicores`, weighted towards small pods."""

    memory_bytes: tuple[int, ...] = tuple(size * MEBIBYTE for size in (256, 512, 1024, 2048, 4096))
    """Memory requests in bytes: 256Mi to 4Gi in powers of two."""

    memory_shares: tuple[float, ...] = (0.2, 0.3, 0.25, 0.15, 0.1)
    """Fraction of tasks for each entry of `memory_bytes`."""

    duration_median_seconds: int = 40 * 60
    """Median run time. Batch jobs of 30 to 60 minutes are long enough for moving them
    in time to matter and short enough to fit a low-carbon window."""

    duration_sigma: float = 0.6
    """Standard deviation of the natural log of the run time, which gives a long
    tail of slow jobs."""

    duration_min_seconds: int = 5 * 60
    """Minimum run time, because shorter jobs gain little from carbon-aware timing."""

    duration_max_seconds: int = 4 * HOUR_SECONDS
    """Maximum run time, so that every deferrable task has room before its deadline."""

    deadline_min_seconds: int = 6 * HOUR_SECONDS
    """Earliest deferrable deadline after arrival: "later today"."""

    deadline_max_seconds: int = 24 * HOUR_SECONDS
    """Latest deferrable deadline after arrival: "by the same time tomorrow"."""

    deadline_min_slack_seconds: int = HOUR_SECONDS
    """Minimum time between arrival + run time and the deadline, so every task has a
    choice of start times."""

    residency_share: float = 0.1
    """Fraction of tasks with a data-residency allow-list."""

    residency_max_regions: int = 2
    """Maximum number of regions in an allow-list. Each list contains the home region
    and 0 to `residency_max_regions - 1` others, with equal chance for each size."""

    def __post_init__(self) -> None:
        problems = list(self._problems())
        if problems:
            raise ValueError("invalid workload mix: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        problems = []
        shares = (self.critical_share, self.standard_share, self.deferrable_share)
        problems += _share_problems("class shares", shares)
        problems += _share_problems("cpu_shares", self.cpu_shares)
        problems += _share_problems("memory_shares", self.memory_shares)
        if len(self.cpu_shares) != len(self.cpu_millicores):
            problems.append("cpu_shares must have one entry per cpu_millicores entry")
        if len(self.memory_shares) != len(self.memory_bytes):
            problems.append("memory_shares must have one entry per memory_bytes entry")
        if any(amount <= 0 for amount in self.cpu_millicores + self.memory_bytes):
            problems.append("cpu_millicores and memory_bytes must be positive")
        first, last = self.business_hours_utc
        if not 0 <= first < last <= DAY_HOURS:
            problems.append(f"business_hours_utc must satisfy 0 <= start < end <= 24, got {self.business_hours_utc}")
        if not self.business_hours_factor > 0:
            problems.append(f"business_hours_factor must be > 0, got {self.business_hours_factor}")
        if not 0 < self.duration_min_seconds <= self.duration_median_seconds <= self.duration_max_seconds:
            problems.append("durations must satisfy 0 < duration_min <= duration_median <= duration_max seconds")
        if not self.duration_sigma >= 0:
            problems.append(f"duration_sigma must be >= 0, got {self.duration_sigma}")
        if not 0 < self.deadline_min_seconds <= self.deadline_max_seconds:
            problems.append("deadlines must satisfy 0 < deadline_min_seconds <= deadline_max_seconds")
        if self.deadline_min_slack_seconds < 0:
            problems.append(f"deadline_min_slack_seconds must be >= 0, got {self.deadline_min_slack_seconds}")
        if not 0 <= self.residency_share <= 1:
            problems.append(f"residency_share must be from 0 to 1, got {self.residency_share}")
        if self.residency_max_regions < 1:
            problems.append(f"residency_max_regions must be >= 1, got {self.residency_max_regions}")
        return problems


def _share_problems(name: str, shares: tuple[float, ...]) -> list[str]:
    if not shares:
        return [f"{name} must not be empty"]
    if any(not share >= 0 for share in shares):
        return [f"{name} must not be negative, got {shares}"]
    if not math.isclose(sum(shares), 1.0, abs_tol=1e-9):
        return [f"{name} must sum to 1, got {sum(shares):g}"]
    return []


DEFAULT_MIX = WorkloadMix()


def generate_workload(
    config: Config,
    *,
    start: int | datetime,
    end: int | datetime,
    seed: int,
    tasks_per_hour: float = DEFAULT_TASKS_PER_HOUR,
    mix: WorkloadMix = DEFAULT_MIX,
) -> list[Task]:
    """Generate tasks arriving in [start, end), sorted by arrival, then id.

    `start` and `end` are Unix seconds or timezone-aware datetimes. Raises
    ValueError for an empty or reversed span, a negative rate or seed, a naive
    datetime, a config without regions, or a mix whose largest request fits on no
    node of the config.
    """
    first = _unix_seconds(start, "start")
    stop = _unix_seconds(end, "end")
    if stop <= first:
        raise ValueError(f"end ({stop}) must be after start ({first})")
    if not (isinstance(tasks_per_hour, (int, float)) and math.isfinite(tasks_per_hour) and tasks_per_hour >= 0):
        raise ValueError(f"tasks_per_hour must be a finite number >= 0, got {tasks_per_hour!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    regions = config.region_names
    if not regions:
        raise ValueError("the config has no regions to send tasks to")
    _check_requests_fit(config, mix)

    rng = np.random.Generator(np.random.PCG64(int(seed)))
    arrivals = _draw_arrivals(rng, first, stop, tasks_per_hour, mix)
    count = len(arrivals)
    class_shares = (mix.critical_share, mix.standard_share, mix.deferrable_share)
    classes = rng.choice(len(_CLASSES), size=count, p=class_shares)
    homes = rng.integers(0, len(regions), size=count)
    cpus = rng.choice(np.asarray(mix.cpu_millicores), size=count, p=mix.cpu_shares)
    memories = rng.choice(np.asarray(mix.memory_bytes), size=count, p=mix.memory_shares)
    durations = _draw_durations(rng, count, mix)
    deadline_offsets = _draw_deadline_offsets(rng, durations, mix)
    allowed = _draw_allow_lists(rng, homes, len(regions), mix)

    width = max(6, len(str(count)))
    tasks = []
    rows = zip(
        arrivals.tolist(),
        classes.tolist(),
        homes.tolist(),
        cpus.tolist(),
        memories.tolist(),
        durations.tolist(),
        deadline_offsets.tolist(),
        allowed,
    )
    for index, (arrival, class_index, home, cpu, memory, duration, offset, allow) in enumerate(rows, 1):
        task_class = _CLASSES[class_index]
        deferrable = task_class is TaskClass.DEFERRABLE
        tasks.append(
            Task(
                id=f"task-{index:0{width}d}",
                task_class=task_class,
                arrival=arrival,
                duration=duration,
                home_region=regions[home],
                requirements=_requirements(cpu, memory),
                deadline=arrival + offset if deferrable else None,
                allowed_regions=None if allow is None else tuple(regions[i] for i in allow),
            )
        )
    return tasks


def _unix_seconds(moment: int | datetime, name: str) -> int:
    if isinstance(moment, datetime):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise ValueError(f"{name} must be timezone-aware, got the naive datetime {moment.isoformat()}")
        return math.floor(moment.timestamp())
    if isinstance(moment, bool) or not isinstance(moment, (int, np.integer)):
        raise ValueError(f"{name} must be Unix seconds (int) or an aware datetime, got {moment!r}")
    return int(moment)


def _check_requests_fit(config: Config, mix: WorkloadMix) -> None:
    """Reject a mix whose largest CPU or memory request exceeds every node, since such
    tasks could never run. Configs without nodes (submission hubs only) pass."""
    nodes = [node for region in config.regions for node in region.nodes]
    if not nodes:
        return
    largest_cpu = max(node.allocatable.milli_cpu for node in nodes)
    largest_memory = max(node.allocatable.memory for node in nodes)
    if max(mix.cpu_millicores) > largest_cpu:
        raise ValueError(
            f"the mix requests up to {max(mix.cpu_millicores)}m CPU but the largest node has "
            f"{largest_cpu}m; lower cpu_millicores in the WorkloadMix"
        )
    if max(mix.memory_bytes) > largest_memory:
        raise ValueError(
            f"the mix requests up to {max(mix.memory_bytes)} bytes of memory but the largest "
            f"node has {largest_memory}; lower memory_bytes in the WorkloadMix"
        )


def _draw_arrivals(
    rng: np.random.Generator, start: int, end: int, tasks_per_hour: float, mix: WorkloadMix
) -> np.ndarray:
    """Draw a Poisson process whose rate is constant within each clock hour: a
    Poisson count per hour, then uniform whole-second times within that hour."""
    first_boundary = -(-start // HOUR_SECONDS) * HOUR_SECONDS
    boundaries = np.arange(first_boundary, end, HOUR_SECONDS, dtype=np.int64)
    edges = np.unique(np.concatenate(([start], boundaries, [end])).astype(np.int64))
    bin_starts, bin_ends = edges[:-1], edges[1:]
    lengths = bin_ends - bin_starts

    hours = (bin_starts // HOUR_SECONDS) % DAY_HOURS
    first_hour, last_hour = mix.business_hours_utc
    busy = (hours >= first_hour) & (hours < last_hour)
    busy_hours = last_hour - first_hour
    # Scale both rates so that the mean over a whole day is `tasks_per_hour`.
    day_mean = (busy_hours * mix.business_hours_factor + DAY_HOURS - busy_hours) / DAY_HOURS
    weights = np.where(busy, mix.business_hours_factor, 1.0) / day_mean
    expected = tasks_per_hour * weights * lengths / HOUR_SECONDS

    counts = rng.poisson(expected)
    offsets = np.floor(rng.random(int(counts.sum())) * np.repeat(lengths, counts)).astype(np.int64)
    arrivals = np.repeat(bin_starts, counts) + offsets
    arrivals.sort(kind="stable")
    return arrivals


def _draw_durations(rng: np.random.Generator, count: int, mix: WorkloadMix) -> np.ndarray:
    raw = np.exp(rng.normal(math.log(mix.duration_median_seconds), mix.duration_sigma, size=count))
    minutes = np.rint(raw / 60) * 60
    return np.clip(minutes, mix.duration_min_seconds, mix.duration_max_seconds).astype(np.int64)


def _draw_deadline_offsets(rng: np.random.Generator, durations: np.ndarray, mix: WorkloadMix) -> np.ndarray:
    """Draw the time from arrival to deadline, for every task (only deferrable tasks use it)."""
    raw = rng.uniform(mix.deadline_min_seconds, mix.deadline_max_seconds, size=len(durations))
    minutes = (np.rint(raw / 60) * 60).astype(np.int64)
    minutes = np.clip(minutes, mix.deadline_min_seconds, mix.deadline_max_seconds)
    return np.maximum(minutes, durations + mix.deadline_min_slack_seconds)


def _draw_allow_lists(
    rng: np.random.Generator, homes: np.ndarray, region_count: int, mix: WorkloadMix
) -> list[tuple[int, ...] | None]:
    """Draw region indices (in config order) of each task's allow-list, or None."""
    count = len(homes)
    restricted = rng.random(count) < mix.residency_share
    largest = min(mix.residency_max_regions, region_count)
    sizes = rng.integers(1, largest + 1, size=count)
    # Random keys put each task's regions in random order. The home region's key is
    # forced lowest, so the first `size` regions are the home region and random others.
    keys = rng.random((count, region_count))
    keys[np.arange(count), homes] = -1.0
    order = np.argsort(keys, axis=1)

    allowed: list[tuple[int, ...] | None] = [None] * count
    for index in np.flatnonzero(restricted).tolist():
        chosen = order[index, : sizes[index]].tolist()
        allowed[index] = tuple(sorted(chosen))
    return allowed


@lru_cache(maxsize=4096)
def _requirements(milli_cpu: int, memory: int) -> PodRequirements:
    # A workload uses a few request sizes, and the frozen objects can be shared.
    return PodRequirements(request=Resources(milli_cpu=milli_cpu, memory=memory))
