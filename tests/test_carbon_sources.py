"""Static source, staleness, source health and the factory that reads regions.toml."""

from __future__ import annotations

import textwrap
import time
from pathlib import Path

import pytest

from carbon_scheduler.carbon.electricitymaps import LATEST_PATH, ElectricityMapsSource
from carbon_scheduler.carbon.errors import (
    SourceAuthError,
    SourceDataError,
    SourceError,
    SourceRequestError,
    SourceUnavailable,
)
from carbon_scheduler.carbon.factory import make_source
from carbon_scheduler.carbon.replay_source import ReplaySource
from carbon_scheduler.carbon.scripted import ScheduleError, ScriptedSource
from carbon_scheduler.carbon.source import CarbonSource, SystemClock
from carbon_scheduler.carbon.staleness import SourceHealth, error_kind, is_stale
from carbon_scheduler.carbon.static import StaticSource
from carbon_scheduler.carbon.traces import read_trace
from carbon_scheduler.carbon.ukcarbon import UKCarbonIntensitySource
from carbon_scheduler.carbon.watttime import WattTimeSource
from carbon_scheduler.config import CarbonSourceKind, CarbonSourceSpec, RegionSpec, parse_config
from carbon_scheduler.store.base import Sample
from tests.carbon_mock import (  # noqa: F401  (fixtures)
    FakeClock,
    http_client,
    mock_server,
    reply_json,
)

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
HOUR = 3600


# Static source.


@pytest.mark.asyncio
async def test_static_latest_is_the_current_hour():
    source = StaticSource(
        region="eu-west", intensity_g_per_kwh=123, clock=FakeClock(10 * HOUR + 59)
    )
    assert await source.latest() == Sample("eu-west", 10 * HOUR, 123.0, "static")
    assert await source.forecast() is None


@pytest.mark.asyncio
async def test_static_history_is_hourly_up_to_now():
    source = StaticSource(
        region="eu-west", intensity_g_per_kwh=50.5, clock=FakeClock(5 * HOUR + 10)
    )
    samples = await source.history(HOUR + 1, 20 * HOUR)
    assert [s.time for s in samples] == [2 * HOUR, 3 * HOUR, 4 * HOUR, 5 * HOUR]
    assert {s.intensity_g_per_kwh for s in samples} == {50.5}


@pytest.mark.parametrize("value", [-1.0, float("nan"), float("inf")])
def test_static_rejects_bad_intensity(value):
    with pytest.raises(ValueError, match="intensity_g_per_kwh must be a finite number >= 0"):
        StaticSource(region="r", intensity_g_per_kwh=value, clock=FakeClock())


def test_system_clock_is_wall_time():
    assert abs(SystemClock().time() - time.time()) < 5


# Staleness and health.


@pytest.mark.parametrize(
    ("age", "max_age", "stale"),
    [
        pytest.param(0, 600, False, id="fresh"),
        pytest.param(600, 600, False, id="at-limit"),
        pytest.param(601, 600, True, id="past-limit"),
        pytest.param(-300, 0, False, id="future-sample"),
        pytest.param(1, 0, True, id="zero-limit"),
    ],
)
def test_is_stale(age, max_age, stale):
    sample = Sample("eu-west", 10_000, 100.0, "static")
    assert is_stale(sample, 10_000 + age, max_age) is stale


@pytest.mark.parametrize(
    ("max_age", "error"),
    [(-1, ValueError), (float("nan"), ValueError), (True, TypeError), ("60", TypeError)],
)
def test_is_stale_checks_limit(max_age, error):
    with pytest.raises(error, match="max_age_seconds must be"):
        is_stale(Sample("r", 0, 1.0, "s"), 10, max_age)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (SourceUnavailable("x", provider="p"), "unavailable"),
        (SourceAuthError("x", provider="p"), "auth"),
        (SourceRequestError("x", provider="p"), "request"),
        (SourceDataError("x", provider="p"), "data"),
        (SourceError("x", provider="p"), "other"),
        (ScheduleError(["x"]), "other"),
    ],
)
def test_error_kind(error, kind):
    assert error_kind(error) == kind


def test_source_health_records_outcomes():
    health = SourceHealth(region="eu-west", source="electricitymaps")
    assert health.is_stale(now=1000, max_age_seconds=10**9)

    health.record_failure(100.0, SourceUnavailable("provider down", provider="electricitymaps"))
    health.record_failure(160.0, SourceDataError("bad body", provider="electricitymaps"))
    assert health.consecutive_failures == 2
    assert health.last_error == "bad body"
    assert health.last_error_kind == "data"
    assert health.last_error_at == 160.0
    assert health.last_success_at is None

    health.record_success(220.0, Sample("eu-west", 200, 80.0, "electricitymaps"))
    assert health.consecutive_failures == 0
    assert health.last_success_at == 220.0
    assert health.last_sample_time == 200
    assert health.last_error == "bad body"
    assert not health.is_stale(now=500, max_age_seconds=300)
    assert health.is_stale(now=501, max_age_seconds=300)


# Factory.


def region(text: str, name: str = "eu-west", path: str = "regions.toml") -> RegionSpec:
    return parse_config(textwrap.dedent(text), path).region(name)


@pytest.mark.asyncio
async def test_factory_static():
    spec = region('[regions.eu-west.carbon]\nsource = "static"\nintensity_g_per_kwh = 42\n')
    source = make_source(spec, clock=FakeClock(HOUR))
    assert isinstance(source, StaticSource)
    assert isinstance(source, CarbonSource)
    assert (await source.latest()).intensity_g_per_kwh == 42.0


@pytest.mark.asyncio
async def test_factory_replay_with_start_time():
    trace_file = TRACES / "demo-14d.csv"
    spec = region(
        f"""\
        [regions.us-east.carbon]
        source = "replay"
        trace = "{trace_file}"
        seconds_per_hour = 10
        start_time = 2023-10-22T06:00:00Z
        """,
        name="us-east",
    )
    clock = FakeClock(7000.0)
    source = make_source(spec, clock=clock, started_at=7000.0)
    assert isinstance(source, ReplaySource)
    trace = read_trace(trace_file, regions=["us-east"])
    step = (1697954400 - trace.start) // HOUR  # 2023-10-22T06:00:00Z
    assert (await source.latest()) == Sample(
        "us-east", 7000, float(trace.values[0, step]), "replay"
    )
    clock.advance(10)
    assert (await source.latest()).intensity_g_per_kwh == float(trace.values[0, step + 1])


@pytest.mark.asyncio
async def test_factory_scripted(tmp_path):
    (tmp_path / "demo.toml").write_text(
        '[[steps]]\nseconds = 20\neu-west = "high"\n', encoding="utf-8"
    )
    (tmp_path / "regions.toml").write_text(
        '[regions.eu-west.carbon]\nsource = "scripted"\nschedule = "demo.toml"\n', encoding="utf-8"
    )
    spec = parse_config(
        (tmp_path / "regions.toml").read_text(), str(tmp_path / "regions.toml")
    ).region("eu-west")
    source = make_source(spec, clock=FakeClock(0.0), started_at=0.0)
    assert isinstance(source, ScriptedSource)
    assert await source.latest() == Sample("eu-west", 0, 500.0, "scripted")


def test_factory_scripted_reports_schedule_problems(tmp_path):
    (tmp_path / "demo.toml").write_text(
        '[[steps]]\nseconds = 20\nus-east = "high"\n', encoding="utf-8"
    )
    spec = RegionSpec(
        name="eu-west",
        carbon=CarbonSourceSpec(
            kind=CarbonSourceKind.SCRIPTED, options={"schedule": str(tmp_path / "demo.toml")}
        ),
    )
    with pytest.raises(
        ScheduleError, match="no step names region 'eu-west'; the schedule has us-east"
    ):
        make_source(spec, clock=FakeClock(0.0))


@pytest.mark.asyncio
async def test_factory_api_sources():
    spec_em = region(
        '[regions.eu-west.carbon]\nsource = "electricitymaps"\nzone = "GB"\napi_key_env = "EM_KEY"\n'
    )
    spec_wt = region(
        '[regions.eu-west.carbon]\nsource = "watttime"\nregion = "CAISO_NORTH"\nusername = "u"\n'
        'password_env = "WT_PASSWORD"\nsignal_type = "co2_aoer"\n'
    )
    spec_uk = region('[regions.eu-west.carbon]\nsource = "ukcarbon"\nregion_id = 13\n')
    clock = FakeClock()
    sources = [make_source(spec, clock=clock) for spec in (spec_em, spec_wt, spec_uk)]
    electricitymaps, watttime, ukcarbon = sources
    assert isinstance(electricitymaps, ElectricityMapsSource)
    assert electricitymaps.zone == "GB"
    assert isinstance(watttime, WattTimeSource)
    assert watttime.signal_type == "co2_aoer"
    assert watttime.grid_region == "CAISO_NORTH"
    assert isinstance(ukcarbon, UKCarbonIntensitySource)
    assert ukcarbon.region_id == 13
    for source in sources:
        assert isinstance(source, CarbonSource)
        assert source.region == "eu-west"
        await source.aclose()


@pytest.mark.asyncio
async def test_factory_settings_reach_the_request(mock_server, http_client, monkeypatch):
    monkeypatch.setenv("EM_FACTORY_KEY", "factory-key-123456")
    mock_server.route(
        LATEST_PATH,
        reply_json({"zone": "GB", "carbonIntensity": 150, "datetime": "2024-01-01T10:00:00.000Z"}),
    )
    spec = region(f"""\
        [regions.eu-west.carbon]
        source = "electricitymaps"
        zone = "GB"
        api_key_env = "EM_FACTORY_KEY"
        base_url = "{mock_server.url}"
        cache_ttl_seconds = 0
        """)
    source = make_source(spec, clock=FakeClock(), client=http_client)
    sample = await source.latest()
    await source.latest()
    assert sample == Sample("eu-west", 1704103200, 150.0, "electricitymaps")
    calls = mock_server.calls(LATEST_PATH)
    assert len(calls) == 2
    assert calls[0].headers["auth-token"] == "factory-key-123456"
    assert calls[0].query["zone"] == "GB"


def test_factory_needs_a_carbon_table():
    with pytest.raises(ValueError, match=r"region eu-west has no \[regions.eu-west.carbon\] table"):
        make_source(RegionSpec(name="eu-west"), clock=FakeClock())


@pytest.mark.parametrize(
    ("spec", "error", "message"),
    [
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.UKCARBON, options={"region_id": "13"}),
            TypeError,
            "region eu-west: carbon option region_id must be an integer, got '13'",
            id="type",
        ),
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.ELECTRICITYMAPS, options={"api_key_env": "K"}),
            ValueError,
            "region eu-west: carbon option zone is required",
            id="required",
        ),
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.ELECTRICITYMAPS, options={"zone": "DE"}),
            ValueError,
            "give exactly one of the carbon options api_key_env and api_key_file",
            id="credential",
        ),
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.UKCARBON, options={"timeout_seconds": -1}),
            ValueError,
            "region eu-west: timeout_seconds must be a positive number",
            id="http-settings",
        ),
        pytest.param(
            CarbonSourceSpec(kind=CarbonSourceKind.STATIC),
            ValueError,
            "a static source needs intensity_g_per_kwh",
            id="static",
        ),
    ],
)
def test_factory_checks_specs_built_in_code(spec, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_source(RegionSpec(name="eu-west", carbon=spec), clock=FakeClock())
