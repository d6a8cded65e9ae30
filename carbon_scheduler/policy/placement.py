"""Filter and score regions and nodes for one task.

A region can take a task when it is up, the task's allow-list names it, fewer than
`max_pods` of this scheduler's task pods are bound there and not finished, and one
of its nodes passes every fit rule. Regions are ranked by the task's emission rate
there (power * PUE * current intensity), so a region with a better PUE or energy
model wins at equal intensity. Among fitting nodes the least allocated one wins, as
in kube-scheduler's default scoring, which spreads load.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.model import ZERO, Level, Node, Task
from carbon_scheduler.policy.energy import facility_power_kw
from carbon_scheduler.policy.fit import NodeUsage, fit_failures

REGION_DOWN = "region is down"
NOT_ALLOWED = "not in the task's allowed regions"
NO_INTENSITY = "no carbon intensity known"

# Failures that go away when pods finish; any other failure means the task can
# never fit there as the region stands, so waiting for that region is pointless.
_TRANSIENT_PREFIXES = ("Insufficient ", "Too many pods", "region pod cap")


def is_transient(reason: str) -> bool:
    return reason.startswith(_TRANSIENT_PREFIXES)


@dataclass(slots=True)
class RegionView:
    """What placement sees of one region at a decision.

    `usage` maps node name to what bound, unfinished pods (of any scheduler) use
    there; `task_pods` counts this scheduler's bound, unfinished task pods, which
    the region's `max_pods` caps. `intensity_g_per_kwh` is None while unknown.
    """

    spec: RegionSpec
    nodes: Sequence[Node]
    usage: dict[str, NodeUsage] = field(default_factory=dict)
    task_pods: int = 0
    intensity_g_per_kwh: float | None = None
    level: Level = Level.MEDIUM
    up: bool = True

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def full(self) -> bool:
        return self.task_pods >= self.spec.max_pods


@dataclass(frozen=True, slots=True)
class NodeChoice:
    """Result of looking for a node: the node name, or None with the reasons."""

    node: str | None
    reasons: tuple[str, ...] = ()

    @property
    def transient(self) -> bool:
        """True when every reason would clear as pods finish."""
        return all(is_transient(reason) for reason in self.reasons)


def find_node(task: Task, region: RegionView) -> NodeChoice:
    """Pick the least allocated node of `region` that fits `task`."""
    if region.full:
        cap = region.spec.max_pods
        return NodeChoice(None, (f"region pod cap reached ({region.task_pods} of {cap} task pods)",))
    requirements = task.requirements
    best: str | None = None
    best_score = -1.0
    reasons: dict[str, None] = {}
    empty = NodeUsage(ZERO, 0)
    for node in region.nodes:
        usage = region.usage.get(node.name, empty)
        failures = fit_failures(requirements, node, usage)
        if failures:
            reasons.update(dict.fromkeys(failures))
            continue
        score = _free_fraction(node, usage, task)
        if score > best_score:
            best, best_score = node.name, score
    if best is not None:
        return NodeChoice(best)
    if not region.nodes:
        return NodeChoice(None, ("region has no nodes",))
    return NodeChoice(None, tuple(reasons))


def _free_fraction(node: Node, usage: NodeUsage, task: Task) -> float:
    request = task.requirements.request
    allocatable = node.allocatable
    cpu = 1.0 - (usage.requested.milli_cpu + request.milli_cpu) / allocatable.milli_cpu if allocatable.milli_cpu else 0.0
    memory = 1.0 - (usage.requested.memory + request.memory) / allocatable.memory if allocatable.memory else 0.0
    return (cpu + memory) / 2


def emission_rate(task: Task, region: RegionView) -> float | None:
    """Grams per hour that `task` would emit in `region` now, or None while the
    region's intensity is unknown."""
    if region.intensity_g_per_kwh is None:
        return None
    return facility_power_kw(task.requirements.request, region.spec) * region.intensity_g_per_kwh


def candidate_regions(task: Task, regions: Sequence[RegionView]) -> tuple[list[RegionView], dict[str, tuple[str, ...]]]:
    """Split regions into those the task may use, greenest first (unknown
    intensity last, then by name), and the reasons the others were skipped."""
    usable: list[RegionView] = []
    skipped: dict[str, tuple[str, ...]] = {}
    for region in regions:
        if not task.allows(region.name):
            skipped[region.name] = (NOT_ALLOWED,)
        elif not region.up:
            skipped[region.name] = (REGION_DOWN,)
        else:
            usable.append(region)

    def key(region: RegionView) -> tuple[bool, float, float, str]:
        rate = emission_rate(task, region)
        if rate is None:
            return (True, 0.0, 0.0, region.name)
        return (False, rate, region.intensity_g_per_kwh * region.spec.pue, region.name)

    usable.sort(key=key)
    return usable, skipped


def first_fit(task: Task, ranked: Sequence[RegionView]) -> tuple[RegionView | None, NodeChoice, dict[str, tuple[str, ...]]]:
    """Return the first region in `ranked` order with a fitting node, its choice,
    and the reasons of every region tried before it."""
    reasons: dict[str, tuple[str, ...]] = {}
    for region in ranked:
        choice = find_node(task, region)
        if choice.node is not None:
            return region, choice, reasons
        reasons[region.name] = choice.reasons
    return None, NodeChoice(None), reasons
