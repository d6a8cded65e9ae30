"""Helpers that turn the daemon's Kubernetes errors and forecasts into metric values.

`error_reason` maps a failed API call onto the bounded `reason` label of the
binding and API error counters (`telemetry.metrics.ERROR_REASONS`):

    Conflict (409)                                   conflict
    NotFound (404)                                   not_found
    Forbidden (401, 403)                             forbidden
    Unavailable with a 5xx status                    server_error
    Unavailable for 408, or a request that timed out timeout
    Unavailable because no connection could be made
    (refused, host or network unreachable, DNS)      unreachable
    anything else (400, 422, 410, 429, a bad body)   other
"""

from __future__ import annotations

import asyncio
import errno

import aiohttp

from carbon_scheduler.daemon.carbon_feed import Issuance
from carbon_scheduler.daemon.kubeapi import Conflict, Forbidden, KubeError, NotFound, Unavailable
from carbon_scheduler.telemetry.metrics import FORECAST_HORIZONS_HOURS, SchedulerMetrics

_UNREACHABLE_ERRNOS = frozenset({errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH})


def error_reason(error: BaseException) -> str:
    """Return the `reason` label for a failed Kubernetes API call."""
    if isinstance(error, Conflict):
        return "conflict"
    if isinstance(error, NotFound):
        return "not_found"
    if isinstance(error, Forbidden):
        return "forbidden"
    if isinstance(error, Unavailable):
        if error.status is not None and error.status >= 500:
            return "server_error"
        if error.status == 408:
            return "timeout"
        if error.status is None:
            # A transport failure: kubeapi chains the aiohttp or OS error as the cause.
            return _transport_reason(error.__cause__)
        return "other"
    if isinstance(error, KubeError):
        return "other"
    return _transport_reason(error)


def _transport_reason(cause: BaseException | None) -> str:
    if isinstance(cause, asyncio.TimeoutError):
        return "timeout"
    if isinstance(cause, aiohttp.ClientConnectorError):
        # The TCP (or TLS) connection was never established.
        return "unreachable"
    if isinstance(cause, OSError) and cause.errno in _UNREACHABLE_ERRNOS:
        return "unreachable"
    return "other"


def count_api_error(metrics: SchedulerMetrics, region: str, error: BaseException) -> None:
    """Count a failed list, watch, event, label or other non-binding API call."""
    metrics.api_errors.labels(region, error_reason(error)).inc()


def count_binding_error(metrics: SchedulerMetrics, region: str, error: BaseException) -> None:
    """Count a failed binding or move call in the region it targeted."""
    metrics.binding_errors.labels(region, error_reason(error)).inc()


def publish_forecast(
    metrics: SchedulerMetrics, region: str, issuance: Issuance, *, source_step_seconds: int, wall_step_seconds: int
) -> None:
    """Set the forecast gauges of `region` from the forecast the feed plans on.

    Horizons count in steps of the source, so a replayed trace that plays an hour
    in seconds still exports the value for one trace hour ahead as `1`. Past the
    forecast's last point the last value holds, as in window planning.
    """
    points = issuance.points
    if not points:
        return
    values = {}
    for hours in FORECAST_HORIZONS_HOURS:
        # points[k] is the step k + 1 steps after the issuing one. Past the last
        # point its value holds, but the target stays `hours` ahead.
        index = max(0, round(hours * 3600 / source_step_seconds) - 1)
        target = points[0][0] + index * wall_step_seconds
        values[hours] = (target, points[min(index, len(points) - 1)][1])
    metrics.set_forecast(region, values)
