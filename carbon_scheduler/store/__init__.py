"""Time-series history of carbon intensities, forecasts and task emissions.

`open_store(location)` returns a `Store`: `SQLiteStore` (the embedded default)
for a path or `sqlite://` URL, `InfluxStore` for an `http(s)://` URL. Both pass the
same contract tests; `base` describes the contract and `errors` the error tree.
"""

from carbon_scheduler.store.base import EmissionRecord, ForecastPoint, Sample, Store
from carbon_scheduler.store.errors import (
    PermanentStoreError,
    RetryableStoreError,
    StoreAuthError,
    StoreClosedError,
    StoreConnectionError,
    StoreError,
    StoreQueryError,
    StoreRequestError,
    StoreResponseError,
    StoreUnavailableError,
)
from carbon_scheduler.store.influx import InfluxStore
from carbon_scheduler.store.opening import open_store
from carbon_scheduler.store.sqlite import SQLiteStore

__all__ = [
    "EmissionRecord",
    "ForecastPoint",
    "InfluxStore",
    "PermanentStoreError",
    "RetryableStoreError",
    "SQLiteStore",
    "Sample",
    "Store",
    "StoreAuthError",
    "StoreClosedError",
    "StoreConnectionError",
    "StoreError",
    "StoreQueryError",
    "StoreRequestError",
    "StoreResponseError",
    "StoreUnavailableError",
    "open_store",
]
