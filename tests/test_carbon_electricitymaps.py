"""Electricity Maps source against a local mock of API v3."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from carbon_scheduler.carbon.electricitymaps import (
    FORECAST_PATH,
    LATEST_PATH,
    PAST_RANGE_PATH,
    RECENT_HISTORY_PATH,
    ElectricityMapsSource,
)
from carbon_scheduler.carbon.errors import SourceAuthError, SourceDataError, SourceUnavailable
from carbon_scheduler.carbon.http import HttpSettings, SecretRef
from carbon_scheduler.store.base import ForecastPoint, Sample
from tests.carbon_mock import (  # noqa: F401  (fixtures)
    FakeClock,
    RecordingSleep,
    http_client,
    mock_server,
    reply_json,
    reply_text,
)

KEY = "em-key-5f8a2c91d4e7b3a0"
T0 = 1_558_396_800  # 2019-05-21T00:00:00Z
HOUR = 3600

LATEST = {
    "zone": "DE",
    "carbonIntensity": 302,
    "datetime": "2019-05-21T00:00:00.000Z",
    "updatedAt": "2019-05-21T00:10:13.133Z",
    "createdAt": "2019-05-18T00:08:25.549Z",
    "emissionFactorType": "lifecycle",
    "isEstimated": False,
    "estimationMethod": None,
}


def point(hour: int, value: float | None) -> dict:
    stamp = f"2019-05-21T{hour:02d}:00:00.000Z"
    return {
        "carbonIntensity": value,
        "datetime": stamp,
        "updatedAt": "2019-05-22T00:00:00.000Z",
        "createdAt": "2019-05-21T00:00:00.000Z",
        "emissionFactorType": "lifecycle",
        "isEstimated": False,
        "estimationMethod": None,
    }


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv("EM_TEST_KEY", KEY)
    return SecretRef(setting="api_key", env="EM_TEST_KEY")


def make_source(server, client, key, *, clock=None, sleep=None, **options) -> ElectricityMapsSource:
    http = HttpSettings(
        base_url=server.url,
        max_attempts=3,
        backoff_initial_seconds=0.5,
        cache_ttl_seconds=options.pop("cache_ttl_seconds", 300.0),
    )
    return ElectricityMapsSource(
        region="eu-central",
        zone="DE",
        api_key=key,
        clock=clock or FakeClock(T0 + 600),
        http=http,
        client=client,
        sleep=sleep or RecordingSleep(),
        random=lambda: 0.5,
        **options,
    )


@pytest.mark.asyncio
async def test_latest_reads_documented_shape(mock_server, http_client, key_env):
    mock_server.route(LATEST_PATH, reply_json(LATEST))
    source = make_source(mock_server, http_client, key_env)
    sample = await source.latest()
    assert sample == Sample(
        region="eu-central", time=T0, intensity_g_per_kwh=302.0, source="electricitymaps"
    )
    (request,) = mock_server.calls(LATEST_PATH)
    assert request.headers["auth-token"] == KEY
    assert request.query == {"zone": "DE", "emissionFactorType": "lifecycle"}


@pytest.mark.asyncio
async def test_latest_cached_within_ttl(mock_server, http_client, key_env):
    mock_server.route(LATEST_PATH, reply_json(LATEST))
    clock = FakeClock(T0 + 600)
    source = make_source(mock_server, http_client, key_env, clock=clock)
    await source.latest()
    clock.advance(299)
    await source.latest()
    assert len(mock_server.calls(LATEST_PATH)) == 1
    clock.advance(1)
    await source.latest()
    assert len(mock_server.calls(LATEST_PATH)) == 2


@pytest.mark.asyncio
async def test_options_reach_the_query(mock_server, http_client, key_env):
    mock_server.route(LATEST_PATH, reply_json(LATEST))
    source = make_source(
        mock_server, http_client, key_env, emission_factor_type="direct", disable_estimations=True
    )
    await source.latest()
    (request,) = mock_server.calls(LATEST_PATH)
    assert request.query == {
        "zone": "DE",
        "emissionFactorType": "direct",
        "disableEstimations": "true",
    }


@pytest.mark.asyncio
async def test_past_range_sorted_filtered_and_nulls_dropped(mock_server, http_client, key_env):
    body = {
        "zone": "DE",
        "data": [point(3, 280), point(1, 300), point(2, None), point(0, 310), point(4, 270)],
    }
    mock_server.route(PAST_RANGE_PATH, reply_json(body))
    source = make_source(mock_server, http_client, key_env, clock=FakeClock(T0 + 10 * HOUR))
    samples = await source.history(T0, T0 + 4 * HOUR)
    assert [(s.time - T0) // HOUR for s in samples] == [0, 1, 3]
    assert [s.intensity_g_per_kwh for s in samples] == [310.0, 300.0, 280.0]
    assert {s.source for s in samples} == {"electricitymaps"}
    (request,) = mock_server.calls(PAST_RANGE_PATH)
    assert request.query["start"] == "2019-05-21T00:00:00Z"
    assert request.query["end"] == "2019-05-21T04:00:00Z"


@pytest.mark.asyncio
async def test_past_range_longer_than_ten_days_is_split(mock_server, http_client, key_env):
    mock_server.route(PAST_RANGE_PATH, reply_json({"zone": "DE", "data": [point(0, 100)]}))
    source = make_source(mock_server, http_client, key_env, clock=FakeClock(T0 + 30 * 86400))
    await source.history(T0, T0 + 25 * 86400)
    spans = [
        (call.query["start"], call.query["end"]) for call in mock_server.calls(PAST_RANGE_PATH)
    ]
    assert spans == [
        ("2019-05-21T00:00:00Z", "2019-05-31T00:00:00Z"),
        ("2019-05-31T00:00:00Z", "2019-06-10T00:00:00Z"),
        ("2019-06-10T00:00:00Z", "2019-06-15T00:00:00Z"),
    ]


@pytest.mark.asyncio
async def test_recent_history_endpoint(mock_server, http_client, key_env):
    body = {"zone": "DE", "history": [point(5, 250), point(6, 240), point(7, 230)]}
    mock_server.route(RECENT_HISTORY_PATH, reply_json(body))
    source = make_source(mock_server, http_client, key_env, history_endpoint="history")
    samples = await source.history(T0 + 6 * HOUR, T0 + 24 * HOUR)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (T0 + 6 * HOUR, 240.0),
        (T0 + 7 * HOUR, 230.0),
    ]
    assert mock_server.calls(PAST_RANGE_PATH) == []


@pytest.mark.asyncio
async def test_forecast_points(mock_server, http_client, key_env):
    body = {
        "zone": "DE",
        "forecast": [
            {"carbonIntensity": 340, "datetime": "2019-05-21T02:00:00.000Z"},
            {"carbonIntensity": 336, "datetime": "2019-05-21T01:00:00.000Z"},
            {"carbonIntensity": None, "datetime": "2019-05-21T03:00:00.000Z"},
        ],
        "updatedAt": "2019-05-21T00:32:33.210Z",
    }
    mock_server.route(FORECAST_PATH, reply_json(body))
    source = make_source(mock_server, http_client, key_env)
    points = await source.forecast()
    issued = T0 + 32 * 60 + 33
    assert points == [
        ForecastPoint("eu-central", issued, T0 + HOUR, 336.0, "electricitymaps"),
        ForecastPoint("eu-central", issued, T0 + 2 * HOUR, 340.0, "electricitymaps"),
    ]


BAD_LATEST = [
    pytest.param(
        {**LATEST, "carbonIntensity": None},
        "carbonIntensity is null for 2019-05-21T00:00:00Z",
        id="null",
    ),
    pytest.param(
        {k: v for k, v in LATEST.items() if k != "carbonIntensity"},
        "has no field 'carbonIntensity'",
        id="missing-value",
    ),
    pytest.param(
        {k: v for k, v in LATEST.items() if k != "datetime"},
        "has no field 'datetime'",
        id="missing-time",
    ),
    pytest.param(
        {**LATEST, "datetime": "2019-05-21T00:00:00"}, "has no UTC offset", id="naive-time"
    ),
    pytest.param({**LATEST, "datetime": "yesterday"}, "is not an ISO 8601 time", id="bad-time"),
    pytest.param(
        {**LATEST, "carbonIntensity": "302"},
        "carbonIntensity must be a number, got a string",
        id="string",
    ),
    pytest.param(
        {**LATEST, "carbonIntensity": -4}, "is not a finite non-negative number", id="negative"
    ),
    pytest.param(
        {**LATEST, "zone": "FR"}, "the response is for zone 'FR', not 'DE'", id="other-zone"
    ),
    pytest.param([LATEST], "the response must be a JSON object, got an array", id="array"),
]


@pytest.mark.asyncio
@pytest.mark.parametrize(("body", "problem"), BAD_LATEST)
async def test_bad_latest_raises_data_error(mock_server, http_client, key_env, body, problem):
    mock_server.route(LATEST_PATH, reply_json(body))
    source = make_source(mock_server, http_client, key_env)
    with pytest.raises(SourceDataError) as caught:
        await source.latest()
    message = str(caught.value)
    assert message.startswith(
        "electricitymaps (region eu-central, zone DE): GET /v3/carbon-intensity/latest returned unusable data: "
    )
    assert problem in message
    assert len(mock_server.calls(LATEST_PATH)) == 1


@pytest.mark.asyncio
async def test_empty_history_is_data_error(mock_server, http_client, key_env):
    mock_server.route(PAST_RANGE_PATH, reply_json({"zone": "DE", "data": []}))
    source = make_source(mock_server, http_client, key_env)
    with pytest.raises(SourceDataError, match="data is empty: no data from 2019-05-21T00:00:00Z"):
        await source.history(T0, T0 + HOUR)


@pytest.mark.asyncio
async def test_empty_forecast_is_data_error(mock_server, http_client, key_env):
    mock_server.route(
        FORECAST_PATH, reply_json({"zone": "DE", "forecast": [], "updatedAt": LATEST["updatedAt"]})
    )
    source = make_source(mock_server, http_client, key_env)
    with pytest.raises(SourceDataError, match="the forecast has no points with a value"):
        await source.forecast()


@pytest.mark.asyncio
async def test_conflicting_duplicate_times_are_data_error(mock_server, http_client, key_env):
    mock_server.route(
        PAST_RANGE_PATH, reply_json({"zone": "DE", "data": [point(1, 300), point(1, 310)]})
    )
    source = make_source(mock_server, http_client, key_env)
    with pytest.raises(
        SourceDataError, match="2019-05-21T01:00:00Z is listed twice with different intensities"
    ):
        await source.history(T0, T0 + 4 * HOUR)


@pytest.mark.asyncio
@pytest.mark.parametrize("status", [401, 403])
async def test_rejected_key_is_auth_error_without_the_key(
    mock_server, http_client, key_env, status
):
    mock_server.route(LATEST_PATH, reply_text(f"Invalid auth-token {KEY}", status=status))
    source = make_source(mock_server, http_client, key_env)
    with capture_logs() as logs, pytest.raises(SourceAuthError) as caught:
        await source.latest()
    assert caught.value.status == status
    assert str(caught.value).endswith(
        "check the API key in environment variable EM_TEST_KEY (api_key_env)"
    )
    assert KEY not in str(caught.value)
    assert KEY not in repr(logs)
    assert len(mock_server.calls(LATEST_PATH)) == 1


@pytest.mark.asyncio
async def test_outage_then_recovery_never_logs_the_key(mock_server, http_client, key_env):
    mock_server.route(
        LATEST_PATH,
        reply_text(f"upstream failed for {KEY}", status=502),
        reply_text("", status=429, headers={"Retry-After": "3"}),
        reply_json(LATEST),
    )
    sleep = RecordingSleep()
    source = make_source(mock_server, http_client, key_env, sleep=sleep)
    with capture_logs() as logs:
        sample = await source.latest()
    assert sample.intensity_g_per_kwh == 302.0
    # A backoff of 0.75 times its 0.5 s ceiling, then exactly the Retry-After.
    assert sleep.delays == [0.375, 3.0]
    assert [entry["attempt"] for entry in logs if entry["event"] == "carbon_request_retry"] == [
        "1 of 3",
        "2 of 3",
    ]
    assert KEY not in repr(logs)


@pytest.mark.asyncio
async def test_outage_raises_unavailable(mock_server, http_client, key_env):
    mock_server.route(LATEST_PATH, reply_text("maintenance", status=503))
    source = make_source(mock_server, http_client, key_env)
    with capture_logs() as logs, pytest.raises(SourceUnavailable) as caught:
        await source.latest()
    assert caught.value.provider == "electricitymaps"
    assert "zone DE" in str(caught.value)
    assert "/v3/carbon-intensity/latest" in str(caught.value)
    assert any(entry["event"] == "carbon_source_unavailable" for entry in logs)
    assert len(mock_server.calls(LATEST_PATH)) == 3


@pytest.mark.asyncio
async def test_missing_key_fails_before_any_request(mock_server, http_client, monkeypatch):
    monkeypatch.delenv("EM_ABSENT_KEY", raising=False)
    source = make_source(
        mock_server, http_client, SecretRef(setting="api_key", env="EM_ABSENT_KEY")
    )
    with pytest.raises(
        SourceAuthError, match="environment variable EM_ABSENT_KEY .api_key_env. is not set"
    ):
        await source.latest()
    assert mock_server.requests == []


@pytest.mark.asyncio
async def test_rotated_key_file_is_read_again(mock_server, http_client, tmp_path):
    file = tmp_path / "api-key"
    file.write_text("first-key-0001\n", encoding="utf-8")
    mock_server.route(LATEST_PATH, reply_json(LATEST))
    source = make_source(
        mock_server, http_client, SecretRef(setting="api_key", file=str(file)), cache_ttl_seconds=0
    )
    await source.latest()
    file.write_text("second-key-0002\n", encoding="utf-8")
    await source.latest()
    assert [call.headers["auth-token"] for call in mock_server.calls(LATEST_PATH)] == [
        "first-key-0001",
        "second-key-0002",
    ]


def test_constructor_rejects_bad_options(key_env):
    with pytest.raises(
        ValueError, match="emission_factor_type 'marginal' is not one of lifecycle, direct"
    ):
        ElectricityMapsSource(
            region="r",
            zone="DE",
            api_key=key_env,
            clock=FakeClock(),
            emission_factor_type="marginal",
        )
    with pytest.raises(
        ValueError, match="history_endpoint 'all' is not one of past-range, history"
    ):
        ElectricityMapsSource(
            region="r", zone="DE", api_key=key_env, clock=FakeClock(), history_endpoint="all"
        )
    with pytest.raises(ValueError, match="zone must be a non-empty"):
        ElectricityMapsSource(region="r", zone="", api_key=key_env, clock=FakeClock())
