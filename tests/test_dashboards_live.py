"""Every dashboard query returns data from real servers fed by a replay.

One `replay --serve-metrics --influx` run simulates a day of the demo trace at
high speed. A real Prometheus scrapes it every second and a real influxd stores
its history. Then every query of every dashboard, with its Grafana variables
replaced, goes through Prometheus' HTTP API or InfluxDB's /query, and each must
return at least one series with samples. A panel that names a metric, field or
tag that nothing writes gets an empty result and fails here.

A second Prometheus scrapes the same replay under two instance labels, as the
demo's Prometheus scrapes a leader and a standby that export the same gauges.
The gauge panels must show each region once there too.

Range queries span the wall-clock time of the run, shifted by the query's
`offset`, because Prometheus only holds what it scraped during the test.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from carbon_scheduler.config import load_config
from carbon_scheduler.telemetry.metrics import SchedulerMetrics
from tests.dashboard_queries import (
    DASHBOARD_DIR,
    PanelQuery,
    panel_queries,
    promql_metric_names,
    promql_offsets_seconds,
)
from tests.influxd import InfluxServer, free_port
from tests.prometheus import PrometheusServer, find_binary

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT / "traces" / "demo.csv"
REGIONS_FILE = ROOT / "regions.toml"
DATABASE = "dashboards_live"
# 2 simulated hours per real second: the simulated day takes about 12 s.
SPEED = 7200
REPLAY_TIMEOUT_SECONDS = 240.0
# Scrapes after the replay ends, so the final counter values are in Prometheus.
SETTLE_SECONDS = 3.0
# Prometheus' $__rate_interval must cover several 1 s scrapes.
RATE_INTERVAL = "10s"

# Panels whose series exist in a replay but hold only NaN: a replay makes no
# Binding calls, so the binding latency histogram stays empty and its quantiles
# are NaN. A daemon fills it.
NO_NUMBER_IN_REPLAY = {("health", "Binding latency (p50, p99)")}

EXPECTED_SHARES = {
    "critical": {"eu-west": 0.5, "us-east": 0.3, "asia-east": 0.2},
    "standard": {"eu-west": 0.6, "us-east": 0.2, "asia-east": 0.2},
    "deferrable": {"eu-west": 0.7, "us-east": 0.2, "asia-east": 0.1},
}


class ReplayRun:
    """Wall-clock times of one replay run, its summary.json and the servers that saw it.

    `prometheus` scrapes the replay once; `doubled` scrapes it twice, under two
    instance labels, like two replicas.
    """

    def __init__(
        self,
        prometheus_server: PrometheusServer,
        doubled: PrometheusServer,
        influx: InfluxServer,
        summary: dict,
        start: float,
        end: float,
    ) -> None:
        self.prometheus = prometheus_server
        self.doubled = doubled
        self.influx = influx
        self.summary = summary
        self.start = start
        self.end = end


def region_names() -> list[str]:
    return [region.name for region in load_config(REGIONS_FILE).regions]


def trace_period_seconds() -> tuple[int, int]:
    """Return the first and last timestamp of the demo trace, in Unix seconds."""
    from datetime import datetime

    lines = TRACE.read_text(encoding="utf-8").splitlines()
    first = lines[1].split(",")[0]
    last = lines[-1].split(",")[0]
    return (
        int(datetime.fromisoformat(first.replace("Z", "+00:00")).timestamp()),
        int(datetime.fromisoformat(last.replace("Z", "+00:00")).timestamp()),
    )


def wait_for_line(path: Path, text: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        output = path.read_text(errors="replace") if path.exists() else ""
        if text in output:
            return
        if process.poll() is not None:
            pytest.fail(f"replay exited with code {process.returncode} before {text!r}; output:\n{output[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"replay printed no {text!r} within {timeout:.0f} s; output:\n{output[-3000:]}")


@pytest.fixture(scope="module")
def replay_run(tmp_path_factory, influxd, prometheus_for_module):
    folder = tmp_path_factory.mktemp("dashboards-live")
    expected = folder / "expected.json"
    expected.write_text(json.dumps(EXPECTED_SHARES), encoding="utf-8")

    port = free_port()
    server = prometheus_for_module([f"127.0.0.1:{port}"])
    # Two target addresses of the one loopback listener give two instance labels.
    # Where localhost also resolves to ::1, Prometheus falls back to 127.0.0.1.
    doubled = prometheus_for_module([f"127.0.0.1:{port}", f"localhost:{port}"])
    log_path = folder / "replay.log"
    command = [
        sys.executable, "-m", "carbon_scheduler.cli", "replay", str(TRACE),
        "--regions", str(REGIONS_FILE),
        "--days", "1",
        "--expected", str(expected),
        "--serve-metrics", str(port),
        "--speed", str(SPEED),
        "--influx", influxd.url,
        "--influx-database", DATABASE,
        "--out", str(folder / "out"),
        "--no-plots",
        "--quiet",
    ]
    environment = {key: value for key, value in os.environ.items() if not key.startswith("CARBON_SCHEDULER_INFLUX_")}
    start = time.time()
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command, cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=environment
        )
    try:
        wait_for_line(log_path, "replay finished", process, REPLAY_TIMEOUT_SECONDS)
        time.sleep(SETTLE_SECONDS)
        end = time.time()

        health = server.targets_health()
        assert [target["health"] for target in health] == ["up"], health
        doubled_health = doubled.targets_health()
        assert [target["health"] for target in doubled_health] == ["up", "up"], doubled_health
        summary = json.loads((folder / "out" / "summary.json").read_text(encoding="utf-8"))
        yield ReplayRun(server, doubled, influxd, summary, start, end)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=30)


@pytest.fixture(scope="module")
def prometheus_for_module(tmp_path_factory):
    """Like the `prometheus` fixture of tests/prometheus.py, but shared by this module's tests."""
    binary = find_binary("prometheus")
    servers: list[PrometheusServer] = []

    def start(targets):
        server = PrometheusServer(binary, tmp_path_factory.mktemp("prometheus"), targets)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def prometheus_queries(run: ReplayRun) -> list[PanelQuery]:
    return [
        query
        for query in panel_queries(
            DASHBOARD_DIR,
            regions=region_names(),
            start_seconds=math.floor(run.start),
            end_seconds=math.ceil(run.end),
            interval=RATE_INTERVAL,
        )
        if query.datasource_kind == "prometheus"
    ]


def influx_queries() -> list[PanelQuery]:
    first, last = trace_period_seconds()
    return [
        query
        for query in panel_queries(
            DASHBOARD_DIR, regions=region_names(), start_seconds=first, end_seconds=last + 86400, interval="1h"
        )
        if query.datasource_kind == "influxdb"
    ]


def influx_query(server: InfluxServer, query: str) -> dict:
    url = f"{server.url}/query?" + urllib.parse.urlencode({"db": DATABASE, "q": query, "epoch": "s"})
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_every_prometheus_panel_query_returns_data(replay_run):
    queries = prometheus_queries(replay_run)
    assert len(queries) >= 30
    empty = []
    without_number = set()
    for query in queries:
        shift = max(promql_offsets_seconds(query.expression), default=0)
        if query.instant:
            result = replay_run.prometheus.query(query.expression, at=replay_run.end + shift)
            samples = [series["value"] for series in result]
        else:
            result = replay_run.prometheus.query_range(
                query.expression, start=replay_run.start + shift, end=replay_run.end + shift, step=1.0
            )
            samples = [value for series in result for value in series["values"]]
        if not samples:
            empty.append(f"{query}: {query.expression}")
        elif not any(math.isfinite(float(value)) for _, value in samples):
            without_number.add((query.dashboard, query.panel))
    assert not empty, "queries without data:\n" + "\n".join(empty)
    assert without_number == NO_NUMBER_IN_REPLAY


def test_every_influx_panel_query_returns_data(replay_run):
    queries = influx_queries()
    assert len(queries) >= 7
    empty = []
    for query in queries:
        document = influx_query(replay_run.influx, query.expression)
        (statement,) = document["results"]
        assert "error" not in statement, f"{query}: {statement['error']}\n{query.expression}"
        rows = [row for series in statement.get("series", []) for row in series["values"]]
        if not rows:
            empty.append(f"{query}: {query.expression}")
    assert not empty, "queries without data:\n" + "\n".join(empty)


def test_region_variables_list_every_region(replay_run):
    regions = sorted(region_names())
    for name in ("overview.json", "health.json"):
        (variable,) = json.loads((DASHBOARD_DIR / name).read_text())["templating"]["list"]
        # Grafana turns label_values(METRIC, region) into this series API call.
        metric = variable["query"].removeprefix("label_values(").split(",")[0]
        status, body = replay_run.prometheus._get(
            "/api/v1/label/region/values?" + urllib.parse.urlencode({"match[]": metric})
        )
        assert status == 200
        assert sorted(json.loads(body)["data"]) == regions, name
    (variable,) = json.loads((DASHBOARD_DIR / "history.json").read_text())["templating"]["list"]
    (statement,) = influx_query(replay_run.influx, variable["query"])["results"]
    assert sorted(value for _, value in statement["series"][0]["values"]) == regions


def overview_query(run: ReplayRun, panel: str) -> PanelQuery:
    (query,) = [query for query in prometheus_queries(run) if query.dashboard == "overview" and query.panel == panel]
    return query


def instant_value(server: PrometheusServer, expression: str, at: float) -> float:
    (result,) = server.query(expression, at=at)
    return float(result["value"][1])


def test_grams_saved_matches_replay_summary(replay_run):
    """The saving stats equal the replay's printed saving, which summary.json holds."""
    emissions_kg = replay_run.summary["emissions_kg"]
    expected_grams = (emissions_kg["baseline"] - emissions_kg["scheduler"]) * 1000
    assert expected_grams > 0

    saved = instant_value(
        replay_run.prometheus, overview_query(replay_run, "Grams CO2eq saved").expression, replay_run.end
    )
    # summary.json rounds each total to 1 mg (6 decimals of a kilogram).
    assert saved == pytest.approx(expected_grams, abs=0.002)

    share = instant_value(
        replay_run.prometheus, overview_query(replay_run, "Emissions saved").expression, replay_run.end
    )
    # saving_percent is rounded to 3 decimals.
    assert share * 100 == pytest.approx(replay_run.summary["saving_percent"], abs=0.001)


def test_influx_grams_saved_matches_replay_summary(replay_run):
    """InfluxDB contains every task, so the history dashboard's saving equals the summary's."""
    emissions_kg = replay_run.summary["emissions_kg"]
    influx_saved = next(query for query in influx_queries() if query.panel == "Grams CO2eq saved")
    (statement,) = influx_query(replay_run.influx, influx_saved.expression)["results"]
    (series,) = statement["series"]
    assert series["values"][0][1] == pytest.approx(
        (emissions_kg["baseline"] - emissions_kg["scheduler"]) * 1000, abs=0.002
    )


def test_regions_up_with_two_replicas(replay_run):
    (query,) = [query for query in prometheus_queries(replay_run) if query.panel == "Regions up"]
    assert instant_value(replay_run.doubled, query.expression, replay_run.end) == len(region_names())


# Gauges that are meant to differ per replica: the leader count and the leader by replica.
PER_REPLICA_GAUGES = {"carbon_scheduler_leader"}


def test_gauge_panels_same_with_two_replicas(replay_run):
    """Every gauge-only panel query returns the same series and values whether
    Prometheus scrapes the replay once or as two replicas."""
    gauges = gauge_names()
    compared = 0
    for query in prometheus_queries(replay_run):
        names = promql_metric_names(query.expression)
        if not names <= gauges or names & PER_REPLICA_GAUGES:
            continue
        once = series_values(replay_run.prometheus, query.expression, replay_run.end)
        twice = series_values(replay_run.doubled, query.expression, replay_run.end)
        assert twice == once, f"{query}: {query.expression}"
        compared += 1
    assert compared >= 12


def gauge_names() -> set[str]:
    return {family.name for family in SchedulerMetrics().registry.collect() if family.type == "gauge"}


def series_values(server: PrometheusServer, expression: str, at: float) -> dict[tuple, float]:
    """Return {sorted labels: value} of an instant query.

    A NaN or infinite value is kept as its text, so that two NaNs compare equal.
    """
    values = {}
    for series in server.query(expression, at=at):
        labels = tuple(sorted(series["metric"].items()))
        assert labels not in values, f"{expression} returned {labels} twice"
        value = float(series["value"][1])
        values[labels] = value if math.isfinite(value) else str(value)
    return values
