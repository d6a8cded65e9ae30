"""Read pods and nodes, as the API server sends them in JSON, into the model types.

Pods and nodes stay plain dicts (camelCase keys) everywhere in the daemon. This
module turns them into what the policy core reads:

- `task_from_pod` builds a `Task` from a pod's class label, its annotations and
  its spec. It never raises on bad user input: an invalid value gives an
  `AnnotationProblem` (which the daemon reports as an Event on the pod) and the
  documented default, so one bad annotation never stops the scheduler.
- `node_from_json` builds a `Node`. Node objects come from the API server, which
  validates them, so malformed input raises `InvalidNodeError`.
- `usage_by_node` sums what bound, unfinished pods request per node. It runs for
  every region on every decision with up to 10,000 pods, so each pod's effective
  request is cached by uid and resourceVersion: a pod whose resourceVersion did not
  change has the same spec, and the cache skips parsing it again.

Times are integer Unix seconds, as in `carbon_scheduler.model`.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from types import MappingProxyType
from typing import Any

from carbon_scheduler.config.types import SchedulerSettings
from carbon_scheduler.model import (
    CLASS_LABEL,
    DEADLINE_ANNOTATION,
    EXPECTED_DURATION_ANNOTATION,
    REGIONS_ANNOTATION,
    SCHEDULER_NAME,
    ZERO,
    Node,
    PodRequirements,
    Resources,
    Taint,
    TaintEffect,
    Task,
    TaskClass,
)
from carbon_scheduler.policy.durations import DurationError, format_duration, parse_duration
from carbon_scheduler.policy.fit import NodeUsage
from carbon_scheduler.policy.requests import PodSpecError, parse_resource_list, pod_requirements
from carbon_scheduler.quantity import QuantityError, parse_quantity, value

__all__ = [
    "DEFAULT_TASK_CLASS",
    "MAX_DURATION_SECONDS",
    "REQUEST_CACHE_MAX",
    "SPEC_PROBLEM_KEY",
    "AnnotationProblem",
    "InvalidNodeError",
    "clear_request_cache",
    "is_finished",
    "is_ours",
    "is_unbound_pending",
    "node_from_json",
    "parse_rfc3339",
    "pod_key",
    "pod_request",
    "task_from_pod",
    "usage_by_node",
]

DEFAULT_TASK_CLASS = TaskClass.STANDARD

SPEC_PROBLEM_KEY = "spec"
"""`AnnotationProblem.key` of a pod spec that cannot be read."""

MAX_DURATION_SECONDS = 366 * 86_400
"""Longest expected duration, and latest deadline after creation, that annotations
may give. The window planner builds one array element per ledger slot up to the
latest start and works in int64 numpy arrays, so unbounded values would exhaust
memory or overflow there. A year is far beyond any batch task."""

REQUEST_CACHE_MAX = 50_000
"""Pods whose effective request `pod_request` keeps. It is five times the 10,000
pods one region is sized for, so several regions fit. With more live pods than
this the oldest entries are evicted and parsed again, which is slower but still
correct."""

_FINISHED_PHASES = frozenset({"Succeeded", "Failed"})
_TASK_CLASSES = {task_class.value: task_class for task_class in TaskClass}
_ALLOWED_CLASSES = ", ".join(task_class.value for task_class in TaskClass)
_TAINT_EFFECTS = {effect.value: effect for effect in TaintEffect}

# RFC 3339 date-time. A space in place of "T" is accepted because RFC 3339 allows
# it and people type it. The offset is required, because a time without one is
# ambiguous.
_RFC3339 = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt ]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.[0-9]+)?"
    r"(?P<offset>[Zz]|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))?",
    re.ASCII,
)
# A deadline that starts like a date is a time; anything else is a duration.
_LOOKS_LIKE_DATE = re.compile(r"\s*[0-9]{4}-", re.ASCII)
_TIME_EXAMPLE = "2024-03-01T09:30:00Z"
_DEADLINE_FORMS = f"an RFC 3339 time with an offset ({_TIME_EXAMPLE}) or a duration after creation (6h)"


@dataclass(frozen=True, slots=True)
class AnnotationProblem:
    """An invalid label, annotation or spec of a pod, which the daemon reports as an
    Event. `key` is the label or annotation name (`spec` for the pod spec), `value`
    the rejected text, and `reason` describes what is wrong, what is allowed and
    which default applies instead."""

    key: str
    value: str
    reason: str


class InvalidNodeError(ValueError):
    """A node object that cannot be read. The message names the node and the field."""


# --- pods ----------------------------------------------------------------------


def is_ours(pod: Mapping[str, Any]) -> bool:
    """Return whether `spec.schedulerName` names this scheduler."""
    return _mapping(pod.get("spec")).get("schedulerName") == SCHEDULER_NAME


def is_unbound_pending(pod: Mapping[str, Any]) -> bool:
    """Return whether the pod waits for a scheduler to bind it.

    That is a Pending pod without `spec.nodeName` that is not being deleted
    (no `metadata.deletionTimestamp`) and has no `spec.schedulingGates`. Like
    kube-scheduler, the daemon leaves pods that are being deleted or still gated
    alone. A missing phase counts as Pending, because the API server sets it
    only after defaulting.
    """
    spec = _mapping(pod.get("spec"))
    if spec.get("nodeName") or spec.get("schedulingGates"):
        return False
    if _mapping(pod.get("metadata")).get("deletionTimestamp"):
        return False
    phase = _mapping(pod.get("status")).get("phase")
    return phase in (None, "", "Pending")


def is_finished(pod: Mapping[str, Any]) -> bool:
    """Return whether the pod's phase is Succeeded or Failed."""
    return _mapping(pod.get("status")).get("phase") in _FINISHED_PHASES


def pod_key(region: str, pod: Mapping[str, Any]) -> str:
    """Return the queue key of a pod: `region/namespace/name/uid`.

    The uid makes a re-created pod of the same name a different key. None of the
    parts can contain "/", because region names are DNS labels and Kubernetes
    rejects "/" in namespaces, names and uids.
    """
    metadata = _mapping(pod.get("metadata"))
    return f"{region}/{metadata.get('namespace', '')}/{metadata.get('name', '')}/{metadata.get('uid', '')}"


def task_from_pod(
    pod: Mapping[str, Any],
    *,
    region: str,
    settings: SchedulerSettings,
    region_names: tuple[str, ...],
    now: float | None = None,
) -> tuple[Task, list[AnnotationProblem]]:
    """Build the task of a pod submitted in `region`, and list what was invalid.

    Reads the class label, `metadata.creationTimestamp` (the arrival), the
    expected-duration, deadline and regions annotations, and the spec's
    requirements. Each invalid value gives one problem and its default:

    - class: missing or invalid is `standard`.
    - expected duration: missing, invalid, zero or over `MAX_DURATION_SECONDS` is
      `settings.default_expected_duration_seconds`.
    - deadline: an RFC 3339 time with an offset, or a duration after creation.
      Missing, invalid, before arrival + duration, or more than
      `MAX_DURATION_SECONDS` after arrival is arrival +
      `settings.default_deadline_seconds` for a `deferrable` task and no deadline
      for the others.
    - regions: names not in `region_names` are dropped. When no listed name is
      known the task may run in every region.
    - spec: a spec that the API server would reject gives a problem with key
      `spec`, and the task requests no resources and has no node requirements.
    - creation time: a missing or invalid one (which the API server never sends)
      is `now`, or the wall clock when `now` is None.

    Never raises for any label, annotation or spec content.
    """
    metadata = _mapping(pod.get("metadata"))
    labels = _mapping(metadata.get("labels"))
    annotations = _mapping(metadata.get("annotations"))
    problems: list[AnnotationProblem] = []

    task_class = _read_class(labels, problems)
    arrival = _read_arrival(metadata, now, problems)
    duration = _read_duration(annotations, settings, problems)
    deadline = _read_deadline(annotations, task_class, arrival, duration, settings, problems)
    allowed_regions = _read_regions(annotations, region_names, problems)
    requirements = _read_requirements(pod, problems)

    uid = metadata.get("uid")
    task_id = uid if isinstance(uid, str) and uid else f"{metadata.get('namespace', '')}/{metadata.get('name', '')}"
    task = Task(
        id=task_id,
        task_class=task_class,
        arrival=arrival,
        duration=duration,
        home_region=region,
        requirements=requirements,
        deadline=deadline,
        allowed_regions=allowed_regions,
    )
    return task, problems


def _read_class(labels: Mapping[str, Any], problems: list[AnnotationProblem]) -> TaskClass:
    raw = labels.get(CLASS_LABEL)
    if raw is None:
        return DEFAULT_TASK_CLASS
    task_class = _TASK_CLASSES.get(raw) if isinstance(raw, str) else None
    if task_class is None:
        problems.append(
            AnnotationProblem(
                CLASS_LABEL,
                _text(raw),
                f"unknown task class {_text(raw)!r}; use {_ALLOWED_CLASSES}. "
                f"The pod is scheduled as {DEFAULT_TASK_CLASS.value}",
            )
        )
        return DEFAULT_TASK_CLASS
    return task_class


def _read_arrival(metadata: Mapping[str, Any], now: float | None, problems: list[AnnotationProblem]) -> int:
    raw = metadata.get("creationTimestamp")
    if isinstance(raw, str):
        try:
            return parse_rfc3339(raw)
        except ValueError as error:
            reason = str(error)
    else:
        reason = f"expected an RFC 3339 time such as {_TIME_EXAMPLE}, got {_text(raw)!r}"
    fallback = int(time.time() if now is None else now)
    problems.append(
        AnnotationProblem(
            "metadata.creationTimestamp", _text(raw), f"{reason}. The arrival is taken as the time the pod was read"
        )
    )
    return fallback


def _read_duration(
    annotations: Mapping[str, Any], settings: SchedulerSettings, problems: list[AnnotationProblem]
) -> int:
    default = settings.default_expected_duration_seconds
    raw = annotations.get(EXPECTED_DURATION_ANNOTATION)
    if raw is None:
        return default
    reason = _duration_problem(raw, allow_zero=False)
    if reason is None:
        return parse_duration(raw)
    problems.append(
        AnnotationProblem(
            EXPECTED_DURATION_ANNOTATION,
            _text(raw),
            f"{reason}. The default expected duration of {format_duration(default)} applies",
        )
    )
    return default


def _duration_problem(raw: object, *, allow_zero: bool) -> str | None:
    """Return why `raw` is not an acceptable annotation duration, or None."""
    if not isinstance(raw, str):
        return f"invalid duration {_text(raw)!r}: expected a string such as 45m"
    try:
        seconds = parse_duration(raw)
    except DurationError as error:
        return str(error)
    except ValueError:
        # int() refuses numbers of more than 4,300 digits (sys.int_info).
        return f"invalid duration of {len(raw)} characters starting {raw[:20]!r}: the number is too long"

    if seconds == 0 and not allow_zero:
        return f"invalid duration {raw!r}: must be more than zero, such as 45m"
    if seconds > MAX_DURATION_SECONDS:
        return f"invalid duration {raw!r}: must be at most {format_duration(MAX_DURATION_SECONDS)} (366 days)"
    return None


def _read_deadline(
    annotations: Mapping[str, Any],
    task_class: TaskClass,
    arrival: int,
    duration: int,
    settings: SchedulerSettings,
    problems: list[AnnotationProblem],
) -> int | None:
    if task_class is TaskClass.DEFERRABLE:
        default: int | None = arrival + settings.default_deadline_seconds
        fallback = f"The default deadline of {format_duration(settings.default_deadline_seconds)} after creation applies"
    else:
        default = None
        fallback = "The pod has no deadline"
    raw = annotations.get(DEADLINE_ANNOTATION)
    if raw is None:
        # A default deadline that leaves less than the expected duration is kept:
        # the planner then starts the task at once, the best it can do.
        return default

    deadline, reason = _parse_deadline(raw, arrival)
    if deadline is not None and deadline > arrival + MAX_DURATION_SECONDS:
        reason = (
            f"deadline {raw!r} ({_format_time(deadline)}) is more than "
            f"{format_duration(MAX_DURATION_SECONDS)} (366 days) after creation; set an earlier deadline"
        )
        deadline = None
    elif deadline is not None and deadline < arrival + duration:
        reason = (
            f"deadline {raw!r} ({_format_time(deadline)}) is before creation + expected duration "
            f"({_format_time(arrival + duration)}), so the pod cannot finish in time; "
            "set a later deadline or a shorter expected duration"
        )
        deadline = None
    if deadline is None:
        problems.append(AnnotationProblem(DEADLINE_ANNOTATION, _text(raw), f"{reason}. {fallback}"))
        return default
    return deadline


def _parse_deadline(raw: object, arrival: int) -> tuple[int | None, str]:
    """Return the deadline in Unix seconds, or None and the reason it is invalid."""
    if not isinstance(raw, str):
        return None, f"invalid deadline {_text(raw)!r}: expected {_DEADLINE_FORMS}"
    if _LOOKS_LIKE_DATE.match(raw):
        try:
            return parse_rfc3339(raw), ""
        except ValueError as error:
            return None, f"invalid deadline: {error}"
    reason = _duration_problem(raw, allow_zero=True)
    if reason is not None:
        return None, f"invalid deadline: {reason}; write {_DEADLINE_FORMS}"
    return arrival + parse_duration(raw), ""


def _read_regions(
    annotations: Mapping[str, Any], region_names: tuple[str, ...], problems: list[AnnotationProblem]
) -> tuple[str, ...] | None:
    raw = annotations.get(REGIONS_ANNOTATION)
    if raw is None:
        return None
    known = ", ".join(region_names) or "(none configured)"
    if not isinstance(raw, str):
        problems.append(
            AnnotationProblem(
                REGIONS_ANNOTATION,
                _text(raw),
                f"invalid region list {_text(raw)!r}: expected comma-separated region names from {known}. "
                "Every region is allowed",
            )
        )
        return None

    listed = [name.strip() for name in raw.split(",")]
    # dict.fromkeys drops repeats and keeps the order of first mention.
    names = list(dict.fromkeys(name for name in listed if name))
    allowed = tuple(name for name in names if name in region_names)
    unknown = [name for name in names if name not in region_names]
    if not names:
        reason = f"region list {raw!r} names no region; list region names from {known}, separated by commas"
    elif unknown:
        reason = f"unknown region(s) {', '.join(repr(name) for name in unknown)} in {raw!r}; known regions: {known}"
    else:
        return allowed
    if allowed:
        reason += f". They are ignored, so the pod may run in {', '.join(allowed)}"
    else:
        reason += ". No listed region is known, so every region is allowed"
    problems.append(AnnotationProblem(REGIONS_ANNOTATION, raw, reason))
    return allowed or None


def _read_requirements(pod: Mapping[str, Any], problems: list[AnnotationProblem]) -> PodRequirements:
    try:
        return pod_requirements(pod.get("spec"))  # type: ignore[arg-type]
    except PodSpecError as error:
        problems.append(
            AnnotationProblem(
                SPEC_PROBLEM_KEY,
                error.path,
                f"{error}. The pod is placed as if it requested no resources and had no node requirements",
            )
        )
        return PodRequirements()


# --- times ---------------------------------------------------------------------


def parse_rfc3339(text: str) -> int:
    """Parse an RFC 3339 time with `Z` or an offset into Unix seconds.

    Fractional seconds are rounded down, so a deadline never moves later. Raises
    ValueError naming the text for other syntax, a missing offset, or an impossible
    date or time (a leap second :60 included, which Go's time.Parse also rejects).
    """
    match = _RFC3339.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid RFC 3339 time {text!r}; write it like {_TIME_EXAMPLE}")
    if match["offset"] is None:
        raise ValueError(f"time {text!r} has no UTC offset; add Z for UTC or an offset such as +01:00")
    try:
        if match["sign"] is None:
            zone = UTC
        else:
            offset = timedelta(hours=int(match["offset_hour"]), minutes=int(match["offset_minute"]))
            if offset.total_seconds() >= 86_400 or int(match["offset_minute"]) > 59:
                raise ValueError("the UTC offset must be less than 24:00 with minutes below 60")
            zone = timezone(-offset if match["sign"] == "-" else offset)
        moment = datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            tzinfo=zone,
        )
    except ValueError as error:
        raise ValueError(f"invalid time {text!r}: {error}") from error
    return int(moment.timestamp())


def _format_time(seconds: int) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- nodes ---------------------------------------------------------------------


def node_from_json(node: Mapping[str, Any]) -> Node:
    """Build a `Node` from a node object.

    Allocatable resources are read exactly as Kubernetes quantities. The pod
    count is `status.allocatable.pods`; the kubelet always reports it, so a node
    without it is taken to hold 0 pods and nothing fits there. The node is ready
    when its `Ready` condition has status "True". Raises InvalidNodeError for a
    quantity, taint or field that the API server would not accept.
    """
    metadata = _mapping(node.get("metadata"))
    name = metadata.get("name")
    if not isinstance(name, str) or not name:
        raise InvalidNodeError(f"node without metadata.name: {_text(name)!r}; a node object always has a name")
    spec = _mapping(node.get("spec"))
    status = _mapping(node.get("status"))
    allocatable = _mapping(status.get("allocatable"))

    try:
        resources = parse_resource_list(allocatable, path="status.allocatable")
    except PodSpecError as error:
        raise InvalidNodeError(f"node {name!r}: {error}") from error
    pods = _read_pod_capacity(name, allocatable.get("pods"))

    labels = metadata.get("labels")
    return Node(
        name=name,
        allocatable=resources,
        allocatable_pods=pods,
        labels=MappingProxyType(dict(labels)) if isinstance(labels, Mapping) else MappingProxyType({}),
        taints=_read_taints(name, spec.get("taints")),
        ready=_is_ready(status.get("conditions")),
        unschedulable=bool(spec.get("unschedulable")),
    )


def _read_pod_capacity(name: str, raw: object) -> int:
    if raw is None:
        return 0
    try:
        count = value(parse_quantity(raw))  # type: ignore[arg-type]
    except QuantityError as error:
        raise InvalidNodeError(f"node {name!r}: status.allocatable[pods]: {error}") from error
    if count < 0:
        raise InvalidNodeError(f"node {name!r}: status.allocatable[pods] is negative ({raw!r})")
    return count


def _read_taints(name: str, raw: object) -> tuple[Taint, ...]:
    if not raw:
        return ()
    if not isinstance(raw, list):
        raise InvalidNodeError(f"node {name!r}: spec.taints must be a list, got {_text(raw)!r}")
    taints = []
    for index, item in enumerate(raw):
        item = _mapping(item)
        key = item.get("key")
        raw_effect = item.get("effect")
        effect = _TAINT_EFFECTS.get(raw_effect) if isinstance(raw_effect, str) else None
        if not isinstance(key, str) or not key:
            raise InvalidNodeError(f"node {name!r}: spec.taints[{index}].key is missing; a taint needs a key")
        if effect is None:
            raise InvalidNodeError(
                f"node {name!r}: spec.taints[{index}].effect {raw_effect!r} is invalid; "
                f"use {', '.join(_TAINT_EFFECTS)}"
            )
        taint_value = item.get("value") or ""
        taints.append(Taint(key, effect, taint_value if isinstance(taint_value, str) else str(taint_value)))
    return tuple(taints)


def _is_ready(conditions: object) -> bool:
    if not isinstance(conditions, list):
        return False
    for condition in conditions:
        if isinstance(condition, Mapping) and condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


# --- node usage ----------------------------------------------------------------

# uid -> (resourceVersion, effective request). Insertion order is the eviction
# order, and an updated pod is re-inserted at the end.
_request_cache: dict[str, tuple[str, Resources]] = {}


def pod_request(pod: Mapping[str, Any]) -> Resources:
    """Return the pod's effective request, cached by uid and resourceVersion.

    A spec that the API server would reject counts as requesting nothing; such a
    pod cannot exist in a cluster, and `task_from_pod` reports it.
    """
    metadata = _mapping(pod.get("metadata"))
    uid = metadata.get("uid")
    version = metadata.get("resourceVersion")
    if not isinstance(uid, str) or not isinstance(version, str) or not uid or not version:
        return _compute_request(pod)
    cached = _request_cache.get(uid)
    if cached is not None:
        if cached[0] == version:
            return cached[1]
        del _request_cache[uid]
    request = _compute_request(pod)
    _request_cache[uid] = (version, request)
    if len(_request_cache) > REQUEST_CACHE_MAX:
        del _request_cache[next(iter(_request_cache))]
    return request


def clear_request_cache() -> None:
    """Forget every cached request, for tests and after a full relist."""
    _request_cache.clear()


def _compute_request(pod: Mapping[str, Any]) -> Resources:
    try:
        return pod_requirements(pod.get("spec")).request  # type: ignore[arg-type]
    except PodSpecError:
        return ZERO


def usage_by_node(pods: Iterable[Mapping[str, Any]]) -> dict[str, NodeUsage]:
    """Sum the effective requests and count the pods that are bound to each node
    and not finished (phase neither Succeeded nor Failed).

    Pods of every scheduler count, as they do for kube-scheduler. Nodes without
    such pods are absent from the result.
    """
    # Per node: [milli_cpu, memory, ephemeral_storage, pods, scalar]. Plain ints
    # are summed in place because building a Resources per pod would triple the
    # cost with 10,000 pods.
    totals: dict[str, list[Any]] = {}
    cache = _request_cache
    for pod in pods:
        # API objects are plain dicts, so the exact type check skips the slower
        # Mapping isinstance check for all but malformed input.
        spec = pod.get("spec")
        node = (spec if type(spec) is dict else _mapping(spec)).get("nodeName")
        if not node:
            continue
        status = pod.get("status")
        if (status if type(status) is dict else _mapping(status)).get("phase") in _FINISHED_PHASES:
            continue
        # The cache hit of pod_request, inlined: it is the common case and the
        # function call would cost a third of the loop.
        metadata = pod.get("metadata")
        cached = cache.get(metadata.get("uid")) if type(metadata) is dict else None
        if cached is not None and cached[0] == metadata.get("resourceVersion"):
            request = cached[1]
        else:
            request = pod_request(pod)
        total = totals.get(node)
        if total is None:
            total = totals[node] = [0, 0, 0, 0, None]
        total[0] += request.milli_cpu
        total[1] += request.memory
        total[2] += request.ephemeral_storage
        total[3] += 1
        if request.scalar:
            scalar = total[4]
            if scalar is None:
                scalar = total[4] = {}
            for name, amount in request.scalar.items():
                scalar[name] = scalar.get(name, 0) + amount

    usage = {}
    for node, (milli_cpu, memory, storage, count, scalar) in totals.items():
        resources = Resources(milli_cpu, memory, storage, MappingProxyType(scalar)) if scalar else Resources(
            milli_cpu, memory, storage
        )
        usage[node] = NodeUsage(resources, count)
    return usage


# --- helpers -------------------------------------------------------------------

_EMPTY: Mapping[str, Any] = MappingProxyType({})


def _mapping(raw: object) -> Mapping[str, Any]:
    """Return `raw` when it is a mapping, else an empty one: JSON may carry null."""
    return raw if isinstance(raw, Mapping) else _EMPTY


def _text(raw: object) -> str:
    """Return a label or annotation value as text for a problem report."""
    return raw if isinstance(raw, str) else repr(raw)
