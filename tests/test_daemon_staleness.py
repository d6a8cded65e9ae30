"""Stale carbon data: the feed's fallbacks, stale episodes, provider forecasts,
and the real daemon through a provider outage.

The end-to-end tests run `carbon-scheduler run` against the fake API servers,
with Electricity Maps sources served by the local carbon mock; a region's
outage is the mock returning 503.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from structlog.testing import capture_logs

from carbon_scheduler.carbon.staleness import StaleEpisodes
from carbon_scheduler.config.types import (
    AbsoluteLevels,
    CarbonSourceKind,
    CarbonSourceSpec,
    RegionSpec,
)
from carbon_scheduler.daemon.carbon_feed import (
    CarbonFeed,
    poll_interval_seconds,
    stale_limit_seconds,
)
from carbon_scheduler.model import Level
from carbon_scheduler.store.base import ForecastPoint
from tests.carbon_mock import MockServer, mock_server  # noqa: F401  (fixture)
from tests.daemon_harness import wait_until
from tests.kubefake.fixtures import FakeRegions
from tests.test_daemon_store import (
    ElectricityMapsScript,
    electricitymaps_carbon,
    launch,
    log_events,
    metric,
    region_config,
    wait_for_metric,
    write_daemon_config,
)

T0 = 1_700_000_000
HOUR = 3600
LEVELS = AbsoluteLevels(low_below_g_per_kwh=150, high_above_g_per_kwh=420)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RampForecaster:
    """Forecasts 10, 20, 30, ... g/kWh for the steps after the last one."""

    name = "ramp"

    def forecast(self, history: np.ndarray, last_time: int, step_seconds: int, horizon: int) -> np.ndarray:
        return 10.0 * np.arange(1, horizon + 1, dtype=float)


def make_feed(clock: Clock, *, stale_after: float = 3 * HOUR, horizon_hours: int = 4, provider: bool = False) -> CarbonFeed:
    region = RegionSpec(name="eu-west", levels=LEVELS)
    return CarbonFeed(
        region,
        RampForecaster(),
        horizon_hours=horizon_hours,
        stale_after_seconds=stale_after,
        use_provider_forecast=provider,
        clock=clock,
    )


# --- the feed while fresh and stale --------------------------------------------------


def test_fresh_feed_uses_latest_sample():
    clock = Clock(T0)
    feed = make_feed(clock)
    feed.record(T0, 500.0)
    clock.now = T0 + HOUR
    assert feed.age_seconds == HOUR
    assert feed.stale is False
    assert feed.intensity == 500.0
    assert feed.level is Level.HIGH


def test_feed_without_sample_is_stale():
    feed = make_feed(Clock(T0))
    assert feed.stale is True
    assert feed.age_seconds is None
    assert feed.intensity is None
    assert feed.level is Level.MEDIUM


def test_stale_feed_uses_forecast_for_now():
    clock = Clock(T0)
    feed = make_feed(clock)
    feed.record(T0, 500.0)
    # Four hours on, the outlook's fifth step holds the ramp's fourth value.
    clock.now = T0 + 4 * HOUR + 10
    assert feed.stale is True
    assert feed.forecast_now() == 40.0
    assert feed.intensity == 40.0
    assert feed.level is Level.LOW


def test_stale_feed_beyond_forecast_keeps_last_level():
    clock = Clock(T0)
    feed = make_feed(clock, horizon_hours=1)
    feed.record(T0, 500.0)
    # The outlook covers the current step plus 25 forecast steps.
    clock.now = T0 + 30 * HOUR
    assert feed.stale is True
    assert feed.forecast_now() is None
    assert feed.intensity == 500.0
    assert feed.level is Level.HIGH


def test_stale_age_counts_from_sample_time():
    clock = Clock(T0 + 2 * HOUR)
    feed = make_feed(clock, stale_after=HOUR)
    # A sample received now but describing a step two hours ago is already stale.
    feed.record(T0, 100.0)
    assert feed.age_seconds == 2 * HOUR
    assert feed.stale is True


def test_preload_plans_on_newest_sample():
    clock = Clock(T0 + HOUR)
    feed = make_feed(clock)
    feed.preload([(T0 - HOUR, 300.0), (T0, 100.0)])
    assert feed.latest is not None
    assert feed.latest.time == T0
    assert feed.intensity == 100.0
    assert feed.level is Level.LOW
    assert feed.outlook is not None
    assert feed.outlook.origin == T0
    assert feed.issuance is not None
    assert feed.issuance.points[0] == (T0 + HOUR, 10.0)


def test_preload_keeps_first_value_of_a_time():
    feed = make_feed(Clock(T0))
    feed.preload([(T0, 100.0), (T0, 900.0)])
    assert feed.values == [100.0]


# --- defaults from the config -----------------------------------------------------------


@pytest.mark.parametrize(
    ("carbon", "stale", "poll"),
    [
        pytest.param(None, 3 * HOUR, 60.0, id="no-carbon-table"),
        pytest.param(CarbonSourceSpec(kind=CarbonSourceKind.STATIC, intensity_g_per_kwh=1.0), 3 * HOUR, 60.0, id="live"),
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.REPLAY, trace="t.csv", seconds_per_hour=10.0), 30.0, 2.5, id="replay"
        ),
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.STATIC, stale_after_seconds=90.0, poll_interval_seconds=5.0),
            90.0,
            5.0,
            id="configured",
        ),
    ],
)
def test_staleness_defaults(carbon, stale, poll):
    region = RegionSpec(name="eu-west", carbon=carbon)
    assert stale_limit_seconds(region) == stale
    assert poll_interval_seconds(region) == poll


# --- stale episodes ----------------------------------------------------------------------


def test_episode_transitions_reported_once():
    episodes = StaleEpisodes()
    assert episodes.update("eu-west", False) is None
    assert episodes.update("eu-west", True) == "stale"
    assert episodes.update("eu-west", True) is None
    assert episodes.update("eu-west", False) == "recovered"
    assert episodes.update("eu-west", False) is None


def test_episode_stale_at_first_check():
    episodes = StaleEpisodes()
    assert episodes.update("eu-west", True) == "stale"
    assert episodes.is_stale("eu-west") is True


def test_episode_reports_key_once_per_episode():
    episodes = StaleEpisodes()
    assert episodes.first_report("eu-west", "pod-1") is False  # fresh: nothing to report
    episodes.update("eu-west", True)
    assert episodes.first_report("eu-west", "pod-1") is True
    assert episodes.first_report("eu-west", "pod-1") is False
    assert episodes.first_report("eu-west", "pod-2") is True
    episodes.update("eu-west", False)
    episodes.update("eu-west", True)
    assert episodes.first_report("eu-west", "pod-1") is True


# --- provider forecasts -------------------------------------------------------------------


def provider_points(issued_at: int, start: int, hours: int, value: float = 77.0) -> list[ForecastPoint]:
    return [ForecastPoint("eu-west", issued_at, start + hour * HOUR, value, "electricitymaps") for hour in range(hours)]


@pytest.mark.parametrize(
    ("points", "problem"),
    [
        pytest.param(None, "the source returned no forecast", id="missing"),
        pytest.param(provider_points(T0 - 4 * HOUR, T0 + HOUR, 6), "issued 14400 s ago", id="stale"),
        pytest.param(provider_points(T0, T0 + 3 * HOUR, 6), "starts after the next step", id="late-start"),
        pytest.param(provider_points(T0, T0 + HOUR, 2), "covers 3.0 h, less than the 4 h", id="too-short"),
    ],
)
def test_provider_forecast_fallback(points, problem):
    feed = make_feed(Clock(T0), provider=True)
    feed.set_provider_forecast(points)
    with capture_logs() as logs:
        feed.record(T0, 300.0)
    found = feed.provider_forecast_problem(T0)
    assert found is not None
    assert problem in found.message
    assert feed.issuance is not None
    assert feed.issuance.forecaster == "ramp"
    fallbacks = [entry for entry in logs if entry["event"] == "provider_forecast_fallback"]
    assert len(fallbacks) == 1
    assert fallbacks[0]["forecaster"] == "ramp"


def test_provider_forecast_used_when_it_covers_horizon():
    clock = Clock(T0)
    feed = make_feed(clock, provider=True)
    feed.set_provider_forecast(provider_points(T0, T0 + HOUR, 5, value=55.0))
    assert feed.record(T0, 300.0) is True
    assert feed.issuance is not None
    assert feed.issuance.forecaster == "electricitymaps"
    assert feed.issuance.issued_at == T0
    assert feed.outlook is not None
    assert feed.outlook.values[1] == 55.0
    # Past its last point the forecast holds its last value.
    assert feed.outlook.values[-1] == 55.0


def test_provider_fallback_logged_once_until_it_changes():
    clock = Clock(T0)
    feed = make_feed(clock, provider=True)
    with capture_logs() as logs:
        for hour in range(3):
            clock.now = T0 + hour * HOUR
            feed.record(T0 + hour * HOUR, 300.0)
        feed.set_provider_forecast(provider_points(clock.now, T0 + 3 * HOUR, 6))
        clock.now = T0 + 3 * HOUR
        feed.record(T0 + 3 * HOUR, 300.0)
    events = [entry["event"] for entry in logs if entry["event"].startswith("provider_forecast")]
    assert events == ["provider_forecast_fallback", "provider_forecast_used"]


# --- the real daemon through an outage ------------------------------------------------------


INTENSITY = {"eu-west": 100.0, "us-east": 400.0, "asia-east": 450.0}
STALE_AFTER = 3.0


def now_seconds() -> int:
    return int(datetime.now(UTC).timestamp())


@pytest.mark.asyncio
async def test_outage_turns_region_stale_and_back(tmp_path: Path, clusters: FakeRegions, mock_server: MockServer):
    script = ElectricityMapsScript(mock_server, start=now_seconds())
    for name in clusters:
        script.play_live(name, INTENSITY[name])
    regions = [
        region_config(name, clusters, carbon=electricitymaps_carbon(mock_server, name, stale_after_seconds=STALE_AFTER))
        for name in clusters
    ]
    config = write_daemon_config(tmp_path / "regions.toml", regions, store=['url = ":memory:"'])
    daemon = await launch(tmp_path, config)
    try:
        await wait_for_metric(daemon, "carbon_scheduler_carbon_data_stale", 0.0, region="eu-west")
        age = await metric(daemon, "carbon_scheduler_carbon_data_age_seconds", region="eu-west")
        assert age is not None and 0.0 <= age <= STALE_AFTER

        script.failing_zones.add("eu-west")
        await wait_for_metric(daemon, "carbon_scheduler_carbon_data_stale", 1.0, region="eu-west")
        await asyncio.sleep(2.0)  # more failing polls and timer checks
        stale_logs = log_events(daemon, "carbon_data_stale")
        assert [entry["region"] for entry in stale_logs] == ["eu-west"]
        assert "forecast" in stale_logs[0]["fallback"] or "last known level" in stale_logs[0]["fallback"]
        assert await metric(daemon, "carbon_scheduler_carbon_data_stale", region="us-east") == 0.0

        # A critical pod is not held back by the outage.
        clusters["eu-west"].create_pod("urgent", labels={"carbon-scheduler.io/class": "critical"}, requests={"cpu": "1"})
        await wait_until(lambda: clusters["eu-west"].get("pods", "urgent")["spec"].get("nodeName"),
                         what="critical pod bound during the outage")

        script.failing_zones.discard("eu-west")
        await wait_for_metric(daemon, "carbon_scheduler_carbon_data_stale", 0.0, region="eu-west")
        await asyncio.sleep(1.0)
        assert [entry["region"] for entry in log_events(daemon, "carbon_data_recovered")] == ["eu-west"]
        assert len(log_events(daemon, "carbon_data_stale")) == 1
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-3000:]


def placed(clusters: FakeRegions, name: str) -> bool:
    """Whether a pod of this name is bound in any region (it may have moved)."""
    return any((server.find("pods", name) or {}).get("spec", {}).get("nodeName") for server in clusters.values())


def events_for(server, name: str, reason: str) -> list[dict]:
    return [
        event for event in server.list("events", namespace=None)
        if event["involvedObject"]["name"] == name and event["reason"] == reason
    ]


@pytest.mark.asyncio
async def test_deferred_pod_warned_once_and_deadline_kept(tmp_path: Path, clusters: FakeRegions, mock_server: MockServer):
    now = now_seconds()
    script = ElectricityMapsScript(mock_server, start=now)
    hour = now // HOUR * HOUR
    for name in clusters:
        script.play_live(name, INTENSITY[name] + 300)  # every region high now
        # The provider forecasts a clean hour two hours ahead, dirty otherwise.
        script.forecast[name] = [(hour + k * HOUR, 50.0 if k == 2 else 900.0) for k in range(1, 12)]
    script.forecast_issued_at = None  # issued at each request
    regions = [
        region_config(name, clusters, carbon=electricitymaps_carbon(mock_server, name, stale_after_seconds=STALE_AFTER))
        for name in clusters
    ]
    scheduler = ['forecaster = "provider"', "planning_horizon_hours = 6", "deadline_margin_seconds = 0"]
    history = tmp_path / "history.db"
    config = write_daemon_config(tmp_path / "regions.toml", regions, store=[f'url = "{history}"'], scheduler=scheduler)
    daemon = await launch(tmp_path, config)
    try:
        await wait_for_metric(daemon, "carbon_scheduler_carbon_data_stale", 0.0, region="eu-west")
        await wait_until(lambda: len(log_events(daemon, "provider_forecast_used")) == 3, what="provider forecasts used")

        labels = {"carbon-scheduler.io/class": "deferrable"}
        clusters["eu-west"].create_pod(
            "patient", labels=labels, requests={"cpu": "1"},
            annotations={"carbon-scheduler.io/expected-duration": "30m", "carbon-scheduler.io/deadline": "8h"},
        )
        await wait_until(lambda: events_for(clusters["eu-west"], "patient", "Deferred"), what="Deferred event")
        assert not clusters["eu-west"].get("pods", "patient")["spec"].get("nodeName")

        for name in clusters:
            script.failing_zones.add(name)
        await wait_until(lambda: events_for(clusters["eu-west"], "patient", "StaleCarbonData"), timeout=15,
                         what="StaleCarbonData event")
        await asyncio.sleep(2.5)  # several timer checks later, still one Event
        [warning] = events_for(clusters["eu-west"], "patient", "StaleCarbonData")
        assert warning["type"] == "Warning"
        assert "is stale" in warning["message"]

        # A deferrable pod whose latest start is seconds away starts by then,
        # although every region is stale.
        created = time.time()
        clusters["eu-west"].create_pod(
            "hurried", labels=labels, requests={"cpu": "1"},
            annotations={"carbon-scheduler.io/expected-duration": "30m", "carbon-scheduler.io/deadline": "30m3s"},
        )
        await wait_until(lambda: placed(clusters, "hurried"), timeout=10, what="hurried pod placed")
        assert time.time() - created < 8.0
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-3000:]

    # The stored forecasts are the provider's, laid out on its hours.
    with sqlite3.connect(history) as connection:
        rows = connection.execute(
            "SELECT forecaster, time, intensity_g_per_kwh FROM carbon_forecast WHERE region = 'eu-west'"
        ).fetchall()
    assert {row[0] for row in rows} == {"electricitymaps"}
    assert min(row[2] for row in rows) == 50.0
