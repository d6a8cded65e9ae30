"""How the daemon explains itself on a pod: core/v1 Events and the decision annotation.

Every decision gives an Event on the pod (`Scheduled`, `Moved`, `Deferred`,
`Waiting`, `FailedScheduling`, and `InvalidAnnotation` or `InvalidPodSpec` for bad
input) and an annotation `carbon-scheduler.io/decision` that contains the decision as
compact JSON: region, node, intensity and level at the decision, the planned
window and the carbon-blind counterfactual. `kubectl describe pod` shows both.

Events are built for the core/v1 API. With `eventTime` set, the API server's
validation (pkg/apis/core/validation/events.go) requires `reportingComponent`,
`reportingInstance`, `action` and `reason`, each at most 128 bytes, and a
`message` of at most 1024 bytes. So `event_body` fills all of them and trims the
message.
"""

from __future__ import annotations

import functools
import json
import math
import secrets
import socket
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from carbon_scheduler.daemon.podinfo import SPEC_PROBLEM_KEY, AnnotationProblem
from carbon_scheduler.model import LABEL_PREFIX, SCHEDULER_NAME, Level
from carbon_scheduler.policy.decisions import Bind, Defer, Wait, Window

__all__ = [
    "DECISION_ANNOTATION",
    "MESSAGE_MAX_BYTES",
    "REASON_DEFERRED",
    "REASON_FAILED_SCHEDULING",
    "REASON_INVALID_ANNOTATION",
    "REASON_INVALID_POD_SPEC",
    "REASON_MOVED",
    "REASON_SCHEDULED",
    "REASON_WAITING",
    "bind_message",
    "decision_annotation",
    "deferred_message",
    "event_body",
    "failed_scheduling_message",
    "format_time",
    "problem_event",
    "trim_message",
    "waiting_message",
]

DECISION_ANNOTATION = f"{LABEL_PREFIX}/decision"

REASON_SCHEDULED = "Scheduled"
REASON_MOVED = "Moved"
REASON_DEFERRED = "Deferred"
REASON_WAITING = "Waiting"
REASON_FAILED_SCHEDULING = "FailedScheduling"
REASON_INVALID_ANNOTATION = "InvalidAnnotation"
REASON_INVALID_POD_SPEC = "InvalidPodSpec"

EVENT_TYPES = ("Normal", "Warning")
MESSAGE_MAX_BYTES = 1024
FIELD_MAX_BYTES = 128
"""Limit of an Event's reason, action and reportingInstance."""

_EVENT_NAME_MAX = 253
_NAME_SUFFIX_HEX_DIGITS = 16
_TRIMMED = "..."


# --- Events --------------------------------------------------------------------


def event_body(
    pod: Mapping[str, Any],
    *,
    reason: str,
    message: str,
    event_type: str = "Normal",
    now: float,
    action: str = "Scheduling",
    reporting_instance: str | None = None,
) -> dict[str, Any]:
    """Build a core/v1 Event about `pod` that happened at `now` (Unix seconds).

    The name is `<pod name>.<16 hex digits>`, random so that two Events in the
    same second never collide. `message` is trimmed to 1024 bytes of UTF-8.
    `reporting_instance` defaults to `carbon-scheduler-<hostname>`, which is the
    scheduler's pod name when it runs in a cluster. Raises ValueError for a pod
    without a name, an empty or too long reason or action, or an event type other
    than Normal or Warning.
    """
    metadata = pod.get("metadata") or {}
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"cannot build an Event for a pod without metadata.name: {dict(metadata)!r}")
    namespace = metadata.get("namespace") or "default"
    if event_type not in EVENT_TYPES:
        raise ValueError(f"invalid event type {event_type!r}; use Normal or Warning")
    _check_field("reason", reason)
    _check_field("action", action)
    instance = reporting_instance if reporting_instance is not None else _default_reporting_instance()
    _check_field("reportingInstance", instance)

    involved: dict[str, Any] = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": name}
    for field in ("uid", "resourceVersion"):
        if metadata.get(field):
            involved[field] = metadata[field]
    timestamp = format_time(now)
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": _event_name(name), "namespace": namespace},
        "involvedObject": involved,
        "reason": reason,
        "message": trim_message(message),
        "type": event_type,
        "source": {"component": SCHEDULER_NAME},
        "firstTimestamp": timestamp,
        "lastTimestamp": timestamp,
        "count": 1,
        "eventTime": _format_micro_time(now),
        "action": action,
        "reportingComponent": SCHEDULER_NAME,
        "reportingInstance": instance,
    }


def trim_message(message: str, max_bytes: int = MESSAGE_MAX_BYTES) -> str:
    """Return `message` cut to at most `max_bytes` bytes of UTF-8, ending in "..."
    when cut. A multi-byte character is never split."""
    encoded = message.encode("utf-8")
    if len(encoded) <= max_bytes:
        return message
    kept = encoded[: max_bytes - len(_TRIMMED)].decode("utf-8", errors="ignore")
    return kept + _TRIMMED


def _check_field(field: str, text: str) -> None:
    size = len(text.encode("utf-8"))
    if size == 0 or size > FIELD_MAX_BYTES:
        raise ValueError(f"invalid Event {field} {text!r}: must be 1 to {FIELD_MAX_BYTES} bytes, has {size}")


@functools.cache
def _default_reporting_instance() -> str:
    instance = f"{SCHEDULER_NAME}-{socket.gethostname()}"
    return instance.encode("utf-8")[:FIELD_MAX_BYTES].decode("utf-8", errors="ignore")


def _event_name(pod_name: str) -> str:
    # Pod names are DNS subdomains of at most 253 characters, so the prefix is cut
    # to leave room for the suffix. A DNS label must end in a letter or digit, so
    # a trailing "-" or "." left by the cut is removed.
    prefix = pod_name[: _EVENT_NAME_MAX - _NAME_SUFFIX_HEX_DIGITS - 1].rstrip("-.") or "pod"
    return f"{prefix}.{secrets.token_hex(_NAME_SUFFIX_HEX_DIGITS // 2)}"


# --- messages ------------------------------------------------------------------


def failed_scheduling_message(reasons: Mapping[str, Sequence[str]]) -> str:
    """Explain why no region could take a pod, from `Unschedulable.reasons`.

    For example: `0/2 regions can run the pod now: eu-west: Insufficient cpu,
    Too many pods; us-east: region is down.` Regions are listed by name.
    """
    if not reasons:
        return "0/0 regions can run the pod now: no region is configured."
    parts = [f"{region}: {', '.join(why) or 'no reason given'}" for region, why in sorted(reasons.items())]
    return f"0/{len(reasons)} regions can run the pod now: {'; '.join(parts)}."


def bind_message(pod: Mapping[str, Any], bind: Bind) -> str:
    """Explain a placement, for the `Scheduled` or `Moved` Event."""
    metadata = pod.get("metadata") or {}
    where = f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    return (
        f"Assigned {where} to node {bind.node} in region {bind.region} "
        f"({_number(bind.intensity_g_per_kwh)} gCO2/kWh): {bind.reason}."
    )


def deferred_message(defer: Defer) -> str:
    """Explain a deferral, for the `Deferred` Event."""
    window = defer.window
    text = (
        f"Deferred until {format_time(defer.until)}: {defer.reason}, "
        f"{format_time(window.start)} to {format_time(window.end)}, "
        f"estimated {_number(window.estimated_g)} gCO2"
    )
    if defer.start_now_g is not None:
        text += f" against {_number(defer.start_now_g)} gCO2 if started now"
    return text + "."


def waiting_message(wait: Wait) -> str:
    """Explain a wait for room, for the `Waiting` Event."""
    return f"Waiting for room in region {wait.region} until {format_time(wait.until)}: {wait.reason}."


def problem_event(problem: AnnotationProblem) -> tuple[str, str]:
    """Return the Event reason and message that report an invalid pod input."""
    if problem.key == SPEC_PROBLEM_KEY:
        return REASON_INVALID_POD_SPEC, f"Invalid pod spec: {problem.reason}."
    return REASON_INVALID_ANNOTATION, f"Invalid {problem.key}: {problem.reason}."


# --- decision annotation -------------------------------------------------------


def decision_annotation(
    *,
    region: str,
    node: str | None,
    intensity_g_per_kwh: float | None,
    level: Level | str | None,
    reason: str,
    window: Window | None,
    counterfactual_region: str | None,
    counterfactual_g: float | None,
    decided_at: float,
) -> dict[str, str]:
    """Return the `carbon-scheduler.io/decision` annotation of one decision.

    The value is compact JSON with the keys region, node, intensity_g_per_kwh,
    level, reason, window ({region, start, end, estimated_g} or null),
    counterfactual ({region, estimated_g}) and decided_at. Times are RFC 3339 in
    UTC; grams and intensities are rounded to 3 decimals. `node` is null for a
    deferral, and unknown numbers are null. Raises ValueError for a number that is
    not finite.
    """
    payload = {
        "region": region,
        "node": node,
        "intensity_g_per_kwh": _rounded("intensity_g_per_kwh", intensity_g_per_kwh),
        "level": level.label if isinstance(level, Level) else level,
        "reason": reason,
        "window": None
        if window is None
        else {
            "region": window.region,
            "start": format_time(window.start),
            "end": format_time(window.end),
            "estimated_g": _rounded("window.estimated_g", window.estimated_g),
        },
        "counterfactual": {
            "region": counterfactual_region,
            "estimated_g": _rounded("counterfactual_g", counterfactual_g),
        },
        "decided_at": format_time(decided_at),
    }
    return {DECISION_ANNOTATION: json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)}


def _rounded(field: str, number: float | None) -> float | None:
    if number is None:
        return None
    if not math.isfinite(number):
        raise ValueError(f"invalid {field} {number!r} for the decision annotation: must be a finite number")
    return round(float(number), 3)


# --- times ---------------------------------------------------------------------


def format_time(seconds: float) -> str:
    """Format Unix seconds as an RFC 3339 UTC time in whole seconds (rounded down),
    as metav1.Time is written."""
    return datetime.fromtimestamp(math.floor(seconds), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _format_micro_time(seconds: float) -> str:
    """Format Unix seconds with six fraction digits, as metav1.MicroTime is written."""
    micros = math.floor(seconds * 1_000_000)
    whole, fraction = divmod(micros, 1_000_000)
    return datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:06d}Z"


def _number(value: float) -> str:
    return f"{value:.1f}"
