"""Workloads for the replay simulator: read from a file, written back, or generated.

A workload is a `list[Task]` sorted by arrival, then task id. Files come in two
formats with the same fields:

- CSV with the header
  `task_id,arrival,class,cpu,memory,duration,deadline,home_region,allowed_regions`
  (columns in any order; `deadline` and `allowed_regions` may be left out);
- JSON lines (`.jsonl`, `.ndjson` or `.json`), one object per line with those keys.

Field syntax: `arrival` is RFC 3339 with `Z` or an offset. `deadline` is empty (no
deadline), RFC 3339, or a duration counted from arrival (`6h`). `cpu` and `memory`
are Kubernetes quantities (`500m`, `2Gi`). `duration` is a duration (`45m`, `1h30m`)
or whole seconds. `allowed_regions` lists regions separated by `;` (a JSON array
also works in JSON lines); empty means every region. A deferrable task without a
deadline gets `arrival + scheduler.default_deadline_seconds`.

Loading checks every row and raises one WorkloadError that lists every problem with
file, line, column and value. Generation lives in `workload_generator` and is
re-exported here.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from carbon_scheduler.config.errors import format_location
from carbon_scheduler.config.types import Config
from carbon_scheduler.model import PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.policy.durations import DurationError, format_duration, parse_duration
from carbon_scheduler.quantity import QuantityError, milli_value, parse_quantity, value
from carbon_scheduler.replay.workload_generator import (
    DEFAULT_MIX,
    DEFAULT_TASKS_PER_HOUR,
    WorkloadMix,
    generate_workload,
)

__all__ = [
    "COLUMNS",
    "DEFAULT_MIX",
    "DEFAULT_TASKS_PER_HOUR",
    "WorkloadError",
    "WorkloadIssue",
    "WorkloadMix",
    "format_time",
    "generate_workload",
    "load_workload",
    "parse_time",
    "parse_workload",
    "write_workload",
]

COLUMNS = (
    "task_id",
    "arrival",
    "class",
    "cpu",
    "memory",
    "duration",
    "deadline",
    "home_region",
    "allowed_regions",
)
OPTIONAL_COLUMNS = frozenset({"deadline", "allowed_regions"})
REQUIRED_COLUMNS = tuple(column for column in COLUMNS if column not in OPTIONAL_COLUMNS)

WorkloadFormat = Literal["csv", "jsonl"]
JSON_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
STRING_SOURCE = "<string>"

# The message of a WorkloadError lists this many issues; `issues` keeps them all.
MESSAGE_ISSUES_MAX = 50

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt ]"
    r"(?P<time>[0-9]{2}:[0-9]{2}:[0-9]{2})(?P<fraction>\.[0-9]+)?"
    r"(?P<offset>[Zz]|[+-][0-9]{2}:[0-9]{2})?",
    re.ASCII,
)
# A deadline that starts like a date is a time; anything else is a duration.
_LOOKS_LIKE_DATE = re.compile(r"[0-9]{4}-", re.ASCII)
_TIME_EXAMPLE = "2024-03-01T09:30:00Z"
_BINARY_SUFFIXES = (("Ei", 2**60), ("Pi", 2**50), ("Ti", 2**40), ("Gi", 2**30), ("Mi", 2**20), ("Ki", 2**10))


@dataclass(frozen=True, slots=True)
class WorkloadIssue:
    """One problem in a workload file.

    `line` is 1-based and None for a problem with the file as a whole. `where` names
    the field (`column 4 (cpu)` in CSV, `key "cpu"` in JSON lines) and is empty for
    a problem with the whole row. `column` is a character column, given only for
    JSON syntax errors.
    """

    file: str
    line: int | None
    message: str
    where: str = ""
    column: int | None = None

    def __str__(self) -> str:
        location = format_location(self.file, self.line, self.column)
        if self.where:
            return f"{location}: {self.where}: {self.message}"
        return f"{location}: {self.message}"


class WorkloadError(ValueError):
    """An invalid workload file. `issues` contains every problem found, in line order,
    and the message lists the first MESSAGE_ISSUES_MAX of them, one per line."""

    def __init__(self, issues: Iterable[WorkloadIssue]) -> None:
        self.issues = tuple(sorted(issues, key=lambda issue: issue.line or 0))
        lines = [str(issue) for issue in self.issues[:MESSAGE_ISSUES_MAX]]
        hidden = len(self.issues) - MESSAGE_ISSUES_MAX
        if hidden > 0:
            lines.append(f"... and {hidden} more problems")
        super().__init__("\n".join(lines))


# Times.


def parse_time(text: str) -> int:
    """Parse an RFC 3339 time with `Z` or an offset into Unix seconds.

    Raises ValueError for other syntax, a time without offset (the message suggests
    adding `Z`), an impossible date or time, or fractional seconds other than zero.
    """
    stripped = text.strip()
    match = _RFC3339.fullmatch(stripped)
    if match is None:
        raise ValueError(f"invalid RFC 3339 time {json.dumps(text)}; write it like {_TIME_EXAMPLE}")
    if match.group("offset") is None:
        raise ValueError(
            f"time {json.dumps(text)} has no UTC offset; add Z for UTC "
            f"({stripped}Z) or an offset such as +01:00"
        )
    fraction = match.group("fraction")
    if fraction is not None and fraction.strip(".0"):
        raise ValueError(
            f"time {json.dumps(text)} has fractional seconds; times are whole seconds, "
            "so round it"
        )
    offset = match.group("offset").upper()
    normalized = f"{match.group('date')}T{match.group('time')}{offset}"
    try:
        parsed = datetime.fromisoformat(normalized)
    except ValueError as error:
        raise ValueError(f"invalid time {json.dumps(text)}: {error}") from error
    return (parsed - _EPOCH) // timedelta(seconds=1)


def format_time(seconds: int) -> str:
    """Format Unix seconds as RFC 3339 UTC, such as `2024-03-01T09:30:00Z`."""
    return (_EPOCH + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


# Reading.


def load_workload(path: str | os.PathLike[str], config: Config) -> list[Task]:
    """Read a workload file, CSV or JSON lines by its suffix (or by its first
    character when the suffix is neither), and return its tasks sorted by arrival,
    then id. Raises WorkloadError listing every problem found."""
    file = os.fspath(path)
    try:
        data = Path(file).read_bytes()
    except OSError as error:
        reason = error.strerror or str(error)
        raise WorkloadError([WorkloadIssue(file, None, f"cannot read the workload file: {reason}")]) from error
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        message = f"invalid UTF-8 at byte {error.start}; save the file as UTF-8"
        raise WorkloadError([WorkloadIssue(file, line, message)]) from error
    suffix = Path(file).suffix.lower()
    workload_format: WorkloadFormat | None = None
    if suffix in JSON_SUFFIXES:
        workload_format = "jsonl"
    elif suffix == ".csv":
        workload_format = "csv"
    return parse_workload(text, config, source=file, workload_format=workload_format)


def parse_workload(
    text: str,
    config: Config,
    *,
    source: str = STRING_SOURCE,
    workload_format: WorkloadFormat | None = None,
) -> list[Task]:
    """Parse workload text. `source` names it in error messages; `workload_format`
    None means JSON lines when the first non-blank character is `{`, else CSV.
    Raises WorkloadError listing every problem found."""
    if text.startswith("\ufeff"):
        text = text[1:]
    if workload_format is None:
        workload_format = "jsonl" if text.lstrip().startswith("{") else "csv"
    reader = _RowReader(source, config)
    if workload_format == "jsonl":
        rows = _json_rows(text, reader)
    else:
        rows = _csv_rows(text, reader)
    tasks = [task for task in (reader.read_task(row) for row in rows) if task is not None]
    if not reader.issues and not tasks:
        reader.issues.append(
            WorkloadIssue(source, None, "contains no tasks; add one row per task after the header")
        )
    if reader.issues:
        raise WorkloadError(reader.issues)
    tasks.sort(key=lambda task: (task.arrival, task.id))
    return tasks


@dataclass(frozen=True, slots=True)
class _Row:
    """One record of a workload file: field values by column name, where each field
    is, and the line the record starts on."""

    line: int
    values: Mapping[str, object]
    places: Mapping[str, str]


def _csv_rows(text: str, reader: _RowReader) -> Iterator[_Row]:
    records = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    places: dict[str, str] = {}
    while True:
        line = records.line_num + 1
        try:
            record = next(records)
        except StopIteration:
            break
        except csv.Error as error:
            reader.issue(records.line_num or line, f"invalid CSV: {error}; stopped reading here")
            return
        if not record or all(not field.strip() for field in record):
            continue
        if header is None:
            header = [field.strip() for field in record]
            if not _check_header(header, line, reader):
                return
            places = {name: f"column {index} ({name})" for index, name in enumerate(header, 1)}
            continue
        if len(record) != len(header):
            reader.issue(
                line,
                f"has {len(record)} fields but the header has {len(header)}; "
                "quote fields that contain commas",
            )
            continue
        values = {name: field.strip() for name, field in zip(header, record)}
        yield _Row(line, values, places)
    if header is None:
        reader.issue(1, f"is empty; the first line must be the header {','.join(COLUMNS)}")


def _check_header(header: list[str], line: int, reader: _RowReader) -> bool:
    """Report unknown, duplicate and missing columns; return True if rows can be read."""
    valid = True
    seen: set[str] = set()
    for index, name in enumerate(header, 1):
        if name not in COLUMNS:
            reader.issue(
                line,
                f"unknown column {json.dumps(name)}; allowed: {', '.join(COLUMNS)}",
                where=f"column {index}",
            )
            valid = False
        elif name in seen:
            reader.issue(line, f"duplicate column {json.dumps(name)}", where=f"column {index}")
            valid = False
        seen.add(name)
    missing = [name for name in REQUIRED_COLUMNS if name not in seen]
    if missing:
        reader.issue(
            line,
            f"header is missing the required columns {', '.join(missing)}; "
            f"the full header is {','.join(COLUMNS)}",
        )
        valid = False
    return valid


def _json_rows(text: str, reader: _RowReader) -> Iterator[_Row]:
    # Split on "\n" only, so line numbers match editors (str.splitlines also splits
    # on form feeds and Unicode separators).
    for number, raw in enumerate(text.split("\n"), 1):
        line_text = raw.rstrip("\r")
        if not line_text.strip():
            continue
        try:
            record = json.loads(line_text)
        except json.JSONDecodeError as error:
            reader.issue(number, f"invalid JSON: {error.msg}", column=error.colno)
            continue
        except (ValueError, RecursionError) as error:
            # Numbers beyond Python's digit limit and very deep nesting end up here.
            reason = str(error) if isinstance(error, ValueError) else "nested too deeply"
            reader.issue(number, f"invalid JSON: {reason}")
            continue
        if not isinstance(record, dict):
            reader.issue(number, "must be a JSON object with the keys " + ", ".join(COLUMNS))
            continue
        unknown = [key for key in record if key not in COLUMNS]
        for key in unknown:
            reader.issue(
                number,
                f"unknown key; allowed: {', '.join(COLUMNS)}",
                where=f"key {json.dumps(key)}",
            )
        missing = [key for key in REQUIRED_COLUMNS if key not in record]
        if missing:
            reader.issue(number, f"missing required keys {', '.join(missing)}")
        if unknown or missing:
            continue
        places = {key: f"key {json.dumps(key)}" for key in COLUMNS}
        yield _Row(number, record, places)


class _RowReader:
    """Turns rows into tasks, records every problem and remembers task ids."""

    def __init__(self, source: str, config: Config) -> None:
        self.source = source
        self.config = config
        self.issues: list[WorkloadIssue] = []
        self.first_line_of_id: dict[str, int] = {}

    def issue(self, line: int | None, message: str, *, where: str = "", column: int | None = None) -> None:
        self.issues.append(WorkloadIssue(self.source, line, message, where, column))

    def field_issue(self, row: _Row, name: str, message: str) -> None:
        self.issue(row.line, message, where=row.places.get(name, name))

    def read_task(self, row: _Row) -> Task | None:
        issues_before = len(self.issues)
        task_id = self.read_id(row)
        arrival = self.read_time(row, "arrival")
        task_class = self.read_class(row)
        milli_cpu = self.read_quantity(row, "cpu")
        memory = self.read_quantity(row, "memory")
        duration = self.read_duration(row)
        home = self.read_region(row)
        allowed = self.read_allowed_regions(row)
        if len(self.issues) > issues_before:
            return None
        if arrival is None or duration is None or task_class is None:
            return None
        deadline = self.read_deadline(row, arrival, duration, task_class)
        if len(self.issues) > issues_before:
            return None
        return Task(
            id=task_id,
            task_class=task_class,
            arrival=arrival,
            duration=duration,
            home_region=home,
            requirements=_requirements(milli_cpu, memory),
            deadline=deadline,
            allowed_regions=allowed,
        )

    def text(self, row: _Row, name: str) -> str | None:
        """Return a field that must be a string, or None after reporting it."""
        found = row.values.get(name)
        if isinstance(found, str):
            return found.strip()
        self.field_issue(row, name, f"must be a string, got {_render(found)}")
        return None

    def read_id(self, row: _Row) -> str:
        task_id = self.text(row, "task_id")
        if task_id is None:
            return ""
        if not task_id:
            self.field_issue(row, "task_id", "task id must not be empty")
            return ""
        if _has_control_character(task_id):
            self.field_issue(
                row, "task_id", f"task id {_render(task_id)} contains a control character; remove it"
            )
        first = self.first_line_of_id.setdefault(task_id, row.line)
        if first != row.line:
            self.field_issue(
                row, "task_id", f"duplicate task id {json.dumps(task_id)} (first used on line {first})"
            )
        return task_id

    def read_time(self, row: _Row, name: str) -> int | None:
        text = self.text(row, name)
        if text is None:
            return None
        try:
            return parse_time(text)
        except ValueError as error:
            self.field_issue(row, name, str(error))
            return None

    def read_class(self, row: _Row) -> TaskClass | None:
        text = self.text(row, "class")
        if text is None:
            return None
        try:
            return TaskClass(text)
        except ValueError:
            allowed = ", ".join(task_class.value for task_class in TaskClass)
            self.field_issue(row, "class", f"unknown task class {json.dumps(text)}; allowed: {allowed}")
            return None

    def read_quantity(self, row: _Row, name: str) -> int:
        """Read `cpu` in millicores or `memory` in bytes."""
        found = row.values.get(name)
        example = "500m or 2" if name == "cpu" else "512Mi or 2Gi"
        if isinstance(found, bool) or not isinstance(found, (str, int, float)):
            self.field_issue(row, name, f"must be a Kubernetes quantity such as {example}, got {_render(found)}")
            return 0
        text = found.strip() if isinstance(found, str) else found
        try:
            milli, whole = _quantity_amounts(text)
        except QuantityError as error:
            self.field_issue(
                row, name, f"invalid quantity {_render(found)}: {error.reason}; write it like {example}"
            )
            return 0
        if milli < 0:
            self.field_issue(row, name, f"must not be negative, got {_render(found)}")
            return 0
        return milli if name == "cpu" else whole

    def read_duration(self, row: _Row) -> int | None:
        found = row.values.get("duration")
        if isinstance(found, int) and not isinstance(found, bool):
            seconds = found
        elif isinstance(found, str):
            try:
                seconds = parse_duration(found)
            except DurationError as error:
                self.field_issue(row, "duration", str(error))
                return None
        else:
            self.field_issue(
                row, "duration", f"must be a duration such as 45m or whole seconds, got {_render(found)}"
            )
            return None
        if seconds <= 0:
            self.field_issue(row, "duration", f"must be positive, got {_render(found)}")
            return None
        return seconds

    def read_region(self, row: _Row) -> str:
        text = self.text(row, "home_region")
        if text is None:
            return ""
        if text not in self.config.region_names:
            self.field_issue(row, "home_region", self.unknown_region(text))
        return text

    def unknown_region(self, name: str) -> str:
        known = ", ".join(self.config.region_names)
        return f"unknown region {json.dumps(name)}; known regions: {known}"

    def read_allowed_regions(self, row: _Row) -> tuple[str, ...] | None:
        found = row.values.get("allowed_regions")
        if found is None:
            return None
        if isinstance(found, str):
            found = found.strip()
            if not found:
                return None
            names = [part.strip() for part in found.split(";")]
        elif isinstance(found, list) and all(isinstance(name, str) for name in found):
            if not found:
                self.field_issue(
                    row, "allowed_regions", "must not be an empty list; leave it out to allow every region"
                )
                return None
            names = [name.strip() for name in found]
        else:
            self.field_issue(
                row,
                "allowed_regions",
                f"must be region names separated by ';' or a list of names, got {_render(found)}",
            )
            return None
        valid = True
        for name in names:
            if not name:
                self.field_issue(row, "allowed_regions", f"has an empty region name in {_render(found)}")
                valid = False
            elif name not in self.config.region_names:
                self.field_issue(row, "allowed_regions", self.unknown_region(name))
                valid = False
        duplicates = sorted({name for name in names if name and names.count(name) > 1})
        if duplicates:
            self.field_issue(row, "allowed_regions", f"lists {', '.join(duplicates)} more than once")
            valid = False
        return tuple(names) if valid else None

    def read_deadline(self, row: _Row, arrival: int, duration: int, task_class: TaskClass) -> int | None:
        found = row.values.get("deadline")
        if found is None or (isinstance(found, str) and not found.strip()):
            if task_class is not TaskClass.DEFERRABLE:
                return None
            deadline = arrival + self.config.scheduler.default_deadline_seconds
            if deadline < arrival + duration:
                self.field_issue(
                    row,
                    "deadline",
                    f"is empty, so the default deadline of "
                    f"{format_duration(self.config.scheduler.default_deadline_seconds)} after "
                    f"arrival applies, but the task runs {format_duration(duration)}; give a "
                    "deadline that leaves time to finish",
                )
                return None
            return deadline
        if isinstance(found, int) and not isinstance(found, bool):
            found = str(found)
        if not isinstance(found, str):
            self.field_issue(
                row, "deadline", f"must be an RFC 3339 time or a duration after arrival, got {_render(found)}"
            )
            return None
        text = found.strip()
        try:
            if _LOOKS_LIKE_DATE.match(text):
                deadline = parse_time(text)
            else:
                deadline = arrival + parse_duration(text)
        except ValueError as error:
            self.field_issue(row, "deadline", str(error))
            return None
        earliest_end = arrival + duration
        if deadline < earliest_end:
            self.field_issue(
                row,
                "deadline",
                f"infeasible task: deadline {format_time(deadline)} is before arrival + duration "
                f"= {format_time(earliest_end)}, so the task cannot finish in time; move the "
                "deadline later or shorten the duration",
            )
            return None
        return deadline


@lru_cache(maxsize=4096)
def _quantity_amounts(text: str | int | float) -> tuple[int, int]:
    """Return a quantity in thousandths and in whole units, rounded up as Kubernetes
    does. Cached, because a workload repeats a few request sizes many times."""
    quantity = parse_quantity(text)
    return milli_value(quantity), value(quantity)


@lru_cache(maxsize=4096)
def _requirements(milli_cpu: int, memory: int) -> PodRequirements:
    # Workloads reuse a few request sizes, and the frozen objects can be shared.
    return PodRequirements(request=Resources(milli_cpu=milli_cpu, memory=memory))


def _has_control_character(text: str) -> bool:
    # A lone carriage return would end the CSV record, and no control character
    # belongs in an id that logs and pod annotations carry.
    return any(unicodedata.category(char) == "Cc" for char in text)


def _render(found: object) -> str:
    text = json.dumps(found, ensure_ascii=False, default=repr)
    return text if len(text) <= 60 else text[:57] + "..."


# Writing.


def write_workload(tasks: Sequence[Task], path: str | os.PathLike[str]) -> Path:
    """Write tasks as a workload CSV that `load_workload` reads back into equal tasks,
    and return the path.

    Raises ValueError, naming the task, for what the format cannot express: requests
    other than CPU and memory, node selectors or tolerations, an empty allow-list, a
    non-positive duration, or an id that is empty, has surrounding whitespace or
    contains a control character.
    """
    rows = [_csv_row(task) for task in tasks]
    target = Path(path)
    with target.open("w", encoding="utf-8", newline="") as stream:
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return target


def _csv_row(task: Task) -> tuple[str, ...]:
    requirements = task.requirements
    request = requirements.request
    if (
        request.ephemeral_storage
        or request.scalar
        or requirements.node_selector
        or requirements.required_node_terms
        or requirements.tolerations
    ):
        raise ValueError(
            f"task {task.id!r} has requirements beyond CPU and memory requests, "
            "which a workload CSV cannot store"
        )
    if task.allowed_regions is not None and not task.allowed_regions:
        raise ValueError(f"task {task.id!r} has an empty allow-list; use None to allow every region")
    if task.duration <= 0:
        raise ValueError(f"task {task.id!r} has a non-positive duration {task.duration}")
    if not task.id or task.id != task.id.strip():
        raise ValueError(f"task id {task.id!r} is empty or has surrounding whitespace")
    if _has_control_character(task.id):
        raise ValueError(f"task id {task.id!r} contains a control character")
    return (
        task.id,
        format_time(task.arrival),
        task.task_class.value,
        _format_cpu(request.milli_cpu),
        _format_bytes(request.memory),
        format_duration(task.duration),
        "" if task.deadline is None else format_time(task.deadline),
        task.home_region,
        "" if task.allowed_regions is None else ";".join(task.allowed_regions),
    )


def _format_cpu(milli_cpu: int) -> str:
    return str(milli_cpu // 1000) if milli_cpu % 1000 == 0 else f"{milli_cpu}m"


def _format_bytes(amount: int) -> str:
    for suffix, size in _BINARY_SUFFIXES:
        if amount and amount % size == 0:
            return f"{amount // size}{suffix}"
    return str(amount)
