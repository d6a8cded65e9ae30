"""A pod's effective resource request and placement requirements, read from its spec.

Input is a pod spec as Kubernetes JSON decodes it (camelCase keys, quantities as
strings or JSON numbers). The effective request follows resourcehelper.PodRequests
in k8s.io/component-helpers (Kubernetes 1.29 and later, with sidecar containers):

    per resource: max(sum(app containers) + sum(sidecars),
                      max over regular init containers i of
                          (request of i + sum(sidecars listed before i)))
                  + overhead

A sidecar is an init container with `restartPolicy: Always`. Before that sum, the
API server's defaulting is applied, because a pod read back from the API server
already carries it. That defaulting rounds every quantity up to a thousandth and
gives a container resource with a limit but no request the limit as its request.
Pod-level `spec.resources` requests (cpu, memory, hugepages-*) replace the
container sum for their resource.

Sums and maxima are taken on exact quantities and converted at the end, as the
scheduler's Resource.Add converts the summed ResourceList: cpu to millicores and
everything else to whole units, rounding up.

A spec that the API server would reject raises PodSpecError, a ValueError that
names the field path in Kubernetes' notation (`spec.containers[0].resources...`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from types import MappingProxyType
from typing import Any

from carbon_scheduler.model import (
    NodeSelectorRequirement,
    NodeSelectorTerm,
    PodRequirements,
    Resources,
    TaintEffect,
    Toleration,
)
from carbon_scheduler.quantity import QuantityError, milli_value, parse_quantity, value

__all__ = ["PodSpecError", "effective_request", "parse_resource_list", "pod_requirements"]

CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
PODS = "pods"
HUGEPAGES_PREFIX = "hugepages-"

_NODE_AFFINITY_PATH = "spec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution"
_LABEL_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
_FIELD_OPERATORS = ("In", "NotIn")
_TOLERATION_OPERATORS = ("Equal", "Exists")
_TAINT_EFFECTS = tuple(effect.value for effect in TaintEffect)

# Label syntax from k8s.io/apimachinery/pkg/util/validation. A qualified name is an
# optional DNS-1123 subdomain prefix and "/" before a name of at most 63
# characters. A label value is empty or has the same form as that name.
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_INT64 = re.compile(r"[+-]?(?P<digits>[0-9]+)")

# Quantity.UnmarshalJSON trims Go's unicode.IsSpace characters around the text.
_GO_SPACE = (
    " \t\n\v\f\r\x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006"
    "\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# Exact amounts by resource name, in base units (cores for cpu).
Amounts = dict[str, Fraction]


class PodSpecError(ValueError):
    """A pod spec that the Kubernetes API server would reject.

    `path` is the offending field in Kubernetes notation and `reason` describes what
    is wrong and how to fix it.
    """

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")

    def __reduce__(self) -> tuple[type[PodSpecError], tuple[str, str]]:
        return (type(self), (self.path, self.reason))


def parse_resource_list(mapping: Mapping[str, Any], *, path: str = "resources") -> Resources:
    """Parse a Kubernetes ResourceList (`{"cpu": "500m", "memory": "1Gi", ...}`).

    cpu becomes millicores, memory and ephemeral-storage whole bytes, and every
    other name (hugepages-*, extended resources such as nvidia.com/gpu) a whole
    count in `scalar`, each rounded up as Quantity.MilliValue()/Value() do. `pods`
    is skipped because it is a node capacity, never a request. `path` names the
    mapping in error messages.
    """
    return _to_resources(_parse_amounts(mapping, path))


def effective_request(
    containers: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]] = (),
    overhead: Mapping[str, Any] | None = None,
) -> Resources:
    """Compute the request the scheduler reserves for a pod with these containers.

    `containers` and `init_containers` are container objects in Kubernetes JSON and
    `overhead` is the pod's `spec.overhead` ResourceList. See the module docstring
    for the rule. Raises PodSpecError for an invalid container.
    """
    return _to_resources(
        _pod_amounts(containers, init_containers, overhead, None, path="spec")
    )


def pod_requirements(spec: Mapping[str, Any]) -> PodRequirements:
    """Read what a pod needs from a node out of its spec in Kubernetes JSON.

    Reads containers, initContainers, overhead, resources (pod-level),
    nodeSelector, affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution
    and tolerations; other fields are ignored. Raises PodSpecError, naming the
    field path, for input that the API server would reject.
    """
    _require_mapping(spec, "spec")
    containers = _sequence(spec.get("containers"), "spec.containers")
    if not containers:
        raise PodSpecError("spec.containers", "a pod needs at least one container")
    init_containers = _sequence(spec.get("initContainers"), "spec.initContainers")
    amounts = _pod_amounts(
        containers,
        init_containers,
        _optional_mapping(spec.get("overhead"), "spec.overhead"),
        _optional_mapping(spec.get("resources"), "spec.resources"),
        path="spec",
    )
    return PodRequirements(
        request=_to_resources(amounts),
        node_selector=_parse_node_selector(spec.get("nodeSelector")),
        required_node_terms=_parse_required_node_affinity(spec.get("affinity")),
        tolerations=_parse_tolerations(spec.get("tolerations")),
    )


# --- effective request ---------------------------------------------------------


def _pod_amounts(
    containers: Sequence[Mapping[str, Any]],
    init_containers: Sequence[Mapping[str, Any]],
    overhead: Mapping[str, Any] | None,
    pod_resources: Mapping[str, Any] | None,
    *,
    path: str,
) -> Amounts:
    total: Amounts = {}
    for index, container in enumerate(containers):
        _add(total, _container_requests(container, f"{path}.containers[{index}]"))

    sidecars: Amounts = {}
    init_peak: Amounts = {}
    for index, container in enumerate(init_containers):
        item_path = f"{path}.initContainers[{index}]"
        requests = _container_requests(container, item_path)
        if _is_sidecar(container, item_path):
            # A sidecar runs beside the app containers, so it adds to their sum,
            # and it keeps its request while every later init container runs.
            # PodRequests also counts the sidecars started so far as an init peak,
            # but that sum never exceeds `total`, so it is left out here.
            _add(total, requests)
            _add(sidecars, requests)
        else:
            while_running = dict(sidecars)
            _add(while_running, requests)
            _max(init_peak, while_running)
    _max(total, init_peak)

    if pod_resources is not None:
        _apply_pod_level(total, pod_resources, f"{path}.resources")
    if overhead is not None:
        _add(total, _parse_amounts(overhead, f"{path}.overhead"))
    return total


def _container_requests(container: Mapping[str, Any], path: str) -> Amounts:
    """Return a container's requests after the API server's limit defaulting."""
    _require_mapping(container, path)
    resources = _optional_mapping(container.get("resources"), f"{path}.resources")
    if resources is None:
        return {}
    requests_path = f"{path}.resources.requests"
    limits_path = f"{path}.resources.limits"
    requests = _parse_amounts(_optional_mapping(resources.get("requests"), requests_path) or {}, requests_path)
    limits = _parse_amounts(_optional_mapping(resources.get("limits"), limits_path) or {}, limits_path)

    for name, amount in requests.items():
        _check_container_resource(name, amount, f"{requests_path}[{name}]")
        limit = limits.get(name)
        if limit is not None and amount > limit:
            raise PodSpecError(
                f"{requests_path}[{name}]",
                f"request {_show(amount)} is above the limit {_show(limit)}; lower the request or raise the limit",
            )
        if limit is None and not _is_overcommittable(name):
            raise PodSpecError(
                f"{limits_path}[{name}]",
                f"{name} cannot be overcommitted, so a request needs a limit equal to it",
            )
        if limit is not None and amount != limit and not _is_overcommittable(name):
            raise PodSpecError(
                f"{requests_path}[{name}]",
                f"{name} cannot be overcommitted, so the request {_show(amount)} must equal the limit {_show(limit)}",
            )
    for name, limit in limits.items():
        _check_container_resource(name, limit, f"{limits_path}[{name}]")
        requests.setdefault(name, limit)
    return requests


def _check_container_resource(name: str, amount: Fraction, path: str) -> None:
    """Reject names and amounts that the API server rejects in container resources."""
    if not _is_qualified_name(name) or (
        "/" not in name and name not in (CPU, MEMORY, EPHEMERAL_STORAGE) and not name.startswith(HUGEPAGES_PREFIX)
    ):
        raise PodSpecError(
            path,
            f"invalid container resource name {name!r}; use cpu, memory, ephemeral-storage, "
            "hugepages-<size> or a domain-prefixed extended resource such as nvidia.com/gpu",
        )
    if _is_extended(name) and amount.denominator != 1:
        raise PodSpecError(path, f"extended resource amount {_show(amount)} must be a whole number")


def _is_sidecar(container: Mapping[str, Any], path: str) -> bool:
    policy = container.get("restartPolicy")
    if policy is not None and not isinstance(policy, str):
        raise PodSpecError(f"{path}.restartPolicy", f"expected a string such as 'Always', got {policy!r}")
    return policy == "Always"


def _apply_pod_level(total: Amounts, resources: Mapping[str, Any], path: str) -> None:
    """Apply pod-level requests over the aggregated container requests, after the
    API server's defaulting from pod-level limits (the PodLevelResources feature,
    as pkg/apis/core/v1/defaults.go and resourcehelper.PodRequests implement it in
    recent Kubernetes releases).

    NOTE: some earlier releases defaulted a missing pod-level cpu or memory request
    to the pod-level limit even when containers requested that resource.
    """
    requests_path = f"{path}.requests"
    limits_path = f"{path}.limits"
    requests = _parse_amounts(_optional_mapping(resources.get("requests"), requests_path) or {}, requests_path)
    limits = _parse_amounts(_optional_mapping(resources.get("limits"), limits_path) or {}, limits_path)
    for amounts, amounts_path in ((requests, requests_path), (limits, limits_path)):
        for name in amounts:
            if not _is_pod_level_resource(name):
                raise PodSpecError(
                    f"{amounts_path}[{name}]",
                    f"{name!r} is not supported in pod-level resources; use cpu, memory or hugepages-<size>",
                )

    for name, amount in requests.items():
        limit = limits.get(name)
        if limit is not None and amount > limit:
            raise PodSpecError(
                f"{requests_path}[{name}]",
                f"request {_show(amount)} is above the limit {_show(limit)}; lower the request or raise the limit",
            )
        aggregate = total.get(name, Fraction(0))
        if amount < aggregate:
            raise PodSpecError(
                f"{requests_path}[{name}]",
                f"pod-level request {_show(amount)} is below the sum of container requests {_show(aggregate)}",
            )

    # Defaulting: a pod-level limit without a pod-level request becomes the request,
    # unless some container requests that resource. Then the request is the
    # container sum, which `total` already contains.
    effective = dict(requests)
    for name, limit in limits.items():
        if name not in effective and name not in total:
            effective[name] = limit
    total.update(effective)


def _parse_amounts(mapping: Mapping[str, Any], path: str) -> Amounts:
    """Parse a ResourceList into exact amounts, rounded up to thousandths as the API
    server's SetDefaults_ResourceList does."""
    _require_mapping(mapping, path)
    amounts: Amounts = {}
    for name, raw in mapping.items():
        if not isinstance(name, str) or not name:
            raise PodSpecError(path, f"resource names must be non-empty strings, got {name!r}")
        item_path = f"{path}[{name}]"
        try:
            amount = parse_quantity(raw.strip(_GO_SPACE) if isinstance(raw, str) else raw)
        except QuantityError as error:
            raise PodSpecError(item_path, str(error)) from error
        if amount < 0:
            raise PodSpecError(item_path, f"{raw!r} is negative; resource amounts must be 0 or more")
        amounts[name] = Fraction(milli_value(amount), 1000)
    return amounts



def _to_resources(amounts: Amounts) -> Resources:
    scalar: dict[str, int] = {}
    milli_cpu = memory = ephemeral_storage = 0
    for name, amount in amounts.items():
        if name == CPU:
            milli_cpu = milli_value(amount)
        elif name == MEMORY:
            memory = value(amount)
        elif name == EPHEMERAL_STORAGE:
            ephemeral_storage = value(amount)
        elif name != PODS:
            scalar[name] = value(amount)
    if not scalar:
        return Resources(milli_cpu, memory, ephemeral_storage)
    return Resources(milli_cpu, memory, ephemeral_storage, MappingProxyType(scalar))


def _add(total: Amounts, amounts: Amounts) -> None:
    for name, amount in amounts.items():
        total[name] = total.get(name, Fraction(0)) + amount


def _max(peak: Amounts, amounts: Amounts) -> None:
    for name, amount in amounts.items():
        if name not in peak or amount > peak[name]:
            peak[name] = amount


def _is_extended(name: str) -> bool:
    """Extended resources have a domain prefix outside kubernetes.io."""
    return "/" in name and "kubernetes.io/" not in name


def _is_overcommittable(name: str) -> bool:
    """Native resources other than hugepages may have a request below the limit."""
    return not _is_extended(name) and not name.startswith(HUGEPAGES_PREFIX)


def _is_pod_level_resource(name: str) -> bool:
    return name in (CPU, MEMORY) or name.startswith(HUGEPAGES_PREFIX)


def _show(amount: Fraction) -> str:
    """Format an amount in decimal notation; amounts here are whole thousandths."""
    return format(Decimal(amount.numerator) / amount.denominator, "f")


# --- node selector and affinity ------------------------------------------------


def _parse_node_selector(raw: object) -> Mapping[str, str]:
    selector = _optional_mapping(raw, "spec.nodeSelector")
    if not selector:
        return MappingProxyType({})
    for key, label in selector.items():
        _check_label_key(key, "spec.nodeSelector")
        _check_label_value(label, f"spec.nodeSelector[{key}]")
    return MappingProxyType(dict(selector))


def _parse_required_node_affinity(raw: object) -> tuple[NodeSelectorTerm, ...]:
    affinity = _optional_mapping(raw, "spec.affinity")
    if affinity is None:
        return ()
    node_affinity = _optional_mapping(affinity.get("nodeAffinity"), "spec.affinity.nodeAffinity")
    if node_affinity is None:
        return ()
    required = _optional_mapping(node_affinity.get("requiredDuringSchedulingIgnoredDuringExecution"), _NODE_AFFINITY_PATH)
    if required is None:
        return ()
    terms_path = f"{_NODE_AFFINITY_PATH}.nodeSelectorTerms"
    raw_terms = _sequence(required.get("nodeSelectorTerms"), terms_path)
    if not raw_terms:
        raise PodSpecError(terms_path, "must have at least one node selector term; remove the requirement to allow every node")
    return tuple(_parse_term(term, f"{terms_path}[{index}]") for index, term in enumerate(raw_terms))


def _parse_term(raw: object, path: str) -> NodeSelectorTerm:
    term = _require_mapping(raw, path)
    expressions = _sequence(term.get("matchExpressions"), f"{path}.matchExpressions")
    fields = _sequence(term.get("matchFields"), f"{path}.matchFields")
    return NodeSelectorTerm(
        match_expressions=tuple(
            _parse_label_requirement(item, f"{path}.matchExpressions[{index}]") for index, item in enumerate(expressions)
        ),
        match_fields=tuple(
            _parse_field_requirement(item, f"{path}.matchFields[{index}]") for index, item in enumerate(fields)
        ),
    )


def _parse_label_requirement(raw: object, path: str) -> NodeSelectorRequirement:
    key, operator, values = _requirement_parts(raw, path, _LABEL_OPERATORS)
    _check_label_key(key, f"{path}.key")
    if operator in ("In", "NotIn"):
        if not values:
            raise PodSpecError(f"{path}.values", f"must list at least one value when operator is {operator}")
        for index, label in enumerate(values):
            _check_label_value(label, f"{path}.values[{index}]")
    elif operator in ("Exists", "DoesNotExist"):
        if values:
            raise PodSpecError(f"{path}.values", f"must be empty when operator is {operator}")
    else:
        if len(values) != 1:
            raise PodSpecError(f"{path}.values", f"must hold exactly one integer when operator is {operator}")
        if not _is_int64(values[0]):
            raise PodSpecError(
                f"{path}.values[0]", f"{values[0]!r} is not an integer; {operator} compares labels as 64-bit integers"
            )
    return NodeSelectorRequirement(key, operator, values)


def _parse_field_requirement(raw: object, path: str) -> NodeSelectorRequirement:
    key, operator, values = _requirement_parts(raw, path, _FIELD_OPERATORS)
    if key != "metadata.name":
        raise PodSpecError(f"{path}.key", f"{key!r} is not a supported field; matchFields supports only metadata.name")
    if len(values) != 1:
        raise PodSpecError(f"{path}.values", f"must hold exactly one node name when operator is {operator}")
    return NodeSelectorRequirement(key, operator, values)


def _requirement_parts(raw: object, path: str, operators: tuple[str, ...]) -> tuple[str, str, tuple[str, ...]]:
    requirement = _require_mapping(raw, path)
    key = _string(requirement.get("key"), f"{path}.key", required=True)
    operator = _string(requirement.get("operator"), f"{path}.operator", required=True)
    if operator not in operators:
        raise PodSpecError(f"{path}.operator", f"unsupported operator {operator!r}; use one of {', '.join(operators)}")
    values = tuple(
        _string(item, f"{path}.values[{index}]", required=True)
        for index, item in enumerate(_sequence(requirement.get("values"), f"{path}.values"))
    )
    return key, operator, values


# --- tolerations ---------------------------------------------------------------


def _parse_tolerations(raw: object) -> tuple[Toleration, ...]:
    return tuple(
        _parse_toleration(item, f"spec.tolerations[{index}]")
        for index, item in enumerate(_sequence(raw, "spec.tolerations"))
    )


def _parse_toleration(raw: object, path: str) -> Toleration:
    toleration = _require_mapping(raw, path)
    key = _string(toleration.get("key"), f"{path}.key")
    operator = _string(toleration.get("operator"), f"{path}.operator") or "Equal"
    label = _string(toleration.get("value"), f"{path}.value")
    effect = _string(toleration.get("effect"), f"{path}.effect")

    if key:
        _check_label_key(key, f"{path}.key")
    elif operator != "Exists":
        raise PodSpecError(f"{path}.operator", "must be Exists when key is empty, which tolerates every taint")
    if operator not in _TOLERATION_OPERATORS:
        raise PodSpecError(f"{path}.operator", f"unsupported operator {operator!r}; use Equal or Exists")
    if operator == "Exists" and label:
        raise PodSpecError(f"{path}.value", "must be empty when operator is Exists")
    if operator == "Equal":
        _check_label_value(label, f"{path}.value")
    if effect and effect not in _TAINT_EFFECTS:
        raise PodSpecError(f"{path}.effect", f"unsupported effect {effect!r}; use one of {', '.join(_TAINT_EFFECTS)}")

    seconds = toleration.get("tolerationSeconds")
    if seconds is not None:
        if isinstance(seconds, bool) or not isinstance(seconds, int):
            raise PodSpecError(f"{path}.tolerationSeconds", f"expected an integer number of seconds, got {seconds!r}")
        if effect != "NoExecute":
            raise PodSpecError(f"{path}.effect", "must be NoExecute when tolerationSeconds is set")
    return Toleration(key=key, operator=operator, value=label, effect=effect)


# --- shape and syntax checks ---------------------------------------------------


def _require_mapping(raw: object, path: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise PodSpecError(path, f"expected an object, got {type(raw).__name__}")
    return raw


def _optional_mapping(raw: object, path: str) -> Mapping[str, Any] | None:
    """Return `raw` as a mapping, or None when it is absent. A JSON null decodes to
    the zero value in Kubernetes, so None counts as absent."""
    return None if raw is None else _require_mapping(raw, path)


def _sequence(raw: object, path: str) -> Sequence[Any]:
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Sequence):
        raise PodSpecError(path, f"expected a list, got {type(raw).__name__}")
    return raw


def _string(raw: object, path: str, *, required: bool = False) -> str:
    if raw is None and not required:
        return ""
    if not isinstance(raw, str):
        expected = "a string" if raw is not None else "a value"
        raise PodSpecError(path, f"expected {expected}, got {raw!r}")
    return raw


def _is_qualified_name(name: str) -> bool:
    prefix, slash, local = name.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return len(local) <= 63 and _NAME_PART.fullmatch(local) is not None


def _check_label_key(key: object, path: str) -> None:
    if not isinstance(key, str) or not _is_qualified_name(key):
        raise PodSpecError(
            path,
            f"invalid label key {key!r}; a key is an optional DNS subdomain prefix and '/' before a name "
            "of at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        )


def _check_label_value(label: object, path: str) -> None:
    if not isinstance(label, str) or (label and (len(label) > 63 or not _NAME_PART.fullmatch(label))):
        raise PodSpecError(
            path,
            f"invalid label value {label!r}; a value is empty or at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit",
        )


def _is_int64(text: str) -> bool:
    """Return whether strconv.ParseInt(text, 10, 64) accepts `text`."""
    match = _INT64.fullmatch(text)
    # At most 19 significant digits both keeps int() fast and is necessary for int64.
    if match is None or len(match["digits"].lstrip("0")) > 19:
        return False
    return -(2**63) <= int(text) < 2**63
