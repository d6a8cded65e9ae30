"""Watching the age of each region's carbon data: gauges, logs and pod Events.

`StalenessMonitor.check` runs after every poll of a region's source and on a
timer. It exports the data age and the stale flag, logs a warning when the
region turns stale and a line when it recovers (never at every check), and
reports to the daemon when the region's effective level changed, because a stale
region's level then comes from the forecast (see `daemon.carbon_feed`).

While a region is stale, the leader sends one `StaleCarbonData` Warning Event to
each deferred pod whose planned window lies in that region, once per pod per
stale episode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import structlog

from carbon_scheduler.carbon.staleness import StaleEpisodes
from carbon_scheduler.daemon import explain
from carbon_scheduler.daemon.kubeapi import KubeError
from carbon_scheduler.daemon.podinfo import pod_key
from carbon_scheduler.daemon.queue import KeyState
from carbon_scheduler.daemon.runtime import RegionRuntime
from carbon_scheduler.daemon.scheduler import Scheduler
from carbon_scheduler.model import Level
from carbon_scheduler.telemetry.metrics import SchedulerMetrics

log = structlog.get_logger(__name__)

REASON_STALE_CARBON_DATA = "StaleCarbonData"


class StalenessMonitor:
    """Staleness of every region's carbon feed, as gauges, logs and Events."""

    def __init__(
        self,
        regions: Mapping[str, RegionRuntime],
        *,
        metrics: SchedulerMetrics,
        clock: Callable[[], float],
    ) -> None:
        self.regions = regions
        self.metrics = metrics
        self.clock = clock
        self.episodes = StaleEpisodes()
        self._levels: dict[str, Level] = {}

    def check(self, runtime: RegionRuntime) -> bool:
        """Export the region's data age and stale flag and log a transition; return
        True when the region's effective level changed since the last check."""
        feed = runtime.feed
        name = runtime.name
        age = feed.age_seconds
        stale = feed.stale
        if age is not None:
            self.metrics.data_age.labels(name).set(age)
        self.metrics.data_stale.labels(name).set(1 if stale else 0)

        transition = self.episodes.update(name, stale)
        if transition == "stale":
            log.warning(
                "carbon_data_stale",
                region=name,
                age_seconds=None if age is None else round(age, 1),
                limit_seconds=feed.stale_after_seconds,
                fallback=self.fallback(runtime),
            )
        elif transition == "recovered":
            log.info("carbon_data_recovered", region=name, age_seconds=None if age is None else round(age, 1))

        if feed.latest is None:
            return False
        level = feed.level
        changed = self._levels.get(name) not in (None, level)
        self._levels[name] = level
        if changed or transition is not None:
            intensity = feed.intensity
            if intensity is not None:
                self.metrics.intensity.labels(name).set(intensity)
            self.metrics.level.labels(name).set(int(level))
        return changed

    def fallback(self, runtime: RegionRuntime) -> str:
        """Say what the policy uses for a stale region."""
        feed = runtime.feed
        if feed.latest is None:
            return "no intensity: the region ranks last, and critical pods still go there when it is the only one with room"
        forecast = feed.forecast_now()
        if forecast is not None:
            return f"the forecast made before the data went stale ({forecast:.1f} g/kWh now)"
        return f"the last known level {feed.level.label} ({feed.latest.intensity_g_per_kwh:.1f} g/kWh)"

    async def report_deferred(self, scheduler: Scheduler) -> int:
        """Send a StaleCarbonData Event to each deferred pod planned in a stale
        region, once per pod per stale episode; return how many were sent."""
        sent = 0
        for uid, (window_region, _start, _end, task) in list(scheduler.bookings.items()):
            if not self.episodes.is_stale(window_region):
                continue
            home = self.regions.get(task.home_region)
            pod = home.cache.pods.get(uid) if home is not None else None
            if home is None or pod is None:
                continue
            if scheduler.queue.state_of(pod_key(home.name, pod)) is not KeyState.DEFERRED:
                continue
            if not self.episodes.first_report(window_region, uid):
                continue
            runtime = self.regions[window_region]
            age = runtime.feed.age_seconds
            age_text = "no sample yet" if age is None else f"{age:.0f} s old"
            message = (
                f"carbon data of region {window_region}, where this pod's window is planned, is stale "
                f"({age_text}, limit {runtime.feed.stale_after_seconds:g} s); planning uses "
                f"{self.fallback(runtime)} and the pod still starts in time for its deadline"
            )
            body = explain.event_body(
                pod, reason=REASON_STALE_CARBON_DATA, message=message, event_type="Warning", now=self.clock()
            )
            try:
                await home.client.create_event(pod["metadata"]["namespace"], body)
            except KubeError as error:
                log.warning(
                    "event_failed", region=home.name, pod=pod_key(home.name, pod), reason=REASON_STALE_CARBON_DATA,
                    error=str(error),
                )
                continue
            sent += 1
        return sent
