"""Node fit: one named case per rule and reason, and a property that ties the
result to the individual rules, written here independently of fit.py."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbon_scheduler.model import (
    ZERO,
    Node,
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodRequirements,
    Resources,
    Taint,
    TaintEffect,
    Toleration,
)
from carbon_scheduler.policy.fit import (
    NODE_AFFINITY_MISMATCH,
    NOT_READY,
    TOO_MANY_PODS,
    UNSCHEDULABLE,
    NodeUsage,
    fit_failures,
    fits,
)

NO_SCHEDULE = TaintEffect.NO_SCHEDULE
NO_EXECUTE = TaintEffect.NO_EXECUTE
PREFER_NO_SCHEDULE = TaintEffect.PREFER_NO_SCHEDULE
GPU = "nvidia.com/gpu"

NODE = Node(
    name="node-1",
    allocatable=Resources(4000, 8 * 2**30, 100 * 10**9, MappingProxyType({GPU: 2})),
    allocatable_pods=10,
    labels={"zone": "a", "cores": "16", "disk": "ssd"},
)
POD = PodRequirements(request=Resources(500, 2**30))
IDLE = NodeUsage(ZERO, 0)


def term(*expressions: tuple[str, str, tuple[str, ...]], fields: tuple[tuple[str, str, tuple[str, ...]], ...] = ()) -> NodeSelectorTerm:
    return NodeSelectorTerm(
        match_expressions=tuple(NodeSelectorRequirement(*expression) for expression in expressions),
        match_fields=tuple(NodeSelectorRequirement(*requirement) for requirement in fields),
    )


def with_terms(*terms: NodeSelectorTerm) -> PodRequirements:
    return replace(POD, required_node_terms=terms)


def tolerating(*tolerations: Toleration) -> PodRequirements:
    return replace(POD, tolerations=tolerations)


def tainted(*taints: Taint) -> Node:
    return replace(NODE, taints=taints)


def requesting(
    milli_cpu: int = 0, memory: int = 0, storage: int = 0, scalar: dict[str, int] | None = None
) -> PodRequirements:
    return replace(POD, request=Resources(milli_cpu, memory, storage, MappingProxyType(scalar or {})))


def untolerated(key: str, value: str = "") -> tuple[str, ...]:
    return (f"node(s) had untolerated taint {{{key}: {value}}}",)


UNSCHEDULABLE_KEY = "node.kubernetes.io/unschedulable"

CASES = [
    # (name, pod, node, usage, expected reasons)
    ("fits idle node", POD, NODE, IDLE, ()),
    ("not ready", POD, replace(NODE, ready=False), IDLE, (NOT_READY,)),
    ("not ready reported before cordon", POD, replace(NODE, ready=False, unschedulable=True), IDLE, (NOT_READY,)),
    ("cordoned", POD, replace(NODE, unschedulable=True), IDLE, (UNSCHEDULABLE,)),
    (
        "cordon tolerated by key",
        tolerating(Toleration(UNSCHEDULABLE_KEY, "Exists", "", "NoSchedule")),
        replace(NODE, unschedulable=True),
        IDLE,
        (),
    ),
    ("cordon tolerated by wildcard", tolerating(Toleration("", "Exists")), replace(NODE, unschedulable=True), IDLE, ()),
    (
        "cordon not tolerated by no-execute toleration",
        tolerating(Toleration(UNSCHEDULABLE_KEY, "Exists", "", "NoExecute")),
        replace(NODE, unschedulable=True),
        IDLE,
        (UNSCHEDULABLE,),
    ),
    (
        "cordon reported before taint",
        POD,
        replace(NODE, unschedulable=True, taints=(Taint("dedicated", NO_SCHEDULE, "batch"),)),
        IDLE,
        (UNSCHEDULABLE,),
    ),
    ("no-schedule taint", POD, tainted(Taint("dedicated", NO_SCHEDULE, "batch")), IDLE, untolerated("dedicated", "batch")),
    ("no-execute taint", POD, tainted(Taint("maintenance", NO_EXECUTE)), IDLE, untolerated("maintenance")),
    ("prefer-no-schedule ignored", POD, tainted(Taint("spot", PREFER_NO_SCHEDULE, "true")), IDLE, ()),
    (
        "equal toleration with same value",
        tolerating(Toleration("dedicated", "Equal", "batch", "NoSchedule")),
        tainted(Taint("dedicated", NO_SCHEDULE, "batch")),
        IDLE,
        (),
    ),
    (
        "equal toleration with other value",
        tolerating(Toleration("dedicated", "Equal", "web", "NoSchedule")),
        tainted(Taint("dedicated", NO_SCHEDULE, "batch")),
        IDLE,
        untolerated("dedicated", "batch"),
    ),
    (
        "empty operator means equal",
        tolerating(Toleration("dedicated", "", "batch")),
        tainted(Taint("dedicated", NO_SCHEDULE, "batch")),
        IDLE,
        (),
    ),
    (
        "exists toleration ignores value",
        tolerating(Toleration("dedicated", "Exists")),
        tainted(Taint("dedicated", NO_EXECUTE, "anything")),
        IDLE,
        (),
    ),
    (
        "empty effect matches every effect",
        tolerating(Toleration("maintenance", "Exists", "", "")),
        tainted(Taint("maintenance", NO_EXECUTE)),
        IDLE,
        (),
    ),
    (
        "toleration effect must match",
        tolerating(Toleration("maintenance", "Exists", "", "NoSchedule")),
        tainted(Taint("maintenance", NO_EXECUTE)),
        IDLE,
        untolerated("maintenance"),
    ),
    (
        "wildcard tolerates every taint",
        tolerating(Toleration("", "Exists")),
        tainted(Taint("a", NO_SCHEDULE, "1"), Taint("b", NO_EXECUTE)),
        IDLE,
        (),
    ),
    (
        "unknown operator tolerates nothing",
        tolerating(Toleration("dedicated", "Gt", "batch")),
        tainted(Taint("dedicated", NO_SCHEDULE, "batch")),
        IDLE,
        untolerated("dedicated", "batch"),
    ),
    (
        "first untolerated taint reported",
        tolerating(Toleration("a", "Exists")),
        tainted(Taint("a", NO_SCHEDULE), Taint("b", NO_SCHEDULE, "2"), Taint("c", NO_EXECUTE)),
        IDLE,
        untolerated("b", "2"),
    ),
    (
        "taint reported before affinity",
        replace(POD, node_selector={"zone": "b"}),
        tainted(Taint("a", NO_SCHEDULE)),
        IDLE,
        untolerated("a"),
    ),
    ("node selector matches", replace(POD, node_selector={"zone": "a", "disk": "ssd"}), NODE, IDLE, ()),
    ("node selector other value", replace(POD, node_selector={"zone": "b"}), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("node selector missing label", replace(POD, node_selector={"gpu": "true"}), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("node selector empty value needs label", replace(POD, node_selector={"gpu": ""}), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity in", with_terms(term(("zone", "In", ("a", "b")))), NODE, IDLE, ()),
    ("affinity in mismatch", with_terms(term(("zone", "In", ("b", "c")))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity in missing label", with_terms(term(("rack", "In", ("1",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity not in", with_terms(term(("zone", "NotIn", ("b",)))), NODE, IDLE, ()),
    ("affinity not in excluded", with_terms(term(("zone", "NotIn", ("a",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity not in missing label", with_terms(term(("rack", "NotIn", ("1",)))), NODE, IDLE, ()),
    ("affinity exists", with_terms(term(("disk", "Exists", ()))), NODE, IDLE, ()),
    ("affinity exists missing", with_terms(term(("gpu", "Exists", ()))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity does not exist", with_terms(term(("gpu", "DoesNotExist", ()))), NODE, IDLE, ()),
    ("affinity does not exist present", with_terms(term(("disk", "DoesNotExist", ()))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity gt", with_terms(term(("cores", "Gt", ("8",)))), NODE, IDLE, ()),
    ("affinity gt equal fails", with_terms(term(("cores", "Gt", ("16",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity lt", with_terms(term(("cores", "Lt", ("+32",)))), NODE, IDLE, ()),
    ("affinity lt negative", with_terms(term(("cores", "Lt", ("-1",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity gt non-integer label", with_terms(term(("zone", "Gt", ("1",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity gt non-integer value", with_terms(term(("cores", "Gt", ("1.5",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    (
        "affinity gt label beyond int64",
        with_terms(term(("big", "Gt", ("1",)))),
        replace(NODE, labels={"big": "9223372036854775808"}),
        IDLE,
        (NODE_AFFINITY_MISMATCH,),
    ),
    ("affinity in without values", with_terms(term(("zone", "In", ()))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity not in without values", with_terms(term(("zone", "NotIn", ()))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity exists with values", with_terms(term(("zone", "Exists", ("a",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("affinity unknown operator", with_terms(term(("zone", "Equals", ("a",)))), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    (
        "affinity expressions are and-ed",
        with_terms(term(("zone", "In", ("a",)), ("disk", "In", ("hdd",)))),
        NODE,
        IDLE,
        (NODE_AFFINITY_MISMATCH,),
    ),
    (
        "affinity terms are or-ed",
        with_terms(term(("zone", "In", ("b",))), term(("disk", "In", ("ssd",)))),
        NODE,
        IDLE,
        (),
    ),
    ("empty term matches nothing", with_terms(NodeSelectorTerm()), NODE, IDLE, (NODE_AFFINITY_MISMATCH,)),
    ("empty term beside matching term", with_terms(NodeSelectorTerm(), term(("zone", "Exists", ()))), NODE, IDLE, ()),
    ("match field name", with_terms(term(fields=(("metadata.name", "In", ("node-1",)),))), NODE, IDLE, ()),
    (
        "match field other name",
        with_terms(term(fields=(("metadata.name", "In", ("node-2",)),))),
        NODE,
        IDLE,
        (NODE_AFFINITY_MISMATCH,),
    ),
    ("match field not in", with_terms(term(fields=(("metadata.name", "NotIn", ("node-2",)),))), NODE, IDLE, ()),
    (
        "match field and expression",
        with_terms(term(("zone", "In", ("a",)), fields=(("metadata.name", "NotIn", ("node-1",)),))),
        NODE,
        IDLE,
        (NODE_AFFINITY_MISMATCH,),
    ),
    (
        "selector and affinity both needed",
        replace(with_terms(term(("zone", "In", ("a",)))), node_selector={"disk": "hdd"}),
        NODE,
        IDLE,
        (NODE_AFFINITY_MISMATCH,),
    ),
    (
        "affinity reported before resources",
        replace(requesting(milli_cpu=9000), node_selector={"zone": "b"}),
        NODE,
        IDLE,
        (NODE_AFFINITY_MISMATCH,),
    ),
    ("cpu insufficient", requesting(milli_cpu=4001), NODE, IDLE, ("Insufficient cpu",)),
    ("cpu exactly fits", requesting(milli_cpu=4000), NODE, IDLE, ()),
    ("cpu used by bound pods", requesting(milli_cpu=1000), NODE, NodeUsage(Resources(3500), 3), ("Insufficient cpu",)),
    ("memory insufficient", requesting(memory=8 * 2**30 + 1), NODE, IDLE, ("Insufficient memory",)),
    ("storage insufficient", requesting(storage=100 * 10**9 + 1), NODE, IDLE, ("Insufficient ephemeral-storage",)),
    ("extended resource fits", requesting(scalar={GPU: 2}), NODE, IDLE, ()),
    ("extended resource insufficient", requesting(scalar={GPU: 3}), NODE, IDLE, ("Insufficient nvidia.com/gpu",)),
    (
        "extended resource used",
        requesting(scalar={GPU: 1}),
        NODE,
        NodeUsage(Resources(scalar=MappingProxyType({GPU: 2})), 1),
        ("Insufficient nvidia.com/gpu",),
    ),
    (
        "resource the node lacks",
        requesting(scalar={"example.com/fpga": 1}),
        NODE,
        IDLE,
        ("Insufficient example.com/fpga",),
    ),
    ("zero extended request ignored", requesting(scalar={"example.com/fpga": 0}), NODE, IDLE, ()),
    (
        "zero cpu request fits overcommitted node",
        requesting(memory=1),
        NODE,
        NodeUsage(Resources(5000), 1),
        (),
    ),
    ("too many pods", POD, NODE, NodeUsage(ZERO, 10), (TOO_MANY_PODS,)),
    ("last pod slot fits", POD, NODE, NodeUsage(ZERO, 9), ()),
    ("pod count checked without requests", requesting(), replace(NODE, allocatable_pods=0), IDLE, (TOO_MANY_PODS,)),
    (
        "every shortfall reported in order",
        requesting(milli_cpu=5000, memory=9 * 2**30, storage=200 * 10**9, scalar={GPU: 3}),
        NODE,
        NodeUsage(ZERO, 10),
        (
            TOO_MANY_PODS,
            "Insufficient cpu",
            "Insufficient memory",
            "Insufficient ephemeral-storage",
            "Insufficient nvidia.com/gpu",
        ),
    ),
]


@pytest.mark.parametrize(
    ("pod", "node", "usage", "expected"), [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_fit_failures(pod: PodRequirements, node: Node, usage: NodeUsage, expected: tuple[str, ...]) -> None:
    assert fit_failures(pod, node, usage) == expected
    assert fits(pod, node, usage) is (expected == ())


def test_node_usage_is_mutable() -> None:
    usage = NodeUsage(ZERO, 0)
    usage.pods += 1
    usage.requested = usage.requested + Resources(100)
    assert usage == NodeUsage(Resources(100), 1)


# --- property: the result follows the individual rules -------------------------
# The reference below restates each Kubernetes rule directly, without sharing code
# with fit.py.

KEYS = ["a", "b", UNSCHEDULABLE_KEY]
LABEL_VALUES = ["", "x", "1", "10", "-3"]
OPERATORS = ["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]
SCALARS = ["example.com/a", "example.com/b"]


def reference_tolerates(toleration: Toleration, key: str, value: str, effect: str) -> bool:
    effect_ok = toleration.effect in ("", effect)
    key_ok = toleration.key in ("", key)
    value_ok = toleration.operator == "Exists" or (toleration.operator in ("", "Equal") and toleration.value == value)
    return effect_ok and key_ok and value_ok


def reference_integer(text: str) -> int | None:
    body = text[1:] if text[:1] in ("+", "-") else text
    if not body or not body.isascii() or not body.isdigit():
        return None
    number = int(text)
    return number if -(2**63) <= number <= 2**63 - 1 else None


def reference_expression(requirement: NodeSelectorRequirement, labels: dict[str, str]) -> bool:
    key, operator, values = requirement.key, requirement.operator, requirement.values
    present = key in labels
    if operator in ("In", "NotIn"):
        if not values:
            return False
        found = present and labels[key] in values
        return found if operator == "In" else not found
    if operator in ("Exists", "DoesNotExist"):
        if values:
            return False
        return present if operator == "Exists" else not present
    if len(values) != 1 or not present:
        return False
    left, right = reference_integer(labels[key]), reference_integer(values[0])
    if left is None or right is None:
        return False
    return left > right if operator == "Gt" else left < right


def reference_field(requirement: NodeSelectorRequirement, name: str) -> bool:
    if requirement.operator not in ("In", "NotIn") or len(requirement.values) != 1:
        return False
    # A field selector reads a field that the node lacks as "".
    field_value = name if requirement.key == "metadata.name" else ""
    same = field_value == requirement.values[0]
    return same if requirement.operator == "In" else not same


def reference_rules(pod: PodRequirements, node: Node, usage: NodeUsage) -> dict[str, bool]:
    tolerated = [
        any(reference_tolerates(t, taint.key, taint.value, taint.effect) for t in pod.tolerations)
        for taint in node.taints
        if taint.effect in ("NoSchedule", "NoExecute")
    ]
    selector_ok = all(node.labels.get(key) == value for key, value in pod.node_selector.items())
    terms_ok = not pod.required_node_terms or any(
        (term.match_expressions or term.match_fields)
        and all(reference_expression(r, dict(node.labels)) for r in term.match_expressions)
        and all(reference_field(r, node.name) for r in term.match_fields)
        for term in pod.required_node_terms
    )
    request, free, used = pod.request, node.allocatable, usage.requested
    resources_ok = (
        usage.pods + 1 <= node.allocatable_pods
        and (request.milli_cpu == 0 or used.milli_cpu + request.milli_cpu <= free.milli_cpu)
        and (request.memory == 0 or used.memory + request.memory <= free.memory)
        and (request.ephemeral_storage == 0 or used.ephemeral_storage + request.ephemeral_storage <= free.ephemeral_storage)
        and all(
            amount == 0 or used.scalar.get(name, 0) + amount <= free.scalar.get(name, 0)
            for name, amount in request.scalar.items()
        )
    )
    return {
        "ready": node.ready,
        "schedulable": not node.unschedulable
        or any(reference_tolerates(t, UNSCHEDULABLE_KEY, "", "NoSchedule") for t in pod.tolerations),
        "taints": all(tolerated),
        "affinity": selector_ok and bool(terms_ok),
        "resources": resources_ok,
    }


tolerations = st.builds(
    Toleration,
    key=st.sampled_from(["", *KEYS]),
    operator=st.sampled_from(["", "Equal", "Exists", "Bogus"]),
    value=st.sampled_from(LABEL_VALUES),
    effect=st.sampled_from(["", "NoSchedule", "NoExecute", "PreferNoSchedule"]),
)
taints = st.builds(Taint, key=st.sampled_from(KEYS), effect=st.sampled_from(list(TaintEffect)), value=st.sampled_from(LABEL_VALUES))
label_maps = st.dictionaries(st.sampled_from(KEYS), st.sampled_from(LABEL_VALUES), max_size=3)
requirements = st.builds(
    NodeSelectorRequirement,
    key=st.sampled_from([*KEYS, "metadata.name"]),
    operator=st.sampled_from(OPERATORS),
    values=st.lists(st.sampled_from([*LABEL_VALUES, "n1", "n2"]), max_size=2).map(tuple),
)
terms = st.builds(
    NodeSelectorTerm,
    match_expressions=st.lists(requirements, max_size=2).map(tuple),
    match_fields=st.lists(requirements, max_size=1).map(tuple),
)
amounts = st.integers(min_value=0, max_value=4)
resources = st.builds(
    Resources,
    milli_cpu=amounts,
    memory=amounts,
    ephemeral_storage=amounts,
    scalar=st.dictionaries(st.sampled_from(SCALARS), amounts, max_size=2).map(MappingProxyType),
)
# Most generated nodes and pods pass the early rules, so that the later rules run
# often enough to be tested.
mostly_true = st.sampled_from([True, True, True, False])
pods = st.builds(
    PodRequirements,
    request=resources,
    node_selector=st.one_of(st.just({}), label_maps),
    required_node_terms=st.lists(terms, max_size=2).map(tuple),
    tolerations=st.lists(tolerations, max_size=2).map(tuple),
)
nodes = st.builds(
    Node,
    name=st.sampled_from(["n1", "n2"]),
    allocatable=resources,
    allocatable_pods=st.integers(min_value=0, max_value=3),
    labels=label_maps,
    taints=st.lists(taints, max_size=2).map(tuple),
    ready=mostly_true,
    unschedulable=mostly_true.map(lambda flag: not flag),
)
usages = st.builds(NodeUsage, requested=resources, pods=st.integers(min_value=0, max_value=3))


@settings(max_examples=1000)
@given(pods, nodes, usages)
def test_fit_failures_follow_rules(pod: PodRequirements, node: Node, usage: NodeUsage) -> None:
    rules = reference_rules(pod, node, usage)
    failures = fit_failures(pod, node, usage)

    assert (failures == ()) == all(rules.values())
    assert fits(pod, node, usage) == all(rules.values())

    first_failing = next((name for name, passed in rules.items() if not passed), None)
    if first_failing == "ready":
        assert failures == (NOT_READY,)
    elif first_failing == "schedulable":
        assert failures == (UNSCHEDULABLE,)
    elif first_failing == "taints":
        assert len(failures) == 1
        assert failures[0].startswith("node(s) had untolerated taint {")
    elif first_failing == "affinity":
        assert failures == (NODE_AFFINITY_MISMATCH,)
    elif first_failing == "resources":
        assert failures
        assert all(reason == TOO_MANY_PODS or reason.startswith("Insufficient ") for reason in failures)
