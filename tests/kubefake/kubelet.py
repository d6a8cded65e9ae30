"""Pod status as a kubelet writes it, for tests that move pods through their phases.

There is no kubelet in the fake. `pod_status` builds the status a kubelet would
report for a phase (conditions, startTime, one containerStatus per container), and
`KubeletLite`, when enabled, starts every bound Pending pod at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .resources import PODS
from .store import Store, format_time, set_condition

PHASES = ("Pending", "Running", "Succeeded", "Failed")


def apply_phase(
    pod: dict[str, Any],
    phase: str,
    *,
    now: str,
    exit_code: int | None = None,
    reason: str | None = None,
    message: str | None = None,
) -> None:
    """Rewrite `pod`'s status in place to what a kubelet reports in `phase`."""
    if phase not in PHASES:
        raise ValueError(f"unknown pod phase {phase!r}: use one of {', '.join(PHASES)}")

    spec = pod.get("spec") or {}
    status = pod.setdefault("status", {})
    status["phase"] = phase
    if reason is not None:
        status["reason"] = reason
    if message is not None:
        status["message"] = message
    if phase == "Pending":
        for key in ("startTime", "containerStatuses", "hostIP", "podIP"):
            status.pop(key, None)
        return
    if not spec.get("nodeName"):
        raise ValueError(f"pod {pod['metadata']['name']!r} has no spec.nodeName, so no kubelet could report phase {phase}")

    status.setdefault("startTime", now)
    status.setdefault("hostIP", "10.0.0.1")
    status.setdefault("podIP", "10.244.0.1")
    running = phase == "Running"
    for condition_type in ("PodReadyToStartContainers", "Initialized"):
        set_condition(pod, condition_type, "True", now=now)
    for condition_type in ("Ready", "ContainersReady"):
        set_condition(pod, condition_type, "True" if running else "False", now=now, reason=None if running else "PodCompleted")
    set_condition(pod, "PodScheduled", "True", now=now)

    if phase == "Failed" and exit_code is None:
        exit_code = 1
    container_statuses = []
    for container in spec.get("containers") or []:
        entry: dict[str, Any] = {
            "name": container["name"],
            "image": container.get("image", ""),
            "imageID": "",
            "containerID": f"containerd://{pod['metadata']['uid'].replace('-', '')}",
            "ready": running,
            "restartCount": 0,
            "started": running,
        }
        if running:
            entry["state"] = {"running": {"startedAt": status["startTime"]}}
        else:
            code = exit_code or 0
            entry["state"] = {
                "terminated": {
                    "exitCode": code,
                    "reason": "Completed" if code == 0 else "Error",
                    "startedAt": status["startTime"],
                    "finishedAt": now,
                    "containerID": entry["containerID"],
                }
            }
        container_statuses.append(entry)
    status["containerStatuses"] = container_statuses


class KubeletLite:
    """Marks each bound, Pending, not-terminating pod Running, as a kubelet would soon after binding."""

    def __init__(self, store: Store, *, enabled: Callable[[], bool]) -> None:
        self._store = store
        self._enabled = enabled
        store.add_reconciler(self.reconcile)

    def reconcile(self) -> None:
        if not self._enabled():
            return
        now = format_time(self._store.clock())
        for pod in self._store.list(PODS):
            metadata = pod["metadata"]
            if (
                (pod.get("spec") or {}).get("nodeName")
                and (pod.get("status") or {}).get("phase") == "Pending"
                and not metadata.get("deletionTimestamp")
            ):
                self._store.mutate(PODS, metadata["namespace"], metadata["name"], lambda p: apply_phase(p, "Running", now=now))
