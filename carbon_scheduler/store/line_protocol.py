"""InfluxDB line protocol: turning records into the lines that `/write` accepts.

A line is `measurement,tag=value,... field=value,... timestamp`. Tag keys and
values escape commas, spaces and equals signs with a backslash. String field
values are double-quoted, escaping double quotes and backslashes. Floats are
written with Python's shortest round-trip repr, integers with an `i` suffix so
InfluxDB stores them as int64. Tags are sorted by key, which InfluxDB documents
as the fastest order to parse.

Labels reaching this module were checked by `base.check_label`, so they hold no
backslash or control character and need no other escaping.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from carbon_scheduler.store.base import EmissionRecord, ForecastPoint, Sample

INTENSITY_MEASUREMENT = "carbon_intensity"
FORECAST_MEASUREMENT = "carbon_forecast"
EMISSIONS_MEASUREMENT = "task_emissions"

NANOSECONDS_PER_SECOND = 1_000_000_000

_TAG_ESCAPES = str.maketrans({",": r"\,", " ": r"\ ", "=": r"\="})
_STRING_ESCAPES = str.maketrans({"\\": "\\\\", '"': '\\"'})

FieldValue = float | int | str


def escape_tag(text: str) -> str:
    """Escape a tag key or tag value."""
    return text.translate(_TAG_ESCAPES)


def format_field(value: FieldValue) -> str:
    """Format a field value: float as is, int with an `i` suffix, str quoted."""
    if isinstance(value, bool):
        raise TypeError(f"boolean field values are not written by this store, got {value!r}")
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.translate(_STRING_ESCAPES) + '"'


def format_line(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, FieldValue], timestamp: int
) -> str:
    """Format one point. `timestamp` is in the unit of the write request's precision."""
    tag_part = "".join(f",{escape_tag(key)}={escape_tag(tags[key])}" for key in sorted(tags))
    field_part = ",".join(f"{escape_tag(key)}={format_field(fields[key])}" for key in sorted(fields))
    return f"{measurement}{tag_part} {field_part} {timestamp}"


def sample_line(sample: Sample) -> str:
    """Format a sample; its timestamp is in seconds."""
    return format_line(
        INTENSITY_MEASUREMENT,
        {"region": sample.region, "source": sample.source},
        {"intensity_g_per_kwh": sample.intensity_g_per_kwh},
        sample.time,
    )


def forecast_line(point: ForecastPoint) -> str:
    """Format a forecast point; its timestamp is in seconds.

    `issued_at` is a tag, so forecasts issued at different times for the same
    step are separate series and never overwrite each other.
    """
    return format_line(
        FORECAST_MEASUREMENT,
        {"region": point.region, "forecaster": point.forecaster, "issued_at": str(point.issued_at)},
        {"intensity_g_per_kwh": point.intensity_g_per_kwh},
        point.time,
    )


def task_offset_nanoseconds(task_id: str) -> int:
    """Return a stable offset in [0, 1 s) derived from a task id, in nanoseconds.

    The task id is a field, because one tag value per task would grow the series
    index without bound. So two tasks with the same tags that end in the same
    second would share series and timestamp, and the second would overwrite the
    first. Adding this offset to the end time gives them different timestamps.
    """
    digest = hashlib.blake2b(task_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % NANOSECONDS_PER_SECOND


def emission_line(record: EmissionRecord) -> str:
    """Format an emission record; its timestamp is in nanoseconds.

    NOTE: two different task ids whose offsets collide (a chance of about one in
    a billion per pair with equal tags and end second) still overwrite each other.
    """
    return format_line(
        EMISSIONS_MEASUREMENT,
        {
            "region": record.region,
            "class": record.task_class,
            "counterfactual_region": record.counterfactual_region,
        },
        {
            "task_id": record.task_id,
            "energy_kwh": record.energy_kwh,
            "emissions_g": record.emissions_g,
            "counterfactual_emissions_g": record.counterfactual_emissions_g,
            "start": record.start,
            "end": record.end,
            "decision_time": record.decision_time,
        },
        record.end * NANOSECONDS_PER_SECOND + task_offset_nanoseconds(record.task_id),
    )
