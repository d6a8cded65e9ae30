"""Whether a pod fits a node, decided as kube-scheduler's Filter plugins decide it.

The rules run in kube-scheduler's default filter order, and like kube-scheduler's
framework the first rule that fails ends the check, so a node reports the reasons
of one rule only:

1. readiness: a node that is not Ready fails. Current kube-scheduler filters such
   a node through the node.kubernetes.io/not-ready taint, which a pod may
   tolerate. Here the Ready flag decides, whatever the tolerations.
2. NodeUnschedulable: a cordoned node fails unless the pod tolerates the
   `node.kubernetes.io/unschedulable:NoSchedule` taint.
3. TaintToleration: every NoSchedule and NoExecute taint must be tolerated; the
   first untolerated one is reported. PreferNoSchedule only affects scoring.
4. NodeAffinity: the labels must match `nodeSelector` exactly, and one of the
   required node selector terms must match.
5. NodeResourcesFit: the pod count and every resource the pod requests must fit
   into allocatable on top of what bound, unfinished pods already request. All
   shortfalls of this rule are reported together.

Reasons use kube-scheduler's wording, so that messages built from them read like
its "0/3 nodes are available: ..." events. `fit_failures` runs for every node of
every decision in a replay, so it compares fields in place, builds no Resources
objects and returns shared tuples for the common outcomes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from carbon_scheduler.model import (
    Node,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodRequirements,
    Resources,
    Taint,
    Toleration,
)

__all__ = [
    "NOT_READY",
    "NODE_AFFINITY_MISMATCH",
    "TOO_MANY_PODS",
    "UNSCHEDULABLE",
    "UNSCHEDULABLE_TAINT_KEY",
    "NodeUsage",
    "fit_failures",
    "fits",
    "insufficient",
    "untolerated_taint",
]

NOT_READY = "node(s) were not ready"
UNSCHEDULABLE = "node(s) were unschedulable"
NODE_AFFINITY_MISMATCH = "node(s) didn't match Pod's node affinity/selector"
TOO_MANY_PODS = "Too many pods"
UNSCHEDULABLE_TAINT_KEY = "node.kubernetes.io/unschedulable"

_NOT_READY = (NOT_READY,)
_UNSCHEDULABLE = (UNSCHEDULABLE,)
_NODE_AFFINITY_MISMATCH = (NODE_AFFINITY_MISMATCH,)
_FITS: tuple[str, ...] = ()

_INT64 = re.compile(r"[+-]?(?P<digits>[0-9]+)")


def insufficient(resource: str) -> str:
    """Return kube-scheduler's reason for a resource shortfall, e.g. 'Insufficient cpu'."""
    return f"Insufficient {resource}"


def untolerated_taint(taint: Taint) -> str:
    """Return kube-scheduler's reason for a taint that the pod does not tolerate."""
    return f"node(s) had untolerated taint {{{taint.key}: {taint.value}}}"


@dataclass(slots=True)
class NodeUsage:
    """Resource use of the pods bound to a node and not yet finished.

    `requested` is the sum of their effective requests and `pods` their number.
    Pods of every scheduler count, as they do for kube-scheduler.
    """

    requested: Resources
    pods: int


def fits(pod: PodRequirements, node: Node, usage: NodeUsage) -> bool:
    """Return whether `pod` passes every fit rule on `node`."""
    return not fit_failures(pod, node, usage)


def fit_failures(pod: PodRequirements, node: Node, usage: NodeUsage) -> tuple[str, ...]:
    """Return why `pod` cannot run on `node`, or an empty tuple when it fits.

    The reasons come from the first failing rule, in the order of the module
    docstring.
    """
    if not node.ready:
        return _NOT_READY
    if node.unschedulable and not _tolerates_unschedulable(pod.tolerations):
        return _UNSCHEDULABLE
    if node.taints:
        taint = _first_untolerated_taint(node.taints, pod.tolerations)
        if taint is not None:
            return (untolerated_taint(taint),)
    if (pod.node_selector or pod.required_node_terms) and not _matches_node_affinity(pod, node):
        return _NODE_AFFINITY_MISMATCH
    return _resource_failures(pod.request, node, usage)


# --- taints and tolerations ----------------------------------------------------


def _toleration_matches(toleration: Toleration, key: str, value: str, effect: str) -> bool:
    """Toleration.ToleratesTaint from k8s.io/api/core/v1: an empty effect matches
    every effect, an empty key every key, and an empty operator means Equal."""
    if toleration.effect and toleration.effect != effect:
        return False
    if toleration.key and toleration.key != key:
        return False
    operator = toleration.operator
    if operator == "Exists":
        return True
    if operator in ("Equal", ""):
        return toleration.value == value
    return False


def _tolerates_unschedulable(tolerations: tuple[Toleration, ...]) -> bool:
    for toleration in tolerations:
        if _toleration_matches(toleration, UNSCHEDULABLE_TAINT_KEY, "", "NoSchedule"):
            return True
    return False


def _first_untolerated_taint(taints: tuple[Taint, ...], tolerations: tuple[Toleration, ...]) -> Taint | None:
    for taint in taints:
        effect = taint.effect
        # PreferNoSchedule only lowers a node's score; it never filters.
        if effect != "NoSchedule" and effect != "NoExecute":
            continue
        for toleration in tolerations:
            if _toleration_matches(toleration, taint.key, taint.value, effect):
                break
        else:
            return taint
    return None


# --- node selector and required node affinity ----------------------------------


def _matches_node_affinity(pod: PodRequirements, node: Node) -> bool:
    labels = node.labels
    for key, expected in pod.node_selector.items():
        if labels.get(key) != expected:
            return False
    terms = pod.required_node_terms
    if not terms:
        return True
    for term in terms:
        if _term_matches(term, node):
            return True
    return False


def _term_matches(term: NodeSelectorTerm, node: Node) -> bool:
    """Match one term of requiredDuringSchedulingIgnoredDuringExecution as
    k8s.io/component-helpers nodeaffinity does. Every requirement must hold, a term
    without requirements matches nothing, and a malformed requirement makes the
    whole term fail."""
    if not term.match_expressions and not term.match_fields:
        return False
    labels = node.labels
    for requirement in term.match_expressions:
        if not _label_requirement_matches(requirement, labels):
            return False
    for requirement in term.match_fields:
        if not _field_requirement_matches(requirement, node.name):
            return False
    return True


def _label_requirement_matches(requirement: NodeSelectorRequirement, labels: Mapping[str, str]) -> bool:
    """Match one matchExpressions requirement as labels.Requirement.Matches does.
    Value counts that labels.NewRequirement rejects make the requirement fail."""
    operator = requirement.operator
    values = requirement.values
    label = labels.get(requirement.key)
    if operator == "In":
        return bool(values) and label is not None and label in values
    if operator == "NotIn":
        return bool(values) and (label is None or label not in values)
    if operator == "Exists":
        return not values and label is not None
    if operator == "DoesNotExist":
        return not values and label is None
    if operator == "Gt" or operator == "Lt":
        if len(values) != 1 or label is None:
            return False
        node_number = _parse_int64(label)
        bound = _parse_int64(values[0])
        if node_number is None or bound is None:
            return False
        return node_number > bound if operator == "Gt" else node_number < bound
    return False


def _field_requirement_matches(requirement: NodeSelectorRequirement, node_name: str) -> bool:
    """Match a matchFields requirement. The only node field is metadata.name, and a
    requirement needs In or NotIn with exactly one value."""
    operator = requirement.operator
    values = requirement.values
    if len(values) != 1 or (operator != "In" and operator != "NotIn"):
        return False
    # nodeaffinity skips field requirements when the node has no fields, which
    # only happens for a node without a name.
    if not node_name:
        return True
    # A field selector reads a field that the node lacks as "".
    field_value = node_name if requirement.key == "metadata.name" else ""
    return (field_value == values[0]) == (operator == "In")


def _parse_int64(text: str) -> int | None:
    """Parse `text` as strconv.ParseInt(text, 10, 64) does, or return None."""
    match = _INT64.fullmatch(text)
    if match is None or len(match["digits"].lstrip("0")) > 19:
        return None
    number = int(text)
    if not -(2**63) <= number < 2**63:
        return None
    return number


# --- resources -----------------------------------------------------------------


def _resource_failures(request: Resources, node: Node, usage: NodeUsage) -> tuple[str, ...]:
    """NodeResourcesFit: shortfalls in pod count, cpu, memory, ephemeral storage and
    scalar resources, in that order. Like kube-scheduler, a resource is checked only
    when the pod requests a non-zero amount of it, and a resource that the node does
    not list counts as 0 allocatable."""
    allocatable = node.allocatable
    requested = usage.requested
    reasons: list[str] | None = None

    if usage.pods + 1 > node.allocatable_pods:
        reasons = [TOO_MANY_PODS]
    cpu = request.milli_cpu
    if cpu > 0 and cpu > allocatable.milli_cpu - requested.milli_cpu:
        reasons = _append(reasons, "Insufficient cpu")
    memory = request.memory
    if memory > 0 and memory > allocatable.memory - requested.memory:
        reasons = _append(reasons, "Insufficient memory")
    storage = request.ephemeral_storage
    if storage > 0 and storage > allocatable.ephemeral_storage - requested.ephemeral_storage:
        reasons = _append(reasons, "Insufficient ephemeral-storage")
    if request.scalar:
        node_scalar = allocatable.scalar
        used_scalar = requested.scalar
        for name, amount in request.scalar.items():
            if amount == 0:
                continue
            if amount > node_scalar.get(name, 0) - used_scalar.get(name, 0):
                reasons = _append(reasons, insufficient(name))

    if reasons is None:
        return _FITS
    return tuple(reasons)


def _append(reasons: list[str] | None, reason: str) -> list[str]:
    if reasons is None:
        return [reason]
    reasons.append(reason)
    return reasons
