"""Contract tests that every Store backend must pass.

Each test runs against SQLite in memory, SQLite in a file and InfluxDB (a real
influxd from tests/influxd.py, one fresh database per test). Tests that restart
the store run against the two backends that keep data. The InfluxDB stores here
use batch_size=100, so every write of more than 100 points is split into
several requests.
"""

from __future__ import annotations

import random
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from carbon_scheduler.store import (
    EmissionRecord,
    ForecastPoint,
    InfluxStore,
    Sample,
    SQLiteStore,
    Store,
    StoreClosedError,
    open_store,
)
from carbon_scheduler.store.base import MAX_LABEL_LENGTH, MAX_TIME_SECONDS, MIN_TIME_SECONDS

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
HOUR = 3600
REPO_ROOT = Path(__file__).resolve().parents[1]

BACKENDS = ["sqlite-memory", "sqlite-file", "influx"]
DURABLE_BACKENDS = ["sqlite-file", "influx"]


class Backend:
    """Opens stores of one backend over the same data and closes them all at teardown."""

    def __init__(
        self,
        name: str,
        opener: Callable[[], Store],
        *,
        reopenable: bool,
        restart_server: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        self._opener = opener
        self._reopenable = reopenable
        self._restart_server = restart_server
        self._stores: list[Store] = []

    def open(self) -> Store:
        if self._stores and not self._reopenable:
            raise RuntimeError(f"{self.name} keeps no data between stores, so it cannot be reopened")
        store = self._opener()
        self._stores.append(store)
        return store

    def restart(self) -> Store:
        """Close every open store, restart the server if there is one, and open a new store."""
        for store in self._stores:
            store.close()
        if self._restart_server is not None:
            self._restart_server()
        return self.open()

    def close_all(self) -> None:
        for store in self._stores:
            store.close()


def make_backend(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if name == "sqlite-memory":
        return Backend(name, lambda: SQLiteStore(":memory:"), reopenable=False)
    if name == "sqlite-file":
        path = tmp_path / "history.sqlite3"
        return Backend(name, lambda: SQLiteStore(path), reopenable=True)
    # Only InfluxDB cases start influxd, so SQLite cases run where it is missing.
    server = request.getfixturevalue("influxd")
    database = f"contract_{uuid.uuid4().hex[:16]}"
    return Backend(
        name,
        lambda: InfluxStore(server.url, database=database, batch_size=100),
        reopenable=True,
        restart_server=lambda: server.restart(kill=True),
    )


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = make_backend(request.param, request, tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture(params=DURABLE_BACKENDS)
def durable_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    opened = make_backend(request.param, request, tmp_path)
    yield opened
    opened.close_all()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


def hourly(region: str, hours: int, *, source: str = "trace", start: int = T0) -> list[Sample]:
    return [Sample(region, start + hour * HOUR, 100.0 + hour * 1.5, source) for hour in range(hours)]


def emission(task_id: str, end: int, *, region: str = "eu-west", emissions_g: float = 12.5) -> EmissionRecord:
    return EmissionRecord(
        task_id=task_id,
        region=region,
        task_class="deferrable",
        decision_time=end - 2 * HOUR,
        start=end - HOUR,
        end=end,
        energy_kwh=0.25,
        emissions_g=emissions_g,
        counterfactual_region="us-east",
        counterfactual_emissions_g=40.75,
    )


# Samples


def test_samples_round_trip(store: Store) -> None:
    first = Sample("eu-west", T0, 250.5, "electricitymaps")
    later = Sample("eu-west", T0 + HOUR, 199.25, "electricitymaps")
    other_source = Sample("eu-west", T0, 251.0, "watttime")
    store.write_samples([later, first, other_source])

    assert store.samples("eu-west", T0, T0 + 2 * HOUR) == [first, other_source, later]


def test_samples_sorted_by_time_then_source(store: Store) -> None:
    written = hourly("eu-west", 24, source="b") + hourly("eu-west", 24, source="a")
    shuffled = list(written)
    random.Random(7).shuffle(shuffled)
    store.write_samples(shuffled)

    found = store.samples("eu-west", T0, T0 + 24 * HOUR)

    assert found == sorted(written, key=lambda sample: (sample.time, sample.source))
    assert [sample.source for sample in found[:2]] == ["a", "b"]


RANGE_CASES = {
    "whole span": (T0, T0 + 3 * HOUR, [0, 1, 2]),
    "start is inclusive": (T0 + HOUR, T0 + 3 * HOUR, [1, 2]),
    "end is exclusive": (T0, T0 + 2 * HOUR, [0, 1]),
    "one second wide": (T0 + HOUR, T0 + HOUR + 1, [1]),
    "start equals end": (T0 + HOUR, T0 + HOUR, []),
    "before the data": (0, T0, []),
    "after the data": (T0 + 3 * HOUR, T0 + 10 * HOUR, []),
    "bounds beyond storable times": (-(2**62), 2**62, [0, 1, 2]),
}


@pytest.mark.parametrize(("start", "end", "expected"), RANGE_CASES.values(), ids=RANGE_CASES.keys())
def test_samples_range_is_half_open(store: Store, start: int, end: int, expected: list[int]) -> None:
    written = hourly("eu-west", 3)
    store.write_samples(written)

    assert store.samples("eu-west", start, end) == [written[index] for index in expected]


def test_samples_reject_start_after_end(store: Store) -> None:
    with pytest.raises(ValueError, match="range start 1700003600 is after its end 1700000000"):
        store.samples("eu-west", T0 + HOUR, T0)


def test_samples_other_regions_excluded(store: Store) -> None:
    store.write_samples(hourly("eu-west", 3) + hourly("us-east", 3, source="trace"))

    found = store.samples("eu-west", T0, T0 + 3 * HOUR)

    assert {sample.region for sample in found} == {"eu-west"}
    assert len(found) == 3


def test_duplicate_sample_in_one_write_keeps_last(store: Store) -> None:
    store.write_samples([Sample("eu-west", T0, 100.0, "trace"), Sample("eu-west", T0, 200.0, "trace")])

    assert store.samples("eu-west", T0, T0 + 1) == [Sample("eu-west", T0, 200.0, "trace")]


def test_duplicate_sample_in_later_write_keeps_last(store: Store) -> None:
    store.write_samples([Sample("eu-west", T0, 100.0, "trace")])
    store.write_samples([Sample("eu-west", T0, 300.0, "trace")])

    assert store.samples("eu-west", T0, T0 + 1) == [Sample("eu-west", T0, 300.0, "trace")]
    assert store.latest_sample("eu-west") == Sample("eu-west", T0, 300.0, "trace")


def test_same_time_other_source_is_another_sample(store: Store) -> None:
    store.write_samples([Sample("eu-west", T0, 100.0, "a"), Sample("eu-west", T0, 200.0, "b")])

    assert store.samples("eu-west", T0, T0 + 1) == [
        Sample("eu-west", T0, 100.0, "a"),
        Sample("eu-west", T0, 200.0, "b"),
    ]


def test_extreme_times_round_trip(store: Store) -> None:
    written = [
        Sample("eu-west", MIN_TIME_SECONDS, 1.0, "trace"),
        Sample("eu-west", -HOUR, 2.0, "trace"),
        Sample("eu-west", 0, 3.0, "trace"),
        Sample("eu-west", 4_102_444_800, 4.0, "trace"),  # 2100-01-01
        Sample("eu-west", MAX_TIME_SECONDS, 5.0, "trace"),
    ]
    store.write_samples(written)

    assert store.samples("eu-west", MIN_TIME_SECONDS, MAX_TIME_SECONDS + 1) == written
    assert store.latest_sample("eu-west") == written[-1]


def test_intensity_floats_round_trip_exactly(store: Store) -> None:
    values = [0.1, 1e-7, 123456.789012345, 1e20, -0.5, 5e-324, 1.7976931348623157e308]
    written = [Sample("eu-west", T0 + index, value, "trace") for index, value in enumerate(values)]
    store.write_samples(written)

    assert [sample.intensity_g_per_kwh for sample in store.samples("eu-west", T0, T0 + 10)] == values


# Latest sample


def test_latest_sample_is_newest(store: Store) -> None:
    store.write_samples(hourly("eu-west", 6) + [Sample("us-east", T0 + 9 * HOUR, 1.0, "trace")])

    assert store.latest_sample("eu-west") == Sample("eu-west", T0 + 5 * HOUR, 107.5, "trace")


def test_latest_sample_tie_prefers_first_source_name(store: Store) -> None:
    store.write_samples(
        [
            Sample("eu-west", T0, 1.0, "a"),
            Sample("eu-west", T0 + HOUR, 2.0, "zeta"),
            Sample("eu-west", T0 + HOUR, 3.0, "beta"),
        ]
    )

    assert store.latest_sample("eu-west") == Sample("eu-west", T0 + HOUR, 3.0, "beta")


def test_latest_sample_none_for_unknown_region(store: Store) -> None:
    store.write_samples(hourly("eu-west", 2))

    assert store.latest_sample("us-east") is None


# Many regions and large writes


def test_many_regions_kept_apart(store: Store) -> None:
    regions = [f"region-{index:02d}" for index in range(40)]
    written = {
        region: [Sample(region, T0 + hour * HOUR, index * 1000.0 + hour, "trace") for hour in range(12)]
        for index, region in enumerate(regions)
    }
    store.write_samples([sample for samples in written.values() for sample in samples])

    for region in regions:
        assert store.samples(region, T0, T0 + 12 * HOUR) == written[region]
        assert store.latest_sample(region) == written[region][-1]


def test_write_larger_than_batch_size(store: Store) -> None:
    written = hourly("eu-west", 1234) + hourly("us-east", 617)
    store.write_samples(written)

    assert store.samples("eu-west", T0, T0 + 1234 * HOUR) == written[:1234]
    assert store.samples("us-east", T0, T0 + 1234 * HOUR) == written[1234:]


def test_emissions_larger_than_batch_size(store: Store) -> None:
    written = [emission(f"batch/task-{index:04d}", T0 + index * 60) for index in range(250)]
    store.write_emissions(written)

    assert store.emissions(T0, T0 + 250 * 60) == written


# Forecasts


def forecast_run(region: str, issued_at: int, forecaster: str, steps: int, base: float) -> list[ForecastPoint]:
    return [
        ForecastPoint(region, issued_at, issued_at + step * HOUR, base + step, forecaster)
        for step in range(1, steps + 1)
    ]


def test_forecasts_round_trip_by_issue_time(store: Store) -> None:
    first_naive = forecast_run("eu-west", T0, "seasonal-naive", 4, 200.0)
    first_persistence = forecast_run("eu-west", T0, "persistence", 4, 300.0)
    second_naive = forecast_run("eu-west", T0 + HOUR, "seasonal-naive", 4, 400.0)
    other_region = forecast_run("us-east", T0, "seasonal-naive", 4, 500.0)
    store.write_forecasts(first_naive + second_naive + first_persistence + other_region)

    expected_first = sorted(first_naive + first_persistence, key=lambda point: (point.time, point.forecaster))
    assert store.forecasts("eu-west", T0) == expected_first
    assert store.forecasts("eu-west", T0 + HOUR) == second_naive
    assert store.forecasts("us-east", T0) == other_region


def test_forecasts_same_step_from_two_issues_kept_apart(store: Store) -> None:
    early = ForecastPoint("eu-west", T0, T0 + 3 * HOUR, 210.0, "seasonal-naive")
    late = ForecastPoint("eu-west", T0 + HOUR, T0 + 3 * HOUR, 190.0, "seasonal-naive")
    store.write_forecasts([early, late])

    assert store.forecasts("eu-west", T0) == [early]
    assert store.forecasts("eu-west", T0 + HOUR) == [late]


def test_duplicate_forecast_point_keeps_last(store: Store) -> None:
    store.write_forecasts([ForecastPoint("eu-west", T0, T0 + HOUR, 210.0, "seasonal-naive")])
    store.write_forecasts([ForecastPoint("eu-west", T0, T0 + HOUR, 215.0, "seasonal-naive")])

    assert store.forecasts("eu-west", T0) == [ForecastPoint("eu-west", T0, T0 + HOUR, 215.0, "seasonal-naive")]


def test_forecasts_empty_for_unknown_issue(store: Store) -> None:
    store.write_forecasts(forecast_run("eu-west", T0, "seasonal-naive", 2, 200.0))

    assert store.forecasts("eu-west", T0 + 1) == []
    assert store.forecasts("asia-east", T0) == []


# Emissions


def test_emissions_round_trip_by_end(store: Store) -> None:
    written = [emission("jobs/c", T0 + 2 * HOUR), emission("jobs/b", T0), emission("jobs/a", T0 + HOUR)]
    store.write_emissions(written)

    assert store.emissions(T0, T0 + 2 * HOUR) == [written[1], written[2]]
    assert store.emissions(T0 + 2 * HOUR, T0 + 2 * HOUR + 1) == [written[0]]
    assert store.emissions(T0 - HOUR, T0) == []


def test_emissions_same_end_and_tags_kept_apart(store: Store) -> None:
    written = [emission(f"jobs/task-{index:02d}", T0) for index in range(50)]
    store.write_emissions(written)

    assert store.emissions(T0, T0 + 1) == written


def test_duplicate_emission_record_keeps_last(store: Store) -> None:
    store.write_emissions([emission("jobs/a", T0, emissions_g=10.0)])
    store.write_emissions([emission("jobs/a", T0, emissions_g=11.5)])

    assert store.emissions(T0, T0 + 1) == [emission("jobs/a", T0, emissions_g=11.5)]


def test_emission_fields_round_trip(store: Store) -> None:
    record = EmissionRecord(
        task_id="batch/render-42",
        region="asia-east",
        task_class="standard",
        decision_time=T0 - 7 * HOUR,
        start=T0 - 5 * HOUR,
        end=T0,
        energy_kwh=1.125,
        emissions_g=512.25,
        counterfactual_region="eu-west",
        counterfactual_emissions_g=600.5,
    )
    store.write_emissions([record])

    assert store.emissions(T0, T0 + 1) == [record]


# Labels with special characters

SPECIAL_LABELS = {
    "spaces, commas and equals signs": "eu west, zone=1",
    "single quote": "it's-region",
    "double quotes": 'the "green" one',
    "unicode": "asia-東京 ☀",
    "only spaces": "   ",
    "hash first": "#region",
}


@pytest.mark.parametrize("label", SPECIAL_LABELS.values(), ids=SPECIAL_LABELS.keys())
def test_special_characters_in_labels(store: Store, label: str) -> None:
    sample = Sample(label, T0, 111.0, f"source {label}")
    point = ForecastPoint(label, T0, T0 + HOUR, 222.0, f"forecaster={label}")
    record = EmissionRecord(
        task_id=f"ns/pod {label}",
        region=label,
        task_class=f"class,{label}",
        decision_time=T0,
        start=T0,
        end=T0 + HOUR,
        energy_kwh=0.5,
        emissions_g=3.0,
        counterfactual_region=f"cf {label}",
        counterfactual_emissions_g=4.0,
    )
    store.write_samples([sample])
    store.write_forecasts([point])
    store.write_emissions([record])

    assert store.samples(label, T0, T0 + 1) == [sample]
    assert store.latest_sample(label) == sample
    assert store.forecasts(label, T0) == [point]
    assert store.emissions(T0 + HOUR, T0 + HOUR + 1) == [record]


def test_task_id_special_characters_round_trip(store: Store) -> None:
    task_id = 'ns/pod name,with=equals "quoted" \\back\\slash\\'
    store.write_emissions([emission(task_id, T0)])

    assert [record.task_id for record in store.emissions(T0, T0 + 1)] == [task_id]


LABELS = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters="\\"),
    min_size=1,
    max_size=30,
)
TASK_IDS = st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=60)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    region=LABELS,
    source=LABELS,
    task_id=TASK_IDS,
    value=st.floats(allow_nan=False, allow_infinity=False),
)
def test_any_valid_label_round_trips(store: Store, region: str, source: str, task_id: str, value: float) -> None:
    # Examples share one store: each checks only the records that it wrote last.
    sample = Sample(region, T0, value, source)
    record = emission(task_id, T0, region=region, emissions_g=value)
    store.write_samples([sample])
    store.write_emissions([record])

    same_source = [found for found in store.samples(region, T0, T0 + 1) if found.source == source]
    assert same_source == [sample]
    same_task = [found for found in store.emissions(T0, T0 + 1) if found == record]
    assert same_task == [record]


# Empty input and results


def test_empty_store_returns_empty_results(store: Store) -> None:
    assert store.samples("eu-west", 0, MAX_TIME_SECONDS) == []
    assert store.latest_sample("eu-west") is None
    assert store.forecasts("eu-west", T0) == []
    assert store.emissions(0, MAX_TIME_SECONDS) == []


def test_empty_writes_store_nothing(store: Store) -> None:
    store.write_samples([])
    store.write_forecasts([])
    store.write_emissions([])

    assert store.samples("eu-west", 0, MAX_TIME_SECONDS) == []
    assert store.emissions(0, MAX_TIME_SECONDS) == []


def test_writes_accept_generators(store: Store) -> None:
    store.write_samples(sample for sample in hourly("eu-west", 3))

    assert len(store.samples("eu-west", T0, T0 + 3 * HOUR)) == 3


# Wrong input


def test_write_rejects_other_record_type(store: Store) -> None:
    point = ForecastPoint("eu-west", T0, T0, 1.0, "persistence")

    with pytest.raises(TypeError, match=r"samples\[1\] must be a Sample, got ForecastPoint"):
        store.write_samples([Sample("eu-west", T0, 1.0, "trace"), point])  # type: ignore[list-item]
    assert store.samples("eu-west", T0, T0 + 1) == []


def test_write_rejects_single_record(store: Store) -> None:
    with pytest.raises(TypeError, match="got a single one; wrap it in a list"):
        store.write_samples(Sample("eu-west", T0, 1.0, "trace"))  # type: ignore[arg-type]


def test_query_rejects_invalid_region(store: Store) -> None:
    with pytest.raises(ValueError, match="backslash"):
        store.samples("eu\\west", T0, T0 + 1)
    with pytest.raises(ValueError, match="must not be empty"):
        store.latest_sample("")


def test_closed_store_rejects_calls(store: Store) -> None:
    store.close()

    with pytest.raises(StoreClosedError, match="is closed"):
        store.write_samples(hourly("eu-west", 1))
    with pytest.raises(StoreClosedError, match="is closed"):
        store.samples("eu-west", T0, T0 + 1)
    with pytest.raises(StoreClosedError, match="is closed"):
        store.emissions(T0, T0 + 1)
    store.close()


# Threads


def test_concurrent_writes_from_threads(store: Store) -> None:
    def write_region(index: int) -> None:
        for chunk in range(10):
            store.write_samples(hourly(f"region-{index}", 25, start=T0 + chunk * 25 * HOUR))

    with ThreadPoolExecutor(max_workers=4) as pool:
        list(pool.map(write_region, range(4)))

    for index in range(4):
        found = store.samples(f"region-{index}", T0, T0 + 250 * HOUR)
        assert len(found) == 250
        assert found[0].time == T0
        assert found[-1].time == T0 + 249 * HOUR


# Restarts


def test_restart_loses_no_acknowledged_write(durable_backend: Backend) -> None:
    store = durable_backend.open()
    samples = hourly("eu-west", 500) + hourly("us-east", 500)
    points = forecast_run("eu-west", T0, "seasonal-naive", 48, 200.0)
    records = [emission(f"jobs/task-{index}", T0 + index) for index in range(30)]
    store.write_samples(samples)
    store.write_forecasts(points)
    store.write_emissions(records)

    reopened = durable_backend.restart()

    assert reopened.samples("eu-west", T0, T0 + 500 * HOUR) == samples[:500]
    assert reopened.samples("us-east", T0, T0 + 500 * HOUR) == samples[500:]
    assert reopened.forecasts("eu-west", T0) == points
    assert reopened.emissions(T0, T0 + 30) == records


def test_restart_then_write_more(durable_backend: Backend) -> None:
    before = hourly("eu-west", 10)
    after = hourly("eu-west", 10, start=T0 + 10 * HOUR)
    store = durable_backend.open()
    store.write_samples(before)

    reopened = durable_backend.restart()
    reopened.write_samples(after)

    assert reopened.samples("eu-west", T0, T0 + 20 * HOUR) == before + after


_KILLED_WRITER = """
import sys
from carbon_scheduler.store import Sample, SQLiteStore

store = SQLiteStore(sys.argv[1])
for batch in range(5):
    store.write_samples([Sample("eu-west", {t0} + (batch * 100 + i) * 300, float(i), "trace") for i in range(100)])
    print(f"acknowledged {{batch}}", flush=True)
sys.stdin.read()
"""


def test_sqlite_killed_writer_loses_no_acknowledged_write(tmp_path: Path) -> None:
    path = tmp_path / "history.sqlite3"
    writer = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER.format(t0=T0), str(path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert writer.stdout is not None
        lines = [writer.stdout.readline().strip() for _ in range(5)]
    finally:
        writer.kill()
        writer.wait(timeout=30)
        for stream in (writer.stdin, writer.stdout):
            if stream is not None:
                stream.close()

    assert lines == [f"acknowledged {batch}" for batch in range(5)]
    with closing(SQLiteStore(path)) as store:
        found = store.samples("eu-west", T0, T0 + 500 * 300)
    assert len(found) == 500
    assert found[-1] == Sample("eu-west", T0 + 499 * 300, 99.0, "trace")


# Record validation

INVALID_RECORDS: dict[str, tuple[Callable[[], object], type[Exception], str]] = {
    "empty region": (lambda: Sample("", T0, 1.0, "trace"), ValueError, "region must not be empty"),
    "backslash in source": (lambda: Sample("eu", T0, 1.0, "a\\b"), ValueError, "contains a backslash"),
    "newline in region": (lambda: Sample("eu\nwest", T0, 1.0, "trace"), ValueError, "control character"),
    "tab in forecaster": (
        lambda: ForecastPoint("eu", T0, T0, 1.0, "naive\tx"),
        ValueError,
        "control character",
    ),
    "region too long": (
        lambda: Sample("r" * (MAX_LABEL_LENGTH + 1), T0, 1.0, "trace"),
        ValueError,
        f"shorten it to at most {MAX_LABEL_LENGTH}",
    ),
    "region not a str": (lambda: Sample(7, T0, 1.0, "trace"), TypeError, "region must be a str"),  # type: ignore[arg-type]
    "fractional time": (lambda: Sample("eu", 1.5, 1.0, "trace"), TypeError, "integer number of Unix seconds"),  # type: ignore[arg-type]
    "bool time": (lambda: Sample("eu", True, 1.0, "trace"), TypeError, "integer number of Unix seconds"),
    "time after 2262": (
        lambda: Sample("eu", MAX_TIME_SECONDS + 1, 1.0, "trace"),
        ValueError,
        "outside the range",
    ),
    "NaN intensity": (lambda: Sample("eu", T0, float("nan"), "trace"), ValueError, "must be finite"),
    "text intensity": (lambda: Sample("eu", T0, "250", "trace"), TypeError, "must be a number"),  # type: ignore[arg-type]
    "end before start": (
        lambda: EmissionRecord("jobs/a", "eu", "critical", T0, T0 + 10, T0, 1.0, 1.0, "us", 1.0),
        ValueError,
        "ends at 1700000000, before its start 1700000010",
    ),
    "newline in task id": (
        lambda: EmissionRecord("jobs/a\n", "eu", "critical", T0, T0, T0, 1.0, 1.0, "us", 1.0),
        ValueError,
        "control character",
    ),
}


@pytest.mark.parametrize(("build", "error", "message"), INVALID_RECORDS.values(), ids=INVALID_RECORDS.keys())
def test_invalid_record_rejected(build: Callable[[], object], error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        build()


def test_record_normalises_numpy_values() -> None:
    sample = Sample("eu-west", np.int64(T0), np.float32(1.5), "trace")  # type: ignore[arg-type]

    assert type(sample.time) is int
    assert type(sample.intensity_g_per_kwh) is float
    assert sample == Sample("eu-west", T0, 1.5, "trace")


# open_store


def test_open_store_plain_path(tmp_path: Path) -> None:
    with closing(open_store(str(tmp_path / "history.db"))) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "history.db")
    assert (tmp_path / "history.db").exists()


def test_open_store_path_object(tmp_path: Path) -> None:
    with closing(open_store(tmp_path / "history.db")) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == str(tmp_path / "history.db")


def test_open_store_sqlite_relative_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)

    with closing(open_store("sqlite:///relative.db")) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == "relative.db"
    assert (tmp_path / "relative.db").exists()


def test_open_store_sqlite_absolute_url(tmp_path: Path) -> None:
    with closing(open_store(f"sqlite:///{tmp_path}/absolute.db")) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == f"{tmp_path}/absolute.db"


@pytest.mark.parametrize("location", [":memory:", "sqlite://", "sqlite:///:memory:"])
def test_open_store_memory(location: str) -> None:
    with closing(open_store(location)) as store:
        assert isinstance(store, SQLiteStore)
        assert store.path == ":memory:"


def test_open_store_influx_url_without_io() -> None:
    # Port 9 (discard) is never contacted: stores send nothing before the first call.
    with closing(open_store("http://127.0.0.1:9")) as store:
        assert isinstance(store, InfluxStore)
        assert store.url == "http://127.0.0.1:9"
        assert store.database == "carbon"


def test_open_store_influx_credentials_and_database() -> None:
    with closing(open_store("https://reader:p%40ss@127.0.0.1:8443/influx/?db=metrics")) as store:
        assert isinstance(store, InfluxStore)
        assert store.url == "https://127.0.0.1:8443/influx"
        assert store.database == "metrics"
        assert "p@ss" not in repr(store)


OPEN_STORE_ERRORS = {
    "unknown scheme": ("ftp://127.0.0.1/x", {}, "unknown scheme 'ftp'"),
    "sqlite host": ("sqlite://host/x.db", {}, "names a host"),
    "empty": ("  ", {}, "must not be empty"),
    "unknown influx parameter": ("http://127.0.0.1:8086/?precision=s", {}, r"unknown parameters \['precision'\]"),
    "database twice": ("http://127.0.0.1:8086/?db=a", {"database": "b"}, "both in the URL"),
    "token for sqlite": (":memory:", {"token": "secret"}, "apply to InfluxDB URLs only"),
    "token and password": ("http://u:p@127.0.0.1:8086", {"token": "t"}, "either token or username"),
}


@pytest.mark.parametrize(("location", "options", "message"), OPEN_STORE_ERRORS.values(), ids=OPEN_STORE_ERRORS.keys())
def test_open_store_rejects(location: str, options: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        open_store(location, **options)
