"""What placement needs of one region, kept up to date from cache events.

Rebuilding node usage from every cached pod for each decision would cost
milliseconds per region with thousands of pods, so `RegionState` keeps each
bound, unfinished pod's contribution (its node and effective request) and
adjusts the totals on every event: O(1) per pod event. A relist rebuilds it.

A pod bound by this scheduler is counted as soon as the binding is assumed,
before the API call, so two quick decisions never overfill a node. The watch
event that confirms the binding replaces the assumed contribution with the same
one; a failed binding removes it again (`forget`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import structlog

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon.podinfo import is_finished, is_ours, node_from_json
from carbon_scheduler.model import ZERO, Level, Node, Resources
from carbon_scheduler.policy.fit import NodeUsage
from carbon_scheduler.policy.placement import RegionView
from carbon_scheduler.policy.requests import PodSpecError, pod_requirements


log = structlog.get_logger(__name__)


@dataclass(slots=True)
class _Contribution:
    node: str
    request: Resources
    ours: bool


class RegionState:
    """Nodes, per-node usage and this scheduler's task pod count of one region."""

    def __init__(self, spec: RegionSpec) -> None:
        self.spec = spec
        self.nodes: dict[str, Node] = {}
        self.usage: dict[str, NodeUsage] = {}
        self.task_pods = 0
        self._contributions: dict[str, _Contribution] = {}
        self._assumed: set[str] = set()

    # Nodes -------------------------------------------------------------------------

    def set_node(self, raw: dict) -> None:
        try:
            node = node_from_json(raw)
        except ValueError as error:
            # A node this scheduler cannot read is one it cannot place pods on.
            name = (raw.get("metadata") or {}).get("name", "")
            log.warning("node_unreadable", region=self.spec.name, node=name, error=str(error))
            self.nodes.pop(name, None)
            return
        self.nodes[node.name] = node
        self.usage.setdefault(node.name, NodeUsage(ZERO, 0))

    def remove_node(self, name: str) -> None:
        self.nodes.pop(name, None)

    # Pods --------------------------------------------------------------------------

    def observe_pod(self, pod: dict) -> None:
        """Count `pod` if it is bound and unfinished, or stop counting it."""
        uid = pod["metadata"]["uid"]
        node = (pod.get("spec") or {}).get("nodeName")
        if not node and uid in self._assumed and not is_finished(pod):
            return  # binding in flight: keep counting the assumed placement
        if not node or is_finished(pod):
            self.drop_pod(uid)
            return
        self._count(uid, node, _request_of(pod), is_ours(pod))
        self._assumed.discard(uid)

    def assume(self, pod: dict, node: str) -> None:
        """Count `pod` on `node` before its binding is confirmed."""
        uid = pod["metadata"]["uid"]
        self._count(uid, node, _request_of(pod), True)
        self._assumed.add(uid)

    def drop_pod(self, uid: str) -> None:
        self._assumed.discard(uid)
        old = self._contributions.pop(uid, None)
        if old is None:
            return
        usage = self.usage.get(old.node)
        if usage is not None:
            usage.requested = usage.requested - old.request
            usage.pods -= 1
        if old.ours:
            self.task_pods -= 1

    forget = drop_pod

    def _count(self, uid: str, node: str, request: Resources, ours: bool) -> None:
        self.drop_pod(uid)
        usage = self.usage.setdefault(node, NodeUsage(ZERO, 0))
        usage.requested = usage.requested + request
        usage.pods += 1
        if ours:
            self.task_pods += 1
        self._contributions[uid] = _Contribution(node, request, ours)

    def rebuild(self, nodes: Iterable[dict], pods: Iterable[dict]) -> None:
        """Start over from a full list of nodes and pods, keeping placements that
        are assumed but not yet confirmed."""
        assumed = {uid: self._contributions[uid] for uid in self._assumed if uid in self._contributions}
        self.nodes.clear()
        self.usage.clear()
        self._contributions.clear()
        self._assumed.clear()
        self.task_pods = 0
        for node in nodes:
            self.set_node(node)
        for pod in pods:
            self.observe_pod(pod)
        for uid, contribution in assumed.items():
            if uid not in self._contributions:
                self._count(uid, contribution.node, contribution.request, contribution.ours)
                self._assumed.add(uid)

    def counted(self, uid: str) -> bool:
        return uid in self._contributions

    # Placement view ----------------------------------------------------------------

    def view(self, *, intensity: float | None, level: Level, up: bool) -> RegionView:
        return RegionView(
            spec=self.spec,
            nodes=tuple(self.nodes.values()),
            usage=self.usage,
            task_pods=self.task_pods,
            intensity_g_per_kwh=intensity,
            level=level,
            up=up,
        )


def _request_of(pod: dict) -> Resources:
    try:
        return pod_requirements(pod.get("spec") or {}).request
    except PodSpecError:
        return ZERO
