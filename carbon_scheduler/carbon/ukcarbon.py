"""UK Carbon Intensity source: Great Britain, nationally or for one DNO region.

The API of NESO (formerly National Grid ESO) at https://api.carbonintensity.org.uk
needs no key. Intensities are in gCO2/kWh for half-hour periods, each given as
{"from": "2018-01-20T12:00Z", "to": "2018-01-20T12:30Z", "intensity": {"forecast":
266, "actual": 263, "index": "moderate"}}; `from` becomes the sample time.
Endpoints (https://carbon-intensity.github.io/api-definitions/):

    national (no `region_id`):
      /intensity                        {"data": [<the current period>]}
      /intensity/{from}/{to}            {"data": [<periods>]}, at most 14 days
      /intensity/{from}/fw48h           {"data": [<periods of the next 48 h>]}
    regional (`region_id` 1 to 17, such as 13 for London):
      /regional/regionid/{id}           {"data": [{"regionid", "shortname",
                                          "data": [<the current period>]}]}
      /regional/intensity/{from}/{to}/regionid/{id}
      /regional/intensity/{from}/fw48h/regionid/{id}
                                        {"data": {"regionid", "shortname",
                                          "data": [<periods>]}}

`{from}` and `{to}` are written as YYYY-MM-DDThh:mmZ. Longer history ranges are
split into 14-day requests, and periods outside the requested range are dropped.

Actual or forecast. National periods carry `actual` once it is measured; it is
null for recent and future periods. Regional periods carry only `forecast`. A
sample falls back to the forecast value when `actual` is null, and is then
flagged by its source label "ukcarbon-forecast" instead of "ukcarbon", so stores
and dashboards can tell estimates from measurements. Where both are null the
period is left out (and `latest()` raises SourceDataError).
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
    Sleep,
    forecast_points,
    format_utc,
    time_chunks,
)
from carbon_scheduler.carbon.source import Clock, check_history_range
from carbon_scheduler.store.base import ForecastPoint, Sample

NAME = "ukcarbon"
FORECAST_SOURCE = "ukcarbon-forecast"
DEFAULT_BASE_URL = "https://api.carbonintensity.org.uk"
PERIOD_SECONDS = 1800
MAX_RANGE_SECONDS = 14 * 86_400
REGION_IDS = range(1, 18)


class UKCarbonIntensitySource:
    """Intensity of Great Britain (`region_id` None) or of one of its DNO regions,
    reported for `region`."""

    name = NAME

    def __init__(
        self,
        *,
        region: str,
        clock: Clock,
        region_id: int | None = None,
        http: HttpSettings | None = None,
        client: httpx.AsyncClient | None = None,
        sleep: Sleep = asyncio.sleep,
        random: Random = random_module.random,
    ) -> None:
        if region_id is not None and (isinstance(region_id, bool) or region_id not in REGION_IDS):
            raise ValueError(f"region_id must be an integer from 1 to 17, got {region_id!r}")

        self.region = region
        self.region_id = region_id
        self._clock = clock
        context = {"region": region}
        context["area"] = "national" if region_id is None else f"regionid {region_id}"

        self._http = ProviderHttp(
            provider=NAME,
            settings=http or HttpSettings(base_url=DEFAULT_BASE_URL),
            clock=clock,
            context=context,
            client=client,
            sleep=sleep,
            random=random,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str) -> tuple[dict[str, Any], ResponseReader]:
        body = await self._http.get_json(path)
        reader = ResponseReader(NAME, self._http.label, path)
        return reader.object(body, "the response"), reader

    def _periods(self, body: dict[str, Any], reader: ResponseReader) -> list[Any]:
        """Return the list of periods, from the national or the regional shape."""
        data = reader.field(body, "data", "the response")
        if self.region_id is None:
            return reader.array(data, "data")
        # /regional/regionid/{id} wraps the region in a one-element array, but the
        # /regional/intensity/... endpoints return the region object itself.
        if isinstance(data, list):
            if not data:
                raise reader.error("data is empty: no region in the response")
            data = data[0]
        area = reader.object(data, "data")
        found = area.get("regionid")
        if found is not None and found != self.region_id:
            raise reader.error(f"the response is for regionid {found!r}, not {self.region_id}")
        return reader.array(reader.field(area, "data", "data"), "data.data")

    def _period(
        self, item: object, index: int, reader: ResponseReader
    ) -> tuple[int, float | None, float | None]:
        """Return (start time, actual, forecast) of one period."""
        location = f"period {index}"
        period = reader.object(item, location)
        moment = reader.time(reader.field(period, "from", location), f"{location} from")
        intensity = reader.object(
            reader.field(period, "intensity", location), f"{location} intensity"
        )
        forecast = reader.intensity(
            reader.field(intensity, "forecast", f"{location} intensity"),
            f"{location} intensity.forecast",
        )
        actual = reader.intensity(intensity.get("actual"), f"{location} intensity.actual")
        return moment, actual, forecast

    def _samples(self, periods: list[Any], reader: ResponseReader) -> list[Sample]:
        by_time: dict[int, Sample] = {}
        for index, item in enumerate(periods):
            moment, actual, forecast = self._period(item, index, reader)
            if actual is not None:
                sample = Sample(self.region, moment, actual, NAME)
            elif forecast is not None:
                sample = Sample(self.region, moment, forecast, FORECAST_SOURCE)
            else:
                continue
            known = by_time.get(moment)
            if known is not None and known != sample:
                raise reader.error(
                    f"period {format_utc(moment)} is listed twice with different values"
                )
            by_time[moment] = sample
        return [by_time[moment] for moment in sorted(by_time)]

    async def latest(self) -> Sample:
        if self.region_id is None:
            path = "/intensity"
        else:
            path = f"/regional/regionid/{self.region_id}"
        body, reader = await self._get(path)
        periods = self._periods(body, reader)
        if not periods:
            raise reader.error("data is empty: no current period")
        samples = self._samples(periods, reader)
        if not samples:
            raise reader.error("the current period has neither an actual nor a forecast intensity")
        now = self._clock.time()
        started = [sample for sample in samples if sample.time <= now]
        return started[-1] if started else samples[0]

    async def history(self, start: int, end: int) -> list[Sample]:
        start, end = check_history_range(start, end)
        samples: list[Sample] = []
        for chunk_start, chunk_end in time_chunks(start, end, MAX_RANGE_SECONDS):
            span = f"{_path_time(chunk_start)}/{_path_time(chunk_end)}"
            if self.region_id is None:
                path = f"/intensity/{span}"
            else:
                path = f"/regional/intensity/{span}/regionid/{self.region_id}"
            body, reader = await self._get(path)
            periods = self._periods(body, reader)
            if not periods:
                raise reader.error(
                    f"data is empty: no periods from {format_utc(chunk_start)} to {format_utc(chunk_end)}"
                )
            samples.extend(
                sample
                for sample in self._samples(periods, reader)
                if chunk_start <= sample.time < chunk_end
            )
        return samples

    async def forecast(self) -> list[ForecastPoint]:
        # The start is rounded down to the half hour, so every poll within one
        # period requests the same URL and hits the cache. It is also the issue
        # time, because the provider revises its forecast every half hour.
        issued_at = int(self._clock.time()) // PERIOD_SECONDS * PERIOD_SECONDS
        if self.region_id is None:
            path = f"/intensity/{_path_time(issued_at)}/fw48h"
        else:
            path = f"/regional/intensity/{_path_time(issued_at)}/fw48h/regionid/{self.region_id}"
        body, reader = await self._get(path)
        points = []
        for index, item in enumerate(self._periods(body, reader)):
            moment, _actual, forecast = self._period(item, index, reader)
            if forecast is not None and moment >= issued_at:
                points.append((moment, forecast))
        return forecast_points(
            points, region=self.region, issued_at=issued_at, forecaster=NAME, reader=reader
        )


def _path_time(seconds: int) -> str:
    """Format a time for a URL path as the API expects: 2018-01-20T12:00Z."""
    return format_utc(seconds, timespec="minutes")
