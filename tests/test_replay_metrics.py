"""`replay --serve-metrics`: the real command, scraped by a real Prometheus.

The replay runs as a child process on a 14-day recorded trace with a short
generated workload, fast enough to finish in about fifteen seconds. Prometheus
scrapes it every second. The assertions read the series back through
Prometheus' HTTP API and compare them with the trace and with the replay's own
JSON summary and task list.
"""

from __future__ import annotations

import csv
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from carbon_scheduler.carbon.traces import read_trace
from carbon_scheduler.cli import main
from carbon_scheduler.model import Task, TaskClass
from carbon_scheduler.policy.decisions import Bind, Defer, Unschedulable, Wait, Window
from carbon_scheduler.policy.windows import Outlook
from carbon_scheduler.replay.metrics_observer import decision_outcome, forecast_at
from carbon_scheduler.replay.metrics_server import MetricsServer
from carbon_scheduler.replay.streaming import Pacer
from carbon_scheduler.telemetry.metrics import SchedulerMetrics
from tests.builders import task as build_task
from tests.influxd import free_port
from tests.prometheus import PrometheusServer, find_binary, promtool_check_metrics

ROOT = Path(__file__).resolve().parents[1]
TRACE = ROOT.parent / "shared" / "traces" / "demo-14d.csv"
REGIONS = ("eu-west", "us-east", "asia-east")
# 0.25 days of arrivals on this trace span about 7.5 simulated hours, so 1800
# simulated seconds per second replays them in about 15 s.
DAYS = "0.25"
SPEED = "1800"
RUN_TIMEOUT_SECONDS = 120.0
FINISHED_LINE = "replay finished"


# In-process `main()` calls configure structlog for this test's captured stderr.
pytestmark = pytest.mark.usefixtures("restore_logging")


class ReplayProcess:
    """A `replay --serve-metrics` child process and the lines of its stdout."""

    def __init__(self, arguments: list[str], log_path: Path) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "carbon_scheduler.cli", "replay", *arguments],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.output.append(line)
            self.lines.put(line)

    def wait_for_line(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None and self.lines.empty():
                pytest.fail(f"replay exited with {self.process.returncode}:\n{self.stderr()}", pytrace=False)
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if text in line:
                return
        pytest.fail(f"replay printed no line with {text!r} in {timeout:.0f} s; stderr:\n{self.stderr()}", pytrace=False)

    def stderr(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-3000:]

    def terminate(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=30)
        finally:
            self._reader.join(timeout=5)
            if self.process.stdout is not None:
                self.process.stdout.close()
            self._log.close()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode("utf-8")


def sample_value(text: str, name: str, **labels: str) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    total = 0.0
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items()):
                total += sample.value
    return total


def scalar(result: list[dict]) -> float:
    assert len(result) == 1, result
    return float(result[0]["value"][1])


def final_query(served: dict, expression: str) -> list[dict]:
    """Run an instant query at the moment the replay's final values were scraped."""
    return served["server"].query(expression, at=served["final_at"])


def by_label(result: list[dict], label: str) -> dict[str, float]:
    return {series["metric"][label]: float(series["value"][1]) for series in result}


def scheduler_rows(out: Path) -> list[dict[str, str]]:
    with (out / "tasks.csv").open(newline="") as file:
        return [row for row in csv.DictReader(file) if row["policy"] == "scheduler"]


@pytest.fixture(scope="module")
def served_replay(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):
    """Run `replay --serve-metrics` to its end under a real Prometheus; return what the tests read."""
    tmp = tmp_path_factory.mktemp("served")
    expected_path = tmp / "expected.json"
    expected = {"critical": {"eu-west": 0.5, "us-east": 0.25, "asia-east": 0.25}}
    expected_path.write_text(json.dumps(expected))
    port = free_port()
    out = tmp / "out"
    arguments = [
        str(TRACE), "--days", DAYS, "--quiet", "--no-plots", "--out", str(out),
        "--serve-metrics", str(port), "--speed", SPEED, "--expected", str(expected_path),
    ]

    # A module-scoped fixture cannot use the function-scoped `prometheus` factory,
    # so it starts its own server with the same class.
    server = PrometheusServer(find_binary("prometheus"), tmp_path_factory.mktemp("prometheus"), [f"127.0.0.1:{port}"])
    server.start()
    replay = ReplayProcess(arguments, tmp / "replay.log")
    try:
        started = time.time()
        replay.wait_for_line("serving metrics at", timeout=30)
        polls: list[tuple[float, float]] = []
        finished = False
        deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
        while not finished and time.monotonic() < deadline:
            text = scrape(port)
            polls.append(
                (
                    sample_value(text, "carbon_scheduler_replay_simulated_time_seconds"),
                    sample_value(text, "carbon_scheduler_pods_scheduled_total"),
                )
            )
            finished = any(FINISHED_LINE in line for line in replay.output)
            time.sleep(0.5)
        replay.wait_for_line(FINISHED_LINE, timeout=5)
        ended = time.time()
        rows = scheduler_rows(out)
        # Wait for a scrape after the replay printed its end, so of the final values.
        wait_deadline = time.monotonic() + 15
        while time.monotonic() < wait_deadline:
            result = server.query("timestamp(carbon_scheduler_replay_simulated_time_seconds)")
            if result and scalar(result) > ended:
                break
            time.sleep(0.5)
        else:
            pytest.fail("Prometheus did not scrape the replay after it finished", pytrace=False)
        final_text = scrape(port)
        # Instant queries evaluate here: after the replay stops, Prometheus marks its series stale.
        final_at = time.time()
        yield {
            "server": server,
            "replay": replay,
            "out": out,
            "rows": rows,
            "summary": json.loads((out / "summary.json").read_text()),
            "started": started,
            "ended": ended,
            "polls": polls,
            "final_text": final_text,
            "final_at": final_at,
            "scrape_url": f"http://127.0.0.1:{port}/metrics",
            "expected": expected,
            "arguments": arguments,
            "exit_code": replay.terminate(),
        }
    finally:
        replay.terminate()
        server.stop()


def test_served_replay_exits_cleanly_on_sigterm(served_replay):
    assert served_replay["exit_code"] == 0, served_replay["replay"].stderr()


def test_served_summary_matches_plain_replay(served_replay, tmp_path: Path):
    arguments = served_replay["arguments"]
    plain = arguments[: arguments.index("--serve-metrics")] + arguments[arguments.index("--expected") :]
    plain[plain.index("--out") + 1] = str(tmp_path / "plain")
    assert main(["replay", *plain]) == 0
    served = served_replay["out"]
    assert (served / "summary.json").read_bytes() == (tmp_path / "plain" / "summary.json").read_bytes()
    assert (served / "tasks.csv").read_bytes() == (tmp_path / "plain" / "tasks.csv").read_bytes()


def test_intensity_matches_trace_at_simulated_time(served_replay):
    server = served_replay["server"]
    trace = read_trace(TRACE, regions=REGIONS)
    window = {"start": served_replay["started"], "end": served_replay["ended"] + 2, "step": 1.0}
    simulated = server.query_range("carbon_scheduler_replay_simulated_time_seconds", **window)
    intensity = server.query_range("carbon_scheduler_carbon_intensity_grams_per_kilowatt_hour", **window)
    assert len(simulated) == 1
    assert {series["metric"]["region"] for series in intensity} == set(REGIONS)

    clock = {float(at): float(value) for at, value in simulated[0]["values"]}
    steps_checked = set()
    for series in intensity:
        row = trace.region_index(series["metric"]["region"])
        for at, value in series["values"]:
            simulated_time = clock.get(float(at), 0.0)
            if simulated_time <= 0:
                continue  # scraped before the replay's clock started
            step = trace.index_at(simulated_time)
            assert float(value) == pytest.approx(trace.values[row, step]), (series["metric"], simulated_time)
            steps_checked.add(step)
    assert len(steps_checked) >= 5


def test_counters_grow_with_simulated_time(served_replay):
    server = served_replay["server"]
    polls = served_replay["polls"]
    running = [(clock, scheduled) for clock, scheduled in polls if clock > 0]
    assert len(running) >= 10
    clocks = [clock for clock, _ in running]
    counts = [scheduled for _, scheduled in running]
    assert clocks == sorted(clocks)
    assert counts == sorted(counts)
    # Placements arrive over the run, not all at its end.
    assert len(set(counts)) >= 4
    assert counts[0] < len(served_replay["rows"])


    emitted = server.query_range(
        'sum(carbon_scheduler_emissions_grams_total{scenario="scheduled"})',
        start=served_replay["started"], end=served_replay["ended"], step=1.0,
    )
    values = [float(value) for _, value in emitted[0]["values"]]
    assert values == sorted(values)
    assert len(set(values)) >= 4


def test_final_emissions_match_summary(served_replay):
    summary = served_replay["summary"]
    scheduled = scalar(final_query(served_replay, 'sum(carbon_scheduler_emissions_grams_total{scenario="scheduled"})'))
    blind = scalar(final_query(served_replay, 'sum(carbon_scheduler_emissions_grams_total{scenario="carbon_blind"})'))
    assert scheduled == pytest.approx(summary["emissions_kg"]["scheduler"] * 1000, abs=2e-3)
    assert blind == pytest.approx(summary["emissions_kg"]["baseline"] * 1000, abs=2e-3)
    assert blind >= scheduled

    joules = scalar(final_query(served_replay, 'sum(carbon_scheduler_energy_joules_total{scenario="scheduled"})'))
    kwh = summary["policies"]["scheduler"]["energy_kwh"]
    assert joules == pytest.approx(kwh * 3.6e6, abs=4.0)


def test_placements_match_task_list(served_replay):
    rows = served_replay["rows"]
    per_series = final_query(served_replay, "carbon_scheduler_pods_scheduled_total")
    counted: dict[tuple[str, str, str], float] = {}
    for series in per_series:
        metric = series["metric"]
        counted[(metric["task_class"], metric["region"], metric["decision"])] = float(series["value"][1])
    expected: dict[tuple[str, str, str], int] = {}
    for row in rows:
        decision = "bind" if row["region"] == row["home_region"] else "move"
        key = (row["class"], row["region"], decision)
        expected[key] = expected.get(key, 0) + 1
    assert {key: value for key, value in counted.items() if value} == expected

    waits = final_query(served_replay, "sum by (task_class) (carbon_scheduler_pod_wait_seconds_count)")
    per_class = {task_class.value: 0 for task_class in TaskClass}
    for row in rows:
        per_class[row["class"]] += 1
    assert by_label(waits, "task_class") == per_class


def test_decisions_and_latency_counted(served_replay):
    decisions = scalar(final_query(served_replay, "sum(carbon_scheduler_decisions_total)"))
    placements = scalar(final_query(served_replay, 'sum(carbon_scheduler_decisions_total{outcome=~"bind|move"})'))
    latency = scalar(final_query(served_replay, "carbon_scheduler_decision_duration_seconds_count"))
    assert placements == len(served_replay["rows"])
    assert decisions >= placements
    assert latency == decisions
    deferrals = scalar(final_query(served_replay, 'sum(carbon_scheduler_decisions_total{outcome="defer"})'))
    assert deferrals > 0


def test_static_gauges_set(served_replay):
    assert by_label(final_query(served_replay, "carbon_scheduler_region_up"), "region") == dict.fromkeys(REGIONS, 1.0)
    assert scalar(final_query(served_replay, "carbon_scheduler_leader")) == 1.0
    shares = final_query(served_replay, 'carbon_scheduler_expected_share_ratio{task_class="critical"}')
    assert by_label(shares, "region") == served_replay["expected"]["critical"]
    forecasts = final_query(served_replay, "carbon_scheduler_carbon_forecast_grams_per_kilowatt_hour")
    assert {(s["metric"]["region"], s["metric"]["horizon_hours"]) for s in forecasts} == {
        (region, hours) for region in REGIONS for hours in ("1", "6", "24")
    }
    assert all(float(s["value"][1]) > 0 for s in forecasts)
    levels = by_label(final_query(served_replay, "carbon_scheduler_carbon_level"), "region")
    assert set(levels) == set(REGIONS)
    assert set(levels.values()) <= {0.0, 1.0, 2.0}


def test_simulated_time_reaches_last_finish(served_replay):
    text = served_replay["final_text"]
    last_end = max(row["end"] for row in served_replay["rows"])
    clock = sample_value(text, "carbon_scheduler_replay_simulated_time_seconds")
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(clock)) == last_end


def test_queue_gauges_empty_at_end(served_replay):
    text = served_replay["final_text"]
    assert sample_value(text, "carbon_scheduler_deferred_pods") == 0
    assert sample_value(text, "carbon_scheduler_queue_pods") == 0


def test_promtool_accepts_served_metrics(served_replay):
    result = promtool_check_metrics(served_replay["final_text"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr == ""


def test_prometheus_scraped_target_up(served_replay):
    assert scalar(final_query(served_replay, "up")) == 1.0
    # The replay was stopped with SIGTERM before this test, so the target is down by now.
    targets = served_replay["server"].targets_health()
    assert [target["scrapeUrl"] for target in targets] == [served_replay["scrape_url"]]


# The building blocks, without a process ------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_pacer_maps_simulated_to_real_time():
    clock = FakeClock()
    pacer = Pacer(3600.0, clock=clock, sleep=clock.sleep)
    pacer.start(1_000_000)
    assert pacer.simulated_now() == 1_000_000
    assert pacer.seconds_until(1_007_200) == pytest.approx(2.0)
    clock.now += 0.5
    assert pacer.simulated_now() == pytest.approx(1_001_800)
    assert pacer.seconds_until(1_000_000) < 0


@pytest.mark.parametrize("speed", [0.0, -1.0, float("inf"), float("nan")])
def test_pacer_rejects_invalid_speed(speed: float):
    with pytest.raises(ValueError, match="speed must be a positive finite number"):
        Pacer(speed)


def test_forecast_at_horizons():
    outlook = Outlook.build("eu-west", 0, 3600, 100.0, np.arange(1.0, 11.0))
    assert forecast_at(outlook, 1) == 1.0
    assert forecast_at(outlook, 6) == 6.0
    # Past the forecast the last value holds.
    assert forecast_at(outlook, 24) == 10.0
    half_hourly = Outlook.build("eu-west", 0, 1800, 100.0, np.arange(1.0, 61.0))
    assert forecast_at(half_hourly, 6) == 12.0


def _task(home: str) -> Task:
    return build_task(home=home)


WINDOW = Window(region="eu-west", start=10, end=20, estimated_g=1.0)


@pytest.mark.parametrize(
    ("name", "decision", "outcome"),
    [
        ("bind at home", Bind(region="eu-west", node="n1", intensity_g_per_kwh=1.0, reason="r"), "bind"),
        ("bind elsewhere", Bind(region="us-east", node="n1", intensity_g_per_kwh=1.0, reason="r"), "move"),
        ("defer", Defer(window=WINDOW, until=10, start_now_g=2.0, reason="r"), "defer"),
        ("wait", Wait(region="eu-west", until=30, reason="r"), "wait"),
        ("unschedulable", Unschedulable(reasons={"eu-west": ("no room",)}), "unschedulable"),
    ],
)
def test_decision_outcome_labels(name: str, decision, outcome: str):
    assert decision_outcome(_task("eu-west"), decision) == outcome, name


def test_speed_without_serve_metrics_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    code = main(["replay", str(TRACE), "--days", DAYS, "--out", str(tmp_path), "--speed", "100"])
    assert code == 2
    assert "--speed paces --serve-metrics" in capsys.readouterr().err


@pytest.mark.parametrize("port", ["0", "65536", "http"])
def test_serve_metrics_port_validated(port: str, capsys: pytest.CaptureFixture[str]):
    with pytest.raises(SystemExit) as exit_info:
        main(["replay", str(TRACE), "--serve-metrics", port])
    assert exit_info.value.code == 2
    assert "expected a TCP port from 1 to 65535" in capsys.readouterr().err


def test_serve_metrics_port_in_use(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code = main(["replay", str(TRACE), "--days", DAYS, "--quiet", "--out", str(tmp_path), "--serve-metrics", str(port)])
    assert code == 2
    error = capsys.readouterr().err
    assert f"cannot serve metrics on 127.0.0.1:{port}" in error
    assert "choose another --serve-metrics port" in error


def test_metrics_server_paths_and_lock():
    metrics = SchedulerMetrics()
    metrics.prime(REGIONS)
    lock = threading.Lock()
    server = MetricsServer(metrics.registry, lock, address="127.0.0.1", port=0)
    server.start()
    try:
        with urllib.request.urlopen(server.url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            assert 'carbon_scheduler_region_up{region="eu-west"} 0.0' in response.read().decode()

        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url.replace("/metrics", "/other"), timeout=5)
        assert missing.value.code == 404
        missing.value.close()

        # A scrape waits while the replay holds the lock for an event.
        scraped: list[str] = []
        with lock:
            reader = threading.Thread(target=lambda: scraped.append(scrape_url(server.url)))
            reader.start()
            reader.join(timeout=0.5)
            assert scraped == []
        reader.join(timeout=5)
        assert len(scraped) == 1
    finally:
        server.close()


def scrape_url(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode("utf-8")
