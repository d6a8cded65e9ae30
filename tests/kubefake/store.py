"""Object storage of the fake API server: resourceVersions, history and preconditions.

All objects of one server share a single counter, as they share one etcd in a real
cluster: every committed write takes the next integer as its `resourceVersion`
and appends a `Change` to a bounded history. Watches replay that history from a
requested version. Once a change has fallen out of the window (or `compact()` has
dropped it), a watch from before it fails with 410 Expired.

Writes are synchronous and the server runs on one event loop, so no locking is
needed. A write that leaves the object byte-for-byte equal commits nothing, like
etcd's GuaranteedUpdate, so it neither bumps the version nor wakes watchers.
Reconcilers (the Job controller) run after the outermost write returns its
result, so the response shows the object as the client wrote it, and then any
writes they make follow it in the history.
"""

from __future__ import annotations

import asyncio
import bisect
import copy
import random
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import errors
from .defaults import apply_create_defaults, check_name, check_update
from .errors import ApiError
from .patches import apply_patch
from .resources import NODES, PODS, STORED, ResourceType
from .selectors import FieldSelector, LabelSelector

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
_METADATA_ORDER = (
    "name",
    "generateName",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
)
# Metadata a client may change through update or patch; the rest is kept from storage.
_MUTABLE_METADATA = ("labels", "annotations", "ownerReferences", "finalizers")
_NAME_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_MAX_RECONCILE_PASSES = 50
PROPAGATION_POLICIES = ("Orphan", "Background", "Foreground")


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Change:
    """One committed write, as watches see it; `previous` is None for ADDED."""

    resource_version: int
    resource: ResourceType
    type: str
    object: dict[str, Any]
    previous: dict[str, Any] | None


def _ordered_metadata(metadata: dict[str, Any]) -> dict[str, Any]:
    ordered = {key: metadata[key] for key in _METADATA_ORDER if metadata.get(key) not in (None, "", {}, [])}
    ordered.update({key: value for key, value in metadata.items() if key not in ordered and key not in _METADATA_ORDER and key != "managedFields"})
    return ordered


def _canonical(rt: ResourceType, body: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """Return the object with kind, apiVersion and metadata first, as the server writes them."""
    result: dict[str, Any] = {"kind": rt.kind, "apiVersion": rt.api_version, "metadata": _ordered_metadata(metadata)}
    result.update({key: value for key, value in body.items() if key not in ("kind", "apiVersion", "metadata")})
    return result


def _check_type(rt: ResourceType, body: dict[str, Any]) -> None:
    kind, api_version = body.get("kind"), body.get("apiVersion")
    if api_version and api_version != rt.api_version:
        raise errors.bad_request(f"the API version in the data ({api_version}) does not match the expected API version ({rt.api_version})")
    if kind and kind != rt.kind:
        raise errors.bad_request(f"the object provided is unrecognized (must be of type {rt.kind}): kind {kind!r}")


class Store:
    def __init__(
        self,
        *,
        history_limit: int = 1000,
        clock: Callable[[], datetime] | None = None,
        seed: int | None = None,
        graceful_pod_deletion: bool = False,
        binding_requires_node: bool = True,
    ) -> None:
        if history_limit < 1:
            raise ValueError(f"history_limit must be at least 1, got {history_limit}")
        self.history_limit = history_limit
        self.clock = clock or (lambda: datetime.now(UTC))
        self.graceful_pod_deletion = graceful_pod_deletion
        self.binding_requires_node = binding_requires_node
        self._rng = random.Random(seed)
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {rt.plural: {} for rt in STORED}
        self._rv = 0
        self._history: deque[Change] = deque()
        self._compacted_through = 0
        self._listeners: list[Callable[[Change], None]] = []
        self._reconcilers: list[Callable[[], None]] = []
        self._waiters: list[asyncio.Future[None]] = []
        self._depth = 0
        self._committed_in_operation = False

    # Reading.

    @property
    def resource_version(self) -> int:
        return self._rv

    @property
    def oldest_watchable_version(self) -> int:
        """The oldest resourceVersion a watch may start from without getting 410."""
        return self._compacted_through

    def find(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
        stored = self._objects[rt.plural].get(self._key(rt, namespace, name))
        return copy.deepcopy(stored) if stored is not None else None

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        return copy.deepcopy(self._require(rt, namespace, name))

    def list(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
    ) -> list[dict[str, Any]]:
        """Return matching objects sorted by namespace and name; `namespace=None` means all."""
        result = []
        for key in sorted(self._objects[rt.plural]):
            obj = self._objects[rt.plural][key]
            if rt.namespaced and namespace is not None and key[0] != namespace:
                continue
            if labels is not None and not labels.matches(obj["metadata"].get("labels")):
                continue
            if fields is not None and not fields.matches(obj):
                continue
            result.append(copy.deepcopy(obj))
        return result

    def list_page(
        self,
        rt: ResourceType,
        namespace: str | None = None,
        *,
        labels: LabelSelector | None = None,
        fields: FieldSelector | None = None,
        after: tuple[str, str] | None = None,
        limit: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Return up to `limit` (0: all) matching objects whose (namespace, name) key
        sorts after `after`, and how many more match beyond them.

        Only the returned page is copied, so the cost of a page grows with the page
        size and not with the size of the collection.
        """
        objects = self._objects[rt.plural]
        keys = sorted(objects)
        if after is not None:
            keys = keys[bisect.bisect_right(keys, after):]
        page: list[dict[str, Any]] = []
        remaining = 0
        for key in keys:
            obj = objects[key]
            if rt.namespaced and namespace is not None and key[0] != namespace:
                continue
            if labels is not None and not labels.matches(obj["metadata"].get("labels")):
                continue
            if fields is not None and not fields.matches(obj):
                continue
            if limit and len(page) >= limit:
                remaining += 1
            else:
                page.append(obj)
        return [copy.deepcopy(obj) for obj in page], remaining

    def changes_since(self, resource_version: int) -> list[Change]:
        """Return the changes after `resource_version`; raises 410 Expired when some were dropped."""
        if resource_version < self._compacted_through:
            raise errors.expired(resource_version, self._compacted_through)
        return [change for change in self._history if change.resource_version > resource_version]

    def compact(self) -> int:
        """Drop the whole history, as etcd compaction does; returns the version it compacted to."""
        self._history.clear()
        self._compacted_through = self._rv
        return self._rv

    def subscribe(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def unsubscribe(self, listener: Callable[[Change], None]) -> None:
        if listener in self._listeners:
            self._listeners.remove(listener)

    def add_reconciler(self, reconciler: Callable[[], None]) -> None:
        self._reconcilers.append(reconciler)

    def next_change(self) -> asyncio.Future[None]:
        """Return a future that completes at the next committed write."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        return future

    # Writing through the API.

    def create(self, rt: ResourceType, body: dict[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        with self._writing():
            _check_type(rt, body)
            metadata = copy.deepcopy(body.get("metadata") or {})
            if metadata.get("resourceVersion"):
                raise errors.resource_version_on_create()
            namespace = self._request_namespace(rt, namespace, metadata)
            name = metadata.get("name") or ""
            if not name and metadata.get("generateName"):
                name = self._generate_name(rt, namespace, metadata["generateName"])
            check_name(rt, name)
            if self._key(rt, namespace, name) in self._objects[rt.plural]:
                raise errors.already_exists(rt.group, rt.plural, name)
            metadata.update(
                name=name,
                namespace=namespace if rt.namespaced else None,
                uid=self.new_uid(),
                creationTimestamp=format_time(self.clock()),
                generation=1,
            )
            for key in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink"):
                metadata.pop(key, None)
            obj = _canonical(rt, copy.deepcopy(body), metadata)
            apply_create_defaults(rt, obj)
            return self._commit(rt, ADDED, obj, None)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: dict[str, Any],
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        with self._writing():
            _check_type(rt, body)
            current = self._require(rt, namespace, name)
            metadata = body.get("metadata") or {}
            if metadata.get("name") and metadata["name"] != name:
                raise errors.bad_request(f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})")
            self._request_namespace(rt, namespace, metadata)
            self._check_preconditions(rt, current, metadata.get("uid"), metadata.get("resourceVersion"), stale_message=True)
            return self._replace(rt, current, body, subresource=subresource, validate=True)

    def patch(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        body: Any,
        content_type: str,
        *,
        subresource: str | None = None,
    ) -> dict[str, Any]:
        with self._writing():
            current = self._require(rt, namespace, name)
            patched = apply_patch(current, body, content_type)
            # A resourceVersion or uid written by the patch acts as a precondition, as on the real server.
            patched_metadata = patched.get("metadata") or {}
            self._check_preconditions(rt, current, patched_metadata.get("uid"), patched_metadata.get("resourceVersion"), stale_message=True)
            return self._replace(rt, current, patched, subresource=subresource, validate=True)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation: str | None = None,
        grace_period_seconds: int | None = None,
    ) -> tuple[dict[str, Any], bool]:
        """Delete an object; returns its last state and whether it is gone (not only marked)."""
        with self._writing():
            current = self._require(rt, namespace, name)
            self._check_preconditions(rt, current, uid, resource_version, stale_message=False)
            policy = propagation or rt.default_propagation
            if policy not in PROPAGATION_POLICIES:
                raise errors.bad_request(f"invalid propagationPolicy {policy!r}: use one of {', '.join(PROPAGATION_POLICIES)}")
            grace = self._grace_period(rt, current, grace_period_seconds)
            if grace > 0 or current["metadata"].get("finalizers"):
                return self._mark_deleted(rt, current, grace), False
            return self._remove(rt, current, policy), True

    def bind(self, namespace: str, name: str, binding: dict[str, Any]) -> dict[str, Any]:
        """Set a pod's node from a v1 Binding, as the `pods/binding` subresource does."""
        with self._writing():
            metadata = binding.get("metadata") or {}
            if metadata.get("name") and metadata["name"] != name:
                raise errors.bad_request(f"the name of the object ({metadata['name']}) does not match the name on the URL ({name})")
            target = binding.get("target") or {}
            node = target.get("name") or ""
            if not node:
                raise errors.invalid("", "Binding", name, [("target.name", "FieldValueRequired", "Required value")])
            if target.get("kind") not in (None, "", "Node"):
                raise errors.invalid("", "Binding", name, [("target.kind", "FieldValueNotSupported", "must be empty or 'Node'")])
            pod = self._require(PODS, namespace, name)
            self._check_preconditions(PODS, pod, metadata.get("uid"), metadata.get("resourceVersion"), stale_message=False, plural="pods/binding")
            if pod["metadata"].get("deletionTimestamp"):
                raise errors.conflict("", "pods/binding", name, f"pod {name} is being deleted, cannot be assigned to a host")
            assigned = (pod.get("spec") or {}).get("nodeName")
            if assigned:
                raise errors.conflict("", "pods/binding", name, f'pod {name} is already assigned to node "{assigned}"')
            # NOTE: kube-apiserver does not look the node up; it binds to any name. The
            # fake returns 404 for a missing node unless binding_requires_node is False.
            if self.binding_requires_node and self._key(NODES, None, node) not in self._objects[NODES.plural]:
                raise errors.not_found("", "nodes", node)
            bound = copy.deepcopy(pod)
            bound["spec"]["nodeName"] = node
            if metadata.get("annotations"):
                bound["metadata"].setdefault("annotations", {}).update(metadata["annotations"])
            set_condition(bound, "PodScheduled", "True", now=format_time(self.clock()))
            return self._store_modified(PODS, pod, bound)

    # Writing for the test API and controllers: no validation, no preconditions.

    def mutate(self, rt: ResourceType, namespace: str | None, name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        """Apply `change` to a copy of the object and store it, as a controller or kubelet would."""
        with self._writing():
            current = self._require(rt, namespace, name)
            changed = copy.deepcopy(current)
            change(changed)
            return self._store_modified(rt, current, changed)

    def new_uid(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    # Internals.

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "") if rt.namespaced else "", name)

    def _require(self, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any]:
        stored = self._objects[rt.plural].get(self._key(rt, namespace, name))
        if stored is None:
            raise errors.not_found(rt.group, rt.plural, name)
        return stored

    @staticmethod
    def _request_namespace(rt: ResourceType, namespace: str | None, metadata: dict[str, Any]) -> str:
        if not rt.namespaced:
            return ""
        in_body = metadata.get("namespace") or ""
        if namespace is None:
            return in_body or "default"
        if in_body and in_body != namespace:
            raise errors.bad_request("the namespace of the provided object does not match the namespace sent on the request")
        return namespace

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        for _ in range(100):
            name = prefix + "".join(self._rng.choice(_NAME_SUFFIX_ALPHABET) for _ in range(5))
            if self._key(rt, namespace, name) not in self._objects[rt.plural]:
                return name
        raise errors.ApiError(500, "InternalError", f"could not generate a unique name for generateName {prefix!r}")

    @staticmethod
    def _check_preconditions(
        rt: ResourceType,
        current: dict[str, Any],
        uid: str | None,
        resource_version: str | None,
        *,
        stale_message: bool,
        plural: str | None = None,
    ) -> None:
        name = current["metadata"]["name"]
        plural = plural or rt.plural
        if uid and uid != current["metadata"]["uid"]:
            cause = f"Precondition failed: UID in precondition: {uid}, UID in object meta: {current['metadata']['uid']}"
            raise errors.conflict(rt.group, plural, name, cause)
        if resource_version and resource_version != current["metadata"]["resourceVersion"]:
            if stale_message:
                raise errors.conflict(rt.group, plural, name, errors.STALE_OBJECT)
            cause = (
                f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                f"ResourceVersion in object meta: {current['metadata']['resourceVersion']}"
            )
            raise errors.conflict(rt.group, plural, name, cause)

    def _replace(
        self,
        rt: ResourceType,
        current: dict[str, Any],
        body: dict[str, Any],
        *,
        subresource: str | None,
        validate: bool,
    ) -> dict[str, Any]:
        if subresource == "status":
            new = copy.deepcopy(current)
            new["status"] = copy.deepcopy(body.get("status") or {})
        elif subresource is not None:
            raise errors.method_not_allowed(f"update of {rt.plural}/{subresource}")
        else:
            metadata = copy.deepcopy(current["metadata"])
            incoming = body.get("metadata") or {}
            for key in _MUTABLE_METADATA:
                if incoming.get(key) is not None:
                    metadata[key] = copy.deepcopy(incoming[key])
                else:
                    metadata.pop(key, None)
            new = _canonical(rt, copy.deepcopy(body), metadata)
            if rt.has_status:
                # The main resource ignores status; only the status subresource writes it.
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
            if validate:
                check_update(rt, current, new)
        return self._store_modified(rt, current, new)

    def _store_modified(self, rt: ResourceType, current: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
        new["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        if "spec" in current and new.get("spec") != current.get("spec"):
            new["metadata"]["generation"] = current["metadata"].get("generation", 1) + 1
        new["metadata"] = _ordered_metadata(new["metadata"])
        if new == current:
            return copy.deepcopy(current)
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers") and self._grace_period(rt, new, None) == 0:
            # The last finalizer is gone, so the pending deletion completes now.
            return self._remove(rt, new, "Background")
        return self._commit(rt, MODIFIED, new, current)

    def _grace_period(self, rt: ResourceType, obj: dict[str, Any], requested: int | None) -> int:
        if rt is not PODS or not self.graceful_pod_deletion:
            return 0
        spec, status = obj.get("spec") or {}, obj.get("status") or {}
        # An unbound or finished pod has no kubelet to wait for, so it goes at once.
        if not spec.get("nodeName") or status.get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is not None:
            return max(requested, 0)
        pending = obj["metadata"].get("deletionGracePeriodSeconds")
        if pending is not None:
            return int(pending)
        return int(spec.get("terminationGracePeriodSeconds", 30))

    def _mark_deleted(self, rt: ResourceType, current: dict[str, Any], grace: int) -> dict[str, Any]:
        marked = copy.deepcopy(current)
        if not marked["metadata"].get("deletionTimestamp") or grace < marked["metadata"].get("deletionGracePeriodSeconds", grace + 1):
            marked["metadata"]["deletionTimestamp"] = format_time(self.clock() + timedelta(seconds=grace))
            marked["metadata"]["deletionGracePeriodSeconds"] = grace
        new_metadata = _ordered_metadata(marked["metadata"])
        marked["metadata"] = new_metadata
        if marked == current:
            return copy.deepcopy(current)
        return self._commit(rt, MODIFIED, marked, current)

    def _remove(self, rt: ResourceType, current: dict[str, Any], policy: str) -> dict[str, Any]:
        owner_uid = current["metadata"]["uid"]
        namespace = current["metadata"].get("namespace")
        dependents = [
            (dependent_rt, dependent)
            for dependent_rt in STORED
            for dependent in list(self._objects[dependent_rt.plural].values())
            if (not dependent_rt.namespaced or dependent["metadata"].get("namespace") == namespace)
            and any(ref.get("uid") == owner_uid for ref in dependent["metadata"].get("ownerReferences") or [])
        ]
        if policy == "Foreground":
            # NOTE: the real garbage collector keeps the owner, marked with the
            # foregroundDeletion finalizer, until its dependents are gone. Here the
            # dependents go first and the owner right after, in one step.
            self._delete_dependents(dependents)
        final = copy.deepcopy(current)
        removed = self._commit(rt, DELETED, final, current)
        if policy == "Background":
            self._delete_dependents(dependents)
        elif policy == "Orphan":
            for dependent_rt, dependent in dependents:
                orphan = copy.deepcopy(dependent)
                orphan["metadata"]["ownerReferences"] = [
                    ref for ref in orphan["metadata"].get("ownerReferences") or [] if ref.get("uid") != owner_uid
                ]
                self._store_modified(dependent_rt, dependent, orphan)
        return removed

    def _delete_dependents(self, dependents: list[tuple[ResourceType, dict[str, Any]]]) -> None:
        for dependent_rt, dependent in dependents:
            key = self._key(dependent_rt, dependent["metadata"].get("namespace"), dependent["metadata"]["name"])
            if key in self._objects[dependent_rt.plural]:
                self._remove(dependent_rt, self._objects[dependent_rt.plural][key], "Background")

    def _commit(self, rt: ResourceType, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None) -> dict[str, Any]:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        key = self._key(rt, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if event_type == DELETED:
            self._objects[rt.plural].pop(key, None)
        else:
            self._objects[rt.plural][key] = obj
        change = Change(self._rv, rt, event_type, copy.deepcopy(obj), copy.deepcopy(previous) if previous else None)
        self._history.append(change)
        while len(self._history) > self.history_limit:
            self._compacted_through = self._history.popleft().resource_version
        self._committed_in_operation = True
        for listener in list(self._listeners):
            listener(change)
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
        return copy.deepcopy(obj)

    @contextmanager
    def _writing(self) -> Iterator[None]:
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        # Reached only when the write succeeded; a failed write raised above.
        if self._depth == 0 and self._committed_in_operation:
            self._reconcile()

    def _reconcile(self) -> None:
        self._depth += 1
        try:
            for _ in range(_MAX_RECONCILE_PASSES):
                self._committed_in_operation = False
                for reconciler in self._reconcilers:
                    reconciler()
                if not self._committed_in_operation:
                    return
            raise ApiError(500, "InternalError", f"controllers did not settle after {_MAX_RECONCILE_PASSES} passes")
        finally:
            self._depth -= 1
            self._committed_in_operation = False


def set_condition(obj: dict[str, Any], condition_type: str, status: str, *, now: str, reason: str | None = None, message: str | None = None) -> None:
    """Set a status condition, keeping lastTransitionTime when the status is unchanged."""
    conditions = obj.setdefault("status", {}).setdefault("conditions", [])
    for condition in conditions:
        if condition.get("type") == condition_type:
            if condition.get("status") != status:
                condition["lastTransitionTime"] = now
            condition["status"] = status
            if reason is not None:
                condition["reason"] = reason
            if message is not None:
                condition["message"] = message
            return
    condition: dict[str, Any] = {"type": condition_type, "status": status, "lastProbeTime": None, "lastTransitionTime": now}
    if reason is not None:
        condition["reason"] = reason
    if message is not None:
        condition["message"] = message
    conditions.append(condition)
