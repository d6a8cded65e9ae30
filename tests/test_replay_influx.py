"""`replay --influx`: the real command writing to a real influxd.

Each test writes to a database of its own on the session's influxd and reads the
three measurements back with InfluxQL over HTTP, then compares them with the
trace, the forecaster and the replay's own summary and task list.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import structlog

from carbon_scheduler.carbon.traces import read_trace
from carbon_scheduler.cli import (
    INFLUX_PASSWORD_VARIABLE,
    INFLUX_TOKEN_VARIABLE,
    INFLUX_USERNAME_VARIABLE,
    build_parser,
    influx_credentials,
    main,
)
from carbon_scheduler.forecasting import make_forecaster
from tests.influxd import InfluxServer, free_port

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "demo-14d.csv"
REGIONS = ("eu-west", "us-east", "asia-east")
DAYS = "0.25"


# In-process `main()` calls configure structlog for this test's captured stderr.
pytestmark = pytest.mark.usefixtures("restore_logging")


def influxql(server: InfluxServer, database: str | None, statement: str) -> list[dict]:
    """Run one InfluxQL statement; return its series (each with columns, values and tags)."""
    params = {"q": statement, "epoch": "s"}
    if database is not None:
        params["db"] = database
    url = f"{server.url}/query?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as response:
        document = json.loads(response.read())
    result = document["results"][0]
    assert "error" not in result, result["error"]
    return result.get("series", [])


def rows(series: list[dict]) -> list[dict]:
    """Flatten series into one dict per point, tags included."""
    flat = []
    for entry in series:
        for values in entry["values"]:
            flat.append({**entry.get("tags", {}), **dict(zip(entry["columns"], values))})
    return flat


def databases(server: InfluxServer) -> set[str]:
    return {values[0] for values in influxql(server, None, "SHOW DATABASES")[0].get("values", [])}


def read_tasks(out: Path, policy: str) -> dict[str, dict[str, str]]:
    with (out / "tasks.csv").open(newline="") as file:
        return {row["task_id"]: row for row in csv.DictReader(file) if row["policy"] == policy}


def unix(text: str) -> int:
    return int(datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC).timestamp())


@pytest.fixture(scope="module")
def written(influxd: InfluxServer, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run `replay --influx` once into a new database; return what the tests compare."""
    out = tmp_path_factory.mktemp("influx-replay")
    database = "replay_influx_test"
    assert database not in databases(influxd)
    # A module fixture runs before the per-test restore, so it restores its own.
    logging_config = structlog.get_config()
    try:
        code = main(
            [
                "replay", str(TRACE), "--days", DAYS, "--quiet", "--no-plots", "--out", str(out),
                "--influx", influxd.url, "--influx-database", database,
            ]
        )
    finally:
        structlog.configure(**logging_config)
    assert code == 0
    return {
        "server": influxd,
        "database": database,
        "out": out,
        "summary": json.loads((out / "summary.json").read_text()),
        "scheduler": read_tasks(out, "scheduler"),
        "baseline": read_tasks(out, "baseline"),
    }


def test_database_created_when_missing(written):
    assert written["database"] in databases(written["server"])


def test_samples_cover_whole_trace(written):
    trace = read_trace(TRACE, regions=REGIONS)
    series = influxql(
        written["server"], written["database"],
        "SELECT intensity_g_per_kwh FROM carbon_intensity WHERE time >= 0 GROUP BY region, source",
    )
    assert {(entry["tags"]["region"], entry["tags"]["source"]) for entry in series} == {(r, "trace") for r in REGIONS}
    for entry in series:
        row = trace.region_index(entry["tags"]["region"])
        times = [int(values[0]) for values in entry["values"]]
        assert times == [trace.time_at(step) for step in range(trace.steps)]
        assert [values[1] for values in entry["values"]] == pytest.approx(list(trace.values[row]))


def test_emissions_match_task_list(written):
    points = rows(influxql(written["server"], written["database"], "SELECT * FROM task_emissions WHERE time >= 0"))
    scheduler = written["scheduler"]
    baseline = written["baseline"]
    summary = written["summary"]
    started = summary["tasks"] - summary["unstarted"]
    assert len(points) == started == len(scheduler)

    for point in points:
        task = scheduler[point["task_id"]]
        blind = baseline[point["task_id"]]
        assert point["region"] == task["region"]
        assert point["class"] == task["class"]
        assert point["start"] == unix(task["start"])
        assert point["end"] == unix(task["end"])
        assert point["decision_time"] == point["start"]
        assert point["emissions_g"] == pytest.approx(float(task["emissions_g"]), abs=1e-6)
        assert point["energy_kwh"] == pytest.approx(float(task["energy_kwh"]), abs=1e-9)
        assert point["counterfactual_region"] == blind["region"]
        assert point["counterfactual_emissions_g"] == pytest.approx(float(blind["emissions_g"]), abs=1e-6)

    total = sum(point["emissions_g"] for point in points)
    counterfactual = sum(point["counterfactual_emissions_g"] for point in points)
    assert total == pytest.approx(summary["emissions_kg"]["scheduler"] * 1000, abs=2e-3)
    assert counterfactual == pytest.approx(summary["emissions_kg"]["baseline"] * 1000, abs=2e-3)


def test_forecasts_issued_hourly_from_first_tick(written):
    trace = read_trace(TRACE, regions=REGIONS)
    series = influxql(
        written["server"], written["database"],
        "SELECT intensity_g_per_kwh FROM carbon_forecast WHERE time >= 0 GROUP BY region, forecaster, issued_at",
    )
    forecaster = written["summary"]["forecaster"]
    assert {entry["tags"]["forecaster"] for entry in series} == {forecaster}
    issued = sorted({int(entry["tags"]["issued_at"]) for entry in series})
    first_arrival = min(unix(task["arrival"]) for task in written["scheduler"].values())
    assert issued[0] == first_arrival - (first_arrival - trace.start) % trace.step_seconds
    assert issued == list(range(issued[0], issued[-1] + 1, trace.step_seconds))
    assert len(series) == len(issued) * len(REGIONS)

    model = make_forecaster(forecaster)
    for entry in series:
        issued_at = int(entry["tags"]["issued_at"])
        times = [int(values[0]) for values in entry["values"]]
        assert times == [issued_at + k * trace.step_seconds for k in range(1, len(times) + 1)]
        if issued_at != issued[0]:
            continue
        # The first issuance, recomputed from the trace up to its step.
        row = trace.region_index(entry["tags"]["region"])
        step = trace.index_at(issued_at)
        expected = model.forecast(trace.values[row, : step + 1], issued_at, trace.step_seconds, len(times))
        assert [values[1] for values in entry["values"]] == pytest.approx(list(expected))


def test_influx_writes_while_paced(influxd: InfluxServer, tmp_path: Path):
    """With --serve-metrics the records land as the simulated clock advances."""
    database = "replay_influx_paced"
    environment = {
        **os.environ,
        INFLUX_USERNAME_VARIABLE: "replay-user",
        INFLUX_PASSWORD_VARIABLE: "pa55-not-to-be-logged",
    }
    process = subprocess.Popen(
        [
            sys.executable, "-m", "carbon_scheduler.cli", "--log-level", "debug", "replay", str(TRACE),
            "--days", DAYS, "--quiet", "--no-plots", "--out", str(tmp_path / "out"),
            "--serve-metrics", str(free_port()), "--speed", "3600",
            "--influx", influxd.url, "--influx-database", database,
        ],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )

    counts: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "out" / "summary.json").exists():
            if database in databases(influxd):
                series = influxql(influxd, database, "SELECT count(emissions_g) FROM task_emissions WHERE time >= 0")
                counts.append(int(series[0]["values"][0][1]) if series else 0)
            time.sleep(0.3)
        time.sleep(0.5)
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)

    assert process.returncode == 0, output[-3000:]
    assert "pa55-not-to-be-logged" not in output
    final = len(read_tasks(tmp_path / "out", "scheduler"))
    assert counts, "the database never appeared while the replay ran"
    assert any(0 < count < final for count in counts), counts
    series = influxql(influxd, database, "SELECT count(emissions_g) FROM task_emissions WHERE time >= 0")
    assert int(series[0]["values"][0][1]) == final


def _args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["replay", str(TRACE), "--influx", "http://127.0.0.1:1", *argv])


@pytest.mark.parametrize(
    ("name", "argv", "environ", "expected"),
    [
        ("none", [], {}, {"username": None, "password": None, "token": None}),
        (
            "environment",
            [],
            {INFLUX_USERNAME_VARIABLE: "u", INFLUX_PASSWORD_VARIABLE: "p"},
            {"username": "u", "password": "p", "token": None},
        ),
        ("token from environment", [], {INFLUX_TOKEN_VARIABLE: "t"}, {"username": None, "password": None, "token": "t"}),
        (
            "options win",
            ["--influx-username", "cli-user", "--influx-password", "cli-pass"],
            {INFLUX_USERNAME_VARIABLE: "u", INFLUX_PASSWORD_VARIABLE: "p"},
            {"username": "cli-user", "password": "cli-pass", "token": None},
        ),
        ("empty variable is unset", [], {INFLUX_TOKEN_VARIABLE: ""}, {"username": None, "password": None, "token": None}),
    ],
)
def test_influx_credentials_sources(name: str, argv: list[str], environ: dict[str, str], expected: dict):
    assert influx_credentials(_args(*argv), environ) == expected, name


def test_influx_options_need_influx_url(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["replay", str(TRACE), "--out", str(tmp_path), "--influx-database", "x"])
    assert code == 2
    assert "--influx-database applies to --influx URL; add --influx URL or drop it" in capsys.readouterr().err


def test_influx_username_without_password_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(
        ["replay", str(TRACE), "--out", str(tmp_path), "--influx", "http://127.0.0.1:1", "--influx-username", "u"]
    )
    assert code == 2
    assert "username and password must be given together" in capsys.readouterr().err


def test_influx_unreachable_fails_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    closed_port = free_port()
    code = main(
        [
            "replay", str(TRACE), "--days", DAYS, "--quiet", "--no-plots", "--out", str(tmp_path),
            "--influx", f"http://127.0.0.1:{closed_port}",
        ]
    )
    assert code == 1
    error = capsys.readouterr().err
    assert "writing the replay's history to InfluxDB failed" in error
    assert f"127.0.0.1:{closed_port}" in error
