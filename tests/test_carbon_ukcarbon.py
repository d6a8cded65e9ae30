"""UK Carbon Intensity source against a local mock of the national and regional API."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carbon_scheduler.carbon.errors import SourceDataError, SourceUnavailable
from carbon_scheduler.carbon.http import HttpSettings
from carbon_scheduler.carbon.ukcarbon import UKCarbonIntensitySource
from carbon_scheduler.store.base import ForecastPoint, Sample
from tests.carbon_mock import (  # noqa: F401  (fixtures)
    FakeClock,
    RecordingSleep,
    http_client,
    mock_server,
    reply_after,
    reply_json,
    reply_text,
)

T0 = int(datetime(2018, 1, 20, 12, 0, tzinfo=UTC).timestamp())
HALF = 1800


def stamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%MZ")


def period(
    start: int, forecast: float | None, actual: float | None = None, *, regional: bool = False
) -> dict:
    intensity: dict = {"forecast": forecast, "index": "moderate"}
    if not regional:
        intensity["actual"] = actual
    entry = {"from": stamp(start), "to": stamp(start + HALF), "intensity": intensity}
    if regional:
        entry["generationmix"] = [{"fuel": "wind", "perc": 41.2}, {"fuel": "gas", "perc": 30.1}]
    return entry


def region_body(periods: list[dict], *, wrapped: bool, region_id: int = 13) -> dict:
    area = {
        "regionid": region_id,
        "dnoregion": "UKPN London",
        "shortname": "London",
        "data": periods,
    }
    return {"data": [area] if wrapped else area}


def make_source(
    server, client, *, region_id=None, clock=None, **settings
) -> UKCarbonIntensitySource:
    return UKCarbonIntensitySource(
        region="eu-west",
        clock=clock or FakeClock(T0 + 600),
        region_id=region_id,
        http=HttpSettings(base_url=server.url, **{"max_attempts": 3, **settings}),
        client=client,
        sleep=RecordingSleep(),
        random=lambda: 0.5,
    )


@pytest.mark.asyncio
async def test_national_latest_uses_actual(mock_server, http_client):
    mock_server.route("/intensity", reply_json({"data": [period(T0, 266, 263)]}))
    source = make_source(mock_server, http_client)
    assert await source.latest() == Sample("eu-west", T0, 263.0, "ukcarbon")


@pytest.mark.asyncio
async def test_null_actual_falls_back_to_flagged_forecast(mock_server, http_client):
    mock_server.route("/intensity", reply_json({"data": [period(T0, 266, None)]}))
    source = make_source(mock_server, http_client)
    assert await source.latest() == Sample("eu-west", T0, 266.0, "ukcarbon-forecast")


@pytest.mark.asyncio
async def test_period_without_any_value_is_data_error(mock_server, http_client):
    mock_server.route("/intensity", reply_json({"data": [period(T0, None, None)]}))
    source = make_source(mock_server, http_client)
    with pytest.raises(SourceDataError, match="neither an actual nor a forecast intensity"):
        await source.latest()


@pytest.mark.asyncio
async def test_regional_latest(mock_server, http_client):
    body = region_body([period(T0, 182, regional=True)], wrapped=True)
    mock_server.route("/regional/regionid/13", reply_json(body))
    source = make_source(mock_server, http_client, region_id=13)
    assert await source.latest() == Sample("eu-west", T0, 182.0, "ukcarbon-forecast")


@pytest.mark.asyncio
async def test_regional_response_for_other_region_is_data_error(mock_server, http_client):
    body = region_body([period(T0, 182, regional=True)], wrapped=True, region_id=1)
    mock_server.route("/regional/regionid/13", reply_json(body))
    source = make_source(mock_server, http_client, region_id=13)
    with pytest.raises(SourceDataError, match="the response is for regionid 1, not 13"):
        await source.latest()


@pytest.mark.asyncio
async def test_national_history_sorted_and_filtered(mock_server, http_client):
    periods = [
        period(T0 + 2 * HALF, 250, None),
        period(T0 - HALF, 300, 298),
        period(T0, 280, 281),
        period(T0 + HALF, 270, 268),
    ]
    path = f"/intensity/{stamp(T0)}/{stamp(T0 + 3 * HALF)}"
    mock_server.route(path, reply_json({"data": periods}))
    source = make_source(mock_server, http_client, clock=FakeClock(T0 + 4 * HALF))
    samples = await source.history(T0, T0 + 3 * HALF)
    assert samples == [
        Sample("eu-west", T0, 281.0, "ukcarbon"),
        Sample("eu-west", T0 + HALF, 268.0, "ukcarbon"),
        Sample("eu-west", T0 + 2 * HALF, 250.0, "ukcarbon-forecast"),
    ]
    assert [call.path for call in mock_server.requests] == [
        "/intensity/2018-01-20T12:00Z/2018-01-20T13:30Z"
    ]


@pytest.mark.asyncio
async def test_regional_history_object_shape(mock_server, http_client):
    periods = [period(T0 + HALF, 190, regional=True), period(T0, 180, regional=True)]
    path = f"/regional/intensity/{stamp(T0)}/{stamp(T0 + 2 * HALF)}/regionid/13"
    mock_server.route(path, reply_json(region_body(periods, wrapped=False)))
    source = make_source(mock_server, http_client, region_id=13)
    samples = await source.history(T0, T0 + 2 * HALF)
    assert [(s.time, s.intensity_g_per_kwh, s.source) for s in samples] == [
        (T0, 180.0, "ukcarbon-forecast"),
        (T0 + HALF, 190.0, "ukcarbon-forecast"),
    ]


@pytest.mark.asyncio
async def test_history_longer_than_fourteen_days_is_split(mock_server, http_client):
    first = f"/intensity/{stamp(T0)}/{stamp(T0 + 14 * 86400)}"
    second = f"/intensity/{stamp(T0 + 14 * 86400)}/{stamp(T0 + 20 * 86400)}"
    mock_server.route(first, reply_json({"data": [period(T0, 200, 201)]}))
    mock_server.route(second, reply_json({"data": [period(T0 + 14 * 86400, 100, 99)]}))
    source = make_source(mock_server, http_client, clock=FakeClock(T0 + 30 * 86400))
    samples = await source.history(T0, T0 + 20 * 86400)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (T0, 201.0),
        (T0 + 14 * 86400, 99.0),
    ]
    assert [call.path for call in mock_server.requests] == [first, second]


@pytest.mark.asyncio
async def test_empty_history_is_data_error(mock_server, http_client):
    mock_server.route(f"/intensity/{stamp(T0)}/{stamp(T0 + HALF)}", reply_json({"data": []}))
    source = make_source(mock_server, http_client)
    with pytest.raises(
        SourceDataError, match="data is empty: no periods from 2018-01-20T12:00:00Z"
    ):
        await source.history(T0, T0 + HALF)


@pytest.mark.asyncio
async def test_national_forecast_from_current_half_hour(mock_server, http_client):
    clock = FakeClock(T0 + 1000)
    periods = [
        period(T0 + HALF, 240),
        period(T0, 250),
        period(T0 - HALF, 999),
        period(T0 + 2 * HALF, None),
    ]
    mock_server.route(f"/intensity/{stamp(T0)}/fw48h", reply_json({"data": periods}))
    source = make_source(mock_server, http_client, clock=clock)
    points = await source.forecast()
    assert points == [
        ForecastPoint("eu-west", T0, T0, 250.0, "ukcarbon"),
        ForecastPoint("eu-west", T0, T0 + HALF, 240.0, "ukcarbon"),
    ]
    clock.advance(200)
    await source.forecast()
    assert len(mock_server.requests) == 1


@pytest.mark.asyncio
async def test_regional_forecast_path(mock_server, http_client):
    path = f"/regional/intensity/{stamp(T0)}/fw48h/regionid/3"
    body = region_body([period(T0, 120, regional=True)], wrapped=False, region_id=3)
    mock_server.route(path, reply_json(body))
    source = make_source(mock_server, http_client, region_id=3)
    assert await source.forecast() == [ForecastPoint("eu-west", T0, T0, 120.0, "ukcarbon")]


@pytest.mark.asyncio
async def test_server_error_then_success(mock_server, http_client):
    mock_server.route(
        "/intensity", reply_text("oops", status=500), reply_json({"data": [period(T0, 1, 2)]})
    )
    source = make_source(mock_server, http_client)
    assert (await source.latest()).intensity_g_per_kwh == 2.0
    assert len(mock_server.requests) == 2


@pytest.mark.asyncio
async def test_malformed_json_is_data_error(mock_server, http_client):
    mock_server.route("/intensity", reply_text('{"data": [', status=200))
    source = make_source(mock_server, http_client)
    with pytest.raises(
        SourceDataError,
        match=r"ukcarbon \(region eu-west, area national\): GET /intensity returned",
    ):
        await source.latest()


@pytest.mark.asyncio
async def test_timeout_is_unavailable(mock_server, http_client):
    mock_server.route("/intensity", reply_after(2.0, reply_json({"data": []})))
    source = make_source(mock_server, http_client, timeout_seconds=0.05, max_attempts=1)
    with pytest.raises(SourceUnavailable, match="timed out after 0.05 s"):
        await source.latest()


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            {"data": [{"from": stamp(T0)}]}, "period 0 has no field 'intensity'", id="no-intensity"
        ),
        pytest.param(
            {"data": [{"intensity": {"forecast": 1}}]}, "period 0 has no field 'from'", id="no-from"
        ),
        pytest.param(
            {"data": [{"from": "2018-01-20T12:00", "intensity": {"forecast": 1}}]},
            "has no UTC offset",
            id="no-offset",
        ),
        pytest.param({"data": {}}, "data must be a JSON array, got an object", id="object"),
        pytest.param({"items": []}, "the response has no field 'data'", id="no-data"),
        pytest.param({"data": []}, "data is empty: no current period", id="empty"),
    ],
)
async def test_bad_national_shapes(mock_server, http_client, body, problem):
    mock_server.route("/intensity", reply_json(body))
    source = make_source(mock_server, http_client)
    with pytest.raises(SourceDataError) as caught:
        await source.latest()
    assert problem in str(caught.value)


def test_region_id_must_exist():
    with pytest.raises(ValueError, match="region_id must be an integer from 1 to 17, got 18"):
        UKCarbonIntensitySource(region="r", clock=FakeClock(), region_id=18)
