"""One region as the daemon runs it: its API client, cache, placement state and
carbon feed."""

from __future__ import annotations

from dataclasses import dataclass

from carbon_scheduler.config.types import RegionSpec
from carbon_scheduler.daemon.cache import ClusterCache
from carbon_scheduler.daemon.carbon_feed import CarbonFeed
from carbon_scheduler.daemon.kubeapi import KubeClient
from carbon_scheduler.daemon.state import RegionState
from carbon_scheduler.policy.placement import RegionView


@dataclass(slots=True)
class RegionRuntime:
    spec: RegionSpec
    client: KubeClient
    cache: ClusterCache
    state: RegionState
    feed: CarbonFeed

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def ready(self) -> bool:
        """True when the region's API server answers and its cache has synced."""
        return self.cache.up and self.cache.synced.is_set()

    def view(self) -> RegionView:
        return self.state.view(intensity=self.feed.intensity, level=self.feed.level, up=self.ready)
