"""Sample age checks, and the health record of a polled source.

`is_stale` is a pure check the daemon applies before it trusts a sample: a value
whose interval began more than `max_age_seconds` ago is stale, and the daemon
should treat the region's intensity as unknown rather than reuse an old value.

`SourceHealth` is what the daemon keeps per source and exports (as metrics and
on /healthz): when the last poll succeeded, the last error and how many polls in
a row have failed. It is plain mutable data; the daemon owns the instance and
passes the time in.

`StaleEpisodes` tracks when each region turns stale and recovers, so the daemon
logs each transition once and reports a stale region to each affected pod once
per episode instead of at every check.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from carbon_scheduler.carbon.errors import (
    SourceAuthError,
    SourceDataError,
    SourceRequestError,
    SourceUnavailable,
)
from carbon_scheduler.store.base import Sample

# Error kinds, a small fixed set fit for a metric label.
ERROR_KINDS = ("unavailable", "auth", "request", "data", "other")


def is_stale(sample: Sample, now: float, max_age_seconds: float) -> bool:
    """Tell whether `sample` began more than `max_age_seconds` before `now`.

    The age is measured from `sample.time`, the start of the interval the value
    describes, so an hourly value observed at 10:00 is 30 minutes old at 10:30. A
    sample from the future (clock skew between this host and the provider) counts
    as fresh.
    """
    return _older_than(sample.time, now, max_age_seconds)


def _older_than(moment: float, now: float, max_age_seconds: float) -> bool:
    if isinstance(max_age_seconds, bool) or not isinstance(max_age_seconds, (int, float)):
        raise TypeError(f"max_age_seconds must be a number, got {max_age_seconds!r}")
    if not (math.isfinite(max_age_seconds) and max_age_seconds >= 0):
        raise ValueError(f"max_age_seconds must be a finite number >= 0, got {max_age_seconds!r}")
    return now - moment > max_age_seconds


def error_kind(error: BaseException) -> str:
    """Classify an error into one of ERROR_KINDS."""
    if isinstance(error, SourceUnavailable):
        return "unavailable"
    if isinstance(error, SourceAuthError):
        return "auth"
    if isinstance(error, SourceRequestError):
        return "request"
    if isinstance(error, SourceDataError):
        return "data"
    return "other"


@dataclass(slots=True)
class SourceHealth:
    """Poll outcomes of one source. Times are Unix seconds.

    - `last_success_at`: when a poll last returned a sample, or None.
    - `last_sample_time`: `Sample.time` of that sample.
    - `last_error_at`, `last_error`, `last_error_kind`: the last failure, its
      message and its kind (one of ERROR_KINDS). They are kept after a later
      success, so the last incident stays visible.
    - `consecutive_failures`: failures since the last success.
    """

    region: str
    source: str
    last_success_at: float | None = None
    last_sample_time: int | None = None
    last_error_at: float | None = None
    last_error: str | None = None
    last_error_kind: str | None = None
    consecutive_failures: int = 0

    def record_success(self, now: float, sample: Sample) -> None:
        self.last_success_at = now
        self.last_sample_time = sample.time
        self.consecutive_failures = 0

    def record_failure(self, now: float, error: BaseException) -> None:
        self.last_error_at = now
        self.last_error = str(error)
        self.last_error_kind = error_kind(error)
        self.consecutive_failures += 1

    def is_stale(self, now: float, max_age_seconds: float) -> bool:
        """Tell whether the last sample is missing or older than `max_age_seconds`."""
        moment = self.last_sample_time
        # A source that never returned a sample is as stale as any limit allows.
        return _older_than(moment if moment is not None else -math.inf, now, max_age_seconds)


class StaleEpisodes:
    """Stale and fresh transitions of regions, and the keys (such as pod uids)
    already reported during each region's current stale episode."""

    def __init__(self) -> None:
        self._stale: dict[str, bool] = {}
        self._reported: dict[str, set[str]] = {}

    def update(self, region: str, stale: bool) -> str | None:
        """Record the region's state; return "stale" when it turned stale (or is
        stale at its first check), "recovered" when it turned fresh, else None."""
        before = self._stale.get(region)
        self._stale[region] = stale
        if stale and not before:
            self._reported[region] = set()
            return "stale"
        if not stale and before:
            self._reported.pop(region, None)
            return "recovered"
        return None

    def is_stale(self, region: str) -> bool:
        return self._stale.get(region, False)

    def first_report(self, region: str, key: str) -> bool:
        """Return True the first time `key` is reported in the region's current
        stale episode, and False afterwards or while the region is fresh."""
        reported = self._reported.get(region)
        if reported is None or key in reported:
            return False
        reported.add(key)
        return True
