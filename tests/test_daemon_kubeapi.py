"""KubeClient against the fake API server, through the real kubernetes-asyncio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import UTC, datetime
from pathlib import Path

import pytest
import pytest_asyncio
from hypothesis import given
from hypothesis import strategies as st

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon import kubeapi
from carbon_scheduler.daemon.connections import connect
from carbon_scheduler.daemon.kubeapi import (
    Conflict,
    Forbidden,
    Gone,
    Invalid,
    KubeClient,
    KubeError,
    NotFound,
    Unavailable,
    error_class,
    parse_retry_after,
    status_fields,
    trim,
)
from tests.kubefake import FakeApiServer, RbacPolicy, write_kubeconfig
from tests.kubefake.fixtures import loopback_without_proxy  # noqa: F401  (fixture)

REGION = "eu-west"


@pytest_asyncio.fixture
async def server(loopback_without_proxy: None) -> AsyncIterator[FakeApiServer]:  # noqa: F811
    async with FakeApiServer(REGION, bookmark_interval_seconds=60.0, seed=7) as fake:
        yield fake


@pytest_asyncio.fixture
async def client(server: FakeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
    kube = await connect(RegionSpec(name=REGION, kubeconfig=str(kubeconfig), context=REGION), request_timeout_seconds=2.0)
    yield kube
    await kube.close()


def _pod(name: str, **spec: object) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": {"schedulerName": "carbon-scheduler", "containers": [{"name": "main", "image": "busybox:1.36"}], **spec},
    }


def _job(name: str) -> dict:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "template": {
                "spec": {
                    "schedulerName": "carbon-scheduler",
                    "restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox:1.36"}],
                }
            }
        },
    }


# Pure helpers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        pytest.param(400, Invalid, id="400-invalid"),
        pytest.param(422, Invalid, id="422-invalid"),
        pytest.param(401, Forbidden, id="401-forbidden"),
        pytest.param(403, Forbidden, id="403-forbidden"),
        pytest.param(404, NotFound, id="404-not-found"),
        pytest.param(409, Conflict, id="409-conflict"),
        pytest.param(410, Gone, id="410-gone"),
        pytest.param(408, Unavailable, id="408-unavailable"),
        pytest.param(429, Unavailable, id="429-unavailable"),
        pytest.param(500, Unavailable, id="500-unavailable"),
        pytest.param(503, Unavailable, id="503-unavailable"),
        pytest.param(504, Unavailable, id="504-unavailable"),
        pytest.param(405, KubeError, id="405-base"),
        pytest.param(415, KubeError, id="415-base"),
    ],
)
def test_error_class_by_status(status: int, expected: type[KubeError]) -> None:
    assert error_class(status) is expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(None, None, id="missing"),
        pytest.param("1", 1.0, id="seconds"),
        pytest.param(" 120 ", 120.0, id="seconds-with-spaces"),
        pytest.param("Thu, 01 Jan 2026 00:00:30 GMT", 30.0, id="http-date"),
        pytest.param("Wed, 31 Dec 2025 23:59:00 GMT", 0.0, id="http-date-in-past"),
        pytest.param("soon", None, id="garbage"),
        pytest.param("-5", None, id="negative"),
        pytest.param("1.5", None, id="fraction"),
        pytest.param("", None, id="empty"),
    ],
)
def test_parse_retry_after(header: str | None, expected: float | None) -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after(header, now=now) == expected


@given(st.text())
def test_parse_retry_after_never_raises(header: str) -> None:
    result = parse_retry_after(header, now=datetime(2026, 1, 1, tzinfo=UTC))
    assert result is None or result >= 0.0


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        pytest.param(
            b'{"kind":"Status","status":"Failure","reason":"Conflict","message":"stale","code":409}',
            ("Conflict", "stale"),
            id="status",
        ),
        pytest.param(b'{"kind":"Status","status":"Failure","code":500}', ("", ""), id="status-without-reason"),
        pytest.param(b"<html>502 Bad Gateway</html>\n", ("", "<html>502 Bad Gateway</html>"), id="proxy-html"),
        pytest.param(b'{"kind":"Pod"}', ("", '{"kind":"Pod"}'), id="not-a-status"),
        pytest.param(b"", ("", ""), id="empty"),
        pytest.param(b"\xff\xfe", ("", "\ufffd\ufffd"), id="not-utf8"),
    ],
)
def test_status_fields(body: bytes, expected: tuple[str, str]) -> None:
    assert status_fields(body) == expected


@given(st.binary(max_size=2000))
def test_status_fields_never_raises(body: bytes) -> None:
    reason, message = status_fields(body)
    assert isinstance(reason, str)
    assert len(message) <= kubeapi.MAX_MESSAGE_CHARS


def test_trim_keeps_short_and_cuts_long() -> None:
    assert trim("short") == "short"
    cut = trim("x" * 1000)
    assert len(cut) == kubeapi.MAX_MESSAGE_CHARS
    assert cut.endswith("...")


# Errors from a real server ------------------------------------------------------------


@pytest.mark.asyncio
async def test_get_missing_pod_is_not_found(client: KubeClient) -> None:
    with pytest.raises(NotFound) as caught:
        await client.get_pod("default", "nope")
    error = caught.value
    assert error.status == 404
    assert error.reason == "NotFound"
    assert error.message == 'pods "nope" not found'
    assert error.region == REGION
    assert error.verb == "GET"
    assert error.path == "/api/v1/namespaces/default/pods/nope"
    assert str(error).startswith("region eu-west: GET /api/v1/namespaces/default/pods/nope failed: 404 NotFound")


@pytest.mark.asyncio
async def test_create_existing_pod_is_conflict(client: KubeClient) -> None:
    await client.create_pod("default", _pod("twice"))
    with pytest.raises(Conflict) as caught:
        await client.create_pod("default", _pod("twice"))
    assert caught.value.status == 409
    assert caught.value.reason == "AlreadyExists"


@pytest.mark.asyncio
async def test_invalid_name_is_invalid(client: KubeClient) -> None:
    with pytest.raises(Invalid) as caught:
        await client.create_pod("default", _pod("Not_A_Name"))
    assert caught.value.status == 422
    assert caught.value.reason == "Invalid"
    assert "Not_A_Name" in caught.value.message


@pytest.mark.asyncio
async def test_wrong_token_is_forbidden_without_leaking_it(server: FakeApiServer, tmp_path: Path) -> None:
    real_token = server.token
    server.token = "rotated-token-the-client-does-not-have"
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
    server.token = real_token
    kube = await connect(RegionSpec(name=REGION, kubeconfig=str(kubeconfig), context=REGION))
    try:
        with pytest.raises(Forbidden) as caught:
            await kube.get_pod("default", "any")
    finally:
        await kube.close()
    assert caught.value.status == 401
    assert caught.value.reason == "Unauthorized"
    assert "rotated-token" not in str(caught.value)
    assert real_token not in str(caught.value)


@pytest.mark.asyncio
async def test_rbac_denial_is_forbidden(server: FakeApiServer, client: KubeClient) -> None:
    server.rbac = RbacPolicy.from_rules([{"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods"]}])
    with pytest.raises(Forbidden) as caught:
        await client.create_pod("default", _pod("denied"))
    assert caught.value.status == 403
    assert caught.value.reason == "Forbidden"
    assert 'cannot create resource "pods"' in caught.value.message


@pytest.mark.parametrize("status", [500, 503, 504])
@pytest.mark.asyncio
async def test_server_errors_are_unavailable(server: FakeApiServer, client: KubeClient, status: int) -> None:
    server.faults.fail_next(status=status, verb="get")
    with pytest.raises(Unavailable) as caught:
        await client.get_pod("default", "any")
    assert caught.value.status == status
    assert caught.value.retry_after is None


@pytest.mark.asyncio
async def test_too_many_requests_carries_retry_after(server: FakeApiServer, client: KubeClient) -> None:
    server.faults.fail_next(status=429, verb="list")
    with pytest.raises(Unavailable) as caught:
        await client.list("/api/v1/pods")
    assert caught.value.status == 429
    assert caught.value.reason == "TooManyRequests"
    assert caught.value.retry_after == 1.0


@pytest.mark.asyncio
async def test_connection_refused_is_unavailable(server: FakeApiServer, client: KubeClient) -> None:
    await server.stop()
    with pytest.raises(Unavailable) as caught:
        await client.get_pod("default", "any")
    error = caught.value
    assert error.status is None
    assert error.__cause__ is not None
    assert str(error).startswith("region eu-west: GET /api/v1/namespaces/default/pods/any failed: connection failed")


@pytest.mark.asyncio
async def test_slow_server_times_out(server: FakeApiServer, tmp_path: Path) -> None:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
    kube = await connect(RegionSpec(name=REGION, kubeconfig=str(kubeconfig), context=REGION), request_timeout_seconds=0.05)
    server.faults.delay(0.3, verb="get", count=1)
    try:
        with pytest.raises(Unavailable) as caught:
            await kube.get_pod("default", "any")
    finally:
        await kube.close()
    assert "timed out" in str(caught.value)


@pytest.mark.asyncio
async def test_non_json_body_is_kube_error(client: KubeClient) -> None:
    with pytest.raises(KubeError) as caught:
        await client.request("GET", "/healthz")
    assert type(caught.value) is KubeError
    assert caught.value.reason == "InvalidResponse"


def test_request_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="request_timeout_seconds must be positive, got 0"):
        KubeClient(REGION, None, request_timeout_seconds=0)  # type: ignore[arg-type]


# List and watch ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_list_follows_continue_pages(server: FakeApiServer, client: KubeClient) -> None:
    count = kubeapi.LIST_PAGE_SIZE * 2 + 7
    for index in range(count):
        server.create_pod(f"p{index:04d}")
    server.clear_requests()
    items, version = await client.list("/api/v1/namespaces/default/pods")
    assert len(items) == count
    assert len({item["metadata"]["uid"] for item in items}) == count
    assert version == str(server.resource_version)
    lists = [record for record in server.requests if record.verb == "list"]
    assert len(lists) == 3
    assert [record.query.get("limit") for record in lists] == ["500", "500", "500"]
    assert "continue" not in lists[0].query
    assert all("continue" in record.query for record in lists[1:])


@pytest.mark.asyncio
async def test_list_passes_selectors(server: FakeApiServer, client: KubeClient) -> None:
    server.add_node("n1")
    server.create_pod("a", labels={"tier": "batch"})
    server.create_pod("b", labels={"tier": "web"})
    server.create_pod("c", labels={"tier": "batch"}, node_name="n1")
    items, _ = await client.list("/api/v1/pods", label_selector="tier=batch", field_selector="spec.nodeName=")
    assert [item["metadata"]["name"] for item in items] == ["a"]


async def _collect(events: AsyncIterator[dict], count: int) -> list[dict]:
    collected = []
    async for event in events:
        collected.append(event)
        if len(collected) == count:
            break
    return collected


@pytest.mark.asyncio
async def test_watch_yields_changes(server: FakeApiServer, client: KubeClient) -> None:
    server.add_node("n1")
    _, version = await client.list("/api/v1/pods")
    created = server.create_pod("w1")
    server.bind_pod("w1", "n1")
    server.delete("pods", "w1")
    async with aclosing(client.watch("/api/v1/pods", resource_version=version, timeout_seconds=5)) as watch:
        events = await _collect(watch, 3)
    assert [event["type"] for event in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert {event["object"]["metadata"]["uid"] for event in events} == {created["metadata"]["uid"]}
    assert events[1]["object"]["spec"]["nodeName"] == "n1"
    query = [record.query for record in server.requests if record.verb == "watch"][-1]
    assert query["watch"] == "true"
    assert query["resourceVersion"] == version
    assert query["allowWatchBookmarks"] == "true"
    assert query["timeoutSeconds"] == "5"


@pytest.mark.asyncio
async def test_watch_yields_bookmarks(server: FakeApiServer, client: KubeClient) -> None:
    _, version = await client.list("/api/v1/pods")
    # A write the pod watch does not see, so only a bookmark can carry its version.
    server.create("namespaces", {"metadata": {"name": "elsewhere"}})

    async def bookmark_once_open() -> None:
        await server.wait_for_watches(1, resource="pods")
        server.send_bookmarks()

    sender = asyncio.create_task(bookmark_once_open())
    async with aclosing(client.watch("/api/v1/pods", resource_version=version, timeout_seconds=5)) as watch:
        events = await _collect(watch, 1)
    await sender
    assert events[0]["type"] == "BOOKMARK"
    assert events[0]["object"]["metadata"]["resourceVersion"] == str(server.resource_version)


@pytest.mark.asyncio
async def test_watch_expired_version_raises_gone(server: FakeApiServer, client: KubeClient) -> None:
    _, version = await client.list("/api/v1/pods")
    server.faults.expire_next_watch()
    with pytest.raises(Gone) as caught:
        async with aclosing(client.watch("/api/v1/pods", resource_version=version)) as watch:
            await _collect(watch, 1)
    assert caught.value.status == 410
    assert caught.value.reason == "Expired"
    assert caught.value.verb == "WATCH"
    assert "too old resource version" in caught.value.message


@pytest.mark.asyncio
async def test_watch_compacted_history_raises_gone(server: FakeApiServer, client: KubeClient) -> None:
    _, version = await client.list("/api/v1/pods")
    server.create_pod("after-list")
    server.compact()
    with pytest.raises(Gone):
        async with aclosing(client.watch("/api/v1/pods", resource_version=version)) as watch:
            await _collect(watch, 1)


@pytest.mark.asyncio
async def test_watch_start_failure_raises(server: FakeApiServer, client: KubeClient) -> None:
    _, version = await client.list("/api/v1/pods")
    server.faults.fail_next(status=503, verb="watch")
    with pytest.raises(Unavailable) as caught:
        async with aclosing(client.watch("/api/v1/pods", resource_version=version)) as watch:
            await _collect(watch, 1)
    assert caught.value.status == 503
    assert caught.value.verb == "GET"


@pytest.mark.parametrize("graceful", [pytest.param(False, id="dropped"), pytest.param(True, id="closed")])
@pytest.mark.asyncio
async def test_watch_ends_when_stream_stops(server: FakeApiServer, client: KubeClient, graceful: bool) -> None:
    _, version = await client.list("/api/v1/pods")
    server.create_pod("before-drop")

    async def drop_after_first_event() -> None:
        await server.wait_for_watches(1, resource="pods")
        server.drop_watches(graceful=graceful)

    events = []
    async with aclosing(client.watch("/api/v1/pods", resource_version=version)) as watch:
        async for event in watch:
            events.append(event)
            if len(events) == 1:
                dropper = asyncio.create_task(drop_after_first_event())
    await dropper
    assert [event["type"] for event in events] == ["ADDED"]


# Convenience methods -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_bind_pod_with_uid_precondition(server: FakeApiServer, client: KubeClient) -> None:
    server.add_node("n1")
    created = await client.create_pod("default", _pod("b1"))
    uid = created["metadata"]["uid"]
    with pytest.raises(Conflict) as caught:
        await client.bind_pod("default", "b1", "n1", uid="00000000-0000-4000-8000-000000000000")
    assert "Precondition failed" in caught.value.message
    answer = await client.bind_pod("default", "b1", "n1", uid=uid)
    assert answer["status"] == "Success"
    assert (await client.get_pod("default", "b1"))["spec"]["nodeName"] == "n1"
    with pytest.raises(Conflict) as again:
        await client.bind_pod("default", "b1", "n1")
    assert "already assigned" in again.value.message


@pytest.mark.asyncio
async def test_delete_pod_preconditions(client: KubeClient) -> None:
    created = await client.create_pod("default", _pod("d1"))
    with pytest.raises(Conflict):
        await client.delete_pod("default", "d1", uid="00000000-0000-4000-8000-000000000000")
    with pytest.raises(Conflict):
        await client.delete_pod("default", "d1", resource_version="1")
    await client.delete_pod(
        "default", "d1", uid=created["metadata"]["uid"], resource_version=created["metadata"]["resourceVersion"]
    )
    with pytest.raises(NotFound):
        await client.get_pod("default", "d1")


@pytest.mark.asyncio
async def test_patch_pod_and_node_merge(server: FakeApiServer, client: KubeClient) -> None:
    server.add_node("n1", labels={"zone": "a"})
    await client.create_pod("default", _pod("m1"))
    pod = await client.patch_pod("default", "m1", {"metadata": {"annotations": {"carbon-scheduler.io/decision": "{}"}}})
    assert pod["metadata"]["annotations"] == {"carbon-scheduler.io/decision": "{}"}
    assert pod["metadata"]["labels"] == {"app": "demo"}
    node = await client.patch_node("n1", {"metadata": {"labels": {"carbon-scheduler.io/carbon-level": "low"}}})
    assert node["metadata"]["labels"]["carbon-scheduler.io/carbon-level"] == "low"
    assert node["metadata"]["labels"]["zone"] == "a"
    patches = [record for record in server.requests if record.verb == "patch"]
    assert len(patches) == 2


@pytest.mark.asyncio
async def test_create_event(server: FakeApiServer, client: KubeClient) -> None:
    pod = await client.create_pod("default", _pod("e1"))
    body = {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": "e1.abc123", "namespace": "default"},
        "involvedObject": {"kind": "Pod", "namespace": "default", "name": "e1", "uid": pod["metadata"]["uid"]},
        "reason": "Scheduled",
        "message": "placed on n1",
        "type": "Normal",
        "source": {"component": "carbon-scheduler"},
    }
    created = await client.create_event("default", body)
    assert created["reason"] == "Scheduled"
    assert server.get("events", "e1.abc123")["message"] == "placed on n1"


@pytest.mark.asyncio
async def test_job_lifecycle_deletes_pods_in_background(server: FakeApiServer, client: KubeClient) -> None:
    job = await client.create_job("default", _job("j1"))
    uid = job["metadata"]["uid"]
    await server.wait_for(lambda fake: len(fake.list("pods", namespace="default")) == 1, what="the Job's pod")
    assert (await client.get_job("default", "j1"))["metadata"]["uid"] == uid
    with pytest.raises(Conflict):
        await client.delete_job("default", "j1", uid="00000000-0000-4000-8000-000000000000")
    await client.delete_job("default", "j1", uid=uid)
    with pytest.raises(NotFound):
        await client.get_job("default", "j1")
    await server.wait_for(lambda fake: not fake.list("pods", namespace="default"), what="the Job's pods to go")


@pytest.mark.asyncio
async def test_lease_replace_is_compare_and_swap(client: KubeClient) -> None:
    body = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": "carbon-scheduler", "namespace": "default"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15},
    }
    created = await client.create_lease("default", body)
    stale = dict(created)
    current = await client.get_lease("default", "carbon-scheduler")
    current["spec"]["holderIdentity"] = "b"
    replaced = await client.replace_lease("default", "carbon-scheduler", current)
    assert replaced["spec"]["holderIdentity"] == "b"
    stale["spec"] = {**stale["spec"], "holderIdentity": "c"}
    with pytest.raises(Conflict):
        await client.replace_lease("default", "carbon-scheduler", stale)
    assert (await client.get_lease("default", "carbon-scheduler"))["spec"]["holderIdentity"] == "b"


@pytest.mark.asyncio
async def test_names_are_quoted_in_path(server: FakeApiServer, client: KubeClient) -> None:
    with pytest.raises(NotFound):
        await client.get_pod("default", "x?watch=true")
    record = server.requests[-1]
    assert record.path == "/api/v1/namespaces/default/pods/x?watch=true"
    assert record.query == {}
    assert record.verb == "get"
