"""Moving a bare pod to another region's cluster, safely across crashes.

A move has two API steps:

1. create the copy in the target cluster: same namespace and name, no uid or
   resourceVersion, `spec.nodeName` set to the chosen node (so the copy is bound
   the moment it exists and no scheduler can pick it up in between), and the
   annotations `carbon-scheduler.io/moved-from-region` and
   `carbon-scheduler.io/moved-from-uid` naming the original;
2. delete the original with a UID precondition.

The original is pending and unbound until step 2, so it never runs; the copy
exists before the original goes, so the task is never lost. A crash between the
steps leaves an original whose copy exists: whenever the daemon sees such a pair
(at start-up or later) it finishes the move by deleting the original. A crash
before step 1 leaves only the original, which is scheduled again. A 409 on step 1
(a pod of that name already exists in the target) means an earlier attempt
created it: the copy is checked for our annotation and the move continues.

A pod controlled by a Job moves with its Job, in the same two steps: the Job is
re-created in the target cluster (its pods pinned there), then the original Job
is deleted with a UID precondition, which deletes its pending pod. Before
deciding for a Job's pod, the scheduler looks for a copy of the Job in the other
regions and, when one exists, only finishes the move.
"""

from __future__ import annotations

import copy

from carbon_scheduler.model import LABEL_PREFIX

MOVED_FROM_REGION = f"{LABEL_PREFIX}/moved-from-region"
MOVED_FROM_UID = f"{LABEL_PREFIX}/moved-from-uid"

_DROPPED_METADATA = ("uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink")


def copy_for_target(pod: dict, *, origin_region: str, node: str) -> dict:
    """Return the body that re-creates `pod` in another cluster, bound to `node`."""
    metadata = {key: value for key, value in pod["metadata"].items() if key not in _DROPPED_METADATA}
    annotations = dict(metadata.get("annotations") or {})
    annotations[MOVED_FROM_REGION] = origin_region
    annotations[MOVED_FROM_UID] = pod["metadata"]["uid"]
    metadata["annotations"] = annotations
    metadata.pop("ownerReferences", None)
    spec = copy.deepcopy(pod.get("spec") or {})
    spec["nodeName"] = node
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def origin_of(pod: dict) -> tuple[str, str] | None:
    """(region, uid) of the original that `pod` is a moved copy of, or None."""
    annotations = pod["metadata"].get("annotations") or {}
    region = annotations.get(MOVED_FROM_REGION)
    uid = annotations.get(MOVED_FROM_UID)
    if region and uid:
        return region, uid
    return None


def controller_kind(pod: dict) -> str | None:
    """Kind of the pod's controlling owner (Job, ReplicaSet, ...), or None for a bare pod."""
    for owner in pod["metadata"].get("ownerReferences") or ():
        if owner.get("controller"):
            return owner.get("kind")
    return None


# Labels the API server adds to a Job's selector and pod template; a copy must not
# carry them, because the target cluster generates its own for the new Job.
_JOB_GENERATED_LABELS = ("controller-uid", "batch.kubernetes.io/controller-uid", "job-name", "batch.kubernetes.io/job-name")


def job_owner(pod: dict) -> tuple[str, str] | None:
    """(name, uid) of the Job that controls `pod`, or None."""
    for owner in pod["metadata"].get("ownerReferences") or ():
        if owner.get("controller") and owner.get("kind") == "Job":
            return owner.get("name", ""), owner.get("uid", "")
    return None


def job_copy_for_target(job: dict, *, origin_region: str, target_region: str) -> dict:
    """Return the body that re-creates `job` in another cluster.

    The copy's pods are pinned to the target region with the
    `carbon-scheduler.io/regions` annotation, so they are bound there and never
    moved again. The selector and the labels the API server generated for the
    original are dropped; the target's API server makes its own.
    """
    metadata = {key: value for key, value in job["metadata"].items() if key not in _DROPPED_METADATA}
    metadata.pop("ownerReferences", None)
    labels = {k: v for k, v in (metadata.get("labels") or {}).items() if k not in _JOB_GENERATED_LABELS}
    metadata["labels"] = labels
    annotations = dict(metadata.get("annotations") or {})
    annotations[MOVED_FROM_REGION] = origin_region
    annotations[MOVED_FROM_UID] = job["metadata"]["uid"]
    metadata["annotations"] = annotations

    spec = copy.deepcopy(job.get("spec") or {})
    spec.pop("selector", None)
    spec.pop("manualSelector", None)
    template = spec.setdefault("template", {})
    template_metadata = template.setdefault("metadata", {})
    template_labels = {
        k: v for k, v in (template_metadata.get("labels") or {}).items() if k not in _JOB_GENERATED_LABELS
    }
    template_metadata["labels"] = template_labels
    template_annotations = dict(template_metadata.get("annotations") or {})
    template_annotations[f"{LABEL_PREFIX}/regions"] = target_region
    template_metadata["annotations"] = template_annotations
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
