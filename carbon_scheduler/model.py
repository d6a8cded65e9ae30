"""Plain data types shared by every layer.

Nothing here does I/O or reads a clock. Times are integer seconds since the Unix
epoch (UTC) and durations are integer seconds, so simulations are exact and
cheap to compare. Resource amounts use the units the Kubernetes scheduler
compares: CPU in millicores, everything else in whole base units (bytes for
memory and ephemeral storage, counts for extended resources).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

SCHEDULER_NAME = "carbon-scheduler"
LABEL_PREFIX = "carbon-scheduler.io"
CLASS_LABEL = f"{LABEL_PREFIX}/class"
DEADLINE_ANNOTATION = f"{LABEL_PREFIX}/deadline"
EXPECTED_DURATION_ANNOTATION = f"{LABEL_PREFIX}/expected-duration"
REGIONS_ANNOTATION = f"{LABEL_PREFIX}/regions"
LEVEL_LABEL = f"{LABEL_PREFIX}/carbon-level"


class TaskClass(enum.StrEnum):
    """Scheduling class of a task, taken from the pod label `carbon-scheduler.io/class`."""

    CRITICAL = "critical"
    STANDARD = "standard"
    DEFERRABLE = "deferrable"


class Level(enum.IntEnum):
    """Carbon level of a region. Ordered, so `min()` picks the greener one."""

    LOW = 0
    MEDIUM = 1
    HIGH = 2

    @property
    def label(self) -> str:
        return self.name.lower()


_EMPTY: Mapping[str, int] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Resources:
    """An amount of node resources, in the units the Kubernetes scheduler compares.

    `scalar` holds extended resources (`nvidia.com/gpu`, `hugepages-2Mi`, ...) by
    name, in whole units.
    """

    milli_cpu: int = 0
    memory: int = 0
    ephemeral_storage: int = 0
    scalar: Mapping[str, int] = field(default_factory=lambda: _EMPTY)

    def __add__(self, other: Resources) -> Resources:
        scalar = dict(self.scalar)
        for name, amount in other.scalar.items():
            scalar[name] = scalar.get(name, 0) + amount
        return Resources(
            self.milli_cpu + other.milli_cpu,
            self.memory + other.memory,
            self.ephemeral_storage + other.ephemeral_storage,
            MappingProxyType(scalar) if scalar else _EMPTY,
        )

    def __sub__(self, other: Resources) -> Resources:
        scalar = dict(self.scalar)
        for name, amount in other.scalar.items():
            scalar[name] = scalar.get(name, 0) - amount
        return Resources(
            self.milli_cpu - other.milli_cpu,
            self.memory - other.memory,
            self.ephemeral_storage - other.ephemeral_storage,
            MappingProxyType(scalar) if scalar else _EMPTY,
        )

    @property
    def vcpus(self) -> float:
        return self.milli_cpu / 1000

    @property
    def memory_gb(self) -> float:
        """Memory in gigabytes (10^9 bytes), the unit of published power figures."""
        return self.memory / 1e9


ZERO = Resources()


class TaintEffect(enum.StrEnum):
    NO_SCHEDULE = "NoSchedule"
    PREFER_NO_SCHEDULE = "PreferNoSchedule"
    NO_EXECUTE = "NoExecute"


@dataclass(frozen=True, slots=True)
class Taint:
    key: str
    effect: TaintEffect
    value: str = ""


@dataclass(frozen=True, slots=True)
class Toleration:
    """A pod toleration. An empty `key` with operator `Exists` tolerates every taint,
    and an empty `effect` matches every effect, as in Kubernetes."""

    key: str = ""
    operator: str = "Equal"
    value: str = ""
    effect: str = ""


@dataclass(frozen=True, slots=True)
class NodeSelectorRequirement:
    """One expression of a node selector term: operator is In, NotIn, Exists,
    DoesNotExist, Gt or Lt."""

    key: str
    operator: str
    values: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeSelectorTerm:
    """Expressions that must all hold. `match_fields` supports only `metadata.name`,
    as in Kubernetes."""

    match_expressions: tuple[NodeSelectorRequirement, ...] = ()
    match_fields: tuple[NodeSelectorRequirement, ...] = ()


@dataclass(frozen=True, slots=True)
class Node:
    """A node as placement sees it."""

    name: str
    allocatable: Resources
    allocatable_pods: int = 110
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    ready: bool = True
    unschedulable: bool = False


@dataclass(frozen=True, slots=True)
class PodRequirements:
    """What a pod needs from a node.

    `request` is the effective request (the larger of the biggest init container and
    the sum of app containers, plus overhead). `required_node_terms` are the terms of
    requiredDuringSchedulingIgnoredDuringExecution: any one of them must match, and
    an empty tuple means no requirement.
    """

    request: Resources = ZERO
    node_selector: Mapping[str, str] = field(default_factory=dict)
    required_node_terms: tuple[NodeSelectorTerm, ...] = ()
    tolerations: tuple[Toleration, ...] = ()


@dataclass(frozen=True, slots=True)
class Task:
    """A unit of work to place: one pod in the daemon, one workload row in replay.

    `arrival` is when the task was submitted. `duration` is the expected run time,
    used for window planning and accounting. `deadline` is the time by which the task
    must finish, or None for no deadline. `allowed_regions` is the data-residency
    allow-list, or None for every region.
    """

    id: str
    task_class: TaskClass
    arrival: int
    duration: int
    home_region: str
    requirements: PodRequirements = PodRequirements()
    deadline: int | None = None
    allowed_regions: tuple[str, ...] | None = None

    def allows(self, region: str) -> bool:
        return self.allowed_regions is None or region in self.allowed_regions
