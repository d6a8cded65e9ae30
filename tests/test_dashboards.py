"""Static checks of the Grafana dashboards and their provisioning.

The dashboards must be what grafana/generate.py writes, byte for byte. Every
panel must use a provisioned datasource. Every PromQL metric must be one that
`SchedulerMetrics` registers, and every InfluxQL measurement, field and tag one
that the store writes. tests/test_dashboards_live.py runs the same queries
against real servers.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import Gauge

from carbon_scheduler.store.base import EmissionRecord, ForecastPoint, Sample
from carbon_scheduler.store.line_protocol import emission_line, forecast_line, sample_line
from carbon_scheduler.telemetry.metrics import FORECAST_HORIZONS_HOURS, SchedulerMetrics
from grafana import generate
from tests.dashboard_queries import (
    DASHBOARD_DIR,
    PanelQuery,
    influxql_reference,
    panel_queries,
    promql_metric_names,
    promql_offsets_seconds,
    substitute,
)

ROOT = Path(__file__).resolve().parents[1]
DATASOURCES = ROOT / "grafana" / "provisioning" / "datasources" / "datasources.yaml"
PROVIDERS = ROOT / "grafana" / "provisioning" / "dashboards" / "dashboards.yaml"
REGIONS = ("eu-west", "us-east", "asia-east")


def dashboards() -> dict[str, dict]:
    return {path.name: json.loads(path.read_text(encoding="utf-8")) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def all_panels(dashboard: dict) -> list[dict]:
    return [panel for panel in dashboard["panels"] if panel["type"] != "row"]


def queries() -> list[PanelQuery]:
    return panel_queries(DASHBOARD_DIR, regions=REGIONS)


def registered_series_names() -> set[str]:
    """Return the series names that SchedulerMetrics exports, with the suffixes of each type."""
    names = set()
    for family in SchedulerMetrics().registry.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names.update(family.name + suffix for suffix in ("_bucket", "_count", "_sum"))
        else:
            names.add(family.name)
    return names


def influx_layout() -> dict[str, tuple[set[str], set[str]]]:
    """Return {measurement: (fields, tags)} from the lines the store actually writes."""
    lines = [
        sample_line(Sample(region="eu-west", time=1_700_000_000, intensity_g_per_kwh=100.0, source="trace")),
        forecast_line(
            ForecastPoint(
                region="eu-west", issued_at=1_700_000_000, time=1_700_003_600, intensity_g_per_kwh=90.0,
                forecaster="persistence",
            )
        ),
        emission_line(
            EmissionRecord(
                task_id="task-1", region="eu-west", task_class="standard", decision_time=1_700_000_000,
                start=1_700_000_000, end=1_700_003_600, energy_kwh=0.01, emissions_g=1.0,
                counterfactual_region="us-east", counterfactual_emissions_g=2.0,
            )
        ),
    ]
    layout = {}
    for line in lines:
        # No value above contains a space, comma or '=', so plain splits are exact.
        series, field_part, _timestamp = line.split(" ")
        measurement, *tag_pairs = series.split(",")
        tags = {pair.split("=", 1)[0] for pair in tag_pairs}
        fields = {pair.split("=", 1)[0] for pair in field_part.split(",")}
        layout[measurement] = (fields, tags)
    return layout


def test_generated_json_matches_generator():
    rendered = generate.render()
    on_disk = {path.name: path.read_text(encoding="utf-8") for path in DASHBOARD_DIR.glob("*.json")}
    assert sorted(on_disk) == sorted(rendered)
    for name, text in rendered.items():
        assert on_disk[name] == text, f"{name} is stale: run `python3 -m grafana.generate`"


def test_generator_check_flags_stale_file(tmp_path, capsys):
    assert generate.main(["--out", str(tmp_path)]) == 0
    assert generate.main(["--out", str(tmp_path), "--check"]) == 0
    edited = tmp_path / "overview.json"
    edited.write_text(edited.read_text(encoding="utf-8").replace("Carbon intensity", "Intensity"), encoding="utf-8")
    assert generate.main(["--out", str(tmp_path), "--check"]) == 1
    assert str(edited) in capsys.readouterr().err


def test_generator_is_deterministic():
    assert generate.render() == generate.render()


def test_dashboards_have_unique_uids_and_titles():
    boards = dashboards()
    assert set(boards) == {"overview.json", "history.json", "health.json"}
    uids = [board["uid"] for board in boards.values()]
    titles = [board["title"] for board in boards.values()]
    assert len(set(uids)) == len(uids)
    assert len(set(titles)) == len(titles)
    for board in boards.values():
        assert board["schemaVersion"] >= 36
        assert board["description"]


@pytest.mark.parametrize("name", ["overview.json", "history.json", "health.json"])
def test_panel_ids_unique(name):
    ids = [panel["id"] for panel in dashboards()[name]["panels"]]
    assert len(ids) == len(set(ids))
    assert all(isinstance(panel_id, int) and panel_id > 0 for panel_id in ids)


@pytest.mark.parametrize("name", ["overview.json", "history.json", "health.json"])
def test_panels_fit_grid_without_overlap(name):
    occupied_cells: set[tuple[int, int]] = set()
    for panel in dashboards()[name]["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        cells = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"]) for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not cells & occupied_cells, f"panel {panel['title']!r} overlaps another"
        occupied_cells |= cells


@pytest.mark.parametrize("name", ["overview.json", "history.json", "health.json"])
def test_every_panel_has_description_and_query(name):
    for panel in all_panels(dashboards()[name]):
        assert panel["description"], panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [target["refId"] for target in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_datasources_are_provisioned():
    provisioned = {source["uid"]: source for source in yaml.safe_load(DATASOURCES.read_text())["datasources"]}
    assert set(provisioned) == {"prometheus", "influxdb"}
    assert provisioned["prometheus"]["type"] == "prometheus"
    assert provisioned["influxdb"]["type"] == "influxdb"
    assert provisioned["influxdb"]["jsonData"]["dbName"] == "carbon"
    assert provisioned["influxdb"]["jsonData"]["version"] == "InfluxQL"
    for name, board in dashboards().items():
        sources = [panel["datasource"] for panel in all_panels(board)]
        sources += [target["datasource"] for panel in all_panels(board) for target in panel["targets"]]
        sources += [variable["datasource"] for variable in board["templating"]["list"]]
        for source in sources:
            assert source["uid"] in provisioned, f"{name} uses datasource uid {source['uid']!r}"
            assert source["type"] == provisioned[source["uid"]]["type"], name


def test_dashboard_provider_reads_dashboard_folder():
    providers = yaml.safe_load(PROVIDERS.read_text())["providers"]
    assert len(providers) == 1
    assert providers[0]["type"] == "file"
    assert providers[0]["options"]["path"] == "/var/lib/grafana/dashboards/carbon-scheduler"


def test_every_dashboard_has_region_variable():
    for name, board in dashboards().items():
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        assert "region" in variables, name
        assert variables["region"]["multi"] is True
        assert variables["region"]["includeAll"] is True


def test_promql_names_registered_metrics():
    registered = registered_series_names()
    prometheus = [query for query in queries() if query.datasource_kind == "prometheus"]
    assert len(prometheus) >= 30
    for query in prometheus:
        names = promql_metric_names(query.expression)
        assert names, f"{query}: no metric name found in {query.expression}"
        assert names <= registered, f"{query}: {sorted(names - registered)} are not registered"


def test_dashboards_cover_every_dashboard_metric():
    """Every exported series except the replay clock appears in some panel."""
    used = set().union(
        *(promql_metric_names(query.expression) for query in queries() if query.datasource_kind == "prometheus")
    )
    families = {name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum") for name in used}
    expected = {family.name for family in SchedulerMetrics().registry.collect()}
    assert expected - families == {"carbon_scheduler_replay_simulated_time_seconds"}


def gauge_labels() -> dict[str, tuple[str, ...]]:
    """Return the name and label names of every gauge that SchedulerMetrics registers."""
    # prometheus-client has no public accessor for a metric's label names, and a
    # labelled gauge without children exports no sample to read them from.
    return {
        metric._name: tuple(metric._labelnames)
        for metric in vars(SchedulerMetrics()).values()
        if isinstance(metric, Gauge)
    }


# An aggregation operator, an optional `by (...)` clause and the opening
# parenthesis, directly before a gauge selector.
_AGGREGATION_BEFORE = re.compile(r"\b(?P<operator>[a-z_]+)\s*(?:by\s*\((?P<labels>[^)]*)\)\s*)?\(\s*$")


def gauge_aggregations(expression: str, gauges: set[str]) -> list[tuple[str, str | None, frozenset[str] | None]]:
    """Return (gauge, operator, by-labels) for each gauge selector in a PromQL expression.

    The operator is None when the selector is not the whole argument of an
    aggregation, such as a bare selector or one inside arithmetic. The labels are
    None for an aggregation without `by`.
    """
    found = []
    for match in re.finditer(r"(?<![\w:])([a-z_:][\w:]*)(\{[^}]*\})?", expression):
        name = match.group(1)
        if name not in gauges:
            continue
        before = _AGGREGATION_BEFORE.search(expression[: match.start()])
        after = expression[match.end() :].lstrip()
        if before is None or not after.startswith(")"):
            found.append((name, None, None))
            continue
        labels = before.group("labels")
        by = frozenset(label.strip() for label in labels.split(",")) if labels is not None else None
        found.append((name, before.group("operator"), by))
    return found


# Panels whose gauge queries aggregate otherwise than `max by (the gauge's
# labels, region included)`, with the reason, as (operator, by-labels).
GAUGE_AGGREGATION_EXCEPTIONS = {
    # Counting the replicas that lead needs a sum: 1 is healthy, 0 or 2 is not.
    ("health", "Replicas leading", "carbon_scheduler_leader"): ("sum", None),
    # One series per replica is what this panel shows.
    ("health", "Leader by replica", "carbon_scheduler_leader"): ("max", frozenset({"instance"})),
    # The sum runs over the regions, after max by (region) has removed the replicas.
    ("health", "Regions up", "carbon_scheduler_region_up"): ("max", frozenset({"region"})),
}


GAUGE_AGGREGATION_CASES = [
    pytest.param('max by (region) (g{region=~"a|b"})', [("g", "max", frozenset({"region"}))], id="per-region"),
    pytest.param("sum(max by (region, h) (g))", [("g", "max", frozenset({"region", "h"}))], id="nested"),
    pytest.param("max(q)", [("q", "max", None)], id="no-labels"),
    pytest.param('g{region="a"}', [("g", None, None)], id="bare-selector"),
    pytest.param("sum(g * 2)", [("g", None, None)], id="arithmetic-inside"),
    pytest.param("max by (region) (g) / counter_total", [("g", "max", frozenset({"region"}))], id="counter-ignored"),
]


@pytest.mark.parametrize(("expression", "expected"), GAUGE_AGGREGATION_CASES)
def test_gauge_aggregations_parse(expression, expected):
    assert gauge_aggregations(expression, {"g", "q"}) == expected


def test_gauge_queries_aggregate_replicas():
    """Standby replicas export the same gauges as the leader, so a gauge query that
    keeps the instance label draws each region once per replica. Every gauge
    must be the whole argument of `max by (region, ...)` over its own labels, or
    of `max` when it has no labels, except for the panels in GAUGE_AGGREGATION_EXCEPTIONS."""
    labels_of = gauge_labels()
    checked = set()
    for query in queries():
        if query.datasource_kind != "prometheus":
            continue
        for gauge, operator, by in gauge_aggregations(query.expression, set(labels_of)):
            key = (query.dashboard, query.panel, gauge)
            checked.add(key)
            where = f"{query}: {query.expression}"
            assert operator is not None, f"{where}: {gauge} is not aggregated across replicas"
            if key in GAUGE_AGGREGATION_EXCEPTIONS:
                assert (operator, by) == GAUGE_AGGREGATION_EXCEPTIONS[key], where
                continue
            assert operator == "max", where
            own_labels = set(labels_of[gauge])
            if "region" in own_labels:
                assert by is not None, f"{where}: {gauge} must keep its region label"
                assert "region" in by, f"{where}: {gauge} must keep its region label"
                assert by <= own_labels, f"{where}: grouping by {sorted(by - own_labels)} keeps replicas apart"
            else:
                assert by is None, f"{where}: {gauge} has no labels and needs a plain max()"
    assert set(GAUGE_AGGREGATION_EXCEPTIONS) <= checked
    # Every gauge except the replay clock is drawn somewhere, so none escapes the check.
    assert {gauge for _, _, gauge in checked} == set(labels_of) - {"carbon_scheduler_replay_simulated_time_seconds"}


def test_total_panels_read_counters_directly():
    """Panels of totals use the counters' values: increase() over the time range
    extrapolates and disagrees with the replay's table."""
    for query in queries():
        if query.datasource_kind == "prometheus":
            assert "increase(" not in query.expression, f"{query}: {query.expression}"


def test_forecast_panels_one_per_horizon():
    """Each horizon has a panel that compares its forecast-for-now gauge with the
    intensity. No offset: hours count in trace time, which a wall-clock offset
    would get wrong for a replayed trace."""
    for_now = [
        query
        for query in queries()
        if "carbon_scheduler_carbon_forecast_for_now_grams_per_kilowatt_hour" in query.expression
    ]
    horizons = sorted(int(query.expression.split('horizon_hours="')[1].split('"')[0]) for query in for_now)
    assert horizons == sorted(FORECAST_HORIZONS_HOURS)
    for query in queries():
        if "carbon_scheduler_carbon_forecast" in query.expression:
            assert promql_offsets_seconds(query.expression) == [], query


def test_influxql_uses_store_layout():
    layout = influx_layout()
    assert set(layout) == {"carbon_intensity", "carbon_forecast", "task_emissions"}
    influx = [query for query in queries() if query.datasource_kind == "influxdb"]
    assert len(influx) >= 7
    measurements = set()
    for query in influx:
        reference = influxql_reference(query.expression)
        assert reference.measurement in layout, f"{query}: unknown measurement {reference.measurement!r}"
        fields, tags = layout[reference.measurement]
        assert reference.fields <= fields, f"{query}: fields {sorted(reference.fields - fields)} are not written"
        assert reference.tags <= tags, f"{query}: tags {sorted(reference.tags - tags)} are not written"
        measurements.add(reference.measurement)
    assert measurements == set(layout)


def test_influx_region_variable_reads_written_tag():
    board = dashboards()["history.json"]
    (variable,) = board["templating"]["list"]
    assert variable["query"] == 'SHOW TAG VALUES FROM "carbon_intensity" WITH KEY = "region"'
    assert "region" in influx_layout()["carbon_intensity"][1]


SUBSTITUTIONS = [
    pytest.param(
        "prometheus", 'x{region=~"$region"}', ["eu-west", "us-east"], 'x{region=~"eu-west|us-east"}', id="prom-all"
    ),
    pytest.param("prometheus", 'x{region=~"$region"}', ["eu-west"], 'x{region=~"eu-west"}', id="prom-one"),
    pytest.param(
        "prometheus",
        "rate(x[$__rate_interval]) + increase(x[$__range]) + rate(x[$__interval])",
        ["eu-west"],
        "rate(x[1m]) + increase(x[3600s]) + rate(x[1m])",
        id="prom-durations",
    ),
    pytest.param(
        "influxdb",
        'SELECT mean("v") FROM "m" WHERE "region" =~ /^$region$/ AND $timeFilter GROUP BY time($__interval)',
        ["eu-west", "us-east"],
        'SELECT mean("v") FROM "m" WHERE "region" =~ /^(eu-west|us-east)$/ AND time >= 0ms and time <= 3600000ms '
        "GROUP BY time(1m)",
        id="influx-all",
    ),
    pytest.param(
        "influxdb", '"region" =~ /^$region$/', ["asia-east"], '"region" =~ /^asia-east$/', id="influx-one"
    ),
]


@pytest.mark.parametrize(("kind", "expression", "regions", "expected"), SUBSTITUTIONS)
def test_substitute_variables(kind, expression, regions, expected):
    assert substitute(expression, kind=kind, regions=regions, start_seconds=0, end_seconds=3600, interval="1m") == expected


@pytest.mark.parametrize(
    ("kind", "expression", "regions", "message"),
    [
        pytest.param("prometheus", "x{pod=~\"$pod\"}", ["eu-west"], "'$pod'", id="unknown-variable"),
        pytest.param("prometheus", "x{a=\"${region}\"}", ["eu-west"], "'${region'", id="braced-variable"),
        pytest.param("loki", "x", ["eu-west"], "unknown datasource type 'loki'", id="unknown-datasource"),
        pytest.param("prometheus", "x", ["EU West"], "not a DNS-1123 label", id="bad-region"),
    ],
)
def test_substitute_rejects(kind, expression, regions, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        substitute(expression, kind=kind, regions=regions, start_seconds=0, end_seconds=3600, interval="1m")


def test_panel_queries_one_region():
    picked = panel_queries(DASHBOARD_DIR, regions=REGIONS, selected=["us-east"])
    assert any('region=~"us-east"' in query.expression for query in picked)
    assert any("/^us-east$/" in query.expression for query in picked)
    assert not any("eu-west" in query.expression for query in picked)


def test_panel_queries_rejects_unknown_selected_region():
    with pytest.raises(ValueError, match="selected regions \\['mars'\\]"):
        panel_queries(DASHBOARD_DIR, regions=REGIONS, selected=["mars"])


PROMQL_NAME_CASES = [
    pytest.param('sum by (region, le) (rate(a_bucket{x="y"}[5m]))', {"a_bucket"}, id="grouping-labels"),
    pytest.param("a offset 1h", {"a"}, id="offset"),
    pytest.param("sum(a) - sum(b) / 3.6e6", {"a", "b"}, id="arithmetic-and-exponent"),
    pytest.param('a / ignoring (region) group_left sum by (c) (b)', {"a", "b"}, id="vector-matching"),
    pytest.param('a{region=~"sum|rate"}', {"a"}, id="label-values-look-like-functions"),
    pytest.param("histogram_quantile(0.95, sum by (le) (rate(h_bucket[1m])))", {"h_bucket"}, id="quantile"),
]


@pytest.mark.parametrize(("expression", "expected"), PROMQL_NAME_CASES)
def test_promql_metric_names(expression, expected):
    assert promql_metric_names(expression) == expected


_metric = st.from_regex(r"[a-z][a-z0-9_]{0,12}", fullmatch=True).filter(
    lambda name: name not in {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
                              "and", "or", "unless", "inf", "nan", "atan2"}
)
_label_value = st.from_regex(r"[a-z0-9|.*-]{0,10}", fullmatch=True)


@st.composite
def promql_expressions(draw) -> tuple[str, set[str]]:
    """A random PromQL expression in the grammar subset the dashboards use, and its metric names."""
    names = draw(st.lists(_metric, min_size=1, max_size=4))
    parts = []
    for name in names:
        selector = name
        if draw(st.booleans()):
            selector += f'{{region=~"{draw(_label_value)}"}}'
        if draw(st.booleans()):
            selector = f"rate({selector}[{draw(st.integers(1, 90))}s])"
        if draw(st.booleans()):
            selector = f"sum by ({draw(_metric)}, le) ({selector})"
        if draw(st.booleans()):
            selector += f" offset {draw(st.integers(1, 48))}h"
        parts.append(selector)
    operator = draw(st.sampled_from([" + ", " - ", " / ", " * "]))
    return operator.join(parts), set(names)


@given(promql_expressions())
def test_promql_metric_names_finds_every_selector(case):
    expression, names = case
    assert promql_metric_names(expression) == names


@pytest.mark.parametrize(
    ("query", "measurement", "fields", "tags"),
    [
        pytest.param(
            'SELECT mean("v") FROM "m" WHERE "region" =~ /^(a|b)$/ AND time >= 0ms GROUP BY time(1h), "region" fill(none)',
            "m", {"v"}, {"region"}, id="mean-grouped",
        ),
        pytest.param(
            'SELECT sum("a") - sum("b") AS "d" FROM "m" WHERE time >= 0ms', "m", {"a", "b"}, set(), id="arithmetic",
        ),
        pytest.param(
            'SELECT count("a") FROM "m" WHERE "x" = \'1\' AND time >= 0ms GROUP BY "region", "class"',
            "m", {"a"}, {"x", "region", "class"}, id="group-by-tags",
        ),
    ],
)
def test_influxql_reference(query, measurement, fields, tags):
    reference = influxql_reference(query)
    assert reference.measurement == measurement
    assert reference.fields == fields
    assert reference.tags == tags


def test_influxql_reference_rejects_other_shapes():
    with pytest.raises(ValueError, match="is not of the form"):
        influxql_reference('SHOW TAG VALUES FROM "m" WITH KEY = "region"')
    with pytest.raises(ValueError, match="names no field"):
        influxql_reference('SELECT * FROM "m" WHERE time >= 0ms')
