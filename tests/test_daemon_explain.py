"""Events and the decision annotation: exact bodies, API limits and messages."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from carbon_scheduler.daemon.explain import (
    DECISION_ANNOTATION,
    MESSAGE_MAX_BYTES,
    REASON_FAILED_SCHEDULING,
    REASON_INVALID_ANNOTATION,
    REASON_INVALID_POD_SPEC,
    bind_message,
    decision_annotation,
    deferred_message,
    event_body,
    failed_scheduling_message,
    format_time,
    problem_event,
    trim_message,
    waiting_message,
)
from carbon_scheduler.daemon.podinfo import AnnotationProblem
from carbon_scheduler.model import DEADLINE_ANNOTATION, Level
from carbon_scheduler.policy.decisions import Bind, Defer, Wait, Window

T0 = 1_709_251_200  # 2024-03-01T00:00:00Z
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def make_pod(name: str = "job-1", namespace: str | None = "batch") -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": "uid-1", "resourceVersion": "42"}
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": {}}


# --- event_body -------------------------------------------------------------------


def test_event_body_fields() -> None:
    body = event_body(
        make_pod(),
        reason=REASON_FAILED_SCHEDULING,
        message="0/3 regions can run the pod now",
        event_type="Warning",
        now=T0 + 0.25,
        reporting_instance="carbon-scheduler-abc",
    )

    name = body["metadata"].pop("name")
    assert re.fullmatch(r"job-1\.[0-9a-f]{16}", name)
    assert body == {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"namespace": "batch"},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "Pod",
            "namespace": "batch",
            "name": "job-1",
            "uid": "uid-1",
            "resourceVersion": "42",
        },
        "reason": "FailedScheduling",
        "message": "0/3 regions can run the pod now",
        "type": "Warning",
        "source": {"component": "carbon-scheduler"},
        "firstTimestamp": "2024-03-01T00:00:00Z",
        "lastTimestamp": "2024-03-01T00:00:00Z",
        "count": 1,
        "eventTime": "2024-03-01T00:00:00.250000Z",
        "action": "Scheduling",
        "reportingComponent": "carbon-scheduler",
        "reportingInstance": "carbon-scheduler-abc",
    }


def test_event_names_are_unique() -> None:
    names = {event_body(make_pod(), reason="Scheduled", message="m", now=T0)["metadata"]["name"] for _ in range(50)}

    assert len(names) == 50


def test_event_name_of_longest_pod_name_is_valid() -> None:
    pod_name = "a" * 230 + "." + "b" * 22

    name = event_body(make_pod(pod_name), reason="Scheduled", message="m", now=T0)["metadata"]["name"]

    assert len(name) <= 253
    assert DNS_SUBDOMAIN.fullmatch(name)
    assert name.startswith("a" * 230 + ".")


def test_event_name_cut_never_ends_label_in_dot() -> None:
    pod_name = "a" * 235 + "." + "b" * 17

    name = event_body(make_pod(pod_name), reason="Scheduled", message="m", now=T0)["metadata"]["name"]

    assert DNS_SUBDOMAIN.fullmatch(name)


def test_event_without_namespace_uses_default() -> None:
    body = event_body(make_pod(namespace=None), reason="Scheduled", message="m", now=T0)

    assert body["metadata"]["namespace"] == "default"
    assert body["involvedObject"]["namespace"] == "default"


def test_default_reporting_instance() -> None:
    instance = event_body(make_pod(), reason="Scheduled", message="m", now=T0)["reportingInstance"]

    assert instance.startswith("carbon-scheduler-")
    assert len(instance.encode()) <= 128


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"event_type": "Error"}, "invalid event type 'Error'", id="bad-type"),
        pytest.param({"reason": ""}, "invalid Event reason", id="empty-reason"),
        pytest.param({"reason": "R" * 129}, "must be 1 to 128 bytes, has 129", id="long-reason"),
        pytest.param({"action": ""}, "invalid Event action", id="empty-action"),
        pytest.param({"reporting_instance": "x" * 129}, "invalid Event reportingInstance", id="long-instance"),
    ],
)
def test_event_body_rejects(options: dict[str, Any], message: str) -> None:
    arguments: dict[str, Any] = {"reason": "Scheduled", "message": "m", "now": T0, **options}

    with pytest.raises(ValueError, match=re.escape(message)):
        event_body(make_pod(), **arguments)


def test_event_body_needs_pod_name() -> None:
    with pytest.raises(ValueError, match="without metadata.name"):
        event_body({"metadata": {"namespace": "batch"}}, reason="Scheduled", message="m", now=T0)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param("x" * MESSAGE_MAX_BYTES, "x" * MESSAGE_MAX_BYTES, id="at-limit"),
        pytest.param("x" * 2000, "x" * 1021 + "...", id="ascii-over-limit"),
        pytest.param("é" * 600, "é" * 510 + "...", id="two-byte-characters"),
        pytest.param("ab" + "€" * 400, "ab" + "€" * 339 + "...", id="cut-inside-character"),
    ],
)
def test_trim_message(message: str, expected: str) -> None:
    trimmed = trim_message(message)

    assert trimmed == expected
    assert len(trimmed.encode("utf-8")) <= MESSAGE_MAX_BYTES


def test_event_body_trims_message() -> None:
    body = event_body(make_pod(), reason="Scheduled", message="y" * 5000, now=T0)

    assert len(body["message"]) == MESSAGE_MAX_BYTES
    assert body["message"].endswith("y...")


# --- messages ----------------------------------------------------------------------


def test_failed_scheduling_message_lists_regions_by_name() -> None:
    reasons = {
        "us-east": ("region is down",),
        "eu-west": ("Insufficient cpu", "Too many pods"),
        "asia-east": ("not in the task's allowed regions",),
    }

    assert failed_scheduling_message(reasons) == (
        "0/3 regions can run the pod now: asia-east: not in the task's allowed regions; "
        "eu-west: Insufficient cpu, Too many pods; us-east: region is down."
    )


def test_failed_scheduling_message_without_regions() -> None:
    assert failed_scheduling_message({}) == "0/0 regions can run the pod now: no region is configured."


def test_bind_message() -> None:
    bind = Bind("us-east", "node-2", 123.456, "greenest region")

    assert bind_message(make_pod(), bind) == (
        "Assigned batch/job-1 to node node-2 in region us-east (123.5 gCO2/kWh): greenest region."
    )


def test_deferred_message() -> None:
    window = Window("eu-west", T0 + 3 * 3600, T0 + 4 * 3600, 12.34)
    defer = Defer(T0 + 3 * 3600, window, 20.0, "cleanest forecast window in eu-west")

    assert deferred_message(defer) == (
        "Deferred until 2024-03-01T03:00:00Z: cleanest forecast window in eu-west, "
        "2024-03-01T03:00:00Z to 2024-03-01T04:00:00Z, estimated 12.3 gCO2 against 20.0 gCO2 if started now."
    )
    without_now = Defer(T0 + 3 * 3600, window, None, "cleanest forecast window in eu-west")
    assert deferred_message(without_now).endswith("estimated 12.3 gCO2.")


def test_waiting_message() -> None:
    wait = Wait("eu-west", T0 + 900, "waiting for room in the greenest region eu-west")

    assert waiting_message(wait) == (
        "Waiting for room in region eu-west until 2024-03-01T00:15:00Z: "
        "waiting for room in the greenest region eu-west."
    )


@pytest.mark.parametrize(
    ("problem", "reason", "message"),
    [
        pytest.param(
            AnnotationProblem(DEADLINE_ANNOTATION, "6x", "bad unit"),
            REASON_INVALID_ANNOTATION,
            "Invalid carbon-scheduler.io/deadline: bad unit.",
            id="annotation",
        ),
        pytest.param(
            AnnotationProblem("spec", "spec.containers", "no containers"),
            REASON_INVALID_POD_SPEC,
            "Invalid pod spec: no containers.",
            id="spec",
        ),
    ],
)
def test_problem_event(problem: AnnotationProblem, reason: str, message: str) -> None:
    assert problem_event(problem) == (reason, message)


# --- decision annotation ------------------------------------------------------------


def test_decision_annotation_for_bind() -> None:
    annotation = decision_annotation(
        region="us-east",
        node="node-2",
        intensity_g_per_kwh=123.45678,
        level=Level.LOW,
        reason="greenest region",
        window=None,
        counterfactual_region="eu-west",
        counterfactual_g=45.6789,
        decided_at=T0 + 0.9,
    )

    assert annotation == {
        DECISION_ANNOTATION: '{"region":"us-east","node":"node-2","intensity_g_per_kwh":123.457,"level":"low",'
        '"reason":"greenest region","window":null,"counterfactual":{"region":"eu-west","estimated_g":45.679},'
        '"decided_at":"2024-03-01T00:00:00Z"}'
    }


def test_decision_annotation_for_deferral() -> None:
    window = Window("eu-west", T0 + 7200, T0 + 10800, 9.87654)

    annotation = decision_annotation(
        region="eu-west",
        node=None,
        intensity_g_per_kwh=None,
        level="medium",
        reason="cleanest forecast window in eu-west",
        window=window,
        counterfactual_region=None,
        counterfactual_g=None,
        decided_at=T0,
    )

    assert json.loads(annotation[DECISION_ANNOTATION]) == {
        "region": "eu-west",
        "node": None,
        "intensity_g_per_kwh": None,
        "level": "medium",
        "reason": "cleanest forecast window in eu-west",
        "window": {"region": "eu-west", "start": "2024-03-01T02:00:00Z", "end": "2024-03-01T03:00:00Z", "estimated_g": 9.877},
        "counterfactual": {"region": None, "estimated_g": None},
        "decided_at": "2024-03-01T00:00:00Z",
    }


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_decision_annotation_rejects_non_finite(bad: float) -> None:
    with pytest.raises(ValueError, match="invalid counterfactual_g"):
        decision_annotation(
            region="eu-west",
            node="n",
            intensity_g_per_kwh=1.0,
            level=Level.HIGH,
            reason="r",
            window=None,
            counterfactual_region="eu-west",
            counterfactual_g=bad,
            decided_at=T0,
        )


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [
        pytest.param(T0, "2024-03-01T00:00:00Z", id="whole"),
        pytest.param(T0 + 59.999, "2024-03-01T00:00:59Z", id="rounds-down"),
        pytest.param(0, "1970-01-01T00:00:00Z", id="epoch"),
    ],
)
def test_format_time(seconds: float, expected: str) -> None:
    assert format_time(seconds) == expected
