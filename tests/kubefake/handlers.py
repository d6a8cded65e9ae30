"""HTTP handlers for resource requests: the REST verbs on top of the store.

Responses follow kube-apiserver. Single objects carry kind and apiVersion but list
items do not. A create returns 201. A delete that only marks the object (graceful
pod deletion or finalizers) returns 202 with the object. A completed delete returns
the object for pods and a `Status` of Success for the other kinds.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from . import errors
from .resources import BINDINGS, NAMESPACES, ResourceType
from .routing import RequestInfo, truthy
from .selectors import parse_selectors
from .store import ADDED
from .watch import Watcher, bookmark_event, error_event, stream_events

if TYPE_CHECKING:
    from .server import FakeApiServer


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        text=json.dumps(body, separators=(",", ":")),
        status=status,
        content_type="application/json",
        headers=headers,
    )


async def read_json(request: web.Request) -> Any:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError as error:
        raise errors.bad_request(f"the request body is not valid JSON: {error}") from error


def _binding_created() -> web.Response:
    # The binding subresource returns a bare Success Status rather than the Binding.
    return json_response({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}, status=201)


def _deleted_status(rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
    details: dict[str, Any] = {"name": obj["metadata"]["name"]}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = rt.plural
    details["uid"] = obj["metadata"]["uid"]
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}


def _list_body(rt: ResourceType, items: list[dict[str, Any]], resource_version: int, continue_token: str = "", remaining: int = 0) -> dict[str, Any]:
    metadata: dict[str, Any] = {"resourceVersion": str(resource_version)}
    if continue_token:
        metadata["continue"] = continue_token
        metadata["remainingItemCount"] = remaining
    stripped = [{key: value for key, value in item.items() if key not in ("kind", "apiVersion")} for item in items]
    return {"kind": f"{rt.kind}List", "apiVersion": rt.api_version, "metadata": metadata, "items": stripped}


def _store_namespace(rt: ResourceType, info: RequestInfo) -> str | None:
    """Return the namespace to filter or write in, None for all namespaces or cluster scope."""
    return (info.namespace or None) if rt.namespaced else None


async def dispatch(server: FakeApiServer, request: web.Request, info: RequestInfo) -> web.StreamResponse:
    rt = info.resource
    if rt is None or info.malformed:
        raise errors.unknown_resource()
    if "dryRun" in request.query:
        # NOTE: a real server would validate and not persist; the fake refuses rather than persist by mistake.
        raise errors.bad_request("dryRun is not supported by the fake API server")
    store = server.store

    if rt is BINDINGS:
        if info.verb != "create" or info.name or not info.namespace:
            raise errors.method_not_allowed(info.method)
        body = await read_json(request)
        store.bind(info.namespace, (body.get("metadata") or {}).get("name") or "", body)
        return _binding_created()

    if not rt.namespaced and info.namespace and rt is not NAMESPACES:
        raise errors.unknown_resource()
    if rt.namespaced and not info.namespace and info.verb not in ("list", "watch"):
        raise errors.unknown_resource()
    namespace = _store_namespace(rt, info)

    if info.subresource:
        return await _subresource(server, request, info, rt, namespace)

    if info.verb == "list":
        return _list(server, request, rt, namespace)
    if info.verb == "watch":
        return await _watch(server, request, rt, namespace)
    if info.verb == "get":
        return json_response(store.get(rt, namespace, info.name))
    if info.verb == "create":
        if info.name:
            raise errors.method_not_allowed(info.method)
        return json_response(store.create(rt, await read_json(request), namespace=namespace or ""), status=201)
    if info.verb == "update":
        return json_response(store.update(rt, namespace, info.name, await read_json(request)))
    if info.verb == "patch":
        body = await read_json(request)
        return json_response(store.patch(rt, namespace, info.name, body, request.headers.get("Content-Type", "")))
    if info.verb == "delete":
        return _delete(server, request, rt, namespace, info.name, await read_json(request))
    if info.verb == "deletecollection":
        return await _delete_collection(server, request, rt, namespace)
    raise errors.method_not_allowed(info.method)


async def _subresource(server: FakeApiServer, request: web.Request, info: RequestInfo, rt: ResourceType, namespace: str | None) -> web.StreamResponse:
    if info.subresource not in rt.subresources:
        raise errors.unknown_resource()
    store = server.store
    if info.subresource == "binding":
        if info.verb != "create":
            raise errors.method_not_allowed(info.method)
        store.bind(info.namespace, info.name, await read_json(request))
        return _binding_created()
    if info.verb == "get":
        return json_response(store.get(rt, namespace, info.name))
    if info.verb == "update":
        return json_response(store.update(rt, namespace, info.name, await read_json(request), subresource="status"))
    if info.verb == "patch":
        body = await read_json(request)
        content_type = request.headers.get("Content-Type", "")
        return json_response(store.patch(rt, namespace, info.name, body, content_type, subresource="status"))
    raise errors.method_not_allowed(info.method)


def _decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        data = json.loads(base64.urlsafe_b64decode(token.encode()))
        return int(data["rv"]), (str(data["namespace"]), str(data["name"]))
    except (ValueError, KeyError, TypeError, binascii.Error) as error:
        raise errors.bad_request(f"continue key is not valid: {error}") from error


def _list(server: FakeApiServer, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
    query = request.query
    labels, fields = parse_selectors(rt, query.get("labelSelector", ""), query.get("fieldSelector", ""))
    resource_version = server.store.resource_version
    last_key = None
    token = query.get("continue", "")
    if token:
        # NOTE: the real server serves later pages from a snapshot at the first page's
        # version. The fake reads the current state after the last key instead.
        resource_version, last_key = _decode_continue(token)
    limit_text = query.get("limit", "")
    limit = int(limit_text) if limit_text.isdigit() else 0
    page, remaining = server.store.list_page(rt, namespace, labels=labels, fields=fields, after=last_key, limit=limit)
    if remaining:
        last = page[-1]["metadata"]
        payload = {"rv": resource_version, "namespace": last.get("namespace", ""), "name": last["name"]}
        next_token = base64.urlsafe_b64encode(json.dumps(payload).encode()).decode()
        return json_response(_list_body(rt, page, resource_version, next_token, remaining))
    return json_response(_list_body(rt, page, resource_version))


async def _watch(server: FakeApiServer, request: web.Request, rt: ResourceType, namespace: str | None) -> web.StreamResponse:
    query = request.query
    store = server.store
    labels, fields = parse_selectors(rt, query.get("labelSelector", ""), query.get("fieldSelector", ""))
    watcher = Watcher(rt, namespace or "", labels, fields, bookmarks=truthy(query.get("allowWatchBookmarks")))
    version_text = query.get("resourceVersion", "")
    send_initial = truthy(query.get("sendInitialEvents"))
    timeout_text = query.get("timeoutSeconds", "")
    if timeout_text and not timeout_text.isdigit():
        raise errors.bad_request(f"timeoutSeconds must be a non-negative integer, got {timeout_text!r}")
    timeout_seconds = float(timeout_text) if timeout_text else None
    if send_initial:
        causes = []
        if query.get("resourceVersionMatch") != "NotOlderThan":
            causes.append(("resourceVersionMatch", "FieldValueForbidden", "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"))
        if not watcher.bookmarks:
            causes.append(("allowWatchBookmarks", "FieldValueRequired", "Required value: allowWatchBookmarks must be true if sendInitialEvents is set"))
        if causes:
            raise errors.invalid("meta.k8s.io", "ListOptions", "", causes)

    # From here to subscribe() nothing awaits, so no change can slip between the
    # snapshot or replay and the live queue.
    end_after_initial = False
    if version_text in ("", "0") or send_initial:
        initial = [{"type": ADDED, "object": obj} for obj in store.list(rt, namespace, labels=labels, fields=fields)]
        if send_initial:
            initial.append(bookmark_event(rt, store.resource_version, initial_events_end=True))
    else:
        if not version_text.isdigit():
            raise errors.bad_request(f"invalid resourceVersion {version_text!r}: it must be a decimal integer")
        requested = int(version_text)
        if server.faults.take_watch_expiry():
            initial, end_after_initial = [error_event(errors.expired(requested, store.resource_version))], True
        else:
            try:
                changes = store.changes_since(requested)
            except errors.ApiError as error:
                initial, end_after_initial = [error_event(error)], True
            else:
                initial = [event for event in map(watcher.event_for, changes) if event is not None]
    if not end_after_initial:
        store.subscribe(watcher.offer)
    server.register_watcher(watcher)
    try:
        return await stream_events(
            request,
            store,
            watcher,
            initial,
            end_after_initial=end_after_initial,
            timeout_seconds=timeout_seconds,
            bookmark_interval_seconds=server.bookmark_interval_seconds,
        )
    finally:
        store.unsubscribe(watcher.offer)
        server.unregister_watcher(watcher)


def _delete_options(request: web.Request, body: dict[str, Any]) -> dict[str, Any]:
    query = request.query
    preconditions = body.get("preconditions") or {}
    propagation = body.get("propagationPolicy") or query.get("propagationPolicy")
    orphan = body.get("orphanDependents")
    if orphan is None and "orphanDependents" in query:
        orphan = truthy(query.get("orphanDependents"))
    if propagation is None and orphan is not None:
        propagation = "Orphan" if orphan else "Background"
    grace = body.get("gracePeriodSeconds")
    if grace is None and query.get("gracePeriodSeconds", "").lstrip("-").isdigit():
        grace = int(query["gracePeriodSeconds"])
    return {
        "uid": preconditions.get("uid"),
        "resource_version": preconditions.get("resourceVersion"),
        "propagation": propagation,
        "grace_period_seconds": grace,
    }


def _delete(server: FakeApiServer, request: web.Request, rt: ResourceType, namespace: str | None, name: str, body: dict[str, Any]) -> web.Response:
    final, gone = server.store.delete(rt, namespace, name, **_delete_options(request, body))
    if not gone:
        return json_response(final, status=202)
    if rt.returns_deleted_object:
        return json_response(final)
    return json_response(_deleted_status(rt, final))


async def _delete_collection(server: FakeApiServer, request: web.Request, rt: ResourceType, namespace: str | None) -> web.Response:
    query = request.query
    labels, fields = parse_selectors(rt, query.get("labelSelector", ""), query.get("fieldSelector", ""))
    options = _delete_options(request, await read_json(request))
    options.pop("uid")
    options.pop("resource_version")
    deleted = []
    for item in server.store.list(rt, namespace, labels=labels, fields=fields):
        final, _ = server.store.delete(rt, item["metadata"].get("namespace"), item["metadata"]["name"], **options)
        deleted.append(final)
    return json_response(_list_body(rt, deleted, server.store.resource_version))
