"""Generate the Grafana dashboards in grafana/dashboards/ from this code.

After changing a panel, run `python3 -m grafana.generate` from the repository
root and commit the JSON it writes. With `--check` it writes nothing and exits
1 when a committed file differs from what this code generates.
tests/test_dashboards.py runs the same comparison, and
tests/test_dashboards_live.py runs every query below against a real Prometheus
and InfluxDB fed by `replay`.

Three dashboards:
- overview (Prometheus): intensity and level per region, forecast against what
  happened, where each class went against the expected shares, deferred pods and
  wait times, emissions against the carbon-blind counterfactual and grams saved.
- history (InfluxDB): the same signals over long ranges, from the store.
- health (Prometheus): latency, errors, watch restarts, regions up, leader.

Metric names are those of carbon_scheduler/telemetry/metrics.py. The measurement,
tag and field names are the InfluxDB layout of carbon_scheduler/store/influx.py.

Replicas: Prometheus scrapes every replica, and standbys export the same
per-region gauges as the leader. Every gauge query therefore aggregates across
replicas (`max by (region)`, or `max` for gauges without labels), so each
region appears once. The one exception is the leader gauge, which is summed to
count the leaders. The counters and histograms of decisions, placements, waits
and emissions grow only on the leader, so a `sum` over replicas counts each event
once. Standbys watch the clusters too, so the API error and watch restart panels
sum the events of every replica.

Totals: the stat and bar panels of totals read the counters themselves, which
are totals since the scheduler started. `increase(...[$__range])` would
extrapolate to the edges of the range and disagree with the replay's printed
table. `rate()` remains where a panel draws a rate over time.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from grafana.panels import (
    BARS_LAST,
    INFLUXDB,
    LEGEND_LIST,
    LEGEND_TABLE,
    LEVEL_MAPPINGS,
    PROMETHEUS,
    STAT_LAST,
    UNIT_GRAMS,
    UNIT_INTENSITY,
    UNIT_KILOWATT_HOURS,
    UNIT_RATIO,
    UNIT_SECONDS,
    UP_MAPPINGS,
    Dashboard,
    influx_target,
    prometheus_target,
    region_variable,
    timeseries_options,
)

DASHBOARD_DIR = Path(__file__).resolve().parent / "dashboards"

INTENSITY = "carbon_scheduler_carbon_intensity_grams_per_kilowatt_hour"
LEVEL = "carbon_scheduler_carbon_level"
FORECAST = "carbon_scheduler_carbon_forecast_grams_per_kilowatt_hour"
FORECAST_FOR_NOW = "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour"
SCHEDULED = "carbon_scheduler_pods_scheduled_total"
EXPECTED_SHARE = "carbon_scheduler_expected_share_ratio"
EMISSIONS = "carbon_scheduler_emissions_grams_total"
ENERGY = "carbon_scheduler_energy_joules_total"
WAIT = "carbon_scheduler_pod_wait_seconds"
DECISION = "carbon_scheduler_decision_duration_seconds"
BINDING = "carbon_scheduler_binding_duration_seconds"

# Horizons of the forecast gauge (FORECAST_HORIZONS_HOURS in the metrics module).
FORECAST_HORIZONS_HOURS = (1, 6, 24)

REGION = 'region=~"$region"'
JOULES_PER_KILOWATT_HOUR = 3.6e6
# Panels of totals read the counters, which restart at zero with the process.
# A replica that restarts therefore drops its share of the totals.
SINCE_START = "since the scheduler started"


def per_region(selector: str, *, also: str = "") -> str:
    """Wrap a per-region gauge selector in `max by (region)`, so every replica's
    copy of a region's value collapses into one series; `also` keeps one more label."""
    labels = f"region, {also}" if also else "region"
    return f"max by ({labels}) ({selector})"


def overview() -> Dashboard:
    """Build the live dashboard that a presentation shows."""
    board = Dashboard(
        uid="carbon-overview",
        title="Carbon scheduler: overview",
        description=(
            "Where the carbon scheduler places pods and what that saves, from its Prometheus "
            "metrics. Works the same for the daemon and for `replay --serve-metrics`."
        ),
        time_from="now-30m",
        refresh="5s",
        variables=[region_variable(PROMETHEUS, f"label_values({INTENSITY}, region)")],
    )

    board.row("Carbon intensity")
    board.add(
        "timeseries",
        "Carbon intensity by region",
        "Latest grid carbon intensity of each region, in grams CO2eq per kWh.",
        [prometheus_target(per_region(f"{INTENSITY}{{{REGION}}}"), "{{region}}")],
        width=16,
        unit=UNIT_INTENSITY,
        custom=timeseries_options(),
        options=LEGEND_TABLE,
    )
    board.add(
        "stat",
        "Level now",
        "Carbon level of each region: low, medium or high, from the thresholds in regions.toml.",
        [prometheus_target(per_region(f"{LEVEL}{{{REGION}}}"), "{{region}}", instant=True)],
        width=8,
        mappings=LEVEL_MAPPINGS,
        thresholds=[(None, "green"), (1, "yellow"), (2, "red")],
        options=dict(STAT_LAST, colorMode="background"),
    )
    board.add(
        "state-timeline",
        "Carbon level over time",
        "The level of each region over time; the scheduler prefers green regions.",
        [prometheus_target(per_region(f"{LEVEL}{{{REGION}}}"), "{{region}}")],
        width=24,
        height=6,
        mappings=LEVEL_MAPPINGS,
        thresholds=[(None, "green"), (1, "yellow"), (2, "red")],
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
    )

    board.row("Forecast against what happened")
    for hours in FORECAST_HORIZONS_HOURS:
        board.add(
            "timeseries",
            f"Forecast {hours} h ahead against actual",
            (
                f"The intensity that the forecast made {hours} h earlier predicted for the latest "
                "sample, against that sample. Hours count in the carbon data's own time, so a "
                "time-compressed trace (the demo) lines up as well as live data."
            ),
            [
                prometheus_target(
                    per_region(f'{FORECAST_FOR_NOW}{{{REGION}, horizon_hours="{hours}"}}'),
                    "{{region}} forecast",
                ),
                prometheus_target(per_region(f"{INTENSITY}{{{REGION}}}"), "{{region}} actual"),
            ],
            width=8,
            unit=UNIT_INTENSITY,
            custom=timeseries_options(),
            options=LEGEND_LIST,
        )
    board.add(
        "bargauge",
        "Forecast for the hours ahead",
        "The latest forecast of each region, 1, 6 and 24 h ahead of its latest sample.",
        [
            prometheus_target(
                per_region(f"{FORECAST}{{{REGION}}}", also="horizon_hours"),
                "{{region}} +{{horizon_hours}} h",
                instant=True,
            )
        ],
        width=24,
        height=6,
        unit=UNIT_INTENSITY,
        options={"orientation": "vertical", "displayMode": "basic", "showUnfilled": True},
    )

    board.row("Where each class went")
    board.add(
        "bargauge",
        "Share of each class's pods by region",
        (
            f"Fraction of each class's pods placed in each region {SINCE_START}, next to the "
            "expected share when one is configured."
        ),
        [
            prometheus_target(
                f"sum by (task_class, region) ({SCHEDULED}{{{REGION}}}) / ignoring (region) group_left "
                f"sum by (task_class) ({SCHEDULED})",
                "{{task_class}} in {{region}}",
                instant=True,
            ),
        ],
        width=12,
        height=10,
        unit=UNIT_RATIO,
        minimum=0,
        maximum=1,
        options=BARS_LAST,
    )
    board.add(
        "bargauge",
        "Expected share of each class by region",
        "The distribution the operator expects (carbon_scheduler_expected_share_ratio).",
        [
            prometheus_target(
                per_region(f"{EXPECTED_SHARE}{{{REGION}}}", also="task_class"),
                "{{task_class}} in {{region}}",
                instant=True,
            )
        ],
        width=12,
        height=10,
        unit=UNIT_RATIO,
        minimum=0,
        maximum=1,
        options=BARS_LAST,
    )
    board.add(
        "timeseries",
        "Pods placed per minute by class and region",
        "Placement rate, stacked: a bind in the pod's home cluster or a move to another region.",
        [
            prometheus_target(
                f"60 * sum by (task_class, region) (rate({SCHEDULED}{{{REGION}}}[$__rate_interval]))",
                "{{task_class}} in {{region}}",
            )
        ],
        width=12,
        unit="short",
        custom=timeseries_options(stacked=True, fill=30),
        options=LEGEND_TABLE,
    )
    board.add(
        "bargauge",
        "Pods bound at home and moved",
        f"Pods placed {SINCE_START}, by how: bound in their home cluster or moved.",
        [
            prometheus_target(
                f"sum by (decision) ({SCHEDULED}{{{REGION}}})",
                "{{decision}}",
                instant=True,
            )
        ],
        width=12,
        unit="short",
        decimals=0,
        options=BARS_LAST,
    )

    board.row("Deferred pods and wait times")
    board.add(
        "timeseries",
        "Deferred and queued pods",
        "Pods sleeping until a low-carbon window, and pods in the scheduling queue.",
        [
            prometheus_target("max(carbon_scheduler_deferred_pods)", "deferred"),
            prometheus_target("max(carbon_scheduler_queue_pods)", "queued"),
        ],
        width=12,
        unit="short",
        custom=timeseries_options(fill=20),
        options=LEGEND_LIST,
    )
    board.add(
        "timeseries",
        "Wait before placement by class (p50, p95)",
        "Time from a pod's creation to its placement; deferrable pods wait for clean hours.",
        quantile_targets(WAIT, (0.5, 0.95), by="task_class"),
        width=12,
        unit=UNIT_SECONDS,
        custom=timeseries_options(),
        options=LEGEND_LIST,
    )
    board.add(
        "bargauge",
        "Mean wait by class",
        f"Mean time from creation to placement of the pods placed {SINCE_START}.",
        [
            prometheus_target(
                f"sum by (task_class) ({WAIT}_sum) / sum by (task_class) ({WAIT}_count)",
                "{{task_class}}",
                instant=True,
            )
        ],
        width=24,
        height=6,
        unit=UNIT_SECONDS,
        options=BARS_LAST,
    )

    board.row("Emissions against the carbon-blind counterfactual")
    board.add(
        "bargauge",
        "Emissions: scheduled against carbon-blind",
        (
            f"Grams CO2eq of the pods that finished {SINCE_START}, as scheduled and as a "
            "carbon-blind scheduler would have run them (at once, in their home region)."
        ),
        [
            prometheus_target(
                f"sum by (scenario) ({EMISSIONS}{{{REGION}}})",
                "{{scenario}}",
                instant=True,
            )
        ],
        width=8,
        unit=UNIT_GRAMS,
        options=BARS_LAST,
        overrides=[_color_override("scheduled", "green"), _color_override("carbon_blind", "red")],
    )
    board.add(
        "stat",
        "Grams CO2eq saved",
        f"Carbon-blind emissions minus scheduled emissions of the pods that finished {SINCE_START}.",
        [
            prometheus_target(
                f'sum({EMISSIONS}{{scenario="carbon_blind"}}) - sum({EMISSIONS}{{scenario="scheduled"}})',
                "saved",
                instant=True,
            )
        ],
        width=8,
        unit=UNIT_GRAMS,
        thresholds=[(None, "red"), (0, "green")],
        options=STAT_LAST,
    )
    board.add(
        "stat",
        "Emissions saved",
        f"Saved grams as a share of the carbon-blind emissions, for the pods that finished {SINCE_START}.",
        [
            prometheus_target(
                f'1 - sum({EMISSIONS}{{scenario="scheduled"}}) / sum({EMISSIONS}{{scenario="carbon_blind"}})',
                "saved",
                instant=True,
            )
        ],
        width=8,
        unit=UNIT_RATIO,
        decimals=1,
        thresholds=[(None, "red"), (0, "green")],
        options=STAT_LAST,
    )
    board.add(
        "timeseries",
        "Cumulative emissions: scheduled against carbon-blind",
        (
            "Running totals since the process started; the gap between the lines is the "
            "grams saved. Filtered regions are where the pod ran (scheduled) or its home "
            "region (carbon-blind)."
        ),
        [prometheus_target(f"sum by (scenario) ({EMISSIONS}{{{REGION}}})", "{{scenario}}")],
        width=12,
        unit=UNIT_GRAMS,
        custom=timeseries_options(fill=10),
        options=LEGEND_LIST,
        overrides=[_color_override("scheduled", "green"), _color_override("carbon_blind", "red")],
    )
    board.add(
        "bargauge",
        "Emissions by class and scenario",
        f"Grams CO2eq of each class's pods that finished {SINCE_START}, as scheduled and carbon-blind.",
        [
            prometheus_target(
                f"sum by (task_class, scenario) ({EMISSIONS}{{{REGION}}})",
                "{{task_class}} {{scenario}}",
                instant=True,
            )
        ],
        width=12,
        unit=UNIT_GRAMS,
        options=BARS_LAST,
    )
    board.add(
        "bargauge",
        "Energy by region and scenario",
        f"Estimated facility energy (PUE included) of the pods that finished {SINCE_START}.",
        [
            prometheus_target(
                f"sum by (region, scenario) ({ENERGY}{{{REGION}}}) / "
                f"{JOULES_PER_KILOWATT_HOUR:g}",
                "{{region}} {{scenario}}",
                instant=True,
            )
        ],
        width=24,
        height=6,
        unit=UNIT_KILOWATT_HOURS,
        options=BARS_LAST,
    )
    return board


def health() -> Dashboard:
    """Build the dashboard an operator watches to see that the scheduler works."""
    board = Dashboard(
        uid="carbon-health",
        title="Carbon scheduler: health",
        description="Latency, errors, watches, API servers and the leader of the carbon scheduler.",
        time_from="now-1h",
        refresh="10s",
        variables=[region_variable(PROMETHEUS, "label_values(carbon_scheduler_region_up, region)")],
    )

    board.row("Regions and leader")
    board.add(
        "state-timeline",
        "Region API servers up",
        "1 while the region's API server answers and the scheduler's cache of it is synced.",
        [prometheus_target(per_region(f"carbon_scheduler_region_up{{{REGION}}}"), "{{region}}")],
        width=12,
        height=6,
        mappings=UP_MAPPINGS,
        thresholds=[(None, "red"), (1, "green")],
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
    )
    board.add(
        "stat",
        "Regions up",
        "Regions whose API server answers, out of all regions selected.",
        [
            prometheus_target(
                f"sum({per_region(f'carbon_scheduler_region_up{{{REGION}}}')})", "up", instant=True
            )
        ],
        width=4,
        height=6,
        decimals=0,
        thresholds=[(None, "red"), (1, "green")],
        options=STAT_LAST,
    )
    board.add(
        "stat",
        "Replicas leading",
        "Replicas that hold the leader Lease. Exactly 1 is healthy: 0 means nothing schedules.",
        [prometheus_target("sum(carbon_scheduler_leader)", "leaders", instant=True)],
        width=4,
        height=6,
        decimals=0,
        thresholds=[(None, "red"), (1, "green"), (2, "red")],
        options=STAT_LAST,
    )
    board.add(
        "state-timeline",
        "Leader by replica",
        "Which replica held the leader Lease over time.",
        [prometheus_target("max by (instance) (carbon_scheduler_leader)", "{{instance}}")],
        width=4,
        height=6,
        thresholds=[(None, "transparent"), (1, "green")],
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
    )

    board.row("Latency")
    for title, metric, description in (
        ("Decision latency", DECISION, "Time the scheduler took to decide for one pod."),
        ("Binding latency", BINDING, "Time of the Binding (or move) API calls for one pod."),
    ):
        board.add(
            "timeseries",
            f"{title} (p50, p99)",
            description,
            quantile_targets(metric, (0.5, 0.99)),
            width=12,
            unit=UNIT_SECONDS,
            custom=timeseries_options(),
            options=LEGEND_LIST,
        )
    board.add(
        "timeseries",
        "Decisions per minute by outcome",
        "Scheduling decisions: bind, move, defer, wait for room, or unschedulable.",
        [
            prometheus_target(
                "60 * sum by (outcome) (rate(carbon_scheduler_decisions_total[$__rate_interval]))",
                "{{outcome}}",
            )
        ],
        width=24,
        unit="short",
        custom=timeseries_options(stacked=True, fill=30),
        options=LEGEND_TABLE,
    )

    board.row("Errors and watches")
    for title, metric, description in (
        ("Binding errors", "carbon_scheduler_binding_errors_total", "Failed Binding or move API calls."),
        (
            "API errors",
            "carbon_scheduler_api_errors_total",
            (
                "Failed Kubernetes API calls other than bindings: list, watch, events, node labels. "
                "Standbys watch too, so this sums the errors of every replica."
            ),
        ),
    ):
        board.add(
            "timeseries",
            f"{title} per minute by region and reason",
            description,
            [
                prometheus_target(
                    f"60 * sum by (region, reason) (rate({metric}{{{REGION}}}[$__rate_interval]))",
                    "{{region}} {{reason}}",
                )
            ],
            width=12,
            unit="short",
            custom=timeseries_options(stacked=True, fill=30, draw="bars"),
            options=LEGEND_TABLE,
        )
    board.add(
        "timeseries",
        "Watch restarts per minute",
        "Watches of nodes or pods that ended or failed and were opened again, summed over every replica.",
        [
            prometheus_target(
                f"60 * sum by (region, resource) (rate(carbon_scheduler_watch_restarts_total{{{REGION}}}[$__rate_interval]))",
                "{{region}} {{resource}}",
            )
        ],
        width=12,
        unit="short",
        custom=timeseries_options(draw="bars"),
        options=LEGEND_TABLE,
    )
    board.add(
        "timeseries",
        "Age of carbon data",
        (
            "Time since the observation of each region's latest carbon sample. A stale region "
            "(older than the configured limit) is marked in the panel beside."
        ),
        [prometheus_target(per_region(f"carbon_scheduler_carbon_data_age_seconds{{{REGION}}}"), "{{region}}")],
        width=8,
        unit=UNIT_SECONDS,
        custom=timeseries_options(),
        options=LEGEND_LIST,
    )
    board.add(
        "state-timeline",
        "Stale carbon data",
        "1 while a region's latest carbon sample is older than the configured limit.",
        [prometheus_target(per_region(f"carbon_scheduler_carbon_data_stale{{{REGION}}}"), "{{region}}")],
        width=4,
        mappings=[
            {
                "type": "value",
                "options": {
                    "0": {"text": "fresh", "color": "green", "index": 0},
                    "1": {"text": "stale", "color": "red", "index": 1},
                },
            }
        ],
        thresholds=[(None, "green"), (1, "red")],
        options={"showValue": "never", "mergeValues": True, "rowHeight": 0.8},
    )
    return board


def history() -> Dashboard:
    """Build the long-range dashboard, read from InfluxDB."""
    region_filter = '"region" =~ /^$region$/'
    board = Dashboard(
        uid="carbon-history",
        title="Carbon scheduler: history",
        description=(
            "Intensity, forecasts and per-task emissions kept in InfluxDB by the daemon and by "
            "`replay --influx`. A replay writes the trace's own timestamps, so pick the "
            "trace's period in the time picker."
        ),
        time_from="now-7d",
        refresh="1m",
        variables=[region_variable(INFLUXDB, 'SHOW TAG VALUES FROM "carbon_intensity" WITH KEY = "region"')],
    )

    board.row("Carbon intensity and forecasts")
    board.add(
        "timeseries",
        "Carbon intensity by region",
        "Mean intensity per interval, from the carbon_intensity measurement.",
        [
            influx_target(
                'SELECT mean("intensity_g_per_kwh") FROM "carbon_intensity" '
                f"WHERE {region_filter} AND $timeFilter "
                'GROUP BY time($__interval), "region" fill(none)',
                "$tag_region",
            )
        ],
        width=24,
        unit=UNIT_INTENSITY,
        custom=timeseries_options(),
        options=LEGEND_TABLE,
    )
    board.add(
        "timeseries",
        "Forecast against actual",
        (
            "For each interval, the mean of every forecast made for it (carbon_forecast, all "
            "issue times and forecasters) against the intensity that happened."
        ),
        [
            influx_target(
                'SELECT mean("intensity_g_per_kwh") FROM "carbon_forecast" '
                f"WHERE {region_filter} AND $timeFilter "
                'GROUP BY time($__interval), "region" fill(none)',
                "$tag_region forecast",
            ),
            influx_target(
                'SELECT mean("intensity_g_per_kwh") FROM "carbon_intensity" '
                f"WHERE {region_filter} AND $timeFilter "
                'GROUP BY time($__interval), "region" fill(none)',
                "$tag_region actual",
            ),
        ],
        width=24,
        unit=UNIT_INTENSITY,
        custom=timeseries_options(),
        options=LEGEND_TABLE,
    )

    board.row("Emissions against the carbon-blind counterfactual")
    board.add(
        "timeseries",
        "Daily emissions: scheduled against carbon-blind",
        (
            "Grams CO2eq per day of the tasks that ended that day, as scheduled (emissions_g) "
            "and carbon-blind (counterfactual_emissions_g). The region filter selects where "
            "the task ran."
        ),
        [
            influx_target(
                'SELECT sum("emissions_g") AS "scheduled", sum("counterfactual_emissions_g") AS "carbon_blind" '
                f'FROM "task_emissions" WHERE {region_filter} AND $timeFilter GROUP BY time(1d) fill(0)',
                "$col",
            )
        ],
        width=16,
        unit=UNIT_GRAMS,
        custom=timeseries_options(fill=20, draw="bars"),
        options=LEGEND_LIST,
        overrides=[_color_override("scheduled", "green"), _color_override("carbon_blind", "red")],
    )
    board.add(
        "stat",
        "Grams CO2eq saved",
        "Carbon-blind minus scheduled emissions of the tasks that ended in the time range.",
        [
            influx_target(
                'SELECT sum("counterfactual_emissions_g") - sum("emissions_g") AS "saved" '
                f'FROM "task_emissions" WHERE {region_filter} AND $timeFilter',
                "saved",
            )
        ],
        width=8,
        unit=UNIT_GRAMS,
        thresholds=[(None, "red"), (0, "green")],
        options=dict(STAT_LAST, reduceOptions={"calcs": ["sum"], "fields": "", "values": False}),
    )
    board.add(
        "bargauge",
        "Emissions by class",
        "Scheduled and carbon-blind grams CO2eq of each class's tasks that ended in the time range.",
        [
            influx_target(
                'SELECT sum("emissions_g") AS "scheduled", sum("counterfactual_emissions_g") AS "carbon_blind" '
                f'FROM "task_emissions" WHERE {region_filter} AND $timeFilter GROUP BY "class"',
                "$tag_class $col",
            )
        ],
        width=12,
        unit=UNIT_GRAMS,
        options=dict(BARS_LAST, reduceOptions={"calcs": ["sum"], "fields": "", "values": False}),
    )
    board.add(
        "bargauge",
        "Tasks by region and class",
        "Number of tasks that ended in the time range, by the region they ran in and their class.",
        [
            influx_target(
                'SELECT count("emissions_g") FROM "task_emissions" '
                f'WHERE {region_filter} AND $timeFilter GROUP BY "region", "class"',
                "$tag_class in $tag_region",
            )
        ],
        width=12,
        unit="short",
        decimals=0,
        options=dict(BARS_LAST, reduceOptions={"calcs": ["sum"], "fields": "", "values": False}),
    )
    board.add(
        "timeseries",
        "Daily energy by region",
        "Estimated facility energy per day of the tasks that ended that day, by the region they ran in.",
        [
            influx_target(
                'SELECT sum("energy_kwh") FROM "task_emissions" '
                f'WHERE {region_filter} AND $timeFilter GROUP BY time(1d), "region" fill(0)',
                "$tag_region",
            )
        ],
        width=24,
        unit=UNIT_KILOWATT_HOURS,
        custom=timeseries_options(stacked=True, fill=30, draw="bars"),
        options=LEGEND_TABLE,
    )
    return board


def quantile_targets(metric: str, quantiles: tuple[float, ...], *, by: str = "") -> list[dict[str, Any]]:
    """Return one target per quantile of histogram `metric`, per value of label `by` if given."""
    group = f"{by}, le" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        prometheus_target(
            f"histogram_quantile({quantile}, sum by ({group}) (rate({metric}_bucket[$__rate_interval])))",
            f"{prefix}p{round(quantile * 100)}",
        )
        for quantile in quantiles
    ]


def _color_override(series: str, color: str) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": series},
        "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": color}}],
    }


DASHBOARDS = {"overview.json": overview, "history.json": history, "health.json": health}


def render() -> dict[str, str]:
    """Return each dashboard's file name and its JSON text, exactly as committed."""
    return {
        name: json.dumps(build().to_json(), indent=2, ensure_ascii=False) + "\n"
        for name, build in DASHBOARDS.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m grafana.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DASHBOARD_DIR, help="folder for the JSON files (default grafana/dashboards)")
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if a file in --out differs from the generated one"
    )
    args = parser.parse_args(argv)

    stale = []
    for name, text in render().items():
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path))
            continue
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print(
            "error: these dashboards differ from grafana/generate.py: "
            + ", ".join(stale)
            + "; run `python3 -m grafana.generate` and commit the result",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
