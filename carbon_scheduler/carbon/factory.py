"""Build the carbon source that a region's `[regions.NAME.carbon]` table describes.

`make_source` turns a RegionSpec into a CarbonSource. The loader of `regions.toml`
has validated the options already. This module checks their types again, because
a CarbonSourceSpec may also be built in code, and it raises ValueError or
TypeError naming the region and the key.

Credentials are not read here but by the source on each request, so a rotated
Secret file takes effect without a restart. The HTTP client may be shared: pass
one `httpx.AsyncClient` to every source, and close it yourself after calling
`aclose()` on each source. Without one, each provider source creates and closes
its own.

`started_at` anchors the replayed and scripted sources: pass the same value for
every region so their steps change at the same instant (the default is the
clock's time at the call).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

import httpx

from carbon_scheduler.carbon.electricitymaps import DEFAULT_BASE_URL as ELECTRICITYMAPS_URL
from carbon_scheduler.carbon.electricitymaps import ElectricityMapsSource
from carbon_scheduler.carbon.http import HttpSettings, SecretRef, Sleep
from carbon_scheduler.carbon.replay_source import SECONDS_PER_HOUR, ReplaySource
from carbon_scheduler.carbon.scripted import ScriptedSource, load_schedule
from carbon_scheduler.carbon.source import CarbonSource, Clock
from carbon_scheduler.carbon.static import StaticSource
from carbon_scheduler.carbon.traces import read_trace
from carbon_scheduler.carbon.ukcarbon import DEFAULT_BASE_URL as UKCARBON_URL
from carbon_scheduler.carbon.ukcarbon import UKCarbonIntensitySource
from carbon_scheduler.carbon.watttime import DEFAULT_BASE_URL as WATTTIME_URL
from carbon_scheduler.carbon.watttime import WattTimeSource
from carbon_scheduler.config.types import CarbonSourceKind, CarbonSourceSpec, RegionSpec

_HTTP_FLOAT_KEYS = (
    "timeout_seconds",
    "backoff_initial_seconds",
    "backoff_max_seconds",
    "retry_after_max_seconds",
    "cache_ttl_seconds",
)


def make_source(
    region: RegionSpec,
    *,
    clock: Clock,
    client: httpx.AsyncClient | None = None,
    started_at: float | None = None,
    sleep: Sleep = asyncio.sleep,
) -> CarbonSource:
    """Return the carbon source of `region`.

    Raises ValueError when the region has no carbon table or an option is invalid,
    TraceError for an unreadable trace and ScheduleError for an invalid schedule.
    `sleep` is the retry sleep of the API sources, replaceable in tests.
    """
    spec = region.carbon
    if spec is None:
        raise ValueError(
            f"region {region.name} has no [regions.{region.name}.carbon] table; add one to "
            "say where its carbon intensity comes from"
        )
    options = _Options(region.name, spec.options)
    kind = spec.kind
    if kind is CarbonSourceKind.STATIC:
        if spec.intensity_g_per_kwh is None:
            raise ValueError(f"region {region.name}: a static source needs intensity_g_per_kwh")
        return StaticSource(
            region=region.name, intensity_g_per_kwh=spec.intensity_g_per_kwh, clock=clock
        )
    if kind is CarbonSourceKind.REPLAY:
        return _replay(region.name, spec, options, clock, started_at)
    if kind is CarbonSourceKind.SCRIPTED:
        schedule = load_schedule(options.string("schedule", required=True))
        return ScriptedSource(
            region=region.name,
            schedule=schedule,
            clock=clock,
            schedule_region=options.string("schedule_region"),
            started_at=started_at,
        )
    if kind is CarbonSourceKind.ELECTRICITYMAPS:
        return ElectricityMapsSource(
            region=region.name,
            zone=options.string("zone", required=True),
            api_key=options.secret("api_key"),
            clock=clock,
            http=_http_settings(options, ELECTRICITYMAPS_URL),
            client=client,
            emission_factor_type=options.string("emission_factor_type") or "lifecycle",
            disable_estimations=options.boolean("disable_estimations", default=False),
            history_endpoint=options.string("history_endpoint") or "past-range",
            sleep=sleep,
        )
    if kind is CarbonSourceKind.WATTTIME:
        username: str | SecretRef
        plain_username = options.string("username")
        username = plain_username if plain_username else options.secret("username")
        return WattTimeSource(
            region=region.name,
            grid_region=options.string("region", required=True),
            username=username,
            password=options.secret("password"),
            clock=clock,
            signal_type=options.string("signal_type") or "co2_moer",
            horizon_hours=options.integer("horizon_hours", default=24),
            http=_http_settings(options, WATTTIME_URL),
            client=client,
            sleep=sleep,
        )
    if kind is CarbonSourceKind.UKCARBON:
        region_id = options.integer("region_id", default=None)
        return UKCarbonIntensitySource(
            region=region.name,
            clock=clock,
            region_id=region_id,
            http=_http_settings(options, UKCARBON_URL),
            client=client,
            sleep=sleep,
        )
    raise ValueError(f"region {region.name}: unknown carbon source kind {kind!r}")


def _replay(
    region: str, spec: CarbonSourceSpec, options: _Options, clock: Clock, started_at: float | None
) -> ReplaySource:
    if spec.trace is None:
        raise ValueError(f"region {region}: a replay source needs trace, the path of a CSV trace")
    trace_region = options.string("trace_region") or region
    trace = read_trace(spec.trace, regions=[trace_region])
    offset_hours = options.number("start_offset_hours")
    start_time = options.integer("start_time", default=None)
    if offset_hours is not None and start_time is not None:
        raise ValueError(f"region {region}: give only one of start_offset_hours and start_time")
    if start_time is not None:
        offset_seconds = float(start_time - trace.start)
    else:
        offset_seconds = (offset_hours or 0.0) * SECONDS_PER_HOUR
    try:
        return ReplaySource(
            region=region,
            trace=trace,
            clock=clock,
            seconds_per_hour=spec.seconds_per_hour or SECONDS_PER_HOUR,
            trace_region=trace_region,
            start_offset_seconds=offset_seconds,
            started_at=started_at,
        )
    except ValueError as error:
        raise ValueError(f"region {region}: {error}") from error


def _http_settings(options: _Options, default_url: str) -> HttpSettings:
    values: dict[str, object] = {"base_url": options.string("base_url") or default_url}
    for key in _HTTP_FLOAT_KEYS:
        number = options.number(key)
        if number is not None:
            values[key] = number
    attempts = options.integer("max_attempts", default=None)
    if attempts is not None:
        values["max_attempts"] = attempts
    try:
        return HttpSettings(**values)  # type: ignore[arg-type]
    except ValueError as error:
        raise ValueError(f"region {options.region}: {error}") from error


class _Options:
    """Typed reads of CarbonSourceSpec.options, with errors naming region and key."""

    def __init__(self, region: str, options: Mapping[str, object]) -> None:
        self.region = region
        self._options = options

    def _fail(self, key: str, requirement: str) -> TypeError:
        found = self._options.get(key)
        return TypeError(f"region {self.region}: carbon option {key} {requirement}, got {found!r}")

    def string(self, key: str, *, required: bool = False) -> str:
        found = self._options.get(key)
        if found is None:
            if required:
                raise ValueError(f"region {self.region}: carbon option {key} is required")
            return ""
        if not isinstance(found, str) or not found:
            raise self._fail(key, "must be a non-empty string")
        return found

    def number(self, key: str) -> float | None:
        found = self._options.get(key)
        if found is None:
            return None
        if isinstance(found, bool) or not isinstance(found, (int, float)):
            raise self._fail(key, "must be a number")
        return float(found)

    def integer(self, key: str, *, default: int | None) -> int | None:
        found = self._options.get(key)
        if found is None:
            return default
        if isinstance(found, bool) or not isinstance(found, int):
            raise self._fail(key, "must be an integer")
        return found

    def boolean(self, key: str, *, default: bool) -> bool:
        found = self._options.get(key)
        if found is None:
            return default
        if not isinstance(found, bool):
            raise self._fail(key, "must be true or false")
        return found

    def secret(self, name: str) -> SecretRef:
        env = self.string(f"{name}_env") or None
        file = self.string(f"{name}_file") or None
        if (env is None) == (file is None):
            raise ValueError(
                f"region {self.region}: give exactly one of the carbon options {name}_env and "
                f"{name}_file"
            )
        return SecretRef(setting=name, env=env, file=file)
