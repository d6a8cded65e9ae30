"""Every dashboard query returns data from real servers fed by a replay.

One `replay --serve-metrics --influx` run simulates a day of the demo trace at
high speed. A real Prometheus scrapes it every second and a real influxd stores
its history. Then every query of every dashboard, with its Grafana variables
replaced, goes through Prometheus' HTTP API or InfluxDB's /query, and each must
return at least one series with samples. A panel that names a metric, field or
tag that nothing writes gets an empty result and fails here.

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
from tests.dashboard_queries import DASHBOARD_DIR, PanelQuery, panel_queries, promql_offsets_seconds
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
    """Wall-clock times of one replay run and the servers that saw it."""

    def __init__(self, prometheus_server: PrometheusServer, influx: InfluxServer, start: float, end: float) -> None:
        self.prometheus = prometheus_server
        self.influx = influx
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
        yield ReplayRun(server, influxd, start, end)
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


def test_grams_saved_matches_emission_totals(replay_run):
    """Both "Grams CO2eq saved" panels agree with the emission counters."""
    query = next(
        query for query in prometheus_queries(replay_run)
        if query.panel == "Grams CO2eq saved" and query.dashboard == "overview"
    )
    (saved,) = replay_run.prometheus.query(query.expression, at=replay_run.end)
    scraped = {
        series["metric"]["scenario"]: [float(value) for _, value in series["values"]]
        for series in replay_run.prometheus.query_range(
            "sum by (scenario) (carbon_scheduler_emissions_grams_total)",
            start=replay_run.start, end=replay_run.end, step=1.0,
        )
    }
    blind, scheduled = scraped["carbon_blind"], scraped["scheduled"]
    assert blind[-1] > scheduled[-1] > 0
    # increase() counts only what grew between the first and last scrape, and
    # extrapolates that to the window's edges by at most about one scrape
    # interval. The replay may finish tasks before Prometheus' first scrape.
    grown = (blind[-1] - blind[0]) - (scheduled[-1] - scheduled[0])
    assert float(saved["value"][1]) == pytest.approx(grown, rel=0.15)

    # InfluxDB contains every task, so its sums match the final counter values.
    influx_saved = next(query for query in influx_queries() if query.panel == "Grams CO2eq saved")
    (statement,) = influx_query(replay_run.influx, influx_saved.expression)["results"]
    (series,) = statement["series"]
    assert series["values"][0][1] == pytest.approx(blind[-1] - scheduled[-1], rel=1e-6)
