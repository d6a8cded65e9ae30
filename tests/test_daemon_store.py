"""The daemon's history in the store: the background writer, reading secrets,
emissions of finished pods, and the real daemon writing to SQLite and InfluxDB
and reloading its history after a restart.

The end-to-end tests run `carbon-scheduler run` as a child process against the
fake API servers, with Electricity Maps sources served by the local carbon mock.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from carbon_scheduler.config.types import RegionSpec, SchedulerSettings, StoreSettings
from carbon_scheduler.daemon.accounting import EmissionAccountant, decided_at, integrate_history
from carbon_scheduler.daemon.carbon_feed import CarbonFeed
from carbon_scheduler.daemon.explain import DECISION_ANNOTATION
from carbon_scheduler.daemon.history import HistoryWriter, StoreOpenError, open_history_store, read_store_secret
from carbon_scheduler.forecasting import Persistence
from carbon_scheduler.model import Resources
from carbon_scheduler.policy.energy import facility_power_kw
from carbon_scheduler.store import EmissionRecord, ForecastPoint, InfluxStore, Sample, SQLiteStore
from carbon_scheduler.store.errors import StoreRequestError, StoreUnavailableError
from carbon_scheduler.telemetry.metrics import SchedulerMetrics
from tests.carbon_mock import MockServer, mock_server  # noqa: F401  (fixture)
from tests.daemon_harness import Daemon, daemon_environment, free_port, wait_until
from tests.kubefake.fixtures import FakeRegions

T0 = 1_700_000_000
HOUR = 3600
API_KEY_VARIABLE = "CARBON_TEST_EM_KEY"


# --- the background writer -------------------------------------------------------


class FlakyStore:
    """A real SQLite store whose writes first fail with the given errors."""

    def __init__(self, *errors: Exception) -> None:
        self.inner = SQLiteStore(":memory:")
        self.errors = list(errors)
        self.calls = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)

    def write_samples(self, samples):
        self._maybe_fail()
        self.inner.write_samples(samples)

    def write_forecasts(self, points):
        self._maybe_fail()
        self.inner.write_forecasts(points)

    def write_emissions(self, records):
        self._maybe_fail()
        self.inner.write_emissions(records)


def emission(task_id: str = "default/job/uid-1") -> EmissionRecord:
    return EmissionRecord(task_id, "eu-west", "critical", T0, T0, T0 + HOUR, 0.01, 1.0, "us-east", 4.0)


async def drain(writer: HistoryWriter, *, timeout: float = 5.0) -> None:
    task = asyncio.create_task(writer.run())
    try:
        await wait_until(lambda: writer.pending == 0 and writer.written > 0, timeout=timeout, what="writer drained")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.asyncio
async def test_writer_writes_every_record_type():
    store = SQLiteStore(":memory:")
    writer = HistoryWriter(store, batch_size=2)
    samples = [Sample("eu-west", T0 + hour * HOUR, 100.0 + hour, "replay") for hour in range(3)]
    points = [ForecastPoint("eu-west", T0, T0 + HOUR, 120.0, "persistence")]
    writer.add(samples)
    writer.add(points)
    writer.add([emission()])
    await drain(writer)
    assert store.samples("eu-west", T0, T0 + 3 * HOUR) == samples
    assert store.forecasts("eu-west", T0) == points
    assert store.emissions(T0, T0 + 2 * HOUR) == [emission()]
    assert writer.written == 5


@pytest.mark.asyncio
async def test_writer_retries_retryable_failure():
    store = FlakyStore(StoreUnavailableError("influxd returned 503", status=503))
    writer = HistoryWriter(store, retry_initial_seconds=0.01)
    sample = Sample("eu-west", T0, 100.0, "replay")
    writer.add([sample])
    await drain(writer)
    assert store.inner.samples("eu-west", T0, T0 + 1) == [sample]
    assert writer.failures == 1
    assert store.calls == 2


@pytest.mark.asyncio
async def test_writer_drops_batch_on_permanent_failure():
    store = FlakyStore(StoreRequestError("influxd rejected the write", status=400, body="partial write"))
    writer = HistoryWriter(store, batch_size=1, retry_initial_seconds=0.01)
    first, second = Sample("eu-west", T0, 100.0, "replay"), Sample("eu-west", T0 + HOUR, 110.0, "replay")
    writer.add([first, second])
    await drain(writer)
    assert store.inner.samples("eu-west", T0, T0 + 2 * HOUR) == [second]
    assert writer.failures == 1


@pytest.mark.asyncio
async def test_writer_full_buffer_drops_oldest():
    store = SQLiteStore(":memory:")
    writer = HistoryWriter(store, max_buffered=2)
    samples = [Sample("eu-west", T0 + hour * HOUR, float(hour), "replay") for hour in range(3)]
    writer.add(samples)
    assert writer.pending == 2
    await drain(writer)
    assert store.samples("eu-west", T0, T0 + 3 * HOUR) == samples[1:]


@pytest.mark.asyncio
async def test_writer_flush_writes_rest():
    store = SQLiteStore(":memory:")
    writer = HistoryWriter(store, batch_size=1)
    writer.add([Sample("eu-west", T0 + hour * HOUR, 1.0, "replay") for hour in range(3)])
    assert await writer.flush(5.0) is True
    assert len(store.samples("eu-west", T0, T0 + 3 * HOUR)) == 3


@pytest.mark.asyncio
async def test_writer_flush_gives_up_on_failure():
    store = FlakyStore(StoreUnavailableError("database is locked"))
    writer = HistoryWriter(store)
    writer.add([Sample("eu-west", T0, 1.0, "replay")])
    assert await writer.flush(5.0) is False
    assert writer.pending == 1


class SlowStore(FlakyStore):
    """A real SQLite store whose sample writes take a while, as over a slow network."""

    def write_samples(self, samples):
        time.sleep(0.3)
        super().write_samples(samples)


@pytest.mark.asyncio
async def test_writer_cancelled_mid_write_keeps_batch():
    store = SlowStore()
    writer = HistoryWriter(store)
    sample = Sample("eu-west", T0, 1.0, "replay")
    writer.add([sample])
    task = asyncio.create_task(writer.run())
    await asyncio.sleep(0.1)  # the write is now running in its thread
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert writer.pending == 1
    assert await writer.flush(5.0) is True
    assert store.inner.samples("eu-west", T0, T0 + 1) == [sample]


# --- opening the store ---------------------------------------------------------------


def test_open_sqlite_store_file(tmp_path):
    path = tmp_path / "history.db"
    store = open_history_store(StoreSettings(url=str(path)))
    store.write_samples([Sample("eu-west", T0, 1.0, "static")])
    store.close()
    assert path.exists()


def test_open_store_in_missing_folder_names_url(tmp_path):
    url = str(tmp_path / "missing" / "history.db")
    with pytest.raises(StoreOpenError, match=re.escape(f"[store] url: cannot create the SQLite store {url}, because")):
        open_history_store(StoreSettings(url=url))


def test_store_secret_from_environment(monkeypatch):
    monkeypatch.setenv("INFLUX_TEST_PASSWORD", " s3cret \n")
    settings = StoreSettings(url="http://127.0.0.1:8086", username="carbon", password_env="INFLUX_TEST_PASSWORD")
    assert read_store_secret(settings, "password") == "s3cret"
    assert read_store_secret(settings, "token") is None


def test_store_secret_missing_variable_names_key(monkeypatch):
    monkeypatch.delenv("INFLUX_TEST_TOKEN", raising=False)
    settings = StoreSettings(url="http://127.0.0.1:8086", token_env="INFLUX_TEST_TOKEN")
    with pytest.raises(StoreOpenError, match=re.escape("[store] token_env: the environment variable INFLUX_TEST_TOKEN is not set or empty")):
        open_history_store(settings)


def test_store_secret_from_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("tok-123\n")
    settings = StoreSettings(url="http://127.0.0.1:8086", token_file=str(secret))
    assert read_store_secret(settings, "token") == "tok-123"


def test_store_secret_empty_file_rejected(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("\n")
    settings = StoreSettings(url="http://127.0.0.1:8086", token_file=str(secret))
    with pytest.raises(StoreOpenError, match=r"\[store\] token_file: .* is empty; put the InfluxDB token in it"):
        read_store_secret(settings, "token")


# --- integrating the intensity history ------------------------------------------------


def feed_with(samples: list[tuple[int, float]], *, step: float = HOUR) -> CarbonFeed:
    region = RegionSpec(name="eu-west")
    feed = CarbonFeed(region, Persistence(), wall_step_seconds=step, clock=lambda: samples[-1][0] + 1)
    feed.preload(samples)
    return feed


@pytest.mark.parametrize(
    ("start", "end", "expected", "covered"),
    [
        pytest.param(T0, T0 + HOUR, 100.0, True, id="one-step"),
        pytest.param(T0 + HOUR // 2, T0 + 3 * HOUR // 2, 50.0 + 100.0, True, id="across-a-step"),
        pytest.param(T0 + 2 * HOUR, T0 + 3 * HOUR, 200.0, True, id="gap-holds-previous-value"),
        pytest.param(T0 + 3 * HOUR, T0 + 5 * HOUR, 400.0 + 400.0, False, id="after-history-holds-last"),
        pytest.param(T0 - HOUR, T0 + HOUR, 100.0 + 100.0, False, id="before-history-takes-first"),
    ],
)
def test_integrate_history(start, end, expected, covered):
    # Steps at T0 (100), T0+1h (200), T0+2h missing, T0+3h (400): the gap holds 200.
    feed = feed_with([(T0, 100.0), (T0 + HOUR, 200.0), (T0 + 3 * HOUR, 400.0)])
    result = integrate_history(feed, start, end)
    assert result is not None
    assert result.intensity_hours == pytest.approx(expected)
    assert result.covered is covered


def test_integrate_history_without_samples():
    feed = CarbonFeed(RegionSpec(name="eu-west"), Persistence(), clock=lambda: T0)
    assert integrate_history(feed, T0, T0 + HOUR) is None


# --- the real daemon -------------------------------------------------------------------


def iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class ElectricityMapsScript:
    """Serves Electricity Maps' latest, history and forecast endpoints per zone
    (the zone is the region name). Each latest call returns the zone's next
    value, one hour after the previous one, or for a zone played `live` its
    value at the current second. History is always empty. For a zone in
    `failing_zones`, latest returns 503."""

    def __init__(self, server: MockServer, start: int) -> None:
        self.server = server
        self.next_time: dict[str, int] = {}
        self.values: dict[str, list[float]] = {}
        self.current: dict[str, tuple[int, float]] = {}
        self.live: dict[str, float] = {}
        self.start = start
        self.failing_zones: set[str] = set()
        self.forecast: dict[str, list[tuple[int, float]]] = {}
        # None reports each forecast as issued at the time of the request.
        self.forecast_issued_at: int | None = start
        server.route("/v3/carbon-intensity/latest", self.latest)
        server.route("/v3/carbon-intensity/history", self.history)
        server.route("/v3/carbon-intensity/forecast", self.forecast_body)

    def play(self, zone: str, values: list[float], *, start: int | None = None) -> None:
        """Serve `values` in turn (the last one repeats, at the same time)."""
        self.values[zone] = list(values)
        self.current.pop(zone, None)
        self.live.pop(zone, None)
        if start is not None:
            self.next_time[zone] = start

    def play_live(self, zone: str, value: float) -> None:
        """Serve `value` as measured at the current second on every call."""
        self.live[zone] = value

    async def latest(self, request: web.Request) -> web.StreamResponse:
        zone = request.query["zone"]
        if zone in self.failing_zones:
            return web.Response(status=503, text="upstream unavailable")
        if zone in self.live:
            return web.json_response(self._point(zone, int(time.time()), self.live[zone]))
        queue = self.values[zone]
        # A new value starts the next hour; the last one repeats with its own time.
        if len(queue) > 1 or zone not in self.current:
            value = queue.pop(0) if len(queue) > 1 else queue[0]
            moment = self.next_time.get(zone, self.start)
            self.next_time[zone] = moment + HOUR
            self.current[zone] = (moment, value)
        moment, value = self.current[zone]
        return web.json_response(self._point(zone, moment, value))

    @staticmethod
    def _point(zone: str, moment: int, value: float) -> dict:
        return {
            "zone": zone,
            "carbonIntensity": value,
            "datetime": iso(moment),
            "updatedAt": iso(moment),
            "emissionFactorType": "lifecycle",
            "isEstimated": False,
            "estimationMethod": None,
        }

    async def history(self, request: web.Request) -> web.StreamResponse:
        return web.json_response({"zone": request.query["zone"], "history": []})

    async def forecast_body(self, request: web.Request) -> web.StreamResponse:
        zone = request.query["zone"]
        points = [{"carbonIntensity": value, "datetime": iso(moment)} for moment, value in self.forecast.get(zone, [])]
        issued_at = self.forecast_issued_at if self.forecast_issued_at is not None else int(time.time())
        return web.json_response({"zone": zone, "forecast": points, "updatedAt": iso(issued_at)})


def region_config(
    name: str,
    regions: FakeRegions,
    *,
    carbon: list[str],
    levels: list[str] | None = None,
) -> list[str]:
    levels = levels or ['mode = "absolute"', "low_below_g_per_kwh = 150", "high_above_g_per_kwh = 420"]
    return [
        f"[regions.{name}]",
        f'kubeconfig = "{regions.kubeconfig}"',
        f'context = "{name}"',
        "max_pods = 4",
        f"[regions.{name}.levels]",
        *levels,
        f"[regions.{name}.carbon]",
        *carbon,
        f"[[regions.{name}.nodes]]",
        f'name = "{name}-node-1"',
        'cpu = "8"',
        'memory = "32Gi"',
        "",
    ]


def electricitymaps_carbon(server: MockServer, zone: str, *, stale_after_seconds: float, poll: float = 0.2) -> list[str]:
    return [
        'source = "electricitymaps"',
        f'zone = "{zone}"',
        f'api_key_env = "{API_KEY_VARIABLE}"',
        f'base_url = "{server.url}"',
        'history_endpoint = "history"',
        "max_attempts = 1",
        "timeout_seconds = 2",
        "cache_ttl_seconds = 0",
        f"poll_interval_seconds = {poll}",
        f"stale_after_seconds = {stale_after_seconds}",
    ]


def write_daemon_config(path: Path, regions: list[list[str]], *, store: list[str], scheduler: list[str] = ()) -> Path:
    lines = ["[scheduler]", "standard_max_wait_seconds = 2", *scheduler, "", "[store]", *store, ""]
    for region in regions:
        lines += region
    path.write_text("\n".join(lines))
    return path


async def launch(tmp_path: Path, config: Path, *, name: str = "daemon") -> Daemon:
    """Start `carbon-scheduler run` on `config` and wait until it is ready."""
    port = free_port()
    log = tmp_path / f"{name}.log"
    env = daemon_environment()
    env[API_KEY_VARIABLE] = "em-test-key"
    log_file = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "--log-level", "debug", "run", "--config", str(config),
        "--metrics-port", str(port),
        stdout=log_file, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    daemon = Daemon(process, port, log, log_file)
    try:
        await daemon.wait_ready()
    except BaseException:
        await daemon.stop()
        raise
    return daemon


def log_events(daemon: Daemon, event: str) -> list[dict]:
    """The daemon's JSON log lines of one event."""
    entries = []
    for line in daemon.log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == event:
            entries.append(entry)
    return entries


async def metric(daemon: Daemon, name: str, **labels: str) -> float | None:
    """The value of one series on /metrics, or None when it is not exported."""
    _, text = await daemon.get("/metrics")
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line[len(name) : line.rindex("}") + 1]))
        if all(found.get(key) == value for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


async def wait_for_metric(daemon: Daemon, name: str, expected: float, *, timeout: float = 15.0, **labels: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    value = None
    while asyncio.get_running_loop().time() < deadline:
        value = await metric(daemon, name, **labels)
        if value == expected:
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{name}{labels} is {value}, expected {expected}; log:\n{daemon.log.read_text()[-3000:]}")


def stored_sample_count(path: Path, region: str) -> int:
    if not path.exists():
        return 0
    with sqlite3.connect(path) as connection:
        try:
            return connection.execute("SELECT count(*) FROM carbon_intensity WHERE region = ?", (region,)).fetchone()[0]
        except sqlite3.OperationalError:
            return 0


RELATIVE = ['mode = "relative"', "low_below_percentile = 33", "high_above_percentile = 67", "history_hours = 168"]
# Far above the age of the scripted hours, so staleness plays no part here.
NEVER_STALE = 1e9


@pytest.mark.asyncio
async def test_restart_plans_on_stored_history(tmp_path: Path, clusters: FakeRegions, mock_server: MockServer):
    now = int(datetime.now(UTC).timestamp()) // HOUR * HOUR
    script = ElectricityMapsScript(mock_server, start=now - 40 * HOUR)
    first_values = [300.0 + 10 * (hour % 20) for hour in range(30)]
    for name in clusters:
        script.play(name, first_values)
    history = tmp_path / "history.db"
    regions = [
        region_config(name, clusters, carbon=electricitymaps_carbon(mock_server, name, stale_after_seconds=NEVER_STALE), levels=RELATIVE)
        for name in clusters
    ]
    config = write_daemon_config(tmp_path / "regions.toml", regions, store=[f'url = "{history}"'])

    first = await launch(tmp_path, config, name="first")
    try:
        await wait_until(lambda: stored_sample_count(history, "eu-west") >= 25, timeout=30, what="samples stored")
    finally:
        assert await first.stop() == 0, first.log.read_text()[-3000:]

    store = SQLiteStore(history)
    try:
        stored = store.samples("eu-west", now - 41 * HOUR, now)
        assert [sample.intensity_g_per_kwh for sample in stored[:25]] == first_values[:25]
        assert {sample.source for sample in stored} == {"electricitymaps"}
        with sqlite3.connect(history) as connection:
            issued = [row[0] for row in connection.execute(
                "SELECT DISTINCT issued_at FROM carbon_forecast WHERE region = 'eu-west'")]
        assert issued, "no forecast stored"
        points = store.forecasts("eu-west", issued[0])
        assert points and {point.forecaster for point in points} == {"profile-ar-blend"}
    finally:
        store.close()

    # The second run's source has no history, and its first value is the lowest
    # so far: only the stored history makes it "low" (a lone sample is "medium").
    last_time = stored[-1].time
    for name in clusters:
        script.play(name, [150.0], start=last_time + HOUR)
    second = await launch(tmp_path, config, name="second")
    try:
        await wait_for_metric(second, "carbon_scheduler_carbon_level", 0.0, region="eu-west")
        loaded = [entry for entry in log_events(second, "store_history_loaded") if entry["region"] == "eu-west"]
        assert len(loaded) == 1
        assert loaded[0]["samples"] >= 25
    finally:
        assert await second.stop() == 0, second.log.read_text()[-3000:]

    # Control: the same source with a store that keeps nothing leaves the level medium.
    memory_config = write_daemon_config(tmp_path / "memory.toml", regions, store=['url = ":memory:"'])
    for name in clusters:
        script.play(name, [150.0], start=last_time + 2 * HOUR)
    control = await launch(tmp_path, memory_config, name="control")
    try:
        await wait_for_metric(control, "carbon_scheduler_carbon_level", 1.0, region="eu-west")
    finally:
        assert await control.stop() == 0, control.log.read_text()[-3000:]


def static_carbon(intensity: float) -> list[str]:
    return ['source = "static"', f"intensity_g_per_kwh = {intensity}"]


@pytest.mark.asyncio
async def test_daemon_writes_samples_and_emissions_to_influxdb(tmp_path: Path, clusters: FakeRegions, influxd):
    database = f"daemon_{uuid.uuid4().hex[:12]}"
    intensity = {"eu-west": 100.0, "us-east": 400.0, "asia-east": 450.0}
    regions = [region_config(name, clusters, carbon=static_carbon(intensity[name])) for name in clusters]
    config = write_daemon_config(
        tmp_path / "regions.toml", regions, store=[f'url = "{influxd.url}"', f'database = "{database}"'],
    )
    reader = InfluxStore(influxd.url, database=database)
    daemon = await launch(tmp_path, config)
    try:
        await wait_until(lambda: reader.latest_sample("eu-west") is not None, timeout=20, what="sample in InfluxDB")
        latest = reader.latest_sample("eu-west")
        assert latest.intensity_g_per_kwh == 100.0
        assert latest.source == "static"

        # A critical pod submitted in us-east moves to eu-west, runs and succeeds.
        original = clusters["us-east"].create_pod(
            "account-me", labels={"carbon-scheduler.io/class": "critical"}, requests={"cpu": "2", "memory": "4Gi"}
        )
        await wait_until(lambda: (clusters["eu-west"].find("pods", "account-me") or {}).get("spec", {}).get("nodeName"),
                         what="copy bound in eu-west")
        clusters["eu-west"].set_pod_phase("account-me", "Running")
        await asyncio.sleep(1.2)
        clusters["eu-west"].set_pod_phase("account-me", "Succeeded")
        await wait_until(lambda: bool(reader.emissions(0, 2**62)), timeout=20, what="emission record in InfluxDB")
        [record] = reader.emissions(0, 2**62)
        pod = clusters["eu-west"].get("pods", "account-me")

        assert record.task_id == f"default/account-me/{original['metadata']['uid']}"
        assert record.region == "eu-west"
        assert record.counterfactual_region == "us-east"
        assert record.task_class == "critical"
        seconds = record.end - record.start
        assert seconds >= 1
        request = Resources(milli_cpu=2000, memory=4 * 2**30)
        eu_power = facility_power_kw(request, RegionSpec(name="eu-west"))
        assert record.energy_kwh == pytest.approx(eu_power * seconds / 3600)
        assert record.emissions_g == pytest.approx(eu_power * 100.0 * seconds / 3600)
        assert record.counterfactual_emissions_g == pytest.approx(eu_power * 400.0 * seconds / 3600)
        assert pod["status"]["phase"] == "Succeeded"

        scheduled = await metric(daemon, "carbon_scheduler_emissions_grams_total",
                                 region="eu-west", task_class="critical", scenario="scheduled")
        blind = await metric(daemon, "carbon_scheduler_emissions_grams_total",
                             region="us-east", task_class="critical", scenario="carbon_blind")
        assert scheduled == pytest.approx(record.emissions_g)
        assert blind == pytest.approx(record.counterfactual_emissions_g)
    finally:
        assert await daemon.stop() == 0, daemon.log.read_text()[-3000:]
        reader.close()


@pytest.mark.asyncio
async def test_unwritable_store_stops_start(tmp_path: Path, clusters: FakeRegions):
    regions = [region_config(name, clusters, carbon=static_carbon(100.0)) for name in clusters]
    missing = tmp_path / "no-such-folder" / "history.db"
    config = write_daemon_config(tmp_path / "regions.toml", regions, store=[f'url = "{missing}"'])
    env = daemon_environment()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "run", "--config", str(config),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2
    assert "store_open_failed" in output.decode()
    assert str(missing) in output.decode()


def test_decision_time_from_annotation():
    pod = {"metadata": {"annotations": {DECISION_ANNOTATION: json.dumps({"decided_at": "2023-11-14T22:13:20Z"})}}}
    assert decided_at(pod, fallback=0) == T0


def test_decision_time_falls_back_without_annotation():
    assert decided_at({"metadata": {}}, fallback=7) == 7
    assert decided_at({"metadata": {"annotations": {DECISION_ANNOTATION: "not json"}}}, fallback=8) == 8


# --- accounting finished pods ----------------------------------------------------------


class Runtime:
    """The parts of a RegionRuntime that the accountant reads."""

    def __init__(self, name: str, samples: list[tuple[int, float]]) -> None:
        self.spec = RegionSpec(name=name)
        self.name = name
        self.feed = feed_with(samples)
        self.cache = type("Cache", (), {"pods": {}})()


def stamp(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def finished_pod(
    name: str,
    *,
    uid: str,
    created: int,
    started: int | None,
    finished: int | None,
    phase: str = "Succeeded",
    annotations: dict | None = None,
) -> dict:
    status: dict = {"phase": phase}
    if started is not None:
        status["startTime"] = stamp(started)
    if finished is not None:
        status["containerStatuses"] = [{"name": "work", "state": {"terminated": {"finishedAt": stamp(finished)}}}]
    return {
        "metadata": {
            "name": name,
            "namespace": "default",
            "uid": uid,
            "creationTimestamp": stamp(created),
            "labels": {"carbon-scheduler.io/class": "deferrable"},
            "annotations": annotations or {},
        },
        "spec": {
            "schedulerName": "carbon-scheduler",
            "nodeName": None if started is None else "node-1",
            "containers": [{"name": "work", "resources": {"requests": {"cpu": "4", "memory": "8Gi"}}}],
        },
        "status": status,
    }


def pending_original(name: str, *, uid: str, created: int) -> dict:
    pod = finished_pod(name, uid=uid, created=created, started=None, finished=None, phase="Pending")
    del pod["spec"]["nodeName"]
    return pod


class Accounting:
    """An accountant over two regions with known, different intensity histories."""

    def __init__(self, *, leading: bool = True) -> None:
        hours = range(-2, 12)
        self.regions = {
            "eu-west": Runtime("eu-west", [(T0 + hour * HOUR, 100.0) for hour in hours]),
            "us-east": Runtime("us-east", [(T0 + hour * HOUR, 400.0 if hour < 2 else 800.0) for hour in hours]),
        }
        self.metrics = SchedulerMetrics()
        self.store = SQLiteStore(":memory:")
        self.writer = HistoryWriter(self.store)
        self.is_leading = leading
        self.now = T0 + 20 * HOUR
        self.accountant = EmissionAccountant(
            self.regions,
            settings=SchedulerSettings(),
            metrics=self.metrics,
            writer=self.writer,
            leading=lambda: self.is_leading,
            clock=lambda: self.now,
        )

    def grams(self, region: str, scenario: str) -> float:
        return self.metrics.emissions_grams.labels(region, "deferrable", scenario)._value.get()


POWER_KW = facility_power_kw(Resources(milli_cpu=4000, memory=8 * 2**30), RegionSpec(name="eu-west"))


def test_accounting_pod_in_home_region():
    accounting = Accounting()
    pod = finished_pod("job", uid="u1", created=T0, started=T0 + HOUR, finished=T0 + 2 * HOUR)
    accounting.accountant.on_cache_event("eu-west", "Pod", "MODIFIED", pod)
    accounting.accountant.on_cache_event("eu-west", "Pod", "MODIFIED", pod)  # seen twice, counted once
    assert accounting.writer.pending == 1
    assert accounting.grams("eu-west", "scheduled") == pytest.approx(POWER_KW * 100.0)
    # Carbon-blind: started at creation in the same region, for the same hour.
    assert accounting.grams("eu-west", "carbon_blind") == pytest.approx(POWER_KW * 100.0)


def test_accounting_moved_copy_uses_original_creation():
    accounting = Accounting()
    accountant = accounting.accountant
    accountant.on_cache_event("us-east", "Pod", "ADDED", pending_original("job", uid="orig", created=T0))
    copy = finished_pod(
        "job", uid="copy", created=T0 + 5 * HOUR, started=T0 + 5 * HOUR, finished=T0 + 7 * HOUR,
        annotations={"carbon-scheduler.io/moved-from-region": "us-east", "carbon-scheduler.io/moved-from-uid": "orig"},
    )
    record = accountant.account("eu-west", copy)
    assert record is not None
    assert record.task_id == "default/job/orig"
    assert record.region == "eu-west"
    assert record.counterfactual_region == "us-east"
    assert record.start == T0 + 5 * HOUR
    assert record.end == T0 + 7 * HOUR
    assert record.energy_kwh == pytest.approx(POWER_KW * 2)
    assert record.emissions_g == pytest.approx(POWER_KW * 200.0)
    # From creation at T0 for two hours in us-east: 400 g/kWh for both hours.
    assert record.counterfactual_emissions_g == pytest.approx(POWER_KW * 800.0)
    assert accounting.grams("us-east", "carbon_blind") == pytest.approx(POWER_KW * 800.0)


def test_accounting_deleted_while_running_ends_when_seen():
    accounting = Accounting()
    accounting.now = T0 + HOUR + 1800
    pod = finished_pod("job", uid="u2", created=T0, started=T0 + HOUR, finished=None, phase="Running")
    accounting.accountant.on_cache_event("eu-west", "Pod", "DELETED", pod)
    assert accounting.grams("eu-west", "scheduled") == pytest.approx(POWER_KW * 50.0)
    assert "default/job/u2" not in accounting.accountant.accounted


def test_accounting_skips_pod_never_started():
    accounting = Accounting()
    pod = pending_original("job", uid="u3", created=T0)
    accounting.accountant.on_cache_event("eu-west", "Pod", "DELETED", pod)
    assert accounting.writer.pending == 0
    assert accounting.grams("eu-west", "scheduled") == 0.0


def test_accounting_waits_for_leadership():
    accounting = Accounting(leading=False)
    pod = finished_pod("job", uid="u4", created=T0, started=T0, finished=T0 + HOUR)
    accounting.regions["eu-west"].cache.pods["u4"] = pod
    accounting.accountant.on_cache_event("eu-west", "Pod", "MODIFIED", pod)
    assert accounting.writer.pending == 0
    accounting.is_leading = True
    assert accounting.accountant.scan() == 1
    assert accounting.accountant.scan() == 0
    assert accounting.writer.pending == 1


def test_accounting_skips_task_ids_in_store():
    accounting = Accounting()
    accounting.accountant.skip(["default/job/u5"])
    pod = finished_pod("job", uid="u5", created=T0, started=T0, finished=T0 + HOUR)
    assert accounting.accountant.account("eu-west", pod) is None
    assert accounting.writer.pending == 0
