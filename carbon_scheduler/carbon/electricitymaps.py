"""Electricity Maps source: average, consumption-based intensity of one zone (API v3).

Endpoints, all `GET` with the key in the `auth-token` header and the zone in the
`zone` query parameter (API v3 as documented at
https://static.electricitymaps.com/api/docs/index.html and in the developer hub
at https://portal.electricitymaps.com/developer-hub/api/reference):

    /v3/carbon-intensity/latest       {"zone", "carbonIntensity", "datetime",
                                       "updatedAt", "isEstimated", ...}
    /v3/carbon-intensity/past-range   {"zone", "data": [<same points>]}, with
                                       `start` and `end`; at most 10 days per request
                                       at hourly granularity, so longer ranges are
                                       split
    /v3/carbon-intensity/history      {"zone", "history": [<points>]}, the last 24
                                       hours; the endpoint open to the free tier
    /v3/carbon-intensity/forecast     {"zone", "forecast": [{"carbonIntensity",
                                       "datetime"}], "updatedAt"}

`carbonIntensity` is in gCO2eq/kWh and `datetime` is the start of the hour it
describes, so values map onto Sample without conversion. `emissionFactorType`
("lifecycle", the provider's default, or "direct") and `disableEstimations` are
passed through. A point whose `carbonIntensity` is null has no data and is left
out of history and forecasts; a null latest value raises SourceDataError.

A response that names another zone than the one requested raises SourceDataError,
so data of one zone is never stored under another region.
"""

from __future__ import annotations

import asyncio
import random as random_module
from typing import Any

import httpx

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

NAME = "electricitymaps"
DEFAULT_BASE_URL = "https://api.electricitymaps.com"
LATEST_PATH = "/v3/carbon-intensity/latest"
PAST_RANGE_PATH = "/v3/carbon-intensity/past-range"
RECENT_HISTORY_PATH = "/v3/carbon-intensity/history"
FORECAST_PATH = "/v3/carbon-intensity/forecast"
# The provider serves at most 10 days of hourly data per past-range request.
PAST_RANGE_MAX_SECONDS = 10 * 86_400
EMISSION_FACTOR_TYPES = ("lifecycle", "direct")
HISTORY_ENDPOINTS = ("past-range", "history")


class ElectricityMapsSource:
    """Intensity of Electricity Maps zone `zone`, reported for `region`.

    `history_endpoint` selects the endpoint that `history()` requests: "past-range"
    (any range, a commercial endpoint) or "history" (the last 24 hours only, but
    also on the free tier, so older parts of a range come back empty).
    """

    name = NAME

    def __init__(
        self,
        *,
        region: str,
        zone: str,
        api_key: SecretRef,
        clock: Clock,
        http: HttpSettings | None = None,
        client: httpx.AsyncClient | None = None,
        emission_factor_type: str = "lifecycle",
        disable_estimations: bool = False,
        history_endpoint: str = "past-range",
        sleep: Sleep = asyncio.sleep,
        random: Random = random_module.random,
    ) -> None:
        if not zone:
            raise ValueError("zone must be a non-empty Electricity Maps zone key, such as DE")
        if emission_factor_type not in EMISSION_FACTOR_TYPES:
            raise ValueError(
                f"emission_factor_type {emission_factor_type!r} is not one of "
                f"{', '.join(EMISSION_FACTOR_TYPES)}"
            )
        if history_endpoint not in HISTORY_ENDPOINTS:
            raise ValueError(
                f"history_endpoint {history_endpoint!r} is not one of {', '.join(HISTORY_ENDPOINTS)}"
            )

        self.region = region
        self.zone = zone
        self._api_key = api_key
        self._clock = clock
        self._emission_factor_type = emission_factor_type
        self._disable_estimations = disable_estimations
        self._history_endpoint = history_endpoint
        self._key_in_use: str | None = None

        self._http = ProviderHttp(
            provider=NAME,
            settings=http or HttpSettings(base_url=DEFAULT_BASE_URL),
            clock=clock,
            context={"region": region, "zone": zone},
            client=client,
            secrets=self._secrets,
            auth_hint=f"check the API key in {api_key.describe()}",
            sleep=sleep,
            random=random,
        )

    def _secrets(self) -> tuple[str, ...]:
        return (self._key_in_use,) if self._key_in_use else ()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, params: dict[str, str]) -> tuple[Any, ResponseReader]:
        key = self._api_key.read(provider=NAME, label=self._http.label)
        self._key_in_use = key
        query = {"zone": self.zone, "emissionFactorType": self._emission_factor_type, **params}
        if self._disable_estimations:
            query["disableEstimations"] = "true"
        body = await self._http.get_json(path, params=query, headers={"auth-token": key})
        reader = ResponseReader(NAME, self._http.label, path)
        body = reader.object(body, "the response")
        self._check_zone(body, reader)
        return body, reader

    def _check_zone(self, body: dict[str, Any], reader: ResponseReader) -> None:
        zone = body.get("zone")
        if zone is not None and zone != self.zone:
            raise reader.error(f"the response is for zone {zone!r}, not {self.zone!r}")

    async def latest(self) -> Sample:
        body, reader = await self._get(LATEST_PATH, {})
        moment = reader.time(reader.field(body, "datetime", "the response"), "datetime")
        value = reader.intensity(
            reader.field(body, "carbonIntensity", "the response"), "carbonIntensity"
        )
        if value is None:
            raise reader.error(f"carbonIntensity is null for {format_utc(moment)}: no data yet")
        return Sample(region=self.region, time=moment, intensity_g_per_kwh=value, source=NAME)

    async def history(self, start: int, end: int) -> list[Sample]:
        start, end = check_history_range(start, end)
        if start == end:
            return []
        if self._history_endpoint == "history":
            body, reader = await self._get(RECENT_HISTORY_PATH, {})
            items = reader.array(reader.field(body, "history", "the response"), "history")
            return self._samples(items, reader, start, end, "history")

        samples: list[Sample] = []
        for chunk_start, chunk_end in time_chunks(start, end, PAST_RANGE_MAX_SECONDS):
            params = {"start": format_utc(chunk_start), "end": format_utc(chunk_end)}
            body, reader = await self._get(PAST_RANGE_PATH, params)
            items = reader.array(reader.field(body, "data", "the response"), "data")
            samples.extend(self._samples(items, reader, chunk_start, chunk_end, "data"))
        return samples

    def _samples(
        self, items: list[Any], reader: ResponseReader, start: int, end: int, field: str
    ) -> list[Sample]:
        if not items:
            raise reader.error(
                f"{field} is empty: no data from {format_utc(start)} to {format_utc(end)}"
            )
        points = []
        for index, item in enumerate(items):
            location = f"{field}[{index}]"
            point = reader.object(item, location)
            moment = reader.time(reader.field(point, "datetime", location), f"{location}.datetime")
            value = reader.intensity(
                reader.field(point, "carbonIntensity", location), f"{location}.carbonIntensity"
            )
            if value is not None:
                points.append((moment, value))
        return samples_in_range(
            points, region=self.region, source=NAME, start=start, end=end, reader=reader
        )

    async def forecast(self) -> list[ForecastPoint]:
        body, reader = await self._get(FORECAST_PATH, {})
        items = reader.array(reader.field(body, "forecast", "the response"), "forecast")
        updated = body.get("updatedAt")
        issued_at = (
            reader.time(updated, "updatedAt") if updated is not None else int(self._clock.time())
        )
        points = []
        for index, item in enumerate(items):
            location = f"forecast[{index}]"
            point = reader.object(item, location)
            moment = reader.time(reader.field(point, "datetime", location), f"{location}.datetime")
            value = reader.intensity(
                reader.field(point, "carbonIntensity", location), f"{location}.carbonIntensity"
            )
            if value is not None:
                points.append((moment, value))
        return forecast_points(
            points, region=self.region, issued_at=issued_at, forecaster=NAME, reader=reader
        )
