"""The fake API server, driven through the real kubernetes-asyncio client.

Every test talks HTTP to `FakeApiServer` instances on loopback through a generated
kubeconfig, so these tests also pin what the daemon will see from the client
library: exception types, status codes, Status bodies and watch behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from kubernetes_asyncio import client, watch
from kubernetes_asyncio.client.exceptions import ApiException

from tests.kubefake import FakeApiServer, RbacPolicy, kubeconfig_dict, load_client_configuration, write_kubeconfig
from tests.kubefake.errors import ApiError
from tests.kubefake.fixtures import REGIONS, FakeRegions, kube_regions, loopback_without_proxy  # noqa: F401
from tests.kubefake.selectors import LabelSelector

pytestmark = pytest.mark.timeout(30)

USER = "system:serviceaccount:carbon-scheduler:carbon-scheduler"


@asynccontextmanager
async def connect(regions: FakeRegions, region: str = "eu-west") -> AsyncIterator[client.ApiClient]:
    configuration = await load_client_configuration(regions.kubeconfig, region)
    async with client.ApiClient(configuration) as api:
        yield api


async def raw(call: Any, *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Call an API method without model decoding; returns (HTTP status, JSON body)."""
    response = await call(*args, _preload_content=False, **kwargs)
    try:
        return response.status, json.loads(await response.read())
    finally:
        response.release()


def status_body(error: ApiException) -> dict[str, Any]:
    return json.loads(error.body)


def pod_model(name: str, *, labels: dict[str, str] | None = None, scheduler: str = "carbon-scheduler") -> client.V1Pod:
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels=labels),
        spec=client.V1PodSpec(
            scheduler_name=scheduler,
            containers=[client.V1Container(name="main", image="busybox:1.36", resources=client.V1ResourceRequirements(requests={"cpu": "500m", "memory": "1Gi"}))],
        ),
    )


def binding(pod: str, node: str, **annotations: str) -> client.V1Binding:
    return client.V1Binding(
        metadata=client.V1ObjectMeta(name=pod, annotations=annotations or None),
        target=client.V1ObjectReference(kind="Node", name=node),
    )


async def collect(stream: watch.Watch, count: int) -> list[dict[str, Any]]:
    events = []
    async for event in stream:
        events.append(event)
        if len(events) == count:
            break
    return events


# Kubeconfig, authentication, object shape.


@pytest.mark.asyncio
async def test_kubeconfig_reaches_each_region(kube_regions: FakeRegions) -> None:
    for region in REGIONS:
        kube_regions[region].add_node(f"{region}-node")
    for region in REGIONS:
        async with connect(kube_regions, region) as api:
            nodes = await client.CoreV1Api(api).list_node()
        assert [node.metadata.name for node in nodes.items] == [f"{region}-node"]
        assert nodes.items[0].metadata.labels["topology.kubernetes.io/region"] == region
    ports = {server.port for server in kube_regions.values()}
    assert len(ports) == 3


@pytest.mark.asyncio
async def test_wrong_token_is_unauthorized(kube_regions: FakeRegions, tmp_path: Path) -> None:
    settings = kubeconfig_dict([kube_regions["eu-west"]])
    settings["users"][0]["user"]["token"] = "not-the-token"
    kubeconfig = tmp_path / "wrong-token"
    kubeconfig.write_text(yaml.safe_dump(settings))
    configuration = await load_client_configuration(kubeconfig, "eu-west")
    async with client.ApiClient(configuration) as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).list_node()
    assert caught.value.status == 401
    assert status_body(caught.value)["reason"] == "Unauthorized"
    assert kube_regions["eu-west"].request_count(status=401) == 1


@pytest.mark.asyncio
async def test_version_and_discovery(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api:
        version = await client.VersionApi(api).get_code()
        batch = await client.BatchV1Api(api).get_api_resources()
    assert (version.major, version.minor) == ("1", "33")
    assert [r.name for r in batch.resources] == ["jobs", "jobs/status"]


@pytest.mark.asyncio
async def test_pod_json_has_server_shape(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        status, created = await raw(v1.create_namespaced_pod, "default", pod_model("shape", labels={"app": "x"}))
        _, listed = await raw(v1.list_namespaced_pod, "default")
    assert status == 201
    assert list(created)[:3] == ["kind", "apiVersion", "metadata"]
    assert created["kind"] == "Pod"
    assert created["apiVersion"] == "v1"
    metadata = created["metadata"]
    assert metadata["name"] == "shape"
    assert metadata["namespace"] == "default"
    assert len(metadata["uid"]) == 36
    assert int(metadata["resourceVersion"]) == kube_regions["eu-west"].resource_version
    assert metadata["creationTimestamp"].endswith("Z")
    assert metadata["generation"] == 1
    assert metadata["labels"] == {"app": "x"}
    assert created["spec"]["schedulerName"] == "carbon-scheduler"
    assert created["spec"]["restartPolicy"] == "Always"
    assert {t["key"] for t in created["spec"]["tolerations"]} == {"node.kubernetes.io/not-ready", "node.kubernetes.io/unreachable"}
    assert created["status"] == {"phase": "Pending", "qosClass": "Burstable"}
    assert listed["kind"] == "PodList"
    assert listed["metadata"]["resourceVersion"] == metadata["resourceVersion"]
    assert "kind" not in listed["items"][0]
    assert listed["items"][0]["metadata"]["uid"] == metadata["uid"]


@pytest.mark.asyncio
async def test_limits_default_requests_and_qos(kube_regions: FakeRegions) -> None:
    pod = kube_regions["eu-west"].create_pod("guaranteed", limits={"cpu": "1", "memory": "1Gi"})
    assert pod["spec"]["containers"][0]["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    assert pod["status"]["qosClass"] == "Guaranteed"
    assert kube_regions["eu-west"].create_pod("idle")["status"]["qosClass"] == "BestEffort"


# Create, read, update, patch, delete.


@pytest.mark.asyncio
async def test_create_twice_is_already_exists(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        await v1.create_namespaced_pod("default", pod_model("twice"))
        with pytest.raises(ApiException) as caught:
            await v1.create_namespaced_pod("default", pod_model("twice"))
    body = status_body(caught.value)
    assert caught.value.status == 409
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'pods "twice" already exists'
    assert body["details"] == {"name": "twice", "kind": "pods"}


@pytest.mark.asyncio
async def test_create_with_resource_version_fails(kube_regions: FakeRegions) -> None:
    model = pod_model("copied")
    model.metadata.resource_version = "12"
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).create_namespaced_pod("default", model)
    assert caught.value.status == 500
    assert status_body(caught.value)["message"] == "resourceVersion should not be set on objects to be created"


@pytest.mark.asyncio
async def test_generate_name_gets_suffix(kube_regions: FakeRegions) -> None:
    model = pod_model("")
    model.metadata = client.V1ObjectMeta(generate_name="worker-")
    async with connect(kube_regions) as api:
        created = await client.CoreV1Api(api).create_namespaced_pod("default", model)
    assert created.metadata.name.startswith("worker-")
    assert len(created.metadata.name) == len("worker-") + 5


@pytest.mark.asyncio
async def test_missing_object_is_not_found_status(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as pod_error:
            await client.CoreV1Api(api).read_namespaced_pod("ghost", "default")
        with pytest.raises(ApiException) as job_error:
            await client.BatchV1Api(api).read_namespaced_job("ghost", "default")
    assert pod_error.value.status == 404
    assert status_body(pod_error.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "ghost" not found',
        "reason": "NotFound",
        "details": {"name": "ghost", "kind": "pods"},
        "code": 404,
    }
    assert status_body(job_error.value)["message"] == 'jobs.batch "ghost" not found'
    assert status_body(job_error.value)["details"] == {"name": "ghost", "group": "batch", "kind": "jobs"}


@pytest.mark.asyncio
async def test_update_with_stale_version_conflicts(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        first = await v1.create_namespaced_pod("default", pod_model("stale"))
        first.metadata.labels = {"step": "one"}
        updated = await v1.replace_namespaced_pod("stale", "default", first)
        first.metadata.labels = {"step": "two"}
        with pytest.raises(ApiException) as caught:
            await v1.replace_namespaced_pod("stale", "default", first)
    assert int(updated.metadata.resource_version) > int(first.metadata.resource_version)
    assert updated.metadata.labels == {"step": "one"}
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "Conflict"
    assert status_body(caught.value)["message"] == (
        'Operation cannot be fulfilled on pods "stale": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


@pytest.mark.asyncio
async def test_update_ignores_status_on_main_resource(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        pod = await v1.create_namespaced_pod("default", pod_model("status-only"))
        pod.status.phase = "Running"
        replaced = await v1.replace_namespaced_pod("status-only", "default", pod)
        patched = await v1.patch_namespaced_pod_status("status-only", "default", {"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}]}})
    assert replaced.status.phase == "Pending"
    assert [(c.type, c.status, c.reason) for c in patched.status.conditions] == [("PodScheduled", "False", "Unschedulable")]


@pytest.mark.asyncio
async def test_patch_content_types(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("patched", labels={"keep": "1", "drop": "1"})
    before = server.resource_version
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        strategic = await v1.patch_namespaced_pod("patched", "default", {"metadata": {"labels": {"drop": None, "added": "yes"}}})
        merge = await v1.patch_namespaced_pod(
            "patched", "default", {"metadata": {"annotations": {"carbon-scheduler.io/region": "eu-west"}}}, _content_type="application/merge-patch+json"
        )
        json_patch = await v1.patch_namespaced_pod("patched", "default", [{"op": "replace", "path": "/metadata/labels/keep", "value": "2"}])
        unchanged = await v1.patch_namespaced_pod("patched", "default", {"metadata": {"labels": {"keep": "2"}}})
    assert strategic.metadata.labels == {"keep": "1", "added": "yes"}
    assert merge.metadata.annotations == {"carbon-scheduler.io/region": "eu-west"}
    assert json_patch.metadata.labels == {"keep": "2", "added": "yes"}
    assert int(json_patch.metadata.resource_version) == before + 3
    # A patch that changes nothing commits nothing, as on etcd.
    assert unchanged.metadata.resource_version == json_patch.metadata.resource_version
    assert [r.query.get("watch") for r in server.requests if r.verb == "patch"] == [None] * 4


@pytest.mark.asyncio
async def test_patch_with_resource_version_is_precondition(kube_regions: FakeRegions) -> None:
    kube_regions["eu-west"].create_pod("locked")
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).patch_namespaced_pod("locked", "default", {"metadata": {"resourceVersion": "1", "labels": {"a": "b"}}})
    assert caught.value.status == 409
    assert status_body(caught.value)["reason"] == "Conflict"


@pytest.mark.asyncio
async def test_pod_spec_change_is_forbidden(kube_regions: FakeRegions) -> None:
    kube_regions["eu-west"].add_node("n1")
    kube_regions["eu-west"].create_pod("fixed")
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).patch_namespaced_pod("fixed", "default", {"spec": {"nodeName": "n1"}})
    body = status_body(caught.value)
    assert caught.value.status == 422
    assert body["reason"] == "Invalid"
    assert body["message"].startswith('Pod "fixed" is invalid: spec: Forbidden: pod updates may not change fields')


@pytest.mark.asyncio
async def test_delete_with_uid_precondition(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    uid = server.create_pod("moved")["metadata"]["uid"]
    wrong = "00000000-0000-4000-8000-000000000000"
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        with pytest.raises(ApiException) as caught:
            await v1.delete_namespaced_pod("moved", "default", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=wrong)))
        deleted = await v1.delete_namespaced_pod("moved", "default", body=client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid)))
        with pytest.raises(ApiException) as gone:
            await v1.read_namespaced_pod("moved", "default")
    assert caught.value.status == 409
    assert status_body(caught.value)["message"] == (
        f'Operation cannot be fulfilled on pods "moved": Precondition failed: UID in precondition: {wrong}, UID in object meta: {uid}'
    )
    assert deleted.metadata.uid == uid
    assert gone.value.status == 404


@pytest.mark.asyncio
async def test_delete_with_resource_version_precondition(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    created = server.create_pod("versioned")
    server.patch("pods", "versioned", {"metadata": {"labels": {"bumped": "yes"}}})
    async with connect(kube_regions) as api:
        options = client.V1DeleteOptions(preconditions=client.V1Preconditions(resource_version=created["metadata"]["resourceVersion"]))
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).delete_namespaced_pod("versioned", "default", body=options)
    assert caught.value.status == 409
    assert "Precondition failed: ResourceVersion in precondition" in status_body(caught.value)["message"]
    assert server.find("pods", "versioned") is not None


@pytest.mark.asyncio
async def test_graceful_deletion_keeps_bound_pod(tmp_path: Path, loopback_without_proxy: None) -> None:
    async with FakeApiServer("eu-west", graceful_pod_deletion=True) as server:
        server.add_node("n1")
        server.create_pod("draining", node_name="n1")
        server.set_pod_phase("draining", "Running")
        configuration = await load_client_configuration(write_kubeconfig(tmp_path / "kubeconfig", [server]), "eu-west")
        async with client.ApiClient(configuration) as api:
            status, body = await raw(client.CoreV1Api(api).delete_namespaced_pod, "draining", "default")
        assert status == 202
        assert body["metadata"]["deletionGracePeriodSeconds"] == 30
        assert server.get("pods", "draining")["metadata"]["deletionTimestamp"] == body["metadata"]["deletionTimestamp"]
        server.finish_pod_deletion("draining")
        assert server.find("pods", "draining") is None


# Binding.


@pytest.mark.asyncio
async def test_binding_assigns_node_once(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    server.add_node("n2")
    server.create_pod("bind-me")
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        status, body = await raw(v1.create_namespaced_pod_binding, "bind-me", "default", binding("bind-me", "n1", **{"carbon-scheduler.io/decision": "green"}))
        conflict_status, conflict = await raw(v1.create_namespaced_pod_binding, "bind-me", "default", binding("bind-me", "n2"))
        pod = await v1.read_namespaced_pod("bind-me", "default")
    assert status == 201
    assert body == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}
    assert pod.spec.node_name == "n1"
    assert pod.metadata.annotations == {"carbon-scheduler.io/decision": "green"}
    assert [(c.type, c.status) for c in pod.status.conditions] == [("PodScheduled", "True")]
    assert conflict_status == 409
    assert conflict["reason"] == "Conflict"
    assert conflict["message"] == 'Operation cannot be fulfilled on pods/binding "bind-me": pod bind-me is already assigned to node "n1"'
    assert server.request_count(verb="create", resource="pods/binding") == 2


@pytest.mark.asyncio
async def test_binding_response_breaks_default_decoding(kube_regions: FakeRegions) -> None:
    # The server returns a Status for a binding, which kubernetes-asyncio cannot
    # decode into V1Binding, so callers must pass _preload_content=False.
    kube_regions["eu-west"].add_node("n1")
    kube_regions["eu-west"].create_pod("decoded")
    async with connect(kube_regions) as api:
        with pytest.raises(ValueError, match="target"):
            await client.CoreV1Api(api).create_namespaced_pod_binding("decoded", "default", binding("decoded", "n1"))
    assert kube_regions["eu-west"].get("pods", "decoded")["spec"]["nodeName"] == "n1"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("pod", "node", "message"),
    [
        pytest.param("absent", "n1", 'pods "absent" not found', id="missing-pod"),
        pytest.param("present", "absent-node", 'nodes "absent-node" not found', id="missing-node"),
    ],
)
async def test_binding_missing_target_is_not_found(kube_regions: FakeRegions, pod: str, node: str, message: str) -> None:
    kube_regions["eu-west"].add_node("n1")
    kube_regions["eu-west"].create_pod("present")
    async with connect(kube_regions) as api:
        status, body = await raw(client.CoreV1Api(api).create_namespaced_pod_binding, pod, "default", binding(pod, node))
    assert status == 404
    assert body["reason"] == "NotFound"
    assert body["message"] == message


@pytest.mark.asyncio
async def test_legacy_bindings_collection(kube_regions: FakeRegions) -> None:
    kube_regions["eu-west"].add_node("n1")
    kube_regions["eu-west"].create_pod("legacy")
    async with connect(kube_regions) as api:
        status, _ = await raw(client.CoreV1Api(api).create_namespaced_binding, "default", binding("legacy", "n1"))
    assert status == 201
    assert kube_regions["eu-west"].get("pods", "legacy")["spec"]["nodeName"] == "n1"


# Events and Leases.


@pytest.mark.asyncio
async def test_events_created_and_selected(kube_regions: FakeRegions) -> None:
    pod = kube_regions["eu-west"].create_pod("noted")
    event = client.CoreV1Event(
        metadata=client.V1ObjectMeta(generate_name="noted."),
        involved_object=client.V1ObjectReference(kind="Pod", namespace="default", name="noted", uid=pod["metadata"]["uid"]),
        reason="Deferred",
        message="waiting for a low-carbon window",
        type="Normal",
        source=client.V1EventSource(component="carbon-scheduler"),
    )
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        created = await v1.create_namespaced_event("default", event)
        selected = await v1.list_namespaced_event("default", field_selector="involvedObject.name=noted,reason=Deferred")
        other = await v1.list_namespaced_event("default", field_selector="involvedObject.name=other")
    assert created.metadata.name.startswith("noted.")
    assert [e.message for e in selected.items] == ["waiting for a low-carbon window"]
    assert other.items == []


@pytest.mark.asyncio
async def test_lease_update_conflicts_for_second_writer(kube_regions: FakeRegions) -> None:
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="carbon-scheduler"),
        spec=client.V1LeaseSpec(holder_identity="a", lease_duration_seconds=15),
    )
    async with connect(kube_regions) as api_a, connect(kube_regions) as api_b:
        leases_a, leases_b = client.CoordinationV1Api(api_a), client.CoordinationV1Api(api_b)
        await leases_a.create_namespaced_lease("default", lease)
        seen_by_a = await leases_a.read_namespaced_lease("carbon-scheduler", "default")
        seen_by_b = await leases_b.read_namespaced_lease("carbon-scheduler", "default")
        seen_by_a.spec.renew_time = "2024-05-01T10:00:00.000000Z"
        renewed = await leases_a.replace_namespaced_lease("carbon-scheduler", "default", seen_by_a)
        seen_by_b.spec.holder_identity = "b"
        with pytest.raises(ApiException) as caught:
            await leases_b.replace_namespaced_lease("carbon-scheduler", "default", seen_by_b)
        with pytest.raises(ApiException) as duplicate:
            await leases_b.create_namespaced_lease("default", lease)
    assert renewed.spec.holder_identity == "a"
    assert caught.value.status == 409
    assert status_body(caught.value)["message"].startswith('Operation cannot be fulfilled on leases.coordination.k8s.io "carbon-scheduler"')
    assert duplicate.value.status == 409
    assert status_body(duplicate.value)["reason"] == "AlreadyExists"


# Lists and selectors.


LABELLED_PODS = {
    "web-eu": {"app": "web", "tier": "front", "carbon-scheduler.io/class": "critical"},
    "web-us": {"app": "web", "tier": "back"},
    "batch-1": {"app": "batch", "carbon-scheduler.io/class": "deferrable"},
    "plain": {},
}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("app=web", {"web-eu", "web-us"}, id="equals"),
        pytest.param("app==web", {"web-eu", "web-us"}, id="double-equals"),
        pytest.param("app!=web", {"batch-1", "plain"}, id="not-equals-includes-missing"),
        pytest.param("tier in (front, middle)", {"web-eu"}, id="in"),
        pytest.param("tier notin (front)", {"web-us", "batch-1", "plain"}, id="notin-includes-missing"),
        pytest.param("carbon-scheduler.io/class", {"web-eu", "batch-1"}, id="exists"),
        pytest.param("!carbon-scheduler.io/class", {"web-us", "plain"}, id="does-not-exist"),
        pytest.param("app=web,!carbon-scheduler.io/class", {"web-us"}, id="combined"),
        pytest.param("", set(LABELLED_PODS), id="empty"),
    ],
)
async def test_list_label_selector(kube_regions: FakeRegions, selector: str, expected: set[str]) -> None:
    for name, labels in LABELLED_PODS.items():
        kube_regions["eu-west"].create_pod(name, labels=labels)
    async with connect(kube_regions) as api:
        pods = await client.CoreV1Api(api).list_namespaced_pod("default", label_selector=selector)
    assert {pod.metadata.name for pod in pods.items} == expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("selector", "expected"),
    [
        pytest.param("spec.nodeName=", {"pending-a", "other-scheduler"}, id="unbound"),
        pytest.param("spec.nodeName=n1", {"bound", "finished", "elsewhere"}, id="on-node"),
        pytest.param("spec.nodeName!=", {"bound", "finished", "elsewhere"}, id="bound"),
        pytest.param("spec.schedulerName=carbon-scheduler", {"pending-a", "bound", "finished", "elsewhere"}, id="scheduler"),
        pytest.param("status.phase=Succeeded", {"finished", "elsewhere"}, id="phase"),
        pytest.param("status.phase!=Succeeded,spec.nodeName=n1", {"bound"}, id="combined"),
        pytest.param("metadata.name=bound", {"bound"}, id="name"),
        pytest.param("metadata.namespace=default", {"pending-a", "bound", "finished", "other-scheduler"}, id="namespace"),
        pytest.param("metadata.namespace!=default", {"elsewhere"}, id="other-namespace"),
    ],
)
async def test_list_field_selector(kube_regions: FakeRegions, selector: str, expected: set[str]) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    server.create_pod("pending-a")
    server.create_pod("bound", node_name="n1")
    server.create_pod("finished", node_name="n1")
    server.set_pod_phase("finished", "Succeeded")
    server.create_pod("other-scheduler", scheduler_name="default-scheduler")
    server.create_pod("elsewhere", namespace="team-b", node_name="n1")
    server.set_pod_phase("elsewhere", "Succeeded", namespace="team-b")
    async with connect(kube_regions) as api:
        pods = await client.CoreV1Api(api).list_pod_for_all_namespaces(field_selector=selector)
    assert {pod.metadata.name for pod in pods.items} == expected


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("kind", "selector", "message"),
    [
        pytest.param("field", "spec.priority=1", "field label not supported: spec.priority", id="unsupported-field"),
        pytest.param("label", "app in web", "unable to parse requirement", id="in-without-parentheses"),
        pytest.param("label", "app=web,", "unable to parse requirement", id="trailing-comma"),
        pytest.param("label", "bad key=1", "unable to parse requirement", id="space-in-key"),
    ],
)
async def test_bad_selector_is_bad_request(kube_regions: FakeRegions, kind: str, selector: str, message: str) -> None:
    arguments = {"field_selector": selector} if kind == "field" else {"label_selector": selector}
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).list_namespaced_pod("default", **arguments)
    assert caught.value.status == 400
    assert status_body(caught.value)["reason"] == "BadRequest"
    assert message in status_body(caught.value)["message"]


_label_values = st.sampled_from(["a", "b", "c"])
_label_sets = st.dictionaries(st.sampled_from(["x", "y", "z"]), _label_values, max_size=3)


@st.composite
def _requirements(draw: st.DrawFn) -> tuple[str, Any]:
    key = draw(st.sampled_from(["x", "y", "z"]))
    operator = draw(st.sampled_from(["=", "!=", "in", "notin", "exists", "!"]))
    values = draw(st.lists(_label_values, min_size=1, max_size=3, unique=True))
    if operator == "exists":
        return key, lambda labels: key in labels
    if operator == "!":
        return f"!{key}", lambda labels: key not in labels
    if operator == "=":
        return f"{key}={values[0]}", lambda labels: labels.get(key) == values[0]
    if operator == "!=":
        return f"{key}!={values[0]}", lambda labels: labels.get(key) != values[0]
    text = f"{key} {operator} ({', '.join(values)})"
    if operator == "in":
        return text, lambda labels: labels.get(key) in values
    return text, lambda labels: labels.get(key) not in values


@given(requirements=st.lists(_requirements(), min_size=1, max_size=4), labels=_label_sets)
def test_label_selector_matches_requirement_semantics(requirements: list[tuple[str, Any]], labels: dict[str, str]) -> None:
    selector = LabelSelector(",".join(text for text, _ in requirements))
    expected = all(check(labels) for _, check in requirements)
    assert selector.matches(labels) is expected


@pytest.mark.asyncio
async def test_list_pages_with_limit_and_continue(kube_regions: FakeRegions) -> None:
    for index in range(5):
        kube_regions["eu-west"].create_pod(f"page-{index}")
    names = []
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        page = await v1.list_namespaced_pod("default", limit=2)
        first_remaining = page.metadata.remaining_item_count
        names += [pod.metadata.name for pod in page.items]
        while page.metadata._continue:
            page = await v1.list_namespaced_pod("default", limit=2, _continue=page.metadata._continue)
            names += [pod.metadata.name for pod in page.items]
    assert names == [f"page-{index}" for index in range(5)]
    assert first_remaining == 3


@pytest.mark.asyncio
async def test_cluster_wide_and_namespaced_paths(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("a", namespace="team-a")
    server.create_pod("b", namespace="team-b")
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        everywhere = await v1.list_pod_for_all_namespaces()
        team_a = await v1.list_namespaced_pod("team-a")
        namespaces = await v1.list_namespace()
    assert [(p.metadata.namespace, p.metadata.name) for p in everywhere.items] == [("team-a", "a"), ("team-b", "b")]
    assert [p.metadata.name for p in team_a.items] == ["a"]
    assert {n.metadata.name for n in namespaces.items} == {"default", "kube-system", "kube-public", "kube-node-lease"}
    assert server.requests[0].path == "/api/v1/pods"
    assert server.requests[1].path == "/api/v1/namespaces/team-a/pods"


# Watch.


@pytest.mark.asyncio
async def test_watch_replays_after_resource_version(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    server.create_pod("old")
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        listed = await v1.list_namespaced_pod("default")
        server.create_pod("new")
        server.bind_pod("new", "n1")
        server.delete("pods", "old")
        async with watch.Watch() as stream:
            events = await collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=listed.metadata.resource_version, timeout_seconds=5), 3)
    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "new"), ("MODIFIED", "new"), ("DELETED", "old")]
    assert events[1]["object"].spec.node_name == "n1"
    versions = [int(e["object"].metadata.resource_version) for e in events]
    assert versions == sorted(versions)
    assert versions[-1] == server.resource_version


@pytest.mark.asyncio
async def test_watch_without_version_starts_with_added(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("existing-1")
    server.create_pod("existing-2")
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        async with watch.Watch() as stream:
            events = stream.stream(v1.list_namespaced_pod, "default", timeout_seconds=5)
            initial = await collect(events, 2)
            await server.wait_for_watches(1)
            server.create_pod("live")
            live = await collect(events, 1)
    assert [(e["type"], e["object"].metadata.name) for e in initial] == [("ADDED", "existing-1"), ("ADDED", "existing-2")]
    assert [(e["type"], e["object"].metadata.name) for e in live] == [("ADDED", "live")]


@pytest.mark.asyncio
async def test_watch_bookmarks_carry_only_version(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("marker")
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        start = server.resource_version
        async with watch.Watch() as stream:
            events = stream.stream(v1.list_namespaced_pod, "default", resource_version=start, allow_watch_bookmarks=True, timeout_seconds=5)
            task = asyncio.ensure_future(collect(events, 1))
            await server.wait_for_watches(1)
            server.create(
                "events",
                {"metadata": {"name": "unrelated"}, "involvedObject": {"kind": "Pod", "name": "marker"}},
                namespace="default",
            )
            assert server.send_bookmarks() == 1
            (bookmark,) = await task
            resumed_from = stream.resource_version
    assert bookmark["type"] == "BOOKMARK"
    assert bookmark["raw_object"] == {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(start + 1)}}
    assert resumed_from == str(start + 1)


@pytest.mark.asyncio
async def test_watch_bookmark_after_quiet_interval(tmp_path: Path, loopback_without_proxy: None) -> None:
    async with FakeApiServer("eu-west", bookmark_interval_seconds=0.2) as server:
        configuration = await load_client_configuration(write_kubeconfig(tmp_path / "kubeconfig", [server]), "eu-west")
        async with client.ApiClient(configuration) as api, watch.Watch() as stream:
            started = asyncio.get_running_loop().time()
            events = stream.stream(client.CoreV1Api(api).list_node, resource_version=server.resource_version, allow_watch_bookmarks=True, timeout_seconds=5)
            (event,) = await collect(events, 1)
            elapsed = asyncio.get_running_loop().time() - started
    assert event["type"] == "BOOKMARK"
    assert 0.2 <= elapsed < 2.0


@pytest.mark.asyncio
async def test_watch_send_initial_events_ends_with_marked_bookmark(kube_regions: FakeRegions) -> None:
    kube_regions["eu-west"].create_pod("seen")
    async with connect(kube_regions) as api, watch.Watch() as stream:
        events = stream.stream(
            client.CoreV1Api(api).list_namespaced_pod,
            "default",
            allow_watch_bookmarks=True,
            send_initial_events=True,
            resource_version_match="NotOlderThan",
            timeout_seconds=5,
        )
        first, marker = await collect(events, 2)
    assert (first["type"], first["object"].metadata.name) == ("ADDED", "seen")
    assert marker["type"] == "BOOKMARK"
    assert marker["raw_object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


@pytest.mark.asyncio
async def test_watch_selector_turns_changes_into_add_and_delete(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("mover", labels={"carbon-scheduler.io/class": "deferrable"})
    start = server.resource_version
    server.patch("pods", "mover", {"metadata": {"labels": {"carbon-scheduler.io/class": "critical"}}})
    server.patch("pods", "mover", {"metadata": {"labels": {"carbon-scheduler.io/class": "deferrable", "seen": "yes"}}})
    async with connect(kube_regions) as api, watch.Watch() as stream:
        events = await collect(
            stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default", label_selector="carbon-scheduler.io/class=deferrable", resource_version=start, timeout_seconds=5),
            2,
        )
    assert [e["type"] for e in events] == ["DELETED", "ADDED"]
    # The DELETED event shows the last matching state at the version of the change.
    assert events[0]["raw_object"]["metadata"]["labels"] == {"carbon-scheduler.io/class": "deferrable"}
    assert events[0]["raw_object"]["metadata"]["resourceVersion"] == str(start + 1)
    assert events[1]["object"].metadata.labels["seen"] == "yes"


@pytest.mark.asyncio
async def test_watch_expired_version_is_gone(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("before")
    old = server.resource_version - 1
    server.compact()
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        status, _ = 0, None
        response = await v1.list_namespaced_pod("default", watch=True, resource_version=old, _preload_content=False)
        try:
            status, line = response.status, json.loads(await response.content.readline())
            rest = await response.content.read()
        finally:
            response.release()
        async with watch.Watch() as stream:
            with pytest.raises(ApiException) as caught:
                await collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=old, timeout_seconds=5), 1)
    assert status == 200
    assert line == {
        "type": "ERROR",
        "object": {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": f"too old resource version: {old} ({server.resource_version})",
            "reason": "Expired",
            "code": 410,
        },
    }
    assert rest == b""
    assert caught.value.status == 410


@pytest.mark.asyncio
async def test_watch_history_window_is_bounded(tmp_path: Path, loopback_without_proxy: None) -> None:
    async with FakeApiServer("eu-west", history_limit=3) as server:
        configuration = await load_client_configuration(write_kubeconfig(tmp_path / "kubeconfig", [server]), "eu-west")
        start = server.resource_version
        for index in range(3):
            server.create_pod(f"p{index}")
        async with client.ApiClient(configuration) as api:
            v1 = client.CoreV1Api(api)
            async with watch.Watch() as stream:
                within = await collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=start, timeout_seconds=5), 3)
            server.create_pod("p3")
            async with watch.Watch() as stream:
                with pytest.raises(ApiException) as caught:
                    await collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=start, timeout_seconds=5), 1)
    assert [e["object"].metadata.name for e in within] == ["p0", "p1", "p2"]
    assert caught.value.status == 410


@pytest.mark.asyncio
async def test_watch_ends_at_timeout_seconds(kube_regions: FakeRegions) -> None:
    async with connect(kube_regions) as api, watch.Watch() as stream:
        started = asyncio.get_running_loop().time()
        events = await collect(stream.stream(client.CoreV1Api(api).list_node, resource_version=kube_regions["eu-west"].resource_version, timeout_seconds=1), 1)
        elapsed = asyncio.get_running_loop().time() - started
    assert events == []
    assert 1.0 <= elapsed < 3.0


# Jobs.


def job_model(name: str) -> client.V1Job:
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(
            backoff_limit=1,
            template=client.V1PodTemplateSpec(
                metadata=client.V1ObjectMeta(labels={"carbon-scheduler.io/class": "deferrable"}),
                spec=client.V1PodSpec(
                    scheduler_name="carbon-scheduler",
                    restart_policy="Never",
                    containers=[client.V1Container(name="work", image="busybox:1.36")],
                ),
            ),
        ),
    )


@pytest.mark.asyncio
async def test_job_gets_one_owned_pod(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    async with connect(kube_regions) as api:
        job = await client.BatchV1Api(api).create_namespaced_job("default", job_model("train"))
        pods = await client.CoreV1Api(api).list_namespaced_pod("default", label_selector="batch.kubernetes.io/job-name=train")
    assert len(pods.items) == 1
    pod = pods.items[0]
    assert pod.metadata.name.startswith("train-")
    assert pod.metadata.labels["carbon-scheduler.io/class"] == "deferrable"
    (owner,) = pod.metadata.owner_references
    assert (owner.api_version, owner.kind, owner.name, owner.uid, owner.controller) == ("batch/v1", "Job", "train", job.metadata.uid, True)
    assert pod.spec.scheduler_name == "carbon-scheduler"
    assert job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": job.metadata.uid}
    assert server.get("jobs", "train")["status"]["active"] == 1


@pytest.mark.asyncio
async def test_job_status_follows_pod_phases(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    template = {"spec": {"restartPolicy": "Never", "schedulerName": "carbon-scheduler", "containers": [{"name": "work", "image": "busybox:1.36"}]}}
    server.create("jobs", {"metadata": {"name": "retry"}, "spec": {"backoffLimit": 1, "template": template}}, namespace="default")
    (first,) = server.list("pods", label_selector="job-name=retry")
    server.bind_pod(first["metadata"]["name"], "n1")
    server.set_pod_phase(first["metadata"]["name"], "Failed")
    pods = server.list("pods", label_selector="job-name=retry")
    replacement = next(p for p in pods if p["metadata"]["name"] != first["metadata"]["name"])
    server.bind_pod(replacement["metadata"]["name"], "n1")
    server.set_pod_phase(replacement["metadata"]["name"], "Succeeded")
    status = server.get("jobs", "retry")["status"]
    assert len(pods) == 2
    assert status["failed"] == 1
    assert status["succeeded"] == 1
    assert "active" not in status
    assert {c["type"] for c in status["conditions"] if c["status"] == "True"} == {"SuccessCriteriaMet", "Complete"}
    assert status["completionTime"]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("policy", "pods_left", "owners_left"),
    [
        pytest.param("Background", 0, 0, id="background"),
        pytest.param("Foreground", 0, 0, id="foreground"),
        pytest.param(None, 1, 0, id="default-orphans"),
        pytest.param("Orphan", 1, 0, id="orphan"),
    ],
)
async def test_job_delete_propagation(kube_regions: FakeRegions, policy: str | None, pods_left: int, owners_left: int) -> None:
    server = kube_regions["eu-west"]
    async with connect(kube_regions) as api:
        batch = client.BatchV1Api(api)
        await batch.create_namespaced_job("default", job_model("cleanup"))
        status = await batch.delete_namespaced_job("cleanup", "default", propagation_policy=policy)
    pods = server.list("pods", label_selector="job-name=cleanup")
    assert status.status == "Success"
    assert server.find("jobs", "cleanup") is None
    assert len(pods) == pods_left
    assert sum(len(p["metadata"].get("ownerReferences", [])) for p in pods) == owners_left


@pytest.mark.asyncio
async def test_job_template_rejects_restart_always(kube_regions: FakeRegions) -> None:
    model = job_model("always")
    model.spec.template.spec.restart_policy = "Always"
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as caught:
            await client.BatchV1Api(api).create_namespaced_job("default", model)
    assert caught.value.status == 422
    assert status_body(caught.value)["details"]["causes"][0]["field"] == "spec.template.spec.restartPolicy"


# Faults.


@pytest.mark.asyncio
async def test_fault_drop_breaks_open_watch(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    async with connect(kube_regions) as api, watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default", resource_version=server.resource_version)
        task = asyncio.ensure_future(collect(events, 2))
        await server.wait_for_watches(1)
        server.create_pod("before-drop")
        assert server.drop_watches() == 1
        with pytest.raises(aiohttp.ClientPayloadError):
            await task
    await server.wait_for_watches(0)
    assert server.open_watches == 0


@pytest.mark.asyncio
async def test_fault_graceful_drop_ends_stream(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    async with connect(kube_regions) as api, watch.Watch() as stream:
        events = stream.stream(client.CoreV1Api(api).list_namespaced_pod, "default", resource_version=server.resource_version, timeout_seconds=30)
        task = asyncio.ensure_future(collect(events, 2))
        await server.wait_for_watches(1)
        server.create_pod("last")
        server.drop_watches(graceful=True)
        received = await task
    assert [e["object"].metadata.name for e in received] == ["last"]


@pytest.mark.asyncio
async def test_fault_next_watch_resume_expires(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.faults.expire_next_watch()
    version = server.resource_version
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        async with watch.Watch() as stream:
            with pytest.raises(ApiException) as caught:
                await collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=version, timeout_seconds=5), 1)
        server.create_pod("after")
        async with watch.Watch() as stream:
            (event,) = await collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=version, timeout_seconds=5), 1)
    assert caught.value.status == 410
    assert event["object"].metadata.name == "after"


@pytest.mark.asyncio
async def test_fault_fail_next_matching_requests(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    server.create_pod("flaky")
    server.faults.fail_next(2, verb="create", resource="pods/binding")
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        nodes = await v1.list_node()
        failures = [await raw(v1.create_namespaced_pod_binding, "flaky", "default", binding("flaky", "n1")) for _ in range(2)]
        status, _ = await raw(v1.create_namespaced_pod_binding, "flaky", "default", binding("flaky", "n1"))
    assert len(nodes.items) == 1
    assert [code for code, _ in failures] == [500, 500]
    assert failures[0][1]["reason"] == "InternalError"
    assert failures[0][1]["message"] == "Internal error occurred: injected fault"
    assert status == 201
    assert server.request_count(resource="pods/binding", status=500) == 2


@pytest.mark.asyncio
async def test_fault_too_many_requests_has_retry_after(kube_regions: FakeRegions) -> None:
    kube_regions["eu-west"].faults.fail_next(status=429, path="/nodes")
    async with connect(kube_regions) as api:
        with pytest.raises(ApiException) as caught:
            await client.CoreV1Api(api).list_node()
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "1"
    assert status_body(caught.value)["reason"] == "TooManyRequests"


@pytest.mark.asyncio
async def test_fault_delay_holds_responses(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.faults.delay(0.5, verb="list", resource="nodes", count=2)
    loop = asyncio.get_running_loop()
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        with pytest.raises(asyncio.TimeoutError):
            await v1.list_node(_request_timeout=0.1)
        started = loop.time()
        await v1.list_node()
        delayed = loop.time() - started
        started = loop.time()
        await v1.list_node()
        prompt = loop.time() - started
    assert 0.5 <= delayed < 1.5
    assert prompt < 0.4


@pytest.mark.asyncio
async def test_server_down_refuses_then_keeps_state(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("survivor")
    port, version = server.port, server.resource_version
    async with connect(kube_regions) as api:
        v1 = client.CoreV1Api(api)
        async with watch.Watch() as stream:
            task = asyncio.ensure_future(collect(stream.stream(v1.list_namespaced_pod, "default", resource_version=version), 1))
            await server.wait_for_watches(1)
            await server.stop()
            with pytest.raises(aiohttp.ClientPayloadError):
                await task
        with pytest.raises(aiohttp.ClientConnectorError):
            await v1.list_namespaced_pod("default")
        await server.start()
        pods = await v1.list_namespaced_pod("default")
    assert server.port == port
    assert [p.metadata.name for p in pods.items] == ["survivor"]
    assert pods.metadata.resource_version == str(version)


# RBAC.


RBAC_MANIFEST = """\
apiVersion: v1
kind: ServiceAccount
metadata: {name: carbon-scheduler, namespace: carbon-scheduler}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: carbon-scheduler}
rules:
  - apiGroups: [""]
    resources: [pods, nodes]
    verbs: [get, list, watch]
  - apiGroups: [""]
    resources: [events]
    verbs: [create, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: carbon-scheduler-leader, namespace: carbon-scheduler}
rules:
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, create, update]
"""


@pytest.mark.asyncio
async def test_rbac_denies_outside_manifest(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    server.create_pod("p1")
    server.rbac = RbacPolicy.from_yaml(RBAC_MANIFEST)
    async with connect(kube_regions) as api:
        v1, leases = client.CoreV1Api(api), client.CoordinationV1Api(api)
        pods = await v1.list_pod_for_all_namespaces()
        bind_status, bind_denied = await raw(v1.create_namespaced_pod_binding, "p1", "default", binding("p1", "n1"))
        with pytest.raises(ApiException) as lease_denied:
            await leases.read_namespaced_lease("carbon-scheduler", "default")
        with pytest.raises(ApiException) as lease_missing:
            await leases.read_namespaced_lease("carbon-scheduler", "carbon-scheduler")
        with pytest.raises(ApiException) as node_denied:
            await v1.delete_node("n1")

    assert [p.metadata.name for p in pods.items] == ["p1"]
    assert bind_status == 403
    assert bind_denied == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": f'pods "p1" is forbidden: User "{USER}" cannot create resource "pods/binding" in API group "" in the namespace "default"',
        "reason": "Forbidden",
        "details": {"name": "p1", "kind": "pods"},
        "code": 403,
    }
    assert status_body(lease_denied.value)["message"] == (
        f'leases.coordination.k8s.io "carbon-scheduler" is forbidden: User "{USER}" cannot get resource "leases" '
        'in API group "coordination.k8s.io" in the namespace "default"'
    )
    assert lease_missing.value.status == 404

    assert status_body(node_denied.value)["message"] == (
        f'nodes "n1" is forbidden: User "{USER}" cannot delete resource "nodes" in API group "" at the cluster scope'
    )
    assert server.find("pods", "p1")["spec"].get("nodeName") is None
    assert server.used_permissions() == {
        ("list", "", "pods"),
        ("create", "", "pods/binding"),
        ("get", "coordination.k8s.io", "leases"),
        ("delete", "", "nodes"),
    }


@pytest.mark.parametrize(
    ("rule", "request_attributes", "allowed"),
    [
        pytest.param({"apiGroups": [""], "resources": ["pods/binding"], "verbs": ["create"]}, ("create", "", "pods", "binding", "p", "ns"), True, id="subresource"),
        pytest.param({"apiGroups": [""], "resources": ["pods"], "verbs": ["create"]}, ("create", "", "pods", "binding", "p", "ns"), False, id="resource-is-not-subresource"),
        pytest.param({"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["patch"]}, ("patch", "", "pods", "status", "p", "ns"), True, id="any-status"),
        pytest.param({"apiGroups": [""], "resources": ["*"], "verbs": ["*"]}, ("delete", "batch", "jobs", "", "j", "ns"), False, id="group-mismatch"),
        pytest.param({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lock"], "verbs": ["get"]}, ("get", "coordination.k8s.io", "leases", "", "lock", "ns"), True, id="named"),
        pytest.param({"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["lock"], "verbs": ["create"]}, ("create", "coordination.k8s.io", "leases", "", "", "ns"), False, id="named-never-matches-create"),
    ],
)
def test_rbac_rule_matching(rule: dict[str, Any], request_attributes: tuple[str, ...], allowed: bool) -> None:
    assert RbacPolicy.from_rules([rule]).allows(*request_attributes) is allowed


def test_rbac_role_applies_in_its_namespace() -> None:
    role = {
        "kind": "Role",
        "metadata": {"name": "events", "namespace": "carbon-scheduler"},
        "rules": [{"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}],
    }
    policy = RbacPolicy.from_manifests([role, {"kind": "ServiceAccount", "metadata": {"name": "sa"}}])
    assert policy.allows("create", "", "events", "", "", "carbon-scheduler") is True
    assert policy.allows("create", "", "events", "", "", "default") is False
    assert policy.allows("create", "", "events", "", "", "") is False


def test_rbac_role_without_namespace_is_rejected() -> None:
    with pytest.raises(ValueError, match="has no metadata.namespace"):
        RbacPolicy.from_yaml("kind: Role\nmetadata: {name: r}\nrules: []\n")


# Direct driving API.


@pytest.mark.asyncio
async def test_node_readiness_and_taints(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("gpu", cpu=8, memory="32Gi", extended={"nvidia.com/gpu": 2}, taints=[{"key": "gpu", "value": "true", "effect": "NoSchedule"}])
    server.set_node_ready("gpu", False)
    async with connect(kube_regions) as api:
        node = await client.CoreV1Api(api).read_node("gpu")
    assert node.status.allocatable == {"cpu": "8", "ephemeral-storage": "100Gi", "memory": "32Gi", "pods": "110", "nvidia.com/gpu": "2"}
    assert {c.type: c.status for c in node.status.conditions}["Ready"] == "False"
    assert [(t.key, t.effect) for t in node.spec.taints] == [("gpu", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoSchedule"), ("node.kubernetes.io/not-ready", "NoExecute")]


@pytest.mark.asyncio
async def test_pod_phase_needs_binding_and_waits(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.add_node("n1")
    server.create_pod("runner")
    with pytest.raises(ValueError, match="no spec.nodeName"):
        server.set_pod_phase("runner", "Running")

    async def bind_later() -> None:
        async with connect(kube_regions) as api:
            await raw(client.CoreV1Api(api).create_namespaced_pod_binding, "runner", "default", binding("runner", "n1"))

    task = asyncio.ensure_future(bind_later())
    await server.wait_for(lambda s: bool(s.get("pods", "runner")["spec"].get("nodeName")), what="runner bound")
    await task
    running = server.set_pod_phase("runner", "Running")
    assert running["status"]["phase"] == "Running"
    assert running["status"]["containerStatuses"][0]["state"]["running"]["startedAt"] == running["status"]["startTime"]
    with pytest.raises(ApiError) as caught:
        server.get("pods", "nobody")
    assert caught.value.code == 404


@pytest.mark.asyncio
async def test_run_bound_pods_starts_them(tmp_path: Path, loopback_without_proxy: None) -> None:
    async with FakeApiServer("us-east", run_bound_pods=True) as server:
        server.add_node("n1")
        server.create_pod("auto")
        configuration = await load_client_configuration(write_kubeconfig(tmp_path / "kubeconfig", [server]), "us-east")
        async with client.ApiClient(configuration) as api:
            await raw(client.CoreV1Api(api).create_namespaced_pod_binding, "auto", "default", binding("auto", "n1"))
        pod = server.get("pods", "auto")
    assert pod["status"]["phase"] == "Running"
    assert [c["type"] for c in pod["status"]["conditions"]] == ["PodScheduled", "PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady"]


@pytest.mark.asyncio
async def test_delete_collection_by_label(kube_regions: FakeRegions) -> None:
    server = kube_regions["eu-west"]
    server.create_pod("tmp-1", labels={"tmp": "yes"})
    server.create_pod("tmp-2", labels={"tmp": "yes"})
    server.create_pod("keep")
    async with connect(kube_regions) as api:
        await client.CoreV1Api(api).delete_collection_namespaced_pod("default", label_selector="tmp=yes")
    assert [p["metadata"]["name"] for p in server.list("pods")] == ["keep"]
    assert server.request_count(verb="deletecollection", resource="pods") == 1
