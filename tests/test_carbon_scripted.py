"""Scripted demo source: the schedule parser and the level cycle under a fake clock."""

from __future__ import annotations

import textwrap

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_scheduler.carbon.scripted import (
    DEFAULT_LEVELS,
    Schedule,
    ScheduleError,
    ScriptedSource,
    load_schedule,
    parse_schedule,
)
from carbon_scheduler.store.base import Sample
from tests.carbon_mock import FakeClock

DEMO = """\
[levels]
low = 80
high = 450

[[steps]]
seconds = 20
eu-west = "low"
us-east = "high"

[[steps]]
seconds = 10
eu-west = "high"
asia-east = 333.5

[[steps]]
seconds = 15
us-east = "medium"
"""


def parse(text: str) -> Schedule:
    return parse_schedule(textwrap.dedent(text), "demo.toml")


def test_schedule_levels_and_carry_forward():
    schedule = parse(DEMO)
    assert schedule.regions == ("eu-west", "us-east", "asia-east")
    assert dict(schedule.levels) == {"low": 80.0, "medium": 300.0, "high": 450.0}
    assert schedule.cycle_seconds == 45.0
    assert [step.seconds for step in schedule.steps] == [20.0, 10.0, 15.0]
    # asia-east is named only in step 2, so steps 3 and 1 (round the cycle) keep its value.
    assert [dict(step.intensities) for step in schedule.steps] == [
        {"eu-west": 80.0, "us-east": 450.0, "asia-east": 333.5},
        {"eu-west": 450.0, "us-east": 450.0, "asia-east": 333.5},
        {"eu-west": 450.0, "us-east": 300.0, "asia-east": 333.5},
    ]


def test_default_levels_apply_without_table():
    schedule = parse('[[steps]]\nseconds = 5\neu-west = "medium"\n')
    assert dict(schedule.levels) == dict(DEFAULT_LEVELS)
    assert schedule.steps[0].intensities["eu-west"] == 300.0


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("offset", "time", "value"),
    [
        pytest.param(0.0, 1000, 80.0, id="first-step"),
        pytest.param(19.9, 1000, 80.0, id="end-of-first-step"),
        pytest.param(20.0, 1020, 450.0, id="second-step"),
        pytest.param(44.0, 1030, 450.0, id="third-step-carried"),
        pytest.param(45.0, 1045, 80.0, id="next-cycle"),
        pytest.param(-1.0, 985, 450.0, id="before-start"),
    ],
)
async def test_cycle_under_fake_clock(offset, time, value):
    clock = FakeClock(1000.0 + offset)
    source = ScriptedSource(region="eu-west", schedule=parse(DEMO), clock=clock, started_at=1000.0)
    assert await source.latest() == Sample("eu-west", time, value, "scripted")


@pytest.mark.asyncio
async def test_levels_cycle_per_region():
    clock = FakeClock(0.0)
    schedule = parse(DEMO)
    sources = {
        region: ScriptedSource(region=region, schedule=schedule, clock=clock, started_at=0.0)
        for region in schedule.regions
    }
    seen = []
    for _ in range(4):
        seen.append(
            {
                region: (await source.latest()).intensity_g_per_kwh
                for region, source in sources.items()
            }
        )
        clock.advance(15)
    # Seconds 0 and 15 fall in step 1, second 30 in step 3, second 45 starts a new cycle.
    assert seen == [
        {"eu-west": 80.0, "us-east": 450.0, "asia-east": 333.5},
        {"eu-west": 80.0, "us-east": 450.0, "asia-east": 333.5},
        {"eu-west": 450.0, "us-east": 300.0, "asia-east": 333.5},
        {"eu-west": 80.0, "us-east": 450.0, "asia-east": 333.5},
    ]


@pytest.mark.asyncio
async def test_history_lists_step_starts():
    clock = FakeClock(1100.0)
    source = ScriptedSource(region="us-east", schedule=parse(DEMO), clock=clock, started_at=1000.0)
    samples = await source.history(1000, 1091)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (1000, 450.0),
        (1020, 450.0),
        (1030, 300.0),
        (1045, 450.0),
        (1065, 450.0),
        (1075, 300.0),
        (1090, 450.0),
    ]
    clock.now = 1021.0
    # Cycles before the start began at 955 and 910; steps start 0, 20 and 30 s into each.
    assert [s.time for s in await source.history(900, 2000)] == [
        910,
        930,
        940,
        955,
        975,
        985,
        1000,
        1020,
    ]
    forecast = await source.forecast()
    # The forecast starts with the step playing now, which began at 1020.
    assert [(point.time, point.intensity_g_per_kwh) for point in forecast[:4]] == [
        (1020, 450.0),
        (1030, 300.0),
        (1045, 450.0),
        (1065, 450.0),
    ]
    assert {point.issued_at for point in forecast} == {1021}


def test_schedule_region_option():
    source = ScriptedSource(
        region="eu-central", schedule=parse(DEMO), clock=FakeClock(0), schedule_region="asia-east"
    )
    assert source.schedule_region == "asia-east"


def test_unknown_region_lists_known():
    with pytest.raises(
        ScheduleError,
        match="no step names region 'south-pole'; the schedule has eu-west, us-east, asia-east",
    ):
        ScriptedSource(region="south-pole", schedule=parse(DEMO), clock=FakeClock(0))


BROKEN = [
    pytest.param("[[steps]\n", ["demo.toml: invalid TOML: "], id="syntax"),
    pytest.param(
        "",
        ["demo.toml:1: missing [[steps]]; add at least one [[steps]] table with seconds = 20"],
        id="empty",
    ),
    pytest.param(
        "[steps]\nseconds = 3\n",
        ["demo.toml:1: steps: must be an array of tables, written [[steps]]"],
        id="steps-table",
    ),
    pytest.param(
        '[[steps]]\neu-west = "low"\n',
        ["demo.toml:1: steps[0].seconds: missing; add seconds = 20 to this step"],
        id="missing-seconds",
    ),
    pytest.param(
        '[[steps]]\nseconds = 0.5\neu-west = "low"\n',
        [
            "demo.toml:2: steps[0].seconds: must be a number of seconds from 1 to 3.1536e+07, got 0.5"
        ],
        id="short-step",
    ),
    pytest.param(
        '[[steps]]\nseconds = 5\neu-west = "lo"\n',
        ["demo.toml:3: steps[0].eu-west: unknown level 'lo'; defined levels: high, low, medium"],
        id="unknown-level",
    ),
    pytest.param(
        '[[steps]]\nseconds = 5\nEU_West = "low"\n',
        [
            "demo.toml:3: steps[0].EU_West: invalid region name: must be a DNS-1123 label: "
            "lower-case letters, digits and '-', starting and ending with a letter or digit "
            "(for example eu-west)"
        ],
        id="bad-region-name",
    ),
    pytest.param(
        '[levels]\nlow = -3\nhigh = "x"\n[[steps]]\nseconds = 5\neu-west = true\n',
        [
            "demo.toml:2: levels.low: must be an intensity in gCO2eq/kWh (a number >= 0), got -3",
            "demo.toml:3: levels.high: must be an intensity in gCO2eq/kWh (a number >= 0), got 'x'",
            "demo.toml:6: steps[0].eu-west: must be a level name or an intensity in gCO2eq/kWh "
            "(a number >= 0), got True",
        ],
        id="bad-values",
    ),
    pytest.param(
        'cycle = 3\n[[steps]]\nseconds = 5\neu-west = "low"\n',
        ["demo.toml:1: cycle: unknown key; allowed: levels, steps"],
        id="unknown-key",
    ),
    pytest.param(
        "[[steps]]\nseconds = 5\n",
        ['demo.toml:1: steps: no step names a region; add one such as eu-west = "low"'],
        id="no-regions",
    ),
    pytest.param(
        "steps = []\n", ["demo.toml:1: steps: must contain at least one step"], id="no-steps"
    ),
    pytest.param(
        '[[steps]]\nseconds = 1e400\neu-west = "low"\n',
        [
            "demo.toml:2: steps[0].seconds: must be a number of seconds from 1 to 3.1536e+07, got inf"
        ],
        id="infinite",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BROKEN)
def test_broken_schedule_messages(text, expected):
    with pytest.raises(ScheduleError) as caught:
        parse_schedule(text, "demo.toml")
    issues = list(caught.value.issues)
    if expected[0].endswith("invalid TOML: "):
        assert len(issues) == 1
        assert issues[0].startswith(expected[0])
    else:
        assert issues == expected
    assert str(caught.value) == "\n".join(issues)


def test_load_schedule_file(tmp_path):
    file = tmp_path / "schedule.toml"
    file.write_text(DEMO, encoding="utf-8")
    assert load_schedule(file).path == str(file)


def test_load_schedule_missing_file(tmp_path):
    with pytest.raises(ScheduleError, match="cannot read the schedule: No such file or directory"):
        load_schedule(tmp_path / "absent.toml")


def test_load_schedule_invalid_utf8(tmp_path):
    file = tmp_path / "schedule.toml"
    file.write_bytes(b'[[steps]]\nseconds = 5\neu-west = "\xff"\n')
    with pytest.raises(ScheduleError, match=r"schedule.toml:3: invalid UTF-8"):
        load_schedule(file)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=300))
def test_arbitrary_text_raises_only_schedule_error(text):
    try:
        schedule = parse_schedule(text)
    except ScheduleError as error:
        assert error.issues
        return
    assert schedule.steps


FRAGMENTS = ["[levels]", "[[steps]]", "[steps]", "[steps.x]", "[[levels]]"]
KEYS = ["seconds", "eu-west", "us-east", "low", "high", "EU", '"a b"', "steps", "levels"]
VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True).map(lambda x: "nan" if x != x else repr(x)),
    st.sampled_from(
        [
            '"low"',
            '"high"',
            '"medium"',
            '"nope"',
            "true",
            "[]",
            "{}",
            "{ a = 1 }",
            "1979-05-27T07:32:00Z",
        ]
    ),
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.sampled_from(FRAGMENTS),
            st.tuples(st.sampled_from(KEYS), VALUES).map(lambda pair: f"{pair[0]} = {pair[1]}"),
        ),
        max_size=20,
    )
)
def test_schedule_like_text_raises_only_schedule_error(lines):
    text = "\n".join(lines)
    try:
        schedule = parse_schedule(text, "fuzz.toml")
    except ScheduleError as error:
        assert error.issues
        assert all(issue.startswith("fuzz.toml") for issue in error.issues)
        return
    assert schedule.cycle_seconds >= 1
    for step in schedule.steps:
        assert set(step.intensities) == set(schedule.regions)
