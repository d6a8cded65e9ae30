"""Per-region carbon input of the daemon: the latest sample, its history, the level
and the forecast outlook that window planning uses.

A source reports samples in its own time (`Sample.time`, the start of the step
it describes). A replay source plays recorded hours faster than real time, so one
source step lasts `wall_step_seconds` of wall-clock time, which may be much
shorter than `source_step_seconds`. Forecasters work in source time (their daily
and weekly cycles are in source steps); the outlook handed to the planner is laid
out in wall-clock time, because pods' deadlines are wall-clock times.

Staleness: the data age is now minus the latest sample's time. Above
`stale_after_seconds` the region is stale, and `intensity` and `level` fall back
to the outlook's forecast for the current step when the last outlook reaches
that far, else to the last known value and level. The outlook itself stays, so
deferred tasks keep planning on the forecast made before the data went stale.

Provider forecasts: with `use_provider_forecast`, each new step plans on the
forecast last given to `set_provider_forecast` when that forecast is usable (see
`provider_forecast_problem`), and on the model forecaster otherwise. A switch
between the two is logged once, not at every step.

Scripted sources: a scripted region's wall step is the shortest step of its
schedule, so polls, the staleness limit and the emission integral follow the
schedule. Its samples are stamped with wall times, as a replay's are. The
region always plans on the source's own forecast (`uses_source_forecast`),
whatever the `forecaster` setting. The schedule is deterministic, so that forecast is
exact, while a model forecaster reads each sample as one hourly step and
predicts values the schedule never plays.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import structlog

from carbon_scheduler.carbon.scripted import load_schedule
from carbon_scheduler.config.types import CarbonSourceKind, RegionSpec
from carbon_scheduler.forecasting import Forecaster
from carbon_scheduler.model import Level
from carbon_scheduler.policy.levels import level_of
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.store.base import ForecastPoint

log = structlog.get_logger(__name__)

MAX_HISTORY_STEPS = 24 * 7 * 8
"""Source steps of history kept in memory: eight weeks, more than any forecaster
or relative level window reads."""

STALE_AFTER_STEPS = 3
"""Default staleness limit in steps of the source. Providers often publish an
hourly value some minutes late, so one missed update is normal. By three steps
the value has been superseded twice, which means an outage."""

_NOT_PLANNED = "not planned yet"


# (shortest, longest) step of each schedule file, keyed by path, modification
# time and size, so a daemon parses each schedule once and an edited file is
# read again.
_schedule_steps: dict[tuple[str, int, int], tuple[float, float]] = {}


def _step_range(path: str) -> tuple[float, float]:
    """Return the shortest and the longest step in seconds of the schedule at
    `path`. Raises ScheduleError for an unreadable or invalid schedule."""
    try:
        status = os.stat(path)
    except OSError:
        # load_schedule raises the error that names the file and the fix.
        load_schedule(path)
        raise
    key = (path, status.st_mtime_ns, status.st_size)
    if key not in _schedule_steps:
        lengths = [step.seconds for step in load_schedule(path).steps]
        _schedule_steps[key] = (min(lengths), max(lengths))
    return _schedule_steps[key]


def _schedule_path(region: RegionSpec) -> str:
    assert region.carbon is not None
    path = region.carbon.options.get("schedule")
    if path is None:
        raise ValueError(
            f"region {region.name}: a scripted source needs schedule, the path of its schedule file"
        )
    return str(path)


def wall_step_seconds(region: RegionSpec) -> float:
    """Wall-clock seconds that one source step lasts: `seconds_per_hour` for a
    replayed trace, the shortest step of the schedule for a scripted source, an
    hour for static and live sources.

    NOTE: a schedule whose steps are not whole multiples of its shortest step
    (4 s and 6 s) puts some forecast step boundaries up to one wall step late,
    because the outlook has one value per wall step.
    """
    carbon = region.carbon
    if carbon is None:
        return 3600.0
    if carbon.kind is CarbonSourceKind.REPLAY and carbon.seconds_per_hour:
        return float(carbon.seconds_per_hour)
    if carbon.kind is CarbonSourceKind.SCRIPTED:
        return _step_range(_schedule_path(region))[0]
    return 3600.0


def uses_source_forecast(region: RegionSpec) -> bool:
    """Return True when the region plans on its source's forecast whatever the
    `forecaster` setting: a scripted source, whose forecast is its schedule."""
    return region.carbon is not None and region.carbon.kind is CarbonSourceKind.SCRIPTED


def stale_limit_seconds(region: RegionSpec) -> float:
    """Return the region's staleness limit: `stale_after_seconds` of its carbon
    table, else `STALE_AFTER_STEPS` wall-clock steps. A scripted schedule's
    longest step may outlast three of its shortest, so its limit is at least the
    longest step plus one shortest step, the age at which a sample is late."""
    carbon = region.carbon
    if carbon is not None and carbon.stale_after_seconds is not None:
        return carbon.stale_after_seconds
    if carbon is not None and carbon.kind is CarbonSourceKind.SCRIPTED:
        shortest, longest = _step_range(_schedule_path(region))
        return max(STALE_AFTER_STEPS * shortest, longest + shortest)
    return STALE_AFTER_STEPS * wall_step_seconds(region)


def poll_interval_seconds(region: RegionSpec) -> float:
    """Seconds between polls of the source: `poll_interval_seconds` of its carbon
    table, else a quarter of a step and never more than a minute, so a new hourly
    value shows within a minute. Live providers' own caches keep the repeated
    calls cheap."""
    carbon = region.carbon
    if carbon is not None and carbon.poll_interval_seconds is not None:
        return carbon.poll_interval_seconds
    return max(0.05, min(wall_step_seconds(region) / 4, 60.0))


@dataclass(frozen=True, slots=True)
class FeedSample:
    """A sample as the feed keeps it: source time, value and when it arrived."""

    time: int
    intensity_g_per_kwh: float
    received_at: float


@dataclass(frozen=True, slots=True)
class ForecastProblem:
    """Why a provider forecast is not used: a fixed `kind` for deciding when to
    log, and a `message` with the figures."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Issuance:
    """One forecast the feed planned on: who made it, when, and its points as
    (time, g/kWh) pairs in the time base of the samples, one wall step apart. A
    replay source stamps samples with wall times, so its points are too."""

    forecaster: str
    issued_at: int
    points: tuple[tuple[int, float], ...]


class CarbonFeed:
    """Carbon history and outlook of one region, fed by `record()`."""

    def __init__(
        self,
        region: RegionSpec,
        forecaster: Forecaster,
        *,
        source_step_seconds: int = 3600,
        wall_step_seconds: float = 3600.0,
        horizon_hours: int = 48,
        stale_after_seconds: float | None = None,
        use_provider_forecast: bool = False,
        clock: Callable[[], float],
    ) -> None:
        self.region = region
        self.forecaster = forecaster
        self.source_step_seconds = source_step_seconds
        self.wall_step_seconds = wall_step_seconds
        self.horizon_hours = horizon_hours
        self.horizon_steps = max(1, round(horizon_hours * 3600 / source_step_seconds)) + 24
        self.stale_after_seconds = stale_after_seconds if stale_after_seconds is not None else 3 * wall_step_seconds
        self.use_provider_forecast = use_provider_forecast
        self.clock = clock
        self.times: list[int] = []
        self.values: list[float] = []
        self.latest: FeedSample | None = None
        self.outlook: Outlook | None = None
        self.issuance: Issuance | None = None
        self.provider_forecast: list[ForecastPoint] | None = None
        self._level = Level.MEDIUM
        # The kind of problem that kept the last outlook off the provider forecast,
        # or None when it used it. The first plan and every change of kind are logged.
        self._provider_problem: str | None = _NOT_PLANNED

    def preload(self, samples: Sequence[tuple[int, float]]) -> None:
        """Fill the history from past samples (time, g/kWh) and plan on the newest.

        On a time given twice the first value wins, so a caller passes its most
        trusted source first. When the history ends after the latest recorded
        sample, the newest one becomes the latest sample, with its level and an
        outlook, so levels and forecasts work before the first poll succeeds.
        """
        merged: dict[int, float] = {}
        for time, value in samples:
            merged.setdefault(int(time), float(value))
        for time, value in zip(self.times, self.values):
            merged[time] = value
        ordered = sorted(merged.items())[-MAX_HISTORY_STEPS:]
        self.times = [time for time, _ in ordered]
        self.values = [value for _, value in ordered]
        log.info("carbon_history_loaded", region=self.region.name, samples=len(self.times))
        if self.times and (self.latest is None or self.times[-1] > self.latest.time):
            # Sample times are wall-clock times, so the outlook starts at the
            # sample's own step and a forecast made from old data still reaches now.
            self._plan(self.times[-1], self.values[-1], received_at=self.clock(), origin=self.times[-1])

    def set_provider_forecast(self, points: list[ForecastPoint] | None) -> None:
        """Keep the source's latest forecast for the next outlook."""
        self.provider_forecast = sorted(points, key=lambda point: point.time) if points else None

    def record(self, time: int, intensity_g_per_kwh: float) -> bool:
        """Add a sample; return True when it starts a new step (a new outlook was made)."""
        now = self.clock()
        if self.times and time <= self.times[-1]:
            if time == self.times[-1]:
                self.values[-1] = intensity_g_per_kwh  # a revised value for the same step
                self.latest = FeedSample(time, intensity_g_per_kwh, now)
            return False
        self.times.append(time)
        self.values.append(intensity_g_per_kwh)
        if len(self.times) > MAX_HISTORY_STEPS:
            del self.times[: len(self.times) - MAX_HISTORY_STEPS]
            del self.values[: len(self.values) - MAX_HISTORY_STEPS]
        # A scripted forecast is exact in wall time, so its outlook starts where the
        # step started and the forecast steps line up with the schedule's.
        origin = time if uses_source_forecast(self.region) else int(now)
        self._plan(time, intensity_g_per_kwh, received_at=now, origin=origin)
        log.info(
            "carbon_sample",
            region=self.region.name,
            time=time,
            intensity_g_per_kwh=intensity_g_per_kwh,
            level=self._level.label,
        )
        return True

    def _plan(self, time: int, intensity_g_per_kwh: float, *, received_at: float, origin: int) -> None:
        """Make `time` the latest step: its level, a forecast and the outlook that
        starts at wall-clock time `origin`."""
        self.latest = FeedSample(time, intensity_g_per_kwh, received_at)
        history = np.asarray(self.values, dtype=float)
        self._level = level_of(intensity_g_per_kwh, self.region.levels, history)
        forecaster, issued_at, forecast = self._forecast(history, time)
        wall_step = max(1, round(self.wall_step_seconds))
        self.outlook = Outlook.build(self.region.name, origin, wall_step, intensity_g_per_kwh, forecast)
        points = tuple((time + (index + 1) * wall_step, float(value)) for index, value in enumerate(forecast))
        self.issuance = Issuance(forecaster, issued_at, points)

    def _forecast(self, history: np.ndarray, time: int) -> tuple[str, int, np.ndarray]:
        """Return the forecaster's name, the issue time and the forecast of the
        steps after `time`: the provider's when it is usable, else the model's."""
        if self.use_provider_forecast:
            problem = self.provider_forecast_problem(time)
            kind = None if problem is None else problem.kind
            if kind != self._provider_problem:
                if problem is None:
                    log.info("provider_forecast_used", region=self.region.name)
                else:
                    log.warning(
                        "provider_forecast_fallback",
                        region=self.region.name,
                        reason=problem.message,
                        forecaster=self.forecaster.name,
                    )
                self._provider_problem = kind
            if problem is None:
                assert self.provider_forecast is not None
                values = self._provider_values(time)
                return self.provider_forecast[0].forecaster, self.provider_forecast[0].issued_at, values
        forecast = self.forecaster.forecast(history, time, self.source_step_seconds, self.horizon_steps)
        return self.forecaster.name, int(self.clock()), np.asarray(forecast, dtype=float)

    def provider_forecast_problem(self, time: int) -> ForecastProblem | None:
        """Say why the provider forecast cannot plan the steps after `time`, or
        return None when it can: it must exist, be issued within the staleness
        limit, start by the next step and reach the planning horizon."""
        points = self.provider_forecast
        if not points:
            return ForecastProblem("missing", "the source returned no forecast")
        age = self.clock() - points[0].issued_at
        if age > self.stale_after_seconds:
            return ForecastProblem(
                "stale", f"the forecast was issued {age:.0f} s ago, over the {self.stale_after_seconds:g} s limit"
            )
        step = self.wall_step_seconds
        if points[0].time > time + step:
            return ForecastProblem("late", "the forecast starts after the next step")
        # The planning horizon in wall seconds: hours of source time, each lasting
        # one wall step. Live sources have equal steps, so this is horizon_hours.
        horizon = self.horizon_hours * 3600 * self.wall_step_seconds / self.source_step_seconds
        if points[-1].time + step < time + horizon:
            covered = (points[-1].time + step - time) * self.source_step_seconds / self.wall_step_seconds / 3600
            return ForecastProblem(
                "short", f"the forecast covers {covered:.1f} h, less than the {self.horizon_hours} h planning horizon"
            )
        return None

    def _provider_values(self, time: int) -> np.ndarray:
        """Resample the provider forecast onto the feed's wall steps after `time`.
        Each step takes the forecast point at or before it, and steps past the
        last point keep its value."""
        assert self.provider_forecast is not None
        point_times = np.array([point.time for point in self.provider_forecast], dtype=float)
        point_values = np.array([point.intensity_g_per_kwh for point in self.provider_forecast], dtype=float)
        # Sample and forecast times are wall times, so the grid uses the wall step
        # that the outlook and the issuance points use.
        wall_step = max(1, round(self.wall_step_seconds))
        step_times = time + wall_step * np.arange(1, self.horizon_steps + 1, dtype=float)
        index = np.clip(np.searchsorted(point_times, step_times, side="right") - 1, 0, point_times.size - 1)
        return point_values[index]

    # Staleness ------------------------------------------------------------------

    @property
    def age_seconds(self) -> float | None:
        """Now minus the latest sample's time, or None before any sample."""
        return None if self.latest is None else self.clock() - self.latest.time

    @property
    def stale(self) -> bool:
        """True when the latest sample is older than `stale_after_seconds` (or none exists)."""
        age = self.age_seconds
        return age is None or age > self.stale_after_seconds

    def forecast_now(self) -> float | None:
        """Return the outlook's value for the current wall-clock step, or None when
        the outlook does not reach now."""
        outlook = self.outlook
        if outlook is None:
            return None
        offset = math.floor((self.clock() - outlook.origin) / outlook.step_seconds)
        if offset < 0 or offset >= outlook.values.size:
            return None
        return float(outlook.values[offset])

    @property
    def intensity(self) -> float | None:
        """The intensity placement uses: the latest sample while fresh; while
        stale the forecast for now, else the last known value."""
        if self.latest is None:
            return None
        if self.stale:
            forecast = self.forecast_now()
            if forecast is not None:
                return forecast
        return self.latest.intensity_g_per_kwh

    @property
    def level(self) -> Level:
        """The level of `intensity`: while stale it is judged from the forecast for
        now against the history, else it stays the last known level."""
        if self.latest is None or not self.stale:
            return self._level
        forecast = self.forecast_now()
        if forecast is None:
            return self._level
        return level_of(forecast, self.region.levels, np.asarray(self.values + [forecast], dtype=float))

    def history_between(self, start: float, end: float) -> tuple[list[int], list[float]]:
        """Return the samples whose time is in [start, end), plus the one before
        `start` that still applies at `start`, as parallel lists of times and values."""
        times, values = self.times, self.values
        first = max(0, int(np.searchsorted(times, start, side="right")) - 1) if times else 0
        last = int(np.searchsorted(times, end, side="left")) if times else 0
        return times[first:last], values[first:last]
