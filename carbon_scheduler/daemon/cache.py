"""An in-memory copy of one region's nodes and pods, kept current by list+watch.

Each scope (nodes, plus pods of all namespaces or of each configured namespace)
runs its own loop, in the manner of client-go's reflector:

    LIST ──ok──▶ WATCH from the list's resourceVersion (bookmarks advance it)
     ▲  ╲failed            │
     │   ▼                 ├─ stream ended or dropped ─▶ WATCH again from the last version
     │  down, back off     ├─ 410 Gone ───────────────▶ LIST
     └─────────────────────┴─ other error ────────────▶ down, LIST

A watch that ends having delivered no event, within `backoff_max_seconds` of
its start, is followed by a backoff before the next request, so a server that
accepts and then drops every watch is not hammered. Backoffs grow exponentially
from `backoff_initial_seconds` to `backoff_max_seconds`, each drawn uniformly
from [d/2, d], and are at least a server's Retry-After (capped at the maximum).

`up` is False until every scope has listed, and again from any failed list or
failed watch until that scope's next list succeeds. `synced` is set once every
scope has listed once, and stays set. `watch_restarts` counts the watches that
ended or failed and were opened again. For metrics, `on_watch_restart(region,
resource)` is called at each restart with resource "nodes" or "pods", and
`on_api_error(region, error)` at each failed list and each watch that failed
with an error other than 410 Gone (an expired resourceVersion is routine).

Listeners are plain functions `callback(region, kind, event_type, obj)` with
`kind` "Node" or "Pod". They get ADDED, MODIFIED and DELETED for watch events,
and after every list (the first included): DELETED for each cached object that
the list no longer contains, SYNC for each listed object, then one RELISTED with
obj={}. They run inside the watch loop, so they must be quick and must not
modify `obj`. A listener that raises is logged and the loop goes on.

Memory. Objects are kept as plain dicts, minus `metadata.managedFields`, which
the scheduler never reads and which is often the largest part of a pod. Each
`json.loads` call makes its own copy of every key and string, so `compact`
rebuilds each stored object once with its keys and short strings interned. For a
typical 5 KB running pod this halves the memory, to about 9 KB instead of 19 KB
(measured with tracemalloc on CPython 3.11). It costs about one and a half times
the CPU time of the `json.loads` call itself.
Listed items get the `kind` and `apiVersion` that list responses leave out, so
every cached object looks like a watched one.

Assumed pods (assume, then bind):

    assume(pod, node) ──▶ assumed: counted by bound_pods() on `node`
        ├─ watch or list shows the pod bound, or it is gone ─▶ dropped
        └─ forget(uid), when the binding failed ─────────────▶ dropped
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from carbon_scheduler.daemon.kubeapi import Gone, KubeClient, KubeError, Unavailable, segment

NODE = "Node"
POD = "Pod"
ADDED = "ADDED"
MODIFIED = "MODIFIED"
DELETED = "DELETED"
BOOKMARK = "BOOKMARK"
SYNC = "SYNC"
RELISTED = "RELISTED"
FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
DEFAULT_WATCH_TIMEOUT_SECONDS = 300
# Strings up to this length are interned, because names, label values, quantities,
# timestamps and enum-like fields repeat across pods. Uids (36 characters) do not.
MAX_INTERNED_CHARS = 32

Listener = Callable[[str, str, str, dict], None]
WatchRestartCallback = Callable[[str, str], None]
ApiErrorCallback = Callable[[str, KubeError], None]
# The `resource` of a watch restart, by kind, as the watch_restarts metric labels it.
RESOURCES = {NODE: "nodes", POD: "pods"}

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class _Scope:
    """One list+watch loop: a kind, the collection path and the namespace it covers
    (None for all namespaces, and for nodes)."""

    kind: str
    path: str
    namespace: str | None

    def covers(self, obj: dict) -> bool:
        return self.namespace is None or obj["metadata"].get("namespace") == self.namespace


class ClusterCache:
    """Nodes by name and pods by uid of one region, with listeners and assumed pods."""

    def __init__(
        self,
        region: str,
        client: KubeClient,
        *,
        namespaces: Iterable[str] = (),
        clock: Callable[[], float] = time.monotonic,
        backoff_initial_seconds: float = 0.2,
        backoff_max_seconds: float = 10.0,
        rng: random.Random | None = None,
        watch_timeout_seconds: int = DEFAULT_WATCH_TIMEOUT_SECONDS,
        on_watch_restart: WatchRestartCallback | None = None,
        on_api_error: ApiErrorCallback | None = None,
    ) -> None:
        if not 0 < backoff_initial_seconds <= backoff_max_seconds:
            raise ValueError(
                "backoff needs 0 < backoff_initial_seconds <= backoff_max_seconds, got "
                f"{backoff_initial_seconds} and {backoff_max_seconds}"
            )
        if watch_timeout_seconds < 1:
            raise ValueError(f"watch_timeout_seconds must be at least 1, got {watch_timeout_seconds}")

        self.region = region
        self.client = client
        self.nodes: dict[str, dict] = {}
        self.pods: dict[str, dict] = {}
        self.up = False
        self.synced = asyncio.Event()
        self.watch_restarts = 0

        self._clock = clock
        self._backoff_initial = backoff_initial_seconds
        self._backoff_max = backoff_max_seconds
        self._rng = rng if rng is not None else random.Random()
        self._watch_timeout = watch_timeout_seconds
        self._listeners: list[Listener] = []
        self._assumed: dict[str, dict] = {}
        self._on_watch_restart = on_watch_restart
        self._on_api_error = on_api_error

        namespaces = tuple(dict.fromkeys(namespaces))
        pod_scopes = (
            [_Scope(POD, f"/api/v1/namespaces/{segment(ns)}/pods", ns) for ns in namespaces]
            if namespaces
            else [_Scope(POD, "/api/v1/pods", None)]
        )
        self._scopes = (_Scope(NODE, "/api/v1/nodes", None), *pod_scopes)
        self._listed: set[_Scope] = set()
        self._down: set[_Scope] = set()

    # Listeners and assumed pods ----------------------------------------------------

    def add_listener(self, callback: Listener) -> None:
        self._listeners.append(callback)

    def assume(self, pod: dict, node: str) -> None:
        """Count `pod` as bound to `node` until the API server confirms or `forget()`."""
        uid = pod["metadata"]["uid"]
        assumed = dict(pod)
        assumed["spec"] = {**(pod.get("spec") or {}), "nodeName": node}
        self._assumed[uid] = assumed

    def forget(self, uid: str) -> None:
        """Drop an assumed binding, for instance after the binding request failed."""
        self._assumed.pop(uid, None)

    def is_assumed(self, uid: str) -> bool:
        return uid in self._assumed

    def bound_pods(self) -> list[dict]:
        """Return pods with a node (assumed ones included) that have not finished."""
        bound = [
            pod
            for uid, pod in self.pods.items()
            if uid not in self._assumed and _node_name(pod) and not _finished(pod)
        ]
        bound.extend(pod for pod in self._assumed.values() if not _finished(pod))
        return bound

    # Loops -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the list+watch loops of every scope until cancelled."""
        async with asyncio.TaskGroup() as group:
            for scope in self._scopes:
                group.create_task(self._run_scope(scope), name=f"cache {self.region} {scope.path}")

    async def _run_scope(self, scope: _Scope) -> None:
        attempt = 0
        version: str | None = None
        while True:
            if version is None:
                try:
                    items, version = await self.client.list(scope.path)
                except KubeError as error:
                    self._mark_down(scope, error)
                    self._report_api_error(error)
                    attempt += 1
                    await self._back_off(scope, attempt, error, step="list")
                    continue
                attempt = 0
                self._replace(scope, items)
                self._mark_listed(scope)

            started = self._clock()
            events = 0
            failure: KubeError | None = None
            try:
                watch = self.client.watch(scope.path, resource_version=version, timeout_seconds=self._watch_timeout)
                async with contextlib.aclosing(watch) as stream:
                    async for event in stream:
                        events += 1
                        version = self._apply(scope, event) or version
            except Gone as error:
                log.info(
                    "kube.cache.relist",
                    region=self.region,
                    kind=scope.kind,
                    path=scope.path,
                    status=error.status,
                    reason=error.reason,
                    events=events,
                )
                failure = error
                version = None
            except KubeError as error:
                log.warning(
                    "kube.cache.watch_failed",
                    region=self.region,
                    kind=scope.kind,
                    path=scope.path,
                    status=error.status,
                    error=str(error),
                    events=events,
                )
                self._mark_down(scope, error)
                self._report_api_error(error)
                failure = error
                version = None
            self.watch_restarts += 1
            self._report_watch_restart(scope)

            if events or self._clock() - started >= self._backoff_max:
                attempt = 0
                continue
            attempt += 1
            await self._back_off(scope, attempt, failure, step="watch")

    async def _back_off(self, scope: _Scope, attempt: int, error: KubeError | None, *, step: str) -> None:
        ceiling = min(self._backoff_max, self._backoff_initial * 2 ** min(attempt - 1, 60))
        delay = ceiling * (0.5 + self._rng.random() / 2)
        if isinstance(error, Unavailable) and error.retry_after is not None:
            delay = max(delay, min(error.retry_after, self._backoff_max))
        log.warning(
            "kube.cache.retry",
            region=self.region,
            kind=scope.kind,
            path=scope.path,
            step=step,
            attempt=attempt,
            delay_seconds=round(delay, 3),
            status=error.status if error is not None else None,
            error=str(error) if error is not None else "watch ended without events",
        )
        await asyncio.sleep(delay)

    # State changes -----------------------------------------------------------------

    def _apply(self, scope: _Scope, event: dict) -> str | None:
        """Apply one watch event and return its resourceVersion, if it has one."""
        event_type = event.get("type")
        obj = event.get("object")
        metadata = obj.get("metadata") if isinstance(obj, dict) else None
        if not isinstance(metadata, dict):
            log.warning(
                "kube.cache.bad_event",
                region=self.region,
                kind=scope.kind,
                path=scope.path,
                event_type=event_type,
                error="event object has no metadata",
            )
            return None

        version = metadata.get("resourceVersion")
        if event_type == BOOKMARK:
            return version

        key = metadata.get("uid") if scope.kind == POD else metadata.get("name")
        if event_type not in (ADDED, MODIFIED, DELETED) or not key:
            log.warning(
                "kube.cache.bad_event",
                region=self.region,
                kind=scope.kind,
                path=scope.path,
                event_type=event_type,
                error="unknown event type, or an object without uid or name",
            )
            return version

        store = self.pods if scope.kind == POD else self.nodes
        if event_type == DELETED:
            store.pop(key, None)
            if scope.kind == POD:
                self._assumed.pop(key, None)
        else:
            obj = compact(obj)
            store[key] = obj
            if scope.kind == POD and _node_name(obj):
                self._assumed.pop(key, None)
        self._notify(scope.kind, event_type, obj)
        return version

    def _replace(self, scope: _Scope, items: list[dict]) -> None:
        """Make the cache match a fresh list of `scope`, and tell the listeners."""
        store = self.pods if scope.kind == POD else self.nodes
        api_version = "v1"
        fresh: dict[str, dict] = {}
        for obj in items:
            metadata = obj.get("metadata") if isinstance(obj, dict) else None
            key = None
            if isinstance(metadata, dict):
                key = metadata.get("uid") if scope.kind == POD else metadata.get("name")
            if not key:
                log.warning(
                    "kube.cache.bad_object",
                    region=self.region,
                    kind=scope.kind,
                    path=scope.path,
                    error="listed object without uid or name",
                )
                continue
            obj = compact(obj)
            obj.setdefault("kind", scope.kind)
            obj.setdefault("apiVersion", api_version)
            fresh[key] = obj

        vanished = [key for key, obj in store.items() if key not in fresh and scope.covers(obj)]
        removed = [store.pop(key) for key in vanished]
        store.update(fresh)
        if scope.kind == POD:
            for uid, pod in list(self._assumed.items()):
                listed = fresh.get(uid)
                if (listed is not None and _node_name(listed)) or (listed is None and scope.covers(pod)):
                    del self._assumed[uid]

        for obj in removed:
            self._notify(scope.kind, DELETED, obj)
        for obj in fresh.values():
            self._notify(scope.kind, SYNC, obj)
        self._notify(scope.kind, RELISTED, {})
        log.info(
            "kube.cache.listed",
            region=self.region,
            kind=scope.kind,
            path=scope.path,
            objects=len(fresh),
            vanished=len(removed),
        )

    def _notify(self, kind: str, event_type: str, obj: dict) -> None:
        for listener in self._listeners:
            try:
                listener(self.region, kind, event_type, obj)
            except Exception:
                # A broken listener must not stop the cache, so the error is logged
                # with its traceback and the next listener still runs.
                log.exception(
                    "kube.cache.listener_failed",
                    region=self.region,
                    kind=kind,
                    event_type=event_type,
                    listener=getattr(listener, "__qualname__", repr(listener)),
                )

    def _report_api_error(self, error: KubeError) -> None:
        if self._on_api_error is None:
            return
        try:
            self._on_api_error(self.region, error)
        except Exception:
            # Metrics must never stop the cache, so the failure is only logged.
            log.exception("kube.cache.metrics_callback_failed", region=self.region, callback="on_api_error")

    def _report_watch_restart(self, scope: _Scope) -> None:
        if self._on_watch_restart is None:
            return
        try:
            self._on_watch_restart(self.region, RESOURCES[scope.kind])
        except Exception:
            # Metrics must never stop the cache, so the failure is only logged.
            log.exception("kube.cache.metrics_callback_failed", region=self.region, callback="on_watch_restart")

    def _mark_down(self, scope: _Scope, error: KubeError) -> None:
        self._down.add(scope)
        if self.up:
            log.warning("kube.cache.region_down", region=self.region, kind=scope.kind, path=scope.path, status=error.status, error=str(error))
        self.up = False

    def _mark_listed(self, scope: _Scope) -> None:
        self._down.discard(scope)
        self._listed.add(scope)
        if len(self._listed) < len(self._scopes):
            return
        self.synced.set()
        if not self._down and not self.up:
            self.up = True
            log.info("kube.cache.region_up", region=self.region)


def compact(obj: dict) -> dict:
    """Return a copy of a Kubernetes object without `metadata.managedFields`, its
    keys and short strings interned so that cached objects share them."""
    metadata = obj.get("metadata")
    if isinstance(metadata, dict) and "managedFields" in metadata:
        obj = {**obj, "metadata": {k: v for k, v in metadata.items() if k != "managedFields"}}
    return _interned(obj)


def _interned(value: dict, _intern: Callable[[str], str] = sys.intern) -> dict:
    # Written for speed: this runs on every stored watch event.
    out = {}
    for key, item in value.items():
        kind = type(item)
        if kind is str:
            if len(item) <= MAX_INTERNED_CHARS:
                item = _intern(item)
        elif kind is dict:
            item = _interned(item)
        elif kind is list:
            item = [_interned_item(element) for element in item]
        out[_intern(key)] = item
    return out


def _interned_item(item: Any) -> Any:
    kind = type(item)
    if kind is dict:
        return _interned(item)
    if kind is str:
        return sys.intern(item) if len(item) <= MAX_INTERNED_CHARS else item
    if kind is list:
        return [_interned_item(element) for element in item]
    return item


def _node_name(pod: dict) -> str | None:
    spec = pod.get("spec")
    return spec.get("nodeName") if isinstance(spec, dict) else None


def _finished(pod: dict) -> bool:
    status = pod.get("status")
    return isinstance(status, dict) and status.get("phase") in FINISHED_PHASES
