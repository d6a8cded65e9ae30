"""The daemon's metric helpers: error reasons, forecast gauges and the cache's
restart and error callbacks, the last against the fake API server."""

from __future__ import annotations

import asyncio
import errno
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from structlog.testing import capture_logs
from prometheus_client import generate_latest

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon.cache import ClusterCache
from carbon_scheduler.daemon.carbon_feed import Issuance
from carbon_scheduler.daemon.connections import connect
from carbon_scheduler.daemon.kubeapi import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    KubeError,
    NotFound,
    Unavailable,
)
from carbon_scheduler.daemon.metrics_export import error_reason, publish_forecast
from carbon_scheduler.telemetry.metrics import ERROR_REASONS, SchedulerMetrics
from tests.kubefake import FakeApiServer, write_kubeconfig
from tests.kubefake.fixtures import loopback_without_proxy  # noqa: F401  (fixture)
from tests.prometheus import promtool_check_metrics

REGION = "eu-west"
FIELDS = {"region": REGION, "verb": "post", "path": "/api/v1/namespaces/default/pods/p/binding"}


def _with_cause(error: KubeError, cause: BaseException) -> KubeError:
    error.__cause__ = cause
    return error


@pytest.mark.parametrize(
    ("name", "error", "reason"),
    [
        ("conflict", Conflict("409", status=409, **FIELDS), "conflict"),
        ("not found", NotFound("404", status=404, **FIELDS), "not_found"),
        ("forbidden", Forbidden("403", status=403, **FIELDS), "forbidden"),
        ("unauthorized", Forbidden("401", status=401, **FIELDS), "forbidden"),
        ("internal error", Unavailable("500", status=500, **FIELDS), "server_error"),
        ("service unavailable", Unavailable("503", status=503, **FIELDS), "server_error"),
        ("request timeout status", Unavailable("408", status=408, **FIELDS), "timeout"),
        ("too many requests", Unavailable("429", status=429, **FIELDS), "other"),
        ("timed out", _with_cause(Unavailable("timed out", **FIELDS), TimeoutError()), "timeout"),
        (
            "server timeout",
            _with_cause(Unavailable("timed out", **FIELDS), aiohttp.ServerTimeoutError("read")),
            "timeout",
        ),
        (
            "refused",
            _with_cause(Unavailable("connection failed", **FIELDS), ConnectionRefusedError(errno.ECONNREFUSED, "refused")),
            "unreachable",
        ),
        (
            "no route",
            _with_cause(Unavailable("connection failed", **FIELDS), OSError(errno.EHOSTUNREACH, "no route")),
            "unreachable",
        ),
        (
            "dropped mid-response",
            _with_cause(Unavailable("connection failed", **FIELDS), aiohttp.ServerDisconnectedError()),
            "other",
        ),
        ("invalid", Invalid("422", status=422, **FIELDS), "other"),
        ("gone", Gone("410", status=410, **FIELDS), "other"),
        ("unexpected status", KubeError("405", status=405, **FIELDS), "other"),
        ("bare timeout", TimeoutError(), "timeout"),
    ],
)
def test_error_reason_mapping(name: str, error: BaseException, reason: str):
    assert error_reason(error) == reason, name
    assert reason in ERROR_REASONS


def test_publish_forecast_horizons():
    metrics = SchedulerMetrics()
    points = tuple((3600 * (k + 1), float(k + 1)) for k in range(30))
    publish_forecast(metrics, REGION, Issuance("profile", 0, points), source_step_seconds=3600, wall_step_seconds=3600)
    assert metrics.forecast.labels(REGION, "1")._value.get() == 1.0
    assert metrics.forecast.labels(REGION, "6")._value.get() == 6.0
    assert metrics.forecast.labels(REGION, "24")._value.get() == 24.0


def test_publish_forecast_holds_last_value():
    metrics = SchedulerMetrics()
    points = tuple((1800 * (k + 1), 100.0 + k) for k in range(4))
    # Half-hourly steps: one hour is two steps ahead; 6 and 24 hours lie past the end.
    publish_forecast(metrics, REGION, Issuance("profile", 0, points), source_step_seconds=1800, wall_step_seconds=1800)
    assert metrics.forecast.labels(REGION, "1")._value.get() == 101.0
    assert metrics.forecast.labels(REGION, "6")._value.get() == 103.0
    assert metrics.forecast.labels(REGION, "24")._value.get() == 103.0


FOR_NOW = "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour"


def test_forecast_for_now_in_replayed_time():
    """A replay source at 10 wall seconds per trace hour stamps samples with wall
    times 10 s apart: the 1 h forecast is due 10 s later, the 6 h one 60 s later."""
    metrics = SchedulerMetrics()
    issued = 1_000_000
    points = tuple((issued + 10 * (k + 1), 200.0 + k) for k in range(30))
    publish_forecast(metrics, REGION, Issuance("profile", issued, points), source_step_seconds=3600, wall_step_seconds=10)

    metrics.set_intensity(REGION, issued + 10, 190.0)
    assert metrics.forecast_for_now.labels(REGION, "1")._value.get() == 200.0
    six_hours = {"region": REGION, "horizon_hours": "6"}
    assert metrics.registry.get_sample_value(FOR_NOW, six_hours) is None
    metrics.set_intensity(REGION, issued + 60, 210.0)
    assert metrics.forecast_for_now.labels(REGION, "6")._value.get() == 205.0


def test_primed_daemon_metrics_pass_promtool():
    metrics = SchedulerMetrics()
    metrics.prime(["eu-west", "us-east", "asia-east"])
    result = promtool_check_metrics(generate_latest(metrics.registry).decode())
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout + result.stderr == ""


# The cache's callbacks, against the fake API server -------------------------------


@pytest_asyncio.fixture
async def server(loopback_without_proxy: None) -> AsyncIterator[FakeApiServer]:  # noqa: F811
    async with FakeApiServer(REGION, bookmark_interval_seconds=60.0, seed=5) as fake:
        fake.add_node("n1")
        yield fake


@pytest_asyncio.fixture
async def client(server: FakeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
    kube = await connect(RegionSpec(name=REGION, kubeconfig=str(kubeconfig), context=REGION), request_timeout_seconds=2.0)
    yield kube
    await kube.close()


async def _eventually(condition, *, what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


@asynccontextmanager
async def running(cache: ClusterCache) -> AsyncIterator[None]:
    task = asyncio.create_task(cache.run())
    try:
        yield
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


@pytest.mark.asyncio
async def test_cache_reports_errors_and_restarts(server: FakeApiServer, client: KubeClient):
    restarts: list[tuple[str, str]] = []
    errors: list[tuple[str, str]] = []
    cache = ClusterCache(
        REGION,
        client,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.05,
        rng=random.Random(1),
        on_watch_restart=lambda region, resource: restarts.append((region, resource)),
        on_api_error=lambda region, error: errors.append((region, error_reason(error))),
    )
    server.faults.fail_next(2, status=500, verb="list", resource="pods")
    with capture_logs():
        async with running(cache):
            await asyncio.wait_for(cache.synced.wait(), 5)
            assert errors == [(REGION, "server_error"), (REGION, "server_error")]
            assert restarts == []

            await server.wait_for_watches(2)
            server.faults.fail_next(1, status=503, verb="watch", resource="pods")
            server.drop_watches(graceful=True)
            await _eventually(lambda: cache.watch_restarts >= 2 and len(errors) >= 3, what="restarts and the watch error")

    assert errors[2] == (REGION, "server_error")
    assert len(restarts) == cache.watch_restarts
    assert {resource for _, resource in restarts} <= {"nodes", "pods"}
    assert (REGION, "pods") in restarts


@pytest.mark.asyncio
async def test_cache_survives_failing_callback(server: FakeApiServer, client: KubeClient):
    def broken(region: str, resource: str) -> None:
        raise RuntimeError("broken metrics callback")

    cache = ClusterCache(
        REGION, client, backoff_initial_seconds=0.01, backoff_max_seconds=0.05, on_watch_restart=broken
    )
    with capture_logs() as logs:
        async with running(cache):
            await asyncio.wait_for(cache.synced.wait(), 5)
            await server.wait_for_watches(2)
            server.drop_watches(graceful=True)
            await _eventually(lambda: cache.watch_restarts >= 2, what="restarts")
            server.create_pod("after-restart")
            await _eventually(
                lambda: any(pod["metadata"]["name"] == "after-restart" for pod in cache.pods.values()),
                what="the cache to keep watching",
            )

    failures = [entry for entry in logs if entry["event"] == "kube.cache.metrics_callback_failed"]
    assert len(failures) == cache.watch_restarts
    assert failures[0]["callback"] == "on_watch_restart"


@pytest.mark.asyncio
async def test_unreachable_server_reason(server: FakeApiServer, client: KubeClient):
    await server.stop()
    with pytest.raises(Unavailable) as raised:
        await client.list("/api/v1/nodes")
    assert error_reason(raised.value) == "unreachable"
