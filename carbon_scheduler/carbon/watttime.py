"""WattTime source: marginal (or average) emissions of one grid region (API v3).

Authentication. `GET /login` with HTTP basic auth (username and password)
returns {"token": "..."}, a bearer token that WattTime documents as valid for 30
minutes. The source logs in on first use and again 25 minutes later. After an
HTTP 401 from a data endpoint it logs in once more and repeats the request once,
and a second 401 raises SourceAuthError.

Endpoints (https://docs.watttime.org, v3), each with `region` (a grid region or
balancing authority such as CAISO_NORTH) and `signal_type`:

    /v3/forecast      {"data": [{"point_time", "value"}], "meta": {"units",
                       "generated_at", "region", "signal_type", ...}}
    /v3/historical    the same shape, with `start` and `end`; at most 30 days per
                       request, so longer ranges are split
    /v3/signal-index  {"data": [{"point_time", "value"}], "meta": {"units":
                       "percentile", ...}}: where the current value ranks among
                       the coming day's, 0 to 100

`point_time` is the start of a five-minute interval. WattTime v3 has no endpoint
for the current value in physical units: its first forecast point is the
current interval, so `latest()` and `forecast()` read the same cached /v3/forecast
response. NOTE: that reading of the first point follows WattTime's description of
/v3/forecast as its real-time data; it was checked against recorded response
shapes, not against a live account.

Units. The default signal, `co2_moer`, is a marginal operating emissions rate:
the emissions of the plants that respond to a change in load, not the average of
the grid mix that Electricity Maps and the UK API report. WattTime gives it in
pounds of CO2 per megawatt-hour (`meta.units` = "lbs_co2_per_mwh"). This source
converts explicitly: 1 lb = 453.592 g and 1 MWh = 1000 kWh, so
1 lb/MWh = 0.453592 g/kWh. A response with any other unit raises SourceDataError
rather than passing an unconverted number on.
"""

from __future__ import annotations

import asyncio
import random as random_module
from dataclasses import dataclass
from typing import Any

import httpx

from carbon_scheduler.carbon.errors import SourceAuthError
from carbon_scheduler.carbon.http import (
    HttpSettings,
    ProviderHttp,
    Random,
    ResponseReader,
    SecretRef,
    Sleep,
    forecast_points,
    format_utc,
    samples_in_range,
    time_chunks,
)
from carbon_scheduler.carbon.source import Clock, check_history_range
from carbon_scheduler.store.base import ForecastPoint, Sample

NAME = "watttime"
DEFAULT_BASE_URL = "https://api.watttime.org"
LOGIN_PATH = "/login"
FORECAST_PATH = "/v3/forecast"
HISTORICAL_PATH = "/v3/historical"
SIGNAL_INDEX_PATH = "/v3/signal-index"
# Signals in emissions per energy, unlike `health_damage`, which is money per energy.
SIGNAL_TYPES = ("co2_moer", "co2_aoer")
G_PER_KWH_PER_LB_PER_MWH = 0.453592
UNIT_FACTORS = {"lbs_co2_per_mwh": G_PER_KWH_PER_LB_PER_MWH}
# WattTime tokens expire after 30 minutes, so renewing at 25 leaves room for clock skew.
TOKEN_LIFETIME_SECONDS = 25 * 60
HISTORICAL_MAX_SECONDS = 30 * 86_400
MAX_HORIZON_HOURS = 72


@dataclass(frozen=True, slots=True)
class SignalIndex:
    """WattTime's signal index: the current value's percentile (0 to 100) among the
    values forecast for the next day, for the interval starting at `time`."""

    time: int
    percentile: float


class WattTimeSource:
    """WattTime `signal_type` of grid region `grid_region`, reported for `region`, in g/kWh.

    `username` is a plain string or a SecretRef; `password` is always a SecretRef.
    `horizon_hours` is the forecast length requested from /v3/forecast (0 to 72).
    """

    name = NAME

    def __init__(
        self,
        *,
        region: str,
        grid_region: str,
        username: str | SecretRef,
        password: SecretRef,
        clock: Clock,
        signal_type: str = "co2_moer",
        horizon_hours: int = 24,
        http: HttpSettings | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        random: Random = random_module.random,
    ) -> None:
        if not grid_region:
            raise ValueError("grid_region must be a WattTime region such as CAISO_NORTH")
        if signal_type not in SIGNAL_TYPES:
            raise ValueError(
                f"signal_type {signal_type!r} is not an emissions intensity; use one of "
                f"{', '.join(SIGNAL_TYPES)}"
            )
        if isinstance(horizon_hours, bool) or not 0 <= horizon_hours <= MAX_HORIZON_HOURS:
            raise ValueError(
                f"horizon_hours must be an integer from 0 to 72, got {horizon_hours!r}"
            )

        self.region = region
        self.grid_region = grid_region
        self.signal_type = signal_type
        self._username = username
        self._password = password
        self._clock = clock
        self._horizon_hours = horizon_hours
        self._token: str | None = None
        self._token_expires_at = 0.0
        self._password_in_use: str | None = None
        self._login_lock = asyncio.Lock()

        self._http = ProviderHttp(
            provider=NAME,
            settings=http or HttpSettings(base_url=DEFAULT_BASE_URL),
            clock=clock,
            context={"region": region, "grid_region": grid_region},
            client=client,
            secrets=self._secrets,
            auth_hint=self._auth_hint(),
            sleep=sleep,
            random=random,
        )

    def _auth_hint(self) -> str:
        user = self._username.describe() if isinstance(self._username, SecretRef) else "username"
        return f"check the {user} and the password in {self._password.describe()}"

    def _secrets(self) -> tuple[str, ...]:
        return tuple(secret for secret in (self._token, self._password_in_use) if secret)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _login(self, stale_token: str | None) -> str:
        """Log in unless another call already replaced `stale_token`; return the token."""
        async with self._login_lock:
            if self._token is not None and self._token != stale_token:
                if self._clock.time() < self._token_expires_at:
                    return self._token
            label = self._http.label
            if isinstance(self._username, SecretRef):
                username = self._username.read(provider=NAME, label=label)
            else:
                username = self._username
            password = self._password.read(provider=NAME, label=label)
            self._password_in_use = password
            body = await self._http.get_json(LOGIN_PATH, auth=(username, password), use_cache=False)
            reader = ResponseReader(NAME, label, LOGIN_PATH)
            token = reader.field(reader.object(body, "the response"), "token", "the response")
            if not isinstance(token, str) or not token:
                raise reader.error("token must be a non-empty string")
            self._token = token
            self._token_expires_at = self._clock.time() + TOKEN_LIFETIME_SECONDS
            return token

    async def _token_now(self) -> str:
        if self._token is not None and self._clock.time() < self._token_expires_at:
            return self._token
        return await self._login(self._token)

    async def _get(
        self, path: str, params: dict[str, str]
    ) -> tuple[dict[str, Any], ResponseReader]:
        query = {"region": self.grid_region, "signal_type": self.signal_type, **params}
        token = await self._token_now()
        try:
            body = await self._http.get_json(path, params=query, headers=_bearer(token))
        except SourceAuthError as error:
            if error.status != 401:
                raise
            # The token expired early or was revoked: log in again, once.
            token = await self._login(token)
            body = await self._http.get_json(path, params=query, headers=_bearer(token))
        reader = ResponseReader(NAME, self._http.label, path)
        return reader.object(body, "the response"), reader

    def _points(self, body: dict[str, Any], reader: ResponseReader) -> list[tuple[int, float]]:
        meta = reader.object(reader.field(body, "meta", "the response"), "meta")
        units = reader.field(meta, "units", "meta")
        factor = UNIT_FACTORS.get(units) if isinstance(units, str) else None
        if factor is None:
            raise reader.error(
                f"meta.units {units!r} is not a unit this source converts; known: "
                f"{', '.join(UNIT_FACTORS)}"
            )
        self._check_meta(meta, reader)
        items = reader.array(reader.field(body, "data", "the response"), "data")
        points = []
        for index, item in enumerate(items):
            location = f"data[{index}]"
            point = reader.object(item, location)
            moment = reader.time(
                reader.field(point, "point_time", location), f"{location}.point_time"
            )
            value = reader.intensity(
                reader.field(point, "value", location), f"{location}.value", factor=factor
            )
            if value is not None:
                points.append((moment, value))
        return points

    def _check_meta(self, meta: dict[str, Any], reader: ResponseReader) -> None:
        # Guards against data of another region or signal being stored under this one.
        for key, expected in (("region", self.grid_region), ("signal_type", self.signal_type)):
            found = meta.get(key)
            if found is not None and found != expected:
                raise reader.error(f"meta.{key} is {found!r}, not {expected!r}")

    async def _forecast_body(self) -> tuple[dict[str, Any], ResponseReader]:
        return await self._get(FORECAST_PATH, {"horizon_hours": str(self._horizon_hours)})

    async def latest(self) -> Sample:
        body, reader = await self._forecast_body()
        points = sorted(self._points(body, reader))
        if not points:
            raise reader.error("data is empty: no current value")
        now = self._clock.time()
        started = [point for point in points if point[0] <= now]
        moment, value = started[-1] if started else points[0]
        return Sample(region=self.region, time=moment, intensity_g_per_kwh=value, source=NAME)

    async def forecast(self) -> list[ForecastPoint]:
        body, reader = await self._forecast_body()
        meta = reader.object(reader.field(body, "meta", "the response"), "meta")
        generated = meta.get("generated_at")
        issued_at = (
            reader.time(generated, "meta.generated_at")
            if generated is not None
            else int(self._clock.time())
        )
        return forecast_points(
            self._points(body, reader),
            region=self.region,
            issued_at=issued_at,
            forecaster=NAME,
            reader=reader,
        )

    async def history(self, start: int, end: int) -> list[Sample]:
        start, end = check_history_range(start, end)
        samples: list[Sample] = []
        for chunk_start, chunk_end in time_chunks(start, end, HISTORICAL_MAX_SECONDS):
            params = {"start": format_utc(chunk_start), "end": format_utc(chunk_end)}
            body, reader = await self._get(HISTORICAL_PATH, params)
            points = self._points(body, reader)
            if not points:
                raise reader.error(
                    f"data is empty: no values from {format_utc(chunk_start)} to {format_utc(chunk_end)}"
                )
            samples.extend(
                samples_in_range(
                    points,
                    region=self.region,
                    source=NAME,
                    start=chunk_start,
                    end=chunk_end,
                    reader=reader,
                )
            )
        return samples

    async def signal_index(self) -> SignalIndex:
        """Return the current signal index, the percentile WattTime also serves to
        accounts without access to the values themselves."""
        body, reader = await self._get(SIGNAL_INDEX_PATH, {})
        meta = reader.object(reader.field(body, "meta", "the response"), "meta")
        units = meta.get("units")
        if units is not None and units != "percentile":
            raise reader.error(f"meta.units is {units!r}, not 'percentile'")
        self._check_meta(meta, reader)
        items = reader.array(reader.field(body, "data", "the response"), "data")
        if not items:
            raise reader.error("data is empty: no current index")
        point = reader.object(items[0], "data[0]")
        moment = reader.time(reader.field(point, "point_time", "data[0]"), "data[0].point_time")
        value = reader.intensity(reader.field(point, "value", "data[0]"), "data[0].value")
        if value is None or value > 100:
            raise reader.error(f"data[0].value {value!r} is not a percentile from 0 to 100")
        return SignalIndex(time=moment, percentile=value)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
