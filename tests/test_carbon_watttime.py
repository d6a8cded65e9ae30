"""WattTime source against a local mock of API v3: login, token refresh, units."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
from structlog.testing import capture_logs

from carbon_scheduler.carbon.errors import SourceAuthError, SourceDataError, SourceRequestError
from carbon_scheduler.carbon.http import HttpSettings, SecretRef
from carbon_scheduler.carbon.watttime import (
    FORECAST_PATH,
    G_PER_KWH_PER_LB_PER_MWH,
    HISTORICAL_PATH,
    LOGIN_PATH,
    SIGNAL_INDEX_PATH,
    SignalIndex,
    WattTimeSource,
)
from carbon_scheduler.store.base import ForecastPoint, Sample
from tests.carbon_mock import (  # noqa: F401  (fixtures)
    FakeClock,
    RecordingSleep,
    http_client,
    mock_server,
    reply_json,
    reply_text,
)

USER = "carbon-demo"
PASSWORD = "pw-Zq81!x7m"
TOKEN_1 = "eyJhbGciOiJIUzI1NiJ9.first.token"
TOKEN_2 = "eyJhbGciOiJIUzI1NiJ9.second.token"
T0 = 1_700_000_100  # 2023-11-14T22:15:00Z, a five-minute boundary
META = {
    "region": "CAISO_NORTH",
    "signal_type": "co2_moer",
    "model": {"date": "2023-03-01"},
    "units": "lbs_co2_per_mwh",
    "data_point_period_seconds": 300,
    "generated_at_period_seconds": 300,
    "generated_at": "2023-11-14T22:15:00+00:00",
    "warnings": [],
}


def stamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def data(*points: tuple[int, float | None], meta: dict | None = None) -> dict:
    return {
        "data": [{"point_time": stamp(moment), "value": value} for moment, value in points],
        "meta": META if meta is None else meta,
    }


@pytest.fixture
def password(monkeypatch):
    monkeypatch.setenv("WT_TEST_PASSWORD", PASSWORD)
    return SecretRef(setting="password", env="WT_TEST_PASSWORD")


def make_source(server, client, password, *, clock=None, **options) -> WattTimeSource:
    return WattTimeSource(
        region="us-west",
        grid_region="CAISO_NORTH",
        username=options.pop("username", USER),
        password=password,
        clock=clock or FakeClock(T0 + 120),
        http=HttpSettings(base_url=server.url, max_attempts=2, cache_ttl_seconds=300),
        client=client,
        sleep=RecordingSleep(),
        random=lambda: 0.5,
        **options,
    )


def basic(user: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


@pytest.mark.asyncio
async def test_login_and_latest_in_grams_per_kwh(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(
        FORECAST_PATH, reply_json(data((T0, 1000.0), (T0 + 300, 900.0), (T0 + 600, 800.0)))
    )
    source = make_source(mock_server, http_client, password, clock=FakeClock(T0 + 400))

    sample = await source.latest()

    assert sample == Sample("us-west", T0 + 300, 900.0 * 0.453592, "watttime")
    assert sample.intensity_g_per_kwh == pytest.approx(408.2328)
    (login,) = mock_server.calls(LOGIN_PATH)
    assert login.headers["authorization"] == basic(USER, PASSWORD)
    (request,) = mock_server.calls(FORECAST_PATH)
    assert request.headers["authorization"] == f"Bearer {TOKEN_1}"
    assert request.query == {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "horizon_hours": "24",
    }


def test_conversion_factor_is_pounds_per_megawatt_hour():
    # 1 lb = 453.592 g and 1 MWh = 1000 kWh.
    assert G_PER_KWH_PER_LB_PER_MWH == pytest.approx(453.592 / 1000)


@pytest.mark.asyncio
async def test_forecast_shares_the_cached_response(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(FORECAST_PATH, reply_json(data((T0 + 300, 500.0), (T0, 600.0))))
    source = make_source(mock_server, http_client, password)
    await source.latest()
    points = await source.forecast()
    assert points == [
        ForecastPoint("us-west", T0, T0, 600.0 * 0.453592, "watttime"),
        ForecastPoint("us-west", T0, T0 + 300, 500.0 * 0.453592, "watttime"),
    ]
    assert len(mock_server.calls(FORECAST_PATH)) == 1
    assert len(mock_server.calls(LOGIN_PATH)) == 1


@pytest.mark.asyncio
async def test_token_reused_then_renewed_before_expiry(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}), reply_json({"token": TOKEN_2}))
    mock_server.route(FORECAST_PATH, reply_json(data((T0, 100.0))))
    clock = FakeClock(T0 + 60)
    source = make_source(mock_server, http_client, password, clock=clock)

    await source.latest()
    clock.advance(301)  # past the cache, within the token's life
    await source.latest()
    assert len(mock_server.calls(LOGIN_PATH)) == 1

    clock.advance(25 * 60)
    await source.latest()
    assert len(mock_server.calls(LOGIN_PATH)) == 2
    tokens = [call.headers["authorization"] for call in mock_server.calls(FORECAST_PATH)]
    assert tokens == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]


@pytest.mark.asyncio
async def test_401_logs_in_again_once(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}), reply_json({"token": TOKEN_2}))
    mock_server.route(
        FORECAST_PATH, reply_text("token expired", status=401), reply_json(data((T0, 200.0)))
    )
    source = make_source(mock_server, http_client, password)

    sample = await source.latest()

    assert sample.intensity_g_per_kwh == pytest.approx(200.0 * 0.453592)
    assert len(mock_server.calls(LOGIN_PATH)) == 2
    tokens = [call.headers["authorization"] for call in mock_server.calls(FORECAST_PATH)]
    assert tokens == [f"Bearer {TOKEN_1}", f"Bearer {TOKEN_2}"]


@pytest.mark.asyncio
async def test_second_401_is_auth_error(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}), reply_json({"token": TOKEN_2}))
    mock_server.route(FORECAST_PATH, reply_text(f"invalid token {TOKEN_2}", status=401))
    source = make_source(mock_server, http_client, password)
    with capture_logs() as logs, pytest.raises(SourceAuthError) as caught:
        await source.latest()
    assert caught.value.status == 401
    assert len(mock_server.calls(LOGIN_PATH)) == 2
    assert len(mock_server.calls(FORECAST_PATH)) == 2
    for secret in (PASSWORD, TOKEN_1, TOKEN_2):
        assert secret not in str(caught.value)
        assert secret not in repr(logs)


@pytest.mark.asyncio
async def test_403_does_not_log_in_again(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(HISTORICAL_PATH, reply_text("no access to this region", status=403))
    source = make_source(mock_server, http_client, password)
    with pytest.raises(SourceAuthError, match="HTTP 403 Forbidden"):
        await source.history(T0 - 3600, T0)
    assert len(mock_server.calls(LOGIN_PATH)) == 1


@pytest.mark.asyncio
async def test_rejected_login_names_the_password_setting(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_text("bad credentials", status=401))
    source = make_source(mock_server, http_client, password)
    with pytest.raises(SourceAuthError) as caught:
        await source.latest()
    message = str(caught.value)
    assert message == (
        "watttime (region us-west, grid_region CAISO_NORTH): GET /login was rejected with HTTP 401 "
        "Unauthorized; check the username and the password in environment variable "
        "WT_TEST_PASSWORD (password_env)"
    )
    assert mock_server.calls(FORECAST_PATH) == []


@pytest.mark.asyncio
async def test_login_without_token_is_data_error(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"message": "ok"}))
    source = make_source(mock_server, http_client, password)
    with pytest.raises(
        SourceDataError,
        match="GET /login returned unusable data: the response has no field 'token'",
    ):
        await source.latest()


@pytest.mark.asyncio
async def test_request_error_body_is_redacted(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(
        FORECAST_PATH, reply_text(f"region unknown for {TOKEN_1} / {PASSWORD}", status=400)
    )
    source = make_source(mock_server, http_client, password)
    with pytest.raises(SourceRequestError) as caught:
        await source.latest()
    assert str(caught.value).endswith("region unknown for [redacted] / [redacted]")


@pytest.mark.asyncio
async def test_historical_sorted_converted_and_filtered(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    body = data((T0 + 600, 300.0), (T0, 100.0), (T0 + 300, None), (T0 + 900, 400.0))
    mock_server.route(HISTORICAL_PATH, reply_json(body))
    source = make_source(mock_server, http_client, password)
    samples = await source.history(T0, T0 + 900)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (T0, pytest.approx(45.3592)),
        (T0 + 600, pytest.approx(136.0776)),
    ]
    (request,) = mock_server.calls(HISTORICAL_PATH)
    assert request.query["start"] == "2023-11-14T22:15:00Z"
    assert request.query["end"] == "2023-11-14T22:30:00Z"


@pytest.mark.asyncio
async def test_historical_longer_than_thirty_days_is_split(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(HISTORICAL_PATH, reply_json(data((T0, 100.0))))
    source = make_source(mock_server, http_client, password)
    await source.history(T0, T0 + 45 * 86400)
    assert len(mock_server.calls(HISTORICAL_PATH)) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("body", "problem"),
    [
        pytest.param(
            data((T0, 1.0), meta={**META, "units": "percentile"}),
            "meta.units 'percentile' is not a unit",
            id="units",
        ),
        pytest.param(
            data((T0, 1.0), meta={k: v for k, v in META.items() if k != "units"}),
            "meta has no field 'units'",
            id="no-units",
        ),
        pytest.param(
            data((T0, 1.0), meta={**META, "region": "PJM_DC"}),
            "meta.region is 'PJM_DC', not 'CAISO_NORTH'",
            id="region",
        ),
        pytest.param({"data": []}, "the response has no field 'meta'", id="no-meta"),
        pytest.param(data(), "data is empty: no current value", id="empty"),
        pytest.param(
            {"data": [{"value": 3}], "meta": META},
            "data[0] has no field 'point_time'",
            id="no-time",
        ),
    ],
)
async def test_bad_forecast_is_data_error(mock_server, http_client, password, body, problem):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(FORECAST_PATH, reply_json(body))
    source = make_source(mock_server, http_client, password)
    with pytest.raises(SourceDataError) as caught:
        await source.latest()
    assert problem in str(caught.value)
    assert "watttime (region us-west, grid_region CAISO_NORTH): GET /v3/forecast" in str(
        caught.value
    )


@pytest.mark.asyncio
async def test_signal_index(mock_server, http_client, password):
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    body = data((T0, 53.0), meta={**META, "units": "percentile"})
    mock_server.route(SIGNAL_INDEX_PATH, reply_json(body))
    source = make_source(mock_server, http_client, password)
    assert await source.signal_index() == SignalIndex(time=T0, percentile=53.0)


@pytest.mark.asyncio
async def test_username_from_secret_file(mock_server, http_client, password, tmp_path):
    file = tmp_path / "username"
    file.write_text("file-user\n", encoding="utf-8")
    mock_server.route(LOGIN_PATH, reply_json({"token": TOKEN_1}))
    mock_server.route(FORECAST_PATH, reply_json(data((T0, 10.0))))
    source = make_source(
        mock_server, http_client, password, username=SecretRef(setting="username", file=str(file))
    )
    await source.latest()
    assert mock_server.calls(LOGIN_PATH)[0].headers["authorization"] == basic("file-user", PASSWORD)


def test_constructor_rejects_non_intensity_signals(password):
    with pytest.raises(
        ValueError, match="signal_type 'health_damage' is not an emissions intensity"
    ):
        WattTimeSource(
            region="r",
            grid_region="X",
            username=USER,
            password=password,
            clock=FakeClock(),
            signal_type="health_damage",
        )
    with pytest.raises(ValueError, match="horizon_hours must be an integer from 0 to 72"):
        WattTimeSource(
            region="r",
            grid_region="X",
            username=USER,
            password=password,
            clock=FakeClock(),
            horizon_hours=73,
        )
