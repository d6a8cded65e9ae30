"""Typed outcomes of a scheduling decision and their effect on the queue.

Every class rule returns one of these instead of raising, so the daemon and the
replay simulator handle a decision the same way:

- `Bind`: place the task on `node` in `region` now. The caller assumes the
  placement in its cache before the API call and forgets it if the call fails.
- `Defer`: a `deferrable` task sleeps until `until`, the start of its planned
  window. It is planned again when it wakes, and earlier when a new carbon sample
  makes starting now at least as clean as the planned window.
- `Wait`: a `standard` task waits for room in `region` until `until`, or until
  room frees there, whichever comes first.
- `Unschedulable`: no allowed region has room. The task is retried as soon as a
  pod finishes or a node changes; `reasons` say why each region refused it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Window:
    """A planned run window in one region, with its estimated emissions in grams
    (forecast intensity, so an estimate)."""

    region: str
    start: int
    end: int
    estimated_g: float


@dataclass(frozen=True, slots=True)
class Bind:
    """Place the task now. `intensity_g_per_kwh` is the region's intensity at the
    decision and `reason` says why this region won, for the Event and annotation."""

    region: str
    node: str
    intensity_g_per_kwh: float
    reason: str
    window: Window | None = None


@dataclass(frozen=True, slots=True)
class Defer:
    """Sleep until `until`, the start of `window`. `start_now_g` is the estimated
    emission of starting at once in the cleanest allowed region, for comparison."""

    until: int
    window: Window
    start_now_g: float | None
    reason: str


@dataclass(frozen=True, slots=True)
class Wait:
    """Wait for room in `region` until `until` at the latest."""

    region: str
    until: int
    reason: str


@dataclass(frozen=True, slots=True)
class Unschedulable:
    """No allowed region can take the task now; `reasons` lists why, per region."""

    reasons: Mapping[str, tuple[str, ...]]

    @property
    def message(self) -> str:
        parts = [f"{region}: {', '.join(why)}" for region, why in sorted(self.reasons.items())]
        return "no region can run the task now (" + "; ".join(parts) + ")"


Decision = Bind | Defer | Wait | Unschedulable
