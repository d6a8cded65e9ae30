"""A small Job controller: one pod per missing completion, status from pod phases.

It follows batch/v1 Job semantics for non-indexed Jobs closely enough for a
scheduler: it keeps `min(parallelism, completions - succeeded)` pods active,
creates them from the template with a controller ownerReference to the Job,
replaces failed pods until `backoffLimit` is exceeded, honours `suspend`, and
writes `status.active/succeeded/failed/ready`, `startTime`, `completionTime` and
the Complete/Failed/Suspended conditions.

NOTE: the real controller waits an exponential back-off (10 s, 20 s, ...) before
replacing a failed pod and adds the `batch.kubernetes.io/job-tracking` finalizer
to its pods. This one replaces at once and adds no finalizer. Indexed Jobs,
success and pod failure policies, and activeDeadlineSeconds are not modelled.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .resources import JOBS, PODS
from .store import Store, format_time, set_condition

_FINISHED = ("Succeeded", "Failed")


def controller_uid(obj: dict[str, Any]) -> str | None:
    """Return the uid of the object's controller owner, if it has one."""
    for reference in obj["metadata"].get("ownerReferences") or []:
        if reference.get("controller"):
            return reference.get("uid")
    return None


def _finished(status: dict[str, Any]) -> bool:
    return any(
        condition.get("type") in ("Complete", "Failed") and condition.get("status") == "True"
        for condition in status.get("conditions") or []
    )


class JobController:
    def __init__(self, store: Store, *, enabled: Callable[[], bool]) -> None:
        self._store = store
        self._enabled = enabled
        # Terminal phase per pod uid, per Job uid, so a finished pod that is later
        # deleted still counts, as the real controller's tracking finalizer ensures.
        self._outcomes: dict[str, dict[str, str]] = {}
        store.add_reconciler(self.reconcile)

    def reconcile(self) -> None:
        if not self._enabled():
            return
        jobs = self._store.list(JOBS)
        live = {job["metadata"]["uid"] for job in jobs}
        for uid in list(self._outcomes):
            if uid not in live:
                del self._outcomes[uid]
        for job in jobs:
            self._sync(job)

    def _sync(self, job: dict[str, Any]) -> None:
        metadata = job["metadata"]
        status = job.get("status") or {}
        if metadata.get("deletionTimestamp") or _finished(status):
            return
        uid, namespace, name = metadata["uid"], metadata["namespace"], metadata["name"]
        spec = job.get("spec") or {}
        now = format_time(self._store.clock())
        pods = [pod for pod in self._store.list(PODS, namespace) if controller_uid(pod) == uid]
        outcomes = self._outcomes.setdefault(uid, {})
        for pod in pods:
            phase = (pod.get("status") or {}).get("phase")
            if phase in _FINISHED:
                outcomes[pod["metadata"]["uid"]] = phase
        succeeded = sum(1 for phase in outcomes.values() if phase == "Succeeded")
        failed = sum(1 for phase in outcomes.values() if phase == "Failed")
        active = [
            pod
            for pod in pods
            if (pod.get("status") or {}).get("phase") not in _FINISHED and not pod["metadata"].get("deletionTimestamp")
        ]
        completions = spec.get("completions") or 1
        new_job = copy.deepcopy(job)
        new_status = new_job.setdefault("status", {})

        if succeeded >= completions:
            self._delete_pods(active)
            active = []
            set_condition(new_job, "SuccessCriteriaMet", "True", now=now, reason="CompletionsReached", message="Reached expected number of succeeded pods")
            set_condition(new_job, "Complete", "True", now=now, reason="CompletionsReached", message="Reached expected number of succeeded pods")
            new_status["completionTime"] = now
        elif failed > spec.get("backoffLimit", 6):
            self._delete_pods(active)
            active = []
            set_condition(new_job, "FailureTarget", "True", now=now, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
            set_condition(new_job, "Failed", "True", now=now, reason="BackoffLimitExceeded", message="Job has reached the specified backoff limit")
        elif spec.get("suspend"):
            self._delete_pods(active)
            active = []
            set_condition(new_job, "Suspended", "True", now=now, reason="JobSuspended", message="Job suspended")
        else:
            if any(condition.get("type") == "Suspended" for condition in new_status.get("conditions") or []):
                set_condition(new_job, "Suspended", "False", now=now, reason="JobResumed", message="Job resumed")
            new_status.setdefault("startTime", now)
            wanted = min(spec.get("parallelism", 1), completions - succeeded) - len(active)
            for _ in range(max(wanted, 0)):
                active.append(self._create_pod(job))

        new_status["active"] = len(active)
        new_status["ready"] = sum(1 for pod in active if _ready(pod))
        new_status["terminating"] = 0
        new_status["uncountedTerminatedPods"] = {}
        for key, value in (("succeeded", succeeded), ("failed", failed)):
            if value:
                new_status[key] = value
            else:
                new_status.pop(key, None)
        if new_status.get("active") == 0:
            del new_status["active"]
        if new_status != status:
            self._store.mutate(JOBS, namespace, name, lambda stored: stored.__setitem__("status", new_status))

    def _create_pod(self, job: dict[str, Any]) -> dict[str, Any]:
        metadata = job["metadata"]
        template = copy.deepcopy((job.get("spec") or {}).get("template") or {})
        template_metadata = template.get("metadata") or {}
        pod = {
            "metadata": {
                "generateName": f"{metadata['name']}-",
                "labels": template_metadata.get("labels") or {},
                "annotations": template_metadata.get("annotations") or {},
                "ownerReferences": [
                    {
                        "apiVersion": JOBS.api_version,
                        "kind": JOBS.kind,
                        "name": metadata["name"],
                        "uid": metadata["uid"],
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": template.get("spec") or {},
        }
        return self._store.create(PODS, pod, namespace=metadata["namespace"])

    def _delete_pods(self, pods: list[dict[str, Any]]) -> None:
        for pod in pods:
            self._store.delete(PODS, pod["metadata"]["namespace"], pod["metadata"]["name"], propagation="Background")


def _ready(pod: dict[str, Any]) -> bool:
    return any(
        condition.get("type") == "Ready" and condition.get("status") == "True"
        for condition in (pod.get("status") or {}).get("conditions") or []
    )
