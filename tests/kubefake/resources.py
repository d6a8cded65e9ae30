"""The API resources that the fake serves, and how their paths and fields map.

Each `ResourceType` names a resource the way an API path and an RBAC rule name it
(group, version, plural) and the way a body names it (kind). `field_labels` lists the
field selector labels that the real API server accepts for that resource, each with
a getter that returns the value as a string, with "" for a missing field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

FieldGetter = Callable[[dict[str, Any]], str]


def _field(*path: str) -> FieldGetter:
    def get(obj: dict[str, Any]) -> str:
        value: Any = obj
        for key in path:
            if not isinstance(value, dict):
                return ""
            value = value.get(key)
        if value is None:
            return ""
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    return get


_META_FIELDS: dict[str, FieldGetter] = {
    "metadata.name": _field("metadata", "name"),
    "metadata.namespace": _field("metadata", "namespace"),
}


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool
    subresources: frozenset[str] = frozenset()
    field_labels: Mapping[str, FieldGetter] = field(default_factory=lambda: dict(_META_FIELDS))
    # `propagationPolicy` when a delete request sets none: batch/v1 Jobs orphan their
    # pods by default, for compatibility with older clients; most kinds delete them.
    default_propagation: str = "Background"
    # Kinds whose DELETE response body is the deleted object rather than a Status.
    returns_deleted_object: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified(self) -> str:
        """The resource as `plural.group`, as messages and RBAC rules print it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources


PODS = ResourceType(
    "",
    "v1",
    "pods",
    "Pod",
    True,
    frozenset({"status", "binding"}),
    {
        **_META_FIELDS,
        "spec.nodeName": _field("spec", "nodeName"),
        "spec.schedulerName": _field("spec", "schedulerName"),
        "spec.serviceAccountName": _field("spec", "serviceAccountName"),
        "spec.restartPolicy": _field("spec", "restartPolicy"),
        "spec.hostNetwork": _field("spec", "hostNetwork"),
        "status.phase": _field("status", "phase"),
        "status.podIP": _field("status", "podIP"),
        "status.nominatedNodeName": _field("status", "nominatedNodeName"),
    },
    returns_deleted_object=True,
)
NODES = ResourceType(
    "",
    "v1",
    "nodes",
    "Node",
    False,
    frozenset({"status"}),
    {**_META_FIELDS, "spec.unschedulable": _field("spec", "unschedulable")},
)
NAMESPACES = ResourceType(
    "", "v1", "namespaces", "Namespace", False, frozenset({"status"}),
    {**_META_FIELDS, "status.phase": _field("status", "phase")},
)
EVENTS = ResourceType(
    "",
    "v1",
    "events",
    "Event",
    True,
    frozenset(),
    {
        **_META_FIELDS,
        "involvedObject.kind": _field("involvedObject", "kind"),
        "involvedObject.namespace": _field("involvedObject", "namespace"),
        "involvedObject.name": _field("involvedObject", "name"),
        "involvedObject.uid": _field("involvedObject", "uid"),
        "involvedObject.apiVersion": _field("involvedObject", "apiVersion"),
        "involvedObject.resourceVersion": _field("involvedObject", "resourceVersion"),
        "involvedObject.fieldPath": _field("involvedObject", "fieldPath"),
        "reason": _field("reason"),
        "reportingComponent": _field("reportingComponent"),
        "source": _field("source", "component"),
        "type": _field("type"),
    },
)
# The legacy `bindings` collection: POST a Binding named after the pod.
BINDINGS = ResourceType("", "v1", "bindings", "Binding", True)
JOBS = ResourceType(
    "batch",
    "v1",
    "jobs",
    "Job",
    True,
    frozenset({"status"}),
    {**_META_FIELDS, "status.successful": _field("status", "succeeded")},
    default_propagation="Orphan",
)
LEASES = ResourceType("coordination.k8s.io", "v1", "leases", "Lease", True)

STORED = (PODS, NODES, NAMESPACES, EVENTS, JOBS, LEASES)
ALL = (*STORED, BINDINGS)
_BY_PATH = {(rt.group, rt.version, rt.plural): rt for rt in ALL}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def by_plural(plural: str) -> ResourceType:
    """Return the stored resource type named by `plural` (`pods`, `jobs`, ...), for the test API."""
    for rt in STORED:
        if rt.plural == plural or rt.qualified == plural:
            return rt
    names = ", ".join(rt.plural for rt in STORED)
    raise ValueError(f"unknown resource {plural!r}: the fake serves {names}")
