"""ClusterCache against the fake API server: list, watch, resume, relist, faults."""

from __future__ import annotations

import asyncio
import random
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import pytest_asyncio
from structlog.testing import capture_logs

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon.cache import ClusterCache, compact
from carbon_scheduler.daemon.connections import connect
from carbon_scheduler.daemon.kubeapi import KubeClient
from tests.kubefake import FakeApiServer, RbacPolicy, write_kubeconfig
from tests.kubefake.fixtures import loopback_without_proxy  # noqa: F401  (fixture)

REGION = "eu-west"
BACKOFF_INITIAL = 0.01
BACKOFF_MAX = 0.05


@pytest_asyncio.fixture
async def server(loopback_without_proxy: None) -> AsyncIterator[FakeApiServer]:  # noqa: F811
    async with FakeApiServer(REGION, bookmark_interval_seconds=60.0, seed=11) as fake:
        fake.add_node("n1")
        yield fake


@pytest_asyncio.fixture
async def client(server: FakeApiServer, tmp_path: Path) -> AsyncIterator[KubeClient]:
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", [server])
    kube = await connect(RegionSpec(name=REGION, kubeconfig=str(kubeconfig), context=REGION), request_timeout_seconds=2.0)
    yield kube
    await kube.close()


class Recorder:
    """A listener that keeps (kind, event type, name) of every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str | None]] = []

    def __call__(self, region: str, kind: str, event_type: str, obj: dict) -> None:
        assert region == REGION
        self.calls.append((kind, event_type, (obj.get("metadata") or {}).get("name")))

    def of(self, kind: str) -> list[tuple[str, str | None]]:
        return [(event_type, name) for call_kind, event_type, name in self.calls if call_kind == kind]


def make_cache(client: KubeClient, **options: object) -> ClusterCache:
    settings: dict = {
        "backoff_initial_seconds": BACKOFF_INITIAL,
        "backoff_max_seconds": BACKOFF_MAX,
        "rng": random.Random(3),
    }
    settings.update(options)
    return ClusterCache(REGION, client, **settings)


@asynccontextmanager
async def running(cache: ClusterCache) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(cache.run())
    try:
        yield task
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def eventually(condition: Callable[[], bool], *, what: str, timeout: float = 3.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.002)


def names(pods: list[dict]) -> list[str]:
    return sorted(pod["metadata"]["name"] for pod in pods)


def pod_names(cache: ClusterCache) -> list[str]:
    return names(list(cache.pods.values()))


# Listing and watching -----------------------------------------------------------------


@pytest.mark.asyncio
async def test_initial_list_fills_cache(server: FakeApiServer, client: KubeClient) -> None:
    server.add_node("n2")
    first = server.create_pod("a")
    server.create_pod("b", node_name="n1")
    cache = make_cache(client)
    recorder = Recorder()
    cache.add_listener(recorder)
    assert cache.up is False
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        assert cache.up is True
        assert sorted(cache.nodes) == ["n1", "n2"]
        assert pod_names(cache) == ["a", "b"]
        stored = cache.pods[first["metadata"]["uid"]]
        assert stored["kind"] == "Pod"
        assert stored["apiVersion"] == "v1"
        assert stored["spec"]["schedulerName"] == "carbon-scheduler"
        assert sorted(recorder.of("Node")) == [("RELISTED", None), ("SYNC", "n1"), ("SYNC", "n2")]
        assert recorder.of("Node")[-1] == ("RELISTED", None)
        assert recorder.of("Pod")[-1] == ("RELISTED", None)
        assert sorted(recorder.of("Pod")[:-1]) == [("SYNC", "a"), ("SYNC", "b")]
        assert cache.watch_restarts == 0
    assert server.request_count(verb="list", resource="pods") == 1
    assert server.request_count(verb="list", resource="nodes") == 1


@pytest.mark.asyncio
async def test_watch_events_update_cache(server: FakeApiServer, client: KubeClient) -> None:
    cache = make_cache(client)
    recorder = Recorder()
    cache.add_listener(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        created = server.create_pod("w")
        uid = created["metadata"]["uid"]
        await eventually(lambda: uid in cache.pods, what="ADDED")
        server.bind_pod("w", "n1")
        await eventually(lambda: cache.pods[uid]["spec"].get("nodeName") == "n1", what="MODIFIED")
        server.set_node_ready("n1", False)
        await eventually(lambda: bool(cache.nodes["n1"]["spec"].get("taints")), what="node MODIFIED")
        server.delete("pods", "w")
        await eventually(lambda: uid not in cache.pods, what="DELETED")
    assert recorder.of("Pod")[-3:] == [("ADDED", "w"), ("MODIFIED", "w"), ("DELETED", "w")]
    assert recorder.of("Node")[-1] == ("MODIFIED", "n1")


@pytest.mark.asyncio
async def test_bookmark_advances_resume_version(server: FakeApiServer, client: KubeClient) -> None:
    cache = make_cache(client)
    recorder = Recorder()
    cache.add_listener(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        # Neither watch receives this write, so only the bookmark carries its version.
        server.create("namespaces", {"metadata": {"name": "elsewhere"}})
        bookmarked = server.resource_version
        calls_before = len(recorder.calls)
        assert server.send_bookmarks() == 2
        watches_before = server.request_count(verb="watch", resource="pods")
        # Each stream writes its bookmark before it ends, in queue order.
        server.drop_watches(graceful=True)
        await eventually(lambda: server.request_count(verb="watch", resource="pods") > watches_before, what="resumed watch")
    resumed = [record for record in server.requests if record.verb == "watch" and record.resource == "pods"][-1]
    assert resumed.query["resourceVersion"] == str(bookmarked)
    assert len(recorder.calls) == calls_before
    assert server.request_count(verb="list") == 2


@pytest.mark.asyncio
async def test_dropped_stream_resumes_without_relist(server: FakeApiServer, client: KubeClient) -> None:
    cache = make_cache(client)
    recorder = Recorder()
    cache.add_listener(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        server.create_pod("before")
        await eventually(lambda: "before" in pod_names(cache), what="first pod")
        # Hold the reconnecting watches so the next write happens while none is open.
        server.faults.delay(0.1, verb="watch", count=2)
        server.drop_watches()
        await eventually(lambda: server.open_watches == 0, what="watches to close")
        server.create_pod("during")
        await eventually(lambda: "during" in pod_names(cache), what="pod created while disconnected")
        restarts = cache.watch_restarts
    assert restarts >= 2
    assert server.request_count(verb="list") == 2
    assert ("ADDED", "during") in recorder.of("Pod")
    assert ("RELISTED", None) not in recorder.of("Pod")[1:]


@pytest.mark.asyncio
async def test_gone_relists_and_reports_vanished(server: FakeApiServer, client: KubeClient) -> None:
    kept = server.create_pod("kept")
    server.create_pod("lost")
    cache = make_cache(client)
    recorder = Recorder()
    cache.add_listener(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        server.faults.delay(0.1, verb="watch", count=2)
        server.drop_watches(graceful=True)
        await eventually(lambda: server.open_watches == 0, what="watches to close")
        server.delete("pods", "lost")
        server.create_pod("new")
        # Without history both resumed watches get 410, so the deletion is seen only by a relist.
        server.compact()
        await eventually(lambda: pod_names(cache) == ["kept", "new"], what="relist")
        await eventually(lambda: server.open_watches == 2, what="watches after relist")
    assert server.request_count(verb="list", resource="pods") == 2
    assert server.request_count(verb="list", resource="nodes") == 2
    after_relist = recorder.of("Pod")[3:]
    assert after_relist[0] == ("DELETED", "lost")
    assert sorted(after_relist[1:3]) == [("SYNC", "kept"), ("SYNC", "new")]
    assert after_relist[3] == ("RELISTED", None)
    assert kept["metadata"]["uid"] in cache.pods
    assert cache.up is True


@pytest.mark.asyncio
async def test_list_errors_back_off_then_sync(server: FakeApiServer, client: KubeClient) -> None:
    server.faults.fail_next(3, status=500, verb="list", resource="pods")
    cache = make_cache(client)
    with capture_logs() as logs:
        async with running(cache):
            await asyncio.wait_for(cache.synced.wait(), 3)
            assert cache.up is True
    retries = [entry for entry in logs if entry["event"] == "kube.cache.retry"]
    assert [entry["attempt"] for entry in retries] == [1, 2, 3]
    assert all(entry["status"] == 500 and entry["step"] == "list" for entry in retries)
    for entry in retries:
        ceiling = min(BACKOFF_MAX, BACKOFF_INITIAL * 2 ** (entry["attempt"] - 1))
        assert ceiling / 2 <= entry["delay_seconds"] <= ceiling
    assert server.request_count(verb="list", resource="pods", status=500) == 3
    assert server.request_count(verb="list", resource="pods", status=200) == 1
    assert [entry["event"] for entry in logs].count("kube.cache.region_up") == 1


@pytest.mark.asyncio
async def test_retry_after_sets_minimum_delay(server: FakeApiServer, client: KubeClient) -> None:
    server.faults.fail_next(1, status=429, verb="list", resource="nodes")
    cache = make_cache(client)
    with capture_logs() as logs:
        async with running(cache):
            await asyncio.wait_for(cache.synced.wait(), 3)
    retries = [entry for entry in logs if entry["event"] == "kube.cache.retry"]
    assert len(retries) == 1
    # The server asked for 1 s; the wait is capped at backoff_max_seconds.
    assert retries[0]["delay_seconds"] == BACKOFF_MAX
    assert retries[0]["status"] == 429


@pytest.mark.asyncio
async def test_watch_error_marks_down_and_relists(server: FakeApiServer, client: KubeClient) -> None:
    cache = make_cache(client)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        server.faults.fail_next(1, status=503, verb="watch", resource="pods")
        server.faults.fail_next(2, status=500, verb="list", resource="pods")
        server.drop_watches(graceful=True)
        await eventually(lambda: not cache.up, what="region down")
        await eventually(lambda: cache.up, what="region up again")
    assert server.request_count(verb="watch", resource="pods", status=503) == 1
    assert server.request_count(verb="list", resource="pods", status=500) == 2
    assert server.request_count(verb="list", resource="pods", status=200) == 2


@pytest.mark.asyncio
async def test_server_down_then_back_up(server: FakeApiServer, client: KubeClient) -> None:
    server.create_pod("old")
    cache = make_cache(client)
    recorder = Recorder()
    cache.add_listener(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        with capture_logs() as logs:
            await server.stop()
            await eventually(lambda: not cache.up, what="region down")
            # The store outlives the HTTP server, as etcd outlives an API server restart.
            server.delete("pods", "old")
            server.create_pod("born-while-down")
            await asyncio.sleep(0.1)
            assert cache.up is False
            await server.start()
            await eventually(lambda: cache.up, what="region up")
            await eventually(lambda: pod_names(cache) == ["born-while-down"], what="relisted pods")
    events = [entry["event"] for entry in logs]
    assert "kube.cache.region_down" in events
    assert "kube.cache.region_up" in events
    # Failed watches and lists of one scope count as consecutive attempts.
    pod_retries = [entry for entry in logs if entry["event"] == "kube.cache.retry" and entry["kind"] == "Pod"]
    assert [entry["attempt"] for entry in pod_retries] == list(range(1, len(pod_retries) + 1))
    assert {entry["step"] for entry in pod_retries} == {"watch", "list"}
    assert cache.synced.is_set()
    assert ("DELETED", "old") in recorder.of("Pod")


@pytest.mark.asyncio
async def test_empty_watches_back_off(server: FakeApiServer, client: KubeClient) -> None:
    # A clock that never moves makes every eventless watch count as a failure.
    cache = make_cache(client, clock=lambda: 0.0)
    with capture_logs() as logs:
        async with running(cache):
            await asyncio.wait_for(cache.synced.wait(), 3)
            await server.wait_for_watches(2)
            server.drop_watches(graceful=True)
            await eventually(
                lambda: any(entry["event"] == "kube.cache.retry" and entry["step"] == "watch" for entry in logs),
                what="watch backoff",
            )
    retry = next(entry for entry in logs if entry["event"] == "kube.cache.retry")
    assert retry["attempt"] == 1
    assert retry["error"] == "watch ended without events"
    assert server.request_count(verb="list") == 2


@pytest.mark.asyncio
async def test_listener_error_does_not_stop_cache(server: FakeApiServer, client: KubeClient) -> None:
    cache = make_cache(client)
    recorder = Recorder()

    def broken(region: str, kind: str, event_type: str, obj: dict) -> None:
        raise RuntimeError("listener bug")

    cache.add_listener(broken)
    cache.add_listener(recorder)
    with capture_logs() as logs:
        async with running(cache):
            await asyncio.wait_for(cache.synced.wait(), 3)
            await server.wait_for_watches(2)
            server.create_pod("still-seen")
            await eventually(lambda: "still-seen" in pod_names(cache), what="pod after listener errors")
    assert ("ADDED", "still-seen") in recorder.of("Pod")
    failures = [entry for entry in logs if entry["event"] == "kube.cache.listener_failed"]
    assert failures
    assert failures[0]["region"] == REGION
    assert failures[0]["exc_info"] is True


# Namespaces -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_namespaces_limit_pods(server: FakeApiServer, client: KubeClient) -> None:
    for namespace in ("team-a", "team-b", "other"):
        server.create("namespaces", {"metadata": {"name": namespace}})
    server.create_pod("a1", namespace="team-a")
    server.create_pod("b1", namespace="team-b")
    server.create_pod("o1", namespace="other")
    # Pods may be read only in the two namespaces, so a cluster-wide pod list would fail.
    read_nodes = {"verbs": ["list", "watch"], "apiGroups": [""], "resources": ["nodes"]}
    read_pods = {"verbs": ["list", "watch"], "apiGroups": [""], "resources": ["pods"]}
    rules = [*RbacPolicy.from_rules([read_nodes]).rules]
    for namespace in ("team-a", "team-b"):
        rules.extend(RbacPolicy.from_rules([read_pods], namespace=namespace).rules)
    server.rbac = RbacPolicy(rules)

    cache = make_cache(client, namespaces=("team-a", "team-b", "team-a"))
    recorder = Recorder()
    cache.add_listener(recorder)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        assert pod_names(cache) == ["a1", "b1"]
        await server.wait_for_watches(3)
        server.create_pod("o2", namespace="other")
        server.create_pod("b2", namespace="team-b")
        await eventually(lambda: "b2" in pod_names(cache), what="team-b pod")
        # Each namespace relists on its own and must leave the other's pods alone. The
        # namespace write moves every watch's version below the compacted one.
        server.create("namespaces", {"metadata": {"name": "bump"}})
        server.compact()
        server.drop_watches(graceful=True)
        await eventually(lambda: server.request_count(verb="list", resource="pods") == 4, what="relists")
        await eventually(lambda: server.open_watches == 3, what="watches after relist")
        assert pod_names(cache) == ["a1", "b1", "b2"]
    assert [call for call in recorder.calls if call[1] == "DELETED"] == []
    assert recorder.of("Pod").count(("RELISTED", None)) == 4
    pod_paths = {record.path for record in server.requests if record.resource == "pods"}
    assert pod_paths == {"/api/v1/namespaces/team-a/pods", "/api/v1/namespaces/team-b/pods"}
    assert server.request_count(status=403) == 0


# Assumed pods -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_assumed_pod_counts_until_bound(server: FakeApiServer, client: KubeClient) -> None:
    server.create_pod("running", node_name="n1")
    server.set_pod_phase("running", "Running")
    server.create_pod("done", node_name="n1")
    server.set_pod_phase("done", "Succeeded")
    pending = server.create_pod("pending")
    uid = pending["metadata"]["uid"]
    cache = make_cache(client)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        assert names(cache.bound_pods()) == ["running"]

        cache.assume(cache.pods[uid], "n1")
        assert cache.is_assumed(uid)
        bound = {pod["metadata"]["name"]: pod for pod in cache.bound_pods()}
        assert sorted(bound) == ["pending", "running"]
        assert bound["pending"]["spec"]["nodeName"] == "n1"
        assert cache.pods[uid]["spec"].get("nodeName") is None

        # An unrelated update of the still-unbound pod keeps the assumption.
        server.patch("pods", "pending", {"metadata": {"labels": {"touched": "yes"}}})
        await eventually(lambda: cache.pods[uid]["metadata"].get("labels", {}).get("touched") == "yes", what="label update")
        assert cache.is_assumed(uid)

        await client.bind_pod("default", "pending", "n1", uid=uid)
        await eventually(lambda: not cache.is_assumed(uid), what="binding confirmed")
        assert names(cache.bound_pods()) == ["pending", "running"]


@pytest.mark.asyncio
async def test_assumed_pod_forget_and_delete(server: FakeApiServer, client: KubeClient) -> None:
    first = server.create_pod("first")
    second = server.create_pod("second")
    cache = make_cache(client)
    async with running(cache):
        await asyncio.wait_for(cache.synced.wait(), 3)
        await server.wait_for_watches(2)
        cache.assume(cache.pods[first["metadata"]["uid"]], "n1")
        cache.assume(cache.pods[second["metadata"]["uid"]], "n1")
        assert names(cache.bound_pods()) == ["first", "second"]
        cache.forget(first["metadata"]["uid"])
        assert names(cache.bound_pods()) == ["second"]
        server.delete("pods", "second")
        await eventually(lambda: not cache.is_assumed(second["metadata"]["uid"]), what="deleted pod dropped")
        assert cache.bound_pods() == []


@pytest.mark.asyncio
async def test_assumed_copy_for_pod_not_yet_seen(client: KubeClient) -> None:
    # A moved copy is assumed in its target region before the watch shows it.
    cache = make_cache(client)
    pod = {"metadata": {"name": "copy", "namespace": "default", "uid": "u-1"}, "spec": {}, "status": {"phase": "Pending"}}
    cache.assume(pod, "n9")
    assert cache.bound_pods() == [{**pod, "spec": {"nodeName": "n9"}}]
    assert pod["spec"] == {}


# Construction and memory --------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"backoff_initial_seconds": 0}, "backoff needs 0 < backoff_initial_seconds", id="zero-initial"),
        pytest.param({"backoff_initial_seconds": 2, "backoff_max_seconds": 1}, "got 2 and 1", id="initial-above-max"),
        pytest.param({"watch_timeout_seconds": 0}, "watch_timeout_seconds must be at least 1, got 0", id="zero-timeout"),
    ],
)
def test_cache_rejects_bad_settings(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ClusterCache(REGION, None, **options)  # type: ignore[arg-type]


def test_compact_drops_managed_fields_and_shares_strings() -> None:
    def pod(name: str) -> dict:
        # Built from fresh strings, as two json.loads calls would make them.
        return {
            "metadata": {
                "name": "".join(name),
                "uid": "".join(["u-", name]),
                "managedFields": [{"manager": "kubectl"}],
                "labels": {"".join(["a", "pp"]): "".join(["de", "mo"])},
            },
            "spec": {"containers": [{"".join(["na", "me"]): "".join(["ma", "in"]), "args": ["".join(["-", "v"])]}]},
            "status": {"phase": "".join(["Pend", "ing"])},
        }

    first, second = compact(pod("p1")), compact(pod("p2"))
    assert first == {
        "metadata": {"name": "p1", "uid": "u-p1", "labels": {"app": "demo"}},
        "spec": {"containers": [{"name": "main", "args": ["-v"]}]},
        "status": {"phase": "Pending"},
    }
    assert next(iter(first["metadata"]["labels"])) is next(iter(second["metadata"]["labels"]))
    assert first["status"]["phase"] is second["status"]["phase"]
    assert first["spec"]["containers"][0]["args"][0] is second["spec"]["containers"][0]["args"][0]
    long_value = "x" * 40
    assert compact({"metadata": {}, "v": long_value})["v"] is long_value
    assert sys.intern("Pending") is first["status"]["phase"]
