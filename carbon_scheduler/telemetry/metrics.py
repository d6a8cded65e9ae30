"""The Prometheus metrics that the daemon and `replay --serve-metrics` export.

Both processes fill one `SchedulerMetrics` object, so the Grafana dashboards read
the same series from a cluster and from a simulation. The names follow the
Prometheus conventions: a `carbon_scheduler_` prefix, base units (seconds, joules,
grams) and `_total` on counters, which prometheus-client adds. Label values come
from small fixed sets: region names from the config, the three task classes,
decision kinds, scenario names and error reasons. Pod names never become labels.

Emissions and energy carry a `scenario` label: `scheduled` is what the task used
where and when it ran, `carbon_blind` is the same task started at once in its home
region. Grams saved is then a subtraction in PromQL:

    sum(carbon_scheduler_emissions_grams_total{scenario="carbon_blind"})
      - sum(carbon_scheduler_emissions_grams_total{scenario="scheduled"})

`prime()` creates every labelled series at zero for the configured regions, so a
dashboard panel shows a flat zero instead of "no data" before the first event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from carbon_scheduler.model import TaskClass

SCENARIO_SCHEDULED = "scheduled"
SCENARIO_CARBON_BLIND = "carbon_blind"
SCENARIOS = (SCENARIO_SCHEDULED, SCENARIO_CARBON_BLIND)

# Placement kinds: a bind in the cluster the pod was submitted to, or a move.
PLACEMENTS = ("bind", "move")
OUTCOMES = ("bind", "move", "defer", "wait", "unschedulable")
# Reasons for a failed binding or move call, and for other failed API calls.
ERROR_REASONS = ("conflict", "not_found", "forbidden", "server_error", "timeout", "unreachable", "other")
# Forecast horizons exported as gauges, both ahead of the latest sample and as
# the prediction that a forecast issued that long before made for it.
FORECAST_HORIZONS_HOURS = (1, 6, 24)

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0)
# Waits run from seconds (critical) to a day or more (deferrable).
_WAIT_BUCKETS = (1, 10, 60, 300, 900, 1800, 3600, 7200, 14400, 28800, 57600, 86400, 172800)


class SchedulerMetrics:
    """Every metric of the scheduler, registered in one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry

        # Carbon signal per region.
        self.intensity = Gauge(
            "carbon_scheduler_carbon_intensity_grams_per_kilowatt_hour",
            "Latest carbon intensity of the region's grid, in gCO2eq/kWh.",
            ["region"], registry=r,
        )
        self.level = Gauge(
            "carbon_scheduler_carbon_level",
            "Carbon level of the region: 0 low, 1 medium, 2 high.",
            ["region"], registry=r,
        )
        self.forecast = Gauge(
            "carbon_scheduler_carbon_forecast_grams_per_kilowatt_hour",
            "Forecast carbon intensity of the region, the given number of hours ahead.",
            ["region", "horizon_hours"], registry=r,
        )
        self.forecast_for_now = Gauge(
            "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour",
            "Intensity that the forecast issued the given number of hours earlier predicted for the "
            "region's latest sample. Hours count in the carbon data's own time, so a replayed trace "
            "lines up with the intensity however fast it plays.",
            ["region", "horizon_hours"], registry=r,
        )
        self.data_age = Gauge(
            "carbon_scheduler_carbon_data_age_seconds",
            "Age of the region's latest carbon sample (now minus its observation time).",
            ["region"], registry=r,
        )
        self.data_stale = Gauge(
            "carbon_scheduler_carbon_data_stale",
            "1 while the region's latest carbon sample is older than the configured limit, else 0.",
            ["region"], registry=r,
        )

        # Decisions and placements.
        self.decisions = Counter(
            "carbon_scheduler_decisions",
            "Scheduling decisions by task class and outcome (bind, move, defer, wait, unschedulable).",
            ["task_class", "outcome"], registry=r,
        )
        self.scheduled = Counter(
            "carbon_scheduler_pods_scheduled",
            "Pods placed, by class, region and how (bind in the home cluster, or move).",
            ["task_class", "region", "decision"], registry=r,
        )
        self.expected_share = Gauge(
            "carbon_scheduler_expected_share_ratio",
            "Share of each class's tasks that the user expects in each region (0 to 1), when given.",
            ["task_class", "region"], registry=r,
        )
        self.deferred = Gauge(
            "carbon_scheduler_deferred_pods", "Pods waiting for a low-carbon window.", registry=r,
        )
        self.pending = Gauge("carbon_scheduler_queue_pods", "Pods in the scheduling queue.", registry=r)
        self.wait_seconds = Histogram(
            "carbon_scheduler_pod_wait_seconds",
            "Time from a pod's creation (a task's arrival) to its placement, by class.",
            ["task_class"], buckets=_WAIT_BUCKETS, registry=r,
        )

        # Latency and errors.
        self.decision_seconds = Histogram(
            "carbon_scheduler_decision_duration_seconds",
            "Time to decide for one pod.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.binding_seconds = Histogram(
            "carbon_scheduler_binding_duration_seconds",
            "Time of the binding (or move) API calls for one pod.",
            buckets=_LATENCY_BUCKETS, registry=r,
        )
        self.binding_errors = Counter(
            "carbon_scheduler_binding_errors",
            "Failed binding or move API calls, by region and reason.",
            ["region", "reason"], registry=r,
        )
        self.api_errors = Counter(
            "carbon_scheduler_api_errors",
            "Failed Kubernetes API calls other than bindings (list, watch, events, labels), by region and reason.",
            ["region", "reason"], registry=r,
        )
        self.watch_restarts = Counter(
            "carbon_scheduler_watch_restarts",
            "Watches of nodes or pods that ended or failed and were opened again, by region.",
            ["region", "resource"], registry=r,
        )
        self.region_up = Gauge(
            "carbon_scheduler_region_up",
            "1 while the region's API server answers and its cache is synced.",
            ["region"], registry=r,
        )
        self.leader = Gauge(
            "carbon_scheduler_leader",
            "1 while this replica holds the leader Lease and runs the scheduling loop, else 0.",
            registry=r,
        )

        # Energy and emissions of finished tasks, actual and carbon-blind.
        self.energy_joules = Counter(
            "carbon_scheduler_energy_joules",
            "Estimated facility energy of finished tasks, by region, class and scenario.",
            ["region", "task_class", "scenario"], registry=r,
        )
        self.emissions_grams = Counter(
            "carbon_scheduler_emissions_grams",
            "Estimated emissions of finished tasks in grams CO2eq, by region, class and scenario.",
            ["region", "task_class", "scenario"], registry=r,
        )

        # Forecast values waiting for the sample of their target time, per region,
        # by (target time, horizon in hours). A repeated forecast replaces its values.
        self._predictions: dict[str, dict[tuple[int, int], float]] = {}

        # Only `replay --serve-metrics` sets this.
        self.simulated_time = Gauge(
            "carbon_scheduler_replay_simulated_time_seconds",
            "Unix time reached by the replay's simulated clock.",
            registry=r,
        )

    def prime(self, regions: Iterable[str]) -> None:
        """Create every labelled series of these regions at zero."""
        classes = [task_class.value for task_class in TaskClass]
        for task_class in classes:
            self.wait_seconds.labels(task_class)
            for outcome in OUTCOMES:
                self.decisions.labels(task_class, outcome)
        for region in regions:
            self.intensity.labels(region)
            self.level.labels(region)
            self.data_age.labels(region)
            self.data_stale.labels(region)
            self.region_up.labels(region)
            for hours in FORECAST_HORIZONS_HOURS:
                self.forecast.labels(region, str(hours))
            for reason in ERROR_REASONS:
                self.binding_errors.labels(region, reason)
                self.api_errors.labels(region, reason)
            for resource in ("nodes", "pods"):
                self.watch_restarts.labels(region, resource)
            for task_class in classes:
                for placement in PLACEMENTS:
                    self.scheduled.labels(task_class, region, placement)
                for scenario in SCENARIOS:
                    self.energy_joules.labels(region, task_class, scenario)
                    self.emissions_grams.labels(region, task_class, scenario)

    def add_task_emissions(
        self, *, region: str, task_class: str, scenario: str, energy_kwh: float, emissions_g: float
    ) -> None:
        """Count one finished task's energy (given in kWh) and emissions under a scenario."""
        if scenario not in SCENARIOS:
            raise ValueError(f"invalid scenario {scenario!r}; use one of {', '.join(SCENARIOS)}")
        self.energy_joules.labels(region, task_class, scenario).inc(energy_kwh * 3.6e6)
        self.emissions_grams.labels(region, task_class, scenario).inc(emissions_g)

    def set_forecast(self, region: str, values: Mapping[int, tuple[int, float]]) -> None:
        """Set the forecast gauges of `region` from one forecast, given per horizon
        in hours as (target time, value), and keep each value until the sample of
        its target time arrives. Target times use the samples' own time base."""
        pending = self._predictions.setdefault(region, {})
        for hours, (target, value) in values.items():
            self.forecast.labels(region, str(hours)).set(value)
            pending[(target, hours)] = value

    def set_intensity(self, region: str, time: int, value: float) -> None:
        """Set the intensity gauge of `region` to its sample at `time`, and the
        forecast-for-now gauges to the latest predictions whose target is at or
        before `time`."""
        self.intensity.labels(region).set(value)
        pending = self._predictions.get(region)
        if not pending:
            return
        due = sorted(key for key in pending if key[0] <= time)
        for key in due:
            self.forecast_for_now.labels(region, str(key[1])).set(pending.pop(key))
