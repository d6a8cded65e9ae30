"""Record types and the `Store` interface that every time-series backend implements.

The contract that all backends share (tests/test_store_contract.py runs it against
each one):

- Times are integer Unix seconds (UTC). Query ranges are half-open, [start, end).
- Each record type has an identity. Writing a record whose identity is already
  stored replaces the stored one, so the store keeps one record with the last
  value. This is InfluxDB's rule for two points with the same series and
  timestamp, and the SQLite backend copies it with primary keys:
    Sample          (region, source, time)
    ForecastPoint   (region, forecaster, issued_at, time)
    EmissionRecord  (region, task_class, counterfactual_region, end, task_id)
- A write call returns only after the backend has acknowledged the data as
  durable. Writes are idempotent, so a caller may repeat a failed write whole.
- Query results are sorted: samples by (time, source), forecast points by
  (time, forecaster), emission records by (end, task_id, region, task_class,
  counterfactual_region).
- Labels (region, source, forecaster, task class) become InfluxDB tag values, so
  every backend accepts only what a tag value can hold on InfluxDB 1.x and 2.x:
  a non-empty string of at most MAX_LABEL_LENGTH characters without control
  characters or backslashes. The record types check this on construction, so a
  record that one backend accepts is accepted by all of them.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

# InfluxDB stores nanoseconds in an int64 and reserves its two extreme values, so
# the representable instants run from 1677-09-21 to 2262-04-11. The upper limit
# is one second lower so that a timestamp plus any sub-second offset still fits.
MIN_TIME_SECONDS = -9_223_372_036
MAX_TIME_SECONDS = 9_223_372_035

# Keeps a series key (measurement plus all tags) far below InfluxDB's 64 KiB limit.
MAX_LABEL_LENGTH = 1024


def _has_control_character(text: str) -> bool:
    return any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in text)


def check_label(name: str, value: object) -> str:
    """Validate a label (a future InfluxDB tag value) and return it as a plain str.

    Raises TypeError or ValueError that names the field, the value and the fix.
    """
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    text = str(value)  # turns a StrEnum member such as TaskClass.CRITICAL into its value
    if not text:
        raise ValueError(f"{name} must not be empty")
    if len(text) > MAX_LABEL_LENGTH:
        raise ValueError(
            f"{name} {text[:40]!r}... is {len(text)} characters long; "
            f"shorten it to at most {MAX_LABEL_LENGTH}"
        )
    if "\\" in text:
        # InfluxDB 1.x keeps a backslash in a tag value literally and cannot store
        # one at the end, while 2.x reads it as an escape character.
        raise ValueError(
            f"{name} {text!r} contains a backslash, which InfluxDB tag values cannot "
            "store portably; use another character"
        )
    if _has_control_character(text):
        raise ValueError(
            f"{name} {text!r} contains a control character (such as a newline or tab); "
            "remove it"
        )
    return text


def check_identifier(name: str, value: object) -> str:
    """Validate a free-text id stored as a string field, such as a task id."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} {value!r}")
    text = str(value)
    if not text:
        raise ValueError(f"{name} must not be empty")
    if len(text) > MAX_LABEL_LENGTH:
        raise ValueError(
            f"{name} {text[:40]!r}... is {len(text)} characters long; "
            f"shorten it to at most {MAX_LABEL_LENGTH}"
        )
    if _has_control_character(text):
        raise ValueError(
            f"{name} {text!r} contains a control character (such as a newline or tab); "
            "remove it"
        )
    return text


def check_time(name: str, value: object) -> int:
    """Validate a time in integer Unix seconds and return it as an int.

    Accepts any integer type (including numpy integers) but not floats or bools,
    because a fractional second would be silently truncated by the backends.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer number of Unix seconds, got {value!r}")
    try:
        seconds = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer number of Unix seconds, "
            f"got {type(value).__name__} {value!r}; round it first"
        ) from None
    if not MIN_TIME_SECONDS <= seconds <= MAX_TIME_SECONDS:
        raise ValueError(
            f"{name} {seconds} is outside the range that InfluxDB can store "
            f"({MIN_TIME_SECONDS} to {MAX_TIME_SECONDS} Unix seconds)"
        )
    return seconds


def check_number(name: str, value: object) -> float:
    """Validate a finite real number (int, float or numpy scalar) and return it as a float."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{name} must be finite, got {number!r}")
    return number


def check_range(start: object, end: object) -> tuple[int, int]:
    """Validate a half-open query range [start, end) in Unix seconds.

    Bounds beyond what a backend can store are clamped, so `(0, 2**62)` means
    "everything from 1970 on". Raises ValueError when start is after end.
    """
    first = _check_bound("start", start)
    last = _check_bound("end", end)
    if first > last:
        raise ValueError(f"range start {first} is after its end {last}; swap them")
    return max(first, MIN_TIME_SECONDS), min(last, MAX_TIME_SECONDS + 1)


def _check_bound(name: str, value: object) -> int:
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an integer number of Unix seconds, got {value!r}")
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(
            f"{name} must be an integer number of Unix seconds, "
            f"got {type(value).__name__} {value!r}"
        ) from None


def _set(record: object, name: str, value: object) -> None:
    # The records are frozen, so normalised values are stored the way
    # dataclasses themselves initialise frozen fields.
    object.__setattr__(record, name, value)


@dataclass(frozen=True, slots=True)
class Sample:
    """A measured carbon intensity of one region for the step starting at `time`.

    `time` is Unix seconds (UTC) at the start of the step; `source` names the
    provider or trace that produced the value.
    """

    region: str
    time: int
    intensity_g_per_kwh: float
    source: str

    def __post_init__(self) -> None:
        _set(self, "region", check_label("region", self.region))
        _set(self, "time", check_time("time", self.time))
        _set(self, "intensity_g_per_kwh", check_number("intensity_g_per_kwh", self.intensity_g_per_kwh))
        _set(self, "source", check_label("source", self.source))


@dataclass(frozen=True, slots=True)
class ForecastPoint:
    """One step of a forecast: the intensity that `forecaster`, run at `issued_at`,
    predicts for the step of `region` starting at `time` (both Unix seconds)."""

    region: str
    issued_at: int
    time: int
    intensity_g_per_kwh: float
    forecaster: str

    def __post_init__(self) -> None:
        _set(self, "region", check_label("region", self.region))
        _set(self, "issued_at", check_time("issued_at", self.issued_at))
        _set(self, "time", check_time("time", self.time))
        _set(self, "intensity_g_per_kwh", check_number("intensity_g_per_kwh", self.intensity_g_per_kwh))
        _set(self, "forecaster", check_label("forecaster", self.forecaster))


@dataclass(frozen=True, slots=True)
class EmissionRecord:
    """The carbon accounting of one finished task run.

    The task was decided at `decision_time` and ran in `region` over [start, end)
    (Unix seconds), using `energy_kwh` and emitting `emissions_g` grams of CO2.
    `counterfactual_emissions_g` is what the carbon-blind choice,
    `counterfactual_region`, would have emitted. Stores index records by `end`.
    """

    task_id: str
    region: str
    task_class: str
    decision_time: int
    start: int
    end: int
    energy_kwh: float
    emissions_g: float
    counterfactual_region: str
    counterfactual_emissions_g: float

    def __post_init__(self) -> None:
        _set(self, "task_id", check_identifier("task_id", self.task_id))
        _set(self, "region", check_label("region", self.region))
        _set(self, "task_class", check_label("task_class", self.task_class))
        _set(self, "decision_time", check_time("decision_time", self.decision_time))
        _set(self, "start", check_time("start", self.start))
        _set(self, "end", check_time("end", self.end))
        if self.end < self.start:
            raise ValueError(
                f"task {self.task_id!r} ends at {self.end}, before its start {self.start}"
            )
        _set(self, "energy_kwh", check_number("energy_kwh", self.energy_kwh))
        _set(self, "emissions_g", check_number("emissions_g", self.emissions_g))
        _set(self, "counterfactual_region", check_label("counterfactual_region", self.counterfactual_region))
        _set(
            self,
            "counterfactual_emissions_g",
            check_number("counterfactual_emissions_g", self.counterfactual_emissions_g),
        )


RecordT = TypeVar("RecordT", Sample, ForecastPoint, EmissionRecord)


def check_records(name: str, records: Iterable[object], record_type: type[RecordT]) -> list[RecordT]:
    """Collect `records` into a list, raising TypeError on an item of another type."""
    if isinstance(records, record_type):
        raise TypeError(f"{name} must be an iterable of {record_type.__name__}, got a single one; wrap it in a list")
    items = list(records)
    for index, item in enumerate(items):
        if not isinstance(item, record_type):
            raise TypeError(
                f"{name}[{index}] must be a {record_type.__name__}, got {type(item).__name__} {item!r}"
            )
    return items  # type: ignore[return-value]


def sample_order(sample: Sample) -> tuple[int, str]:
    return sample.time, sample.source


def forecast_order(point: ForecastPoint) -> tuple[int, str]:
    return point.time, point.forecaster


def emission_order(record: EmissionRecord) -> tuple[int, str, str, str, str]:
    return record.end, record.task_id, record.region, record.task_class, record.counterfactual_region


@runtime_checkable
class Store(Protocol):
    """Time-series history of intensities, forecasts and task emissions.

    Methods block until the backend has replied. Implementations are safe to call
    from several threads. Errors are `carbon_scheduler.store.errors.StoreError`
    subclasses. Invalid arguments raise TypeError or ValueError before any I/O.
    """

    def write_samples(self, samples: Iterable[Sample]) -> None:
        """Store samples, replacing any with the same (region, source, time)."""
        ...

    def samples(self, region: str, start: int, end: int) -> list[Sample]:
        """Return the samples of `region` with start <= time < end, sorted by (time, source)."""
        ...

    def latest_sample(self, region: str) -> Sample | None:
        """Return the sample of `region` with the greatest time, or None when there is none.

        When several sources share that time, the one whose name sorts first wins.
        """
        ...

    def write_forecasts(self, points: Iterable[ForecastPoint]) -> None:
        """Store forecast points, replacing any with the same (region, forecaster, issued_at, time)."""
        ...

    def forecasts(self, region: str, issued_at: int) -> list[ForecastPoint]:
        """Return every forecaster's points for `region` issued at `issued_at`, sorted by (time, forecaster)."""
        ...

    def write_emissions(self, records: Iterable[EmissionRecord]) -> None:
        """Store emission records, replacing any with the same identity (see the module docstring)."""
        ...

    def emissions(self, start: int, end: int) -> list[EmissionRecord]:
        """Return the records of runs that ended in [start, end), sorted by end then task id."""
        ...

    def close(self) -> None:
        """Release the backend's resources. Later calls raise StoreClosedError; closing twice is allowed."""
        ...
