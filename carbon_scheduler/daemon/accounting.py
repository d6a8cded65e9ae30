"""Carbon accounting of finished pods: energy, emissions and the carbon-blind
counterfactual, computed when a pod this scheduler placed finishes.

A pod counts as finished when the cache shows phase Succeeded or Failed, or
deletes it after it started. Its run is [status.startTime, end), where end is the
latest `finishedAt` of its terminated containers, else the time the daemon saw it
finish. Energy and emissions use the policy functions that replay uses: the
region's energy model and PUE applied to the pod's requests
(`facility_power_kw`), and the region's intensity history integrated over the run
(`integrate_history`), each sample holding until the next. The counterfactual runs the same duration in the home
region (where the pod was submitted), started when the pod was created there.

Intensity outside the known history: a run that starts before the region's
oldest sample in memory is priced at that sample's value for the uncovered part,
and one that outlasts the newest sample at the newest value, as an outlook
holds its last value. Such a record is logged as estimated. A region with no
sample at all gives no record, and a warning.

Only the leader accounts, so replicas never add the same pod to the counters
twice. At the start of each term `scan` accounts the finished pods the caches
hold, and task ids the store already has are skipped, so a restart counts no
pod twice. Records go to the store through `HistoryWriter` and to the
Prometheus counters under the scenarios `scheduled` and `carbon_blind`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import structlog

from carbon_scheduler.config.types import SchedulerSettings
from carbon_scheduler.daemon.carbon_feed import CarbonFeed
from carbon_scheduler.daemon.explain import DECISION_ANNOTATION
from carbon_scheduler.daemon.history import HistoryWriter
from carbon_scheduler.daemon.moves import origin_of
from carbon_scheduler.daemon.podinfo import is_finished, is_ours, is_unbound_pending, parse_rfc3339, task_from_pod
from carbon_scheduler.daemon.runtime import RegionRuntime
from carbon_scheduler.policy.energy import emissions_g, energy_kwh, facility_power_kw
from carbon_scheduler.store.base import EmissionRecord
from carbon_scheduler.telemetry.metrics import SCENARIO_CARBON_BLIND, SCENARIO_SCHEDULED, SchedulerMetrics

log = structlog.get_logger(__name__)

MAX_REMEMBERED_CREATIONS = 50_000
"""Creation times of pending originals kept for the counterfactual of their
moved copies; the oldest are forgotten first."""


@dataclass(frozen=True, slots=True)
class Integral:
    """An intensity integral in g/kWh * hours, and whether the history covered the span."""

    intensity_hours: float
    covered: bool


def integrate_history(feed: CarbonFeed, start: float, end: float) -> Integral | None:
    """Integrate `feed`'s intensity history over [start, end), or return None when
    the feed has no sample. Each sample holds until the next one, as trace steps
    do, however irregular their spacing. The part before the first sample is
    priced at its value, and the part after the newest at the newest value."""
    times, values = feed.history_between(start, end)
    if not times:
        return None
    origin = times[0]
    # Sample i applies over [times[i], times[i + 1]), and the last one until `end`.
    starts = np.asarray(times, dtype=float)
    ends = np.append(starts[1:], max(end, starts[-1]))
    overlap = np.clip(np.minimum(ends, end) - np.maximum(starts, start), 0.0, None)
    intensity_hours = float(np.dot(overlap, np.asarray(values, dtype=float))) / 3600.0
    if start < origin:
        intensity_hours += values[0] * (min(origin, end) - start) / 3600.0
    step = max(1, round(feed.wall_step_seconds))
    last_known = feed.times[-1] + step if feed.times else origin
    return Integral(intensity_hours, covered=start >= origin and end <= last_known)


class EmissionAccountant:
    """Turns finished pods into EmissionRecords, counters and store writes."""

    def __init__(
        self,
        regions: Mapping[str, RegionRuntime],
        *,
        settings: SchedulerSettings,
        metrics: SchedulerMetrics,
        writer: HistoryWriter | None,
        leading: Callable[[], bool],
        clock: Callable[[], float],
    ) -> None:
        self.regions = regions
        self.settings = settings
        self.metrics = metrics
        self.writer = writer
        self.leading = leading
        self.clock = clock
        # Task ids accounted by this process or found in the store.
        self.accounted: set[str] = set()
        self._created: dict[tuple[str, str], int] = {}

    def skip(self, task_ids: Iterable[str]) -> None:
        """Mark task ids as already accounted, such as those the store holds."""
        self.accounted.update(task_ids)

    def on_cache_event(self, region: str, kind: str, event_type: str, obj: dict) -> None:
        if kind.lower() != "pod" or event_type == "RELISTED" or not is_ours(obj):
            return
        metadata = obj.get("metadata") or {}
        if is_unbound_pending(obj) and event_type != "DELETED":
            self._remember_creation(region, obj)
            return
        started = bool((obj.get("status") or {}).get("startTime"))
        if is_finished(obj) or (event_type == "DELETED" and started):
            self.account(region, obj)
        if event_type == "DELETED":
            # No event follows a deletion, so the pod's entries can go.
            self._created.pop((region, metadata.get("uid", "")), None)
            self.accounted.discard(_task_id(obj))

    def scan(self) -> int:
        """Account every finished pod in the caches not yet accounted; return how many."""
        count = 0
        for name, runtime in self.regions.items():
            for pod in list(runtime.cache.pods.values()):
                if is_ours(pod) and is_finished(pod) and self.account(name, pod) is not None:
                    count += 1
        return count

    def account(self, region: str, pod: dict) -> EmissionRecord | None:
        """Account one finished pod of `region`, once, and return its record.
        Return None when it was accounted already, this replica does not lead,
        or it cannot be priced."""
        task_id = _task_id(pod)
        if task_id in self.accounted or not self.leading():
            return None
        runtime = self.regions.get(region)
        if runtime is None:
            return None
        status = pod.get("status") or {}
        try:
            start = parse_rfc3339(status.get("startTime") or "")
        except ValueError:
            log.info("emissions_skipped", region=region, task_id=task_id, reason="the pod never started")
            self.accounted.add(task_id)
            return None
        end = max(start, _finished_at(status) or int(self.clock()))
        origin = origin_of(pod)
        home_name = origin[0] if origin is not None and origin[0] in self.regions else region
        home = self.regions[home_name]
        created = self._creation(pod, origin, fallback=start)

        task, _ = task_from_pod(
            pod, region=home_name, settings=self.settings, region_names=tuple(self.regions), now=self.clock()
        )
        actual = integrate_history(runtime.feed, start, end)
        blind = integrate_history(home.feed, created, created + (end - start))
        if actual is None or blind is None:
            missing = region if actual is None else home_name
            log.warning("emissions_not_recorded", region=missing, task_id=task_id, reason="no carbon intensity known")
            self.accounted.add(task_id)
            return None
        request = task.requirements.request
        power = facility_power_kw(request, runtime.spec)
        blind_power = facility_power_kw(request, home.spec)
        record = EmissionRecord(
            task_id=task_id,
            region=region,
            task_class=task.task_class.value,
            decision_time=decided_at(pod, fallback=start),
            start=start,
            end=end,
            energy_kwh=energy_kwh(power, end - start),
            emissions_g=emissions_g(power, actual.intensity_hours),
            counterfactual_region=home_name,
            counterfactual_emissions_g=emissions_g(blind_power, blind.intensity_hours),
        )
        self.accounted.add(task_id)
        self._publish(record, blind_energy_kwh=energy_kwh(blind_power, end - start))
        log.info(
            "task_emissions",
            region=region,
            task_id=task_id,
            task_class=record.task_class,
            seconds=end - start,
            emissions_g=round(record.emissions_g, 6),
            counterfactual_region=home_name,
            counterfactual_emissions_g=round(record.counterfactual_emissions_g, 6),
            estimated=not (actual.covered and blind.covered),
        )
        return record

    def _publish(self, record: EmissionRecord, *, blind_energy_kwh: float) -> None:
        self.metrics.add_task_emissions(
            region=record.region,
            task_class=record.task_class,
            scenario=SCENARIO_SCHEDULED,
            energy_kwh=record.energy_kwh,
            emissions_g=record.emissions_g,
        )
        self.metrics.add_task_emissions(
            region=record.counterfactual_region,
            task_class=record.task_class,
            scenario=SCENARIO_CARBON_BLIND,
            energy_kwh=blind_energy_kwh,
            emissions_g=record.counterfactual_emissions_g,
        )
        if self.writer is not None:
            self.writer.add([record])

    def _remember_creation(self, region: str, pod: dict) -> None:
        metadata = pod.get("metadata") or {}
        key = (region, metadata.get("uid", ""))
        if key in self._created:
            return
        try:
            self._created[key] = parse_rfc3339(metadata.get("creationTimestamp") or "")
        except ValueError:
            return
        if len(self._created) > MAX_REMEMBERED_CREATIONS:
            del self._created[next(iter(self._created))]

    def _creation(self, pod: dict, origin: tuple[str, str] | None, *, fallback: int) -> int:
        """Return when the task was submitted: the original's creation for a moved
        copy whose original this process saw, else the pod's own creation."""
        if origin is not None and origin in self._created:
            return self._created[origin]
        # NOTE: a copy whose original was moved before this process started is
        # priced from the copy's own creation, which is when it was moved.
        try:
            return parse_rfc3339((pod.get("metadata") or {}).get("creationTimestamp") or "")
        except ValueError:
            return fallback


def _task_id(pod: Mapping[str, Any]) -> str:
    """Return `namespace/name/uid` of the task, with the original's uid for a
    moved copy, so the id stays the same wherever the task ran."""
    metadata = pod.get("metadata") or {}
    origin = origin_of(pod)  # type: ignore[arg-type]
    uid = origin[1] if origin is not None else metadata.get("uid", "")
    return f"{metadata.get('namespace', '')}/{metadata.get('name', '')}/{uid}"


def _finished_at(status: Mapping[str, Any]) -> int | None:
    """Return the latest finishedAt of the pod's terminated containers, or None."""
    latest = None
    for container in status.get("containerStatuses") or ():
        terminated = ((container or {}).get("state") or {}).get("terminated") or {}
        try:
            moment = parse_rfc3339(terminated.get("finishedAt") or "")
        except ValueError:
            continue
        latest = moment if latest is None else max(latest, moment)
    return latest


def decided_at(pod: Mapping[str, Any], *, fallback: int) -> int:
    """Return `decided_at` of the pod's decision annotation, else `fallback`."""
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    try:
        return parse_rfc3339(json.loads(annotations[DECISION_ANNOTATION])["decided_at"])
    except (KeyError, TypeError, ValueError):
        return fallback
