"""Prometheus metrics of the daemon, in one registry per daemon.

Names carry the project prefix and base units; label values come from small
fixed sets (region names from the config, class names, decision kinds, error
reasons), never pod names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class DaemonMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "carbon_scheduler_decisions",
            "Scheduling decisions by task class and outcome (bind, move, defer, wait, unschedulable).",
            ["task_class", "outcome"],
            registry=r,
        )
        self.scheduled = Counter(
            "carbon_scheduler_pods_scheduled",
            "Pods placed, by class, region and how (bind in the home cluster, or move).",
            ["task_class", "region", "decision"],
            registry=r,
        )
        self.binding_errors = Counter(
            "carbon_scheduler_binding_errors",
            "Failed binding or move API calls, by region and reason.",
            ["region", "reason"],
            registry=r,
        )
        self.decision_seconds = Histogram(
            "carbon_scheduler_decision_duration_seconds",
            "Time to decide for one pod.",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=r,
        )
        self.binding_seconds = Histogram(
            "carbon_scheduler_binding_duration_seconds",
            "Time of the binding (or move) API calls for one pod.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=r,
        )
        self.region_up = Gauge(
            "carbon_scheduler_region_up", "1 while the region's API server answers and its cache is synced.",
            ["region"], registry=r,
        )
        self.intensity = Gauge(
            "carbon_scheduler_carbon_intensity_grams_per_kilowatt_hour",
            "Latest carbon intensity of the region.",
            ["region"],
            registry=r,
        )
        self.level = Gauge(
            "carbon_scheduler_carbon_level", "Carbon level of the region: 0 low, 1 medium, 2 high.", ["region"],
            registry=r,
        )
        self.deferred = Gauge("carbon_scheduler_deferred_pods", "Pods waiting for a low-carbon window.", registry=r)
        self.pending = Gauge("carbon_scheduler_queue_pods", "Pods in the scheduling queue.", registry=r)
        self.leader = Gauge(
            "carbon_scheduler_leader",
            "1 while this replica holds the leader Lease and runs the scheduling loop, else 0.",
            registry=r,
        )
