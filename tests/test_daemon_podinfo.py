"""Reading pods and nodes from API JSON: tasks with their defaults and problems,
nodes, and per-node usage."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_scheduler.config.types import SchedulerSettings
from carbon_scheduler.daemon import podinfo
from carbon_scheduler.daemon.podinfo import (
    MAX_DURATION_SECONDS,
    AnnotationProblem,
    InvalidNodeError,
    clear_request_cache,
    is_finished,
    is_ours,
    is_unbound_pending,
    node_from_json,
    parse_rfc3339,
    pod_key,
    pod_request,
    task_from_pod,
    usage_by_node,
)
from carbon_scheduler.model import (
    CLASS_LABEL,
    DEADLINE_ANNOTATION,
    EXPECTED_DURATION_ANNOTATION,
    REGIONS_ANNOTATION,
    PodRequirements,
    Resources,
    Taint,
    TaintEffect,
    TaskClass,
)
from carbon_scheduler.policy.fit import TOO_MANY_PODS, NodeUsage, fit_failures

GI = 2**30
KI = 2**10
CREATED = "2024-03-01T00:00:00Z"
T0 = 1_709_251_200  # CREATED in Unix seconds
HOUR = 3600
DAY = 86_400
SETTINGS = SchedulerSettings()
REGIONS = ("eu-west", "us-east", "asia-east")


def make_pod(
    *,
    labels: dict[str, Any] | None = None,
    annotations: dict[str, Any] | None = None,
    spec: Any = None,
    created: Any = CREATED,
    uid: str = "uid-1",
    name: str = "job-1",
    namespace: str = "batch",
    resource_version: str = "100",
    node: str | None = None,
    phase: str | None = "Pending",
) -> dict[str, Any]:
    if spec is None:
        spec = {
            "schedulerName": "carbon-scheduler",
            "containers": [{"name": "main", "image": "busybox", "resources": {"requests": {"cpu": "500m", "memory": "1Gi"}}}],
        }
    if node is not None:
        spec = {**spec, "nodeName": node}
    metadata: dict[str, Any] = {"name": name, "namespace": namespace, "uid": uid, "resourceVersion": resource_version}
    if created is not None:
        metadata["creationTimestamp"] = created
    if labels is not None:
        metadata["labels"] = labels
    if annotations is not None:
        metadata["annotations"] = annotations
    pod: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}
    if phase is not None:
        pod["status"] = {"phase": phase}
    return pod


def read(pod: dict[str, Any], **kwargs: Any):
    return task_from_pod(pod, region="eu-west", settings=SETTINGS, region_names=REGIONS, now=T0 + 7, **kwargs)


def problem_keys(problems: list[AnnotationProblem]) -> list[str]:
    return [problem.key for problem in problems]


# --- pod predicates --------------------------------------------------------------


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(make_pod(), True, id="carbon-scheduler"),
        pytest.param(make_pod(spec={"schedulerName": "default-scheduler", "containers": []}), False, id="other-scheduler"),
        pytest.param(make_pod(spec={"containers": []}), False, id="no-scheduler-name"),
        pytest.param({"metadata": {}}, False, id="no-spec"),
    ],
)
def test_is_ours(pod: dict[str, Any], expected: bool) -> None:
    assert is_ours(pod) is expected


def _with(pod: dict[str, Any], path: tuple[str, str], value: Any) -> dict[str, Any]:
    section, field = path
    pod[section] = {**pod.get(section, {}), field: value}
    return pod


@pytest.mark.parametrize(
    ("pod", "expected"),
    [
        pytest.param(make_pod(), True, id="pending-unbound"),
        pytest.param(make_pod(phase=None), True, id="no-phase-yet"),
        pytest.param(make_pod(node="n1"), False, id="bound"),
        pytest.param(make_pod(phase="Running", node="n1"), False, id="running"),
        pytest.param(make_pod(phase="Failed"), False, id="failed-unbound"),
        pytest.param(_with(make_pod(), ("metadata", "deletionTimestamp"), CREATED), False, id="being-deleted"),
        pytest.param(_with(make_pod(), ("spec", "schedulingGates"), [{"name": "wait"}]), False, id="gated"),
        pytest.param(_with(make_pod(), ("spec", "schedulingGates"), []), True, id="empty-gates"),
    ],
)
def test_is_unbound_pending(pod: dict[str, Any], expected: bool) -> None:
    assert is_unbound_pending(pod) is expected


@pytest.mark.parametrize(
    ("phase", "expected"),
    [("Succeeded", True), ("Failed", True), ("Running", False), ("Pending", False), ("Unknown", False), (None, False)],
)
def test_is_finished(phase: str | None, expected: bool) -> None:
    assert is_finished(make_pod(phase=phase)) is expected


def test_pod_key_joins_region_namespace_name_uid() -> None:
    assert pod_key("us-east", make_pod(uid="abc-123")) == "us-east/batch/job-1/abc-123"


# --- task_from_pod: a valid pod ----------------------------------------------------


def test_task_from_valid_pod() -> None:
    pod = make_pod(
        labels={CLASS_LABEL: "deferrable"},
        annotations={
            EXPECTED_DURATION_ANNOTATION: "45m",
            DEADLINE_ANNOTATION: "2024-03-01T12:00:00Z",
            REGIONS_ANNOTATION: "us-east,eu-west",
        },
    )
    task, problems = read(pod)

    assert problems == []
    assert task.id == "uid-1"
    assert task.task_class is TaskClass.DEFERRABLE
    assert task.arrival == T0
    assert task.duration == 45 * 60
    assert task.deadline == T0 + 12 * HOUR
    assert task.home_region == "eu-west"
    assert task.allowed_regions == ("us-east", "eu-west")
    assert task.requirements.request == Resources(milli_cpu=500, memory=GI)


def test_task_defaults_without_annotations() -> None:
    task, problems = read(make_pod())

    assert problems == []
    assert task.task_class is TaskClass.STANDARD
    assert task.duration == SETTINGS.default_expected_duration_seconds
    assert task.deadline is None
    assert task.allowed_regions is None


def test_task_defaults_with_null_labels_and_annotations() -> None:
    pod = make_pod()
    pod["metadata"]["labels"] = None
    pod["metadata"]["annotations"] = None

    task, problems = read(pod)

    assert problems == []
    assert task.task_class is TaskClass.STANDARD


# --- task_from_pod: class label ------------------------------------------------------

CLASS_CASES = [
    pytest.param(None, TaskClass.STANDARD, None, id="missing"),
    pytest.param("critical", TaskClass.CRITICAL, None, id="critical"),
    pytest.param("standard", TaskClass.STANDARD, None, id="standard"),
    pytest.param("deferrable", TaskClass.DEFERRABLE, None, id="deferrable"),
    pytest.param("Critical", TaskClass.STANDARD, "unknown task class 'Critical'", id="wrong-case"),
    pytest.param("", TaskClass.STANDARD, "unknown task class ''", id="empty"),
    pytest.param("batch", TaskClass.STANDARD, "use critical, standard, deferrable", id="unknown"),
    pytest.param(3, TaskClass.STANDARD, "unknown task class '3'", id="not-a-string"),
]


@pytest.mark.parametrize(("value", "expected", "message"), CLASS_CASES)
def test_class_label(value: Any, expected: TaskClass, message: str | None) -> None:
    labels = {} if value is None else {CLASS_LABEL: value}

    task, problems = read(make_pod(labels=labels))

    assert task.task_class is expected
    if message is None:
        assert problems == []
    else:
        assert problem_keys(problems) == [CLASS_LABEL]
        assert message in problems[0].reason
        assert "scheduled as standard" in problems[0].reason


# --- task_from_pod: expected duration --------------------------------------------------

DEFAULT_DURATION = SETTINGS.default_expected_duration_seconds

DURATION_CASES = [
    pytest.param("45m", 2700, None, id="minutes"),
    pytest.param("1h30m", 5400, None, id="compound"),
    pytest.param("3600", 3600, None, id="plain-seconds"),
    pytest.param(" 2h ", 7200, None, id="surrounding-space"),
    pytest.param("366d", MAX_DURATION_SECONDS, None, id="at-maximum"),
    pytest.param("", DEFAULT_DURATION, "empty", id="empty"),
    pytest.param("soon", DEFAULT_DURATION, "expected a number", id="word"),
    pytest.param("5min", DEFAULT_DURATION, "unknown unit 'min'", id="unknown-unit"),
    pytest.param("-5m", DEFAULT_DURATION, "must not be negative", id="negative"),
    pytest.param("0", DEFAULT_DURATION, "must be more than zero", id="zero"),
    pytest.param("0s", DEFAULT_DURATION, "must be more than zero", id="zero-with-unit"),
    pytest.param("1.5s", DEFAULT_DURATION, "not a whole number of seconds", id="fractional-seconds"),
    pytest.param("1.5", DEFAULT_DURATION, "missing unit", id="fraction-without-unit"),
    pytest.param("367d", DEFAULT_DURATION, "must be at most 8784h", id="over-maximum"),
    pytest.param("9" * 5000, DEFAULT_DURATION, "the number is too long", id="huge-number"),
    pytest.param(45, DEFAULT_DURATION, "expected a string", id="not-a-string"),
]


@pytest.mark.parametrize(("value", "expected", "message"), DURATION_CASES)
def test_expected_duration(value: Any, expected: int, message: str | None) -> None:
    task, problems = read(make_pod(annotations={EXPECTED_DURATION_ANNOTATION: value}))

    assert task.duration == expected
    if message is None:
        assert problems == []
    else:
        assert problem_keys(problems) == [EXPECTED_DURATION_ANNOTATION]
        assert message in problems[0].reason
        assert "default expected duration of 1h applies" in problems[0].reason


# --- task_from_pod: deadline -------------------------------------------------------------

DEFAULT_DEADLINE = T0 + SETTINGS.default_deadline_seconds

DEADLINE_CASES = [
    pytest.param("6h", T0 + 6 * HOUR, None, id="duration-after-creation"),
    pytest.param("1h", T0 + HOUR, None, id="exactly-creation-plus-duration"),
    pytest.param("2024-03-01T12:00:00Z", T0 + 12 * HOUR, None, id="utc-time"),
    pytest.param("2024-03-01T13:30:00+01:30", T0 + 12 * HOUR, None, id="positive-offset"),
    pytest.param("2024-03-01T07:00:00-05:00", T0 + 12 * HOUR, None, id="negative-offset"),
    pytest.param("2024-03-01t12:00:00z", T0 + 12 * HOUR, None, id="lower-case-t-and-z"),
    pytest.param("2024-03-01 12:00:00Z", T0 + 12 * HOUR, None, id="space-separator"),
    pytest.param("2024-03-01T12:00:00.999Z", T0 + 12 * HOUR, None, id="fraction-rounds-down"),
    pytest.param(" 2024-03-01T12:00:00Z ", T0 + 12 * HOUR, None, id="surrounding-space"),
    pytest.param("2024-03-01T12:00:00", DEFAULT_DEADLINE, "has no UTC offset", id="no-offset"),
    pytest.param("2024-03-01", DEFAULT_DEADLINE, "invalid RFC 3339 time", id="date-only"),
    pytest.param("2024-02-30T12:00:00Z", DEFAULT_DEADLINE, "day is out of range", id="impossible-date"),
    pytest.param("2024-03-01T24:00:00Z", DEFAULT_DEADLINE, "hour must be in 0..23", id="hour-24"),
    pytest.param("2024-03-01T12:00:60Z", DEFAULT_DEADLINE, "second must be in 0..59", id="leap-second"),
    pytest.param("2024-03-01T12:00:00+24:00", DEFAULT_DEADLINE, "less than 24:00", id="offset-too-large"),
    pytest.param("2024-03-01T12:00:00+01:60", DEFAULT_DEADLINE, "minutes below 60", id="offset-minutes-60"),
    pytest.param("0000-01-01T00:00:00Z", DEFAULT_DEADLINE, "year 0 is out of range", id="year-zero"),
    pytest.param("tomorrow", DEFAULT_DEADLINE, "expected a number", id="word"),
    pytest.param("", DEFAULT_DEADLINE, "empty", id="empty"),
    pytest.param("-6h", DEFAULT_DEADLINE, "must not be negative", id="negative-duration"),
    pytest.param("30m", DEFAULT_DEADLINE, "cannot finish in time", id="shorter-than-duration"),
    pytest.param("0s", DEFAULT_DEADLINE, "cannot finish in time", id="zero-duration"),
    pytest.param("2024-02-29T00:00:00Z", DEFAULT_DEADLINE, "cannot finish in time", id="before-creation"),
    pytest.param("367d", DEFAULT_DEADLINE, "must be at most 8784h", id="duration-over-maximum"),
    pytest.param("2030-01-01T00:00:00Z", DEFAULT_DEADLINE, "more than 8784h", id="time-over-maximum"),
    pytest.param(6, DEFAULT_DEADLINE, "expected an RFC 3339 time", id="not-a-string"),
]


@pytest.mark.parametrize(("value", "expected", "message"), DEADLINE_CASES)
def test_deadline_of_deferrable(value: Any, expected: int, message: str | None) -> None:
    pod = make_pod(labels={CLASS_LABEL: "deferrable"}, annotations={DEADLINE_ANNOTATION: value})

    task, problems = read(pod)

    assert task.deadline == expected
    if message is None:
        assert problems == []
    else:
        assert problem_keys(problems) == [DEADLINE_ANNOTATION]
        assert message in problems[0].reason
        assert "default deadline of 24h after creation applies" in problems[0].reason


@pytest.mark.parametrize("task_class", ["critical", "standard"])
def test_deadline_of_other_classes(task_class: str) -> None:
    valid, valid_problems = read(make_pod(labels={CLASS_LABEL: task_class}, annotations={DEADLINE_ANNOTATION: "6h"}))
    invalid, invalid_problems = read(make_pod(labels={CLASS_LABEL: task_class}, annotations={DEADLINE_ANNOTATION: "6x"}))

    assert valid.deadline == T0 + 6 * HOUR
    assert valid_problems == []
    assert invalid.deadline is None
    assert problem_keys(invalid_problems) == [DEADLINE_ANNOTATION]
    assert "The pod has no deadline" in invalid_problems[0].reason


def test_deadline_counts_from_expected_duration() -> None:
    pod = make_pod(
        labels={CLASS_LABEL: "deferrable"},
        annotations={EXPECTED_DURATION_ANNOTATION: "3h", DEADLINE_ANNOTATION: "2h"},
    )

    task, problems = read(pod)

    assert task.duration == 3 * HOUR
    assert task.deadline == DEFAULT_DEADLINE
    assert problem_keys(problems) == [DEADLINE_ANNOTATION]
    assert "2024-03-01T03:00:00Z" in problems[0].reason


def test_default_deadline_for_deferrable_without_annotation() -> None:
    task, problems = read(make_pod(labels={CLASS_LABEL: "deferrable"}))

    assert task.deadline == DEFAULT_DEADLINE
    assert problems == []


# --- task_from_pod: regions ----------------------------------------------------------------

REGION_CASES = [
    pytest.param("eu-west", ("eu-west",), None, id="one"),
    pytest.param("eu-west, us-east", ("eu-west", "us-east"), None, id="two-with-space"),
    pytest.param("us-east,eu-west,us-east", ("us-east", "eu-west"), None, id="repeat-dropped"),
    pytest.param("eu-west,,", ("eu-west",), None, id="empty-items-ignored"),
    pytest.param("eu-west,mars", ("eu-west",), "unknown region(s) 'mars'", id="one-unknown"),
    pytest.param("mars,venus", None, "unknown region(s) 'mars', 'venus'", id="all-unknown"),
    pytest.param("EU-WEST", None, "unknown region(s) 'EU-WEST'", id="wrong-case"),
    pytest.param("", None, "names no region", id="empty"),
    pytest.param(" , ", None, "names no region", id="only-commas"),
    pytest.param(["eu-west"], None, "expected comma-separated region names", id="not-a-string"),
]


@pytest.mark.parametrize(("value", "expected", "message"), REGION_CASES)
def test_regions_annotation(value: Any, expected: tuple[str, ...] | None, message: str | None) -> None:
    task, problems = read(make_pod(annotations={REGIONS_ANNOTATION: value}))

    assert task.allowed_regions == expected
    if message is None:
        assert problems == []
    else:
        assert problem_keys(problems) == [REGIONS_ANNOTATION]
        assert message in problems[0].reason
        assert "eu-west, us-east, asia-east" in problems[0].reason


def test_regions_problem_says_what_remains() -> None:
    _, partly = read(make_pod(annotations={REGIONS_ANNOTATION: "eu-west,mars"}))
    _, wholly = read(make_pod(annotations={REGIONS_ANNOTATION: "mars"}))

    assert partly[0].reason.endswith("They are ignored, so the pod may run in eu-west")
    assert wholly[0].reason.endswith("No listed region is known, so every region is allowed")


# --- task_from_pod: spec and creation time ------------------------------------------------

SPEC_CASES = [
    pytest.param({"containers": []}, "spec.containers", id="no-containers"),
    pytest.param(
        {"containers": [{"name": "c", "resources": {"requests": {"cpu": "1 core"}}}]},
        "spec.containers[0].resources.requests[cpu]",
        id="bad-quantity",
    ),
    pytest.param(
        {"containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}}]},
        "spec.containers[0].resources.requests[cpu]",
        id="request-above-limit",
    ),
    pytest.param("not a spec", "spec", id="not-an-object"),
]


@pytest.mark.parametrize(("spec", "path"), SPEC_CASES)
def test_unreadable_spec_gives_zero_requests(spec: Any, path: str) -> None:
    task, problems = read(make_pod(spec=spec, labels={CLASS_LABEL: "critical"}))

    assert task.requirements == PodRequirements()
    assert task.task_class is TaskClass.CRITICAL
    assert problem_keys(problems) == ["spec"]
    assert problems[0].value == path
    assert "as if it requested no resources" in problems[0].reason


def test_spec_requirements_are_read() -> None:
    spec = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "2", "nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}],
        "nodeSelector": {"disk": "ssd"},
        "tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedule"}],
    }

    task, problems = read(make_pod(spec=spec))

    assert problems == []
    assert task.requirements.request == Resources(milli_cpu=2000, scalar=MappingProxyType({"nvidia.com/gpu": 1}))
    assert dict(task.requirements.node_selector) == {"disk": "ssd"}
    assert task.requirements.tolerations[0].key == "gpu"


@pytest.mark.parametrize(
    ("created", "message"),
    [
        pytest.param(None, "expected an RFC 3339 time", id="missing"),
        pytest.param("yesterday", "invalid RFC 3339 time 'yesterday'", id="invalid"),
    ],
)
def test_bad_creation_time_uses_now(created: Any, message: str) -> None:
    task, problems = read(make_pod(created=created, labels={CLASS_LABEL: "deferrable"}))

    assert task.arrival == T0 + 7
    assert task.deadline == T0 + 7 + SETTINGS.default_deadline_seconds
    assert problem_keys(problems) == ["metadata.creationTimestamp"]
    assert message in problems[0].reason


def test_task_id_without_uid() -> None:
    pod = make_pod()
    del pod["metadata"]["uid"]

    task, _ = read(pod)

    assert task.id == "batch/job-1"


def test_every_problem_at_once() -> None:
    pod = make_pod(
        labels={CLASS_LABEL: "urgent"},
        annotations={EXPECTED_DURATION_ANNOTATION: "x", DEADLINE_ANNOTATION: "y", REGIONS_ANNOTATION: "z"},
        spec={"containers": []},
    )

    task, problems = read(pod)

    assert problem_keys(problems) == [CLASS_LABEL, EXPECTED_DURATION_ANNOTATION, DEADLINE_ANNOTATION, REGIONS_ANNOTATION, "spec"]
    assert [problem.value for problem in problems[:4]] == ["urgent", "x", "y", "z"]
    assert task.task_class is TaskClass.STANDARD
    assert task.deadline is None


# --- task_from_pod: any input -------------------------------------------------------------

_near_durations = st.from_regex(r"\A[0-9]{1,4}(\.[0-9]{1,2})?[dhms]?\Z")
_near_times = st.from_regex(r"\A20[0-9]{2}-[01][0-9]-[0-3][0-9][Tt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]+)?([Zz]|[+-][0-2][0-9]:[0-6][0-9])?\Z")
_values = st.one_of(st.text(), _near_durations, _near_times, st.sampled_from(["critical", "deferrable", "eu-west,us-east"]))
_maybe_values = st.one_of(st.none(), _values, st.integers(), st.lists(st.text(max_size=3), max_size=2))


@settings(max_examples=400, deadline=None)
@given(
    task_class=_maybe_values,
    duration=_maybe_values,
    deadline=_maybe_values,
    regions=st.one_of(_maybe_values, st.lists(st.sampled_from([*REGIONS, "mars", " ", ""]), max_size=4).map(",".join)),
    other_labels=st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=3),
)
def test_any_annotations_give_task_with_defaults(task_class, duration, deadline, regions, other_labels) -> None:
    labels = dict(other_labels)
    annotations = {}
    for mapping, key, value in (
        (labels, CLASS_LABEL, task_class),
        (annotations, EXPECTED_DURATION_ANNOTATION, duration),
        (annotations, DEADLINE_ANNOTATION, deadline),
        (annotations, REGIONS_ANNOTATION, regions),
    ):
        if value is not None:
            mapping[key] = value

    task, problems = read(make_pod(labels=labels, annotations=annotations))

    keys = problem_keys(problems)
    assert len(keys) == len(set(keys))
    for problem in problems:
        assert problem.reason
    if CLASS_LABEL in keys or task_class is None:
        assert task.task_class is TaskClass.STANDARD
    if EXPECTED_DURATION_ANNOTATION in keys or duration is None:
        assert task.duration == DEFAULT_DURATION
    assert 0 < task.duration <= MAX_DURATION_SECONDS
    default_deadline = T0 + SETTINGS.default_deadline_seconds if task.task_class is TaskClass.DEFERRABLE else None
    if DEADLINE_ANNOTATION in keys or deadline is None:
        assert task.deadline == default_deadline
    else:
        assert T0 + task.duration <= task.deadline <= T0 + MAX_DURATION_SECONDS
    if task.allowed_regions is not None:
        assert task.allowed_regions
        assert set(task.allowed_regions) <= set(REGIONS)
    if REGIONS_ANNOTATION in keys:
        assert problems[keys.index(REGIONS_ANNOTATION)].value == (regions if isinstance(regions, str) else repr(regions))


@settings(max_examples=300, deadline=None)
@given(
    moment=st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.sampled_from([
        timezone.utc, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=11, minutes=45)),
    ])),
)
def test_parse_rfc3339_round_trip(moment: datetime) -> None:
    text = moment.replace(microsecond=0).isoformat()

    assert parse_rfc3339(text) == int(moment.replace(microsecond=0).timestamp())


@settings(max_examples=300, deadline=None)
@given(text=st.text())
def test_parse_rfc3339_raises_only_value_error(text: str) -> None:
    try:
        parse_rfc3339(text)
    except ValueError as error:
        assert repr(text) in str(error)


# --- node_from_json -------------------------------------------------------------------------


def make_node(
    *,
    allocatable: dict[str, Any] | None = None,
    conditions: list[dict[str, Any]] | None = None,
    taints: list[dict[str, Any]] | None = None,
    unschedulable: bool | None = None,
    labels: dict[str, str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if taints is not None:
        spec["taints"] = taints
    if unschedulable is not None:
        spec["unschedulable"] = unschedulable
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": "node-1", "labels": labels if labels is not None else {"zone": "a"}},
        "spec": spec,
        "status": {
            "allocatable": allocatable if allocatable is not None else {"cpu": "4", "memory": "16Gi", "pods": "110"},
            "conditions": conditions
            if conditions is not None
            else [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
        },
    }


def test_node_from_json_reads_exact_quantities() -> None:
    raw = make_node(
        allocatable={
            "cpu": "3920m",
            "memory": "16277316Ki",
            "ephemeral-storage": "47233297124",
            "pods": "110",
            "nvidia.com/gpu": "2",
            "hugepages-2Mi": "0",
        }
    )

    node = node_from_json(raw)

    assert node.name == "node-1"
    assert node.allocatable.milli_cpu == 3920
    assert node.allocatable.memory == 16_277_316 * KI
    assert node.allocatable.ephemeral_storage == 47_233_297_124
    assert dict(node.allocatable.scalar) == {"nvidia.com/gpu": 2, "hugepages-2Mi": 0}
    assert node.allocatable_pods == 110
    assert node.ready is True
    assert node.unschedulable is False
    assert dict(node.labels) == {"zone": "a"}
    assert node.taints == ()


@pytest.mark.parametrize(
    ("allocatable", "milli_cpu", "memory", "pods"),
    [
        pytest.param({"cpu": "1.5", "memory": "1e9", "pods": "1k"}, 1500, 10**9, 1000, id="decimal-and-exponent"),
        pytest.param({"cpu": 2, "memory": 1024, "pods": 30}, 2000, 1024, 30, id="json-numbers"),
        pytest.param({"cpu": "0.0001", "memory": "0.5", "pods": "4"}, 1, 1, 4, id="rounds-up"),
    ],
)
def test_node_quantities(allocatable: dict[str, Any], milli_cpu: int, memory: int, pods: int) -> None:
    node = node_from_json(make_node(allocatable=allocatable))

    assert node.allocatable.milli_cpu == milli_cpu
    assert node.allocatable.memory == memory
    assert node.allocatable_pods == pods


def test_node_without_pod_capacity_fits_nothing() -> None:
    node = node_from_json(make_node(allocatable={"cpu": "4", "memory": "16Gi"}))

    assert node.allocatable_pods == 0
    assert fit_failures(PodRequirements(), node, NodeUsage(Resources(), 0)) == (TOO_MANY_PODS,)


@pytest.mark.parametrize(
    ("conditions", "ready"),
    [
        pytest.param([{"type": "Ready", "status": "True"}], True, id="true"),
        pytest.param([{"type": "Ready", "status": "False"}], False, id="false"),
        pytest.param([{"type": "Ready", "status": "Unknown"}], False, id="unknown"),
        pytest.param([{"type": "DiskPressure", "status": "True"}], False, id="no-ready-condition"),
        pytest.param([], False, id="no-conditions"),
    ],
)
def test_node_ready_condition(conditions: list[dict[str, Any]], ready: bool) -> None:
    assert node_from_json(make_node(conditions=conditions)).ready is ready


def test_node_unschedulable_and_taints() -> None:
    raw = make_node(
        unschedulable=True,
        taints=[
            {"key": "gpu", "value": "true", "effect": "NoSchedule"},
            {"key": "spot", "effect": "PreferNoSchedule"},
            {"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": CREATED},
        ],
    )

    node = node_from_json(raw)

    assert node.unschedulable is True
    assert node.taints == (
        Taint("gpu", TaintEffect.NO_SCHEDULE, "true"),
        Taint("spot", TaintEffect.PREFER_NO_SCHEDULE, ""),
        Taint("node.kubernetes.io/not-ready", TaintEffect.NO_EXECUTE, ""),
    )


def test_node_labels_are_a_copy() -> None:
    raw = make_node(labels={"zone": "a"})

    node = node_from_json(raw)
    raw["metadata"]["labels"]["zone"] = "b"

    assert node.labels["zone"] == "a"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        pytest.param(make_node(allocatable={"cpu": "four", "pods": "110"}), "status.allocatable[cpu]", id="bad-cpu"),
        pytest.param(make_node(allocatable={"cpu": "4", "pods": "many"}), "status.allocatable[pods]", id="bad-pods"),
        pytest.param(make_node(allocatable={"cpu": "4", "pods": "-1"}), "negative", id="negative-pods"),
        pytest.param(make_node(taints=[{"key": "a", "effect": "Never"}]), "spec.taints[0].effect 'Never'", id="bad-effect"),
        pytest.param(make_node(taints=[{"effect": "NoSchedule"}]), "spec.taints[0].key", id="taint-without-key"),
        pytest.param({"metadata": {}}, "without metadata.name", id="no-name"),
    ],
)
def test_invalid_node_raises(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidNodeError) as caught:
        node_from_json(raw)

    assert message in str(caught.value)


# --- usage_by_node ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _empty_request_cache():
    clear_request_cache()
    yield
    clear_request_cache()


def bound(uid: str, node: str | None, cpu: str = "500m", memory: str = "1Gi", *, phase: str = "Running", **extra: Any):
    requests = {"cpu": cpu, "memory": memory}
    spec = {"containers": [{"name": "c", "resources": {"requests": requests}}], **extra}
    return make_pod(uid=uid, name=uid, spec=spec, node=node, phase=phase)


def test_usage_sums_bound_unfinished_pods() -> None:
    gpu_spec = {
        "containers": [{"name": "c", "resources": {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": "1"}}}],
        "initContainers": [{"name": "init", "resources": {"requests": {"cpu": "3"}}}],
    }
    pods = [
        bound("a", "n1"),
        bound("b", "n1", cpu="250m", memory="512Mi", phase="Pending"),
        bound("c", "n2", cpu="2", memory="0"),
        make_pod(uid="d", spec=gpu_spec, node="n2", phase="Running"),
        bound("e", None, phase="Pending"),
        bound("f", "n1", phase="Succeeded"),
        bound("g", "n2", phase="Failed"),
    ]

    usage = usage_by_node(pods)

    assert set(usage) == {"n1", "n2"}
    assert usage["n1"] == NodeUsage(Resources(milli_cpu=750, memory=GI + GI // 2), 2)
    assert usage["n2"].pods == 2
    assert usage["n2"].requested.milli_cpu == 2000 + 3000
    assert usage["n2"].requested.memory == 0
    assert dict(usage["n2"].requested.scalar) == {"nvidia.com/gpu": 1}


def test_usage_counts_unreadable_pod_with_zero_request() -> None:
    broken = make_pod(uid="x", spec={"containers": []}, node="n1", phase="Running")

    usage = usage_by_node([broken, bound("a", "n1")])

    assert usage["n1"] == NodeUsage(Resources(milli_cpu=500, memory=GI), 2)


def test_usage_of_no_pods_is_empty() -> None:
    assert usage_by_node([]) == {}


def test_request_cache_keys_on_resource_version() -> None:
    pod = bound("a", "n1", cpu="1")
    assert usage_by_node([pod])["n1"].requested.milli_cpu == 1000

    # Same uid and resourceVersion: the cached request is used, even though the
    # spec object changed in place (the API server would have bumped the version).
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "3"
    assert usage_by_node([pod])["n1"].requested.milli_cpu == 1000

    pod["metadata"]["resourceVersion"] = "101"
    assert usage_by_node([pod])["n1"].requested.milli_cpu == 3000
    assert pod_request(pod).milli_cpu == 3000


def test_request_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(podinfo, "REQUEST_CACHE_MAX", 3)
    pods = [bound(f"p{index}", "n1") for index in range(10)]

    usage = usage_by_node(pods)

    assert usage["n1"].pods == 10
    assert list(podinfo._request_cache) == ["p7", "p8", "p9"]


def test_request_without_uid_is_not_cached() -> None:
    pod = bound("a", "n1")
    del pod["metadata"]["uid"]

    assert pod_request(pod) == Resources(milli_cpu=500, memory=GI)
    assert podinfo._request_cache == {}


_json_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=8),
    st.sampled_from(["1", "500m", "1Gi", "-1", "Always", "In", "Exists", "NoSchedule"]),
)
_spec_keys = st.sampled_from(
    [
        "containers", "initContainers", "resources", "requests", "limits", "cpu", "memory", "nvidia.com/gpu",
        "restartPolicy", "overhead", "nodeSelector", "affinity", "nodeAffinity",
        "requiredDuringSchedulingIgnoredDuringExecution", "nodeSelectorTerms", "matchExpressions", "key",
        "operator", "values", "tolerations", "effect", "value", "name",
    ]
)
_json_values = st.recursive(
    _json_leaves,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(_spec_keys | st.text(max_size=5), children, max_size=4),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(spec=_json_values)
def test_any_spec_gives_task_and_usage(spec: Any) -> None:
    pod = make_pod(spec=spec if spec is not None else {}, phase="Running")

    task, problems = read(pod)
    if isinstance(spec, dict):
        spec["nodeName"] = "n1"
    usage = usage_by_node([pod])

    assert task.id == "uid-1"
    assert set(problem_keys(problems)) <= {"spec"}
    if problems:
        assert task.requirements == PodRequirements()
    if isinstance(spec, dict):
        assert usage["n1"].pods == 1
        assert usage["n1"].requested == pod_request(pod)


def test_long_invalid_value_keeps_reason_in_message() -> None:
    """A 5,000-character value is shortened in the Event message, so the reason and
    the default applied still fit in the 1024 bytes an Event message may hold."""
    from carbon_scheduler.daemon.scheduler import problem_message

    pod = {
        "metadata": {
            "uid": "u-1", "name": "long", "namespace": "default",
            "creationTimestamp": "2026-12-05T00:00:00Z",
            "labels": {"carbon-scheduler.io/class": "deferrable"},
            "annotations": {"carbon-scheduler.io/expected-duration": "x" * 5000},
        },
        "spec": {"containers": [{"name": "main"}]},
    }
    _, problems = task_from_pod(pod, region="eu-west", settings=SchedulerSettings(), region_names=("eu-west",))
    (problem,) = problems

    message = problem_message(problem)

    assert len(message.encode()) < 1024
    assert "(5000 characters)" in message
    assert message.endswith("The default expected duration of 1h applies")
