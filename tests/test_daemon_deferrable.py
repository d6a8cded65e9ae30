"""End-to-end: a deferrable pod waits for a forecast low-carbon window.

The daemon replays a trace one hour per wall-clock second, so a trace day lasts
24 s. Every trace day eu-west drops from 300 to 50 g/kWh between 10:00 and 14:00;
the other regions stay flat and dirtier. The daemon loads the replayed history at
start, forecasts the dip, defers the pod and binds it in eu-west inside the dip,
before its deadline.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from tests.daemon_harness import daemon_environment, Daemon, free_port, wait_until

pytestmark = pytest.mark.asyncio

DIP_HOURS = range(10, 14)


def write_trace(path: Path, days: int = 14) -> Path:
    lines = ["timestamp,region,intensity_g_per_kwh"]
    for day in range(days):
        for hour in range(24):
            stamp = f"2023-01-{day + 1:02d}T{hour:02d}:00:00Z"
            lines.append(f"{stamp},eu-west,{50.0 if hour in DIP_HOURS else 300.0}")
            lines.append(f"{stamp},us-east,400.0")
            lines.append(f"{stamp},asia-east,450.0")
    path.write_text("\n".join(lines) + "\n")
    return path


def write_config(path: Path, clusters, trace: Path) -> Path:
    lines = [
        "[scheduler]",
        "deadline_margin_seconds = 3",
        "default_expected_duration_seconds = 2",
        "default_deadline_seconds = 120",
        "",
    ]
    for name in clusters:
        lines += [
            f"[regions.{name}]",
            f'kubeconfig = "{clusters.kubeconfig}"',
            f'context = "{name}"',
            "max_pods = 4",
            f"[regions.{name}.levels]",
            'mode = "absolute"',
            "low_below_g_per_kwh = 150",
            "high_above_g_per_kwh = 420",
            f"[regions.{name}.carbon]",
            'source = "replay"',
            f'trace = "{trace}"',
            "seconds_per_hour = 1",
            f"[[regions.{name}.nodes]]",
            f'name = "{name}-node-1"',
            'cpu = "8"',
            'memory = "32Gi"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


async def test_deferrable_pod_starts_in_forecast_dip(tmp_path: Path, clusters):
    config = write_config(tmp_path / "regions.toml", clusters, write_trace(tmp_path / "trace.csv"))
    port = free_port()
    log = tmp_path / "daemon.log"
    log_file = log.open("wb")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "carbon_scheduler.cli", "--log-level", "debug", "run", "--config", str(config),
        "--metrics-port", str(port), stdout=log_file, stderr=asyncio.subprocess.STDOUT,
        env=daemon_environment(),
    )
    daemon = Daemon(process, port, log, log_file)
    try:
        await daemon.wait_ready()
        created = asyncio.get_running_loop().time()
        clusters["us-east"].create_pod(
            "batch-green",
            labels={"carbon-scheduler.io/class": "deferrable"},
            annotations={"carbon-scheduler.io/deadline": "60s", "carbon-scheduler.io/expected-duration": "2s"},
            requests={"cpu": "500m"},
        )

        def bound():
            pod = clusters["eu-west"].find("pods", "batch-green")
            return pod is not None and pod["spec"].get("nodeName")

        await wait_until(bound, timeout=70, what="the pod bound in eu-west")
        waited = asyncio.get_running_loop().time() - created
        pod = clusters["eu-west"].get("pods", "batch-green")
        decision = json.loads(pod["metadata"]["annotations"]["carbon-scheduler.io/decision"])
        deferred = [e for e in clusters["us-east"].list("events", namespace=None)
                    if e["involvedObject"]["name"] == "batch-green" and e["reason"] == "Deferred"]
    finally:
        assert await daemon.stop() == 0, log.read_text()[-4000:]

    assert decision["region"] == "eu-west"
    assert decision["intensity_g_per_kwh"] == 50.0
    assert deferred, "expected a Deferred event before the move"
    assert waited < 60 - 2
