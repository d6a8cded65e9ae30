"""The daemon's handling of a scripted carbon source: wall steps from the
schedule, emissions from its intensities, planning on its exact forecast, and no
made-up history in the store (that last part runs the daemon, in
test_daemon_backfill.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from carbon_scheduler.carbon.scripted import (
    FORECAST_SHORTEST_STEPS,
    ScheduleError,
    ScriptedSource,
    load_schedule,
)
from carbon_scheduler.config.types import (
    AbsoluteLevels,
    CarbonSourceKind,
    CarbonSourceSpec,
    RegionSpec,
)
from carbon_scheduler.daemon.accounting import integrate_history
from carbon_scheduler.daemon.carbon_feed import (
    CarbonFeed,
    poll_interval_seconds,
    stale_limit_seconds,
    uses_source_forecast,
    wall_step_seconds,
)
from carbon_scheduler.daemon.history import backfills_store
from carbon_scheduler.forecasting import make_forecaster
from carbon_scheduler.model import PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.policy.ledger import CapacityLedger, RegionCapacity
from carbon_scheduler.policy.windows import latest_start, plan_window
from tests.carbon_mock import FakeClock

T0 = 1_700_000_000
LOW, HIGH = 100.0, 500.0


def write_schedule(folder: Path, steps: list[tuple[float, float]]) -> Path:
    """Write a schedule of (seconds, eu-west intensity) steps and return its path."""
    lines = []
    for seconds, intensity in steps:
        lines += ["[[steps]]", f"seconds = {seconds:g}", f"eu-west = {intensity:g}", ""]
    path = folder / "schedule.toml"
    path.write_text("\n".join(lines))
    return path


def scripted_region(schedule: Path, **carbon: float) -> RegionSpec:
    return RegionSpec(
        name="eu-west",
        levels=AbsoluteLevels(low_below_g_per_kwh=200.0, high_above_g_per_kwh=400.0),
        carbon=CarbonSourceSpec(kind=CarbonSourceKind.SCRIPTED, options={"schedule": str(schedule)}, **carbon),
    )


def other_region(kind: CarbonSourceKind, **carbon: object) -> RegionSpec:
    return RegionSpec(name="eu-west", carbon=CarbonSourceSpec(kind=kind, **carbon))


# name: (steps, carbon keys, wall step, poll interval, stale limit)
SCRIPTED_TIMINGS = {
    "2 s and 4 s steps": ([(2, LOW), (4, HIGH)], {}, 2.0, 0.5, 6.0),
    "long step outlasts three short": ([(3, LOW), (30, HIGH)], {}, 3.0, 0.75, 33.0),
    "explicit keys win": ([(2, LOW), (4, HIGH)], {"poll_interval_seconds": 1.5, "stale_after_seconds": 20.0}, 2.0,
                          1.5, 20.0),
    "steps over four minutes": ([(300, LOW), (600, HIGH)], {}, 300.0, 60.0, 900.0),
}


@pytest.mark.parametrize("name", SCRIPTED_TIMINGS)
def test_scripted_timings(name: str, tmp_path: Path) -> None:
    steps, carbon, wall_step, poll, stale = SCRIPTED_TIMINGS[name]
    region = scripted_region(write_schedule(tmp_path, steps), **carbon)

    assert wall_step_seconds(region) == wall_step
    assert poll_interval_seconds(region) == poll
    assert stale_limit_seconds(region) == stale


# name: (region, wall step, poll interval, stale limit)
OTHER_TIMINGS = {
    "replay": (other_region(CarbonSourceKind.REPLAY, trace="t.csv", seconds_per_hour=10.0), 10.0, 2.5, 30.0),
    "static": (other_region(CarbonSourceKind.STATIC, intensity_g_per_kwh=300.0), 3600.0, 60.0, 10800.0),
    "electricitymaps": (other_region(CarbonSourceKind.ELECTRICITYMAPS), 3600.0, 60.0, 10800.0),
}


@pytest.mark.parametrize("name", OTHER_TIMINGS)
def test_other_source_timings(name: str) -> None:
    region, wall_step, poll, stale = OTHER_TIMINGS[name]

    assert wall_step_seconds(region) == wall_step
    assert poll_interval_seconds(region) == poll
    assert stale_limit_seconds(region) == stale


def test_wall_step_follows_edited_schedule(tmp_path: Path) -> None:
    path = write_schedule(tmp_path, [(2, LOW), (4, HIGH)])
    region = scripted_region(path)
    assert wall_step_seconds(region) == 2.0

    write_schedule(tmp_path, [(5, LOW), (12.5, HIGH)])

    assert wall_step_seconds(region) == 5.0


def test_wall_step_missing_schedule(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"

    with pytest.raises(ScheduleError, match="absent.toml: cannot read the schedule"):
        wall_step_seconds(scripted_region(missing))


def test_wall_step_without_schedule_key() -> None:
    region = RegionSpec(name="eu-west", carbon=CarbonSourceSpec(kind=CarbonSourceKind.SCRIPTED))

    with pytest.raises(ValueError, match="region eu-west: a scripted source needs schedule"):
        wall_step_seconds(region)


# name: (region, plans on the source forecast, backfills the store)
SOURCE_RULES = {
    "static": (other_region(CarbonSourceKind.STATIC, intensity_g_per_kwh=300.0), False, False),
    "replay": (other_region(CarbonSourceKind.REPLAY, trace="t.csv", seconds_per_hour=10.0), False, False),
    "electricitymaps": (other_region(CarbonSourceKind.ELECTRICITYMAPS), False, True),
    "watttime": (other_region(CarbonSourceKind.WATTTIME), False, True),
    "ukcarbon": (other_region(CarbonSourceKind.UKCARBON), False, True),
    "no carbon table": (RegionSpec(name="eu-west"), False, False),
}


@pytest.mark.parametrize("name", SOURCE_RULES)
def test_source_rules(name: str) -> None:
    region, source_forecast, backfill = SOURCE_RULES[name]

    assert uses_source_forecast(region) is source_forecast
    assert backfills_store(region) is backfill


def test_scripted_source_rules(tmp_path: Path) -> None:
    region = scripted_region(write_schedule(tmp_path, [(2, LOW)]))

    assert uses_source_forecast(region) is True
    assert backfills_store(region) is False


class ScriptedRun:
    """A scripted source and its feed, polled as the daemon polls them."""

    def __init__(self, schedule: Path, *, forecaster: str = "profile-ar-blend", horizon_hours: int = 48) -> None:
        self.region = scripted_region(schedule)
        self.clock = FakeClock(float(T0))
        self.source = ScriptedSource(
            region="eu-west", schedule=load_schedule(schedule), clock=self.clock, started_at=float(T0)
        )
        self.feed = CarbonFeed(
            self.region,
            make_forecaster(forecaster),
            wall_step_seconds=wall_step_seconds(self.region),
            horizon_hours=horizon_hours,
            stale_after_seconds=stale_limit_seconds(self.region),
            use_provider_forecast=uses_source_forecast(self.region),
            clock=self.clock.time,
        )
        self.issuances = []

    async def poll_until(self, end: float) -> None:
        interval = poll_interval_seconds(self.region)
        while self.clock.time() <= end:
            sample = await self.source.latest()
            feed = self.feed
            if not feed.times or sample.time > feed.times[-1]:
                feed.set_provider_forecast(await self.source.forecast())
            if feed.record(sample.time, sample.intensity_g_per_kwh):
                self.issuances.append(feed.issuance)
            self.clock.advance(interval)


def schedule_value(steps: list[tuple[float, float]], moment: float) -> float:
    """Intensity of an eu-west schedule started at T0, at wall time `moment`."""
    position = (moment - T0) % sum(seconds for seconds, _ in steps)
    for seconds, intensity in steps:
        if position < seconds:
            return intensity
        position -= seconds
    raise AssertionError(f"position {position} is outside the cycle")


@pytest.mark.asyncio
async def test_emissions_span_low_and_high(tmp_path: Path) -> None:
    run = ScriptedRun(write_schedule(tmp_path, [(3, LOW), (5, HIGH)]))
    await run.poll_until(T0 + 12)

    integral = integrate_history(run.feed, T0 + 1.5, T0 + 6)

    # By hand: 1.5 s at 100 g/kWh, then 3 s at 500 g/kWh.
    assert integral is not None
    assert integral.intensity_hours == pytest.approx((1.5 * LOW + 3 * HIGH) / 3600)
    assert integral.covered is True


# Samples of a feed with a 2 s wall step: (offset from T0, g/kWh).
IRREGULAR = [(0, 100.0), (2, 500.0), (6, 200.0), (7, 50.0)]

# name: (start offset, end offset, g/kWh times seconds by hand, covered)
IRREGULAR_CASES = {
    "whole history": (0, 8, 2 * 100 + 4 * 500 + 1 * 200 + 1 * 50, True),
    "inside samples": (1, 6.5, 1 * 100 + 4 * 500 + 0.5 * 200, True),
    "one sample only": (2.5, 5.5, 3 * 500, True),
    "before first sample": (-2, 1, 3 * 100, False),
    "past last sample": (7, 10, 3 * 50, False),
}


@pytest.mark.parametrize("name", IRREGULAR_CASES)
def test_integral_irregular_samples(name: str) -> None:
    start, end, expected, covered = IRREGULAR_CASES[name]
    clock = FakeClock(float(T0))
    feed = CarbonFeed(
        other_region(CarbonSourceKind.STATIC, intensity_g_per_kwh=1.0),
        make_forecaster("persistence"),
        wall_step_seconds=2.0,
        clock=clock.time,
    )
    for offset, value in IRREGULAR:
        clock.now = T0 + offset
        assert feed.record(T0 + offset, value)

    integral = integrate_history(feed, T0 + start, T0 + end)

    assert integral is not None
    assert integral.intensity_hours == pytest.approx(expected / 3600)
    assert integral.covered is covered


@pytest.mark.asyncio
async def test_forecast_follows_schedule(tmp_path: Path) -> None:
    steps = [(2, LOW), (4, HIGH), (2, 300.0)]
    run = ScriptedRun(write_schedule(tmp_path, steps))

    with capture_logs() as logs:
        await run.poll_until(T0 + 20)

    # Each step of the schedule gives one issuance, planned on the schedule.
    assert len(run.issuances) == 8
    for issuance in run.issuances:
        assert issuance.forecaster == "scripted"
        assert len(issuance.points) == run.feed.horizon_steps
        for moment, value in issuance.points:
            assert value == schedule_value(steps, moment), moment
    outlook = run.feed.outlook
    assert outlook is not None
    assert set(outlook.values.tolist()) == {LOW, HIGH, 300.0}
    events = [entry["event"] for entry in logs]
    assert "provider_forecast_fallback" not in events
    assert events.count("provider_forecast_used") == 1


@pytest.mark.asyncio
async def test_forecast_short_for_long_horizon(tmp_path: Path) -> None:
    # The scripted forecast covers 360 shortest steps, less than the 1,024
    # steps of a 1,000 h horizon, so the feed falls back to the model.
    run = ScriptedRun(write_schedule(tmp_path, [(2, LOW), (2, HIGH)]), horizon_hours=1000)

    with capture_logs() as logs:
        await run.poll_until(T0 + 1)

    fallbacks = [entry for entry in logs if entry["event"] == "provider_forecast_fallback"]
    assert len(fallbacks) == 1
    assert "less than the 1000 h planning horizon" in fallbacks[0]["reason"]
    assert run.feed.issuance is not None
    assert run.feed.issuance.forecaster == "profile-ar-blend"


@pytest.mark.asyncio
async def test_deferrable_waits_for_next_low_step(tmp_path: Path) -> None:
    run = ScriptedRun(write_schedule(tmp_path, [(4, HIGH), (2, LOW)]))
    await run.poll_until(T0 + 1)
    now = T0 + 1
    task = Task(
        "default/batch",
        TaskClass.DEFERRABLE,
        now,
        2,
        "eu-west",
        PodRequirements(request=Resources(milli_cpu=500, memory=2**28)),
        deadline=now + 24 * 3600,
    )
    ledger = CapacityLedger(
        {"eu-west": RegionCapacity(4, 10**6, 10**13)}, origin=now - 3600, slot_seconds=1
    )
    outlook = run.feed.outlook
    assert outlook is not None

    window, window_now = plan_window(
        task,
        now,
        last_start=latest_start(task, 3600),
        outlooks={"eu-west": outlook},
        power_kw={"eu-west": 1.0},
        ledger=ledger,
    )

    # The pod arrives in the high step [T0, T0 + 4) and the low step follows it.
    assert window is not None
    assert window.start == T0 + 4
    assert window.end == T0 + 6
    assert window.estimated_g == pytest.approx(2 * LOW / 3600)
    assert window_now is not None
    assert window_now.estimated_g == pytest.approx(2 * HIGH / 3600)
    assert np.all(np.isin(outlook.values, [LOW, HIGH]))


@pytest.mark.asyncio
async def test_source_forecast_covers_horizon(tmp_path: Path) -> None:
    steps = [(2, LOW), (4, HIGH)]
    path = write_schedule(tmp_path, steps)
    clock = FakeClock(T0 + 7.5)
    source = ScriptedSource(region="eu-west", schedule=load_schedule(path), clock=clock, started_at=float(T0))

    forecast = await source.forecast()

    # The second cycle began at T0 + 6, so its low step [T0 + 6, T0 + 8) plays now.
    assert (forecast[0].time, forecast[0].intensity_g_per_kwh) == (T0 + 6, LOW)
    assert (forecast[1].time, forecast[1].intensity_g_per_kwh) == (T0 + 8, HIGH)
    # The last point starts within one longest step (4 s) of the covered span.
    covered_until = T0 + 7.5 + FORECAST_SHORTEST_STEPS * 2
    assert covered_until - 4 < forecast[-1].time <= covered_until
    assert [point.time for point in forecast] == sorted({point.time for point in forecast})
    for point in forecast:
        assert point.intensity_g_per_kwh == schedule_value(steps, point.time)
        assert point.issued_at == T0 + 7
        assert point.forecaster == "scripted"
