"""Every query of every Grafana dashboard, with its variables replaced by values.

`panel_queries` reads the dashboards' JSON and returns one `PanelQuery` per panel
target, ready to send to Prometheus or InfluxDB. It replaces the variables the
way Grafana renders them: `$region` becomes a regex of the chosen regions,
`$__interval` and `$__rate_interval` a fixed duration, `$__range` the length of
the time range, and `$timeFilter` a condition on that range. An expression that
still contains a `$` after substitution raises ValueError, so a new dashboard
variable cannot slip past the tests.

The helpers below pull the metric names out of PromQL and the measurements,
fields and tags out of InfluxQL. They know only the subset of each language that
grafana/generate.py writes, and raise ValueError on anything else.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "grafana" / "dashboards"


@dataclass(frozen=True)
class PanelQuery:
    """One target of one panel, with the dashboard variables already substituted."""

    dashboard: str
    panel: str
    ref_id: str
    datasource_uid: str
    datasource_kind: str
    expression: str
    instant: bool = False

    def __str__(self) -> str:
        return f"{self.dashboard} / {self.panel} / {self.ref_id}"


def panel_queries(
    dashboard_dir: Path = DASHBOARD_DIR,
    *,
    regions: Sequence[str],
    selected: Sequence[str] | None = None,
    start_seconds: int = 0,
    end_seconds: int = 3600,
    interval: str = "1m",
) -> list[PanelQuery]:
    """Read every dashboard in `dashboard_dir` and return its queries with variables replaced.

    `regions` are all regions the `$region` variable offers, `selected` the ones
    picked (default: All). The time range [start_seconds, end_seconds] is in Unix
    seconds; `interval` is a Prometheus duration used for `$__interval` and
    `$__rate_interval`.
    """
    if not regions:
        raise ValueError("regions is empty; pass the region names the dashboards can select")
    picked = list(selected) if selected is not None else list(regions)
    unknown = sorted(set(picked) - set(regions))
    if unknown:
        raise ValueError(f"selected regions {unknown} are not among regions {list(regions)}")
    if end_seconds <= start_seconds:
        raise ValueError(f"time range [{start_seconds}, {end_seconds}] is empty; end must be after start")

    queries = []
    for path in sorted(dashboard_dir.glob("*.json")):
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for panel in _panels(dashboard):
            for target in panel.get("targets", []):
                datasource = target.get("datasource") or panel.get("datasource") or {}
                kind = datasource.get("type", "")
                raw = target.get("expr") if kind == "prometheus" else target.get("query")
                if not raw:
                    raise ValueError(f"{path.name} / {panel.get('title')!r}: target has no query for datasource {kind!r}")
                expression = substitute(
                    raw,
                    kind=kind,
                    regions=picked,
                    start_seconds=start_seconds,
                    end_seconds=end_seconds,
                    interval=interval,
                )
                queries.append(
                    PanelQuery(
                        dashboard=path.stem,
                        panel=panel.get("title", ""),
                        ref_id=target.get("refId", ""),
                        datasource_uid=datasource.get("uid", ""),
                        datasource_kind=kind,
                        expression=expression,
                        instant=bool(target.get("instant")) and not target.get("range", False),
                    )
                )
    return queries


def _panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard.get("panels", []):
        found.append(panel)
        # A collapsed row keeps its panels inside itself.
        found.extend(panel.get("panels", []))
    return found


def substitute(
    expression: str,
    *,
    kind: str,
    regions: Sequence[str],
    start_seconds: int,
    end_seconds: int,
    interval: str,
) -> str:
    """Replace the Grafana variables in one query the way Grafana would render them."""
    # Region names are DNS-1123 labels (the config loader enforces it), so they
    # hold no regex metacharacters and need no escaping in either language.
    for region in regions:
        if not _DNS_LABEL.fullmatch(region):
            raise ValueError(f"region {region!r} is not a DNS-1123 label such as 'eu-west'")
    if kind == "prometheus":
        region_value = "|".join(regions)
    elif kind == "influxdb":
        region_value = "(" + "|".join(regions) + ")" if len(regions) > 1 else regions[0]
    else:
        raise ValueError(f"unknown datasource type {kind!r}; expected prometheus or influxdb")
    values = {
        "$__rate_interval": interval,
        "$__interval": interval,
        "$__range": f"{end_seconds - start_seconds}s",
        "$timeFilter": f"time >= {start_seconds * 1000}ms and time <= {end_seconds * 1000}ms",
        "$region": region_value,
    }
    # Longest names first, so `$__interval` is not mistaken for a prefix of another name.
    for name in sorted(values, key=len, reverse=True):
        expression = expression.replace(name, values[name])
    leftover = re.search(r"\$\{?\w+", expression)
    if leftover:
        raise ValueError(f"query uses variable {leftover.group()!r} that tests/dashboard_queries.py does not replace: {expression}")
    return expression


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")

# PromQL words that look like metric names but are not.
_PROMQL_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool",
    "and", "or", "unless", "inf", "nan", "atan2",
}
# Label lists after these words hold label names, not metrics; dropping them leaves
# `sum (...)`, which reads as the function call it is.
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")


def promql_metric_names(expression: str) -> set[str]:
    """Return the metric names that a PromQL expression selects."""
    text = _STRING.sub('""', expression)
    text = re.sub(r"\{[^{}]*\}", "", text)
    text = re.sub(r"\[[^\[\]]*\]", "", text)
    text = _GROUPING.sub(" ", text)
    text = re.sub(r"\boffset\s+-?\w+", "", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        word, call = match.groups()
        if call or word.lower() in _PROMQL_KEYWORDS:
            continue
        names.add(word)
    return names


def promql_offsets_seconds(expression: str) -> list[int]:
    """Return the `offset` durations of a PromQL expression, in seconds."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return [int(value) * units[unit] for value, unit in re.findall(r"\boffset\s+(\d+)([smhdw])\b", expression)]


@dataclass(frozen=True)
class InfluxReference:
    """The measurement of an InfluxQL SELECT and the fields and tags it names."""

    measurement: str
    fields: frozenset[str]
    tags: frozenset[str]


_SELECT = re.compile(
    r"^SELECT\s+(?P<columns>.+?)\s+FROM\s+\"(?P<measurement>[^\"]+)\"\s+WHERE\s+(?P<where>.+?)"
    r"(?:\s+GROUP\s+BY\s+(?P<group>.+?))?$",
    re.IGNORECASE | re.DOTALL,
)


def influxql_reference(query: str) -> InfluxReference:
    """Parse the measurement, the fields in the SELECT list and the tags in WHERE and GROUP BY."""
    match = _SELECT.match(query.strip())
    if match is None:
        raise ValueError(f'query is not of the form SELECT ... FROM "m" WHERE ... [GROUP BY ...]: {query}')
    columns = match.group("columns")
    fields = set(re.findall(r"\w+\(\s*\"([^\"]+)\"\s*\)", columns))
    if not fields:
        raise ValueError(f"SELECT list names no field inside an aggregate such as mean(\"field\"): {query}")
    where = re.sub(r"/[^/]*/", "//", match.group("where"))
    tags = set(re.findall(r"\"([^\"]+)\"\s*(?:=~|!~|=|!=)", where))
    group = match.group("group") or ""
    tags.update(re.findall(r"\"([^\"]+)\"", group))
    return InfluxReference(match.group("measurement"), frozenset(fields), frozenset(tags))
