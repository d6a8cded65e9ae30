"""The daemon's memory in the time-series store: opening it, writing to it in the
background, and reading a region's recent samples back at start-up.

The store API blocks (SQLite file I/O, HTTP to InfluxDB), so nothing here calls
it on the event loop. `HistoryWriter` takes records without waiting, keeps them
in a bounded buffer, and a single task writes them in batches through
`asyncio.to_thread`. A batch that fails with a retryable error (connection,
timeout, 5xx, locked file) is logged with its regions and retried with
exponential backoff. One that fails permanently (rejected request, bad
credentials) would fail the same way again, so it is logged and dropped. A full buffer drops its oldest records and logs how many,
because scheduling must never wait for the store. A failure is never raised to
the caller.

Writes are idempotent (a record with a stored identity replaces it), so a
batch retried after a timeout whose write did land stores nothing twice.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import structlog

from carbon_scheduler.config.redaction import redact_url
from carbon_scheduler.config.types import CarbonSourceKind, RegionSpec, StoreSettings
from carbon_scheduler.store.base import EmissionRecord, ForecastPoint, Sample, Store
from carbon_scheduler.store.errors import StoreError
from carbon_scheduler.store.opening import open_store

log = structlog.get_logger(__name__)

Record = Sample | ForecastPoint | EmissionRecord

MAX_BUFFERED_RECORDS = 100_000
"""Records kept while the store is down: about two days of hourly samples and
72-hour forecasts of ten regions, so a short outage loses nothing."""
BATCH_SIZE = 1_000
RETRY_INITIAL_SECONDS = 1.0
RETRY_MAX_SECONDS = 60.0

_DONE, _RETRY, _DROPPED = "done", "retry", "dropped"


class StoreOpenError(Exception):
    """The configured store cannot be opened.

    `key` is the [store] key to fix (such as `password_env`), and `problem`
    states what is wrong and how to fix it. The command line prints both after
    the configuration file's name and line.
    """

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"[store] {key}: {problem}")
        self.key = key
        self.problem = problem


def read_store_secret(settings: StoreSettings, name: str) -> str | None:
    """Return the `password` or `token` that [store] points to, or None when it
    names none. Raises StoreOpenError naming the key when it cannot be read."""
    env = getattr(settings, f"{name}_env")
    file = getattr(settings, f"{name}_file")
    if env is not None:
        value = os.environ.get(env)
        if value is None or not value.strip():
            raise StoreOpenError(
                f"{name}_env",
                f"the environment variable {env} is not set or empty; set it to the InfluxDB {name} "
                f"before starting the daemon, or use {name}_file to read the {name} from a file",
            )
        return value.strip()
    if file is not None:
        try:
            value = Path(file).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise StoreOpenError(
                f"{name}_file",
                f"cannot read {file}: {error.strerror or error}; put the InfluxDB {name} in that file "
                f"(such as a mounted Secret) or set {name}_file to the file that contains it",
            ) from error
        except UnicodeDecodeError as error:
            raise StoreOpenError(
                f"{name}_file", f"{file} is not UTF-8 text; put the InfluxDB {name} in it as plain text"
            ) from error
        if not value:
            raise StoreOpenError(f"{name}_file", f"{file} is empty; put the InfluxDB {name} in it")
        return value
    return None


def open_history_store(settings: StoreSettings) -> Store:
    """Open the store that [store] configures, reading its secrets now.

    Raises StoreOpenError naming the key to fix. Blocking: call it in a thread.
    """
    if not settings.is_influx:
        _check_sqlite_folder(settings.url)
    try:
        if not settings.is_influx:
            return open_store(settings.url)
        return open_store(
            settings.url,
            database=settings.database,
            username=settings.username,
            password=read_store_secret(settings, "password"),
            token=read_store_secret(settings, "token"),
        )
    except (StoreError, ValueError, OSError) as error:
        raise StoreOpenError("url", f"cannot open the store {redact_url(settings.url)!r}: {error}") from error


def _check_sqlite_folder(location: str) -> None:
    """Raise StoreOpenError when the folder of a SQLite file is missing, because
    SQLite itself only reports "unable to open database file"."""
    if location == ":memory:" or "://" in location:
        return
    folder = Path(location).absolute().parent
    if folder.is_dir():
        return
    problem = "does not exist" if not folder.exists() else "is not a folder"
    raise StoreOpenError(
        "url",
        f"cannot create the SQLite store {Path(location).absolute()}, because {folder} {problem}; "
        "create the folder, or set url to a file in an existing folder",
    )


async def load_recent_samples(store: Store, region: str, start: int, end: int) -> list[Sample]:
    """Read `region`'s samples in [start, end) from the store. On a store error,
    log it and return [], because a restart must work without history."""
    try:
        samples = await asyncio.to_thread(store.samples, region, start, end)
    except StoreError as error:
        log.warning("store_history_failed", region=region, error=str(error))
        return []
    log.info("store_history_loaded", region=region, samples=len(samples))
    return samples


SYNTHETIC_SOURCES = frozenset({CarbonSourceKind.STATIC, CarbonSourceKind.REPLAY, CarbonSourceKind.SCRIPTED})
"""Sources whose history the daemon makes up at start: a constant, a trace laid
over past wall times, or a schedule run backwards. The store is a record of grid
data that dashboards and relative levels read later, so it gets only the
samples such a source reports while the daemon runs."""


def backfills_store(region: RegionSpec) -> bool:
    """Return True when the source's history at start-up belongs in the store:
    only live providers, whose history is real past grid data."""
    return region.carbon is not None and region.carbon.kind not in SYNTHETIC_SOURCES


@dataclass(frozen=True, slots=True)
class Backfill:
    """The part of a source's history to store at start-up, and what was left out."""

    samples: list[Sample]
    # Samples at or before the newest one already stored for the region.
    already_stored: int
    # Newer samples left out, oldest first, so the backfill fits its share of the buffer.
    over_limit: int


def select_backfill(samples: Iterable[Sample], *, newest_stored: int | None, limit: int) -> Backfill:
    """Choose the samples of a source's history to write to the store.

    Only samples newer than `newest_stored` (the time of the region's newest
    stored sample, None when it has none) are new to the store. Of those, the
    newest `limit` are kept, so a source with short steps cannot fill the
    writer's buffer and push out other records.
    """
    if limit < 0:
        raise ValueError(f"limit must be 0 or more, got {limit}")
    ordered = sorted(samples, key=lambda sample: sample.time)
    fresh = ordered if newest_stored is None else [sample for sample in ordered if sample.time > newest_stored]
    kept = fresh[len(fresh) - limit :] if limit else []
    return Backfill(kept, already_stored=len(ordered) - len(fresh), over_limit=len(fresh) - len(kept))


class HistoryWriter:
    """Writes records to `store` in the background, in batches, with retries."""

    def __init__(
        self,
        store: Store,
        *,
        max_buffered: int = MAX_BUFFERED_RECORDS,
        batch_size: int = BATCH_SIZE,
        retry_initial_seconds: float = RETRY_INITIAL_SECONDS,
        retry_max_seconds: float = RETRY_MAX_SECONDS,
    ) -> None:
        self.store = store
        self.batch_size = batch_size
        self.retry_initial_seconds = retry_initial_seconds
        self.retry_max_seconds = retry_max_seconds
        self._buffer: deque[Record] = deque(maxlen=max_buffered)
        self._ready = asyncio.Event()
        self._dropped = 0
        self.written = 0
        self.failures = 0

    @property
    def pending(self) -> int:
        return len(self._buffer)

    @property
    def capacity(self) -> int:
        """Maximum number of buffered records; beyond it `add` drops the oldest."""
        assert self._buffer.maxlen is not None
        return self._buffer.maxlen

    def add(self, records: Iterable[Record]) -> None:
        """Queue records for writing; never blocks and never raises for a store problem."""
        for record in records:
            if len(self._buffer) == self._buffer.maxlen:
                self._dropped += 1
            self._buffer.append(record)
        if self._buffer:
            self._ready.set()

    async def run(self) -> None:
        """Write queued records until cancelled."""
        delay = self.retry_initial_seconds
        while True:
            await self._ready.wait()
            batch = self._take_batch()
            if not batch:
                self._ready.clear()
                continue
            try:
                outcome = await self._write(batch)
            except asyncio.CancelledError:
                # The write's thread may not finish, so the batch goes back for
                # flush() to write again, which is safe because writes are idempotent.
                self._buffer.extendleft(reversed(batch))
                raise
            if outcome is not _RETRY:
                delay = self.retry_initial_seconds
                continue
            # Put the batch back in front, so the order of writes is kept.
            self._buffer.extendleft(reversed(batch))
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.retry_max_seconds)

    async def flush(self, timeout_seconds: float) -> bool:
        """Write what is queued, for at most `timeout_seconds`; return True when
        nothing is left. Used at shutdown, so a failure is logged and not retried."""
        try:
            async with asyncio.timeout(timeout_seconds):
                while self._buffer:
                    batch = self._take_batch()
                    if await self._write(batch) is _RETRY:
                        self._buffer.extendleft(reversed(batch))
                        break
        except TimeoutError:
            pass
        if self._buffer:
            log.warning("store_records_lost", records=len(self._buffer), reason="not written before shutdown")
            return False
        return True

    def _take_batch(self) -> list[Record]:
        if self._dropped:
            log.warning("store_buffer_full", dropped=self._dropped, kept=len(self._buffer))
            self._dropped = 0
        batch: list[Record] = []
        while self._buffer and len(batch) < self.batch_size:
            batch.append(self._buffer.popleft())
        return batch

    async def _write(self, batch: list[Record]) -> str:
        """Write one batch; return _DONE, _RETRY or _DROPPED."""
        samples = [record for record in batch if isinstance(record, Sample)]
        forecasts = [record for record in batch if isinstance(record, ForecastPoint)]
        emissions = [record for record in batch if isinstance(record, EmissionRecord)]
        try:
            if samples:
                await asyncio.to_thread(self.store.write_samples, samples)
            if forecasts:
                await asyncio.to_thread(self.store.write_forecasts, forecasts)
            if emissions:
                await asyncio.to_thread(self.store.write_emissions, emissions)
        except StoreError as error:
            self.failures += 1
            log.warning(
                "store_write_failed",
                regions=sorted({record.region for record in batch}),
                records=len(batch),
                outcome="retrying" if error.retryable else "dropped",
                error=str(error),
            )
            return _RETRY if error.retryable else _DROPPED
        except Exception as error:  # a bug in one batch must not stop the writer
            self.failures += 1
            log.exception(
                "store_write_failed",
                regions=sorted({record.region for record in batch}),
                records=len(batch),
                outcome="dropped",
                error=str(error),
            )
            return _DROPPED
        self.written += len(batch)
        return _DONE
