"""Scripted source: regions cycle through carbon levels on a short schedule, for live demos.

A schedule is a small TOML file:

    # Intensity in gCO2eq/kWh of each level name. Optional; these are the defaults.
    [levels]
    low = 100
    medium = 300
    high = 500

    [[steps]]
    seconds = 20          # how long this step lasts, in wall seconds (at least 1)
    eu-west = "low"       # a level name from [levels] ...
    us-east = "high"
    asia-east = 420       # ... or an intensity in gCO2eq/kWh

    [[steps]]
    seconds = 20
    eu-west = "high"      # us-east and asia-east keep their values from the step before

The steps repeat for ever, starting at the source's `started_at`. A step that does
not name a region keeps that region's value from the nearest earlier step that
does, counting round the cycle, so a step only lists what changes. Every region
must appear in at least one step. The default level intensities were picked to
fall clearly apart; set [levels] to suit the thresholds of `regions.toml`.

`parse_schedule` collects every problem before it raises one ScheduleError, whose
lines read FILE:LINE: KEY: problem, like the errors of `regions.toml`. Samples
carry the wall time at which their step began, rounded down to the second.

The schedule is deterministic, so `forecast()` returns the schedule itself: one
point per step start, from the step playing now for at least
`FORECAST_SHORTEST_STEPS` of the schedule's shortest steps. The daemon plans a
scripted region on this forecast whatever `forecaster` is set, because a model
fitted to a few seconds of samples would predict values that never play.
"""

from __future__ import annotations

import bisect
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from carbon_scheduler.carbon.source import Clock, check_history_range
from carbon_scheduler.config.names import dns_label_problem
from carbon_scheduler.config.source_map import KeyPath, SourceMap, build_source_map, format_key_path
from carbon_scheduler.store.base import ForecastPoint, Sample

NAME = "scripted"
DEFAULT_LEVELS: Mapping[str, float] = MappingProxyType(
    {"low": 100.0, "medium": 300.0, "high": 500.0}
)
MIN_STEP_SECONDS = 1.0
# A schedule is meant to cycle within a demo; a year is far beyond any demo.
MAX_STEP_SECONDS = 365 * 86_400.0
MAX_HISTORY_SAMPLES = 1_000_000
# The daemon plans `planning_horizon_hours + 24` wall steps ahead, and a scripted
# region's wall step is its shortest step, so this covers planning horizons up
# to 336 hours.
# NOTE: with a longer horizon the forecast falls short and the daemon logs
# provider_forecast_fallback and plans on the model forecaster instead.
FORECAST_SHORTEST_STEPS = 360
STRING_SOURCE = "<string>"
_TOP_KEYS = ("levels", "steps")


class ScheduleError(ValueError):
    """An invalid schedule. `issues` lists every problem as "FILE:LINE: KEY: problem"."""

    def __init__(self, issues: list[str]) -> None:
        self.issues = tuple(issues)
        super().__init__("\n".join(self.issues))


@dataclass(frozen=True, slots=True)
class Step:
    """One step of the cycle: its length and the intensity (gCO2eq/kWh) of every
    region during it, after filling in regions the step does not name."""

    seconds: float
    intensities: Mapping[str, float]


@dataclass(frozen=True, slots=True)
class Schedule:
    """A parsed schedule: the steps in order, the level intensities it used and
    the regions it names."""

    steps: tuple[Step, ...]
    levels: Mapping[str, float]
    regions: tuple[str, ...]
    path: str = STRING_SOURCE

    @property
    def cycle_seconds(self) -> float:
        return sum(step.seconds for step in self.steps)

    @property
    def shortest_step_seconds(self) -> float:
        return min(step.seconds for step in self.steps)


def load_schedule(path: str | Path) -> Schedule:
    """Read and parse a schedule file. Raises ScheduleError, also for an unreadable file."""
    name = str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise ScheduleError(
            [f"{name}: cannot read the schedule: {error.strerror or error}"]
        ) from error
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ScheduleError([f"{name}:{line}: invalid UTF-8; save the file as UTF-8"]) from error
    return parse_schedule(text, name)


def parse_schedule(text: str, path: str = STRING_SOURCE) -> Schedule:
    """Parse the text of a schedule; `path` names it in messages. Raises ScheduleError."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ScheduleError([f"{path}: invalid TOML: {error}"]) from error
    except RecursionError as error:
        raise ScheduleError(
            [f"{path}: invalid TOML: arrays or tables are nested too deeply"]
        ) from error
    parser = _Parser(path, build_source_map(text))
    schedule = parser.parse(document)
    if parser.issues or schedule is None:
        raise ScheduleError(parser.issues or [f"{path}: the schedule is empty"])
    return schedule


def _number(value: object) -> float | None:
    """Return a TOML integer or float as a finite float, or None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


class _Parser:
    def __init__(self, path: str, source_map: SourceMap) -> None:
        self.path = path
        self.source_map = source_map
        self.issues: list[str] = []

    def report(self, key_path: KeyPath, problem: str) -> None:
        line = self.source_map.line_of(key_path) if key_path else 1
        where = format_key_path(key_path)
        prefix = f"{self.path}:{line}: {where}: " if where else f"{self.path}:{line}: "
        self.issues.append(prefix + problem)

    def parse(self, document: dict[str, Any]) -> Schedule | None:
        for key in document:
            if key not in _TOP_KEYS:
                self.report((key,), f"unknown key; allowed: {', '.join(_TOP_KEYS)}")
        levels = self.parse_levels(document.get("levels"))
        raw_steps = self.parse_steps(document.get("steps"), levels)
        if not raw_steps:
            return None
        regions = tuple(dict.fromkeys(region for _, values in raw_steps for region in values))
        if not regions:
            # With other issues, the regions may have been left out for being invalid.
            if not self.issues:
                self.report(("steps",), 'no step names a region; add one such as eu-west = "low"')
            return None
        steps = tuple(
            Step(
                seconds=seconds, intensities=MappingProxyType(self.fill(raw_steps, index, regions))
            )
            for index, (seconds, _) in enumerate(raw_steps)
        )
        return Schedule(
            steps=steps, levels=MappingProxyType(levels), regions=regions, path=self.path
        )

    @staticmethod
    def fill(
        raw_steps: list[tuple[float, dict[str, float]]], index: int, regions: tuple[str, ...]
    ) -> dict[str, float]:
        """Intensities of step `index`, taking a region it does not name from the
        nearest earlier step that does, round the cycle."""
        filled = {}
        count = len(raw_steps)
        for region in regions:
            for back in range(count):
                values = raw_steps[(index - back) % count][1]
                if region in values:
                    filled[region] = values[region]
                    break
        return filled

    def parse_levels(self, table: object) -> dict[str, float]:
        levels = dict(DEFAULT_LEVELS)
        if table is None:
            return levels
        if not isinstance(table, dict):
            self.report(
                ("levels",), "must be a table of level names and intensities, written [levels]"
            )
            return levels
        for name, value in table.items():
            number = _number(value)
            if number is None or number < 0:
                self.report(
                    ("levels", name),
                    f"must be an intensity in gCO2eq/kWh (a number >= 0), got {value!r}",
                )
                continue
            levels[name] = number
        return levels

    def parse_steps(
        self, steps: object, levels: dict[str, float]
    ) -> list[tuple[float, dict[str, float]]]:
        if steps is None:
            self.report((), "missing [[steps]]; add at least one [[steps]] table with seconds = 20")
            return []
        if not isinstance(steps, list) or not all(isinstance(step, dict) for step in steps):
            self.report(("steps",), "must be an array of tables, written [[steps]]")
            return []
        if not steps:
            self.report(("steps",), "must contain at least one step")
            return []
        parsed = []
        for index, step in enumerate(steps):
            parsed.append(self.parse_step(step, ("steps", index), levels))
        return parsed

    def parse_step(
        self, step: dict[str, Any], key_path: KeyPath, levels: dict[str, float]
    ) -> tuple[float, dict[str, float]]:
        seconds = 0.0
        if "seconds" not in step:
            self.report(key_path + ("seconds",), "missing; add seconds = 20 to this step")
        else:
            number = _number(step["seconds"])
            if number is None or not MIN_STEP_SECONDS <= number <= MAX_STEP_SECONDS:
                self.report(
                    key_path + ("seconds",),
                    f"must be a number of seconds from {MIN_STEP_SECONDS:g} to "
                    f"{MAX_STEP_SECONDS:g}, got {step['seconds']!r}",
                )
            else:
                seconds = number
        values: dict[str, float] = {}
        for region, value in step.items():
            if region == "seconds":
                continue
            value_path = key_path + (region,)
            problem = dns_label_problem(region)
            if problem is not None:
                self.report(value_path, f"invalid region name: {problem}")
                continue
            if isinstance(value, str):
                if value not in levels:
                    self.report(
                        value_path,
                        f"unknown level {value!r}; defined levels: {', '.join(sorted(levels))}",
                    )
                    continue
                values[region] = levels[value]
                continue
            number = _number(value)
            if number is None or number < 0:
                self.report(
                    value_path,
                    f"must be a level name or an intensity in gCO2eq/kWh (a number >= 0), got {value!r}",
                )
                continue
            values[region] = number
        return seconds, values


class ScriptedSource:
    """Region `schedule_region` of `schedule` (by default the one named `region`),
    cycling from wall time `started_at` (by default the clock's time at creation)."""

    name = NAME

    def __init__(
        self,
        *,
        region: str,
        schedule: Schedule,
        clock: Clock,
        schedule_region: str | None = None,
        started_at: float | None = None,
    ) -> None:
        self.region = region
        self.schedule_region = schedule_region or region
        if self.schedule_region not in schedule.regions:
            raise ScheduleError(
                [
                    f"{schedule.path}: no step names region {self.schedule_region!r}; "
                    f"the schedule has {', '.join(schedule.regions)}"
                ]
            )
        self._values = [step.intensities[self.schedule_region] for step in schedule.steps]
        offsets = [0.0]
        for step in schedule.steps:
            offsets.append(offsets[-1] + step.seconds)
        self._offsets = offsets
        self._cycle = offsets[-1]
        self._forecast_seconds = FORECAST_SHORTEST_STEPS * schedule.shortest_step_seconds
        self._clock = clock
        self.started_at = clock.time() if started_at is None else float(started_at)

    def _locate(self, wall: float) -> tuple[int, int]:
        """Return (cycle number, step index) of the step playing at `wall`."""
        elapsed = wall - self.started_at
        cycle = math.floor(elapsed / self._cycle)
        position = elapsed - cycle * self._cycle
        index = bisect.bisect_right(self._offsets, position) - 1
        return cycle, min(max(index, 0), len(self._values) - 1)

    def _sample(self, cycle: int, index: int) -> Sample:
        moment = math.floor(self.started_at + cycle * self._cycle + self._offsets[index] + 1e-6)
        return Sample(self.region, moment, self._values[index], NAME)

    async def latest(self) -> Sample:
        return self._sample(*self._locate(self._clock.time()))

    async def history(self, start: int, end: int) -> list[Sample]:
        start, end = check_history_range(start, end)
        now = self._clock.time()
        last_wall = min(end, now)
        if last_wall < start:
            return []
        cycle, index = self._locate(start)
        last = self._locate(last_wall)
        steps = len(self._values)
        count = (last[0] - cycle) * steps + last[1] - index + 1
        if count > MAX_HISTORY_SAMPLES:
            raise ValueError(
                f"history from {start} to {end} spans {count} scripted steps, more than "
                f"{MAX_HISTORY_SAMPLES}; ask for a shorter range"
            )
        samples = []
        while (cycle, index) <= last:
            sample = self._sample(cycle, index)
            if start <= sample.time < end and sample.time <= now:
                samples.append(sample)
            index += 1
            if index == steps:
                cycle, index = cycle + 1, 0
        return samples

    async def forecast(self) -> list[ForecastPoint]:
        """Return the schedule's coming steps, starting with the step playing now,
        until `FORECAST_SHORTEST_STEPS` shortest steps after now."""
        now = self._clock.time()
        issued_at = math.floor(now)
        cycle, index = self._locate(now)
        steps = len(self._values)
        points = []
        while True:
            sample = self._sample(cycle, index)
            if points and sample.time > now + self._forecast_seconds:
                break
            points.append(
                ForecastPoint(self.region, issued_at, sample.time, sample.intensity_g_per_kwh, NAME)
            )
            index += 1
            if index == steps:
                cycle, index = cycle + 1, 0
        return points

    async def aclose(self) -> None:
        return None
