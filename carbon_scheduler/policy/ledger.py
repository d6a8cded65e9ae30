"""Capacity ledger: planned and running task pods per region on a fixed time grid.

Window planning for `deferrable` tasks books capacity here, so tasks do not all pile
into the same green window and then miss their deadlines. Every task that starts or
plans to start is booked over [start, start + expected duration); the planner only
picks windows whose every slot still has room for one more pod of the task's size.

The grid has slots of `slot_seconds` starting at `origin`. A booking covers every
slot that its interval touches, so the ledger can over-count by at most one slot at
each end of a task, never under-count. Room is the region's pod cap and the sum of
its schedulable nodes' allocatable CPU and memory; node-level fit is checked again
when the task actually starts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from carbon_scheduler.model import Resources

DEFAULT_SLOT_SECONDS = 300
NO_LIMIT = 2**62
"""A CPU or memory capacity that is not checked at all."""
_GROW_SLOTS = 4096


@dataclass(frozen=True, slots=True)
class RegionCapacity:
    """What a region can run at once: its pod cap and total allocatable CPU
    (millicores) and memory (bytes) of its schedulable nodes."""

    max_pods: int
    milli_cpu: int
    memory: int


class CapacityLedger:
    """Booked pods, CPU and memory per region and slot.

    Mutating methods change only this object; nothing here does I/O or reads a
    clock, so the daemon and replay share it.
    """

    def __init__(
        self,
        capacity: Mapping[str, RegionCapacity],
        *,
        origin: int,
        slot_seconds: int = DEFAULT_SLOT_SECONDS,
        slots: int = _GROW_SLOTS,
    ) -> None:
        if slot_seconds <= 0:
            raise ValueError(f"slot_seconds must be positive, got {slot_seconds}")
        self.origin = origin
        self.slot_seconds = slot_seconds
        self.capacity = dict(capacity)
        self._pods = {region: np.zeros(slots, dtype=np.int32) for region in self.capacity}
        self._cpu = {region: np.zeros(slots, dtype=np.int64) for region in self.capacity}
        self._memory = {region: np.zeros(slots, dtype=np.int64) for region in self.capacity}

    def set_capacity(self, region: str, capacity: RegionCapacity) -> None:
        """Replace a region's capacity, for example after its nodes changed."""
        self.capacity[region] = capacity

    def _span(self, start: int, end: int) -> tuple[int, int]:
        first = (start - self.origin) // self.slot_seconds
        last = -((self.origin - end) // self.slot_seconds)  # ceiling division
        if first < 0:
            raise ValueError(f"time {start} is before the ledger origin {self.origin}")
        return first, max(last, first + 1)

    def _ensure(self, region: str, slots: int) -> None:
        pods = self._pods[region]
        if slots <= pods.size:
            return
        size = max(slots, pods.size) + _GROW_SLOTS
        for table in (self._pods, self._cpu, self._memory):
            grown = np.zeros(size, dtype=table[region].dtype)
            grown[: table[region].size] = table[region]
            table[region] = grown

    def book(self, region: str, start: int, end: int, request: Resources) -> None:
        """Count one pod of `request` in every slot that [start, end) touches."""
        self._add(region, start, end, request, 1)

    def release(self, region: str, start: int, end: int, request: Resources) -> None:
        """Undo a `book` call with the same arguments."""
        self._add(region, start, end, request, -1)

    def _add(self, region: str, start: int, end: int, request: Resources, sign: int) -> None:
        first, last = self._span(start, end)
        self._ensure(region, last)
        self._pods[region][first:last] += sign
        self._cpu[region][first:last] += sign * request.milli_cpu
        self._memory[region][first:last] += sign * request.memory

    def booked_pods(self, region: str, time: int) -> int:
        """Pods booked in the slot that contains `time`."""
        index = (time - self.origin) // self.slot_seconds
        pods = self._pods[region]
        return int(pods[index]) if 0 <= index < pods.size else 0

    def slot_starts(self, after: int, until: int, *, include_after: bool = False) -> np.ndarray:
        """Slot boundaries t with after < t <= until, as Unix seconds, preceded by
        `after` itself when `include_after` is set."""
        first = (after - self.origin) // self.slot_seconds + 1
        last = max((until - self.origin) // self.slot_seconds, first - 1)
        if include_after:
            starts = self.origin + np.arange(first - 1, last + 1, dtype=np.int64) * self.slot_seconds
            starts[0] = after
            return starts
        return self.origin + np.arange(first, last + 1, dtype=np.int64) * self.slot_seconds

    def spans(self, starts: np.ndarray, duration: int) -> SlotSpans:
        """The slots that runs of `duration` seconds from each of `starts` touch.
        `starts` must be sorted ascending and not before the origin."""
        starts = np.asarray(starts, dtype=np.int64)
        if duration < 1:
            raise ValueError(f"duration must be at least 1 second, got {duration}")
        if starts.size == 0:
            empty = np.zeros(0, dtype=np.int64)
            return SlotSpans(empty, empty, 0, 0)
        first = (starts - self.origin) // self.slot_seconds
        last = -((self.origin - (starts + duration)) // self.slot_seconds)
        low, high = int(first[0]), int(last[-1])
        if low < 0:
            raise ValueError(f"time {int(starts[0])} is before the ledger origin {self.origin}")
        return SlotSpans(first - low, last - low, low, high)

    def room(self, region: str, spans: SlotSpans, request: Resources, *, headroom_pods: int = 0) -> np.ndarray:
        """For each span, whether one more pod of `request` fits in every slot of
        it with `headroom_pods` pods still free after it."""
        size = spans.first.size
        capacity = self.capacity[region]
        pod_limit = capacity.max_pods - 1 - headroom_pods
        if size == 0 or request.milli_cpu > capacity.milli_cpu or request.memory > capacity.memory or pod_limit < 0:
            return np.zeros(size, dtype=bool)
        low, high = spans.low, spans.high
        self._ensure(region, high + 1)

        # A slot is blocked when one more pod of this size would overflow it; a start
        # has room when no slot of its run is blocked. Counting blocked slots with a
        # cumulative sum answers every start at once.
        blocked = self._pods[region][low:high] > pod_limit
        if request.milli_cpu and capacity.milli_cpu < NO_LIMIT:
            blocked |= self._cpu[region][low:high] > capacity.milli_cpu - request.milli_cpu
        if request.memory and capacity.memory < NO_LIMIT:
            blocked |= self._memory[region][low:high] > capacity.memory - request.memory
        counts = np.zeros(high - low + 1, dtype=np.int64)
        np.cumsum(blocked, out=counts[1:])
        return counts[spans.last] == counts[spans.first]

    def has_room(
        self, region: str, starts: np.ndarray, duration: int, request: Resources, *, headroom_pods: int = 0
    ) -> np.ndarray:
        """For each start time, whether one more pod of `request` fits in every slot
        of [start, start + duration) with `headroom_pods` pods still free after it.
        `starts` must be sorted ascending."""
        return self.room(region, self.spans(starts, duration), request, headroom_pods=headroom_pods)


@dataclass(frozen=True, slots=True)
class SlotSpans:
    """Slot ranges [low + first[i], low + last[i]) of candidate runs, all inside
    [low, high)."""

    first: np.ndarray
    last: np.ndarray
    low: int
    high: int


def region_capacity(max_pods: int, nodes: Iterable) -> RegionCapacity:
    """Capacity of a region from its pod cap and its Ready, schedulable nodes."""
    usable = [node for node in nodes if node.ready and not node.unschedulable]
    return RegionCapacity(
        max_pods=max_pods,
        milli_cpu=sum(node.allocatable.milli_cpu for node in usable),
        memory=sum(node.allocatable.memory for node in usable),
    )
