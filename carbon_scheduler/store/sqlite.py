"""The embedded SQLite backend, the default store.

One table per record type. Each primary key is the record's identity (see
`base`), so an upsert gives InfluxDB's "last write wins" rule. Each key starts
with the columns that queries filter on, in the order they return rows, so no
query needs a sort. Tables are WITHOUT ROWID, so rows are stored in key order.

Durability: the database runs in WAL mode with `synchronous=FULL`, so a write
call returns after its transaction is committed and synced to disk, and survives
a crash of the process or the machine. `:memory:` databases keep nothing.

One connection serves every thread, behind a lock. The schema version lives in
`PRAGMA user_version`; a file written by a newer schema is refused rather than
misread.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self

from carbon_scheduler.store.base import (
    EmissionRecord,
    ForecastPoint,
    Sample,
    check_label,
    check_range,
    check_records,
    check_time,
)
from carbon_scheduler.store.errors import (
    PermanentStoreError,
    StoreClosedError,
    StoreError,
    StoreUnavailableError,
)

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS carbon_intensity (
    region TEXT NOT NULL,
    time INTEGER NOT NULL,
    source TEXT NOT NULL,
    intensity_g_per_kwh REAL NOT NULL,
    PRIMARY KEY (region, time, source)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS carbon_forecast (
    region TEXT NOT NULL,
    issued_at INTEGER NOT NULL,
    time INTEGER NOT NULL,
    forecaster TEXT NOT NULL,
    intensity_g_per_kwh REAL NOT NULL,
    PRIMARY KEY (region, issued_at, time, forecaster)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS task_emissions (
    run_end INTEGER NOT NULL,
    task_id TEXT NOT NULL,
    region TEXT NOT NULL,
    task_class TEXT NOT NULL,
    counterfactual_region TEXT NOT NULL,
    decision_time INTEGER NOT NULL,
    run_start INTEGER NOT NULL,
    energy_kwh REAL NOT NULL,
    emissions_g REAL NOT NULL,
    counterfactual_emissions_g REAL NOT NULL,
    PRIMARY KEY (run_end, task_id, region, task_class, counterfactual_region)
) WITHOUT ROWID;
"""

_UPSERT_SAMPLE = """
INSERT INTO carbon_intensity (region, time, source, intensity_g_per_kwh) VALUES (?, ?, ?, ?)
ON CONFLICT (region, time, source) DO UPDATE SET intensity_g_per_kwh = excluded.intensity_g_per_kwh
"""

_UPSERT_FORECAST = """
INSERT INTO carbon_forecast (region, issued_at, time, forecaster, intensity_g_per_kwh)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (region, issued_at, time, forecaster)
DO UPDATE SET intensity_g_per_kwh = excluded.intensity_g_per_kwh
"""

_UPSERT_EMISSION = """
INSERT INTO task_emissions (
    run_end, task_id, region, task_class, counterfactual_region,
    decision_time, run_start, energy_kwh, emissions_g, counterfactual_emissions_g
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (run_end, task_id, region, task_class, counterfactual_region) DO UPDATE SET
    decision_time = excluded.decision_time,
    run_start = excluded.run_start,
    energy_kwh = excluded.energy_kwh,
    emissions_g = excluded.emissions_g,
    counterfactual_emissions_g = excluded.counterfactual_emissions_g
"""

_SELECT_SAMPLES = """
SELECT region, time, intensity_g_per_kwh, source FROM carbon_intensity
WHERE region = ? AND time >= ? AND time < ?
ORDER BY time, source
"""

_SELECT_LATEST_SAMPLE = """
SELECT region, time, intensity_g_per_kwh, source FROM carbon_intensity
WHERE region = ?
ORDER BY time DESC, source ASC
LIMIT 1
"""

_SELECT_FORECASTS = """
SELECT region, issued_at, time, intensity_g_per_kwh, forecaster FROM carbon_forecast
WHERE region = ? AND issued_at = ?
ORDER BY time, forecaster
"""

_SELECT_EMISSIONS = """
SELECT task_id, region, task_class, decision_time, run_start, run_end,
       energy_kwh, emissions_g, counterfactual_region, counterfactual_emissions_g
FROM task_emissions
WHERE run_end >= ? AND run_end < ?
ORDER BY run_end, task_id, region, task_class, counterfactual_region
"""

_MEMORY = ":memory:"


class SQLiteStore:
    """A `Store` in one SQLite file, or in memory for `path=":memory:"`.

    The file and its schema are created when missing; its directory must exist.
    `busy_timeout_seconds` is how long a call waits for another process's lock on
    the file before it raises StoreUnavailableError.
    """

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout_seconds: float = 30.0) -> None:
        self._path = os.fspath(path)
        if not self._path:
            raise ValueError('SQLite path must not be empty; use ":memory:" for a temporary database')
        if not busy_timeout_seconds >= 0:
            raise ValueError(f"busy_timeout_seconds must be zero or positive, got {busy_timeout_seconds!r}")
        self._lock = threading.Lock()
        self._closed = False
        try:
            # isolation_level=None leaves transactions to the explicit BEGIN in _transaction.
            self._connection = sqlite3.connect(
                self._path, timeout=busy_timeout_seconds, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error as exc:
            raise PermanentStoreError(
                f"could not open SQLite database {self._path!r}: {exc}; "
                "check that its directory exists and is writable"
            ) from exc
        try:
            self._configure()
        except BaseException:
            self._connection.close()
            raise

    def __repr__(self) -> str:
        return f"SQLiteStore({self._path!r})"

    @property
    def path(self) -> str:
        return self._path

    def write_samples(self, samples: Iterable[Sample]) -> None:
        items = check_records("samples", samples, Sample)
        rows = [(s.region, s.time, s.source, s.intensity_g_per_kwh) for s in items]
        self._write_rows(_UPSERT_SAMPLE, rows)

    def samples(self, region: str, start: int, end: int) -> list[Sample]:
        region = check_label("region", region)
        first, last = check_range(start, end)
        rows = self._fetch(_SELECT_SAMPLES, (region, first, last))
        return [Sample(*row) for row in rows]

    def latest_sample(self, region: str) -> Sample | None:
        region = check_label("region", region)
        rows = self._fetch(_SELECT_LATEST_SAMPLE, (region,))
        return Sample(*rows[0]) if rows else None

    def write_forecasts(self, points: Iterable[ForecastPoint]) -> None:
        items = check_records("points", points, ForecastPoint)
        rows = [(p.region, p.issued_at, p.time, p.forecaster, p.intensity_g_per_kwh) for p in items]
        self._write_rows(_UPSERT_FORECAST, rows)

    def forecasts(self, region: str, issued_at: int) -> list[ForecastPoint]:
        region = check_label("region", region)
        issued_at = check_time("issued_at", issued_at)
        rows = self._fetch(_SELECT_FORECASTS, (region, issued_at))
        return [ForecastPoint(*row) for row in rows]

    def write_emissions(self, records: Iterable[EmissionRecord]) -> None:
        items = check_records("records", records, EmissionRecord)
        rows = [
            (
                r.end,
                r.task_id,
                r.region,
                r.task_class,
                r.counterfactual_region,
                r.decision_time,
                r.start,
                r.energy_kwh,
                r.emissions_g,
                r.counterfactual_emissions_g,
            )
            for r in items
        ]
        self._write_rows(_UPSERT_EMISSION, rows)

    def emissions(self, start: int, end: int) -> list[EmissionRecord]:
        first, last = check_range(start, end)
        rows = self._fetch(_SELECT_EMISSIONS, (first, last))
        return [EmissionRecord(*row) for row in rows]

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._connection.close()
            except sqlite3.Error as exc:
                raise _store_error(f"closing {self._path!r}", exc) from exc

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _configure(self) -> None:
        with self._errors("opening"):
            mode = self._connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if self._path != _MEMORY and mode != "wal":
                raise PermanentStoreError(
                    f"SQLite database {self._path!r} could not switch to WAL mode (it is in "
                    f"{mode!r} mode); put it on a local file system"
                )
            self._connection.execute("PRAGMA synchronous=FULL")
            with self._transaction():
                version = self._connection.execute("PRAGMA user_version").fetchone()[0]
                if version > SCHEMA_VERSION:
                    raise PermanentStoreError(
                        f"SQLite database {self._path!r} has schema version {version}, but this "
                        f"carbon-scheduler reads version {SCHEMA_VERSION}; upgrade carbon-scheduler "
                        "or open another file"
                    )
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self._connection.execute(statement)
                self._connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _write_rows(self, statement: str, rows: Sequence[tuple[Any, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            self._check_open()
            with self._errors("writing to"), self._transaction():
                self._connection.executemany(statement, rows)

    def _fetch(self, statement: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        with self._lock:
            self._check_open()
            with self._errors("reading"):
                return self._connection.execute(statement, parameters).fetchall()

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        # IMMEDIATE takes the write lock up front, so a busy database fails at
        # BEGIN (after busy_timeout) instead of halfway through the writes.
        self._connection.execute("BEGIN IMMEDIATE")
        try:
            yield
            self._connection.execute("COMMIT")
        except BaseException:
            if self._connection.in_transaction:
                self._connection.execute("ROLLBACK")
            raise

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _store_error(f"{action} {self._path!r}", exc) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed; open a new store")


def _store_error(context: str, exc: sqlite3.Error) -> StoreError:
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", type(exc).__name__)
    # The low byte of an extended result code is the primary code.
    if code is not None and code & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return StoreUnavailableError(f"SQLite {context} failed: {exc} ({name}); the database is locked by another connection; retry later")
    return PermanentStoreError(f"SQLite {context} failed: {exc} ({name})")

