"""Carbon-intensity traces: a dense in-memory grid, CSV readers and a CSV writer.

A `Trace` contains one row of intensities (gCO2eq/kWh) per region and one column per
time step. All regions share one start and one fixed step, and intensity is a step
function: the value of step i holds over [time_at(i), time_at(i) + step_seconds).
`Trace.integrate` turns that step function into g/kWh * hours over any interval in
O(1) from cached prefix sums, because the replay simulator calls it once per task
and policy.

`read_trace` reads one file, or several files whose rows are merged. It detects the
layout of each file from its header:

- long: columns `timestamp,region,intensity_g_per_kwh` in any order, one row per
  region and step. `write_trace` writes this layout.
- wide: `timestamp` first, then one column per region.
- Electricity Maps data-portal export: `Datetime (UTC)`, `Zone Id`, and the two
  `Carbon Intensity gCO₂eq/kWh (direct)` and `(LCA)` columns. Newer exports spell
  them `Zone id` and `Carbon intensity gCO₂eq/kWh (Life cycle)`; header names are
  matched without regard to case. The LCA column is read unless `column="direct"`.
  The region name is the zone id, or `zone_map[zone_id]` where the map has it. The
  count of rows flagged `Data Estimated` is recorded in `Trace.notes`.

How the reader handles each kind of input (each case has a test):

- Rows in any order are sorted by time. A note records that the file was unsorted.
- A row that repeats an earlier (timestamp, region) with the same value is dropped
  and counted in a note. The same key with a different value is an error that names
  both lines.
- Timestamps are ISO 8601 and must carry `Z` or a UTC offset. Offsets are converted
  to UTC and noted. A timestamp without an offset is an error that asks for `Z`,
  except in Electricity Maps exports, whose header declares the column UTC.
- The step is the most common interval between consecutive rows of one region, so
  hourly, 30-minute and 5-minute files all work. A timestamp that is not a whole
  number of steps away from the others is an error.
- Absent rows and empty or NaN values (`""`, `nan`, `NA`, `n/a`, `null`, `none`) are
  missing values. A run of at most `max_gap_steps` missing steps between two known
  values is filled by linear interpolation and noted. A longer run is an error that
  names the region, the first missing time, the length and the fixes.
- Negative, infinite or non-numeric values are errors with file and line.
- Each region's span runs from its first to its last numeric value. When regions
  span different times, every region is trimmed to the span they all cover and a
  note lists what was dropped. Regions that share no time at all are an error.
- `regions=` selects regions and fixes their order. A name that is not in the
  files is an error listing the known names. Without it, regions keep the order in
  which they first appear.

Every input problem raises `TraceError`, a `ValueError` that carries the file, the
line (the header is line 1) and the offending value.
"""

from __future__ import annotations

import csv
import math
import operator
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import TypeAlias

import numpy as np

__all__ = [
    "LONG_HEADER",
    "Trace",
    "TraceError",
    "format_time",
    "read_trace",
    "write_trace",
]

PathLike: TypeAlias = str | os.PathLike[str]

SECONDS_PER_HOUR = 3600
LONG_HEADER = ("timestamp", "region", "intensity_g_per_kwh")
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MISSING_TOKENS = frozenset({"", "nan", "na", "n/a", "null", "none"})

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_EM_TIME_COLUMN = "datetime (utc)"
_EM_ZONE_COLUMN = "zone id"
_EM_ESTIMATED_COLUMN = "data estimated"
# Markers of the two intensity columns in Electricity Maps exports, lower case.
# Older exports write "(LCA)", newer ones "(Life cycle)".
_EM_VALUE_MARKERS = {"lca": ("(lca)", "(life cycle)"), "direct": ("(direct)",)}
_FORBIDDEN_IN_REGION = frozenset(',"\r\n\t')


class TraceError(ValueError):
    """Invalid trace input, or a request that a trace cannot serve.

    `path`, `line` (1-based, counting the header as line 1) and `value` locate a
    problem found in a file. Each is None when it does not apply.
    """

    def __init__(
        self,
        message: str,
        *,
        path: PathLike | None = None,
        line: int | None = None,
        value: str | None = None,
    ) -> None:
        self.reason = message
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.value = value
        if self.path is not None and line is not None:
            message = f"{self.path}:{line}: {message}"
        elif self.path is not None:
            message = f"{self.path}: {message}"
        super().__init__(message)


def format_time(t: float) -> str:
    """Format Unix seconds as `2023-01-01T00:00:00Z`, or as the plain number when
    it is outside the years datetime can represent."""
    try:
        return time.strftime(TIMESTAMP_FORMAT, time.gmtime(t))
    except (OverflowError, ValueError, OSError):
        return repr(t)


def _duration_text(seconds: int) -> str:
    for unit, size in (("d", 86_400), ("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _count_steps_text(count: int, step_seconds: int, adjective: str = "") -> str:
    """Return "2 hours" for hourly steps, "3 steps of 30 min" otherwise, with an
    optional adjective before the noun ("2 missing hours")."""
    prefix = f"{count} {adjective} " if adjective else f"{count} "
    if step_seconds == SECONDS_PER_HOUR:
        return prefix + ("hour" if count == 1 else "hours")
    noun = "step" if count == 1 else "steps"
    return f"{prefix}{noun} of {_duration_text(step_seconds)}"


def _region_name_problem(name: object) -> str | None:
    if not isinstance(name, str):
        return f"region name {name!r} is not a string"
    if not name or name != name.strip():
        return f"region name {name!r} is empty or has surrounding spaces"
    if _FORBIDDEN_IN_REGION.intersection(name):
        return f"region name {name!r} contains a comma, quote, tab or line break"
    return None


@dataclass(frozen=True, eq=False, repr=False)
class Trace:
    """Intensities of several regions on one fixed time grid.

    `start` is the Unix time (seconds, UTC) at which step 0 begins, and step i covers
    [start + i * step_seconds, start + (i + 1) * step_seconds). `values` has shape
    (len(regions), steps) and contains finite non-negative gCO2eq/kWh. It is a
    read-only copy of the array passed in. `notes` lists in words how the input was
    repaired. Two traces are equal when regions, grid and values match, whatever
    their notes.
    """

    regions: tuple[str, ...]
    start: int
    step_seconds: int
    values: np.ndarray
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        regions = tuple(self.regions)
        if not regions:
            raise TraceError("a trace needs at least one region")
        for name in regions:
            problem = _region_name_problem(name)
            if problem:
                raise TraceError(problem)
        repeated = sorted({name for name in regions if regions.count(name) > 1})
        if repeated:
            raise TraceError(f"region names must be unique; repeated: {', '.join(repeated)}")

        start = operator.index(self.start)
        step_seconds = operator.index(self.step_seconds)
        if step_seconds <= 0:
            raise TraceError(f"step_seconds must be positive, got {step_seconds}")

        # Adding 0.0 turns -0.0 into 0.0, so the writer never prints "-0.00".
        values = np.array(self.values, dtype=np.float64) + 0.0
        if values.ndim != 2 or values.shape[0] != len(regions) or values.shape[1] == 0:
            raise TraceError(
                f"values must have shape ({len(regions)}, steps) with at least one step, "
                f"got {values.shape}"
            )
        bad = ~np.isfinite(values) | (values < 0)
        if bad.any():
            row, column = (int(i) for i in np.argwhere(bad)[0])
            raise TraceError(
                f"intensity {values[row, column]!r} of {regions[row]} at "
                f"{format_time(start + column * step_seconds)} is not a finite "
                "non-negative number"
            )
        values.setflags(write=False)

        object.__setattr__(self, "regions", regions)
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "step_seconds", step_seconds)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "notes", tuple(str(note) for note in self.notes))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Trace):
            return NotImplemented
        return (
            self.regions == other.regions
            and self.start == other.start
            and self.step_seconds == other.step_seconds
            and np.array_equal(self.values, other.values)
        )

    __hash__ = None  # type: ignore[assignment]  # holds a numpy array

    def __repr__(self) -> str:
        return (
            f"Trace(regions={self.regions!r}, start={format_time(self.start)}, "
            f"step_seconds={self.step_seconds}, steps={self.steps}, "
            f"notes={len(self.notes)})"
        )

    @property
    def steps(self) -> int:
        """Number of time steps."""
        return self.values.shape[1]

    @property
    def end(self) -> int:
        """Unix time just after the last step."""
        return self.start + self.steps * self.step_seconds

    def time_at(self, i: int) -> int:
        """Unix time at which step `i` begins; raises IndexError outside 0..steps-1."""
        if not 0 <= i < self.steps:
            raise IndexError(f"step {i} is outside the trace's steps 0..{self.steps - 1}")
        return self.start + i * self.step_seconds

    def index_at(self, t: float) -> int:
        """Index of the step that contains Unix time `t`."""
        if not self.start <= t < self.end:
            raise TraceError(
                f"time {format_time(t)} is outside the trace, which covers "
                f"{format_time(self.start)} up to (not including) {format_time(self.end)}"
            )
        return int((t - self.start) // self.step_seconds)

    @cached_property
    def _region_positions(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.regions)}

    def region_index(self, name: str) -> int:
        """Row of region `name` in `values`."""
        try:
            return self._region_positions[name]
        except KeyError:
            raise TraceError(
                f"unknown region {name!r}; the trace has {', '.join(self.regions)}"
            ) from None

    def select(self, regions: Iterable[str]) -> Trace:
        """Return a trace with only `regions`, in that order."""
        wanted = tuple(regions)
        unknown = [name for name in wanted if name not in self._region_positions]
        if unknown:
            raise TraceError(
                f"unknown region(s) {', '.join(map(repr, unknown))}; "
                f"the trace has {', '.join(self.regions)}"
            )
        rows = [self._region_positions[name] for name in wanted]
        return Trace(wanted, self.start, self.step_seconds, self.values[rows], self.notes)

    def slice(self, start: int, end: int) -> Trace:
        """Return the steps that overlap [start, end).

        The result begins at the start of the step containing `start` and ends at the
        first step boundary at or after `end`, so it may be a little wider than asked.
        """
        if not self.start <= start < end <= self.end:
            raise TraceError(
                f"cannot slice {format_time(start)} to {format_time(end)}: the range must "
                f"be non-empty and lie within {format_time(self.start)} to "
                f"{format_time(self.end)}"
            )
        first = (start - self.start) // self.step_seconds
        stop = -(-(end - self.start) // self.step_seconds)
        return Trace(
            self.regions,
            self.start + first * self.step_seconds,
            self.step_seconds,
            self.values[:, first:stop],
            self.notes,
        )

    @cached_property
    def _prefix_sums(self) -> np.ndarray:
        step_hours = self.step_seconds / SECONDS_PER_HOUR
        sums = np.zeros((len(self.regions), self.steps + 1))
        np.cumsum(self.values * step_hours, axis=1, out=sums[:, 1:])
        sums.setflags(write=False)
        return sums

    def prefix_sums(self) -> np.ndarray:
        """Cumulative intensity in g/kWh * hours, shape (regions, steps + 1).

        Column k is the integral from `start` to the start of step k. The array is
        computed once and shared, and it is read-only.
        """
        return self._prefix_sums

    @cached_property
    def _integration_tables(
        self,
    ) -> tuple[tuple[list[float], ...], tuple[list[float], ...], int]:
        # Python lists, because indexing a list of floats is several times faster than
        # indexing a numpy array element by element and allocates nothing.
        prefix_rows = tuple(row.tolist() for row in self._prefix_sums)
        value_rows = tuple(row.tolist() for row in self.values)
        return prefix_rows, value_rows, self.end

    def integrate(self, region_index: int, t0: float, t1: float) -> float:
        """Integral of region `region_index`'s intensity over [t0, t1), in g/kWh * h.

        Exact for times inside a step. `t0` and `t1` must satisfy
        start <= t0 <= t1 <= end.
        """
        prefix_rows, value_rows, end = self._integration_tables
        start = self.start
        step = self.step_seconds
        if not start <= t0 <= t1 <= end:
            raise TraceError(
                f"cannot integrate over {format_time(t0)} to {format_time(t1)}: the "
                f"interval must be ordered and lie within {format_time(start)} to "
                f"{format_time(self.end)}"
            )
        if region_index < 0:
            raise IndexError(f"region index {region_index} is negative")
        values = value_rows[region_index]
        if t0 == t1:
            return 0.0

        i0, rest0 = divmod(t0 - start, step)
        i1, rest1 = divmod(t1 - start, step)
        i0 = int(i0)
        i1 = int(i1)
        if i0 == i1:
            # Both ends in one step: skip the prefix sums, which would cancel.
            return (t1 - t0) * values[i0] / SECONDS_PER_HOUR

        prefix = prefix_rows[region_index]
        total = prefix[i1] - prefix[i0] - rest0 * values[i0] / SECONDS_PER_HOUR
        if rest1:
            total += rest1 * values[i1] / SECONDS_PER_HOUR
        return total


# ---------------------------------------------------------------- reading


class _Cells:
    """Parsed values in columns, one entry per (timestamp, region) cell of the input."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.region_names: list[str] = []
        self.region_codes: dict[str, int] = {}
        self.times: list[int] = []
        self.regions: list[int] = []
        self.values: list[float] = []
        self.lines: list[int] = []
        self.files: list[int] = []
        self.estimated: list[bool] = []
        self.offsets: set[str] = set()

    def region_code(self, name: str, path: str, line: int) -> int:
        code = self.region_codes.get(name)
        if code is None:
            problem = _region_name_problem(name)
            if problem:
                raise TraceError(problem, path=path, line=line, value=name)
            code = len(self.region_names)
            self.region_codes[name] = code
            self.region_names.append(name)
        return code

    def location(self, cell: int) -> str:
        return f"{self.paths[self.files[cell]]}:{self.lines[cell]}"

    def error(self, message: str, cell: int, value: str | None = None) -> TraceError:
        return TraceError(
            message,
            path=self.paths[self.files[cell]],
            line=self.lines[cell],
            value=value,
        )


def _offset_text(offset: timedelta) -> str:
    sign = "-" if offset < timedelta(0) else "+"
    minutes = abs(offset) // timedelta(minutes=1)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


class _TimestampParser:
    """Parses ISO 8601 timestamps to Unix seconds, caching repeated strings, because
    a long file repeats every timestamp once per region."""

    def __init__(self, cells: _Cells, path: str, *, naive_is_utc: bool) -> None:
        self._cache: dict[str, int] = {}
        self._cells = cells
        self._path = path
        self._naive_is_utc = naive_is_utc

    def __call__(self, text: str, line: int) -> int:
        seconds = self._cache.get(text)
        if seconds is None:
            seconds = self._parse(text, line)
            self._cache[text] = seconds
        return seconds

    def _parse(self, text: str, line: int) -> int:
        stripped = text.strip()
        if not stripped:
            raise TraceError("missing timestamp", path=self._path, line=line, value=text)
        try:
            moment = datetime.fromisoformat(stripped)
        except ValueError:
            raise TraceError(
                f"invalid timestamp {stripped!r}; expected ISO 8601 with a UTC offset, "
                "such as 2023-01-01T00:00:00Z",
                path=self._path,
                line=line,
                value=text,
            ) from None
        offset = moment.utcoffset()
        if offset is None:
            if not self._naive_is_utc:
                raise TraceError(
                    f"timestamp {stripped!r} has no UTC offset; add Z for UTC "
                    "(2023-01-01T00:00:00Z) or the offset it was recorded in "
                    "(2023-01-01T01:00:00+01:00)",
                    path=self._path,
                    line=line,
                    value=text,
                )
            moment = moment.replace(tzinfo=timezone.utc)
        elif offset:
            self._cells.offsets.add(_offset_text(offset))
        if moment.microsecond:
            raise TraceError(
                f"timestamp {stripped!r} has fractional seconds; steps must start on "
                "whole seconds",
                path=self._path,
                line=line,
                value=text,
            )
        return (moment - _EPOCH) // timedelta(seconds=1)


MAX_INTENSITY_G_PER_KWH = 5000.0
"""Largest intensity accepted: five times a coal plant's, so a value above it is a
unit mistake or a corrupt cell, never a real grid."""


def _parse_value(text: str, path: str, line: int, column: str) -> float:
    """Parse an intensity cell: a float, NaN for a missing value, or an error."""
    try:
        value = float(text)
    except ValueError:
        if text.strip().lower() in MISSING_TOKENS:
            return math.nan
        raise TraceError(
            f"non-numeric intensity {text!r} in column {column!r}; expected a number "
            "in gCO2eq/kWh, or an empty cell for a missing value",
            path=path,
            line=line,
            value=text,
        ) from None
    if 0.0 <= value <= MAX_INTENSITY_G_PER_KWH:
        return value
    if math.isnan(value):
        return value
    if MAX_INTENSITY_G_PER_KWH < value < math.inf:
        raise TraceError(
            f"intensity {text.strip()!r} in column {column!r} is above {MAX_INTENSITY_G_PER_KWH:g} gCO2eq/kWh, "
            "more than any power grid emits (coal plants emit about 1,000); check that the unit is g/kWh "
            "and not g/MWh or lb/MWh",
            path=path,
            line=line,
            value=text,
        )
    raise TraceError(
        f"intensity {text.strip()!r} in column {column!r} is "
        f"{'infinite' if math.isinf(value) else 'negative'}; intensities are finite "
        "and non-negative gCO2eq/kWh",
        path=path,
        line=line,
        value=text,
    )


def _is_blank(row: list[str]) -> bool:
    return not any(field.strip() for field in row)


def _width_error(path: str, line: int, header: list[str], row: list[str]) -> TraceError:
    return TraceError(
        f"expected {len(header)} fields ({','.join(header)}), found {len(row)}",
        path=path,
        line=line,
        value=",".join(row),
    )


def _read_long(reader, header: list[str], names: list[str], cells: _Cells, source: int) -> None:
    path = cells.paths[source]
    time_column = names.index("timestamp")
    region_column = names.index("region")
    value_column = names.index("intensity_g_per_kwh")
    value_name = header[value_column].strip()
    width = len(header)
    parse_time = _TimestampParser(cells, path, naive_is_utc=False)
    region_code = cells.region_code
    append_time = cells.times.append
    append_region = cells.regions.append
    append_value = cells.values.append
    append_line = cells.lines.append

    for row in reader:
        line = reader.line_num
        # A row of empty fields, as spreadsheets leave at the end, is skipped.
        if (len(row) != width or not row[time_column].strip()) and _is_blank(row):
            continue
        if len(row) != width:
            raise _width_error(path, line, header, row)
        append_time(parse_time(row[time_column], line))
        append_region(region_code(row[region_column].strip(), path, line))
        append_value(_parse_value(row[value_column], path, line, value_name))
        append_line(line)

    added = len(cells.times) - len(cells.files)
    cells.files.extend([source] * added)
    cells.estimated.extend([False] * added)


def _read_wide(reader, header: list[str], cells: _Cells, source: int) -> None:
    path = cells.paths[source]
    names = [name.strip() for name in header[1:]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TraceError(
            f"region column(s) {', '.join(map(repr, repeated))} appear more than once",
            path=path,
            line=1,
            value=",".join(header),
        )
    codes = [cells.region_code(name, path, 1) for name in names]
    width = len(header)
    parse_time = _TimestampParser(cells, path, naive_is_utc=False)

    for row in reader:
        line = reader.line_num
        # A row of empty fields, as spreadsheets leave at the end, is skipped.
        if (len(row) != width or not row[0].strip()) and _is_blank(row):
            continue
        if len(row) != width:
            raise _width_error(path, line, header, row)
        moment = parse_time(row[0], line)
        for code, name, text in zip(codes, names, row[1:]):
            cells.times.append(moment)
            cells.regions.append(code)
            cells.values.append(_parse_value(text, path, line, name))
            cells.lines.append(line)

    added = len(cells.times) - len(cells.files)
    cells.files.extend([source] * added)
    cells.estimated.extend([False] * added)


def _electricity_maps_value_column(names: list[str], column: str) -> int | None:
    for index, name in enumerate(names):
        if "carbon intensity" in name and any(m in name for m in _EM_VALUE_MARKERS[column]):
            return index
    return None


def _read_electricity_maps(
    reader,
    header: list[str],
    names: list[str],
    cells: _Cells,
    source: int,
    *,
    column: str,
    zone_map: Mapping[str, str],
) -> None:
    path = cells.paths[source]
    value_column = _electricity_maps_value_column(names, column)
    if value_column is None or _EM_ZONE_COLUMN not in names:
        wanted = "Carbon Intensity gCO₂eq/kWh (LCA)" if column == "lca" else (
            "Carbon Intensity gCO₂eq/kWh (direct)"
        )
        raise TraceError(
            f"Electricity Maps export without the columns 'Zone Id' and {wanted!r}; "
            f"found {', '.join(header)}",
            path=path,
            line=1,
            value=",".join(header),
        )
    time_column = names.index(_EM_TIME_COLUMN)
    zone_column = names.index(_EM_ZONE_COLUMN)
    estimated_column = (
        names.index(_EM_ESTIMATED_COLUMN) if _EM_ESTIMATED_COLUMN in names else None
    )
    value_name = header[value_column].strip()
    width = len(header)
    # The header names the column "Datetime (UTC)", so offset-free times are UTC.
    parse_time = _TimestampParser(cells, path, naive_is_utc=True)

    for row in reader:
        line = reader.line_num
        # A row of empty fields, as spreadsheets leave at the end, is skipped.
        if (len(row) != width or not row[time_column].strip()) and _is_blank(row):
            continue
        if len(row) != width:
            raise _width_error(path, line, header, row)
        zone = row[zone_column].strip()
        cells.times.append(parse_time(row[time_column], line))
        cells.regions.append(cells.region_code(zone_map.get(zone, zone), path, line))
        cells.values.append(_parse_value(row[value_column], path, line, value_name))
        cells.lines.append(line)
        cells.estimated.append(
            estimated_column is not None
            and row[estimated_column].strip().lower() == "true"
        )

    added = len(cells.times) - len(cells.files)
    cells.files.extend([source] * added)


def _read_file(
    path: str, cells: _Cells, *, column: str, zone_map: Mapping[str, str]
) -> None:
    source = len(cells.paths)
    cells.paths.append(path)
    reader = None
    try:
        with open(path, encoding="utf-8-sig", newline="") as stream:
            reader = csv.reader(stream)
            header = next((row for row in reader if not _is_blank(row)), None)
            if header is None:
                raise TraceError(
                    "the file is empty; expected a header such as "
                    f"{','.join(LONG_HEADER)}",
                    path=path,
                )
            names = [name.strip().lower() for name in header]
            if _EM_TIME_COLUMN in names:
                _read_electricity_maps(
                    reader, header, names, cells, source, column=column, zone_map=zone_map
                )
            elif set(LONG_HEADER) <= set(names):
                _read_long(reader, header, names, cells, source)
            elif names[0] == "timestamp" and "region" not in names and len(names) >= 2:
                _read_wide(reader, header, cells, source)
            else:
                raise TraceError(
                    f"unrecognised header {','.join(header)!r}; expected the long layout "
                    f"{','.join(LONG_HEADER)}, the wide layout timestamp,<region>,..., or "
                    "an Electricity Maps export starting with Datetime (UTC)",
                    path=path,
                    line=reader.line_num,
                    value=",".join(header),
                )
    except csv.Error as error:
        line = reader.line_num if reader is not None else None
        raise TraceError(f"malformed CSV: {error}", path=path, line=line) from error
    except UnicodeDecodeError as error:
        raise TraceError(
            f"the file is not UTF-8 text ({error.reason} at byte {error.start})", path=path
        ) from error
    except OSError as error:
        raise TraceError(
            f"cannot read the file: {error.strerror or error}", path=path
        ) from error


def _as_paths(path: PathLike | Sequence[PathLike]) -> list[str]:
    if isinstance(path, (str, os.PathLike)):
        return [os.fspath(path)]
    paths = [os.fspath(item) for item in path]
    if not paths:
        raise TraceError("no trace files given")
    return paths


def read_trace(
    path: PathLike | Sequence[PathLike],
    *,
    regions: Sequence[str] | None = None,
    max_gap_steps: int = 3,
    column: str = "lca",
    zone_map: Mapping[str, str] | None = None,
) -> Trace:
    """Read a trace from one CSV file, or merge the rows of several.

    `regions` selects regions and sets their order. `max_gap_steps` is the longest
    run of missing steps that is filled by linear interpolation; 0 fills nothing.
    `column` ("lca" or "direct") and `zone_map` (zone id to region name) apply to
    Electricity Maps exports only. The module docstring lists how each kind of
    input is handled; every problem raises `TraceError`.
    """
    if isinstance(max_gap_steps, bool) or not isinstance(max_gap_steps, int) or max_gap_steps < 0:
        raise TraceError(f"max_gap_steps must be a non-negative integer, got {max_gap_steps!r}")
    if column not in _EM_VALUE_MARKERS:
        raise TraceError(f"column must be 'lca' or 'direct', got {column!r}")
    wanted: tuple[str, ...] | None = None
    if regions is not None:
        wanted = (regions,) if isinstance(regions, str) else tuple(regions)
        if not wanted:
            raise TraceError("regions= is empty; pass None to read every region")
        repeated = sorted({name for name in wanted if wanted.count(name) > 1})
        if repeated:
            raise TraceError(f"regions= names {', '.join(repeated)} more than once")

    cells = _Cells()
    for item in _as_paths(path):
        _read_file(item, cells, column=column, zone_map=zone_map or {})

    if not cells.times:
        raise TraceError(
            "no data rows after the header", path=", ".join(cells.paths)
        )
    if wanted is None:
        wanted = tuple(cells.region_names)
    unknown = [name for name in wanted if name not in cells.region_codes]
    if unknown:
        raise TraceError(
            f"the trace has no data for region(s) {', '.join(map(repr, unknown))}; it has "
            f"{', '.join(cells.region_names)}. Use a trace with those regions, rename its regions "
            "to the config's (replay --zone ZONE=REGION), or list only the trace's regions in the config",
            path=", ".join(cells.paths),
        )
    return _build_trace(cells, wanted, max_gap_steps)


# ---------------------------------------------------------------- assembling


@dataclass
class _Columns:
    """Selected cells as arrays; `cell` maps each entry back to its input row."""

    times: np.ndarray
    positions: np.ndarray
    values: np.ndarray
    cell: np.ndarray

    def take(self, index: np.ndarray) -> _Columns:
        return _Columns(
            self.times[index], self.positions[index], self.values[index], self.cell[index]
        )


def _select_columns(cells: _Cells, order: tuple[str, ...]) -> _Columns:
    position_of_code = np.full(len(cells.region_names), -1, dtype=np.int64)
    for position, name in enumerate(order):
        position_of_code[cells.region_codes[name]] = position
    positions = position_of_code[np.asarray(cells.regions, dtype=np.int64)]
    cell = np.flatnonzero(positions >= 0)
    return _Columns(
        times=np.asarray(cells.times, dtype=np.int64)[cell],
        positions=positions[cell],
        values=np.asarray(cells.values, dtype=np.float64)[cell],
        cell=cell,
    )


def _sort_rows(columns: _Columns, cells: _Cells, notes: list[str]) -> _Columns:
    """Sort by region, then time, noting where the input went back in time."""
    by_region = np.argsort(columns.positions, kind="stable")
    times = columns.times[by_region]
    positions = columns.positions[by_region]
    backwards = np.flatnonzero((positions[1:] == positions[:-1]) & (times[1:] < times[:-1]))
    if backwards.size:
        first = int(columns.cell[by_region[backwards + 1]].min())
        notes.append(f"rows were not in time order (first at {cells.location(first)}); sorted them")
    # lexsort is stable, so rows with the same key stay in input order.
    return columns.take(np.lexsort((columns.times, columns.positions)))


def _value_text(value: float) -> str:
    return "empty" if math.isnan(value) else f"{value:.10g}"


def _drop_duplicates(
    columns: _Columns, cells: _Cells, order: tuple[str, ...], notes: list[str]
) -> _Columns:
    same_key = (columns.positions[1:] == columns.positions[:-1]) & (
        columns.times[1:] == columns.times[:-1]
    )
    later = np.flatnonzero(same_key) + 1
    if not later.size:
        return columns
    before = columns.values[later - 1]
    after = columns.values[later]
    equal = (before == after) | (np.isnan(before) & np.isnan(after))
    conflicts = later[~equal]
    if conflicts.size:
        k = int(conflicts[np.argmin(columns.cell[conflicts])])
        first, second = int(columns.cell[k - 1]), int(columns.cell[k])
        region = order[int(columns.positions[k])]
        raise cells.error(
            f"conflicting duplicate: {region} at {format_time(int(columns.times[k]))} is "
            f"{_value_text(columns.values[k - 1])} at {cells.location(first)} and "
            f"{_value_text(columns.values[k])} at {cells.location(second)}; keep one of "
            "the two rows",
            second,
            value=_value_text(columns.values[k]),
        )
    first_repeat = int(columns.cell[later].min())
    count = int(later.size)
    notes.append(
        f"dropped {count} duplicate {'entry' if count == 1 else 'entries'} that repeated "
        f"an earlier timestamp, region and value (first at {cells.location(first_repeat)})"
    )
    keep = np.ones(columns.times.size, dtype=bool)
    keep[later] = False
    return columns.take(keep)


def _infer_step(columns: _Columns, cells: _Cells) -> int:
    """Return the most common interval between consecutive rows of one region,
    after checking that every timestamp lies on the grid it defines."""
    same_region = columns.positions[1:] == columns.positions[:-1]
    intervals = np.diff(columns.times)[same_region]
    if not intervals.size:
        raise cells.error(
            "cannot infer the time step: no region has two distinct timestamps; a trace "
            "needs at least two steps",
            int(columns.cell[0]),
        )
    found, counts = np.unique(intervals, return_counts=True)
    step = int(found[np.argmax(counts)])

    residues = columns.times % step
    found, counts = np.unique(residues, return_counts=True)
    anchor = found[np.argmax(counts)]
    off_grid = np.flatnonzero(residues != anchor)
    if off_grid.size:
        k = int(off_grid[np.argmin(columns.cell[off_grid])])
        stamp = format_time(int(columns.times[k]))
        raise cells.error(
            f"timestamp {stamp} is off the {_duration_text(step)} grid that the other rows "
            f"follow (the step is the most common interval between rows, "
            f"{_duration_text(step)}); every timestamp must be a whole number of steps "
            "from the others, so resample the data to one fixed step",
            int(columns.cell[k]),
            value=stamp,
        )
    return step


@dataclass
class _RegionSeries:
    first: int
    last: int
    values: np.ndarray


def _fill_region(
    columns: _Columns,
    cells: _Cells,
    name: str,
    step: int,
    max_gap_steps: int,
    notes: list[str],
) -> _RegionSeries:
    """Lay one region's sorted rows on its own grid, from its first to its last
    numeric value, interpolating short runs of missing steps."""
    known = ~np.isnan(columns.values)
    if not known.any():
        raise cells.error(f"region {name} has no numeric intensity values", int(columns.cell[0]))
    times = columns.times[known]
    values = columns.values[known]
    cell = columns.cell[known]

    positions = (times - times[0]) // step
    missing_runs = np.diff(positions) - 1
    too_long = np.flatnonzero(missing_runs > max_gap_steps)
    if too_long.size:
        j = int(too_long[0])
        length = int(missing_runs[j])
        gap_start = int(times[j]) + step
        raise cells.error(
            f"region {name} has no value for {_count_steps_text(length, step)} in a row, "
            f"{format_time(gap_start)} to {format_time(gap_start + (length - 1) * step)} "
            f"(absent rows or empty values after this line); only runs of up to "
            f"max_gap_steps={max_gap_steps} steps are filled by linear interpolation. Add "
            f"the missing values, cut the data before the gap, or pass "
            f"max_gap_steps={length} to interpolate across it",
            int(cell[j]),
            value=format_time(gap_start),
        )

    steps = int(positions[-1]) + 1
    grid = np.interp(np.arange(steps, dtype=np.float64), positions.astype(np.float64), values)
    filled = steps - int(positions.size)
    if filled:
        inside = (columns.times > times[0]) & (columns.times < times[-1])
        empty = int(np.count_nonzero(~known & inside))
        gaps = np.flatnonzero(missing_runs > 0)
        notes.append(
            f"filled {_count_steps_text(filled, step, 'missing')} in "
            f"{name} by linear interpolation ({filled - empty} absent rows, {empty} empty "
            f"values; {gaps.size} run(s), the longest {int(missing_runs.max())} steps, "
            f"the first from {format_time(int(times[gaps[0]]) + step)})"
        )
    return _RegionSeries(int(times[0]), int(times[-1]), grid)


def _trim_to_common_span(
    series: list[_RegionSeries], order: tuple[str, ...], step: int, cells: _Cells, notes: list[str]
) -> tuple[int, np.ndarray]:
    first = max(item.first for item in series)
    last = min(item.last for item in series)
    if first > last:
        spans = "; ".join(
            f"{name} {format_time(item.first)} to {format_time(item.last)}"
            for name, item in zip(order, series)
        )
        raise TraceError(
            f"the regions share no time span ({spans}); read files that overlap, or "
            "select regions with regions=",
            path=", ".join(cells.paths),
        )
    steps = (last - first) // step + 1
    rows = []
    dropped = []
    for name, item in zip(order, series):
        lead = (first - item.first) // step
        trail = (item.last - last) // step
        if lead or trail:
            dropped.append(f"{lead} leading and {trail} trailing steps of {name}")
        rows.append(item.values[lead : lead + steps])
    if dropped:
        notes.append(
            f"trimmed every region to the span they all cover, {format_time(first)} to "
            f"{format_time(last)} (last step start): dropped {', '.join(dropped)}"
        )
    return first, np.vstack(rows)


def _note_estimated(
    cells: _Cells,
    columns: _Columns,
    bounds: np.ndarray,
    order: tuple[str, ...],
    span: tuple[int, int],
    notes: list[str],
) -> None:
    if not any(cells.estimated):
        return
    flags = np.asarray(cells.estimated, dtype=bool)[columns.cell]
    inside = (columns.times >= span[0]) & (columns.times < span[1])
    for position, name in enumerate(order):
        lo, hi = bounds[position], bounds[position + 1]
        count = int(np.count_nonzero(flags[lo:hi] & inside[lo:hi]))
        if count:
            notes.append(
                f"{name}: {count} step(s) flagged 'Data Estimated' by Electricity Maps, "
                "kept as published"
            )


def _build_trace(cells: _Cells, order: tuple[str, ...], max_gap_steps: int) -> Trace:
    notes: list[str] = []
    if cells.offsets:
        notes.append(
            f"converted timestamps with UTC offsets {', '.join(sorted(cells.offsets))} to UTC"
        )
    columns = _select_columns(cells, order)
    columns = _sort_rows(columns, cells, notes)
    columns = _drop_duplicates(columns, cells, order, notes)
    step = _infer_step(columns, cells)

    bounds = np.searchsorted(columns.positions, np.arange(len(order) + 1))
    series = [
        _fill_region(
            columns.take(slice(bounds[i], bounds[i + 1])), cells, name, step, max_gap_steps, notes
        )
        for i, name in enumerate(order)
    ]
    start, values = _trim_to_common_span(series, order, step, cells, notes)
    span = (start, start + values.shape[1] * step)
    _note_estimated(cells, columns, bounds, order, span, notes)
    return Trace(order, start, step, values, tuple(notes))


# ---------------------------------------------------------------- writing


def write_trace(trace: Trace, path: PathLike) -> None:
    """Write `trace` in the long layout, sorted by timestamp and then region name,
    with intensities rounded to 2 decimals.

    The file is written next to its destination and renamed into place, so a reader
    never sees half a file.
    """
    rows = sorted(range(len(trace.regions)), key=trace.regions.__getitem__)
    names = [trace.regions[row] for row in rows]
    parts = [",".join(LONG_HEADER) + "\n"]
    moment = trace.start
    for column in trace.values[rows].T.tolist():
        stamp = time.strftime(TIMESTAMP_FORMAT, time.gmtime(moment))
        for name, value in zip(names, column):
            parts.append(f"{stamp},{name},{value:.2f}\n")
        moment += trace.step_seconds

    destination = Path(path)
    # A plain open() rather than tempfile.mkstemp, so the file gets the usual
    # permissions from the umask instead of mkstemp's owner-only 0600.
    temporary = destination.with_name(f".{destination.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8", newline="") as stream:
            stream.write("".join(parts))
        os.replace(temporary, destination)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
