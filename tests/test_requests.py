"""Effective pod requests and pod spec reading.

Expected requests are worked out by hand from the rule in resourcehelper.PodRequests:
max(sum of app containers and sidecars, each regular init container plus the
sidecars before it), plus overhead.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import pytest

from carbon_scheduler.model import NodeSelectorRequirement, NodeSelectorTerm, Resources, Toleration
from carbon_scheduler.policy.requests import (
    PodSpecError,
    effective_request,
    parse_resource_list,
    pod_requirements,
)

MI = 2**20
GI = 2**30


def container(requests: Mapping[str, Any] | None = None, limits: Mapping[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    resources: dict[str, Any] = {}
    if requests is not None:
        resources["requests"] = dict(requests)
    if limits is not None:
        resources["limits"] = dict(limits)
    return {"name": "c", "image": "busybox", "resources": resources, **extra}


def sidecar(requests: Mapping[str, Any]) -> dict[str, Any]:
    return container(requests, restartPolicy="Always")


# --- parse_resource_list -------------------------------------------------------

RESOURCE_LISTS = [
    ("empty", {}, Resources()),
    ("cpu millicores", {"cpu": "250m"}, Resources(milli_cpu=250)),
    ("cpu cores as number", {"cpu": 2}, Resources(milli_cpu=2000)),
    ("cpu sub-milli rounds up", {"cpu": "0.0001"}, Resources(milli_cpu=1)),
    ("memory binary", {"memory": "1.5Gi"}, Resources(memory=3 * GI // 2)),
    ("memory exponent", {"memory": "1e9"}, Resources(memory=10**9)),
    ("memory fraction rounds up", {"memory": "0.5"}, Resources(memory=1)),
    ("ephemeral storage", {"ephemeral-storage": "10G"}, Resources(ephemeral_storage=10 * 10**9)),
    ("pods skipped", {"pods": "110", "cpu": "1"}, Resources(milli_cpu=1000)),
    ("extended resource", {"nvidia.com/gpu": "2"}, Resources(scalar=MappingProxyType({"nvidia.com/gpu": 2}))),
    ("hugepages", {"hugepages-2Mi": "4Mi"}, Resources(scalar=MappingProxyType({"hugepages-2Mi": 4 * MI}))),
]


@pytest.mark.parametrize(("mapping", "expected"), [case[1:] for case in RESOURCE_LISTS], ids=[case[0] for case in RESOURCE_LISTS])
def test_parse_resource_list(mapping: Mapping[str, Any], expected: Resources) -> None:
    parsed = parse_resource_list(mapping)
    assert parsed.milli_cpu == expected.milli_cpu
    assert parsed.memory == expected.memory
    assert parsed.ephemeral_storage == expected.ephemeral_storage
    assert dict(parsed.scalar) == dict(expected.scalar)


def test_parse_resource_list_rejects_bad_quantity() -> None:
    with pytest.raises(PodSpecError) as caught:
        parse_resource_list({"memory": "1GB"}, path="status.allocatable")
    assert caught.value.path == "status.allocatable[memory]"
    assert "did you mean G" in caught.value.reason


def test_parse_resource_list_rejects_negative() -> None:
    with pytest.raises(PodSpecError) as caught:
        parse_resource_list({"cpu": "-1"})
    assert caught.value.path == "resources[cpu]"
    assert "negative" in caught.value.reason


def test_parse_resource_list_trims_json_whitespace() -> None:
    assert parse_resource_list({"cpu": " 1 "}).milli_cpu == 1000


# --- effective_request ---------------------------------------------------------

EFFECTIVE = [
    # (name, containers, init containers, overhead, expected)
    ("no requests", [container()], [], None, Resources()),
    (
        "sum of app containers",
        [container({"cpu": "500m", "memory": "128Mi"}), container({"cpu": "250m", "memory": "64Mi"})],
        [],
        None,
        Resources(milli_cpu=750, memory=192 * MI),
    ),
    (
        "init container larger than apps",
        [container({"cpu": "100m", "memory": "1Gi"})],
        [container({"cpu": "2", "memory": "64Mi"}), container({"cpu": "1"})],
        None,
        Resources(milli_cpu=2000, memory=GI),
    ),
    (
        "apps larger than init container",
        [container({"cpu": "1"}), container({"cpu": "1"})],
        [container({"cpu": "1500m"})],
        None,
        Resources(milli_cpu=2000),
    ),
    (
        "sidecar adds to apps",
        [container({"cpu": "1", "memory": "1Gi"})],
        [sidecar({"cpu": "200m", "memory": "100Mi"})],
        None,
        Resources(milli_cpu=1200, memory=GI + 100 * MI),
    ),
    (
        "sidecar before init adds to init",
        [container({"cpu": "1"})],
        [sidecar({"cpu": "500m"}), container({"cpu": "2"})],
        None,
        Resources(milli_cpu=2500),
    ),
    (
        "sidecar after init does not add to init",
        [container({"cpu": "1"})],
        [container({"cpu": "2"}), sidecar({"cpu": "500m"})],
        None,
        Resources(milli_cpu=2000),
    ),
    (
        "sidecars accumulate for later init",
        [container({"cpu": "100m"})],
        [sidecar({"cpu": "300m"}), container({"cpu": "1"}), sidecar({"cpu": "200m"}), container({"cpu": "1"})],
        None,
        Resources(milli_cpu=1500),
    ),
    (
        "max is taken per resource",
        [container({"cpu": "1", "memory": "100Mi"})],
        [container({"cpu": "100m", "memory": "1Gi"})],
        None,
        Resources(milli_cpu=1000, memory=GI),
    ),
    (
        "overhead added after max",
        [container({"cpu": "1"})],
        [container({"cpu": "2"})],
        {"cpu": "250m", "memory": "120Mi"},
        Resources(milli_cpu=2250, memory=120 * MI),
    ),
    (
        "limit becomes missing request",
        [container(limits={"cpu": "2", "memory": "1Gi"})],
        [],
        None,
        Resources(milli_cpu=2000, memory=GI),
    ),
    (
        "explicit request kept below limit",
        [container({"cpu": "500m"}, {"cpu": "2", "memory": "1Gi"})],
        [],
        None,
        Resources(milli_cpu=500, memory=GI),
    ),
    (
        "init container limit defaults too",
        [container({"cpu": "100m"})],
        [container(limits={"cpu": "3"})],
        None,
        Resources(milli_cpu=3000),
    ),
    (
        "extended resource from limit",
        [container({"cpu": "1"}, {"nvidia.com/gpu": 1})],
        [],
        None,
        Resources(milli_cpu=1000, scalar=MappingProxyType({"nvidia.com/gpu": 1})),
    ),
    (
        "extended resources summed",
        [container({"example.com/foo": "2"}, {"example.com/foo": "2"}), container(limits={"example.com/foo": "3"})],
        [],
        None,
        Resources(scalar=MappingProxyType({"example.com/foo": 5})),
    ),
    (
        "hugepages",
        [container({"memory": "1Gi", "hugepages-2Mi": "8Mi"}, {"hugepages-2Mi": "8Mi"})],
        [],
        None,
        Resources(memory=GI, scalar=MappingProxyType({"hugepages-2Mi": 8 * MI})),
    ),
    (
        "each quantity rounded to milli before summing",
        [container({"cpu": "0.0004"}), container({"cpu": "0.0004"})],
        [],
        None,
        Resources(milli_cpu=2),
    ),
    (
        "fractions summed before rounding to units",
        [container({"memory": "0.5"}), container({"memory": "0.5"})],
        [],
        None,
        Resources(memory=1),
    ),
]


@pytest.mark.parametrize(
    ("containers", "init_containers", "overhead", "expected"),
    [case[1:] for case in EFFECTIVE],
    ids=[case[0] for case in EFFECTIVE],
)
def test_effective_request(
    containers: list[dict[str, Any]],
    init_containers: list[dict[str, Any]],
    overhead: Mapping[str, Any] | None,
    expected: Resources,
) -> None:
    request = effective_request(containers, init_containers, overhead)
    assert request.milli_cpu == expected.milli_cpu
    assert request.memory == expected.memory
    assert request.ephemeral_storage == expected.ephemeral_storage
    assert dict(request.scalar) == dict(expected.scalar)


# --- pod_requirements ----------------------------------------------------------


def test_pod_requirements_reads_every_field() -> None:
    spec = {
        "schedulerName": "carbon-scheduler",
        "containers": [container({"cpu": "500m", "memory": "256Mi"})],
        "initContainers": [container({"cpu": "1"})],
        "overhead": {"memory": "64Mi"},
        "nodeSelector": {"kubernetes.io/arch": "amd64"},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a", "b"]},
                                {"key": "cores", "operator": "Gt", "values": ["4"]},
                            ]
                        },
                        {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["node-1"]}]},
                    ]
                },
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {}}],
            }
        },
        "tolerations": [
            {"key": "dedicated", "operator": "Equal", "value": "batch", "effect": "NoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"operator": "Exists"},
            {"key": "spot"},
        ],
    }
    requirements = pod_requirements(spec)

    assert requirements.request == Resources(milli_cpu=1000, memory=320 * MI)
    assert dict(requirements.node_selector) == {"kubernetes.io/arch": "amd64"}
    assert requirements.required_node_terms == (
        NodeSelectorTerm(
            match_expressions=(
                NodeSelectorRequirement("topology.kubernetes.io/zone", "In", ("a", "b")),
                NodeSelectorRequirement("cores", "Gt", ("4",)),
            )
        ),
        NodeSelectorTerm(match_fields=(NodeSelectorRequirement("metadata.name", "In", ("node-1",)),)),
    )
    assert requirements.tolerations == (
        Toleration("dedicated", "Equal", "batch", "NoSchedule"),
        Toleration("node.kubernetes.io/not-ready", "Exists", "", "NoExecute"),
        Toleration("", "Exists", "", ""),
        Toleration("spot", "Equal", "", ""),
    )


def test_pod_requirements_minimal_spec() -> None:
    requirements = pod_requirements({"containers": [{"name": "app", "image": "busybox"}]})
    assert requirements.request == Resources()
    assert dict(requirements.node_selector) == {}
    assert requirements.required_node_terms == ()
    assert requirements.tolerations == ()


def test_pod_requirements_treats_null_as_absent() -> None:
    spec = {
        "containers": [{"name": "app", "resources": None}],
        "initContainers": None,
        "overhead": None,
        "nodeSelector": None,
        "affinity": {"nodeAffinity": None},
        "tolerations": None,
    }
    requirements = pod_requirements(spec)
    assert requirements.request == Resources()
    assert requirements.required_node_terms == ()


POD_LEVEL = [
    # (name, pod-level resources, container requests, expected cpu millicores, expected memory)
    ("pod request replaces sum", {"requests": {"cpu": "2"}}, {"cpu": "500m"}, 2000, 0),
    ("pod limit without request", {"limits": {"cpu": "3", "memory": "1Gi"}}, {}, 3000, GI),
    ("container request wins over pod limit", {"limits": {"cpu": "3"}}, {"cpu": "500m"}, 500, 0),
    ("only supported resources replaced", {"requests": {"memory": "2Gi"}}, {"cpu": "250m"}, 250, 2 * GI),
]


@pytest.mark.parametrize(
    ("pod_resources", "requests", "cpu", "memory"),
    [case[1:] for case in POD_LEVEL],
    ids=[case[0] for case in POD_LEVEL],
)
def test_pod_level_resources(pod_resources: dict[str, Any], requests: dict[str, Any], cpu: int, memory: int) -> None:
    spec = {"containers": [container(requests)], "resources": pod_resources, "overhead": {"cpu": "100m"}}
    request = pod_requirements(spec).request
    assert request.milli_cpu == cpu + 100
    assert request.memory == memory


def affinity(*terms: Any) -> dict[str, Any]:
    return {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": list(terms)}}}


TERMS = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms"

MALFORMED = [
    # (name, spec, expected path, expected words in the reason)
    ("spec not an object", [], "spec", "expected an object"),
    ("no containers", {"containers": []}, "spec.containers", "at least one container"),
    ("containers not a list", {"containers": {"name": "a"}}, "spec.containers", "expected a list"),
    ("container not an object", {"containers": ["app"]}, "spec.containers[0]", "expected an object"),
    (
        "bad quantity",
        {"containers": [container({"memory": "1 Gi"})]},
        "spec.containers[0].resources.requests[memory]",
        "whitespace",
    ),
    (
        "negative request",
        {"containers": [container({"cpu": "-100m"})]},
        "spec.containers[0].resources.requests[cpu]",
        "negative",
    ),
    (
        "request above limit",
        {"containers": [container({"cpu": "2"}, {"cpu": "1"})]},
        "spec.containers[0].resources.requests[cpu]",
        "above the limit",
    ),
    (
        "unknown resource name",
        {"containers": [container({"gpu": "1"})]},
        "spec.containers[0].resources.requests[gpu]",
        "invalid container resource name",
    ),
    (
        "pods in container requests",
        {"containers": [container({"pods": "1"})]},
        "spec.containers[0].resources.requests[pods]",
        "invalid container resource name",
    ),
    (
        "fractional extended resource",
        {"containers": [container({"nvidia.com/gpu": "0.5"}, {"nvidia.com/gpu": "0.5"})]},
        "spec.containers[0].resources.requests[nvidia.com/gpu]",
        "whole number",
    ),
    (
        "extended request without limit",
        {"containers": [container({"nvidia.com/gpu": "1"})]},
        "spec.containers[0].resources.limits[nvidia.com/gpu]",
        "cannot be overcommitted",
    ),
    (
        "extended request below limit",
        {"containers": [container({"nvidia.com/gpu": "1"}, {"nvidia.com/gpu": "2"})]},
        "spec.containers[0].resources.requests[nvidia.com/gpu]",
        "must equal the limit",
    ),
    (
        "init container bad quantity",
        {"containers": [container()], "initContainers": [container({"cpu": "1.2.3"})]},
        "spec.initContainers[0].resources.requests[cpu]",
        "decimal point",
    ),
    (
        "restart policy not a string",
        {"containers": [container()], "initContainers": [container(restartPolicy=1)]},
        "spec.initContainers[0].restartPolicy",
        "expected a string",
    ),
    ("overhead not an object", {"containers": [container()], "overhead": "1"}, "spec.overhead", "expected an object"),
    (
        "bad overhead quantity",
        {"containers": [container()], "overhead": {"cpu": "1KB"}},
        "spec.overhead[cpu]",
        "unknown suffix",
    ),
    (
        "pod-level unsupported resource",
        {"containers": [container()], "resources": {"requests": {"ephemeral-storage": "1Gi"}}},
        "spec.resources.requests[ephemeral-storage]",
        "not supported",
    ),
    (
        "pod-level request below containers",
        {"containers": [container({"cpu": "2"})], "resources": {"requests": {"cpu": "1"}}},
        "spec.resources.requests[cpu]",
        "below the sum of container requests",
    ),
    (
        "node selector value not a string",
        {"containers": [container()], "nodeSelector": {"disk": 1}},
        "spec.nodeSelector[disk]",
        "invalid label value",
    ),
    (
        "node selector bad key",
        {"containers": [container()], "nodeSelector": {"bad key": "x"}},
        "spec.nodeSelector",
        "invalid label key",
    ),
    (
        "empty node selector terms",
        {"containers": [container()], "affinity": affinity()},
        TERMS,
        "at least one node selector term",
    ),
    (
        "unknown operator",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]})},
        f"{TERMS}[0].matchExpressions[0].operator",
        "unsupported operator",
    ),
    (
        "in without values",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"key": "a", "operator": "In"}]})},
        f"{TERMS}[0].matchExpressions[0].values",
        "at least one value",
    ),
    (
        "exists with values",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["b"]}]})},
        f"{TERMS}[0].matchExpressions[0].values",
        "must be empty",
    ),
    (
        "gt with two values",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"key": "a", "operator": "Gt", "values": ["1", "2"]}]})},
        f"{TERMS}[0].matchExpressions[0].values",
        "exactly one integer",
    ),
    (
        "lt with non-integer",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"key": "a", "operator": "Lt", "values": ["1.5"]}]})},
        f"{TERMS}[0].matchExpressions[0].values[0]",
        "not an integer",
    ),
    (
        "expression without key",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"operator": "Exists"}]})},
        f"{TERMS}[0].matchExpressions[0].key",
        "expected a value",
    ),
    (
        "values not a list",
        {"containers": [container()], "affinity": affinity({"matchExpressions": [{"key": "a", "operator": "In", "values": "b"}]})},
        f"{TERMS}[0].matchExpressions[0].values",
        "expected a list",
    ),
    (
        "field other than name",
        {"containers": [container()], "affinity": affinity({"matchFields": [{"key": "metadata.uid", "operator": "In", "values": ["x"]}]})},
        f"{TERMS}[0].matchFields[0].key",
        "only metadata.name",
    ),
    (
        "field with exists",
        {"containers": [container()], "affinity": affinity({"matchFields": [{"key": "metadata.name", "operator": "Exists"}]})},
        f"{TERMS}[0].matchFields[0].operator",
        "unsupported operator",
    ),
    (
        "field with two names",
        {"containers": [container()], "affinity": affinity({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["a", "b"]}]})},
        f"{TERMS}[0].matchFields[0].values",
        "exactly one node name",
    ),
    (
        "tolerations not a list",
        {"containers": [container()], "tolerations": {"key": "a"}},
        "spec.tolerations",
        "expected a list",
    ),
    (
        "toleration empty key with equal",
        {"containers": [container()], "tolerations": [{"operator": "Equal", "value": "x"}]},
        "spec.tolerations[0].operator",
        "must be Exists when key is empty",
    ),
    (
        "toleration unknown operator",
        {"containers": [container()], "tolerations": [{"key": "a", "operator": "Gt", "value": "1"}]},
        "spec.tolerations[0].operator",
        "unsupported operator",
    ),
    (
        "toleration exists with value",
        {"containers": [container()], "tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
        "spec.tolerations[0].value",
        "must be empty",
    ),
    (
        "toleration unknown effect",
        {"containers": [container()], "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoRun"}]},
        "spec.tolerations[0].effect",
        "unsupported effect",
    ),
    (
        "toleration seconds without no-execute",
        {"containers": [container()], "tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]},
        "spec.tolerations[0].effect",
        "must be NoExecute",
    ),
    (
        "toleration value not a string",
        {"containers": [container()], "tolerations": [{"key": "a", "value": 5}]},
        "spec.tolerations[0].value",
        "expected a string",
    ),
]


@pytest.mark.parametrize(
    ("spec", "path", "words"), [case[1:] for case in MALFORMED], ids=[case[0] for case in MALFORMED]
)
def test_pod_requirements_rejects_malformed(spec: Any, path: str, words: str) -> None:
    with pytest.raises(PodSpecError) as caught:
        pod_requirements(spec)
    assert caught.value.path == path
    assert words in caught.value.reason
    assert str(caught.value).startswith(f"{path}: ")


def test_pod_spec_error_is_value_error() -> None:
    assert issubclass(PodSpecError, ValueError)
