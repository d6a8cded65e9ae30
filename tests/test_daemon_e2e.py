"""End-to-end: the real `carbon-scheduler run` against three fake API servers.

The daemon runs as a child process, exactly as a user starts it, and reaches the
fake clusters over HTTP on loopback through a kubeconfig. Carbon intensity is
static per region (eu-west cleanest), so every placement is predictable.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.daemon_harness import CAP, Daemon, start_daemon, wait_until
from tests.kubefake.fixtures import FakeRegions

pytestmark = pytest.mark.asyncio


def bound_pods(server, *, ours: bool = True) -> list[dict]:
    pods = server.list("pods", namespace=None)
    return [
        pod for pod in pods
        if pod["spec"].get("nodeName")
        and pod.get("status", {}).get("phase") not in ("Succeeded", "Failed")
        and (not ours or pod["spec"].get("schedulerName") == "carbon-scheduler")
    ]


async def wait_until_metric(daemon: Daemon, series: str, timeout: float = 10.0) -> str:
    """Wait until /metrics shows `series` with a non-zero value; return the line."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        _, text = await daemon.get("/metrics")
        for line in text.splitlines():
            if line.startswith(series + " ") and float(line.rsplit(" ", 1)[1]) != 0:
                return line
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"/metrics showed no non-zero {series} within {timeout} s")
        await asyncio.sleep(0.2)


def events_for(server, name: str) -> list[dict]:
    return [event for event in server.list("events", namespace=None) if event["involvedObject"]["name"] == name]


async def test_daemon_ready_and_metrics(daemon: Daemon):
    status, text = await daemon.get("/healthz")
    assert status == 200
    status, text = await daemon.get("/metrics")
    assert status == 200
    assert 'carbon_scheduler_region_up{region="eu-west"}' in text or "carbon_scheduler_decisions" in text
    # Primed at start, so the error and restart panels show zero instead of no data.
    assert 'carbon_scheduler_binding_errors_total{reason="conflict",region="us-east"} 0.0' in text
    assert 'carbon_scheduler_api_errors_total{reason="unreachable",region="asia-east"} 0.0' in text
    assert 'carbon_scheduler_watch_restarts_total{region="eu-west",resource="pods"}' in text
    assert 'carbon_scheduler_pods_scheduled_total{decision="move",region="eu-west",task_class="deferrable"} 0.0' in text
    # The static source's first sample makes the feed issue a forecast.
    await wait_until_metric(daemon, 'carbon_scheduler_carbon_forecast_grams_per_kilowatt_hour{horizon_hours="24",region="eu-west"}')


async def test_critical_moves_to_greenest_region(daemon: Daemon, clusters: FakeRegions):
    clusters["us-east"].create_pod("job-a", labels={"carbon-scheduler.io/class": "critical"}, requests={"cpu": "1"})
    await wait_until(lambda: clusters["eu-west"].find("pods", "job-a") is not None
                     and clusters["eu-west"].find("pods", "job-a")["spec"].get("nodeName"), what="copy bound in eu-west")
    await wait_until(lambda: clusters["us-east"].find("pods", "job-a") is None, what="original deleted")
    copy = clusters["eu-west"].get("pods", "job-a")
    assert copy["spec"]["nodeName"].startswith("eu-west-node-")
    assert copy["metadata"]["annotations"]["carbon-scheduler.io/moved-from-region"] == "us-east"
    assert "carbon-scheduler.io/decision" in copy["metadata"]["annotations"]
    reasons = {event["reason"] for event in events_for(clusters["us-east"], "job-a")}
    assert "Moved" in reasons


async def test_standard_binds_in_home_greenest(daemon: Daemon, clusters: FakeRegions):
    clusters["eu-west"].create_pod("web-1", labels={"carbon-scheduler.io/class": "standard"}, requests={"cpu": "500m"})
    await wait_until(lambda: clusters["eu-west"].get("pods", "web-1")["spec"].get("nodeName"), what="binding")
    pod = clusters["eu-west"].get("pods", "web-1")
    assert pod["spec"]["nodeName"].startswith("eu-west-node-")
    await wait_until(lambda: "Scheduled" in {e["reason"] for e in events_for(clusters["eu-west"], "web-1")},
                     what="Scheduled event")
    await wait_until(lambda: "carbon-scheduler.io/decision" in (clusters["eu-west"].get("pods", "web-1")["metadata"].get("annotations") or {}),
                     what="decision annotation")
    _, text = await daemon.get("/metrics")
    assert 'carbon_scheduler_pod_wait_seconds_count{task_class="standard"} 1.0' in text
    assert 'carbon_scheduler_pods_scheduled_total{decision="bind",region="eu-west",task_class="standard"} 1.0' in text


async def test_pod_cap_holds_under_burst(daemon: Daemon, clusters: FakeRegions):
    homes = list(clusters)
    for index in range(200):
        clusters[homes[index % 3]].create_pod(
            f"burst-{index}", labels={"carbon-scheduler.io/class": "critical"}, requests={"cpu": "100m"}
        )
    await wait_until(lambda: sum(len(bound_pods(server)) for server in clusters.values()) == 3 * CAP,
                     timeout=30, what="every region at its cap")
    await asyncio.sleep(1.0)  # give an over-eager scheduler time to overfill
    for name, server in clusters.items():
        assert len(bound_pods(server)) == CAP, name

    # Finishing pods frees room, and the cap still holds afterwards.
    for pod in bound_pods(clusters["eu-west"])[:2]:
        clusters["eu-west"].set_pod_phase(pod["metadata"]["name"], "Succeeded", namespace=pod["metadata"]["namespace"])
    await wait_until(lambda: len(bound_pods(clusters["eu-west"])) == CAP, timeout=15, what="eu-west refilled")
    await asyncio.sleep(0.5)
    for name, server in clusters.items():
        assert len(bound_pods(server)) <= CAP, name


async def test_invalid_annotation_gives_event(daemon: Daemon, clusters: FakeRegions):
    clusters["eu-west"].create_pod(
        "bad-1",
        labels={"carbon-scheduler.io/class": "deferrable"},
        annotations={"carbon-scheduler.io/deadline": "tomorrow-ish"},
        requests={"cpu": "250m"},
    )
    await wait_until(lambda: any(e["reason"] == "InvalidAnnotation" for e in events_for(clusters["eu-west"], "bad-1")),
                     what="InvalidAnnotation event")
    event = next(e for e in events_for(clusters["eu-west"], "bad-1") if e["reason"] == "InvalidAnnotation")
    assert "tomorrow-ish" in event["message"]
    assert event["type"] == "Warning"


async def test_controller_pod_stays_home(daemon: Daemon, clusters: FakeRegions):
    owner = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web", "uid": "rs-uid-1"}}
    clusters["asia-east"].create_pod("web-rs-1", labels={"carbon-scheduler.io/class": "critical"}, owner=owner)
    await wait_until(lambda: (clusters["asia-east"].find("pods", "web-rs-1") or {}).get("spec", {}).get("nodeName"),
                     what="binding in asia-east")
    assert clusters["eu-west"].find("pods", "web-rs-1") is None


async def test_region_down_others_keep_scheduling(daemon: Daemon, clusters: FakeRegions):
    await clusters["asia-east"].stop()
    clusters["eu-west"].create_pod("during-outage", labels={"carbon-scheduler.io/class": "critical"})
    await wait_until(lambda: clusters["eu-west"].get("pods", "during-outage")["spec"].get("nodeName"),
                     timeout=15, what="binding while asia-east is down")
    await clusters["asia-east"].start()


async def test_sigterm_stops_cleanly(tmp_path: Path, clusters: FakeRegions):
    running = await start_daemon(tmp_path, clusters)
    assert await running.stop() == 0
    log = running.log.read_text()
    assert "daemon_stopped" in log


async def test_half_done_move_finished_at_start(tmp_path: Path, clusters: FakeRegions):
    """A crash between creating the copy and deleting the original: the next
    daemon deletes the original and leaves the copy, so the task runs once."""
    original = clusters["us-east"].create_pod("half-moved", labels={"carbon-scheduler.io/class": "critical"})
    annotations = {
        "carbon-scheduler.io/moved-from-region": "us-east",
        "carbon-scheduler.io/moved-from-uid": original["metadata"]["uid"],
    }
    clusters["eu-west"].create_pod(
        "half-moved", labels={"carbon-scheduler.io/class": "critical"}, annotations=annotations,
        node_name="eu-west-node-1",
    )
    running = await start_daemon(tmp_path, clusters)
    try:
        await wait_until(lambda: clusters["us-east"].find("pods", "half-moved") is None, what="original deleted")
        await asyncio.sleep(0.5)
        copies = [pod for server in clusters.values() for pod in server.list("pods", namespace=None)
                  if pod["metadata"]["name"] == "half-moved"]
        assert len(copies) == 1
        assert copies[0]["spec"]["nodeName"] == "eu-west-node-1"
    finally:
        assert await running.stop() == 0


def job_body(name: str, task_class: str = "critical") -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "metadata": {"labels": {"carbon-scheduler.io/class": task_class}},
                "spec": {
                    "schedulerName": "carbon-scheduler",
                    "restartPolicy": "Never",
                    "containers": [{"name": "work", "image": "busybox", "resources": {"requests": {"cpu": "500m"}}}],
                },
            }
        },
    }


async def test_job_pod_moves_with_its_job(daemon: Daemon, clusters: FakeRegions):
    original = clusters["us-east"].create("jobs", job_body("batch-1"), namespace="default")
    await wait_until(lambda: clusters["us-east"].find("jobs", "batch-1") is None, what="original Job deleted")
    copy = clusters["eu-west"].get("jobs", "batch-1")
    assert copy["metadata"]["annotations"]["carbon-scheduler.io/moved-from-uid"] == original["metadata"]["uid"]

    def copy_pod_bound() -> bool:
        pods = [p for p in clusters["eu-west"].list("pods", namespace=None)
                if p["metadata"]["name"].startswith("batch-1")]
        return len(pods) == 1 and bool(pods[0]["spec"].get("nodeName"))

    await wait_until(copy_pod_bound, what="the copy's pod bound in eu-west")
    us_pods = [p for p in clusters["us-east"].list("pods", namespace=None) if p["metadata"]["name"].startswith("batch-1")]
    assert all(p["metadata"].get("deletionTimestamp") or not p["spec"].get("nodeName") for p in us_pods)
