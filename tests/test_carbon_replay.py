"""Replay source: wall time mapped onto a trace at a speed-up, with offset and looping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from carbon_scheduler.carbon.replay_source import ReplaySource
from carbon_scheduler.carbon.traces import Trace, TraceError, read_trace
from carbon_scheduler.store.base import Sample
from tests.carbon_mock import FakeClock

TRACES = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
T = 1_672_531_200  # 2023-01-01T00:00:00Z
TRACE = Trace(
    regions=("eu-west", "us-east"),
    start=T,
    step_seconds=3600,
    values=np.array([[10.0, 20.0, 30.0, 40.0], [1.0, 2.0, 3.0, 4.0]]),
)


def make_replay(clock: FakeClock, **options) -> ReplaySource:
    values = {
        "region": "eu-west",
        "trace": TRACE,
        "clock": clock,
        "seconds_per_hour": 10.0,
        "started_at": 1000.0,
    }
    values.update(options)
    return ReplaySource(**values)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("wall", "time", "value"),
    [
        pytest.param(1000.0, 1000, 10.0, id="start"),
        pytest.param(1009.9, 1000, 10.0, id="end-of-first-step"),
        pytest.param(1010.0, 1010, 20.0, id="second-step"),
        pytest.param(1035.0, 1030, 40.0, id="last-step"),
        pytest.param(1040.0, 1040, 10.0, id="loops-to-start"),
        pytest.param(1085.0, 1080, 10.0, id="third-loop"),
        pytest.param(995.0, 990, 40.0, id="before-start-runs-backwards"),
    ],
)
async def test_speed_up_maps_wall_time_to_steps(wall, time, value):
    clock = FakeClock(wall)
    sample = await make_replay(clock).latest()
    assert sample == Sample("eu-west", time, value, "replay")


@pytest.mark.asyncio
async def test_start_offset_and_looping():
    clock = FakeClock(1000.0)
    replay = make_replay(clock, start_offset_seconds=2 * 3600)
    values = []
    for _ in range(4):
        values.append((await replay.latest()).intensity_g_per_kwh)
        clock.advance(10)
    assert values == [30.0, 40.0, 10.0, 20.0]


@pytest.mark.asyncio
async def test_trace_region_selects_row():
    replay = make_replay(FakeClock(1010.0), region="eu-central", trace_region="us-east")
    sample = await replay.latest()
    assert sample == Sample("eu-central", 1010, 2.0, "replay")
    assert replay.trace_region == "us-east"


def test_trace_time_follows_the_speed_up():
    replay = make_replay(FakeClock(1015.0))
    assert replay.trace_time() == T + 5400
    assert replay.trace_time(1055.0) == T + 5400  # one loop of 40 s later
    assert make_replay(FakeClock(0), start_offset_seconds=1800).trace_time(1000.0) == T + 1800


@pytest.mark.asyncio
async def test_history_returns_played_steps_only():
    clock = FakeClock(1025.0)
    replay = make_replay(clock)
    samples = await replay.history(1000, 1100)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (1000, 10.0),
        (1010, 20.0),
        (1020, 30.0),
    ]

    clock.now = 1100.0
    samples = await replay.history(995, 1050)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (1000, 10.0),
        (1010, 20.0),
        (1020, 30.0),
        (1030, 40.0),
        (1040, 10.0),
    ]
    assert await replay.history(2000, 3000) == []
    assert await replay.history(1000, 1000) == []


@pytest.mark.asyncio
async def test_history_before_start_fills_a_window():
    replay = make_replay(FakeClock(1000.0))
    samples = await replay.history(960, 1000)
    assert [(s.time, s.intensity_g_per_kwh) for s in samples] == [
        (960, 10.0),
        (970, 20.0),
        (980, 30.0),
        (990, 40.0),
    ]


@pytest.mark.asyncio
async def test_fractional_start_rounds_times_down():
    replay = make_replay(FakeClock(1020.7), started_at=1000.5)
    sample = await replay.latest()
    assert sample.time == 1020
    assert sample.intensity_g_per_kwh == 30.0


@pytest.mark.asyncio
async def test_history_range_is_checked():
    replay = make_replay(FakeClock(1000.0))
    with pytest.raises(ValueError, match="history start 20 is after its end 10"):
        await replay.history(20, 10)
    with pytest.raises(TypeError, match="history start must be an integer number of Unix seconds"):
        await replay.history(1.5, 10)  # type: ignore[arg-type]


@pytest.mark.asyncio
async def test_no_forecast():
    assert await make_replay(FakeClock(1000.0)).forecast() is None


@pytest.mark.parametrize(
    ("options", "message"),
    [
        pytest.param({"seconds_per_hour": 0.5}, r"use seconds_per_hour >= 1", id="too-fast"),
        pytest.param(
            {"seconds_per_hour": 0.0}, "seconds_per_hour must be a positive number", id="zero"
        ),
        pytest.param(
            {"start_offset_seconds": 4 * 3600},
            "start offset 14400 s is outside the trace",
            id="offset",
        ),
        pytest.param(
            {"start_offset_seconds": -1}, "start offset -1 s is outside the trace", id="negative"
        ),
    ],
)
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        make_replay(FakeClock(0), **options)


def test_unknown_trace_region():
    with pytest.raises(TraceError, match="unknown region 'asia-east'"):
        make_replay(FakeClock(0), region="asia-east")


@pytest.mark.asyncio
async def test_recorded_trace_values():
    trace = read_trace(TRACES / "demo-14d.csv", regions=["eu-west"])
    clock = FakeClock(5000.0)
    replay = ReplaySource(
        region="eu-west",
        trace=trace,
        clock=clock,
        seconds_per_hour=10,
        started_at=5000.0,
        start_offset_seconds=24 * 3600,
    )
    samples = []
    for _ in range(3):
        samples.append(await replay.latest())
        clock.advance(10)
    expected = trace.values[0, 24:27].tolist()
    assert [s.intensity_g_per_kwh for s in samples] == expected
    assert [s.time for s in samples] == [5000, 5010, 5020]
    assert replay.trace_time(5000.0) == trace.start + 24 * 3600
