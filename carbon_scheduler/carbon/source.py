"""The interface that every carbon-intensity source implements, and the clock it reads.

A source serves one region. The daemon polls it:

- `latest()` returns the most recent observation as a `Sample`. `Sample.time` is
  the start of the interval the value describes, in Unix seconds (UTC), so a
  poller can tell how old the value is (see `staleness.is_stale`).
- `history(start, end)` returns the samples whose interval starts in
  [start, end), sorted by time, one per interval.
- `forecast()` returns the provider's forecast as `ForecastPoint`s sorted by
  time, or None when the source has none; then the daemon's own forecaster
  predicts from history.
- `aclose()` releases the source's HTTP client, if it created one.

Failures raise the errors of `carbon.errors`. A source never invents a value: when
the provider is down, `latest()` raises SourceUnavailable.

Time is read only from the injected `Clock`, so tests pass a fake clock and the
replay and scripted sources map wall time to trace time without sleeping.
"""

from __future__ import annotations

import operator
import time
from typing import Protocol, runtime_checkable

from carbon_scheduler.store.base import ForecastPoint, Sample


@runtime_checkable
class Clock(Protocol):
    """A source of the current Unix time in seconds."""

    def time(self) -> float: ...


class SystemClock:
    """The real wall clock (`time.time`)."""

    def time(self) -> float:
        return time.time()


@runtime_checkable
class CarbonSource(Protocol):
    """Carbon intensity of one region, in gCO2eq/kWh."""

    @property
    def name(self) -> str:
        """Short provider name, also used as `Sample.source` and `ForecastPoint.forecaster`."""
        ...

    @property
    def region(self) -> str:
        """The region whose intensity this source returns."""
        ...

    async def latest(self) -> Sample:
        """Return the most recent observation."""
        ...

    async def history(self, start: int, end: int) -> list[Sample]:
        """Return the samples that start in [start, end), sorted by time."""
        ...

    async def forecast(self) -> list[ForecastPoint] | None:
        """Return the provider's forecast sorted by time, or None if it has none."""
        ...

    async def aclose(self) -> None:
        """Release resources. Calling it twice is allowed."""
        ...


def check_history_range(start: object, end: object) -> tuple[int, int]:
    """Validate the [start, end) range of a `history` call and return it as ints."""
    bounds = []
    for name, value in (("start", start), ("end", end)):
        try:
            if isinstance(value, bool):
                raise TypeError
            bounds.append(operator.index(value))  # type: ignore[arg-type]
        except TypeError:
            raise TypeError(
                f"history {name} must be an integer number of Unix seconds, "
                f"got {type(value).__name__} {value!r}"
            ) from None
    first, last = bounds
    if first > last:
        raise ValueError(f"history start {first} is after its end {last}; swap them")
    return first, last
