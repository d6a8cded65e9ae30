"""Workload files (CSV and JSON lines), their writer and the seeded generator."""

from __future__ import annotations

import json
import statistics
import time
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_scheduler.config import load_config
from carbon_scheduler.config.types import Config, RegionSpec, SchedulerSettings
from carbon_scheduler.model import Node, PodRequirements, Resources, Task, TaskClass
from carbon_scheduler.replay.workload import (
    COLUMNS,
    MESSAGE_ISSUES_MAX,
    WorkloadError,
    WorkloadMix,
    format_time,
    generate_workload,
    load_workload,
    parse_time,
    parse_workload,
    write_workload,
)

REPO = Path(__file__).resolve().parents[1]
HEADER = ",".join(COLUMNS)
MI = 2**20
GI = 2**30
HOUR = 3600
# 2024-03-01T09:30:00Z
T0 = 1709285400
REGIONS = ("eu-west", "us-east", "asia-east")
CONFIG = Config(SchedulerSettings(), tuple(RegionSpec(name) for name in REGIONS))
DEMO = load_config(REPO / "regions.toml")


def csv_text(*rows: str, header: str = HEADER) -> str:
    return "\n".join((header, *rows)) + "\n"


def parse_csv(*rows: str, config: Config = CONFIG, header: str = HEADER) -> list[Task]:
    return parse_workload(csv_text(*rows, header=header), config, source="w.csv", workload_format="csv")


def csv_errors(*rows: str, config: Config = CONFIG, header: str = HEADER) -> list[str]:
    with pytest.raises(WorkloadError) as caught:
        parse_csv(*rows, config=config, header=header)
    return str(caught.value).split("\n")


def make_task(
    task_id: str = "t1",
    task_class: TaskClass = TaskClass.CRITICAL,
    *,
    arrival: int = T0,
    duration: int = 45 * 60,
    home: str = "eu-west",
    cpu: int = 500,
    memory: int = GI,
    deadline: int | None = None,
    allowed: tuple[str, ...] | None = None,
) -> Task:
    return Task(
        id=task_id,
        task_class=task_class,
        arrival=arrival,
        duration=duration,
        home_region=home,
        requirements=PodRequirements(request=Resources(milli_cpu=cpu, memory=memory)),
        deadline=deadline,
        allowed_regions=allowed,
    )


# Times.


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("2024-03-01T09:30:00Z", T0, id="utc-z"),
        pytest.param("2024-03-01T10:30:00+01:00", T0, id="positive-offset"),
        pytest.param("2024-03-01T04:30:00-05:00", T0, id="negative-offset"),
        pytest.param("2024-03-01t09:30:00z", T0, id="lower-case"),
        pytest.param("2024-03-01 09:30:00Z", T0, id="space-separator"),
        pytest.param("2024-03-01T09:30:00.000Z", T0, id="zero-fraction"),
        pytest.param("1970-01-01T00:00:00Z", 0, id="epoch"),
        pytest.param("1969-12-31T23:59:59Z", -1, id="before-epoch"),
    ],
)
def test_parse_time_valid(text, seconds):
    assert parse_time(text) == seconds


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "2024-03-01T09:30:00",
            'time "2024-03-01T09:30:00" has no UTC offset; add Z for UTC '
            "(2024-03-01T09:30:00Z) or an offset such as +01:00",
            id="naive",
        ),
        pytest.param(
            "2024-03-01",
            'invalid RFC 3339 time "2024-03-01"; write it like 2024-03-01T09:30:00Z',
            id="date-only",
        ),
        pytest.param(
            "1709285400",
            'invalid RFC 3339 time "1709285400"; write it like 2024-03-01T09:30:00Z',
            id="unix-seconds",
        ),
        pytest.param(
            "2024-02-30T00:00:00Z",
            'invalid time "2024-02-30T00:00:00Z": day is out of range for month',
            id="impossible-date",
        ),
        pytest.param(
            "2024-03-01T09:30:00.5Z",
            'time "2024-03-01T09:30:00.5Z" has fractional seconds; times are whole seconds, '
            "so round it",
            id="fraction",
        ),
        pytest.param(
            "2024-03-01T24:00:00Z",
            'invalid time "2024-03-01T24:00:00Z": hour must be in 0..23',
            id="hour-24",
        ),
    ],
)
def test_parse_time_invalid(text, message):
    with pytest.raises(ValueError) as caught:
        parse_time(text)
    assert str(caught.value) == message


@given(st.integers(min_value=-(10**10), max_value=10**11))
def test_format_then_parse_time(seconds):
    assert parse_time(format_time(seconds)) == seconds


# Valid CSV rows.

VALID_ROWS = [
    pytest.param(
        "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,",
        make_task(),
        id="critical-no-deadline",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,standard,2,512Mi,2700,,us-east,",
        make_task(task_class=TaskClass.STANDARD, cpu=2000, memory=512 * MI, home="us-east"),
        id="integer-seconds-duration",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,1h30m,6h,eu-west,",
        make_task(task_class=TaskClass.DEFERRABLE, duration=5400, deadline=T0 + 6 * HOUR),
        id="deadline-as-duration",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,45m,2024-03-02T00:00:00+01:00,eu-west,",
        make_task(task_class=TaskClass.DEFERRABLE, deadline=T0 + 13 * HOUR + 30 * 60),
        id="deadline-as-time-with-offset",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,45m,,eu-west,",
        make_task(task_class=TaskClass.DEFERRABLE, deadline=T0 + 24 * HOUR),
        id="deferrable-default-deadline",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,45m,eu-west,",
        make_task(deadline=T0 + 45 * 60),
        id="deadline-exactly-feasible",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,eu-west;asia-east",
        make_task(allowed=("eu-west", "asia-east")),
        id="allow-list",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west, us-east ; eu-west ",
        make_task(allowed=("us-east", "eu-west")),
        id="allow-list-with-spaces",
    ),
    pytest.param(
        " t1 , 2024-03-01T10:30:00+01:00 , critical , 0.5 , 1073741824 , 45m , , eu-west , ",
        make_task(),
        id="spaces-offset-plain-numbers",
    ),
    pytest.param(
        '"t1",2024-03-01T09:30:00Z,critical,"500m","1Gi",45m,"",eu-west,""',
        make_task(),
        id="quoted-fields",
    ),
    pytest.param(
        "t1,2024-03-01T09:30:00Z,critical,0,0,1s,,eu-west,",
        make_task(cpu=0, memory=0, duration=1),
        id="zero-requests",
    ),
]


@pytest.mark.parametrize(("row", "expected"), VALID_ROWS)
def test_valid_csv_row(row, expected):
    assert parse_csv(row) == [expected]


def test_csv_column_order_and_optional():
    header = "home_region,class,task_id,duration,memory,cpu,arrival"
    tasks = parse_csv("eu-west,critical,t1,45m,1Gi,500m,2024-03-01T09:30:00Z", header=header)
    assert tasks == [make_task()]


def test_blank_lines_and_bom_are_ignored():
    text = "\ufeff" + HEADER + "\n\n" + "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,\n\n"
    assert parse_workload(text, CONFIG) == [make_task()]


def test_crlf_line_endings():
    text = HEADER + "\r\n" + "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,\r\n"
    assert parse_workload(text, CONFIG) == [make_task()]


def test_tasks_sorted_by_arrival_then_id():
    tasks = parse_csv(
        "b,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,",
        "c,2024-03-01T08:00:00Z,critical,500m,1Gi,45m,,eu-west,",
        "a,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,",
    )
    assert [task.id for task in tasks] == ["c", "a", "b"]


def test_default_deadline_follows_config():
    config = Config(SchedulerSettings(default_deadline_seconds=8 * HOUR), CONFIG.regions)
    (task,) = parse_csv("t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,45m,,eu-west,", config=config)
    assert task.deadline == T0 + 8 * HOUR


# Broken CSV rows: each case gives the whole message.

ROW = "t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,"

BROKEN_ROWS = [
    pytest.param(
        ["t1,2024-03-01T09:30:00,critical,500m,1Gi,45m,,eu-west,"],
        [
            'w.csv:2: column 2 (arrival): time "2024-03-01T09:30:00" has no UTC offset; add Z '
            "for UTC (2024-03-01T09:30:00Z) or an offset such as +01:00"
        ],
        id="naive-arrival",
    ),
    pytest.param(
        ["t1,,critical,500m,1Gi,45m,,eu-west,"],
        ['w.csv:2: column 2 (arrival): invalid RFC 3339 time ""; write it like 2024-03-01T09:30:00Z'],
        id="empty-arrival",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,batch,500m,1Gi,45m,,eu-west,"],
        ['w.csv:2: column 3 (class): unknown task class "batch"; allowed: critical, standard, deferrable'],
        id="unknown-class",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,Critical,500m,1Gi,45m,,eu-west,"],
        [
            'w.csv:2: column 3 (class): unknown task class "Critical"; allowed: critical, '
            "standard, deferrable"
        ],
        id="class-is-case-sensitive",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,-1Gi,45m,,eu-west,"],
        ['w.csv:2: column 5 (memory): must not be negative, got "-1Gi"'],
        id="negative-memory",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,5x,,eu-west,"],
        [
            "w.csv:2: column 6 (duration): invalid duration '5x': unknown unit 'x'; units are "
            "d, h, m and s (for example 90s, 45m, 2h, 1h30m, 1d or 3600)"
        ],
        id="bad-duration",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,0s,,eu-west,"],
        ['w.csv:2: column 6 (duration): must be positive, got "0s"'],
        id="zero-duration",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,,,eu-west,"],
        [
            "w.csv:2: column 6 (duration): invalid duration '': empty; write for example 90s, "
            "45m, 2h, 1h30m, 1d or 3600"
        ],
        id="empty-duration",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,2h,2024-03-01T11:00:00Z,eu-west,"],
        [
            "w.csv:2: column 7 (deadline): infeasible task: deadline 2024-03-01T11:00:00Z is "
            "before arrival + duration = 2024-03-01T11:30:00Z, so the task cannot finish in "
            "time; move the deadline later or shorten the duration"
        ],
        id="infeasible-deadline-time",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,45m,30m,eu-west,"],
        [
            "w.csv:2: column 7 (deadline): infeasible task: deadline 2024-03-01T10:00:00Z is "
            "before arrival + duration = 2024-03-01T10:15:00Z, so the task cannot finish in "
            "time; move the deadline later or shorten the duration"
        ],
        id="infeasible-deadline-duration",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,45m,2024-03-01T10:30:00,eu-west,"],
        [
            'w.csv:2: column 7 (deadline): time "2024-03-01T10:30:00" has no UTC offset; add Z '
            "for UTC (2024-03-01T10:30:00Z) or an offset such as +01:00"
        ],
        id="naive-deadline",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,45m,soon,eu-west,"],
        [
            "w.csv:2: column 7 (deadline): invalid duration 'soon': expected a number at 'soon'; "
            "write for example 90s, 45m, 2h, 1h30m, 1d or 3600"
        ],
        id="deadline-neither-time-nor-duration",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,deferrable,500m,1Gi,25h,,eu-west,"],
        [
            "w.csv:2: column 7 (deadline): is empty, so the default deadline of 24h after "
            "arrival applies, but the task runs 25h; give a deadline that leaves time to finish"
        ],
        id="deferrable-longer-than-default-deadline",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-central,"],
        [
            'w.csv:2: column 8 (home_region): unknown region "eu-central"; known regions: '
            "eu-west, us-east, asia-east"
        ],
        id="unknown-home-region",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,eu-west;;mars;eu-west"],
        [
            'w.csv:2: column 9 (allowed_regions): has an empty region name in "eu-west;;mars;eu-west"',
            'w.csv:2: column 9 (allowed_regions): unknown region "mars"; known regions: eu-west, '
            "us-east, asia-east",
            "w.csv:2: column 9 (allowed_regions): lists eu-west more than once",
        ],
        id="bad-allow-list",
    ),
    pytest.param(
        [ROW, "t2,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,", ROW],
        ['w.csv:4: column 1 (task_id): duplicate task id "t1" (first used on line 2)'],
        id="duplicate-id",
    ),
    pytest.param(
        [",2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,"],
        ["w.csv:2: column 1 (task_id): task id must not be empty"],
        id="empty-id",
    ),
    pytest.param(
        ['"t\x071",2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,'],
        ['w.csv:2: column 1 (task_id): task id "t\\u00071" contains a control character; remove it'],
        id="control-character-in-id",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west"],
        ["w.csv:2: has 8 fields but the header has 9; quote fields that contain commas"],
        id="missing-field",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,,extra"],
        ["w.csv:2: has 10 fields but the header has 9; quote fields that contain commas"],
        id="extra-field",
    ),
    pytest.param(
        ['t1,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,eu-west,"eu-west'],
        ["w.csv:2: invalid CSV: unexpected end of data; stopped reading here"],
        id="unterminated-quote",
    ),
    pytest.param(
        [
            "t1,2024-03-01T09:30:00,critical,500m,1Gi,45m,,eu-west,",
            "t2,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,nowhere,",
        ],
        [
            'w.csv:2: column 2 (arrival): time "2024-03-01T09:30:00" has no UTC offset; add Z '
            "for UTC (2024-03-01T09:30:00Z) or an offset such as +01:00",
            'w.csv:3: column 8 (home_region): unknown region "nowhere"; known regions: eu-west, '
            "us-east, asia-east",
        ],
        id="errors-of-several-rows",
    ),
    pytest.param(
        ["t1,2024-03-01T09:30:00,batch,500m,1Gi,-5m,,mars,"],
        [
            'w.csv:2: column 2 (arrival): time "2024-03-01T09:30:00" has no UTC offset; add Z '
            "for UTC (2024-03-01T09:30:00Z) or an offset such as +01:00",
            'w.csv:2: column 3 (class): unknown task class "batch"; allowed: critical, standard, '
            "deferrable",
            "w.csv:2: column 6 (duration): invalid duration '-5m': must not be negative; write a "
            "positive amount (for example 90s, 45m, 2h, 1h30m, 1d or 3600)",
            'w.csv:2: column 8 (home_region): unknown region "mars"; known regions: eu-west, '
            "us-east, asia-east",
        ],
        id="errors-of-several-fields",
    ),
]


@pytest.mark.parametrize(("rows", "expected"), BROKEN_ROWS)
def test_broken_csv_rows(rows, expected):
    assert csv_errors(*rows) == expected


def test_invalid_cpu_quantity_names_value_and_fix():
    (line,) = csv_errors("t1,2024-03-01T09:30:00Z,critical,two,1Gi,45m,,eu-west,")
    assert line.startswith('w.csv:2: column 4 (cpu): invalid quantity "two": ')
    assert line.endswith("; write it like 500m or 2")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param(
            HEADER.replace("cpu", "cpus"),
            [
                'w.csv:1: column 4: unknown column "cpus"; allowed: task_id, arrival, class, cpu, '
                "memory, duration, deadline, home_region, allowed_regions",
                "w.csv:1: header is missing the required columns cpu; the full header is " + HEADER,
            ],
            id="unknown-column",
        ),
        pytest.param(
            HEADER + ",cpu",
            ['w.csv:1: column 10: duplicate column "cpu"'],
            id="duplicate-column",
        ),
        pytest.param(
            "task_id,arrival,class",
            [
                "w.csv:1: header is missing the required columns cpu, memory, duration, home_region; "
                "the full header is " + HEADER
            ],
            id="missing-columns",
        ),
    ],
)
def test_broken_header(header, expected):
    assert csv_errors(ROW, header=header) == expected


def test_empty_file():
    with pytest.raises(WorkloadError) as caught:
        parse_workload("", CONFIG, source="w.csv", workload_format="csv")
    assert str(caught.value) == "w.csv:1: is empty; the first line must be the header " + HEADER


def test_header_without_rows():
    with pytest.raises(WorkloadError) as caught:
        parse_workload(HEADER + "\n", CONFIG, source="w.csv")
    assert str(caught.value) == "w.csv: contains no tasks; add one row per task after the header"


def test_message_lists_first_issues_and_counts_the_rest():
    rows = [f"t{i},2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,mars," for i in range(60)]
    with pytest.raises(WorkloadError) as caught:
        parse_csv(*rows)
    assert len(caught.value.issues) == 60
    lines = str(caught.value).split("\n")
    assert len(lines) == MESSAGE_ISSUES_MAX + 1
    assert lines[-1] == "... and 10 more problems"
    assert lines[0].startswith("w.csv:2: column 8 (home_region)")


def test_workload_error_is_value_error():
    assert issubclass(WorkloadError, ValueError)


# JSON lines.


def json_line(**fields) -> str:
    record = {
        "task_id": "t1",
        "arrival": "2024-03-01T09:30:00Z",
        "class": "critical",
        "cpu": "500m",
        "memory": "1Gi",
        "duration": "45m",
        "home_region": "eu-west",
    }
    record.update(fields)
    return json.dumps({key: value for key, value in record.items() if value is not ...})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        pytest.param(json_line(), make_task(), id="minimal"),
        pytest.param(json_line(cpu=0.5, memory=GI, duration=2700), make_task(), id="numbers"),
        pytest.param(json_line(deadline=None, allowed_regions=None), make_task(), id="nulls"),
        pytest.param(
            json_line(allowed_regions=["us-east", "eu-west"]),
            make_task(allowed=("us-east", "eu-west")),
            id="allow-list-array",
        ),
        pytest.param(
            json_line(allowed_regions="us-east;eu-west"),
            make_task(allowed=("us-east", "eu-west")),
            id="allow-list-string",
        ),
        pytest.param(
            json_line(**{"class": "deferrable", "deadline": "6h"}),
            make_task(task_class=TaskClass.DEFERRABLE, deadline=T0 + 6 * HOUR),
            id="deadline-duration",
        ),
        pytest.param(
            json_line(deadline=7200),
            make_task(deadline=T0 + 7200),
            id="deadline-integer-seconds",
        ),
    ],
)
def test_valid_json_line(line, expected):
    assert parse_workload(line, CONFIG, source="w.jsonl", workload_format="jsonl") == [expected]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            '{"task_id": "t1",',
            ["w.jsonl:1:18: invalid JSON: Expecting property name enclosed in double quotes"],
            id="syntax",
        ),
        pytest.param(
            '["t1"]',
            [
                "w.jsonl:1: must be a JSON object with the keys task_id, arrival, class, cpu, "
                "memory, duration, deadline, home_region, allowed_regions"
            ],
            id="not-object",
        ),
        pytest.param(
            json_line(priority=3),
            [
                'w.jsonl:1: key "priority": unknown key; allowed: task_id, arrival, class, cpu, '
                "memory, duration, deadline, home_region, allowed_regions"
            ],
            id="unknown-key",
        ),
        pytest.param(
            json_line(cpu=..., memory=...),
            ["w.jsonl:1: missing required keys cpu, memory"],
            id="missing-keys",
        ),
        pytest.param(
            json_line(task_id=7, cpu=True, duration=1.5),
            [
                'w.jsonl:1: key "task_id": must be a string, got 7',
                'w.jsonl:1: key "cpu": must be a Kubernetes quantity such as 500m or 2, got true',
                'w.jsonl:1: key "duration": must be a duration such as 45m or whole seconds, got 1.5',
            ],
            id="wrong-types",
        ),
        pytest.param(
            json_line(allowed_regions=[]),
            [
                'w.jsonl:1: key "allowed_regions": must not be an empty list; leave it out to '
                "allow every region"
            ],
            id="empty-allow-list",
        ),
        pytest.param(
            json_line(deadline=False),
            [
                'w.jsonl:1: key "deadline": must be an RFC 3339 time or a duration after arrival, '
                "got false"
            ],
            id="deadline-boolean",
        ),
        pytest.param(
            json_line() + "\n\n" + json_line(task_id="t1"),
            ['w.jsonl:3: key "task_id": duplicate task id "t1" (first used on line 1)'],
            id="duplicate-id-line-numbers",
        ),
    ],
)
def test_broken_json_lines(text, expected):
    with pytest.raises(WorkloadError) as caught:
        parse_workload(text, CONFIG, source="w.jsonl", workload_format="jsonl")
    assert str(caught.value).split("\n") == expected


def test_format_detected_from_content():
    assert parse_workload(json_line(), CONFIG) == [make_task()]
    assert parse_workload(csv_text(ROW), CONFIG) == [make_task()]


# Files.


def test_load_csv_and_jsonl_files(tmp_path):
    csv_file = tmp_path / "tasks.csv"
    csv_file.write_text(csv_text(ROW), encoding="utf-8")
    json_file = tmp_path / "tasks.jsonl"
    json_file.write_text(json_line() + "\n", encoding="utf-8")
    assert load_workload(csv_file, CONFIG) == [make_task()]
    assert load_workload(json_file, CONFIG) == [make_task()]


def test_load_reports_file_name_and_line(tmp_path):
    file = tmp_path / "tasks.csv"
    file.write_text(csv_text(ROW, "t2,2024-03-01T09:30:00Z,critical,500m,1Gi,45m,,mars,"), encoding="utf-8")
    with pytest.raises(WorkloadError) as caught:
        load_workload(file, CONFIG)
    assert str(caught.value) == (
        f'{file}:3: column 8 (home_region): unknown region "mars"; known regions: eu-west, '
        "us-east, asia-east"
    )


def test_load_missing_file(tmp_path):
    file = tmp_path / "none.csv"
    with pytest.raises(WorkloadError) as caught:
        load_workload(file, CONFIG)
    assert str(caught.value) == f"{file}: cannot read the workload file: No such file or directory"


def test_load_invalid_utf8(tmp_path):
    file = tmp_path / "tasks.csv"
    file.write_bytes(HEADER.encode() + b"\nt\xff1\n")
    with pytest.raises(WorkloadError) as caught:
        load_workload(file, CONFIG)
    assert str(caught.value) == f"{file}:2: invalid UTF-8 at byte {len(HEADER) + 2}; save the file as UTF-8"


# Writing and reading back.


def test_write_then_load_round_trip(tmp_path):
    tasks = [
        make_task("a"),
        make_task("b,with comma", TaskClass.DEFERRABLE, arrival=T0 + 1, deadline=T0 + 9 * HOUR),
        make_task('c "quoted"', TaskClass.STANDARD, arrival=T0 + 2, cpu=1250, memory=1536 * MI + 1, duration=61),
        make_task("d", allowed=("asia-east",), home="us-east", arrival=T0 + 3),
    ]
    path = write_workload(tasks, tmp_path / "w.csv")
    assert load_workload(path, CONFIG) == tasks


def test_written_csv_is_readable_text(tmp_path):
    task = make_task(
        "a", TaskClass.DEFERRABLE, duration=5400, deadline=T0 + 6 * HOUR, allowed=("eu-west", "us-east")
    )
    tasks = [task]
    path = write_workload(tasks, tmp_path / "w.csv")
    assert path.read_text(encoding="utf-8") == (
        HEADER + "\n"
        "a,2024-03-01T09:30:00Z,deferrable,500m,1Gi,1h30m,2024-03-01T15:30:00Z,eu-west,eu-west;us-east\n"
    )


@pytest.mark.parametrize(
    ("task", "message"),
    [
        pytest.param(
            replace(make_task(), requirements=PodRequirements(request=Resources(ephemeral_storage=1))),
            "task 't1' has requirements beyond CPU and memory requests",
            id="ephemeral-storage",
        ),
        pytest.param(
            replace(make_task(), requirements=PodRequirements(node_selector={"a": "b"})),
            "task 't1' has requirements beyond CPU and memory requests",
            id="node-selector",
        ),
        pytest.param(make_task(allowed=()), "task 't1' has an empty allow-list", id="empty-allow-list"),
        pytest.param(make_task(duration=0), "task 't1' has a non-positive duration 0", id="zero-duration"),
        pytest.param(make_task(" t1"), "task id ' t1' is empty or has surrounding whitespace", id="space-id"),
        pytest.param(make_task("t\r1"), "task id 't\\r1' contains a control character", id="control-character"),
    ],
)
def test_write_rejects_what_csv_cannot_hold(tmp_path, task, message):
    with pytest.raises(ValueError) as caught:
        write_workload([task], tmp_path / "w.csv")
    assert message in str(caught.value)


TASK_IDS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=12
).filter(lambda text: text == text.strip())


@st.composite
def tasks_strategy(draw):
    count = draw(st.integers(min_value=1, max_value=8))
    ids = draw(st.lists(TASK_IDS, min_size=count, max_size=count, unique=True))
    tasks = []
    for task_id in ids:
        arrival = draw(st.integers(min_value=0, max_value=4_000_000_000))
        duration = draw(st.integers(min_value=1, max_value=10 * 86400))
        task_class = draw(st.sampled_from(TaskClass))
        slack = draw(st.integers(min_value=0, max_value=3 * 86400))
        deadline = arrival + duration + slack
        if task_class is not TaskClass.DEFERRABLE and draw(st.booleans()):
            deadline = None
        allowed = draw(st.none() | st.lists(st.sampled_from(REGIONS), min_size=1, max_size=3, unique=True).map(tuple))
        tasks.append(
            make_task(
                task_id,
                task_class,
                arrival=arrival,
                duration=duration,
                home=draw(st.sampled_from(REGIONS)),
                cpu=draw(st.integers(min_value=0, max_value=10**7)),
                memory=draw(st.integers(min_value=0, max_value=2**50)),
                deadline=deadline,
                allowed=allowed,
            )
        )
    return sorted(tasks, key=lambda task: (task.arrival, task.id))


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tasks=tasks_strategy())
def test_round_trip_arbitrary_tasks(tmp_path, tasks):
    path = write_workload(tasks, tmp_path / "w.csv")
    assert load_workload(path, CONFIG) == tasks


@given(
    hours=st.integers(min_value=0, max_value=100),
    minutes=st.integers(min_value=0, max_value=59),
    seconds=st.integers(min_value=0, max_value=59),
)
def test_duration_field_accepts_go_style(hours, minutes, seconds):
    total = hours * 3600 + minutes * 60 + seconds
    text = f"{hours}h{minutes}m{seconds}s"
    if total == 0:
        return
    (task,) = parse_csv(f"t1,2024-03-01T09:30:00Z,critical,500m,1Gi,{text},,eu-west,")
    assert task.duration == total


@settings(max_examples=300)
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_workload_error(text):
    for workload_format in ("csv", "jsonl"):
        try:
            tasks = parse_workload(text, CONFIG, source="w", workload_format=workload_format)
        except WorkloadError as error:
            assert error.issues
        else:
            assert tasks


CELLS = st.one_of(
    st.sampled_from(
        [
            "", "t1", "2024-03-01T09:30:00Z", "2024-03-01T09:30:00", "critical", "deferrable",
            "500m", "1Gi", "45m", "6h", "eu-west", "mars", "eu-west;us-east", ";", "-1", '"',
        ]
    ),
    st.text(max_size=8),
)


@settings(max_examples=300)
@given(st.lists(st.lists(CELLS, min_size=0, max_size=10), max_size=6))
def test_csv_like_rows_raise_only_workload_error(rows):
    text = csv_text(*(",".join(row) for row in rows))
    try:
        tasks = parse_workload(text, CONFIG, source="w", workload_format="csv")
    except WorkloadError as error:
        assert all(issue.line is None or issue.line >= 1 for issue in error.issues)
    else:
        assert all(task.deadline is None or task.deadline >= task.arrival + task.duration for task in tasks)


# The generator.

START = int(datetime(2023, 1, 2, tzinfo=UTC).timestamp())
WEEK = 7 * 86400


def test_generator_is_deterministic():
    first = generate_workload(DEMO, start=START, end=START + WEEK, seed=42)
    again = generate_workload(DEMO, start=START, end=START + WEEK, seed=42)
    other = generate_workload(DEMO, start=START, end=START + WEEK, seed=43)
    assert first == again
    assert first != other
    assert len(first) > 0


def test_generator_accepts_aware_datetimes():
    begin = datetime(2023, 1, 2, 1, tzinfo=timezone(timedelta(hours=1)))
    from_datetimes = generate_workload(DEMO, start=begin, end=begin + timedelta(days=2), seed=5)
    from_ints = generate_workload(DEMO, start=START, end=START + 2 * 86400, seed=5)
    assert from_datetimes == from_ints


@pytest.fixture(scope="module")
def big_workload():
    # About 100,000 tasks: the default 8 per hour for 12,500 hours.
    end = START + 12_500 * HOUR
    begun = time.perf_counter()
    tasks = generate_workload(DEMO, start=START, end=end, seed=7)
    elapsed = time.perf_counter() - begun
    return tasks, end, elapsed


def test_generator_fast_for_100k_tasks(big_workload):
    tasks, _, elapsed = big_workload
    assert 98_000 < len(tasks) < 102_000
    assert elapsed < 2.0


def test_generator_arrivals_sorted_in_span(big_workload):
    tasks, end, _ = big_workload
    keys = [(task.arrival, task.id) for task in tasks]
    assert keys == sorted(keys)
    assert tasks[0].arrival >= START
    assert tasks[-1].arrival < end
    assert len({task.id for task in tasks}) == len(tasks)
    assert tasks[0].id == "task-000001"


def test_generator_class_shares(big_workload):
    tasks, _, _ = big_workload
    counts = Counter(task.task_class for task in tasks)
    total = len(tasks)
    assert counts[TaskClass.CRITICAL] / total == pytest.approx(0.2, abs=0.01)
    assert counts[TaskClass.STANDARD] / total == pytest.approx(0.4, abs=0.01)
    assert counts[TaskClass.DEFERRABLE] / total == pytest.approx(0.4, abs=0.01)


def test_generator_home_regions_uniform(big_workload):
    tasks, _, _ = big_workload
    counts = Counter(task.home_region for task in tasks)
    assert set(counts) == set(REGIONS)
    for region in REGIONS:
        assert counts[region] / len(tasks) == pytest.approx(1 / 3, abs=0.01)


def test_generator_requests(big_workload):
    tasks, _, _ = big_workload
    cpus = Counter(task.requirements.request.milli_cpu for task in tasks)
    memories = Counter(task.requirements.request.memory for task in tasks)
    total = len(tasks)
    for milli_cpu, share in zip((250, 500, 1000, 2000), (0.3, 0.35, 0.25, 0.1)):
        assert cpus[milli_cpu] / total == pytest.approx(share, abs=0.01)
    assert set(cpus) == {250, 500, 1000, 2000}
    assert set(memories) == {256 * MI, 512 * MI, GI, 2 * GI, 4 * GI}


def test_generator_durations(big_workload):
    tasks, _, _ = big_workload
    durations = [task.duration for task in tasks]
    assert min(durations) >= 300
    assert max(durations) <= 4 * HOUR
    assert all(duration % 60 == 0 for duration in durations)
    assert statistics.median(durations) == pytest.approx(2400, rel=0.03)
    assert 30 * 60 <= statistics.mean(durations) <= 60 * 60


def test_generator_deadlines_feasible(big_workload):
    tasks, _, _ = big_workload
    for task in tasks:
        if task.task_class is TaskClass.DEFERRABLE:
            assert task.deadline is not None
            assert task.deadline >= task.arrival + task.duration + HOUR
            assert 6 * HOUR <= task.deadline - task.arrival <= 24 * HOUR
        else:
            assert task.deadline is None


def test_generator_residency(big_workload):
    tasks, _, _ = big_workload
    restricted = [task for task in tasks if task.allowed_regions is not None]
    assert len(restricted) / len(tasks) == pytest.approx(0.1, abs=0.01)
    sizes = Counter(len(task.allowed_regions) for task in restricted)
    assert set(sizes) == {1, 2}
    assert sizes[1] / len(restricted) == pytest.approx(0.5, abs=0.03)
    for task in restricted:
        assert task.home_region in task.allowed_regions
        assert list(task.allowed_regions) == sorted(task.allowed_regions, key=REGIONS.index)


def test_generator_rate_and_business_hours(big_workload):
    tasks, end, _ = big_workload
    hours = (end - START) / HOUR
    assert len(tasks) / hours == pytest.approx(8.0, rel=0.02)
    arrival_hours = np.array([task.arrival for task in tasks]) // HOUR % 24
    busy = np.count_nonzero((arrival_hours >= 9) & (arrival_hours < 17))
    # Business hours are 8 of 24 hours at twice the rate: 16 of 32 rate-hours.
    assert busy / len(tasks) == pytest.approx(0.5, abs=0.01)


def test_generated_workload_round_trips(tmp_path):
    tasks = generate_workload(DEMO, start=START, end=START + WEEK, seed=3)
    path = write_workload(tasks, tmp_path / "generated.csv")
    assert load_workload(path, DEMO) == tasks


def test_generator_custom_mix():
    mix = WorkloadMix(
        critical_share=0.0,
        standard_share=0.0,
        deferrable_share=1.0,
        residency_share=1.0,
        residency_max_regions=1,
    )
    tasks = generate_workload(DEMO, start=START, end=START + WEEK, seed=1, tasks_per_hour=5, mix=mix)
    assert tasks
    assert all(task.task_class is TaskClass.DEFERRABLE for task in tasks)
    assert all(task.allowed_regions == (task.home_region,) for task in tasks)


def test_generator_zero_rate_gives_no_tasks():
    assert generate_workload(DEMO, start=START, end=START + WEEK, seed=1, tasks_per_hour=0) == []


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        pytest.param({"end": START}, "end (1672617600) must be after start (1672617600)", id="empty-span"),
        pytest.param({"tasks_per_hour": -1.0}, "tasks_per_hour must be a finite number >= 0", id="negative-rate"),
        pytest.param({"seed": -1}, "seed must be a non-negative integer", id="negative-seed"),
        pytest.param({"start": datetime(2023, 1, 1)}, "start must be timezone-aware", id="naive-datetime"),
    ],
)
def test_generator_rejects_arguments(arguments, message):
    options = {"start": START, "end": START + WEEK, "seed": 1, **arguments}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        generate_workload(DEMO, **options)


def test_generator_rejects_requests_larger_than_every_node():
    small = RegionSpec("eu-west", nodes=(Node("n", Resources(milli_cpu=1000, memory=8 * GI)),))
    config = Config(SchedulerSettings(), (small,))
    with pytest.raises(ValueError, match="requests up to 2000m CPU but the largest node has 1000m"):
        generate_workload(config, start=START, end=START + WEEK, seed=1)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        pytest.param({"critical_share": 0.5}, "class shares must sum to 1, got 1.3", id="class-sum"),
        pytest.param(
            {"cpu_shares": (0.5, 0.5)},
            "cpu_shares must have one entry per cpu_millicores entry",
            id="cpu-lengths",
        ),
        pytest.param({"business_hours_utc": (17, 9)}, "business_hours_utc must satisfy", id="hours-reversed"),
        pytest.param({"duration_median_seconds": 100}, "durations must satisfy", id="median-below-min"),
        pytest.param({"residency_share": 1.5}, "residency_share must be from 0 to 1", id="residency-share"),
        pytest.param({"deadline_min_seconds": 0}, "deadlines must satisfy", id="deadline-min"),
    ],
)
def test_workload_mix_validation(fields, message):
    with pytest.raises(ValueError, match="invalid workload mix: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        WorkloadMix(**fields)
