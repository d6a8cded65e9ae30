"""`FakeApiServer`: one region's Kubernetes API over real HTTP on 127.0.0.1.

Tests point kubernetes-asyncio at it through a kubeconfig (see `kubeconfig.py`), so
the real client code runs end to end. Every request passes these steps, in order:

1. recorded in `requests` (verb, resource, namespace, name, final status code);
2. held by any matching `faults.delay`;
3. authenticated: a missing or wrong bearer token gets 401;
4. authorized against `rbac` when it is set: anything outside it gets 403;
5. failed by any matching `faults.fail_next`;
6. served from `store`, where the Job controller (and, if enabled, a kubelet
   stand-in) react to each write.

The synchronous methods below (`add_node`, `create_pod`, `set_pod_phase`, ...)
change the same store, so open watches see them as they would see another
client's writes. `stop()` closes the listening socket and every connection, and
`start()` listens again on the same port with all state kept, as an API server
restart backed by the same etcd.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from aiohttp import web

from . import errors
from .controllers import JobController
from .handlers import dispatch, json_response
from .kubelet import KubeletLite, apply_phase
from .faults import Faults
from .patches import MERGE_PATCH
from .rbac import RbacPolicy, forbidden_reason
from .resources import ALL, NAMESPACES, NODES, PODS, ResourceType, by_plural
from .routing import RequestInfo, parse_request
from .selectors import FieldSelector, LabelSelector
from .store import Store, format_time
from .watch import Stop, Watcher

DEFAULT_USER = "system:serviceaccount:carbon-scheduler:carbon-scheduler"
# The Kubernetes release whose behaviour the fake follows, as /version reports it.
KUBERNETES_VERSION = {
    "major": "1",
    "minor": "33",
    "gitVersion": "v1.33.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-23T00:00:00Z",
    "goVersion": "go1.24.2",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PUBLIC_PATHS = ("/healthz", "/livez", "/readyz", "/version")
_INITIAL_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


@dataclass
class RequestRecord:
    """One received request; `status` is the HTTP status code of the response."""

    method: str
    path: str
    query: dict[str, str]
    verb: str
    group: str
    resource: str  # with any subresource, as RBAC names it: "pods/binding"
    namespace: str
    name: str
    status: int | None = None


@dataclass
class _Waiters:
    futures: list[asyncio.Future[None]] = field(default_factory=list)

    def wake(self) -> None:
        futures, self.futures = self.futures, []
        for future in futures:
            if not future.done():
                future.set_result(None)

    def next(self) -> asyncio.Future[None]:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.futures.append(future)
        return future


def _resource(resource: str | ResourceType) -> ResourceType:
    return resource if isinstance(resource, ResourceType) else by_plural(resource)


class FakeApiServer:
    """A fake API server for one region; use `async with FakeApiServer(...)` or `start()`/`stop()`."""

    def __init__(
        self,
        region: str = "eu-west",
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        token: str | None = None,
        user: str = DEFAULT_USER,
        history_limit: int = 1000,
        bookmark_interval_seconds: float = 60.0,
        clock: Callable[[], datetime] | None = None,
        seed: int | None = None,
        job_controller: bool = True,
        run_bound_pods: bool = False,
        graceful_pod_deletion: bool = False,
        binding_requires_node: bool = True,
    ) -> None:
        """Create a stopped server.

        `history_limit` is the number of changes a watch can resume across before it
        gets 410. `bookmark_interval_seconds` is the quiet time after which a watch
        with bookmarks gets one (kube-apiserver uses about a minute).
        `run_bound_pods` marks bound pods Running at once, as a kubelet would.
        `graceful_pod_deletion` keeps a deleted bound pod, with a deletionTimestamp,
        until `finish_pod_deletion` or a terminal phase removes it.
        """
        self.region = region
        self.host = host
        self._port = port
        self.token = token if token is not None else secrets.token_hex(16)
        self.user = user
        self.bookmark_interval_seconds = bookmark_interval_seconds
        self.job_controller = job_controller
        self.run_bound_pods = run_bound_pods
        self.store = Store(
            history_limit=history_limit,
            clock=clock,
            seed=seed,
            graceful_pod_deletion=graceful_pod_deletion,
            binding_requires_node=binding_requires_node,
        )
        self.faults = Faults()
        self.rbac: RbacPolicy | None = None
        self.requests: list[RequestRecord] = []
        self._watchers: set[Watcher] = set()
        self._watch_waiters = _Waiters()
        self._runner: web.AppRunner | None = None
        JobController(self.store, enabled=lambda: self.job_controller)
        KubeletLite(self.store, enabled=lambda: self.run_bound_pods)
        for namespace in _INITIAL_NAMESPACES:
            self.store.create(NAMESPACES, {"metadata": {"name": namespace}})

    # Lifecycle.

    @property
    def port(self) -> int:
        if self._port == 0:
            raise RuntimeError(f"fake API server {self.region!r} has no port until start() has run")
        return self._port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._runner is not None

    async def start(self) -> None:
        """Listen on the configured port, or on the port of the previous start."""
        if self._runner is not None:
            raise RuntimeError(f"fake API server {self.region!r} is already running on {self.url}")
        app = web.Application(client_max_size=8 * 2**20)
        app.router.add_route("*", "/{path:.*}", self._handle)
        # handler_cancellation ends a watch handler as soon as its client disconnects.
        runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self._port)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        if self._port == 0:
            self._port = runner.addresses[0][1]
        self._runner = runner

    async def stop(self) -> None:
        """Stop listening and drop every connection; state is kept for the next `start()`."""
        if self._runner is None:
            return
        for watcher in list(self._watchers):
            watcher.stop(Stop.ABORT)
        runner, self._runner = self._runner, None
        await runner.cleanup()

    async def __aenter__(self) -> FakeApiServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # Watches.

    @property
    def open_watches(self) -> int:
        return len(self._watchers)

    def register_watcher(self, watcher: Watcher) -> None:
        self._watchers.add(watcher)
        self._watch_waiters.wake()

    def unregister_watcher(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)
        self._watch_waiters.wake()

    async def wait_for_watches(self, count: int, *, resource: str | None = None, timeout_seconds: float = 5.0) -> None:
        """Wait until at least `count` watches (of `resource`, if given) are open."""

        def enough() -> bool:
            return sum(1 for w in self._watchers if resource is None or w.rt.plural == resource) >= count

        await self._wait(enough, self._watch_waiters.next, timeout_seconds, f"{count} open watches of {resource or 'any resource'}")

    def drop_watches(self, *, graceful: bool = False) -> int:
        """End every open watch: by closing its connection mid-stream, or cleanly if `graceful`."""
        for watcher in list(self._watchers):
            watcher.stop(Stop.END if graceful else Stop.ABORT)
        return len(self._watchers)

    def send_bookmarks(self) -> int:
        """Send a BOOKMARK at the current resourceVersion on every watch that allows them."""
        version = self.store.resource_version
        return sum(1 for watcher in list(self._watchers) if watcher.request_bookmark(version))

    def compact(self) -> int:
        """Drop the watch history, so resuming from any older resourceVersion gets 410."""
        return self.store.compact()

    # Waiting on state.

    async def wait_for(self, predicate: Callable[[FakeApiServer], bool], *, timeout_seconds: float = 5.0, what: str = "the condition") -> None:
        """Wait until `predicate(self)` holds, re-checking after every committed write."""
        await self._wait(lambda: predicate(self), self.store.next_change, timeout_seconds, what)

    async def _wait(self, ready: Callable[[], bool], next_event: Callable[[], asyncio.Future[None]], timeout_seconds: float, what: str) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_seconds
        while not ready():
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"fake API server {self.region!r}: timed out after {timeout_seconds} s waiting for {what}")
            future = next_event()
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                continue

    # Recorded requests.

    def request_count(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        status: int | None = None,
        path: str | None = None,
    ) -> int:
        """Count recorded requests matching every given filter; `path` matches a substring."""
        return sum(
            1
            for record in self.requests
            if (verb is None or record.verb == verb)
            and (resource is None or record.resource == resource)
            and (namespace is None or record.namespace == namespace)
            and (status is None or record.status == status)
            and (path is None or path in record.path)
        )

    def used_permissions(self) -> set[tuple[str, str, str]]:
        """Return every (verb, API group, resource[/subresource]) that a resource request used."""
        return {(r.verb, r.group, r.resource) for r in self.requests if r.resource}

    def clear_requests(self) -> None:
        self.requests.clear()

    # Driving the cluster state directly.

    def add_node(
        self,
        name: str,
        *,
        cpu: str | int = "4",
        memory: str = "16Gi",
        pods: int = 110,
        ephemeral_storage: str = "100Gi",
        extended: Mapping[str, str | int] | None = None,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, Any]] = (),
        ready: bool = True,
        unschedulable: bool = False,
    ) -> dict[str, Any]:
        """Add a node with the given allocatable resources; capacity equals allocatable."""
        allocatable = {"cpu": str(cpu), "ephemeral-storage": ephemeral_storage, "memory": memory, "pods": str(pods)}
        allocatable.update({key: str(value) for key, value in (extended or {}).items()})
        spec: dict[str, Any] = {"taints": [dict(taint) for taint in taints]}
        if unschedulable:
            spec["unschedulable"] = True
            spec["taints"].append({"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule", "timeAdded": self._now()})
        machine_id = self.store.new_uid().replace("-", "")
        node = {
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/arch": "amd64",
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "topology.kubernetes.io/region": self.region,
                    **(labels or {}),
                },
            },
            "spec": {key: value for key, value in spec.items() if value},
            "status": {
                "capacity": dict(allocatable),
                "allocatable": allocatable,
                "conditions": [],
                "addresses": [{"type": "Hostname", "address": name}],
                "nodeInfo": {
                    "machineID": machine_id,
                    "systemUUID": machine_id,
                    "bootID": self.store.new_uid(),
                    "kernelVersion": "6.1.0-fake",
                    "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "containerRuntimeVersion": "containerd://1.7.0",
                    "kubeletVersion": KUBERNETES_VERSION["gitVersion"],
                    "kubeProxyVersion": KUBERNETES_VERSION["gitVersion"],
                    "operatingSystem": "linux",
                    "architecture": "amd64",
                },
            },
        }
        self.store.create(NODES, node)
        return self.set_node_ready(name, ready)

    def set_node_ready(self, name: str, ready: bool) -> dict[str, Any]:
        """Set the Ready condition and the not-ready taints, as the node lifecycle controller does."""
        now = self._now()

        def change(node: dict[str, Any]) -> None:
            conditions = {
                "MemoryPressure": ("False", "KubeletHasSufficientMemory"),
                "DiskPressure": ("False", "KubeletHasNoDiskPressure"),
                "PIDPressure": ("False", "KubeletHasSufficientPID"),
                "Ready": ("True", "KubeletReady") if ready else ("False", "KubeletNotReady"),
            }
            existing = {c["type"]: c for c in node["status"].get("conditions") or []}
            node["status"]["conditions"] = [
                {
                    "type": kind,
                    "status": status,
                    "lastHeartbeatTime": now,
                    "lastTransitionTime": existing[kind]["lastTransitionTime"] if kind in existing and existing[kind]["status"] == status else now,
                    "reason": reason,
                }
                for kind, (status, reason) in conditions.items()
            ]
            spec = node.setdefault("spec", {})
            taints = [t for t in spec.get("taints") or [] if t.get("key") != "node.kubernetes.io/not-ready"]
            if not ready:
                taints += [
                    {"key": "node.kubernetes.io/not-ready", "effect": effect, "timeAdded": now}
                    for effect in ("NoSchedule", "NoExecute")
                ]
            if taints:
                spec["taints"] = taints
            else:
                spec.pop("taints", None)

        return self.store.mutate(NODES, None, name, change)

    def create_pod(
        self,
        name: str,
        *,
        namespace: str = "default",
        scheduler_name: str = "carbon-scheduler",
        labels: Mapping[str, str] | None = None,
        annotations: Mapping[str, str] | None = None,
        requests: Mapping[str, str] | None = None,
        limits: Mapping[str, str] | None = None,
        node_name: str | None = None,
        owner: Mapping[str, Any] | None = None,
        spec: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Create a one-container pod as a client would; `owner` becomes its controller reference."""
        resources: dict[str, Any] = {}
        if requests:
            resources["requests"] = dict(requests)
        if limits:
            resources["limits"] = dict(limits)
        pod_spec: dict[str, Any] = {
            "schedulerName": scheduler_name,
            "containers": [{"name": "main", "image": "busybox:1.36", "resources": resources}],
            **(spec or {}),
        }
        if node_name:
            pod_spec["nodeName"] = node_name
        metadata: dict[str, Any] = {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})}
        if owner is not None:
            metadata["ownerReferences"] = [
                {
                    "apiVersion": owner["apiVersion"],
                    "kind": owner["kind"],
                    "name": owner["metadata"]["name"],
                    "uid": owner["metadata"]["uid"],
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ]
        return self.store.create(PODS, {"metadata": metadata, "spec": pod_spec}, namespace=namespace)

    def set_pod_phase(
        self,
        name: str,
        phase: str,
        *,
        namespace: str = "default",
        exit_code: int | None = None,
        reason: str | None = None,
        message: str | None = None,
    ) -> dict[str, Any]:
        """Write the status a kubelet reports for `phase`; the pod must be bound unless Pending."""
        now = self._now()
        return self.store.mutate(
            PODS, namespace, name, lambda pod: apply_phase(pod, phase, now=now, exit_code=exit_code, reason=reason, message=message)
        )

    def bind_pod(self, name: str, node: str, *, namespace: str = "default") -> dict[str, Any]:
        """Bind a pod as another scheduler would, through the same rules as `pods/binding`."""
        return self.store.bind(namespace, name, {"target": {"kind": "Node", "name": node}})

    def finish_pod_deletion(self, name: str, *, namespace: str = "default") -> dict[str, Any]:
        """Remove a pod that graceful deletion left terminating, as its kubelet would."""
        final, _ = self.store.delete(PODS, namespace, name, grace_period_seconds=0)
        return final

    def create(self, resource: str | ResourceType, body: Mapping[str, Any], *, namespace: str | None = None) -> dict[str, Any]:
        return self.store.create(_resource(resource), dict(body), namespace=namespace)

    def get(self, resource: str | ResourceType, name: str, *, namespace: str | None = "default") -> dict[str, Any]:
        """Return a copy of the object; raises `ApiError` (404) when it does not exist."""
        return self.store.get(_resource(resource), namespace, name)

    def find(self, resource: str | ResourceType, name: str, *, namespace: str | None = "default") -> dict[str, Any] | None:
        return self.store.find(_resource(resource), namespace, name)

    def list(
        self,
        resource: str | ResourceType,
        *,
        namespace: str | None = None,
        label_selector: str = "",
        field_selector: str = "",
    ) -> list[dict[str, Any]]:
        rt = _resource(resource)
        return self.store.list(rt, namespace, labels=LabelSelector(label_selector), fields=FieldSelector(field_selector, rt))

    def patch(
        self,
        resource: str | ResourceType,
        name: str,
        patch: Any,
        *,
        namespace: str | None = "default",
        content_type: str = MERGE_PATCH,
    ) -> dict[str, Any]:
        return self.store.patch(_resource(resource), namespace, name, patch, content_type)

    def delete(
        self,
        resource: str | ResourceType,
        name: str,
        *,
        namespace: str | None = "default",
        propagation: str | None = None,
    ) -> dict[str, Any]:
        final, _ = self.store.delete(_resource(resource), namespace, name, propagation=propagation)
        return final

    @property
    def resource_version(self) -> int:
        return self.store.resource_version

    def _now(self) -> str:
        return format_time(self.store.clock())

    # HTTP.

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        info = parse_request(request.method, request.path, request.query)
        record = RequestRecord(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            verb=info.verb,
            group=info.group,
            resource=info.resource_name if info.is_resource else "",
            namespace=info.namespace,
            name=info.name,
        )
        self.requests.append(record)
        try:
            delay = self.faults.take_delay(info)
            if delay:
                await asyncio.sleep(delay)
            self._authenticate(request, info)
            if not info.is_resource:
                response = self._non_resource(info)
            else:
                self._authorize(info)
                failure = self.faults.take_failure(info)
                if failure is not None:
                    raise failure
                # The status is known once headers go out; a watch streams after that.
                record.status = 200
                response = await dispatch(self, request, info)
        except errors.ApiError as error:
            response = json_response(error.status(), status=error.code, headers=error.headers or None)
        record.status = response.status
        return response

    def _authenticate(self, request: web.Request, info: RequestInfo) -> None:
        if not self.token or request.path in _PUBLIC_PATHS:
            return
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            raise errors.unauthorized()

    def _authorize(self, info: RequestInfo) -> None:
        if self.rbac is None:
            return
        namespace = info.namespace
        if self.rbac.allows(info.verb, info.group, info.plural, info.subresource, info.name, namespace):
            return
        reason = forbidden_reason(self.user, info.verb, info.group, info.plural, info.subresource, namespace)
        raise errors.forbidden(info.group, info.plural, info.name, reason)

    def _non_resource(self, info: RequestInfo) -> web.Response:
        path = info.path.rstrip("/")
        if info.method != "GET":
            raise errors.method_not_allowed(info.method)
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok", content_type="text/plain")
        if path == "/version":
            return json_response(KUBERNETES_VERSION)
        if path == "/api":
            return json_response({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]})
        if path == "/apis":
            groups = sorted({rt.group for rt in ALL if rt.group})
            versions = {group: sorted({rt.version for rt in ALL if rt.group == group}) for group in groups}
            return json_response({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [
                    {
                        "name": group,
                        "versions": [{"groupVersion": f"{group}/{v}", "version": v} for v in versions[group]],
                        "preferredVersion": {"groupVersion": f"{group}/{versions[group][0]}", "version": versions[group][0]},
                    }
                    for group in groups
                ],
            })
        for rt in ALL:
            if path == ("/api/" + rt.version if not rt.group else f"/apis/{rt.group}/{rt.version}"):
                return json_response(self._resource_list(rt.group, rt.version))
        raise errors.unknown_resource()

    @staticmethod
    def _resource_list(group: str, version: str) -> dict[str, Any]:
        resources = []
        for rt in ALL:
            if rt.group != group or rt.version != version:
                continue
            verbs = ["create"] if rt.plural == "bindings" else ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
            resources.append({"name": rt.plural, "singularName": rt.kind.lower(), "namespaced": rt.namespaced, "kind": rt.kind, "verbs": verbs})
            for sub in sorted(rt.subresources):
                sub_verbs = ["create"] if sub == "binding" else ["get", "patch", "update"]
                sub_kind = "Binding" if sub == "binding" else rt.kind
                resources.append({"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced, "kind": sub_kind, "verbs": sub_verbs})
        group_version = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}
