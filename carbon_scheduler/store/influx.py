"""The InfluxDB backend, over the v1 HTTP API.

InfluxDB 1.x serves this API natively; 2.x and 3.x serve `/write` and `/query`
for compatibility, with the database mapped to a bucket. The layout, which the
Grafana dashboards query:

    carbon_intensity  tags region, source
                      field intensity_g_per_kwh (float)
                      time = Sample.time
    carbon_forecast   tags region, forecaster, issued_at (Unix seconds as text)
                      field intensity_g_per_kwh (float)
                      time = ForecastPoint.time
    task_emissions    tags region, class, counterfactual_region
                      fields task_id (string), energy_kwh, emissions_g,
                      counterfactual_emissions_g (float), start, end,
                      decision_time (integer Unix seconds)
                      time = end plus a sub-second offset derived from task_id

`issued_at` is a tag so that forecasts issued at different times for the same
step stay separate points, and so that `forecasts(region, issued_at)` reads one
series per forecaster instead of scanning every forecast of the region.
NOTE: each issuance adds one tag value. InfluxDB 1.x rejects writes once a tag
has `max-values-per-tag` values (100,000 by default): about 11 years of hourly
forecasts, but only a year of forecasts issued every 5 minutes. Give the
database a retention policy or raise that limit when forecasting often.

The database is created with CREATE DATABASE the first time a write reports it
missing, which needs admin rights on a 1.x server with authentication. Before
that, queries return empty results. On 2.x the bucket and its database mapping
must exist beforehand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Self
from urllib.parse import urlencode

import structlog

from carbon_scheduler.store.base import (
    EmissionRecord,
    ForecastPoint,
    Sample,
    check_label,
    check_range,
    check_records,
    check_time,
    emission_order,
    forecast_order,
    sample_order,
)
from carbon_scheduler.store.errors import (
    StoreClosedError,
    StoreError,
    StoreRequestError,
    StoreResponseError,
)
from carbon_scheduler.store.influx_http import InfluxHTTPClient
from carbon_scheduler.store.influxql import MissingDatabaseError, parse_rows, quote_identifier, quote_string
from carbon_scheduler.store.line_protocol import (
    EMISSIONS_MEASUREMENT,
    FORECAST_MEASUREMENT,
    INTENSITY_MEASUREMENT,
    NANOSECONDS_PER_SECOND,
    emission_line,
    forecast_line,
    sample_line,
)

_log = structlog.get_logger(__name__)

_EMISSION_FIELDS = (
    "task_id",
    "energy_kwh",
    "emissions_g",
    "counterfactual_emissions_g",
    "start",
    "end",
    "decision_time",
    "region",
    "class",
    "counterfactual_region",
)


class InfluxStore:
    """A `Store` that keeps its history in an InfluxDB database.

    `url` is the server's base address (`http://localhost:8086`, or with a path
    prefix behind a proxy). Give either `token` (sent as `Authorization: Token`,
    for 2.x and 3.x) or `username` and `password` (sent with HTTP Basic
    authentication, for 1.x), or neither. Writes go out in requests of at most `batch_size` lines.
    Each request times out after `timeout_seconds` and is retried up to
    `retries` times with exponential backoff starting at `backoff_seconds` (see
    `influx_http` for the policy). `sleep` waits between attempts; tests pass a
    fake one to check the delays without waiting.

    The constructor sends no request, so it never fails on network errors.
    """

    def __init__(
        self,
        url: str,
        *,
        database: str = "carbon",
        username: str | None = None,
        password: str | None = None,
        token: str | None = None,
        batch_size: int = 5000,
        timeout_seconds: float = 10,
        retries: int = 3,
        backoff_seconds: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        _check_options(
            database=database,
            username=username,
            password=password,
            token=token,
            batch_size=batch_size,
            timeout_seconds=timeout_seconds,
            retries=retries,
            backoff_seconds=backoff_seconds,
        )
        self._http = InfluxHTTPClient(
            url,
            username=username,
            password=password,
            token=token,
            timeout_seconds=timeout_seconds,
            retries=retries,
            backoff_seconds=backoff_seconds,
            sleep=sleep,
        )
        self._database = database
        self._batch_size = batch_size
        self._closed = False
        self._create_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"InfluxStore({self._http.base_url!r}, database={self._database!r})"

    @property
    def url(self) -> str:
        """The server's base address, without credentials."""
        return self._http.base_url

    @property
    def database(self) -> str:
        return self._database

    def write_samples(self, samples: Iterable[Sample]) -> None:
        items = check_records("samples", samples, Sample)
        self._write([sample_line(sample) for sample in items], precision="s")

    def samples(self, region: str, start: int, end: int) -> list[Sample]:
        region = check_label("region", region)
        first, last = check_range(start, end)
        if first == last:
            return []
        statement = (
            f"SELECT {quote_identifier('intensity_g_per_kwh')}, {quote_identifier('source')} "
            f"FROM {quote_identifier(INTENSITY_MEASUREMENT)} "
            f"WHERE {quote_identifier('region')} = {quote_string(region)} "
            f"AND time >= {first * NANOSECONDS_PER_SECOND} AND time < {last * NANOSECONDS_PER_SECOND}"
        )
        rows = self._query(statement)
        with _row_errors(INTENSITY_MEASUREMENT):
            found = [
                Sample(region, int(row["time"]), float(row["intensity_g_per_kwh"]), row["source"])
                for row in rows
            ]
        return sorted(found, key=sample_order)

    def latest_sample(self, region: str) -> Sample | None:
        region = check_label("region", region)
        # LIMIT applies per series, so this returns the newest point of each source.
        statement = (
            f"SELECT {quote_identifier('intensity_g_per_kwh')} "
            f"FROM {quote_identifier(INTENSITY_MEASUREMENT)} "
            f"WHERE {quote_identifier('region')} = {quote_string(region)} "
            f"GROUP BY {quote_identifier('source')} ORDER BY time DESC LIMIT 1"
        )
        rows = self._query(statement)
        with _row_errors(INTENSITY_MEASUREMENT):
            newest = [
                Sample(region, int(row["time"]), float(row["intensity_g_per_kwh"]), row["source"])
                for row in rows
            ]
        if not newest:
            return None
        return min(newest, key=lambda sample: (-sample.time, sample.source))

    def write_forecasts(self, points: Iterable[ForecastPoint]) -> None:
        items = check_records("points", points, ForecastPoint)
        self._write([forecast_line(point) for point in items], precision="s")

    def forecasts(self, region: str, issued_at: int) -> list[ForecastPoint]:
        region = check_label("region", region)
        issued_at = check_time("issued_at", issued_at)
        # Raw SELECTs without a time condition cover all time, including the
        # future steps that forecasts are about.
        statement = (
            f"SELECT {quote_identifier('intensity_g_per_kwh')}, {quote_identifier('forecaster')} "
            f"FROM {quote_identifier(FORECAST_MEASUREMENT)} "
            f"WHERE {quote_identifier('region')} = {quote_string(region)} "
            f"AND {quote_identifier('issued_at')} = {quote_string(str(issued_at))}"
        )
        rows = self._query(statement)
        with _row_errors(FORECAST_MEASUREMENT):
            found = [
                ForecastPoint(
                    region, issued_at, int(row["time"]), float(row["intensity_g_per_kwh"]), row["forecaster"]
                )
                for row in rows
            ]
        return sorted(found, key=forecast_order)

    def write_emissions(self, records: Iterable[EmissionRecord]) -> None:
        items = check_records("records", records, EmissionRecord)
        self._write([emission_line(record) for record in items], precision="ns")

    def emissions(self, start: int, end: int) -> list[EmissionRecord]:
        first, last = check_range(start, end)
        if first == last:
            return []
        columns = ", ".join(quote_identifier(name) for name in _EMISSION_FIELDS)
        # A point's time is its end plus less than a second, so whole-second bounds
        # select exactly the records whose end lies in [first, last).
        statement = (
            f"SELECT {columns} FROM {quote_identifier(EMISSIONS_MEASUREMENT)} "
            f"WHERE time >= {first * NANOSECONDS_PER_SECOND} AND time < {last * NANOSECONDS_PER_SECOND}"
        )
        rows = self._query(statement)
        with _row_errors(EMISSIONS_MEASUREMENT):
            found = [
                EmissionRecord(
                    task_id=row["task_id"],
                    region=row["region"],
                    task_class=row["class"],
                    decision_time=int(row["decision_time"]),
                    start=int(row["start"]),
                    end=int(row["end"]),
                    energy_kwh=float(row["energy_kwh"]),
                    emissions_g=float(row["emissions_g"]),
                    counterfactual_region=row["counterfactual_region"],
                    counterfactual_emissions_g=float(row["counterfactual_emissions_g"]),
                )
                for row in rows
            ]
        return sorted(found, key=emission_order)

    def close(self) -> None:
        # Each request closes its own connection, so there is nothing to release.
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _write(self, lines: list[str], *, precision: str) -> None:
        self._check_open()
        for offset in range(0, len(lines), self._batch_size):
            body = "\n".join(lines[offset : offset + self._batch_size]).encode("utf-8")
            try:
                self._write_batch(body, precision=precision)
            except StoreError as exc:
                if offset:
                    exc.add_note(
                        f"the first {offset} of {len(lines)} points were written; writes are "
                        "idempotent, so repeating the whole call is safe"
                    )
                raise

    def _write_batch(self, body: bytes, *, precision: str) -> None:
        params = {"db": self._database, "precision": precision}
        content_type = "text/plain; charset=utf-8"
        try:
            self._http.request("POST", "/write", params, body=body, content_type=content_type)
        except StoreRequestError as exc:
            if exc.status == 404 and "bucket" in exc.body:
                exc.add_note(
                    f"on InfluxDB 2.x, create the bucket and a DBRP mapping for database "
                    f"{self._database!r}; this store cannot create them"
                )
            if exc.status != 404 or "database not found" not in exc.body:
                raise
            self._create_database()
            self._http.request("POST", "/write", params, body=body, content_type=content_type)

    def _create_database(self) -> None:
        # Serialised so that threads finding the database missing together send one CREATE.
        with self._create_lock:
            statement = f"CREATE DATABASE {quote_identifier(self._database)}"
            body = self._http.request(
                "POST",
                "/query",
                {},
                body=urlencode({"q": statement}).encode("ascii"),
                content_type="application/x-www-form-urlencoded",
            )
            parse_rows(body, statement=statement)
            _log.info("influx_database_created", database=self._database, url=self._http.base_url)

    def _query(self, statement: str) -> list[dict[str, Any]]:
        self._check_open()
        params = {"db": self._database, "q": statement, "epoch": "s", "chunked": "true"}
        body = self._http.request("GET", "/query", params)
        try:
            return parse_rows(body, statement=statement)
        except MissingDatabaseError:
            # Nothing was ever written: the first write creates the database.
            return []

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError(f"{self!r} is closed; open a new store")


@contextmanager
def _row_errors(measurement: str) -> Iterator[None]:
    """Turn a row that cannot become a record into StoreResponseError.

    That happens when another writer put other fields or types into one of this
    store's measurements.
    """
    try:
        yield
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreResponseError(
            f"InfluxDB returned a {measurement} row that is not a valid record ({exc!r}); "
            "another writer may have used this measurement with other fields"
        ) from exc


def _check_options(
    *,
    database: str,
    username: str | None,
    password: str | None,
    token: str | None,
    batch_size: int,
    timeout_seconds: float,
    retries: int,
    backoff_seconds: float,
) -> None:
    if not isinstance(database, str) or not database or not database.isprintable():
        raise ValueError(f"database {database!r} must be a non-empty name without control characters")
    if token is not None and (username is not None or password is not None):
        raise ValueError("pass either token or username and password, not both")
    if (username is None) != (password is None):
        raise ValueError("username and password must be given together")
    if token == "":
        raise ValueError("token must not be empty; pass None for no token")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if not timeout_seconds > 0:
        raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}")
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"retries must be a non-negative integer, got {retries!r}")
    if not backoff_seconds >= 0:
        raise ValueError(f"backoff_seconds must be zero or positive, got {backoff_seconds!r}")
