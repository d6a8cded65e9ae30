"""Defaulting and validation that the API server applies on create and update.

Only the parts a scheduler can observe are modelled. A pod gets the defaults that
kube-apiserver and its default admission plugins add (scheduler name, restart and
DNS policy, grace period, the two `NoExecute` tolerations of
DefaultTolerationSeconds, requests copied from limits, QoS class, phase `Pending`).
A Job gets its selector and controller labels, parallelism, completions and
backoff limit. Updates to a pod's spec are limited to the fields the real server
lets change, and a Job's template and selector cannot change.
"""

from __future__ import annotations

import copy
import re
from typing import Any

from carbon_scheduler.quantity import QuantityError, parse_quantity

from .errors import invalid
from .resources import JOBS, NAMESPACES, PODS, ResourceType

_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_JOB_UID_LABELS = ("batch.kubernetes.io/controller-uid", "controller-uid")
_JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")
DEFAULT_TOLERATIONS = (
    {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
    {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
)
_MUTABLE_POD_FIELDS = (
    "spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,"
    "`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` "
    "(only additions to existing tolerations),`spec.terminationGracePeriodSeconds` "
    "(allow it to be set to 1 if it was previously negative)"
)


def check_name(rt: ResourceType, name: str) -> None:
    if not name:
        raise invalid(rt.group, rt.kind, "", [("metadata.name", "FieldValueRequired", "Required value: name or generateName is required")])
    if len(name) > 253 or _DNS_SUBDOMAIN.match(name) is None:
        message = (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case '
            "alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
        )
        raise invalid(rt.group, rt.kind, name, [("metadata.name", "FieldValueInvalid", message)])


def apply_create_defaults(rt: ResourceType, obj: dict[str, Any]) -> None:
    """Default and validate a new object in place; `metadata.uid` and name are already set."""
    name = obj["metadata"]["name"]
    if rt is PODS:
        spec = obj.setdefault("spec", {})
        _validate_pod_spec(rt, name, spec, "spec")
        _default_pod_spec(spec)
        obj["status"] = {"phase": "Pending", "qosClass": qos_class(spec)}
    elif rt is JOBS:
        _default_job(obj)
    elif rt is NAMESPACES:
        obj["metadata"].setdefault("labels", {})["kubernetes.io/metadata.name"] = name
        obj.setdefault("spec", {"finalizers": ["kubernetes"]})
        obj["status"] = {"phase": "Active"}


def _validate_pod_spec(rt: ResourceType, name: str, spec: dict[str, Any], path: str) -> None:
    containers = spec.get("containers") or []
    if not containers:
        raise invalid(rt.group, rt.kind, name, [(f"{path}.containers", "FieldValueRequired", "Required value")])
    for list_name in ("initContainers", "containers"):
        for index, container in enumerate(spec.get(list_name) or []):
            where = f"{path}.{list_name}[{index}]"
            if not container.get("name"):
                raise invalid(rt.group, rt.kind, name, [(f"{where}.name", "FieldValueRequired", "Required value")])
            if not container.get("image"):
                raise invalid(rt.group, rt.kind, name, [(f"{where}.image", "FieldValueRequired", "Required value")])
            for section in ("requests", "limits"):
                for resource, quantity in ((container.get("resources") or {}).get(section) or {}).items():
                    try:
                        parse_quantity(quantity)
                    except QuantityError as error:
                        field = f"{where}.resources.{section}[{resource}]"
                        raise invalid(rt.group, rt.kind, name, [(field, "FieldValueInvalid", f'Invalid value: "{quantity}": {error}')]) from error


def _default_pod_spec(spec: dict[str, Any]) -> None:
    spec.setdefault("restartPolicy", "Always")
    spec.setdefault("terminationGracePeriodSeconds", 30)
    spec.setdefault("dnsPolicy", "ClusterFirst")
    spec.setdefault("serviceAccountName", "default")
    spec.setdefault("serviceAccount", spec["serviceAccountName"])
    spec.setdefault("securityContext", {})
    spec.setdefault("schedulerName", "default-scheduler")
    spec.setdefault("enableServiceLinks", True)
    spec.setdefault("priority", 0)
    spec.setdefault("preemptionPolicy", "PreemptLowerPriority")
    tolerations = spec.setdefault("tolerations", [])
    for default in DEFAULT_TOLERATIONS:
        # DefaultTolerationSeconds adds each only when no toleration for that key and effect exists.
        if not any(t.get("key") == default["key"] and t.get("effect") in (None, "", "NoExecute") for t in tolerations):
            tolerations.append(dict(default))
    for list_name in ("initContainers", "containers"):
        for container in spec.get(list_name) or []:
            image = container.get("image", "")
            tag = image.rsplit("/", 1)[-1]
            latest = "@" not in tag and (":" not in tag or tag.endswith(":latest"))
            container.setdefault("imagePullPolicy", "Always" if latest else "IfNotPresent")
            container.setdefault("terminationMessagePath", "/dev/termination-log")
            container.setdefault("terminationMessagePolicy", "File")
            resources = container.setdefault("resources", {})
            limits = resources.get("limits") or {}
            if limits:
                requests = resources.setdefault("requests", {})
                for resource, quantity in limits.items():
                    requests.setdefault(resource, quantity)


def qos_class(spec: dict[str, Any]) -> str:
    """Compute the pod QoS class from the defaulted containers' CPU and memory."""
    containers = list(spec.get("initContainers") or []) + list(spec.get("containers") or [])
    any_set = False
    guaranteed = True
    for container in containers:
        resources = container.get("resources") or {}
        requests = resources.get("requests") or {}
        limits = resources.get("limits") or {}
        for resource in ("cpu", "memory"):
            if resource in requests or resource in limits:
                any_set = True
            if resource not in limits:
                guaranteed = False
            elif resource in requests and parse_quantity(requests[resource]) != parse_quantity(limits[resource]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def _default_job(job: dict[str, Any]) -> None:
    name = job["metadata"]["name"]
    uid = job["metadata"]["uid"]
    spec = job.setdefault("spec", {})
    template = spec.get("template") or {}
    pod_spec = template.get("spec") or {}
    _validate_pod_spec(JOBS, name, pod_spec, "spec.template.spec")

    restart = pod_spec.get("restartPolicy")
    if restart not in ("OnFailure", "Never"):
        message = (
            'Required value: valid values: "OnFailure", "Never"'
            if not restart
            else f'Unsupported value: "{restart}": supported values: "OnFailure", "Never"'
        )
        cause = "FieldValueRequired" if not restart else "FieldValueNotSupported"
        raise invalid(JOBS.group, JOBS.kind, name, [("spec.template.spec.restartPolicy", cause, message)])
    _default_pod_spec(pod_spec)

    spec.setdefault("parallelism", 1)
    spec.setdefault("completions", 1)
    spec.setdefault("backoffLimit", 6)
    spec.setdefault("completionMode", "NonIndexed")
    spec.setdefault("suspend", False)
    spec.setdefault("podReplacementPolicy", "TerminatingOrFailed")

    if not spec.get("manualSelector"):
        spec["selector"] = {"matchLabels": {_JOB_UID_LABELS[0]: uid}}
        labels = template.setdefault("metadata", {}).setdefault("labels", {})
        for key in _JOB_UID_LABELS:
            labels[key] = uid
        for key in _JOB_NAME_LABELS:
            labels[key] = name

    template["spec"] = pod_spec
    spec["template"] = template
    job["status"] = {}


def check_update(rt: ResourceType, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Reject spec changes that the real server forbids; raises a 422 `ApiError`."""
    name = old["metadata"]["name"]
    if rt is PODS:
        if _masked_pod_spec(old.get("spec") or {}) != _masked_pod_spec(new.get("spec") or {}):
            raise invalid(rt.group, rt.kind, name, [("spec", "FieldValueForbidden", _MUTABLE_POD_FIELDS.removeprefix("spec: "))])
        old_tolerations = (old.get("spec") or {}).get("tolerations") or []
        new_tolerations = (new.get("spec") or {}).get("tolerations") or []
        if any(toleration not in new_tolerations for toleration in old_tolerations):
            raise invalid(rt.group, rt.kind, name, [("spec.tolerations", "FieldValueForbidden", "Forbidden: existing toleration can not be modified except its tolerationSeconds")])
    elif rt is JOBS:
        for field in ("template", "selector"):
            if (old.get("spec") or {}).get(field) != (new.get("spec") or {}).get(field):
                raise invalid(rt.group, rt.kind, name, [(f"spec.{field}", "FieldValueInvalid", "Invalid value: field is immutable")])


def _masked_pod_spec(spec: dict[str, Any]) -> dict[str, Any]:
    masked = copy.deepcopy(spec)
    for field in ("activeDeadlineSeconds", "tolerations", "schedulingGates"):
        masked.pop(field, None)
    for list_name in ("initContainers", "containers"):
        for container in masked.get(list_name) or []:
            container.pop("image", None)
    return masked
