"""Builders for Grafana dashboard JSON, used by `grafana/generate.py`.

The dashboards are plain dicts in Grafana's JSON model, schemaVersion 39, which
Grafana 11 writes; deploy/grafana runs Grafana 11.3. A `Dashboard` places
panels on the 24-column grid from left to right and numbers them in order, so
the generated files change only where the dashboard code changes. The datasource uids are the ones that
`grafana/provisioning/datasources/datasources.yaml` provisions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PROMETHEUS = {"type": "prometheus", "uid": "prometheus"}
INFLUXDB = {"type": "influxdb", "uid": "influxdb"}

GRID_COLUMNS = 24
SCHEMA_VERSION = 39

# Grafana has no built-in unit for carbon intensity, so panels use a custom suffix.
UNIT_INTENSITY = "suffix: gCO2eq/kWh"
UNIT_GRAMS = "massg"
UNIT_SECONDS = "s"
UNIT_KILOWATT_HOURS = "kwatth"
UNIT_RATIO = "percentunit"

LEVEL_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "low", "color": "green", "index": 0},
            "1": {"text": "medium", "color": "yellow", "index": 1},
            "2": {"text": "high", "color": "red", "index": 2},
        },
    }
]
UP_MAPPINGS = [
    {
        "type": "value",
        "options": {
            "0": {"text": "down", "color": "red", "index": 0},
            "1": {"text": "up", "color": "green", "index": 1},
        },
    }
]


def prometheus_target(expr: str, legend: str = "", *, instant: bool = False) -> dict[str, Any]:
    """Build one PromQL query of a panel; an `instant` query returns only the value at the range's end."""
    return {
        "datasource": dict(PROMETHEUS),
        "expr": expr,
        "legendFormat": legend or "__auto",
        "range": not instant,
        "instant": instant,
    }


def influx_target(query: str, alias: str = "", *, table: bool = False) -> dict[str, Any]:
    """Build one raw InfluxQL query of a panel; `alias` may use $tag_NAME and $col."""
    return {
        "datasource": dict(INFLUXDB),
        "query": query,
        "rawQuery": True,
        "resultFormat": "table" if table else "time_series",
        "alias": alias,
    }


def region_variable(datasource: dict[str, str], query: str | dict[str, Any]) -> dict[str, Any]:
    """Build the `region` template variable: several regions may be picked, and All is the default."""
    return {
        "name": "region",
        "label": "Region",
        "type": "query",
        "datasource": dict(datasource),
        "query": query,
        "definition": query if isinstance(query, str) else query["query"],
        "refresh": 2,
        "multi": True,
        "includeAll": True,
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "sort": 1,
        "hide": 0,
        "options": [],
    }


@dataclass
class Dashboard:
    """A dashboard under construction; `add` appends a panel at the next free grid slot."""

    uid: str
    title: str
    description: str
    time_from: str
    refresh: str
    variables: list[dict[str, Any]] = field(default_factory=list)
    tags: tuple[str, ...] = ("carbon-scheduler",)
    panels: list[dict[str, Any]] = field(default_factory=list)
    _x: int = 0
    _y: int = 0
    _row_height: int = 0

    def row(self, title: str) -> None:
        """Start a new full-width row with this title."""
        self._new_line()
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": "row",
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": GRID_COLUMNS, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def add(
        self,
        kind: str,
        title: str,
        description: str,
        targets: list[dict[str, Any]],
        *,
        width: int = 12,
        height: int = 8,
        unit: str = "",
        decimals: int | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
        mappings: list[dict[str, Any]] | None = None,
        thresholds: list[tuple[float | None, str]] | None = None,
        custom: dict[str, Any] | None = None,
        options: dict[str, Any] | None = None,
        overrides: list[dict[str, Any]] | None = None,
    ) -> None:
        """Append a panel of type `kind` (timeseries, stat, bargauge, state-timeline, ...)."""
        if self._x + width > GRID_COLUMNS:
            self._new_line()

        defaults: dict[str, Any] = {"unit": unit} if unit else {}
        if decimals is not None:
            defaults["decimals"] = decimals
        if minimum is not None:
            defaults["min"] = minimum
        if maximum is not None:
            defaults["max"] = maximum
        if mappings:
            defaults["mappings"] = mappings
        steps = thresholds or [(None, "green")]
        defaults["thresholds"] = {
            "mode": "absolute",
            "steps": [{"color": color, "value": value} for value, color in steps],
        }
        if custom:
            defaults["custom"] = custom

        panel_targets = [dict(target, refId=chr(ord("A") + index)) for index, target in enumerate(targets)]
        self.panels.append(
            {
                "id": len(self.panels) + 1,
                "type": kind,
                "title": title,
                "description": description,
                "datasource": dict(panel_targets[0]["datasource"]),
                "gridPos": {"h": height, "w": width, "x": self._x, "y": self._y},
                "targets": panel_targets,
                "fieldConfig": {"defaults": defaults, "overrides": overrides or []},
                "options": options or {},
            }
        )
        self._x += width
        self._row_height = max(self._row_height, height)

    def to_json(self) -> dict[str, Any]:
        """Return the dashboard in Grafana's JSON model."""
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": list(self.tags),
            "timezone": "utc",
            "editable": True,
            "graphTooltip": 1,
            "schemaVersion": SCHEMA_VERSION,
            "version": 1,
            "refresh": self.refresh,
            "time": {"from": self.time_from, "to": "now"},
            "templating": {"list": self.variables},
            "annotations": {"list": []},
            "links": [],
            "panels": self.panels,
        }

    def _new_line(self) -> None:
        self._y += self._row_height
        self._x = 0
        self._row_height = 0


def timeseries_options(*, stacked: bool = False, fill: int = 0, draw: str = "line") -> dict[str, Any]:
    """Return the `custom` field options of a time series: line or bars, optionally stacked."""
    return {
        "drawStyle": draw,
        "lineWidth": 2,
        "fillOpacity": fill,
        "showPoints": "never",
        "spanNulls": False,
        "stacking": {"mode": "normal" if stacked else "none", "group": "A"},
    }


LEGEND_TABLE = {
    "legend": {"displayMode": "table", "placement": "right", "calcs": ["lastNotNull", "mean"]},
    "tooltip": {"mode": "multi", "sort": "desc"},
}
LEGEND_LIST = {
    "legend": {"displayMode": "list", "placement": "bottom", "calcs": []},
    "tooltip": {"mode": "multi", "sort": "desc"},
}
STAT_LAST = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "colorMode": "value",
    "graphMode": "none",
    "textMode": "auto",
    "orientation": "auto",
}
BARS_LAST = {
    "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
    "orientation": "horizontal",
    "displayMode": "gradient",
    "showUnfilled": True,
}
